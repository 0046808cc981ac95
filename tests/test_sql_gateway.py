"""The SQL gateway of a node, over an in-process node whose KV is sql/memkv.py: statements run
as coroutines on the loop (raftstore.coop), 64 clients' at once, sessions (and their plan caches) are reused, and
a multi-row INSERT sends its rows' calls together."""

from __future__ import annotations

import asyncio
import time

import pytest

from raftstore.keys import encode_key
from raftstore.raft.commands import Outcome
from sql import MemKV
from raftstore.server.nodekv import NodeKV
from sql.gateway import Gateway
from sql.schema_leases import SchemaLeases


def _gateway(node) -> Gateway:
    """A gateway whose sessions run on NodeKV over `node`, as the composition root wires it."""
    loop = asyncio.get_running_loop()
    return Gateway(lambda: NodeKV(node, loop), loop)


class MemNode:
    """The two node calls NodeKV makes, answered from a MemKV on the event loop. With `hold`
    set, every proposal waits until `hold` proposals are waiting at once."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()   # made inside the test's event loop
        self.kv = MemKV()
        self.hold = 0
        self.waiting = 0
        self.most_waiting = 0
        self.release = asyncio.Event()
        self.catalog_gets = 0

    async def propose_key(self, op, key, args, command_id):
        if op == "get" and key.startswith(b"\x01c"):
            self.catalog_gets += 1
        if self.hold:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            if self.waiting >= self.hold:
                self.release.set()
            await self.release.wait()
            self.waiting -= 1
        if op == "check":
            confirmed = self.kv.confirm(key, args["if_version"])
            value, version = confirmed.current or (None, None)
            return Outcome.COMMITTED, {"swapped": confirmed.swapped, "ts": [2, 0], "value": value,
                                       "version": None if version is None else list(version)}
        if op in ("get", "get_for_update"):
            found = self.kv.get_version(key)
            return Outcome.COMMITTED, {"value": found[0], "ts": list(found[1])} if found else {"value": None, "ts": [0, 0]}
        if op == "put_if":
            written = self.kv.write_if(key, args["if_version"], args["value"])
            if written.swapped:
                return Outcome.COMMITTED, {"swapped": True, "ts": list(written.version)}
            value, version = written.current or (None, None)
            return Outcome.COMMITTED, {"swapped": False, "ts": [2, 0], "value": value,
                                       "version": None if version is None else list(version)}
        if op == "cas":
            swapped = self.kv.cas(key, args["expected"], args["new"])
            return Outcome.COMMITTED, {"swapped": swapped, "ts": [2, 0]}
        if op == "put":
            self.kv.put(key, args["value"])
        elif op == "delete":
            self.kv.delete(key)
        return Outcome.COMMITTED, {"ts": [2, 0]}

    async def batch_within(self, ops, timeout_s, header=None):
        """What a statement waits on: each op of the batch answered alone (as if every key had
        a range of its own)."""
        return await asyncio.gather(*(self.propose_key(op.kind, op.key, op.to_wire(), None) for op in ops))

    async def scan_keys(self, start, end, limit, header=None):
        found = self.kv.scan_versions(start, end, limit)
        return Outcome.COMMITTED, {"rows": [[k, v] for k, v, _ in found], "versions": [list(t) for _, _, t in found],
                                   "ts": [1, 0]}


def _run(coro):
    return asyncio.run(coro)


async def _close(gateway: Gateway) -> None:
    """Wait for the gateway's background statements (schema lease renewals) to end."""
    await asyncio.gather(*list(gateway._renewals), return_exceptions=True)


def _ok(response: dict) -> dict:
    assert response["ok"], response
    return response["result"]


def test_the_gateway_has_64_statements_in_flight_at_once() -> None:
    async def main():
        node = MemNode()
        gateway = _gateway(node)
        _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY)"}))
        _ok(await gateway.handle({"sql": "SELECT * FROM t"}))     # lease the schema
        node.hold = 64   # no proposal finishes until 64 statements are waiting on one each
        try:
            answers = await asyncio.wait_for(asyncio.gather(*(
                gateway.handle({"sql": "INSERT INTO t VALUES ($1)", "params": [i]}) for i in range(64)
            )), timeout=60)
        finally:
            node.release.set()
        assert [_ok(a)["rowcount"] for a in answers] == [1] * 64
        assert node.most_waiting == 64
        await _close(gateway)
    _run(main())


def test_a_statement_runs_on_a_reused_session_whose_plan_cache_hits() -> None:
    async def main():
        node = MemNode()
        gateway = _gateway(node)
        _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)"}))
        sql = "INSERT INTO t VALUES ($1, 'x')"
        _ok(await gateway.handle({"sql": sql, "params": [1]}))
        (session,) = gateway._idle
        plan = session._cache[sql].plan
        result = _ok(await gateway.handle({"sql": sql, "params": [2]}))
        assert gateway._idle == [session] and session._cache[sql].plan is plan
        assert result["ts"] == list(node.kv.get_version(b"t" + encode_key((1, 2)))[1])   # the row's commit ts
        await _close(gateway)
    _run(main())


