"""statement_timeout: the session variable (sql/session_vars.py), the deadline a statement stops
itself at (raftstore/coop.py: row-loop checkpoints and KV waits), and what the gateway answers
(sql/gateway.py: SQLSTATE 57014, or 40003 once a write of it applied or may have), over an
in-process node whose KV is sql/memkv.py (tests/test_sql_gateway.py's MemNode).

The statements that "run forever" are cross joins of a 100-row table with itself: four ways is
10^8 combinations, minutes of Python; the tests wait for answers with wide margins and never
assert how fast they came, only that they came and what they say."""

from __future__ import annotations

import asyncio
import time

import pytest

import greenlet

from raftstore import coop
from raftstore.errors import SQLSTATE_BY_SQL_CODE
from raftstore.kvserver.batch import Put
from raftstore.raft.commands import Outcome
from sql import MemKV, Session, SQLError
from sql.gateway import Gateway
from sql.session_vars import SESSION_VARS, parse_timeout_ms, set_value, show_duration_ms, statement_timeout_ms

from tests.test_sql_gateway import MemNode, _close, _gateway, _ok

ROWS = 100
FOREVER = "SELECT count(*) FROM t AS a, t AS b, t AS c, t AS d"   # 10^8 rows joined: minutes
SECONDS = "SELECT count(*) FROM t AS a, t AS b, t AS c"           # 10^6: a second or two
MARGIN_S = 60   # how long a test waits for an answer before it fails (a busy machine is slow)


# --- the variable ---------------------------------------------------------------------------------


@pytest.mark.parametrize("given, ms, shown", [
    ("5s", 5000, "5s"),
    ("5000", 5000, "5s"),
    (" 5000 ", 5000, "5s"),
    ("500ms", 500, "500ms"),
    ("1500", 1500, "1500ms"),
    ("1.5s", 1500, "1500ms"),
    ("1min", 60_000, "1min"),
    ("90s", 90_000, "90s"),
    ("2 minutes", 120_000, "2min"),
    ("1h", 3_600_000, "1h"),
    ("1m30s", 90_000, "90s"),
    ("0", 0, "0"),
    ("0s", 0, "0"),
    ("0.1ms", 1, "1ms"),      # a positive timeout never rounds down to none
])
def test_statement_timeout_takes_a_duration_or_milliseconds_and_shows_as_postgresql_does(given, ms, shown):
    assert parse_timeout_ms(given) == ms
    assert set_value("statement_timeout", given) == shown == show_duration_ms(ms)
    assert parse_timeout_ms(shown) == ms      # what a session keeps reads back to the same timeout


@pytest.mark.parametrize("given", ["soon", "-5s", "5 parsecs", "", "s", "1e3", "600h", "9" * 400 + "s"])
def test_a_statement_timeout_that_is_no_duration_is_an_invalid_value_naming_the_forms(given):
    with pytest.raises(SQLError) as caught:
        set_value("statement_timeout", given)
    assert caught.value.code == "invalid_value"
    assert "statement_timeout" in caught.value.message and "0" in caught.value.message


def test_default_drops_the_sessions_value_and_the_nodes_default_applies_then():
    assert set_value("statement_timeout", "DEFAULT") is None
    assert set_value("default_transaction_use_follower_reads", "default") is None
    assert statement_timeout_ms({}, 7000) == 7000
    assert statement_timeout_ms({"statement_timeout": "0"}, 7000) == 0     # SET 0: none, whatever the node says
    assert statement_timeout_ms({"statement_timeout": "2s"}, 7000) == 2000
    assert SESSION_VARS["statement_timeout"] == "0"


def test_set_and_show_statement_timeout_in_a_session():
    session = Session(MemKV())

    def show():
        return session.execute("SHOW statement_timeout").rows

    assert show() == [["0"]]
    assert session.execute("SET statement_timeout = '5s'").status == "SET"
    assert show() == [["5s"]] and session.settings == {"statement_timeout": "5s"}
    session.execute("SET statement_timeout TO 250")
    assert show() == [["250ms"]]
    session.defaults = {"statement_timeout": "10min"}     # as the gateway of a node with a default
    session.execute("SET statement_timeout = DEFAULT")
    assert show() == [["10min"]] and session.settings == {}
    with pytest.raises(SQLError) as caught:
        session.execute("SET statement_timeout = 'forever'")
    assert caught.value.code == "invalid_value" and "'5s'" in caught.value.message
    assert SQLSTATE_BY_SQL_CODE["query_canceled"] == "57014"


