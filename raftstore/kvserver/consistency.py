"""Consistency checks: do a range's replicas hold the same data at the same log index?

Why: Raft promises that every replica applies the same commands in the same order and so
reaches the same state. A bug in apply, a disk that dropped a committed transaction or a
hand-edited file breaks that promise without a sound: reads through one replica then see
other data than reads through another. Following CockroachDB (ComputeChecksum /
CollectChecksum), a check is a command in the range's own log, `compute_checksum`: each
replica that applies it computes a checksum of exactly its state at that index, so replicas
are compared at one point of the log whatever their lag. Only the command is replicated; the
checksums stay node-local.

The property a check reports on: every replica that applied index i of a range holds the same
versions in the range's span. The checksum (`range_checksum`) is sha256 over a header (format,
range id, span, applied index) and every version of the span -- key, timestamp, value or
tombstone -- in key order, newest first: the order of the store's primary key, which does not
depend on the order the versions were written in. Every piece is msgpack, which is
self-delimiting, so two different sequences of versions never feed the hash the same bytes.

The flow (everything on the node loop's thread except the hashing):
  1. `ConsistencyChecker.check` proposes `compute_checksum` in each range's log;
  2. every replica applies it (`RangeReplica._op_compute_checksum` -> `Store`): it pins a SQLite
     read snapshot at the index while applying, hashes it on a thread, and posts the result to
     its node's `ChecksumRegistry`;
  3. the checker asks every other replica for its checksum of (range, index) over the peer
     link; a replica that has not applied the index yet answers once it has, or says so after
     `consistency_report_timeout_s`;
  4. `verdict` compares: *consistent* (every replica reported and all agree), *inconsistent*
     (two replicas reported different checksums: the log gets an ERROR line naming the range,
     the index and every replica's checksum) or *incomplete* (the replicas that reported agree,
     but some did not report).

A replica that skipped the index (it caught up by a snapshot past it) or computed it before a
restart (the registry is in memory) cannot answer: that makes a check incomplete, never
inconsistent. A check never blocks: every wait is bounded by consistency_report_timeout_s.

No sockets, threads or SQLite here: the node injects how to send to a peer, the replicas'
applied indexes and the clock.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from raftstore import constants
from raftstore.kvserver.ranges import RangeDescriptor
from raftstore.raft.commands import Outcome

logger = logging.getLogger(__name__)

CHECKSUM_FORMAT = 1
CHECKSUM_BYTES = 32          # sha256
CHECKSUM_OP = "compute_checksum"
CONSISTENT, INCONSISTENT, INCOMPLETE = "consistent", "inconsistent", "incomplete"
_SHORT_HEX_CHARS = 16        # a checksum in a detail text; logs carry the whole one


# --- the checksum (pure) -------------------------------------------------------------------------


def range_checksum(range_id: int, start: bytes, end: bytes | None, applied_index: int,
                   chunks: Iterable[Iterable[tuple]]) -> bytes:
    """sha256 of a range's state: the header, then every version `(key, wall, logical, value)`
    (value None: tombstone) as `chunks` give them. The caller gives the versions in the store's
    order (key ascending, newest first); how they are cut into chunks does not matter."""
    digest = hashlib.sha256(msgpack.packb(
        [b"raftstore range checksum", CHECKSUM_FORMAT, range_id, start, end, applied_index], use_bin_type=True))
    pack = msgpack.Packer(use_bin_type=True).pack
    for chunk in chunks:
        digest.update(b"".join(map(pack, chunk)))
    return digest.digest()


@dataclass(frozen=True)
class Checksum:
    """One replica's answer for (range, index): its checksum, or why it has none."""
    checksum: bytes | None
    error: str | None = None


def _names(nodes: Iterable[int]) -> str:
    return ", ".join("n%d" % n for n in nodes)


