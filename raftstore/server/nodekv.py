"""The SQL engine's KV (the `sql.kv.KV` Protocol) over a running node: what the composition
root (raftstore.server.main) gives the SQL gateway for its sessions. Every call goes to the
node's router as typed batches (`Node.batch_within`, `Node.scan_keys`), so sql/ knows nothing
of the node, its outcomes or its batches. A statement runs as a coroutine on the client port's
loop (raftstore.coop): each call suspends the statement, not a thread, until the node answers.
tests/test_kv_contract.py runs the KV contract on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from raftstore import constants, coop
from raftstore.errors import AmbiguousCommitError, BadRequestError, RaftstoreError, TooLargeError, UnavailableError
from raftstore.kvserver.gc import BELOW_GC
from raftstore.kvserver.batch import (BOUNDED_STALENESS, EXACT, VALUE_TOO_LARGE, Check, CompareAndSwap, ConditionalPut, Delete, Get, GetForUpdate,
                                      Header, Put, SetFields)
from raftstore.raft.commands import Outcome
from sql.constants import GATEWAY_KV_CALL_TIMEOUT_S, GATEWAY_KV_FANOUT_MAX
from raftstore.kvserver.lease import READ_UNCERTAIN
from sql.kv import (WRITE_BATCH_MAX, ConsistencyResult, Locked, RangeInfo, ReadRestart, RegionInfo, TraceOp, Version,
                    Write,
                    WriteResult, check_fields, check_key, check_scan_limit, check_value, check_writes, held_unwritten,
                    not_sent, record_step)


def _windows(ops: list, ops_max: int = GATEWAY_KV_FANOUT_MAX) -> list[list]:
    """The ops cut into batches of at most `ops_max` ops and about half a replicated
    command's bytes, so a batch is never refused as too large because of its neighbours: an op
    too large by itself is alone in its batch, and refused alone."""
    windows: list[list] = []
    size = 0
    for op in ops:
        n = _WRITE_OVERHEAD_BYTES + len(op.key) + sum(len(getattr(op, f, None) or b"") for f in ("value", "new", "expected"))
        if not windows or len(windows[-1]) >= ops_max or size + n > constants.command_bytes_max // 2:
            windows.append([])
            size = 0
        windows[-1].append(op)
        size += n
    return windows


_WRITE_OVERHEAD_BYTES = 64   # an op's msgpack framing and version, roughly


def _not_swapped(result: dict) -> WriteResult:
    """A conditional op's answer that did not swap: its key's live (value, version) now."""
    return WriteResult(False, current=None if result["value"] is None else (result["value"], tuple(result["version"])))


class NodeKV:
    """The SQL engine's KV (the `sql.kv.KV` Protocol) over a running node: blocking for its
    caller, which is a statement run by raftstore.coop on the client port's loop (the call
    suspends the statement while the loop awaits the node), or any other thread (the call
    blocks that thread on the loop). Every call is a typed batch sent by the node's router
    (`Node.batch_within`: one batch per range, the parts concurrently), GATEWAY_KV_FANOUT_MAX ops
    at a time.

    Per statement (`begin_statement` resets them): `max_ts`, the highest timestamp seen, and
    `wrote`, whether any write applied or may have - after which no failure of the statement
    may be reported as "unavailable" (it would be sent again).

    A statement's deadline (raftstore.coop, statement_timeout): checked before every batch and
    scan page (nothing is sent past it: coop.DeadlineExceeded), and no wait on the node outlasts
    it. A read cut short raises DeadlineExceeded; a batch with writes cut short after it left
    answers AMBIGUOUS for them (they may still apply: `wrote`), like a batch the node did not
    answer in time, so the statement's writes are taken back or named as its other failures'.

    A trace (`begin_trace`) records each committed part from the trace fields its answer
    carries (kvserver.batch.TRACE_FIELDS: the range, the leader that served it, its rounds,
    their least round trip and the part's time) and adds the round trip this node measures to
    that leader (`Node.peer_rtt_s`); each batch sent, and each scan page, is a step."""

    def __init__(self, node, loop: asyncio.AbstractEventLoop) -> None:
        self.node, self.loop = node, loop
        self.begin_statement()
        self.end_statement()

    @property
    def read_ts(self) -> Version | None:
        return self._read_ts

    @read_ts.setter
    def read_ts(self, ts: Version | None) -> None:
        """The statement's one read timestamp: while it runs, GC anywhere stays at or below it
        (`Node.protect`), so its later pages still find the versions its first pages saw."""
        self._read_ts = ts
        protect = getattr(self.node, "protect", None)
        if protect is not None:
            protect(self, ts)

    def now_ns(self) -> int:
        hlc = getattr(self.node, "hlc", None)
        return hlc.now().wall_ns if hlc is not None else time.time_ns()

    def follower_read(self, spec, spans: list[tuple[bytes, bytes | None]]) -> None:
        """This statement reads as `spec` says (sql.asof.ReadSpec: AS OF SYSTEM TIME or the
        session's follower-read default), every read at one timestamp, served by the nearest
        replica that has closed it (kvserver.closedts), else by the leaseholder. A bounded read
        takes the newest timestamp this node's replicas have closed over `spans` (the tables it
        reads), if that meets its `min_ts`; else it reads at the leaseholders, at their clock (with
        `nearest_only`, it fails instead: unsatisfiable_bounded_staleness, never resent elsewhere)."""
        self.uncertainty_limit = None   # a chosen timestamp, not a clock reading: no uncertainty
        if spec.kind == "exact":
            self.stale = (EXACT, tuple(spec.ts), None)
            self.read_ts = tuple(spec.ts)
            return
        ts = self._run(self.node.negotiate(spans))
        if ts is not None and tuple(ts) >= tuple(spec.min_ts):
            self.stale = (BOUNDED_STALENESS, tuple(ts), tuple(spec.min_ts))
            self.read_ts = tuple(ts)
        elif getattr(spec, "nearest_only", False):
            from sql.errors import SQLError
            raise SQLError("unsatisfiable_bounded_staleness", "%s: %s, and nearest_only keeps the read from the leaseholders" % (
                spec.form, "this node holds no replica of part of what the statement reads" if ts is None
                else "this node's replicas have closed only up to %s, below the bound %s" % (list(ts), list(spec.min_ts))))
        else:
            self.stale = None   # the leaseholders, at their clock: within any bound

    def begin_statement(self, read_ts: Version | None = None) -> None:
        """A new statement: every read of it at one timestamp (`read_ts`; None: the first
        read's leaseholder picks it), with one uncertainty limit (this gateway's clock now plus
        the max offset: nothing acknowledged before the statement began is above it)."""
        self.max_ts = [0, 0]
        self.wrote = False
        self._trace: list[TraceOp] | None = None
        self.read_ts = read_ts
        self.in_statement = True
        self.stale: tuple | None = None       # (consistency, read_ts, min_ts) of a follower read
        if read_ts is None:
            self.uncertainty_limit = None

    def end_statement(self) -> None:
        """Outside a statement every read is its own: the leaseholder picks its timestamp."""
        self.in_statement = False
        self.read_ts = self.uncertainty_limit = self.stale = None

    def read_latest(self) -> None:
        """This statement's reads each see the latest state (a write's, a DDL's: sql.execute)."""
        self.end_statement()

    def _read_header(self) -> Header:
        if not self.in_statement:
            return Header()
        if self.stale is not None:
            consistency, read_ts, min_ts = self.stale
            return Header(consistency=consistency, read_ts=read_ts, min_ts=min_ts)
        if self.uncertainty_limit is None:
            hlc = getattr(self.node, "hlc", None)
            if hlc is not None:
                now = hlc.now()
                self.uncertainty_limit = (now.wall_ns + hlc.max_offset_ns, now.logical)
        return Header(read_ts=self.read_ts, uncertainty_limit=self.uncertainty_limit)

    def _adopt(self, outcome: Outcome, result: Any) -> None:
        """After a read: the statement reads on at the timestamp its first read was served at;
        a read that found a version within its uncertainty interval restarts the statement."""
        if outcome is Outcome.REJECTED and getattr(result, "code", None) == READ_UNCERTAIN:
            raise ReadRestart(tuple(result.details["ts"]))
        if (self.in_statement and self.read_ts is None and outcome is Outcome.COMMITTED and isinstance(result, dict)
                and result.get("read_ts")):
            self.read_ts = tuple(result["read_ts"])

    def begin_trace(self) -> None:
        self._trace = []

    def end_trace(self) -> list[TraceOp]:
        trace, self._trace = self._trace, None
        return trace if trace is not None else []

    def _leader_rtt_ms(self, served_by: int | None) -> float | None:
        if served_by is None:
            return None
        if served_by == self.node.node_id:
            return 0.0
        rtt_s = self.node.peer_rtt_s(served_by)
        return None if rtt_s is None else round(rtt_s * 1000, 3)

    def _part(self, kind: str, keys: list[bytes], end: bytes | None, answer: dict) -> dict:
        """A TraceOp (without its step) from the trace fields of a part's answer."""
        return {"kind": kind, "keys": keys, "end": end, "range_id": answer.get("range_id"),
                "served_by": answer.get("served_by"), "rounds": answer.get("rounds") or 0,
                "quorum_rtt_ms": answer.get("quorum_rtt_ms"),
                "leader_rtt_ms": self._leader_rtt_ms(answer.get("served_by")), "ms": answer.get("ms") or 0.0,
                "follower": answer.get("closed_ts") is not None}

    def _traced(self, window: list, got: list) -> None:
        """Record one batch: its committed answers grouped into the parts the router sent (a
        part's ops share its range, leader, rounds and time)."""
        if self._trace is None:
            return
        parts: dict[tuple, tuple[dict, list[bytes]]] = {}
        for op, (outcome, result) in zip(window, got):
            if outcome is Outcome.COMMITTED and isinstance(result, dict) and "range_id" in result:
                part = tuple(result.get(f) for f in ("range_id", "served_by", "rounds", "ms"))
                parts.setdefault(part, (result, []))[1].append(op.key)
        kind = "write" if window and window[0].writes else "get"
        record_step(self._trace, [self._part(kind, keys, None, answer) for answer, keys in parts.values()])

    def _wait(self, coro):
        """The result of a coroutine on the client port's loop: inside a statement, the
        statement waits (raftstore.coop.wait); on any other thread, the thread blocks."""
        if coop.in_statement():
            return coop.wait(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _run(self, coro):
        """A read-only node call (scan, status), within GATEWAY_KV_CALL_TIMEOUT_S and the
        statement's deadline (raftstore.coop: DeadlineExceeded, before it is sent or while it
        is awaited)."""
        try:
            coop.checkpoint()
        except coop.DeadlineExceeded:
            coro.close()   # never sent
            raise

        async def bounded():
            try:
                return await asyncio.wait_for(coro, GATEWAY_KV_CALL_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise UnavailableError("a KV call of this statement got no answer in %.0f s"
                                       % GATEWAY_KV_CALL_TIMEOUT_S) from None
        return self._wait(bounded())

    def _batch(self, ops: list, *, stop_after_failure: bool = False, header: Header = Header(),
               ops_max: int = GATEWAY_KV_FANOUT_MAX) -> list:
        """(outcome, result) of every op, in the order given: sent as batches (`_windows`), each
        answered before the next is sent. With
        `stop_after_failure`, no batch is sent after one in which an op did not commit (the
        answers are then fewer than the ops)."""
        answers: list = []
        reads = bool(ops) and not any(op.writes or isinstance(op, GetForUpdate) for op in ops)
        for window in _windows(ops, ops_max):
            coop.checkpoint()   # past the statement's deadline, nothing more is sent: DeadlineExceeded
            try:
                got = self._wait(self.node.batch_within(window, GATEWAY_KV_CALL_TIMEOUT_S,
                                                        self._read_header() if reads else header))
            except coop.DeadlineExceeded as exc:
                if not any(op.writes and not isinstance(op, Check) for op in window):
                    raise   # a read, or a Check (it changes nothing): nothing of it may apply
                # The deadline cut the wait short after the batch left: its writes may still
                # apply. Answered as batch_within answers a batch with no answer in time, so the
                # statement takes back what it can and names what may remain (40003).
                got = [(Outcome.AMBIGUOUS, "%s while its write was in flight; it may still commit" % exc.message)
                       if op.writes else (Outcome.NOT_COMMITTED, exc.message) for op in window]
            if reads:
                for outcome, result in got:
                    self._adopt(outcome, result)
            self._traced(window, got)
            for op, (outcome, result) in zip(window, got):
                if outcome is Outcome.COMMITTED and isinstance(result, dict) and isinstance(result.get("ts"), list):
                    self.max_ts = max(self.max_ts, result["ts"])
                if op.writes and (outcome is Outcome.AMBIGUOUS or (
                        outcome is Outcome.COMMITTED and result.get("swapped", result.get("found", True)))):
                    self.wrote = True
            answers.extend(got)
            if stop_after_failure and any(outcome is not Outcome.COMMITTED for outcome, _ in got):
                break
        return answers

    @staticmethod
    def _error(outcome: Outcome, result: Any, write: bool) -> RaftstoreError:
        """The error for an op that did not commit (see Node.batch_within)."""
        if isinstance(result, ValueError):   # refused before proposing: nothing of it applied
            return TooLargeError("a row of this statement is too large to replicate (%s)" % result)
        if outcome is Outcome.AMBIGUOUS and write:
            return AmbiguousCommitError("a write of this statement may or may not have committed (%s)" % result)
        if outcome is Outcome.REJECTED and getattr(result, "code", None) == BELOW_GC:
            return BadRequestError(str(result))   # retrying cannot help: read at or above the threshold
        return UnavailableError("%s" % result)

    def _check(self, answer: tuple, write: bool) -> Any:
        outcome, result = answer
        if outcome is not Outcome.COMMITTED:
            raise self._error(outcome, result, write)
        return result

    def _one(self, op, header: Header = Header()) -> Any:
        return self._check(self._batch([op], header=header)[0], op.writes)

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        return self._one(Get(key))["value"]

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        for key in keys:
            check_key(key)
        return [self._check(answer, False)["value"] for answer in self._batch([Get(key) for key in keys])]

    def get_version(self, key: bytes) -> tuple[bytes, Version] | None:
        check_key(key)
        result = self._one(Get(key))
        return None if result["value"] is None else (result["value"], tuple(result["ts"]))

    def scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v, _ in self.scan_versions(start, end, limit)]

    def scan_versions(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes, Version]]:
        check_key(start, allow_empty=True)
        if end is not None:
            check_key(end)
        check_scan_limit(limit)
        answer = self._run(self.node.scan_keys(start, end, limit, header=self._read_header()))
        self._adopt(*answer)
        result = self._check(answer, False)
        for page in result.get("pages", ()):
            record_step(self._trace, [self._part("scan", [page["start"]], page["end"], page)])
        return [(k, v, tuple(ts)) for (k, v), ts in zip(result["rows"], result["versions"])]

    def put(self, key: bytes, value: bytes) -> None:
        check_key(key)
        check_value(value)
        self._one(Put(key, value))

    def delete(self, key: bytes) -> bool:
        check_key(key)
        return bool(self._one(Delete(key))["found"])

    def set_fields(self, key: bytes, width: int, fields: Sequence[tuple[int, object]]) -> bool:
        """One SetFields op: the range's replicas replace the live row's fields as they apply
        it (no read first, from any gateway). A rejection is deterministic (kvserver.batch:
        the result too large, or the value not an array of `width`): nothing was written."""
        check_key(key)
        check_fields(width, fields)
        outcome, result = self._batch([SetFields(key, width, tuple(fields))])[0]
        if outcome is Outcome.REJECTED:
            if getattr(result, "code", None) == VALUE_TOO_LARGE:
                raise TooLargeError("%s; nothing was written" % result)
            raise ValueError(str(result))
        return bool(self._check((outcome, result), True)["found"])

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        check_key(key)
        check_value(new)
        if expected is not None:
            check_value(expected)
        return bool(self._one(CompareAndSwap(key, expected, new))["swapped"])

    def write_if(self, key: bytes, if_version: Version | None, value: bytes | None) -> WriteResult:
        return self.write_if_many([(key, if_version, value)])[0]

    def get_for_update(self, key: bytes) -> Locked:
        """A GetForUpdate: answered by the range's leader from its applied state, no consensus
        round, its latch held for the write naming the answer's lock token."""
        check_key(key)
        result = self._one(GetForUpdate(key))
        found = None if result["value"] is None else (result["value"], tuple(result["ts"]))
        return Locked(found, result.get("lock_token"))

    def confirm(self, key: bytes, if_version: Version | None, *, lock: bytes | None = None) -> WriteResult:
        """A Check, through the log: the key still at `if_version`."""
        check_key(key)
        outcome, result = self._batch([Check(key, if_version)], header=Header(lock_token=lock))[0]
        if outcome is not Outcome.COMMITTED:
            return WriteResult(False, error=self._error(outcome, result, True))
        return WriteResult(True) if result["swapped"] else _not_swapped(result)

    def write_if_many(self, writes: Sequence[Write], *, stop_after_failure: bool = True,
                      lock: bytes | None = None, all_or_nothing: bool = False) -> list[WriteResult]:
        """sql/kv.py's conditioned writes (ConditionalPut ops); never raises: a write with no
        answer has an `error`. With `stop_after_failure`, no batch is sent after one with a
        failed write.

        The KV contract makes each write stand alone, while a range applies a batch all or
        nothing: a write whose own condition held, in a batch another write's condition failed
        (the answer shows its key still at the version it was conditioned on), is sent again
        at once, without the writes that lost. Each round settles at least one write, so at
        most len(writes) rounds; without a race, one. With `all_or_nothing` nothing is sent
        again: a range's writes go as one batch (up to WRITE_BATCH_MAX, and half a replicated
        command's bytes) and apply together or not at all."""
        check_writes(writes)
        results: list[WriteResult | None] = [None] * len(writes)
        pending = list(range(len(writes)))
        header = Header(lock_token=lock)             # the first round uses the locking read's latches
        while pending:
            ops = [ConditionalPut(writes[i][0], writes[i][1], writes[i][2]) for i in pending]
            answers = self._batch(ops, stop_after_failure=stop_after_failure, header=header,
                                  ops_max=WRITE_BATCH_MAX if all_or_nothing else GATEWAY_KV_FANOUT_MAX)
            header = Header()
            failed = len(answers) < len(ops) or any(outcome is not Outcome.COMMITTED for outcome, _ in answers)
            again = []
            for i, (outcome, result) in zip(pending, answers):
                if outcome is not Outcome.COMMITTED:
                    results[i] = WriteResult(False, error=self._error(outcome, result, True))
                elif result["swapped"]:
                    results[i] = WriteResult(True, version=tuple(result["ts"]))
                elif not all_or_nothing and held_unwritten(writes[i][1], _not_swapped(result)):
                    again.append(i)                     # its batch lost by another write's condition
                else:
                    results[i] = _not_swapped(result)
            if failed and stop_after_failure:
                break                                   # the writes to send again are left unsent
            pending = again
        unsent = not_sent(1)[0]
        return [r if r is not None else unsent for r in results]

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
                # The leaseholder, as this node applied the range's lease (who serves its reads
                # and evaluates its writes); before any lease, the Raft leader.
                lease = r.get("lease") or {}
                holder = lease.get("holder", r["leader"])
                out.append({"range_id": r["range_id"], "start": r["start"], "end": r["end"],
                            "replicas": [who(n) for n in r["replicas"]],
                            "leader": who(holder) if holder is not None else None,
                            "lease_seq": lease.get("seq"), "home": r.get("home")})
        return sorted(out, key=lambda r: r["start"])   # the status lists ranges by id, not by key

    def regions(self) -> list[RegionInfo]:
        status = self._status()
        up = set(status["connected"]) | {status["node_id"]}
        return [{"region": m["region"], "node_id": int(nid), "up": int(nid) in up}
                for nid, m in sorted(status["members"].items(), key=lambda kv: int(kv[0]))]
