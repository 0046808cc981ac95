"""An in-memory KV with the node's blocking interface, for unit tests and the differential
harness.

Why: the SQL layer must be testable in milliseconds and without a cluster, against the same
contract the node implements - the `sql.kv.KV` Protocol, which tests/test_kv_contract.py checks
on both - so the planner's range operations can be counted and the results compared with SQLite.

It keeps keys in a sorted list beside a dict (bisect for scans) and fakes a range layout: the
keyspace is cut at `split_keys` (default ``b"t"``: the meta range [b"", b"t") and one range
for all table rows; `split` adds a cut), each range replicated on the three demo regions, with
range i led by node ((i - 1) % 3) + 1, so EXPLAIN and SHOW RANGES have something to show.

As the node: every write makes a new version of its key, a delete too (a tombstone), numbered
(n, 0) from one counter, so a key's versions only grow; a write over the node's command bound
is refused with TooLargeError. A traced call (`begin_trace`) is recorded as the node records
it - one operation per fake range it touches, a scan page by page - but with no node
(`served_by` None), no time (0 ms), 1 consensus round per write and 0 per read (nothing is
replicated), and the round trip given as `quorum_rtt_ms` (default 0), so EXPLAIN ANALYZE runs
in unit tests. Pure apart from its own memory; not thread-safe.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence

import msgpack

from raftstore import constants
from raftstore.errors import TooLargeError
from raftstore.keyspace import ZONE_END, ZONE_PREFIX, decode_zone
from sql.kv import (WRITE_BATCH_MAX, ConsistencyResult, Locked, RangeInfo, RegionInfo, TraceOp, Version, Write,
                    WriteResult, check_fields, check_key, check_scan_limit, check_value, check_writes, record_step,
                    write_each)

DEFAULT_REGIONS = (
    {"node_id": 1, "region": "us-east1"},
    {"node_id": 2, "region": "us-west1"},
    {"node_id": 3, "region": "europe-west1"},
)


class MemKV:
    """A sorted in-memory map with fake ranges, implementing `sql.kv.KV`. Counts calls per
    method in `calls`."""

    def __init__(
        self,
        split_keys: Iterable[bytes] = (b"t",),
        nodes: Iterable[dict] = DEFAULT_REGIONS,
        quorum_rtt_ms: float = 0.0,
    ):
        self._keys: list[bytes] = []
        self._data: dict[bytes, bytes] = {}
        self._versions: dict[bytes, Version] = {}   # newest version of every key written, tombstones too
        self._writes = 0
        self._splits = sorted(set(split_keys))
        assert all(isinstance(k, bytes) and k for k in self._splits)
        self._nodes = [dict(n) for n in nodes]
        self._down: set[int] = set()
        self._inconsistent: dict[int, tuple[int, str]] = {}
        self.calls: dict[str, int] = {}
        self.quorum_rtt_ms = quorum_rtt_ms
        self._trace: list[TraceOp] | None = None
        self._in_many = False          # write_if_many's own write_if calls are not traced again

    # --- the KV interface ------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        self._count("get")
        check_key(key)
        self._traced("get", [key])
        return self._data.get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._count("get_many")
        for key in keys:
            check_key(key)
        self._traced("get", keys)
        return [self._data.get(key) for key in keys]

    def scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        self._count("scan")
        return self._traced_scan(start, end, limit, self._scan(start, end, limit))

    def _scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        check_key(start, allow_empty=True)
        if end is not None:
            check_key(end)
        check_scan_limit(limit)
        lo = bisect.bisect_left(self._keys, start)
        hi = len(self._keys) if end is None else bisect.bisect_left(self._keys, end)
        hi = min(hi, lo + limit)
        return [(k, self._data[k]) for k in self._keys[lo:hi]]

    def put(self, key: bytes, value: bytes) -> None:
        self._count("put")
        check_key(key)
        check_value(value)
        _check_size(key, value)
        self._traced("write", [key])
        self._store(key, value)

    def delete(self, key: bytes) -> bool:
        self._count("delete")
        check_key(key)
        self._traced("write", [key])
        found = key in self._data
        self._remove(key)
        return found

    def set_fields(self, key: bytes, width: int, fields: Sequence[tuple[int, object]]) -> bool:
        self._count("set_fields")
        check_key(key)
        check_fields(width, fields)
        self._traced("write", [key])
        if key not in self._data:
            return False
        elements = msgpack.unpackb(self._data[key], raw=False)
        if not isinstance(elements, list) or len(elements) != width:
            raise ValueError("set_fields of %r: its value is not an array of %d elements" % (key, width))
        for position, element in fields:
            elements[position] = element
        new = msgpack.packb(elements, use_bin_type=True)
        _check_size(key, new)
        self._store(key, new)
        return True

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        self._count("cas")
        check_key(key)
        check_value(new)
        if expected is not None:
            check_value(expected)
        _check_size(key, expected, new)
        self._traced("write", [key])
        if self._data.get(key) != expected:
            return False
        self._store(key, new)
        return True

    def get_version(self, key: bytes) -> tuple[bytes, Version] | None:
        self._count("get_version")
        check_key(key)
        self._traced("get", [key])
        return (self._data[key], self._versions[key]) if key in self._data else None

    def scan_versions(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes, Version]]:
        self._count("scan_versions")
        pairs = self._traced_scan(start, end, limit, self._scan(start, end, limit))
        return [(k, v, self._versions[k]) for k, v in pairs]

    def write_if(self, key: bytes, if_version: Version | None, value: bytes | None) -> WriteResult:
        self._count("write_if")
        check_key(key)
        if value is not None:
            check_value(value)
        try:
            _check_size(key, value)
        except TooLargeError as exc:
            return WriteResult(False, error=exc)
        if not self._in_many:
            self._traced("write", [key])
        if not self._holds(key, if_version):
            return WriteResult(False, current=self._live(key))
        if value is None:
            self._remove(key)
        else:
            self._store(key, value)
        return WriteResult(True, version=self._versions[key])

    def _all_or_nothing(self, writes: Sequence[Write]) -> list[WriteResult]:
        """Per fake range (as a node applies one batch per range): every condition first, then
        all of the range's writes or none."""
        self._traced("write", [key for key, _, _ in writes])
        results: list[WriteResult | None] = [None] * len(writes)
        by_range: dict[int, list[int]] = {}
        for i, (key, _, _) in enumerate(writes):
            by_range.setdefault(self._range_id(key), []).append(i)
        for indices in by_range.values():
            for start in range(0, len(indices), WRITE_BATCH_MAX):
                part = indices[start:start + WRITE_BATCH_MAX]
                current = {i: self._live(writes[i][0]) for i in part}
                holds = all(self._holds(writes[i][0], writes[i][1]) for i in part)
                for i in part:
                    try:
                        _check_size(writes[i][0], writes[i][2])
                    except TooLargeError as exc:
                        results[i] = WriteResult(False, error=exc)
                if not holds or any(results[i] is not None for i in part):
                    for i in part:
                        if results[i] is None:
                            results[i] = WriteResult(False, current=current[i])
                    continue
                for i in part:
                    key, _, value = writes[i]
                    if value is None:
                        self._remove(key)
                    else:
                        self._store(key, value)
                    results[i] = WriteResult(True, version=self._versions[key])
        return [r for r in results if r is not None]

    def _live(self, key: bytes) -> tuple[bytes, Version] | None:
        return (self._data[key], self._versions[key]) if key in self._data else None

    def _holds(self, key: bytes, if_version: Version | None) -> bool:
        """A conditional write's condition: the key's newest version is exactly `if_version` (a
        tombstone's counts), or with None, the key has no live value."""
        return key not in self._data if if_version is None else self._versions.get(key) == tuple(if_version)

    def get_for_update(self, key: bytes) -> Locked:
        """`get_version` (one process, one thread: there is no latch to hold)."""
        self._count("get_for_update")
        return Locked(self.get_version(key))

    def confirm(self, key: bytes, if_version: Version | None, *, lock: bytes | None = None) -> WriteResult:
        self._count("confirm")
        check_key(key)
        self._traced("write", [key])              # a Check goes through the log like a write
        return WriteResult(True) if self._holds(key, if_version) else WriteResult(False, current=self._live(key))

    def write_if_many(self, writes: Sequence[Write], *, stop_after_failure: bool = True,
                      lock: bytes | None = None, all_or_nothing: bool = False) -> list[WriteResult]:
        self._count("write_if_many")
        check_writes(writes)   # all of them before any is written, as a node does
        if all_or_nothing:
            return self._all_or_nothing(writes)
        self._traced("write", [key for key, _, _ in writes])
        self._in_many = True
        try:
            return write_each(self.write_if, writes, stop_after_failure=stop_after_failure)
        finally:
            self._in_many = False

    def ranges_for(self, start: bytes, end: bytes | None) -> list[RangeInfo]:
        self._count("ranges_for")
        bounds = [b""] + self._splits
        lo, hi = bisect.bisect_left(self._keys, ZONE_PREFIX), bisect.bisect_left(self._keys, ZONE_END)
        zones = [z for z in (decode_zone(k, self._data[k]) for k in self._keys[lo:hi]) if z is not None]
        out = []
        for i, range_start in enumerate(bounds):
            range_end = bounds[i + 1] if i + 1 < len(bounds) else None
            if end is not None and end <= range_start:
                continue
            if range_end is not None and range_end <= start:
                continue
            range_id = i + 1
            replicas = [
                {"node_id": n["node_id"], "region": n["region"]} for n in self._nodes
                if n["node_id"] not in self._down
            ]
            leader_node = self._nodes[(range_id - 1) % len(self._nodes)]
            leader = None
            if leader_node["node_id"] not in self._down:
                leader = {"node_id": leader_node["node_id"], "region": leader_node["region"]}
            out.append({
                "range_id": range_id,
                "start": range_start,
                "end": range_end,
                "replicas": replicas,
                "leader": leader,
                "lease_seq": None if leader is None else 1,
                "home": next((z.region for z in zones if z.start <= range_start < z.end), None),
            })
        return out

    def check_consistency(self, start: bytes, end: bytes | None) -> list[ConsistencyResult]:
        """One result per fake range overlapping [start, end), in key order. There is one copy
        of the data, so a range is consistent unless `mark_inconsistent` said otherwise."""
        self._count("check_consistency")
        out = []
        for r in self.ranges_for(start, end):
            odd = self._inconsistent.get(r["range_id"])
            status, detail, differing = ("consistent", "one in-memory copy: nothing to compare", [])
            if odd is not None:
                status, detail, differing = "inconsistent", odd[1], [odd[0]]
            out.append({"range_id": r["range_id"], "start": r["start"], "end": r["end"], "index": None,
                        "status": status, "detail": detail, "differing": differing, "replicas": []})
        return out

    def regions(self) -> list[RegionInfo]:
        self._count("regions")
        return [
            {"region": n["region"], "node_id": n["node_id"], "up": n["node_id"] not in self._down}
            for n in sorted(self._nodes, key=lambda n: n["node_id"])
        ]

    def now_ns(self) -> int:
        self._count("now_ns")
        return time.time_ns()

    def follower_read(self, spec, spans: list[tuple[bytes, bytes | None]]) -> None:
        """Bounded staleness reads the latest state (within any bound); an exact read in the past
        is refused: this in-memory store keeps no history."""
        self._count("follower_read")
        if spec.kind == "exact":
            from sql.errors import SQLError
            raise SQLError("feature_not_supported", "the in-memory KV keeps no old versions: an exact "
                           "AS OF SYSTEM TIME read runs on a node")

    def begin_trace(self) -> None:
        self._count("begin_trace")
        self._trace = []

    def end_trace(self) -> list[TraceOp]:
        self._count("end_trace")
        trace, self._trace = self._trace, None
        return trace if trace is not None else []

    def _range_id(self, key: bytes) -> int:
        """The fake range holding `key` (as `ranges_for` numbers them)."""
        return bisect.bisect_right(self._splits, key) + 1

    def _part(self, kind: str, keys: list[bytes], end: bytes | None, range_id: int) -> dict:
        return {"kind": kind, "keys": keys, "end": end, "range_id": range_id, "served_by": None,
                "rounds": 1 if kind == "write" else 0, "quorum_rtt_ms": self.quorum_rtt_ms,
                "leader_rtt_ms": 0.0, "ms": 0.0, "follower": False}

    def _traced(self, kind: str, keys: Sequence[bytes]) -> None:
        """Record one call on `keys` (sent together): one part per fake range, in one step."""
        if self._trace is None:
            return
        parts: dict[int, list[bytes]] = {}
        for key in keys:
            parts.setdefault(self._range_id(key), []).append(key)
        record_step(self._trace, [self._part(kind, ks, None, rid) for rid, ks in parts.items()])

    def _traced_scan(self, start: bytes, end: bytes | None, limit: int,
                     pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Record a scan as a node pages it: one step per fake range, from `start` until the
        span's end, or the range where the limit stopped it. Returns `pairs`."""
        if self._trace is None:
            return pairs
        stop = pairs[-1][0] + b"\x00" if len(pairs) >= limit else end
        at = start
        while True:
            range_id = self._range_id(at)
            range_end = self._splits[range_id - 1] if range_id <= len(self._splits) else None
            page_end = stop if range_end is None or (stop is not None and stop <= range_end) else range_end
            record_step(self._trace, [self._part("scan", [at], page_end, range_id)])
            if page_end is None or page_end == stop or page_end <= at:
                return pairs
            at = page_end

    # --- test helpers ----------------------------------------------------------------------------

    def split(self, key: bytes) -> None:
        """Cut the fake range holding `key` at `key` (no data moves: there is one copy)."""
        check_key(key)
        if key not in self._splits:
            bisect.insort(self._splits, key)

    def mark_down(self, node_id: int) -> None:
        """Show node `node_id` as down in regions() and without replicas in ranges_for()."""
        self._down.add(node_id)

    def mark_inconsistent(self, range_id: int, node_id: int, detail: str) -> None:
        """Make check_consistency report range `range_id` inconsistent, node_id differing."""
        self._inconsistent[range_id] = (node_id, detail)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every pair, ascending (a copy)."""
        return [(k, self._data[k]) for k in self._keys]

    def reset_calls(self) -> None:
        self.calls.clear()

    def _store(self, key: bytes, value: bytes) -> None:
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value
        self._new_version(key)

    def _remove(self, key: bytes) -> None:
        if key in self._data:
            del self._data[key]
            self._keys.pop(bisect.bisect_left(self._keys, key))
        self._new_version(key)

    def _new_version(self, key: bytes) -> None:
        self._writes += 1
        self._versions[key] = (self._writes, 0)

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1


def _check_size(key: bytes, *values: bytes | None) -> None:
    """A node refuses a command over command_bytes_max before proposing it; so does this KV
    (the node counts the encoded command, a little more than key and values)."""
    size = len(key) + sum(len(v) for v in values if v is not None)
    if size > constants.command_bytes_max:
        raise TooLargeError("a write of %d bytes exceeds command_bytes_max=%d; nothing was applied"
                            % (size, constants.command_bytes_max))