def verdict(index: int, replicas: Iterable[int], reports: dict[int, Checksum]) -> tuple[str, str, list[int]]:
    """(status, detail, differing) of one check at `index`: `differing` lists the replicas whose
    checksum is not the majority's (all that reported when no majority exists)."""
    replicas = sorted(replicas)
    sums = {n: reports[n].checksum for n in replicas if n in reports and reports[n].checksum is not None}
    silent = [n for n in replicas if n not in sums]
    why = "; ".join((reports[n].error if n in reports and reports[n].error else "n%d did not report" % n)
                    for n in silent)
    groups: dict[bytes, list[int]] = {}
    for n in sorted(sums):
        groups.setdefault(sums[n], []).append(n)
    listing = ", ".join("n%d %s" % (n, sums[n].hex()[:_SHORT_HEX_CHARS]) for n in sorted(sums))
    if len(groups) > 1:
        ranked = sorted(groups.values(), key=lambda g: (-len(g), g))
        if len(ranked[0]) > len(ranked[1]):
            differing = sorted(n for group in ranked[1:] for n in group)
            head = "%s differ%s from %s" % (_names(differing), "s" if len(differing) == 1 else "",
                                           _names(ranked[0]))
        else:
            differing = sorted(sums)
            head = "no majority: " + " / ".join(_names(g) for g in ranked) + " disagree"
        detail = "%s at index %d (%s)" % (head, index, listing)
        return INCONSISTENT, detail + ("; " + why if silent else ""), differing
    if silent:
        agreed = ("%s agree at index %d (%s)" % (_names(sorted(sums)), index, listing) if sums
                  else "no replica reported a checksum of index %d" % index)
        return INCOMPLETE, "%s; %s" % (why, agreed), []
    checksum = next(iter(groups))
    return CONSISTENT, "%d replicas agree at index %d (checksum %s)" % (
        len(sums), index, checksum.hex()[:_SHORT_HEX_CHARS]), []


# --- this node's own checksums ---------------------------------------------------------------------


class ChecksumRegistry:
    """The checksums this node's replicas computed, by (range id, index): the newest
    `kept_max` of them, in memory (never replicated, gone at a restart).

    `computing` (at apply, on the loop) marks a checksum under way; `post` (any thread: the
    hashing job) hands its result over; `collect` (on the loop, every tick) records posted
    results and calls `on_done(range_id, index)` for each. Until collected a checksum counts as
    still computing, so nobody concludes it was skipped.
    """

    def __init__(self, kept_max: int = constants.consistency_checksums_kept) -> None:
        self.kept_max = kept_max
        self._done: collections.OrderedDict[tuple[int, int], Checksum] = collections.OrderedDict()
        self._computing: set[tuple[int, int]] = set()
        self._posted: collections.deque[tuple[int, int, Checksum]] = collections.deque()
        self.on_done: Callable[[int, int], None] = lambda range_id, index: None

    def computing(self, range_id: int, index: int) -> None:
        self._computing.add((range_id, index))

    def post(self, range_id: int, index: int, result: Checksum) -> None:
        """From any thread (deque appends are atomic); recorded at the next `collect`."""
        self._posted.append((range_id, index, result))

    def collect(self) -> None:
        while self._posted:
            range_id, index, result = self._posted.popleft()
            self._computing.discard((range_id, index))
            self._done[(range_id, index)] = result
            while len(self._done) > self.kept_max:
                self._done.popitem(last=False)
            self.on_done(range_id, index)

    def get(self, range_id: int, index: int) -> Checksum | None:
        return self._done.get((range_id, index))

    def is_computing(self, range_id: int, index: int) -> bool:
        return (range_id, index) in self._computing


# --- running checks (the node loop) -------------------------------------------------------------------


@dataclass
class _Collection:
    """A check of one range at one index: the replicas' answers gathered so far."""
    desc: RangeDescriptor
    index: int
    started: float
    deadline: float
    done: Callable[[dict], None]
    reports: dict[int, Checksum] = field(default_factory=dict)


@dataclass
class _Ask:
    """A peer waiting for this node's checksum of (range, index)."""
    peer_id: int
    range_id: int
    index: int
    deadline: float


Propose = Callable[[int, str, dict, Callable[[Outcome, Any], None]], None]


