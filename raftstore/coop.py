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

Deadlines (statement_timeout, sql/gateway.py): `run(fn, deadline_s=...)` gives the statement a
time to stop by. Python cannot kill a running thread or greenlet, so the statement stops itself,
at the two kinds of place it passes often: each `checkpoint` (every row of its row loops - the
clock is read there anyway) raises DeadlineExceeded once the time has come, and each `wait` (a KV
batch, a scan page, a backoff, an offloaded parse) is cut short at the deadline, so no wait
outlasts it, and raises DeadlineExceeded at the wait. The deadline fires once: what the
statement does after it (taking back what it wrote, releasing a latch) runs on, bounded only as
anything else is. What a wait cut short leaves behind is the caller's to say: a KV read's answer
is simply dropped, a write may still apply (raftstore.server.nodekv reports it ambiguous).

Cancel (a PostgreSQL client's CancelRequest, raftstore.server.pg_port): `run(fn, cancel=handle)`
lets another task stop the statement through `handle.cancel(message)`: its deadline becomes now,
so it stops the same way, at its next checkpoint or at the wait it is in (cut short at once);
the DeadlineExceeded it gets says `requested`.

Outside a statement (a plain thread, a test), `wait` is refused: such callers block on the loop
by their own means (asyncio.run_coroutine_threadsafe), as they did before.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import greenlet

from raftstore import constants


class DeadlineExceeded(Exception):
    """A statement ran past the deadline `run` gave it; raised inside it, once, at a checkpoint
    or at a wait the deadline cut short. `message` is the one `run` was given."""

    def __init__(self, message: str, requested: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.requested = requested   # a Cancel stopped it, not its own deadline


class _Statement(greenlet.greenlet):
    """A greenlet started by `run`: it switches back to the loop's greenlet (its parent) at
    each wait, and knows when it was last switched in and when it must stop (its deadline, a
    time.perf_counter() reading; None: none, or it has fired)."""

    resumed_at = 0.0
    deadline: float | None = None
    deadline_message = ""
    requested = False          # the deadline is a Cancel's
    timeout: asyncio.Timeout | None = None   # the wait it is in, while one is (reschedulable)

    def expire(self) -> DeadlineExceeded:
        """The deadline has come: disarm it (it fires once) and return the error to raise."""
        self.deadline = None
        return DeadlineExceeded(self.deadline_message, self.requested)


class Cancel:
    """A handle on the statement `run(..., cancel=handle)` runs: `cancel(message)` stops it as
    its deadline would (module docstring). Made per statement by its caller; one that is not
    running (not started yet, or finished) ignores a cancel."""

    def __init__(self) -> None:
        self._statement: _Statement | None = None

    def cancel(self, message: str) -> bool:
        """Stop the running statement with DeadlineExceeded(message, requested=True) at its next
        checkpoint or at once if it waits. False if no statement runs. Call on the loop's thread."""
        g = self._statement
        if g is None or g.dead:
            return False
        g.deadline, g.deadline_message, g.requested = time.perf_counter(), message, True
        if g.timeout is not None and not g.timeout.expired():
            g.timeout.reschedule(asyncio.get_running_loop().time())
        return True


_slice_max_s = 0.0


def _note_slice(g: _Statement) -> None:
    global _slice_max_s
    ran = time.perf_counter() - g.resumed_at
    if ran > _slice_max_s:
        _slice_max_s = ran


async def run(fn: Callable[..., Any], *args: Any, deadline_s: float | None = None,
              deadline_message: str = "the statement ran past its deadline", cancel: Cancel | None = None) -> Any:
    """fn(*args) run on this asyncio loop in its own greenlet; each `wait` inside it suspends
    it (not the loop) until the awaitable it waits on is done. Returns fn's result or raises
    its exception. If this coroutine is cancelled while the statement waits, the statement gets
    the CancelledError at its wait.

    With `deadline_s`, the statement gets DeadlineExceeded(deadline_message) at its first
    checkpoint or wait once that many seconds have passed, a wait being cut short then (see the
    module docstring); what it does with it is its own affair (it may take back its writes).
    With `cancel`, `cancel.cancel(message)` does the same at once, while the statement runs."""
    g = _Statement(fn, greenlet.getcurrent())
    g.resumed_at = time.perf_counter()
    if deadline_s is not None:
        g.deadline, g.deadline_message = g.resumed_at + deadline_s, deadline_message
    if cancel is not None:
        cancel._statement = g
    try:
        return await _drive(g, args, cancel is not None)
    finally:
        if cancel is not None:
            cancel._statement = None


async def _drive(g: _Statement, args: tuple, cancellable: bool) -> Any:
    """Run `g` to its end (run's body): each wait it asks for is awaited here."""
    request = g.switch(*args)
    while not g.dead:
        _note_slice(g)
        try:
            if g.deadline is None and not cancellable:
                value = await request
            else:
                value = await _until_deadline(g, request)
        except BaseException as exc:   # the statement's wait raises it (CancelledError included)
            g.resumed_at = time.perf_counter()
            request = g.throw(exc)
        else:
            g.resumed_at = time.perf_counter()
            request = g.switch(value)
    _note_slice(g)
    return request


async def _until_deadline(g: _Statement, awaitable: Awaitable) -> Any:
    """The awaitable's result, unless `g`'s deadline (or a Cancel) comes first: then it is
    cancelled and DeadlineExceeded raised (a deadline already past cancels it at its first
    suspension). No deadline: only a Cancel ends the wait early."""
    timeout = asyncio.timeout(None if g.deadline is None else g.deadline - time.perf_counter())
    g.timeout = timeout
    try:
        async with timeout:
            return await awaitable
    except TimeoutError:
        if not timeout.expired():   # the awaitable's own TimeoutError, not the deadline's
            raise
        raise g.expire() from None
    finally:
        g.timeout = None


def in_statement() -> bool:
    """Whether the caller runs inside `run` (and may `wait`)."""
    return isinstance(greenlet.getcurrent(), _Statement)


def wait(awaitable: Awaitable) -> Any:
    """The awaitable's result, for code inside `run`: the statement is suspended, the loop
    awaits it, and the statement continues with its result or its exception - DeadlineExceeded
    if the statement's deadline came first (the awaitable is then cancelled)."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Statement):
        if asyncio.iscoroutine(awaitable):
            awaitable.close()   # never awaited: do not leave a "never awaited" warning behind
        raise RuntimeError("coop.wait outside a statement run by coop.run")
    return current.parent.switch(awaitable)


def checkpoint() -> None:
    """Inside `run`: raise DeadlineExceeded once the statement's deadline has come, and yield
    to the loop once it has held it for loop_task_max_ms; anywhere else, nothing. Cheap enough
    for every row: one clock reading."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Statement):
        return
    now = time.perf_counter()
    if current.deadline is not None and now >= current.deadline:
        raise current.expire()
    if now - current.resumed_at >= constants.loop_task_max_ms / 1000:
        current.parent.switch(asyncio.sleep(0))


def sleep(seconds: float) -> None:
    """time.sleep for code that may run inside `run` (then only the statement sleeps)."""
    if in_statement():
        wait(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def offload(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on a thread of the loop's default executor, for work that cannot be cut into
    slices; the statement waits for it and the loop goes on. Outside a statement, a plain call.
    A deadline ends the statement's wait, not the thread, which finishes fn unobserved."""
    if in_statement():
        return wait(asyncio.to_thread(fn, *args))
    return fn(*args)


def slice_max_ms() -> float:
    """The longest time one statement has held the loop between two switches, in ms."""
    return round(_slice_max_s * 1000, 3)
