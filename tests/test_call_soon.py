"""Node._call_soon: a statement's call into the node loop runs on the statement's own thread
when the node loop waits in select, else it is handed over (Node.call_in_loop). Pure unit tests
of the rules, on a Node with stand-ins for its network and store (the real path runs under every
cluster test):

* a call handed in earlier runs first: the new one queues behind it;
* while the loop works (it holds its lock), or before it runs, the call is handed over;
* run here, a reply that rests on nothing unsynced completes its future at once, with no
  wake-up of the loop; one made while a journal waits for its fsync is left to the loop, which
  sends it after the sync (a build that answers it at once is caught);
* what the call leaves for the loop (a group to tick) wakes it.
"""

from __future__ import annotations

import asyncio
import collections
import threading

import pytest

from raftstore.loglimit import LogLimiter
from raftstore.node.loop import Node


class _Net:
    def __init__(self) -> None:
        self.wakes = 0
        self.flushes = 0

    def wake(self) -> None:
        self.wakes += 1

    def flush(self) -> None:
        self.flushes += 1

    def next_release(self):
        return None


class _Mvcc:
    in_batch = False


class _Store:
    def __init__(self) -> None:
        self.tick_soon: set[int] = set()
        self.dirty: set[int] = set()
        self.mvcc = _Mvcc()


def _node(running: bool = True) -> Node:
    node = Node.__new__(Node)
    node._calls = collections.deque()
    node._replies = []
    node.net = _Net()
    node.store = _Store()
    node.log_limit = LogLimiter()
    node._loop_lock = threading.Lock()
    node._loop_running = running
    return node


def _in_loop(coro_fn):
    return asyncio.run(coro_fn())


def test_a_call_made_while_the_loop_waits_runs_here_and_answers_without_a_hand_off():
    async def go():
        node = _node()
        fut = asyncio.get_running_loop().create_future()
        node._call_soon(lambda: node._reply(fut, "answer"))
        assert fut.done() and fut.result() == "answer"
        assert node._calls == collections.deque() and node.net.wakes == 0 and node.net.flushes == 1
    _in_loop(go)


def test_a_call_queues_behind_one_handed_in_before_it():
    async def go():
        node = _node()
        order = []
        node._calls.append(lambda: order.append("first"))
        node._call_soon(lambda: order.append("second"))
        assert order == [] and len(node._calls) == 2
        while node._calls:
            node._calls.popleft()()
        assert order == ["first", "second"]
    _in_loop(go)


@pytest.mark.parametrize("state", ["loop busy", "loop not running"])
def test_a_call_is_handed_over_while_the_loop_works_or_before_it_runs(state):
    async def go():
        node = _node(running=state != "loop not running")
        if state == "loop busy":
            node._loop_lock.acquire()
        ran = []
        node._call_soon(lambda: ran.append(1))
        assert ran == [] and len(node._calls) == 1 and node.net.wakes == 1
    _in_loop(go)


def _reply_while_a_journal_waits(node: Node) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()

    def call() -> None:
        node.store.dirty.add(7)          # this call wrote a journal not yet synced
        node._reply(fut, "committed")
    node._call_soon(call)
    return fut


def test_a_reply_that_waits_for_a_sync_is_left_to_the_loop_which_is_woken():
    async def go():
        node = _node()
        fut = _reply_while_a_journal_waits(node)
        assert not fut.done() and node._replies and node.net.wakes == 1
    _in_loop(go)


def test_broken_a_call_that_answers_before_the_sync_is_caught(monkeypatch):
    monkeypatch.setattr(Node, "_nothing_unsynced", lambda self: True)

    async def go():
        node = _node()
        fut = _reply_while_a_journal_waits(node)
        assert fut.done()                # answered while its journal was not on disk
    _in_loop(go)


def test_a_call_that_leaves_a_group_to_tick_wakes_the_loop():
    async def go():
        node = _node()
        node._call_soon(lambda: node.store.tick_soon.add(3))
        assert node.net.wakes == 1 and not node._calls
    _in_loop(go)


def test_a_storage_error_in_a_call_run_here_ends_the_process_as_on_the_node_loop(monkeypatch):
    """Crash-only: a FailStop (the clock's ceiling or a journal could not be saved) ends the
    node wherever the loop's work runs; thrown into the statement instead, the node would go
    on over a disk it no longer trusts."""
    from raftstore.node import loop as loop_mod
    from raftstore.raft.failstop import FailStop
    exits = []
    monkeypatch.setattr(loop_mod, "exit_now", exits.append)

    async def go():
        node = _node()
        failure = FailStop("HLC ceiling: saving failed")

        def call() -> None:
            raise failure
        node._call_soon(call)
        assert exits == [failure] and not node._loop_lock.locked()
    _in_loop(go)