# --- the deadline in raftstore.coop ---------------------------------------------------------------


def test_a_statement_past_its_deadline_stops_at_its_next_checkpoint():
    def spin():
        while True:          # a row loop that never ends by itself
            coop.checkpoint()

    async def main():
        started = time.perf_counter()
        with pytest.raises(coop.DeadlineExceeded, match="too slow"):
            await asyncio.wait_for(coop.run(spin, deadline_s=0.1, deadline_message="too slow"), MARGIN_S)
        return time.perf_counter() - started
    assert asyncio.run(main()) >= 0.1


def test_a_wait_is_cut_short_at_the_deadline_and_what_it_waited_on_is_cancelled():
    async def main():
        cancelled = asyncio.Event()

        async def never_answered():
            try:
                await asyncio.sleep(3600)
            finally:
                cancelled.set()

        def statement():
            coop.wait(never_answered())
        with pytest.raises(coop.DeadlineExceeded):
            await asyncio.wait_for(coop.run(statement, deadline_s=0.1), MARGIN_S)
        assert cancelled.is_set()
    asyncio.run(main())


def test_the_deadline_fires_once_so_the_statement_can_still_clean_up():
    def statement():
        try:
            coop.wait(asyncio.sleep(3600))
        except coop.DeadlineExceeded:
            coop.checkpoint()                         # no second DeadlineExceeded
            return coop.wait(asyncio.sleep(0.01, "cleaned up"))

    async def main():
        return await asyncio.wait_for(coop.run(statement, deadline_s=0.05), MARGIN_S)
    assert asyncio.run(main()) == "cleaned up"


def test_an_awaitables_own_timeout_is_not_taken_for_the_deadline():
    async def times_out():
        raise TimeoutError("the node's own")

    def statement():
        with pytest.raises(TimeoutError, match="the node's own"):
            coop.wait(times_out())
        return "went on"

    async def main():
        return await coop.run(statement, deadline_s=30)
    assert asyncio.run(main()) == "went on"


# --- the gateway ------------------------------------------------------------------------------------


async def _table(gateway: Gateway, rows: int = ROWS, state: dict | None = None) -> None:
    _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)"}, state))
    _ok(await gateway.handle({"sql": "INSERT INTO t VALUES " + ", ".join("(%d, 'r%d')" % (i, i) for i in range(rows))},
                             state))


async def _timed(gateway: Gateway, sql: str, state: dict) -> tuple[dict, float]:
    started = time.perf_counter()
    answer = await asyncio.wait_for(gateway.handle({"sql": sql}, state), MARGIN_S)
    return answer, time.perf_counter() - started


def _canceled(answer: dict) -> dict:
    assert not answer["ok"], answer
    error = answer["error"]
    assert (error["code"], error["sql_code"], error["ambiguous"]) == ("sql_error", "query_canceled", False), error
    return error


def test_a_statement_that_would_run_for_minutes_is_canceled_at_its_timeout_with_57014_and_the_session_goes_on():
    async def main():
        gateway = _gateway(MemNode())
        await _table(gateway)
        state: dict = {}
        _ok(await gateway.handle({"sql": "SET statement_timeout = '300ms'"}, state))
        answer, took_s = await _timed(gateway, FOREVER, state)
        error = _canceled(answer)
        assert error["message"].startswith("canceling statement due to statement timeout (statement_timeout = 300ms)")
        assert took_s >= 0.3                                      # never before its time
        # Everything went back: the session (to the idle stack), its KV's statement state.
        (session,) = gateway._idle
        assert not session.kv.in_statement and session.kv.read_ts is None
        assert _ok(await gateway.handle({"sql": "SELECT count(*) FROM t"}, state))["rows"] == [[ROWS]]
        _ok(await gateway.handle({"sql": "SET statement_timeout = 0"}, state))
        assert _ok(await gateway.handle({"sql": "SELECT count(*) FROM t AS a, t AS b"}, state))["rows"] == [[ROWS ** 2]]
        await _close(gateway)
    asyncio.run(main())


