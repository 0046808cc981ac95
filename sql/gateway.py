"""The SQL gateway of a node: the `sql` op of the client protocol.

A statement runs in a worker thread (the engine is plain blocking code); its range operations
go back to the node's event loop as linearizable proposals routed by key (NodeKV), so the
engine never touches the Store or the node loop directly. Imports point one way: this module
imports the store (raftstore), never the reverse; the CLI hands `handle_sql` to the node.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from raftstore.errors import AmbiguousCommitError, RaftstoreError, SqlError, UnavailableError
from raftstore.raft.commands import Outcome, new_command_id

_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class NodeKV:
    """The KV interface of sql.execute over a running node (blocking; call from a worker thread)."""

    def __init__(self, node, loop: asyncio.AbstractEventLoop) -> None:
        self.node, self.loop = node, loop
        self.max_ts = [0, 0]

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _check(self, outcome: Outcome, result: Any, write: bool) -> Any:
        if outcome is Outcome.COMMITTED:
            if isinstance(result, dict) and isinstance(result.get("ts"), list):
                self.max_ts = max(self.max_ts, result["ts"])
            return result
        if outcome is Outcome.AMBIGUOUS and write:
            raise AmbiguousCommitError("a write of this statement may or may not have committed (%s)" % result)
        raise UnavailableError("%s" % result)

    def _propose(self, op: str, key: bytes, args: dict, write: bool) -> Any:
        outcome, result = self._run(self.node.propose_key(op, key, dict(args, key=key), new_command_id()))
        return self._check(outcome, result, write)

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


async def handle_sql(node, args: dict) -> dict:
    """The `sql` op: run one statement, answer with columns, types, rows and the timestamp."""
    from sql.errors import SQLError
    from sql.execute import Session

    loop = asyncio.get_running_loop()
    kv = NodeKV(node, loop)
    try:
        params = [_param(p) for p in (args.get("params") or [])]
    except ValueError as exc:
        return _sql_error(SQLError("invalid_parameter", "bad timestamp parameter: %s" % exc))

    def run():
        return Session(kv).execute(args["sql"], params)
    try:
        result = await asyncio.to_thread(run)
    except SQLError as exc:
        return _sql_error(exc)
    except RaftstoreError as exc:
        return {"ok": False, "error": exc.to_wire()}
    return {"ok": True, "result": {"columns": list(result.columns), "types": list(result.types),
                                   "rows": [[_wire_value(v) for v in row] for row in result.rows],
                                   "rowcount": result.rowcount, "status": result.status, "ts": kv.max_ts}}
