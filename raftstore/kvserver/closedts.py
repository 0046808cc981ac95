"""Closed timestamps (CockroachDB's closedts): the leaseholder's promise that no write at or below
a timestamp will ever be added to its range, which lets any replica serve a read at or below it.

A closed timestamp is promised under a lease (its sequence number) and depends on a log
index: "under lease s, no entry after index i writes at or below ts". A replica that has
applied through i while s is still its lease may serve any read at or below ts from its own
store, with no round to the leaseholder. Two ways carry it:

  * on the range's commands: every write the leaseholder proposes carries `closed`, the
    range's closed timestamp as of its proposal (`RangeReplica.closed`, adopted when the write
    applies under its lease: the command's own index is the one it depends on);
  * on the side transport, for ranges with no writes: one CLOSED frame per peer per interval
    (`closed_side_interval_s`, 200 ms) closes every range the node serves at one timestamp.
    A frame carries only what changed: the ranges that joined the group or whose (lease seq,
    index) moved since the last frame, and the ranges that left it; a full frame (every
    member) follows each (re)connection. So 1,000 idle ranges cost one small frame per peer
    per interval, and a follower works out a range's closed timestamp only when it reads it
    (`Receiver.entry`, `Store.closed_ts`).

The rules, each enforced where it is decided:
  * the leaseholder closes at most `now - closed_lag` and never past its lease's expiration;
    what it closed never goes backwards (`Sender.ts`, `Store.closed`);
  * it evaluates every write of a range above what it closed for it (Store.closed_floor);
  * a range leaves the side transport's group when its lease is not served here any more, or
    expires before the group's timestamp, or has commands proposed but not yet in the log
    (their index is not known): it is closed at the group's timestamp when it leaves, so its
    later writes stay above that;
  * a follower adopts a side-transport timestamp only after applying through its index and
    only while the lease it names is the range's lease; a frame after a gap in the stream (a
    lost frame) is not adopted until the next full frame; what it adopted stays adopted (a
    promise is kept forever), so a partitioned follower keeps serving up to it.

A CLOSED frame also carries two things the other way round, from readers to leaseholders
(`extra`): the ranges follower reads asked of this node's replicas (a leaseholder keeps the
lease of a range its followers read, though nothing reads it there: an expiration lease
would lapse, its closed timestamp would stop, and the reads would go to the leaseholder), and
the oldest timestamp a statement running at this node reads at (GC stays below it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from raftstore.kvserver.lease import Timestamp

CLOSED_BEHIND = "closed_timestamp_behind"   # a rejection's code: this replica has not closed the read's timestamp
ZERO: Timestamp = (0, 0)


@dataclass
class Sender:
    """The side transport's state on the node serving the leases: the group's closed timestamp,
    what each member range was last published with, and the stream's frame number."""
    ts: Timestamp = ZERO
    members: dict[int, tuple[int, int]] = field(default_factory=dict)   # range id -> (lease seq, index)
    seq: int = 0

    def frame(self, ts: Timestamp, current: dict[int, tuple[int, int] | None]) -> tuple[list, list]:
        """Advance to `ts` (never backwards) with `current`: for each range looked at, its
        (lease seq, log index) if it stays in the group, None if it leaves. Returns (updates as
        flat [range id, lease seq, index, ...], removed range ids)."""
        updates: list[int] = []
        removed: list[int] = []
        for rid, entry in current.items():
            if entry is None:
                if self.members.pop(rid, None) is not None:
                    removed.append(rid)
            elif self.members.get(rid) != entry:
                self.members[rid] = entry
                updates.extend((rid, entry[0], entry[1]))
        self.ts = max(self.ts, ts)
        self.seq += 1
        return updates, removed

    def full(self) -> list[int]:
        """Every member, flat, for a full frame."""
        out: list[int] = []
        for rid, (lease_seq, index) in self.members.items():
            out.extend((rid, lease_seq, index))
        return out


@dataclass
class _Stream:
    seq: int
    ts: Timestamp
    members: dict[int, tuple[int, int]]
    broken: bool = False      # a frame went missing: deltas are not adopted until a full frame