def test_the_nodes_default_applies_to_a_session_that_sets_none_and_says_so():
    async def main():
        node = MemNode()
        loop = asyncio.get_running_loop()
        from raftstore.server.nodekv import NodeKV
        gateway = Gateway(lambda: NodeKV(node, loop), loop, statement_timeout_ms=200)
        setup: dict = {}   # the table is made by a session with no timeout: a busy machine may take 200 ms for it
        _ok(await gateway.handle({"sql": "SET statement_timeout = 0"}, setup))
        await _table(gateway, state=setup)
        assert _ok(await gateway.handle({"sql": "SHOW statement_timeout"}, {}))["rows"] == [["200ms"]]
        error = _canceled((await _timed(gateway, FOREVER, {}))[0])
        assert "200ms, this node's --statement-timeout" in error["message"]
        state: dict = {}
        _ok(await gateway.handle({"sql": "SET statement_timeout = 0"}, state))   # the session's own: none
        assert _ok(await gateway.handle({"sql": "SELECT count(*) FROM t AS a, t AS b"}, state))["rows"] == [[ROWS ** 2]]
        await _close(gateway)
    asyncio.run(main())


def test_the_timeout_travels_in_the_session_map_and_a_bad_one_there_is_refused():
    async def main():
        gateway = _gateway(MemNode())
        state: dict = {}
        got = _ok(await gateway.handle({"sql": "SET statement_timeout = 1500"}, state))
        assert got["session"]["settings"] == {"statement_timeout": "1500ms"}
        other: dict = {}       # another node's connection, as the DB-API's resend reaches it
        got = _ok(await gateway.handle({"sql": "SHOW statement_timeout", "session": got["session"]}, other))
        assert got["rows"] == [["1500ms"]] and other["settings"] == {"statement_timeout": "1500ms"}
        got = _ok(await gateway.handle({"sql": "SHOW statement_timeout", "session": {"settings": {
            "statement_timeout": "default"}}}, other))
        assert got["rows"] == [["0"]] and other["settings"] == {}
        bad = await gateway.handle({"sql": "SELECT 1", "session": {"settings": {"statement_timeout": "-1s"}}}, other)
        assert not bad["ok"] and bad["error"]["sql_code"] == "invalid_value", bad
        await _close(gateway)
    asyncio.run(main())


class HeldScans(MemNode):
    """Scans wait for `release` (a node that does not answer) once `hold_scans` is set."""

    hold_scans = False

    async def scan_keys(self, start, end, limit, header=None):
        if self.hold_scans:
            await self.release.wait()
        return await super().scan_keys(start, end, limit, header)


def _kv_wait_scenario() -> tuple[dict | None, bool]:
    """A SELECT whose scan the node never answers, with a 200 ms timeout: (its answer if it came
    within a second past its deadline, else None; whether it answered at all once released)."""
    async def main():
        node = HeldScans()
        gateway = _gateway(node)
        await _table(gateway, rows=3)
        state: dict = {}
        _ok(await gateway.handle({"sql": "SET statement_timeout = '200ms'"}, state))
        node.hold_scans = True
        task = asyncio.create_task(gateway.handle({"sql": "SELECT * FROM t"}, state))
        done, _ = await asyncio.wait({task}, timeout=1.2)
        early = task.result() if done else None
        node.release.set()
        await asyncio.wait_for(task, MARGIN_S)
        await _close(gateway)
        return early, task.done()
    return asyncio.run(main())


def test_a_kv_wait_never_outlasts_the_deadline():
    early, _ = _kv_wait_scenario()
    assert early is not None, "the statement still waited on its scan 1 s past its deadline"
    _canceled(early)


def test_broken_a_build_whose_waits_ignore_the_deadline_is_caught(monkeypatch):
    async def unbounded(g, awaitable):
        return await awaitable
    monkeypatch.setattr(coop, "_until_deadline", unbounded)
    early, answered = _kv_wait_scenario()
    assert early is None and answered    # still waiting past its deadline: the test above fails


def _row_loop_scenario() -> dict:
    """A cross join computing for a second or two, with a 100 ms timeout: its answer."""
    async def main():
        gateway = _gateway(MemNode())
        await _table(gateway)
        state: dict = {}
        _ok(await gateway.handle({"sql": "SET statement_timeout = '100ms'"}, state))
        answer, _ = await _timed(gateway, SECONDS, state)
        await _close(gateway)
        return answer
    return asyncio.run(main())


