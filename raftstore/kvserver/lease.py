"""Range leases and the leaseholder's timestamp cache.

A lease is a command in the range's log (`lease` op, RangeReplica._op_lease): a sequence number,
a holder (a node id), a start and an expiration, both HLC timestamps. It is an *expiration*
lease (raftstore/DESIGN.md "Range leases" says why, not epoch-based): valid until its
expiration, extended by the holder while the range is in use, left to lapse when the range is
idle, so 1,000 idle ranges cost nothing to keep.

The rules, each enforced where it is decided:
  * apply takes a lease command only if it names the range's current lease as its predecessor
    (`prev_seq`): a new lease has seq + 1, an extension keeps seq, holder and start. Every other
    command the leaseholder proposes carries the lease it was evaluated under (`lease_seq`), and
    apply rejects it when that is not the range's lease any more (the same verdict on every
    replica): only the leaseholder evaluates, and a command evaluated under a lease that has
    since moved writes nothing.
  * the holder serves reads only while `now + max_offset < expiration` (`usable`): past that
    (stasis) another node's clock may already read past the expiration, and a new lease may be
    serving;
  * a new lease taken over from another holder starts at or after the old expiration, and a
    transferred one starts above everything the old holder served (it stops serving first); the
    new holder's timestamp cache starts at its lease's start, so it never writes below what an
    earlier holder read.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from raftstore.raft.commands import CommandError

Timestamp = tuple[int, int]
_TS_PART_MAX = (1 << 63) - 1

LEASE_PREFIX = b"\x00rl"                   # local key of a range's applied lease (beside its descriptor)
NOT_LEASEHOLDER = "not_leaseholder"       # a rejection's code: the command's lease is not the range's lease
READ_UNCERTAIN = "read_within_uncertainty"   # a rejection's code: restart the read at details["ts"]
READ_TOO_NEW = "read_timestamp_too_new"      # a rejection's code: a read timestamp past the node's clock + max offset


def lease_key(range_id: int) -> bytes:
    return LEASE_PREFIX + range_id.to_bytes(8, "big")


def _ts(value: Any, what: str) -> Timestamp:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= _TS_PART_MAX for x in value)):
        raise CommandError("%s must be [wall_ns, logical]" % what)
    return (value[0], value[1])


def next_ts(ts: Timestamp) -> Timestamp:
    return (ts[0], ts[1] + 1)


@dataclass(frozen=True)
class Lease:
    seq: int
    holder: int
    start: Timestamp
    expiration: Timestamp

    def to_wire(self) -> dict:
        return {"seq": self.seq, "holder": self.holder, "start": list(self.start), "expiration": list(self.expiration)}

    @classmethod
    def from_wire(cls, obj: Any) -> "Lease":
        if not isinstance(obj, dict):
            raise CommandError("a lease must be a map")
        seq, holder = obj.get("seq"), obj.get("holder")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise CommandError("a lease's seq must be a positive integer")
        if not isinstance(holder, int) or isinstance(holder, bool) or holder < 1:
            raise CommandError("a lease's holder must be a node id")
        lease = cls(seq, holder, _ts(obj.get("start"), "a lease's start"), _ts(obj.get("expiration"),
                                                                                "a lease's expiration"))
        if lease.expiration <= lease.start:
            raise CommandError("a lease must expire after it starts")
        return lease

    def usable(self, now: Timestamp, max_offset_ns: int) -> bool:
        """Whether the holder may serve at `now` (its clock): before the stasis period that ends
        the lease (`now + max_offset < expiration`)."""
        return (now[0] + max_offset_ns, now[1]) < self.expiration

    def expired(self, now: Timestamp) -> bool:
        """Whether another node may take the range's lease over at `now` (its clock)."""
        return now > self.expiration

    def follows(self, prev: "Lease | None") -> str | None:
        """Why this lease cannot replace `prev` (None: it can): a new lease has the next seq and
        starts after `prev` expired... unless `prev`'s holder handed it over (a transfer, which the
        old holder evaluates: also seq + 1); an extension keeps seq, holder and start."""
        if prev is None:
            return None if self.seq == 1 else "the first lease of a range has seq 1, not %d" % self.seq
        if self.seq == prev.seq:
            if self.holder != prev.holder or self.start != prev.start:
                return "an extension of lease %d keeps its holder and start" % prev.seq
            if self.expiration <= prev.expiration:
                return "an extension of lease %d must expire later" % prev.seq
            return None
        if self.seq != prev.seq + 1:
            return "lease %d cannot follow lease %d" % (self.seq, prev.seq)
        return None


class TimestampCache:
    """The highest timestamp at which this leaseholder served a read of each key or span
    (CockroachDB's tscache), for one range. Every write it evaluates goes above `max_for` its keys,
    so a read at T is never invalidated by a write at or below T that arrives later: two reads at
    T see the same thing. Bounded: past `entries_max` entries, the oldest half is folded into the
    low-water mark, which only raises what a write must clear (safe, never wrong). The low-water
    mark starts at the lease's start: nothing an earlier holder served is above it."""

    def __init__(self, low_water: Timestamp, entries_max: int = 4096) -> None:
        self.low_water = low_water
        self.entries_max = entries_max
        self.points: dict[bytes, Timestamp] = {}
        self.spans: list[tuple[bytes, bytes | None, Timestamp]] = []   # [start, end) read at ts, in arrival order

    def __len__(self) -> int:
        return len(self.points) + len(self.spans)

    def raise_low_water(self, ts: Timestamp) -> None:
        self.low_water = max(self.low_water, ts)

    def record_key(self, key: bytes, ts: Timestamp) -> None:
        if ts > self.points.get(key, self.low_water):
            self.points[key] = ts
            self._bound()

    def record_span(self, start: bytes, end: bytes | None, ts: Timestamp) -> None:
        if ts > self.low_water:
            self.spans.append((start, end, ts))
            self._bound()

    def _bound(self) -> None:
        if len(self) <= self.entries_max:
            return
        # Fold the spans and the lowest points into the low-water mark.
        folded = [ts for _, _, ts in self.spans]
        self.spans = []
        if len(self.points) > self.entries_max // 2:
            ordered = sorted(self.points.items(), key=lambda kv: kv[1])
            drop = ordered[:len(ordered) - self.entries_max // 2]
            folded += [ts for _, ts in drop]
            for key, _ in drop:
                del self.points[key]
        if folded:
            self.low_water = max(self.low_water, max(folded))
        self.points = {k: ts for k, ts in self.points.items() if ts > self.low_water}

    def max_all(self) -> Timestamp:
        """The highest read timestamp recorded for anything (what a lease handed over starts above)."""
        return max([self.low_water] + list(self.points.values()) + [ts for _, _, ts in self.spans])

    def max_for(self, keys: list[bytes]) -> Timestamp:
        """The highest read timestamp recorded for any of `keys` (at least the low-water mark)."""
        best = self.low_water
        for key in keys:
            best = max(best, self.points.get(key, best))
        if self.spans:
            ordered = sorted(keys)
            for start, end, ts in self.spans:
                if ts <= best:
                    continue
                i = bisect.bisect_left(ordered, start)
                if i < len(ordered) and (end is None or ordered[i] < end):
                    best = ts
        return best