class Receiver:
    """The follower's side: the latest stream of each node that serves leases."""

    def __init__(self) -> None:
        self.streams: dict[int, _Stream] = {}
        self.gaps = 0

    def on_frame(self, peer: int, seq: int, full: bool, ts: Timestamp, updates: list[int], removed: list[int],
                 fold: Callable[[int, int, int, Timestamp], None]) -> None:
        """Take a CLOSED frame from `peer`. Every entry the frame replaces or removes is handed to
        `fold(range id, lease seq, index, ts)` first, so the replica keeps what it had adopted
        through it (`RangeReplica.closed`): a range's closed timestamp never goes backwards at a
        follower, also when a stream restarts (a new process of the peer)."""
        members = {updates[i]: (updates[i + 1], updates[i + 2]) for i in range(0, len(updates), 3)}
        stream = self.streams.get(peer)
        if full:
            if stream is not None:
                for rid, (lease_seq, index) in stream.members.items():
                    fold(rid, lease_seq, index, stream.ts)
            self.streams[peer] = _Stream(seq, ts, members)
            return
        if stream is None or stream.broken or seq != stream.seq + 1:
            if stream is not None and not stream.broken:
                self.gaps += 1
                stream.broken = True   # keep what was adopted; adopt nothing new until a full frame
            return
        for rid in list(removed) + list(members):
            old = stream.members.pop(rid, None)
            if old is not None:
                fold(rid, old[0], old[1], stream.ts)
        stream.members.update(members)
        stream.ts = max(stream.ts, ts)
        stream.seq = seq

    def closed(self, holder: int, range_id: int, lease_seq: int, applied: int) -> Timestamp:
        """The timestamp `holder`'s stream closes for `range_id` at a replica that has applied
        through `applied` under lease `lease_seq`: ZERO unless the stream names that lease and an
        index already applied."""
        entry = self.entry(holder, range_id, lease_seq)
        return entry[0] if entry is not None and applied >= entry[1] else ZERO

    def entry(self, holder: int, range_id: int, lease_seq: int) -> tuple[Timestamp, int] | None:
        """(the timestamp `holder`'s stream closes for `range_id` under lease `lease_seq`, the
        index a replica must have applied to adopt it), or None."""
        stream = self.streams.get(holder)
        if stream is None:
            return None
        entry = stream.members.get(range_id)
        if entry is None or entry[0] != lease_seq:
            return None
        return stream.ts, entry[1]


def frame_problem(frame: list) -> str | None:
    """What is wrong with a CLOSED frame `[8, seq, full, [wall, logical], updates, removed, extra]`
    (updates: flat [range id, lease seq, index] triples; removed: range ids; extra, optional: a
    map with `wanted`, range ids follower reads asked of the sender's replicas since its last
    frame, and `protect`, the oldest timestamp a read running at the sender reads at, or nil),
    or None."""
    if len(frame) not in (6, 7):
        return "%d fields, expected 6 or 7" % len(frame)
    _, seq, full, ts, updates, removed = frame[:6]
    if type(seq) is not int or not 0 <= seq < 2**63 or not isinstance(full, bool):
        return "seq must be a non-negative integer and full a bool"
    if not _ts_ok(ts):
        return "ts must be [wall_ns, logical]"
    if not _ints(updates) or len(updates) % 3 or not _ints(removed):
        return "updates must be [range id, lease seq, index] triples and removed range ids"
    if len(frame) == 7:
        extra = frame[6]
        if not isinstance(extra, dict) or set(extra) - {"wanted", "protect"}:
            return "extra must be a map of wanted and protect"
        if not _ints(extra.get("wanted", [])):
            return "wanted must be range ids"
        if extra.get("protect") is not None and not _ts_ok(extra["protect"]):
            return "protect must be [wall_ns, logical] or nil"
    return None


def _ints(x: Any) -> bool:
    return isinstance(x, list) and all(type(v) is int and 0 <= v < 2**63 for v in x)


def _ts_ok(x: Any) -> bool:
    return isinstance(x, list) and len(x) == 2 and _ints(x)