def test_a_row_loop_stops_at_the_deadline():
    _canceled(_row_loop_scenario())


def test_broken_a_build_without_deadline_checks_is_caught(monkeypatch):
    """Checkpoints as they were before deadlines (they only yield the loop) and waits with no
    bound: the join runs to its end. (Either check alone stops it: a checkpoint's yield to the
    loop is a wait, and waits are cut at the deadline.)"""
    def yield_only():
        current = greenlet.getcurrent()
        if isinstance(current, coop._Statement) and time.perf_counter() - current.resumed_at >= 0.02:
            current.parent.switch(asyncio.sleep(0))

    async def unbounded(g, awaitable):
        return await awaitable
    monkeypatch.setattr(coop, "checkpoint", yield_only)
    monkeypatch.setattr(coop, "_until_deadline", unbounded)
    answer = _row_loop_scenario()
    assert answer["ok"] and answer["result"]["rows"] == [[ROWS ** 3]]   # ran to its end, 10x past its timeout


class HeldWrite(MemNode):
    """Once `hold_after` is set, the batch of row writes after that many more gets no answer
    until `release` (its node went quiet); the others do."""

    hold_after: int | None = None

    async def batch_within(self, ops, timeout_s, header=None):
        if self.hold_after is not None and ops and ops[0].writes and ops[0].key.startswith(b"t"):
            self.hold_after -= 1
            if self.hold_after == -1:
                await self.release.wait()
        return await super().batch_within(ops, timeout_s, header)


def test_a_write_canceled_after_some_of_its_rows_applied_is_40003_and_takes_them_back():
    """An UPDATE of 100 rows sends them in two batches (64 at most each): the first applies, the
    deadline cuts the wait on the second, whose writes may still apply. The answer is 40003,
    never 57014 (which would say nothing was written); the first batch's rows are rolled back."""
    async def main():
        node = HeldWrite()
        gateway = _gateway(node)
        await _table(gateway)
        state: dict = {}
        _ok(await gateway.handle({"sql": "SET statement_timeout = '1s'"}, state))
        node.hold_after = 1         # the UPDATE's first batch applies, its second is held
        answer, _ = await _timed(gateway, "UPDATE t SET v = 'new'", state)
        assert not answer["ok"], answer
        error = answer["error"]
        assert (error["sql_code"], error["ambiguous"]) == ("statement_completion_unknown", True), error
        assert "canceling statement due to statement timeout" in error["message"]
        assert "the other 64 were rolled back" in error["message"], error["message"]
        node.release.set()
        got = _ok(await gateway.handle({"sql": "SELECT count(*) FROM t WHERE v = 'new'"}, state))
        assert got["rows"] == [[0]]      # the held batch was cancelled before it applied (MemNode)
        await _close(gateway)
    asyncio.run(main())


def test_a_write_canceled_before_it_sent_anything_is_57014():
    """A DELETE whose table scan the node does not answer: canceled before any write left."""
    async def main():
        node = HeldScans()
        gateway = _gateway(node)
        await _table(gateway, rows=3)
        state: dict = {}
        _ok(await gateway.handle({"sql": "SET statement_timeout = '200ms'"}, state))
        node.hold_scans = True
        _canceled((await _timed(gateway, "DELETE FROM t WHERE v = 'r1'", state))[0])
        node.hold_scans = False
        node.release.set()
        assert _ok(await gateway.handle({"sql": "SELECT count(*) FROM t"}, state))["rows"] == [[3]]
        await _close(gateway)
    asyncio.run(main())


def test_an_ambiguous_cut_write_is_what_batch_within_answers_for_no_answer_in_time():
    """NodeKV answers a write batch the deadline cut short as AMBIGUOUS (it may still apply)."""
    from raftstore.server.nodekv import NodeKV

    async def main():
        node = HeldWrite()
        node.hold_after = 0                     # the next row write batch is held
        kv = NodeKV(node, asyncio.get_running_loop())

        def statement():
            kv.begin_statement()
            return kv._batch([Put(b"t\x01", b"v")])
        got = await asyncio.wait_for(coop.run(statement, deadline_s=0.1, deadline_message="canceled"), MARGIN_S)
        node.release.set()
        return got, kv.wrote
    (answer,), wrote = asyncio.run(main())
    assert answer[0] is Outcome.AMBIGUOUS and "canceled" in answer[1] and wrote
