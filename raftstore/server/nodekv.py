"""The SQL engine's KV (the `sql.kv.KV` Protocol) over a running node: what the composition
root (raftstore.server.main) gives the SQL gateway for its sessions. Every call goes to the
node's router (`Node.propose_keys_blocking`, `Node.scan_keys`), so sql/ knows nothing of the
node, its outcomes or its command ids. tests/test_kv_contract.py runs the KV contract on it."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any

from raftstore.errors import AmbiguousCommitError, RaftstoreError, TooLargeError, UnavailableError
from raftstore.raft.commands import Outcome, new_command_id
from sql.constants import GATEWAY_KV_CALL_TIMEOUT_S, GATEWAY_KV_FANOUT_MAX
from sql.kv import (ConsistencyResult, RangeInfo, RegionInfo, Version, Write, WriteResult, check_key,
                    check_scan_limit, check_value, check_writes, not_sent)

_WRITE_OPS = frozenset({"put", "delete", "cas", "put_if"})


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
