"""The SQL gateway of a node: the `sql` op of the client protocol.

A statement runs in a worker thread (the engine is plain blocking code); its range operations
go back to the node's event loop as linearizable proposals routed by key (NodeKV), so the
engine never touches the Store or the node loop directly. Imports point one way: this module
imports the store (raftstore), never the reverse; the node process's composition root
(raftstore.server.main) makes the node's `Gateway` and hands it to the client port.

Per node (one `Gateway`, made when the node starts): a dedicated pool of GATEWAY_THREADS
workers - a statement holds its thread for every WAN round trip it waits on, so the pool's
width is the node's statements in flight; the schema leases every session of the node shares
(sql/schema_leases.py); and a LIFO stack of idle Sessions, each with its own NodeKV, so a statement
runs on a warm plan cache instead of planning again. A session serves one statement at a time:
it is taken off the stack for the statement and put back after it.

What a failed statement is answered (Gateway._execute): a write conflict before any write
applied is run again here (bounded), and is SQLSTATE 40001 if it still fails; once any write
of the statement applied or may have, the answer is 40003 (statement completion unknown,
ambiguous), never 40001 or "unavailable", which clients resend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from raftstore import constants
from raftstore.errors import AmbiguousCommitError, RaftstoreError, SqlError, TooLargeError, UnavailableError
from raftstore.kv import backoff_delay_s
from raftstore.raft.commands import Outcome, new_command_id
from sql.constants import (
    GATEWAY_KV_CALL_TIMEOUT_S,
    GATEWAY_KV_FANOUT_MAX,
    GATEWAY_SESSIONS_IDLE_MAX,
    GATEWAY_THREADS,
)
from sql.kv import (ConsistencyResult, RangeInfo, RegionInfo, Version, Write, WriteResult, check_key,
                    check_scan_limit, check_value, check_writes, not_sent)

_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_WRITE_OPS = frozenset({"put", "delete", "cas", "put_if"})

logger = logging.getLogger(__name__)


class NodeKV:
    """The SQL engine's KV (the `sql.kv.KV` Protocol) over a running node: blocking, called
    from a worker thread. `get_many` / `write_if_many` run their calls concurrently on the node
    loop (multi-row statements).

    Per statement (`begin_statement` resets them): `max_ts`, the highest timestamp seen, and
    `wrote`, whether any write applied or may have - after which no failure of the statement
    may be reported as "unavailable" (it would be sent again)."""

    def __init__(self, node, loop: asyncio.AbstractEventLoop) -> None:
        self.node, self.loop = node, loop
        self.begin_statement()

    def begin_statement(self) -> None:
        self.max_ts = [0, 0]
        self.wrote = False

    def _run(self, coro):
        """A read-only node call (scan, status) that lives on the asyncio loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=GATEWAY_KV_CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise UnavailableError("a KV call of this statement got no answer in %.0f s"
                                   % GATEWAY_KV_CALL_TIMEOUT_S) from None

    def _propose_many(self, op: str, calls: list[tuple[bytes, dict]], *, stop_after_failure: bool = False) -> list:
        """(outcome, result) of every (key, args), in the order given: proposed straight to the
        node loop GATEWAY_KV_FANOUT_MAX at a time (node.propose_keys_blocking: answered to this
        thread, no asyncio hop), each window finished before the next is sent. With
        `stop_after_failure`, no window is sent after one in which a call did not commit (the
        answers are then fewer than the calls)."""
        answers: list = []
        for i in range(0, len(calls), GATEWAY_KV_FANOUT_MAX):
            window = [(op, key, dict(args, key=key), new_command_id())
                      for key, args in calls[i:i + GATEWAY_KV_FANOUT_MAX]]
            got = self.node.propose_keys_blocking(window, GATEWAY_KV_CALL_TIMEOUT_S)
            for outcome, result in got:
                if outcome is Outcome.COMMITTED and isinstance(result, dict) and isinstance(result.get("ts"), list):
                    self.max_ts = max(self.max_ts, result["ts"])
                if op in _WRITE_OPS and (outcome is Outcome.AMBIGUOUS or (
                        outcome is Outcome.COMMITTED and result.get("swapped", True))):
                    self.wrote = True
            answers.extend(got)
            if stop_after_failure and any(outcome is not Outcome.COMMITTED for outcome, _ in got):
                break
        return answers

    @staticmethod
    def _error(outcome: Outcome, result: Any, write: bool) -> RaftstoreError:
        """The error for a call that did not commit (see node.propose_keys_blocking)."""
        if isinstance(result, ValueError):   # refused before proposing: nothing of it applied
            return TooLargeError("a row of this statement is too large to replicate (%s)" % result)
        if outcome is Outcome.AMBIGUOUS and write:
            return AmbiguousCommitError("a write of this statement may or may not have committed (%s)" % result)
        return UnavailableError("%s" % result)

    def _check(self, answer: tuple, write: bool) -> Any:
        outcome, result = answer
        if outcome is not Outcome.COMMITTED:
            raise self._error(outcome, result, write)
        return result

    def _propose(self, op: str, key: bytes, args: dict) -> Any:
        return self._check(self._propose_many(op, [(key, args)])[0], op in _WRITE_OPS)

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        return self._propose("get", key, {})["value"]

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        for key in keys:
            check_key(key)
        return [self._check(answer, False)["value"] for answer in self._propose_many("get", [(key, {}) for key in keys])]

    def get_version(self, key: bytes) -> tuple[bytes, Version] | None:
        check_key(key)
        result = self._propose("get", key, {})
        return None if result["value"] is None else (result["value"], tuple(result["ts"]))

    def scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v, _ in self.scan_versions(start, end, limit)]

    def scan_versions(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes, Version]]:
        check_key(start, allow_empty=True)
        if end is not None:
            check_key(end)
        check_scan_limit(limit)
        result = self._check(self._run(self.node.scan_keys(start, end, limit)), False)
        return [(k, v, tuple(ts)) for (k, v), ts in zip(result["rows"], result["versions"])]

    def put(self, key: bytes, value: bytes) -> None:
        check_key(key)
        check_value(value)
        self._propose("put", key, {"value": value})

    def delete(self, key: bytes) -> None:
        check_key(key)
        self._propose("delete", key, {})

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        check_key(key)
        check_value(new)
        if expected is not None:
            check_value(expected)
        return bool(self._propose("cas", key, {"expected": expected, "new": new})["swapped"])

    def write_if(self, key: bytes, if_version: Version | None, value: bytes | None) -> WriteResult:
        return self.write_if_many([(key, if_version, value)])[0]

    def write_if_many(self, writes: Sequence[Write], *, stop_after_failure: bool = True) -> list[WriteResult]:
        """sql/kv.py's conditioned writes (the replicated `put_if`); never raises: a write with
        no answer has an `error`. With `stop_after_failure`, no window is sent after one with a
        failed write."""
        check_writes(writes)
        calls = [(key, {"if_version": None if version is None else list(version), "value": value})
                 for key, version, value in writes]
        results = []
        for outcome, result in self._propose_many("put_if", calls, stop_after_failure=stop_after_failure):
            if outcome is not Outcome.COMMITTED:
                results.append(WriteResult(False, error=self._error(outcome, result, True)))
            elif result["swapped"]:
                results.append(WriteResult(True, version=tuple(result["ts"])))
            else:
                current = None if result["value"] is None else (result["value"], tuple(result["version"]))
                results.append(WriteResult(False, current=current))
        return results + not_sent(len(writes) - len(results))

    def _status(self) -> dict:
        return self._run(self.node.status())

    def check_consistency(self, start: bytes, end: bytes | None) -> list[ConsistencyResult]:
        """A consistency check of every range overlapping [start, end) (raftstore.kvserver.consistency):
        one result map per range, in key order; the node bounds it well below the call timeout."""
        return self._run(self.node.check_consistency(start, end))

    def ranges_for(self, start: bytes, end: bytes | None) -> list[RangeInfo]:
        status = self._status()
        members = status["members"]

        def who(nid):
            return {"node_id": nid, "region": members.get(str(nid), {}).get("region", "?")}
        out = []
        for r in status["ranges"]:
            if r["start"] is None:
                continue
            overlaps = (end is None or r["start"] < end) and (r["end"] is None or start < r["end"])
            if overlaps:
                out.append({"range_id": r["range_id"], "start": r["start"], "end": r["end"],
                            "replicas": [who(n) for n in r["replicas"]],
                            "leader": who(r["leader"]) if r["leader"] is not None else None})
        return sorted(out, key=lambda r: r["start"])   # the status lists ranges by id, not by key

    def regions(self) -> list[RegionInfo]:
        status = self._status()
        up = set(status["connected"]) | {status["node_id"]}
        return [{"region": m["region"], "node_id": int(nid), "up": int(nid) in up}
                for nid, m in sorted(status["members"].items(), key=lambda kv: int(kv[0]))]


