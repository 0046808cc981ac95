"""The router (CockroachDB's DistSender, the part of it built so far): key -> range -> send ->
on a refusal, learn and send again.

    key --(range cache, else a lookup in the node's copy of meta)--> descriptor
        --(send: the node hands it to the range's leader)--> answer
    a range-key mismatch (the range split since it was cached): drop the refused descriptor,
        cache the descriptors the refusing replica returned, and send again at once when one of
        them holds the key (a redirect: no lookup); otherwise look up again after a short backoff.
    not-leader (the replica lost the lead, or has not applied its term's first entry yet):
        send again after a short backoff, to the leader the node knows of then.
    a follower read (`exact` or `bounded_staleness`: kvserver.closedts) goes to the nearest
        replica (`send_near`); one that has not closed the read's timestamp refuses it
        (closed_timestamp_behind) and the part goes to the leaseholder as a strong read (at the
        read's timestamp when exact, at the leaseholder's clock when bounded). A bounded read
        over several ranges reads at one timestamp the gateway negotiates first (`negotiate`:
        the least its nearest replicas closed), or at the leaseholders when that is too old.

It runs on one thread (the node loop; the simulator's event loop) and never blocks: `send` and
`later` are the node's, so the same router drives real nodes and the simulator. Counters in
`stats` (lookups, redirects, backoffs, not_leader) are in the node's status, where a test reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Callable

from raftstore import constants
from raftstore.kvserver.batch import (BATCH_OP, BOUNDED_STALENESS, STRONG, TRACE_FIELDS, BatchRequest, Header, Scan,
                                     response_op)
from raftstore.kvserver.closedts import CLOSED_BEHIND
from raftstore.kvserver.lease import NOT_LEASEHOLDER, READ_TOO_NEW, READ_UNCERTAIN
from raftstore.kvserver.ranges import RangeDescriptor, is_mismatch, mismatch_descriptors, pretty_key
from raftstore.raft.commands import Outcome, is_not_leader, new_command_id
from raftstore.router.cache import RangeCache

Done = Callable[[Outcome, Any], None]
BatchDone = Callable[[list], None]   # one (Outcome, result) per op of a batch
# send(descriptor, op, args, done, command_id): hand the command to the range's leader.
Send = Callable[[RangeDescriptor, str, dict, Done, "bytes | None"], None]
# later(due, done, attempt): run attempt at the first loop pass at or after `due` (monotonic s);
# done answers a ValueError it raises.
Later = Callable[[float, Done, Callable[[], None]], None]


class Router:
    def __init__(self, lookup: Callable[[bytes], RangeDescriptor | None], send: Send, later: Later,
                 now: Callable[[], float], *, capacity: int = constants.range_cache_entries_max,
                 send_near: Send | None = None,
                 negotiate: Callable[[list[tuple[bytes, bytes | None]]], "tuple[int, int] | None"] = lambda spans: None
                 ) -> None:
        """`send_near`: hand a follower read to the range's nearest replica (default: `send`);
        `negotiate(spans)`: the newest timestamp the nearest replicas of every range
        overlapping the spans have closed, or None when that is not known here."""
        self.cache = RangeCache(capacity)
        self._lookup, self._send, self._later, self._now = lookup, send, later, now
        self._send_near = send_near or send
        self._negotiate = negotiate
        self.stats = {"lookups": 0, "redirects": 0, "backoffs": 0, "not_leader": 0, "read_restarts": 0,
                      "retries_cancelled": 0, "follower_reads": 0, "to_leaseholder": 0}

    def negotiated(self, header: Header, spans: list[tuple[bytes, bytes | None]]) -> Header:
        """A bounded-staleness header with no read timestamp, for a read of `spans` that must
        read at one timestamp: at the newest its nearest replicas closed when that is at least
        its `min_ts`, else a strong read (its leaseholders, at the gateway's clock)."""
        if header.consistency != BOUNDED_STALENESS or header.read_ts is not None:
            return header
        ts = self._negotiate(spans)
        if ts is not None and header.min_ts is not None and ts >= header.min_ts:
            return replace(header, read_ts=ts)
        self.stats["to_leaseholder"] += 1
        return replace(header, consistency=STRONG, min_ts=None)

    def descriptor(self, key: bytes) -> RangeDescriptor | None:
        """The range holding key as this router knows it: cached, else looked up (and cached)."""
        desc = self.cache.lookup(key)
        if desc is None:
            self.stats["lookups"] += 1
            desc = self._lookup(key)
            if desc is not None:
                self.cache.insert(desc)
        return desc

    def learn(self, refused: RangeDescriptor, returned: list[RangeDescriptor]) -> None:
        """A replica of `refused`'s range refused a key and returned its own view (and the
        range it knows holds the key): believe the replica over the cache."""
        self.cache.invalidate(refused.range_id)
        for desc in returned:
            self.cache.insert(desc)

    def send(self, op: str, key: bytes, args: dict, command_id: bytes | None, done: Done, attempt: int = 0) -> None:
        """Send a command for `key` to the range holding it; `done(outcome, result)` gets the
        answer, after at most route_retries_max refusals. The command keeps its id across
        sends, so a retry is answered by its first outcome wherever it applied. Raises
        ValueError, before anything is sent, for a command too large to replicate (first
        attempt only). A batch for several keys or ranges goes by `send_batch`."""
        desc = self.descriptor(key)
        if desc is None:
            done(Outcome.NOT_COMMITTED, "no range known here holds key %s" % pretty_key(key))
            return

        def answer(outcome: Outcome, result: Any) -> None:
            if not self._refused(desc, [key], outcome, result, attempt, done,
                                 lambda: self.send(op, key, args, command_id, done, attempt + 1)):
                done(outcome, result)
        self._send(desc, op, args, answer, command_id)

    def _refused(self, desc: RangeDescriptor, keys: list[bytes], outcome: Outcome, result: Any, attempt: int,
                 done: Done, again: Callable[[], None]) -> bool:
        """If the answer is a refusal to learn from (a range-key mismatch, not-leader), learn,
        schedule `again` (or give up after route_retries_max) and return True."""
        mismatch = outcome is Outcome.REJECTED and is_mismatch(result)
        # A leaseholder whose clock is behind the read timestamp by more than the max offset
        # refuses it: a clock out of bounds, which the offset monitor stops serving within
        # seconds (its leases move), so it is tried again like a moved lease.
        moved = outcome is Outcome.REJECTED and getattr(result, "code", None) in (NOT_LEASEHOLDER, READ_TOO_NEW)
        if not mismatch and not moved and not (outcome is Outcome.NOT_COMMITTED and is_not_leader(result)):
            return False
        if attempt + 1 >= constants.route_retries_max:
            done(Outcome.NOT_COMMITTED, "%s (after %d refusals); retry" % (
                ("the range holding %s kept changing" % pretty_key(keys[0])) if mismatch else result, attempt + 1))
            return True
        if not mismatch:
            # Not (or not yet) the leader: the node's view of who leads catches up within a
            # heartbeat; send again after a short backoff.
            self.stats["not_leader"] += 1
            self._later(self._now() + min(0.01 * (attempt + 1), 0.2), done, again)
            return True
        returned = mismatch_descriptors(result.details)
        self.learn(desc, returned)
        if any(d.range_id != desc.range_id and any(d.contains(k) for k in keys) for d in returned):
            self.stats["redirects"] += 1
            self._later(0.0, done, again)
        else:
            # The replica knew no better than we did (it is behind, or its range split again):
            # look up again a little later (10 ms more each time, at most 0.2 s).
            self.stats["backoffs"] += 1
            self._later(self._now() + min(0.01 * (attempt + 1), 0.2), done, again)
        return True

    def send_batch(self, header: Header, ops: Sequence, done: BatchDone, command_id: bytes | None = None,
                   attempt: int = 0, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Send typed ops (kvserver.batch) for any keys: grouped by the range holding each key,
        one batch per range, the parts sent concurrently (a part refused because its range
        split is grouped again and resent). `done(answers)` gets one (Outcome, result) per op, in
        the order given, once every part has answered: a committed op's result is its response
        with its part's `ts` (and, for writes, `ok`: whether every condition of the part held -
        a write batch is all or nothing within its range; for a locking read, its part's
        `lock_token`) and what `_part_answer` adds; any
        other is its part's failure.
        Parts in different ranges commit independently (no transactions yet). `command_id`
        is kept by a part that holds every op (a one-range batch), so its resends apply once.
        Once `cancelled()` is true (the caller has answered its client: the gateway's
        unavailable deadline), a refused part is not sent again but answered with its refusal:
        a write answered "may still commit" does not commit much later by a resend.
        Raises ValueError, before anything is sent, for a part too large to replicate."""
        answers: list = [None] * len(ops)
        parts: dict[int, tuple[RangeDescriptor, list[int]]] = {}
        for i, op in enumerate(ops):
            desc = self.descriptor(op.key)
            if desc is None:
                answers[i] = (Outcome.NOT_COMMITTED, "no range known here holds key %s" % pretty_key(op.key))
                continue
            parts.setdefault(desc.range_id, (desc, []))[1].append(i)
        waiting = len(parts)
        if not waiting:
            done(answers)
            return
        reads = not any(op.writes for op in ops)
        if len(parts) > 1 and header.consistency == BOUNDED_STALENESS and header.read_ts is None:
            spans = [(op.key, op.end) if isinstance(op, Scan) else (op.key, op.key + b"\x00") for op in ops]
            return self.send_batch(self.negotiated(header, spans), ops, done, command_id, attempt, cancelled)
        if reads and len(parts) > 1 and header.read_ts is None and header.ts is not None and header.consistency == STRONG:
            # Parts read at one timestamp: the gateway's (a part that finds a version within its
            # uncertainty interval makes the whole batch read again above it, `_restarted`).
            fixed = replace(header, read_ts=header.ts)
            return self.send_batch(fixed, ops, self._restarted(fixed, ops, done, attempt), command_id, attempt, cancelled)

        def settle(indices: list[int], got: list) -> None:
            nonlocal waiting
            for i, answer in zip(indices, got):
                answers[i] = answer
            waiting -= 1
            if waiting == 0:
                done(answers)

        requests = []
        for desc, indices in parts.values():
            request = BatchRequest(replace(header, generation=desc.generation), [ops[i] for i in indices])
            request.validate_for_send()
            requests.append((desc, indices, request))
        for desc, indices, request in requests:
            cid = command_id if len(indices) == len(ops) and command_id is not None else new_command_id()
            send = self._send if header.consistency == STRONG else self._send_near
            send(desc, BATCH_OP, request.to_wire(), self._part_answer(desc, indices, request, cid, attempt, settle, cancelled), cid)

    def _restarted(self, header: Header, ops: Sequence, done: BatchDone, attempt: int) -> BatchDone:
        """`done`, unless a part of a read batch at the timestamp this router fixed found a version
        within its uncertainty interval: then the batch reads again at the newest such version
        (at most route_retries_max times)."""
        def settled(answers: list) -> None:
            found = [r.details.get("ts") for o, r in answers
                     if o is Outcome.REJECTED and getattr(r, "code", None) == READ_UNCERTAIN]
            if not found or attempt + 1 >= constants.route_retries_max:
                done(answers)
                return
            self.stats["read_restarts"] += 1
            again = replace(header, read_ts=tuple(max(found)))
            self.send_batch(again, ops, self._restarted(again, ops, done, attempt + 1), None, attempt + 1)
        return settled

    def _part_answer(self, desc: RangeDescriptor, indices: list[int], request: BatchRequest, cid: bytes,
                     attempt: int, settle: Callable[[list[int], list], None],
                     cancelled: Callable[[], bool] = lambda: False) -> Done:
        """The answer of one part: a refusal is learnt from and the part sent again (grouped
        again); a committed part gives each op its response, with the part's `ts`, `ok`,
        `span_end`, who served it, its consensus rounds and their least round trip
        (`served_by`, `rounds`, `quorum_rtt_ms`, from the leader), the range (`range_id`) and the part's time from send to answer (`ms`)."""
        sent_at = self._now()
        def failed(outcome: Outcome, result: Any) -> None:
            settle(indices, [(outcome, result)] * len(indices))

        def answer(outcome: Outcome, result: Any) -> None:
            if outcome is Outcome.REJECTED and getattr(result, "code", None) == CLOSED_BEHIND:
                # The nearest replica has not closed the read's timestamp: the leaseholder serves it.
                if cancelled():
                    self.stats["retries_cancelled"] += 1
                    failed(outcome, result)
                    return
                self.stats["to_leaseholder"] += 1
                strong = replace(request.header, consistency=STRONG, min_ts=None, uncertainty_limit=None)
                behind = result

                def fell_back(got: list) -> None:
                    # The leaseholder did not answer either (a partition): say which bound failed.
                    settle(indices, [(o, r) if o is Outcome.COMMITTED else (o, "%s; the leaseholder did not answer "
                                                                               "either: %s" % (behind, r))
                                     for o, r in got])
                self.send_batch(strong, request.ops, fell_back, cid, attempt + 1, cancelled)
                return

            def again() -> None:
                if cancelled():
                    self.stats["retries_cancelled"] += 1
                    failed(outcome, result)
                    return
                self.send_batch(request.header, request.ops, lambda got: settle(indices, got), cid, attempt + 1, cancelled)
            if self._refused(desc, request.keys(), outcome, result, attempt, failed, again):
                return
            if outcome is not Outcome.COMMITTED:
                failed(outcome, result)
                return
            if request.header.consistency != STRONG:
                self.stats["follower_reads"] += 1
            extra = {k: result[k] for k in ("ok", "span_end", "lock_token", "served_by", "rounds", "quorum_rtt_ms",
                                            "read_ts", "closed_ts") if k in result}
            extra.update(range_id=desc.range_id, ms=round((self._now() - sent_at) * 1000, 3))
            settle(indices, [(outcome, dict(response_op(result, j), **extra)) for j in range(len(indices))])
        return answer

    def scan(self, start: bytes, end: bytes | None, limit: int, done: Done, *, max_bytes: int = 0,
             header: Header = Header()) -> None:
        """Rows of `[start, end)` across ranges, in key order: at most `limit` rows and, with
        `max_bytes`, rows until their keys' and values' bytes reach it (the row that reaches it is
        the last, so the first row always comes). Pages
        range by range, each a batch with one Scan whose header carries the limits left
        (`send_batch`, so a split meanwhile is followed); a page a range cut short at its own
        byte cap (scan_bytes_max) continues at its resume key. `done` gets (COMMITTED, {"rows":
        [[key, value]], "versions": [[wall, logical]] (each row's commit timestamp), "ts": the
        highest version read, "resume": the key to continue from when a limit stopped the
        scan, else nil, "pages": one map per page, in the order sent: the span it read, `start`
        to `end` (nil: the keyspace end), its `rows` and its trace fields (kvserver.batch.TRACE_FIELDS:
        what EXPLAIN ANALYZE shows)}) or the first failing page's (outcome, why)."""
        rows: list = []
        versions: list = []
        pages: list = []
        ts = [0, 0]
        used = 0

        def finish(resume: bytes | None) -> None:
            done(Outcome.COMMITTED, {"rows": rows, "versions": versions, "ts": ts, "pages": pages,
                                     "read_ts": list(fixed.read_ts) if fixed.read_ts is not None else None,
                                     "resume": resume if end is None or (resume is not None and resume < end) else None})

        fixed = self.negotiated(header, [(start, end)])

        def page(at: bytes) -> None:
            if (end is not None and at >= end) or len(rows) >= limit or (max_bytes and used >= max_bytes):
                finish(at)
                return
            left = replace(fixed, max_keys=limit - len(rows), max_bytes=max_bytes - used if max_bytes else 0)
            self.send_batch(left, [Scan(at, end)], lambda answers: got(at, answers))

        def got(at: bytes, answers: list) -> None:
            nonlocal ts, used, fixed
            outcome, result = answers[0]
            if outcome is not Outcome.COMMITTED:
                done(outcome, result)
                return
            if fixed.read_ts is None and result.get("read_ts") is not None:
                fixed = replace(fixed, read_ts=tuple(result["read_ts"]))   # every later page reads there too
            rows.extend(result["rows"])
            versions.extend(result["versions"])
            used += sum(len(k) + len(v) for k, v in result["rows"])
            ts = max(ts, result["ts"])
            span_end = result["span_end"]
            stop = result["resume"] if result["resume"] is not None else (
                end if span_end is None or (end is not None and end < span_end) else span_end)
            pages.append(dict({k: result.get(k) for k in TRACE_FIELDS}, start=at, end=stop, rows=len(result["rows"])))
            if result["resume"] is not None:
                page(result["resume"])
            elif span_end is None:
                finish(None)
            else:
                page(span_end)
        page(start)