def test_a_multi_row_insert_has_all_its_rows_in_flight_together() -> None:
    async def main():
        node = MemNode()
        gateway = _gateway(node)
        _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY)"}))
        _ok(await gateway.handle({"sql": "SELECT * FROM t"}))
        node.hold = 10   # the 10 existence checks, then the 10 CASes, each wait for all 10
        try:
            values = ", ".join(f"({i})" for i in range(10))
            answer = await asyncio.wait_for(gateway.handle({"sql": f"INSERT INTO t VALUES {values}"}), 60)
        finally:
            node.release.set()
        assert _ok(answer)["rowcount"] == 10
        node.hold = 0
        assert _ok(await gateway.handle({"sql": "SELECT count(*) FROM t"}))["rows"] == [[10]]
        await _close(gateway)
    _run(main())


def test_a_lease_past_half_its_life_is_renewed_after_the_statement_answers() -> None:
    async def main():
        node = MemNode()
        gateway = _gateway(node)
        gateway.leases = SchemaLeases(lease_s=0.4, margin_s=0.05)   # before the first session
        _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY)"}))
        _ok(await gateway.handle({"sql": "SELECT * FROM t"}))
        leased = node.catalog_gets
        await asyncio.sleep(0.2)                  # past half of the 0.35 s the lease is used
        _ok(await gateway.handle({"sql": "SELECT * FROM t"}))     # answered from the lease...
        deadline = time.monotonic() + 10          # ...and the renewal follows in the background
        while node.catalog_gets != leased + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert node.catalog_gets == leased + 1
        await _close(gateway)
    _run(main())


@pytest.mark.parametrize("statement", ["SELEC 1", "SELECT * FROM nowhere"])
def test_bad_sql_is_an_error_answer_and_the_session_goes_back(statement) -> None:
    async def main():
        gateway = _gateway(MemNode())
        answer = await gateway.handle({"sql": statement})
        assert not answer["ok"] and answer["error"]["message"]
        assert len(gateway._idle) == 1
        await _close(gateway)
    _run(main())


@pytest.mark.parametrize("statement", [
    "SELECT " + "+".join(["1"] * 500_000),           # 1 MB: over the byte limit
    "SELECT " + "+".join(["1"] * 1000),               # short, but too deep for the evaluator
    "SELECT " + "(" * 5000 + "1" + ")" * 5000,        # nested past the parser's limit
])
def test_an_over_limit_statement_is_answered_program_limit_exceeded_never_internal(statement) -> None:
    async def main():
        gateway = _gateway(MemNode())
        answer = await gateway.handle({"sql": statement})
        assert not answer["ok"] and answer["error"]["code"] == "sql_error", answer
        assert answer["error"]["sql_code"] == "program_limit_exceeded", answer
        assert "_MAX" in answer["error"]["message"]
        assert len(gateway._idle) == 1
        await _close(gateway)
    _run(main())


LOSE = "lose"   # a Refusing answer: the write lost a race (the key's current row and version)