def _wire_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.strftime(_TS_FORMAT) if value.microsecond else value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def _param(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and value[0] == "ts" and isinstance(value[1], str):
        return datetime.datetime.fromisoformat(value[1])
    return value


def _sql_error(exc) -> dict:
    message = getattr(exc, "message", None) or str(exc)   # the caret shows the position; no "(line, col)"
    code = getattr(exc, "code", "syntax")
    return {"ok": False, "error": SqlError(message, sql_code=code, position=getattr(exc, "position", None),
                                           ambiguous=code == "statement_completion_unknown").to_wire()}


def _completion_unknown(exc: RaftstoreError):
    from sql.errors import SQLError

    return SQLError("statement_completion_unknown",
                    "statement completion unknown: %s; some of this statement's writes applied, or "
                    "may have, before it failed; check before running it again" % exc.message)


class Gateway:
    """A node's SQL state: worker pool, schema leases, idle sessions (see the module docstring)."""

    def __init__(self, node, loop: asyncio.AbstractEventLoop) -> None:
        from sql.schema_leases import SchemaLeases

        self.node, self.loop = node, loop
        self.leases = SchemaLeases()
        self.executor = concurrent.futures.ThreadPoolExecutor(GATEWAY_THREADS, thread_name_prefix="sql")
        self._idle: list = []
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._closer = loop.create_task(self._close_with_the_loop())

    async def _close_with_the_loop(self) -> None:
        """Stop the workers when the node's loop ends (asyncio.run cancels this task at exit),
        while the loop still runs: a worker blocked on a KV call needs the loop to finish it,
        and the interpreter waits for every worker before the process can exit."""
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(self.executor.shutdown, True, cancel_futures=True)

    def _take_session(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        from sql.execute import Session
        return Session(NodeKV(self.node, self.loop), leases=self.leases)

    def _give_back(self, session) -> None:
        with self._lock:
            if len(self._idle) < GATEWAY_SESSIONS_IDLE_MAX:
                self._idle.append(session)

    def _renew(self, names: list[str]) -> None:
        """Renew schema leases past half their life (on a worker, after the statement that
        found them has answered); a failure only means the next statement reads the catalog."""
        session = self._take_session()
        try:
            session.renew_leases(names)
        except Exception as exc:   # best effort: the lease simply runs out
            logger.info("schema lease renewal of %s failed: %s", names, exc)
        finally:
            self._give_back(session)

    def _execute(self, session, sql: str, params: list) -> tuple:
        """Run one statement on `session` (a worker thread); returns (Result, timestamp).

        What the client may do after a failure decides what it is told. A write conflict met
        before any write of the statement applied (40001) is run again here, at most
        sql_conflict_retries_max times, after a growing jittered pause; the last one reaches the
        client, which may run it again too. Once any write applied or may have (the KV saw it,
        whatever the engine said), no failure is "unavailable" or 40001, which would invite a
        resend that applies it twice: it is 40003, statement completion unknown."""
        from sql.errors import SQLError

        kv = session.kv
        attempt = 0
        while True:
            attempt += 1
            kv.begin_statement()
            try:
                return session.execute(sql, params), list(kv.max_ts)
            except SQLError as exc:
                if exc.code != "serialization_failure":
                    raise
                if kv.wrote:
                    raise _completion_unknown(exc) from None
                if attempt > constants.sql_conflict_retries_max:
                    raise SQLError(exc.code, "%s; gave up after running it %d times" % (exc.message, attempt),
                                   exc.position) from None
            except (UnavailableError, AmbiguousCommitError) as exc:
                if kv.wrote:
                    raise _completion_unknown(exc) from None
                raise
            time.sleep(backoff_delay_s(attempt, self._rng, constants.sql_conflict_backoff_s_min,
                                       constants.sql_conflict_backoff_s_max))

    async def handle(self, args: dict) -> dict:
        """The `sql` op: run one statement, answer with columns, types, rows and the timestamp."""
        from sql.errors import SQLError

        try:
            params = [_param(p) for p in (args.get("params") or [])]
        except ValueError as exc:
            return _sql_error(SQLError("invalid_parameter", "bad timestamp parameter: %s" % exc))

        def run():
            # The session is ours from here until it is given back, on this thread, after the
            # statement: even if the awaiting task is cancelled, nobody else runs on it meanwhile.
            session = self._take_session()
            try:
                try:
                    return self._execute(session, args["sql"], params)
                finally:
                    renewals = session.take_renewals()
                    if renewals:
                        self.executor.submit(self._renew, renewals)
            finally:
                self._give_back(session)
        try:
            result, ts = await self.loop.run_in_executor(self.executor, run)
        except SQLError as exc:
            return _sql_error(exc)
        except RaftstoreError as exc:
            return {"ok": False, "error": exc.to_wire()}
        return {"ok": True, "result": {"columns": list(result.columns), "types": list(result.types),
                                       "rows": [[_wire_value(v) for v in row] for row in result.rows],
                                       "rowcount": result.rowcount, "status": result.status, "ts": ts}}