class ConsistencyChecker:
    """Runs checks from this node and answers other nodes' questions about its checksums.

    `send_request(peer, range_id, index) -> bool` and `send_reply(peer, range_id, index,
    Checksum) -> bool` queue a frame to a peer (False: not connected). `applied_index(range_id)`
    is this node's replica's applied index, None if it holds no initialized replica. Every
    method runs on the node loop; `sweep` must be called regularly (each loop iteration) to end
    the waits that run out. `last` holds, per range, the result of the last check this node ran.
    """

    def __init__(self, node_id: int, registry: ChecksumRegistry, *,
                 send_request: Callable[[int, int, int], bool],
                 send_reply: Callable[[int, int, int, Checksum], bool],
                 applied_index: Callable[[int], int | None],
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 report_timeout_s: float = constants.consistency_report_timeout_s) -> None:
        self.node_id = node_id
        self.registry = registry
        self.send_request, self.send_reply = send_request, send_reply
        self.applied_index = applied_index
        self.clock, self.wall = clock, wall
        self.report_timeout_s = report_timeout_s
        self.last: dict[int, dict] = {}
        self._collections: dict[tuple[int, int], _Collection] = {}
        self._asks: list[_Ask] = []
        registry.on_done = self._on_local_checksum

    # --- running a check ----------------------------------------------------------------------
    def check(self, descs: list[RangeDescriptor], propose: Propose, done: Callable[[list[dict]], None]) -> None:
        """Check every range of `descs` at once; `done(results)` once each is decided, one
        result map per range in the order given (see `_result`)."""
        results: list[dict | None] = [None] * len(descs)
        left = [len(descs)]
        if not descs:
            done([])
            return

        def decided(i: int, result: dict) -> None:
            results[i] = result
            left[0] -= 1
            if left[0] == 0:
                done(results)  # type: ignore[arg-type]

        for i, desc in enumerate(descs):
            started = self.clock()

            def proposed(outcome: Outcome, result: Any, i=i, desc=desc, started=started) -> None:
                if outcome is Outcome.COMMITTED and isinstance(result, dict) and isinstance(result.get("index"), int):
                    self.collect(desc, result["index"], lambda r, i=i: decided(i, r), started=started)
                    return
                detail = "the check's command did not commit in r%d's log (%s: %s)" % (
                    desc.range_id, outcome.value, result)
                decided(i, self._finish_result(desc, None, started, INCOMPLETE, detail, [], {}))
            propose(desc.range_id, CHECKSUM_OP, {}, proposed)

    def collect(self, desc: RangeDescriptor, index: int, done: Callable[[dict], None], *,
                started: float | None = None) -> None:
        """Gather every replica's checksum of `desc`'s range at `index` (a committed
        compute_checksum); `done(result)` when all answered or the wait ran out."""
        now = self.clock()
        c = _Collection(desc, index, started if started is not None else now, now + self.report_timeout_s, done)
        self._collections[(desc.range_id, index)] = c
        for n in desc.replicas:
            if n == self.node_id:
                answer = self._answer(desc.range_id, index)
                if answer is not None:
                    c.reports[n] = answer
            elif not self.send_request(n, desc.range_id, index):
                c.reports[n] = Checksum(None, "n%d has no link to n%d right now" % (self.node_id, n))
        self._maybe_finish(c)

    def on_reply(self, peer_id: int, range_id: int, index: int, answer: Checksum) -> None:
        """A peer's checksum (or why it has none); late and unasked answers are ignored."""
        c = self._collections.get((range_id, index))
        if c is None or peer_id not in c.desc.replicas or peer_id in c.reports:
            return
        c.reports[peer_id] = answer
        self._maybe_finish(c)

    # --- answering other nodes ------------------------------------------------------------------
    def on_request(self, peer_id: int, range_id: int, index: int) -> None:
        """A peer asks for our checksum of (range, index): answer now, or once we have it."""
        answer = self._answer(range_id, index)
        if answer is None and len(self._asks) >= constants.consistency_asks_max:
            answer = Checksum(None, "n%d has %d checksum requests waiting already; try later"
                              % (self.node_id, len(self._asks)))
        if answer is not None:
            self.send_reply(peer_id, range_id, index, answer)
            return
        self._asks.append(_Ask(peer_id, range_id, index, self.clock() + self.report_timeout_s))

    def _answer(self, range_id: int, index: int) -> Checksum | None:
        """Our checksum of (range, index), an error saying why there is none, or None: not
        applied (or not hashed) yet, ask again later."""
        found = self.registry.get(range_id, index)
        if found is not None:
            return found
        if self.registry.is_computing(range_id, index):
            return None
        applied = self.applied_index(range_id)
        if applied is None:
            return Checksum(None, "n%d holds no initialized replica of r%d" % (self.node_id, range_id))
        if applied >= index:
            return Checksum(None, "n%d is past index %d of r%d (at %d) without a checksum of it: it caught up "
                            "by a snapshot past that index, or restarted since" % (self.node_id, index, range_id, applied))
        return None

    def _on_local_checksum(self, range_id: int, index: int) -> None:
        answer = self.registry.get(range_id, index)
        if answer is None:
            return
        waiting = [a for a in self._asks if a.range_id == range_id and a.index == index]
        if waiting:
            self._asks = [a for a in self._asks if not (a.range_id == range_id and a.index == index)]
            for ask in waiting:
                self.send_reply(ask.peer_id, range_id, index, answer)
        c = self._collections.get((range_id, index))
        if c is not None and self.node_id in c.desc.replicas and self.node_id not in c.reports:
            c.reports[self.node_id] = answer
            self._maybe_finish(c)

    # --- time -------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """End the waits that ran out: our answers to peers, then our own checks."""
        if not self._asks and not self._collections:
            return
        now = self.clock()
        if self._asks and min(a.deadline for a in self._asks) <= now:
            expired = [a for a in self._asks if a.deadline <= now]
            self._asks = [a for a in self._asks if a.deadline > now]
            for ask in expired:
                answer = self._answer(ask.range_id, ask.index)
                if answer is None:
                    applied = self.applied_index(ask.range_id)
                    answer = Checksum(None, "n%d had not applied index %d of r%d within %g s (at %s)" % (
                        self.node_id, ask.index, ask.range_id, self.report_timeout_s, applied))
                self.send_reply(ask.peer_id, ask.range_id, ask.index, answer)
        for c in [c for c in self._collections.values() if c.deadline <= now]:
            for n in c.desc.replicas:
                if n not in c.reports:
                    c.reports[n] = Checksum(None, "n%d did not report within %g s" % (n, self.report_timeout_s))
            self._maybe_finish(c)

    # --- results ------------------------------------------------------------------------------------
    def _maybe_finish(self, c: _Collection) -> None:
        if any(n not in c.reports for n in c.desc.replicas):
            return
        del self._collections[(c.desc.range_id, c.index)]
        status, detail, differing = verdict(c.index, c.desc.replicas, c.reports)
        result = self._finish_result(c.desc, c.index, c.started, status, detail, differing, c.reports)
        if status == INCONSISTENT:
            logger.error("consistency check FAILED: %s at index %d: replicas differ: %s (%s)", c.desc, c.index,
                         ", ".join("n%d %s" % (n, c.reports[n].checksum.hex() if c.reports[n].checksum
                                                else "none (%s)" % c.reports[n].error) for n in sorted(c.reports)),
                         detail)
        elif status == INCOMPLETE:
            logger.warning("consistency check of %s incomplete: %s", c.desc, detail)
        else:
            logger.info("consistency check of %s: %s", c.desc, detail)
        c.done(result)

    def _finish_result(self, desc: RangeDescriptor, index: int | None, started: float, status: str, detail: str,
                       differing: list[int], reports: dict[int, Checksum]) -> dict:
        """The result map of one range's check (as it goes on the wire and into `last`)."""
        result = {"range_id": desc.range_id, "start": desc.start, "end": desc.end, "index": index,
                  "status": status, "detail": detail, "differing": differing,
                  "replicas": [[n, reports[n].checksum.hex() if n in reports and reports[n].checksum else None,
                                reports[n].error if n in reports else None] for n in sorted(desc.replicas)],
                  "at": round(self.wall(), 3), "duration_ms": round((self.clock() - started) * 1000, 1)}
        self.last[desc.range_id] = result
        return result
