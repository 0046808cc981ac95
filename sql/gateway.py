"""The SQL gateway of a node: the `sql` op of the client protocol.

A statement runs in a worker thread (the engine is plain blocking code); its range operations
go back to the node's event loop as linearizable proposals routed by key (NodeKV), so the
engine never touches the Store or the node loop directly. Imports point one way: this module
imports the store (raftstore), never the reverse; the CLI hands `handle_sql` to the node.

Per node (one `Gateway`, made on the first statement): a dedicated pool of GATEWAY_THREADS
workers - a statement holds its thread for every WAN round trip it waits on, so the pool's
width is the node's statements in flight; the schema leases every session of the node shares
(sql/leases.py); and a LIFO stack of idle Sessions, each with its own NodeKV, so a statement
runs on a warm plan cache instead of planning again. A session serves one statement at a time:
it is taken off the stack for the statement and put back after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import threading
import weakref
from typing import Any

from raftstore.errors import AmbiguousCommitError, RaftstoreError, SqlError, TooLargeError, UnavailableError
from raftstore.raft.commands import Outcome, new_command_id
from sql.constants import (
    GATEWAY_KV_CALL_TIMEOUT_S,
    GATEWAY_KV_FANOUT_MAX,
    GATEWAY_SESSIONS_IDLE_MAX,
    GATEWAY_THREADS,
)

_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

logger = logging.getLogger(__name__)


class NodeKV:
    """The KV interface of sql.execute over a running node (blocking; call from a worker thread).
    `get_many` / `cas_many` run their calls concurrently on the node loop (multi-row INSERT)."""

    def __init__(self, node, loop: asyncio.AbstractEventLoop) -> None:
        self.node, self.loop = node, loop
        self.max_ts = [0, 0]   # the highest timestamp seen since the last reset (per statement)

    def _run(self, coro):
        """A read-only node call (scan, status) that lives on the asyncio loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=GATEWAY_KV_CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise UnavailableError("a KV call of this statement got no answer in %.0f s"
                                   % GATEWAY_KV_CALL_TIMEOUT_S) from None

    def _propose_many(self, op: str, calls: list[tuple[bytes, dict]], write: bool) -> list:
        """Propose every (key, args) straight to the node loop, GATEWAY_KV_FANOUT_MAX at a time
        (node.propose_keys_blocking: answered to this thread, no asyncio hop); results in the
        order given. The first failure, in that order, is raised - after every call of its
        window has finished, so none is still running when the statement moves on."""
        answers: list = []
        for i in range(0, len(calls), GATEWAY_KV_FANOUT_MAX):
            window = [(op, key, dict(args, key=key), new_command_id())
                      for key, args in calls[i:i + GATEWAY_KV_FANOUT_MAX]]
            try:
                answers.extend(self.node.propose_keys_blocking(window, GATEWAY_KV_CALL_TIMEOUT_S))
            except concurrent.futures.TimeoutError:
                message = "a KV call of this statement got no answer in %.0f s" % GATEWAY_KV_CALL_TIMEOUT_S
                raise (AmbiguousCommitError(message + "; it may have committed") if write
                       else UnavailableError(message)) from None
            except ValueError as exc:   # a write too large to replicate: refused before proposing
                raise TooLargeError(str(exc)) from None
        return [self._check(outcome, result, write) for outcome, result in answers]

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [r["value"] for r in self._propose_many("get", [(key, {}) for key in keys], False)]

    def cas_many(self, swaps: list[tuple[bytes, bytes | None, bytes]]) -> list[bool]:
        calls = [(key, {"expected": expected, "new": new}) for key, expected, new in swaps]
        return [bool(r["swapped"]) for r in self._propose_many("cas", calls, True)]

    def _check(self, outcome: Outcome, result: Any, write: bool) -> Any:
        if outcome is Outcome.COMMITTED:
            if isinstance(result, dict) and isinstance(result.get("ts"), list):
                self.max_ts = max(self.max_ts, result["ts"])
            return result
        if outcome is Outcome.AMBIGUOUS and write:
            raise AmbiguousCommitError("a write of this statement may or may not have committed (%s)" % result)
        raise UnavailableError("%s" % result)

    def _propose(self, op: str, key: bytes, args: dict, write: bool) -> Any:
        return self._propose_many(op, [(key, args)], write)[0]

    def get(self, key: bytes) -> bytes | None:
        return self._propose("get", key, {}, False)["value"]

    def scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        outcome, result = self._run(self.node.scan_keys(start, end, limit))
        return [(k, v) for k, v in self._check(outcome, result, False)["rows"]]

    def put(self, key: bytes, value: bytes) -> None:
        self._propose("put", key, {"value": value}, True)

    def delete(self, key: bytes) -> None:
        self._propose("delete", key, {}, True)

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        return bool(self._propose("cas", key, {"expected": expected, "new": new}, True)["swapped"])

    def _status(self) -> dict:
        return self._run(self.node.status())

    def check_consistency(self, start: bytes, end: bytes | None) -> list[dict]:
        """A consistency check of every range overlapping [start, end) (raftstore.consistency):
        one result map per range, in key order; the node bounds it well below the call timeout."""
        return self._run(self.node.check_consistency(start, end))

    def ranges_for(self, start: bytes, end: bytes | None) -> list[dict]:
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
        return out

    def regions(self) -> list[dict]:
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
    return {"ok": False, "error": SqlError(message, sql_code=getattr(exc, "code", "syntax"),
                                           position=getattr(exc, "position", None)).to_wire()}


class Gateway:
    """A node's SQL state: worker pool, schema leases, idle sessions (see the module docstring)."""

    def __init__(self, node, loop: asyncio.AbstractEventLoop) -> None:
        from sql.leases import SchemaLeases

        self.node, self.loop = node, loop
        self.leases = SchemaLeases()
        self.executor = concurrent.futures.ThreadPoolExecutor(GATEWAY_THREADS, thread_name_prefix="sql")
        self._idle: list = []
        self._lock = threading.Lock()
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
                session.kv.max_ts = [0, 0]
                try:
                    return session.execute(args["sql"], params), list(session.kv.max_ts)
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


_gateways: "weakref.WeakKeyDictionary[Any, Gateway]" = weakref.WeakKeyDictionary()


async def handle_sql(node, args: dict) -> dict:
    """The `sql` op of `node` (called on the node's asyncio loop, which owns its Gateway)."""
    gateway = _gateways.get(node)
    if gateway is None:
        gateway = _gateways[node] = Gateway(node, asyncio.get_running_loop())
    return await gateway.handle(args)
