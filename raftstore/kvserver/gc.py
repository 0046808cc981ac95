"""Garbage collection of old versions (CockroachDB's MVCC GC queue and GCRequest).

A range's *GC threshold* is a timestamp below which it answers no read: the versions such a read
would need may be gone. It moves only by a `gc` command in the range's log, which also removes,
in a key span of the range, what no read at or above the threshold can see: per key, every
version older than the newest one at or below it, and that one too when it is a tombstone
(`MVCCStore.gc`). So every replica removes the same versions at the same index (the consistency
checker stays green), and the threshold is kept under a local key in the same transaction and
carried in snapshots.

The leaseholder proposes them (`Store.gc_pass`): threshold = now - the TTL (`--gc-ttl`, default
4 h), never above what it has closed (no write can come at or below it then), in spans holding at
most `gc_batch_versions` removable versions each, so one apply stays short (`plan_spans`, off the
node loop). Reads below the applied threshold are refused with `below_gc_threshold`, checked
inside the read's own SQLite snapshot (a GC committed between a check on the loop and the read
cannot hide versions from it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import msgpack

from raftstore.raft.commands import CommandError

Timestamp = tuple[int, int]
GC_PREFIX = b"\x00rg"                    # local key of a range's GC threshold (beside its lease)
BELOW_GC = "below_gc_threshold"          # a rejection's code: a read below the range's GC threshold
ZERO: Timestamp = (0, 0)


def gc_key(range_id: int) -> bytes:
    return GC_PREFIX + range_id.to_bytes(8, "big")


def encode_threshold(ts: Timestamp) -> bytes:
    return msgpack.packb(list(ts))


def decode_threshold(raw: bytes | None) -> Timestamp:
    if raw is None:
        return ZERO
    value = msgpack.unpackb(raw)
    return (int(value[0]), int(value[1]))


def check_read(range_id: int, ts: Timestamp, threshold: Timestamp) -> None:
    """CommandError (BELOW_GC) if a read at `ts` is below the range's GC threshold."""
    if ts < threshold:
        raise CommandError("%s: a read of r%d at %s is below its GC threshold %s: the versions it would see "
                           "may be gone (read at or above the threshold)" % (BELOW_GC, range_id, list(ts),
                                                                            list(threshold)),
                           code=BELOW_GC, details={"threshold": list(threshold)})


def removable(versions: list[tuple[int, int, bytes | None]], threshold: Timestamp) -> int:
    """How many of one key's versions ((wall, logical, value), newest first) a GC at `threshold`
    removes: all older than the newest at or below it, and that one too if it is a tombstone."""
    at_or_below = [v for v in versions if (v[0], v[1]) <= threshold]
    if not at_or_below:
        return 0
    return len(at_or_below) - 1 + (1 if at_or_below[0][2] is None else 0)


def plan_spans(rows: Iterable[tuple[bytes, int, int, bytes | None]], threshold: Timestamp,
               batch_versions: int) -> list[tuple[bytes, bytes | None, int]]:
    """Key spans [start, end) of a range's versions (`rows`: (key, wall, logical, value) ascending
    by key, newest first, as MVCCStore.export_span gives them), each holding at most
    `batch_versions` versions a GC at `threshold` removes (a key with more is a span alone), and
    how many: only spans with something to remove. `end` None: past the last key."""
    spans: list[tuple[bytes, bytes | None, int]] = []
    start: bytes | None = None
    count = 0
    for key, group in itertools.groupby(rows, key=lambda row: row[0]):
        n = removable([(wall, logical, value) for _, wall, logical, value in group], threshold)
        if not n:
            continue
        if start is not None and count + n > batch_versions:
            spans.append((start, key, count))
            start, count = None, 0
        if start is None:
            start = key
        count += n
    if start is not None:
        spans.append((start, None, count))
    return spans
