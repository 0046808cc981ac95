"""Statements as coroutines: plain blocking code (the SQL engine) run on an asyncio loop.

The SQL engine is ordinary synchronous code that makes blocking KV calls. `run(fn)` runs it on
the calling asyncio loop in a greenlet of its own (the way SQLAlchemy runs its synchronous core
over asyncio drivers): where the engine waits - a KV batch, a backoff, a DDL wait - it calls
`wait(awaitable)`, which switches back to the loop; the loop awaits the awaitable like any
coroutine and switches the statement back in with its result (or its exception). So a
statement's KV batch costs one hand-off from the client port's thread to the node loop and one
back (the node loop completes the batch's future, `call_soon_threadsafe` wakes asyncio), and no
statement holds a thread while it waits on a WAN round trip: there is no worker pool.

Fairness: a statement runs on the loop until its next wait, so a long CPU-bound stretch (a scan's
row loop, a join) would stall every other client of the node. The engine calls `checkpoint()`
in its row loops; once the statement has run `constants.loop_task_max_ms` since it was last
switched in, the checkpoint yields to the loop (`asyncio.sleep(0)`) and it continues after the
other ready tasks. Work that cannot be cut into slices (parsing a very large statement) goes to a
thread with `offload`. `slice_max_ms()` reports the longest slice run so far, for status and tests.

Outside a statement (a plain thread, a test), `wait` is refused: such callers block on the loop
by their own means (asyncio.run_coroutine_threadsafe), as they did before.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import greenlet

from raftstore import constants


class _Statement(greenlet.greenlet):
    """A greenlet started by `run`: it switches back to the loop's greenlet (its parent) at
    each wait, and knows when it was last switched in."""

    resumed_at = 0.0


_slice_max_s = 0.0


def _note_slice(g: _Statement) -> None:
    global _slice_max_s
    ran = time.perf_counter() - g.resumed_at
    if ran > _slice_max_s:
        _slice_max_s = ran


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) run on this asyncio loop in its own greenlet; each `wait` inside it suspends
    it (not the loop) until the awaitable it waits on is done. Returns fn's result or raises
    its exception. If this coroutine is cancelled while the statement waits, the statement gets
    the CancelledError at its wait."""
    g = _Statement(fn, greenlet.getcurrent())
    g.resumed_at = time.perf_counter()
    request = g.switch(*args)
    while not g.dead:
        _note_slice(g)
        try:
            value = await request
        except BaseException as exc:   # the statement's wait raises it (CancelledError included)
            g.resumed_at = time.perf_counter()
            request = g.throw(exc)
        else:
            g.resumed_at = time.perf_counter()
            request = g.switch(value)
    _note_slice(g)
    return request


def in_statement() -> bool:
    """Whether the caller runs inside `run` (and may `wait`)."""
    return isinstance(greenlet.getcurrent(), _Statement)


def wait(awaitable: Awaitable) -> Any:
    """The awaitable's result, for code inside `run`: the statement is suspended, the loop
    awaits it, and the statement continues with its result or its exception."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Statement):
        if asyncio.iscoroutine(awaitable):
            awaitable.close()   # never awaited: do not leave a "never awaited" warning behind
        raise RuntimeError("coop.wait outside a statement run by coop.run")
    return current.parent.switch(awaitable)


def checkpoint() -> None:
    """Inside `run`: yield to the loop once the statement has held it for loop_task_max_ms;
    anywhere else, nothing."""
    current = greenlet.getcurrent()
    if isinstance(current, _Statement) and \
            time.perf_counter() - current.resumed_at >= constants.loop_task_max_ms / 1000:
        current.parent.switch(asyncio.sleep(0))


def sleep(seconds: float) -> None:
    """time.sleep for code that may run inside `run` (then only the statement sleeps)."""
    if in_statement():
        wait(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def offload(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on a thread of the loop's default executor, for work that cannot be cut into
    slices; the statement waits for it and the loop goes on. Outside a statement, a plain call."""
    if in_statement():
        return wait(asyncio.to_thread(fn, *args))
    return fn(*args)


def slice_max_ms() -> float:
    """The longest time one statement has held the loop between two switches, in ms."""
    return round(_slice_max_s * 1000, 3)
