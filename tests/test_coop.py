"""Statements as coroutines (raftstore/coop.py): blocking code on an asyncio loop, suspended at its
waits, slicing its CPU-bound stretches so other statements run, cancellable at a wait; and the
SQL gateway built on it, where a long statement does not hold back a short one on the same loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from raftstore import coop
from sql.gateway import Gateway

from tests.test_sql_gateway import MemNode, _close, _gateway, _ok


def test_a_statement_waits_on_the_loop_and_gets_results_and_exceptions() -> None:
    async def later(value):
        await asyncio.sleep(0.01)
        return value

    async def failing():
        await asyncio.sleep(0)
        raise KeyError("gone")

    def statement(n):
        got = [coop.wait(later(i)) for i in range(n)]
        try:
            coop.wait(failing())
        except KeyError as exc:
            got.append(str(exc))
        return got

    async def main():
        return await asyncio.gather(coop.run(statement, 3), coop.run(statement, 2))
    assert asyncio.run(main()) == [[0, 1, 2, "'gone'"], [0, 1, "'gone'"]]


def test_a_statements_own_exception_reaches_the_caller() -> None:
    def statement():
        coop.wait(asyncio.sleep(0))
        raise ValueError("bad row")

    async def main():
        with pytest.raises(ValueError, match="bad row"):
            await coop.run(statement)
    asyncio.run(main())


def test_waiting_outside_a_statement_is_refused() -> None:
    with pytest.raises(RuntimeError, match="outside a statement"):
        coop.wait(asyncio.sleep(0))
    assert not coop.in_statement()
    coop.checkpoint()   # nothing to yield to: a plain call


def test_two_statements_wait_at_once_on_one_thread() -> None:
    """Neither finishes until both wait: no statement holds the loop (or a thread) while waiting."""
    async def main():
        both = asyncio.Event()
        waiting = []
        threads = set()

        async def rendezvous():
            waiting.append(1)
            if len(waiting) == 2:
                both.set()
            await both.wait()

        def statement():
            threads.add(threading.get_ident())
            coop.wait(rendezvous())
            return "done"
        return await asyncio.wait_for(asyncio.gather(coop.run(statement), coop.run(statement)), 10), threads
    results, threads = asyncio.run(main())
    assert results == ["done", "done"] and threads == {threading.get_ident()}


def test_a_cpu_bound_statement_yields_the_loop_at_its_checkpoints() -> None:
    """Another task scheduled while a statement computes runs before the statement ends."""
    async def main():
        events = []

        def long_statement():
            asyncio.get_running_loop().call_soon(lambda: events.append("other task"))
            deadline = time.monotonic() + 30   # a build that never yields stops here, and fails
            while "other task" not in events and time.monotonic() < deadline:
                coop.checkpoint()
            events.append("long statement done")
        await asyncio.wait_for(coop.run(long_statement), 60)
        return events
    assert asyncio.run(main()) == ["other task", "long statement done"]


def test_a_cancelled_statement_gets_the_cancellation_at_its_wait() -> None:
    async def main():
        cleaned = asyncio.Event()

        def statement():
            try:
                coop.wait(asyncio.sleep(60))
            finally:
                cleaned.set()
        task = asyncio.create_task(coop.run(statement))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned.is_set()
    asyncio.run(main())


def test_offloaded_work_runs_on_another_thread_while_the_loop_goes_on() -> None:
    async def main():
        started, release = threading.Event(), threading.Event()
        ticks = []

        def blocking_work():
            started.set()
            release.wait(30)
            return threading.get_ident()

        async def ticker():
            while not started.is_set():
                await asyncio.sleep(0.005)
            ticks.append("loop ran while the work blocked")
            release.set()
        worker, _ = await asyncio.wait_for(asyncio.gather(coop.run(coop.offload, blocking_work), ticker()), 60)
        return worker, ticks
    worker, ticks = asyncio.run(main())
    assert worker != threading.get_ident() and ticks == ["loop ran while the work blocked"]


def test_a_long_statement_does_not_hold_back_a_short_one_on_the_same_gateway() -> None:
    """A cross join computing for many slices, and a SELECT 1 sent while it computes: the short
    statement answers first. (Without checkpoints the join holds the loop until it ends.)"""
    rows = 600

    async def main():
        node = MemNode()
        gateway: Gateway = _gateway(node)
        _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY)"}))
        values = ", ".join("(%d)" % i for i in range(rows))
        _ok(await gateway.handle({"sql": "INSERT INTO t VALUES " + values}))
        order = []
        scans = 0
        short_task = []
        plain_scan = node.scan_keys

        async def scan_keys(start, end, limit, header=None):
            nonlocal scans
            answer = await plain_scan(start, end, limit)
            scans += 1
            if scans == 2:   # the join's second side is read: the statement computes next
                loop = asyncio.get_running_loop()
                # A moment into that computation (it runs for much longer), the short one starts.
                loop.call_later(0.05, lambda: short_task.append(loop.create_task(short())))
            return answer
        node.scan_keys = scan_keys

        async def short():
            _ok(await gateway.handle({"sql": "SELECT 1"}))
            order.append("short")

        async def long():
            answer = _ok(await gateway.handle(
                {"sql": "SELECT count(*) FROM t AS a, t AS b WHERE a.k + b.k >= 0"}))
            order.append("long")
            assert answer["rows"] == [[rows * rows]]
        await asyncio.wait_for(long(), 120)
        await asyncio.wait_for(short_task[0], 60)
        await _close(gateway)
        return order
    assert asyncio.run(main()) == ["short", "long"]


def test_a_cancel_stops_a_statement_at_its_wait_and_at_its_checkpoints() -> None:
    async def main():
        waiting, spinning = coop.Cancel(), coop.Cancel()
        assert not waiting.cancel("nothing runs yet")

        def wait_long() -> None:
            coop.wait(asyncio.sleep(60))   # no deadline: only the cancel ends the wait

        def spin() -> None:
            while True:
                coop.checkpoint()
        tasks = [asyncio.create_task(coop.run(wait_long, cancel=waiting)),
                 asyncio.create_task(coop.run(spin, cancel=spinning))]
        await asyncio.sleep(0.05)
        began = time.monotonic()
        assert waiting.cancel("canceling statement due to user request")
        assert spinning.cancel("canceling statement due to user request")
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        assert time.monotonic() - began < 1.0
        for exc in results:
            assert isinstance(exc, coop.DeadlineExceeded) and exc.requested, exc
            assert exc.message == "canceling statement due to user request"
        assert not waiting.cancel("it has finished")
    asyncio.run(main())