class Refusing(MemNode):
    """Answers row writes (put_if) from the `answers` list, one per write, while it lasts:
    None lets a write through to the MemKV, LOSE says another writer got there first."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list = []
        self.row_writes = 0

    async def propose_key(self, op, key, args, command_id):
        if op == "put_if" and key.startswith(b"t"):
            self.row_writes += 1
            if self.answers:
                answer = self.answers.pop(0)
                if answer == LOSE:
                    found = self.kv.get_version(key)   # another writer's version (the same bytes)
                    if found is not None:
                        self.kv.put(key, found[0])
                    value, version = self.kv.get_version(key) or (None, None)
                    return Outcome.COMMITTED, {"swapped": False, "ts": [2, 0], "value": value,
                                               "version": None if version is None else list(version)}
                if answer is not None:
                    return answer
        return await super().propose_key(op, key, args, command_id)


async def _table(gateway, rows: int = 0) -> None:
    _ok(await gateway.handle({"sql": "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)"}))
    if rows:
        values = ", ".join(f"({i}, 'r{i}')" for i in range(rows))
        _ok(await gateway.handle({"sql": f"INSERT INTO t VALUES {values}"}))


def test_a_row_too_large_to_replicate_is_a_too_large_error_and_a_lost_answer_is_ambiguous() -> None:
    async def main():
        node = Refusing()
        gateway = _gateway(node)
        await _table(gateway)
        node.answers = [(Outcome.NOT_COMMITTED, ValueError("command of 600000 bytes exceeds command_bytes_max=524288"))]
        answer = await gateway.handle({"sql": "INSERT INTO t VALUES (1, 'x')"})
        assert not answer["ok"] and answer["error"]["code"] == "too_large", answer
        node.answers = [(Outcome.AMBIGUOUS, "no answer in 120 s; it may still commit")]
        answer = await gateway.handle({"sql": "INSERT INTO t VALUES (1, 'x')"})
        error = answer["error"]
        assert not answer["ok"] and error["sql_code"] == "statement_completion_unknown" and error["ambiguous"], answer
        await _close(gateway)
    _run(main())


def test_a_write_conflict_before_anything_was_written_is_run_again_by_the_gateway() -> None:
    from sql.constants import ROW_CAS_RETRY_COUNT_MAX

    async def main():
        node = Refusing()
        gateway = _gateway(node)
        await _table(gateway, rows=1)
        node.row_writes = 0
        node.answers = [LOSE] * ROW_CAS_RETRY_COUNT_MAX      # the first run loses every round
        assert _ok(await gateway.handle({"sql": "UPDATE t SET v = 'mine'"}))["rowcount"] == 1
        assert node.row_writes == ROW_CAS_RETRY_COUNT_MAX + 1
        assert _ok(await gateway.handle({"sql": "SELECT v FROM t"}))["rows"] == [["mine"]]
        await _close(gateway)
    _run(main())


def test_a_write_conflict_past_the_gateways_retries_is_40001_and_not_ambiguous() -> None:
    from raftstore import constants
    from sql.constants import ROW_CAS_RETRY_COUNT_MAX

    async def main():
        node = Refusing()
        gateway = _gateway(node)
        await _table(gateway, rows=1)
        node.row_writes = 0
        runs = constants.sql_conflict_retries_max + 1
        node.answers = [LOSE] * (ROW_CAS_RETRY_COUNT_MAX * runs)
        error = (await gateway.handle({"sql": "UPDATE t SET v = 'mine'"}))["error"]
        assert (error["sql_code"], error["ambiguous"]) == ("serialization_failure", False), error
        assert "gave up after running it %d times" % runs in error["message"]
        assert node.row_writes == ROW_CAS_RETRY_COUNT_MAX * runs
        assert _ok(await gateway.handle({"sql": "SELECT v FROM t"}))["rows"] == [["r0"]]
        await _close(gateway)
    _run(main())


def test_a_write_that_fails_after_another_applied_is_40003_never_unavailable() -> None:
    async def main():
        node = Refusing()
        gateway = _gateway(node)
        await _table(gateway, rows=3)
        node.answers = [None, (Outcome.NOT_COMMITTED, "pysyncobj: not leader")]
        error = (await gateway.handle({"sql": "UPDATE t SET v = 'mine'"}))["error"]
        assert (error["sql_code"], error["ambiguous"]) == ("statement_completion_unknown", True), error
        assert "rolled back" in error["message"]
        assert _ok(await gateway.handle({"sql": "SELECT v FROM t ORDER BY k"}))["rows"] == [["r0"], ["r1"], ["r2"]]
        await _close(gateway)
    _run(main())


def test_a_write_that_fails_before_any_applied_is_unavailable_so_it_may_be_sent_again() -> None:
    async def main():
        node = Refusing()
        gateway = _gateway(node)
        await _table(gateway, rows=3)
        node.answers = [(Outcome.NOT_COMMITTED, "pysyncobj: not leader")] * 3   # every row's write
        error = (await gateway.handle({"sql": "UPDATE t SET v = 'mine'"}))["error"]
        assert (error["code"], error["ambiguous"]) == ("unavailable", False), error
        await _close(gateway)
    _run(main())


def test_a_session_sent_with_a_statement_joins_the_connections_and_comes_back() -> None:
    """A client that moved to another node sends the session its last answer returned: the
    statement runs with its variables and never reads below its causality token."""
    async def main():
        gateway = _gateway(MemNode())
        state: dict = {}
        sent = {"causality": [7, 3], "settings": {"default_transaction_use_follower_reads": "TRUE"}}
        got = _ok(await gateway.handle({"sql": "SHOW default_transaction_use_follower_reads", "session": sent}, state))
        assert got["rows"] == [["on"]]
        assert got["session"] == {"causality": [7, 3], "settings": {"default_transaction_use_follower_reads": "on"}}
        # An older token does not lower the connection's; a newer one raises it.
        older = _ok(await gateway.handle({"sql": "SHOW default_transaction_use_follower_reads", "session": {"causality": [5, 0]}}, state))
        assert older["session"]["causality"] == [7, 3]
        newer = _ok(await gateway.handle({"sql": "SHOW default_transaction_use_follower_reads", "session": {"causality": [9, 0], "settings": {}}}, state))
        assert newer["session"]["causality"] == [9, 0] and state["causality"] == (9, 0)
        # A variable SET would refuse, refused the same way; nothing of it is adopted.
        bad = await gateway.handle({"sql": "SHOW default_transaction_use_follower_reads", "session": {"settings": {"work_mem": "x"}}}, state)
        assert not bad["ok"] and bad["error"]["sql_code"] == "undefined_object", bad
        bad = await gateway.handle({"sql": "SHOW default_transaction_use_follower_reads", "session": {
            "settings": {"default_transaction_use_follower_reads": "maybe"}}}, state)
        assert not bad["ok"] and bad["error"]["sql_code"] == "invalid_value", bad
        assert state["settings"] == {"default_transaction_use_follower_reads": "on"}
        await _close(gateway)
    _run(main())
