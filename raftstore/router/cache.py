"""The router's range cache: which range holds a key, as this router last learned it.

Filled only by the router itself, from lookups (the node's copy of meta) and from the
descriptors a refusing replica returns; never from the node's own replicas as they apply, so
it can be stale, and the router must (and does) recover from that alone. Pure.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict

from raftstore.kvserver.ranges import RangeDescriptor


class RangeCache:
    """Descriptors by start key, bounded (least recently used dropped first).

    `lookup(key)` returns the cached descriptor whose span holds key, or None (the caller then
    loads it and `insert`s). `insert` drops every cached descriptor the new one overlaps (older
    views of the same span), so the cache never holds two ranges for one key.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._starts: list[bytes] = []
        self._by_start: dict[bytes, RangeDescriptor] = {}
        self._lru: OrderedDict[int, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._starts)

    def lookup(self, key: bytes) -> RangeDescriptor | None:
        i = bisect.bisect_right(self._starts, key) - 1
        if i < 0:
            return None
        desc = self._by_start[self._starts[i]]
        if not desc.contains(key):
            return None
        self._lru.move_to_end(desc.range_id)
        return desc

    def insert(self, desc: RangeDescriptor) -> None:
        replaced = self._overlapping(desc)
        if any(old.range_id == desc.range_id and old.generation > desc.generation for old in replaced):
            return  # never replace a newer view with an older one (and drop nothing for it)
        for old in replaced:
            self._remove(old)
        bisect.insort(self._starts, desc.start)
        self._by_start[desc.start] = desc
        self._lru[desc.range_id] = desc.start
        while len(self._starts) > self.capacity:
            oldest = next(iter(self._lru))
            self._remove(self._by_start[self._lru[oldest]])

    def _overlapping(self, desc: RangeDescriptor) -> list[RangeDescriptor]:
        """The cached descriptors `desc` replaces: those overlapping its span, and the one of
        its range id. Cached spans are disjoint, so they are the one holding its start and those
        starting inside it: found by bisection, not by a pass over the cache."""
        found = []
        i = max(0, bisect.bisect_right(self._starts, desc.start) - 1)
        while i < len(self._starts) and (desc.end is None or self._starts[i] < desc.end):
            cached = self._by_start[self._starts[i]]
            if cached.overlaps(desc.start, desc.end):
                found.append(cached)
            i += 1
        start = self._lru.get(desc.range_id)
        if start is not None and self._by_start[start] not in found:
            found.append(self._by_start[start])
        return found

    def invalidate(self, range_id: int) -> None:
        start = self._lru.get(range_id)
        if start is not None:
            self._remove(self._by_start[start])

    def _remove(self, desc: RangeDescriptor) -> None:
        i = bisect.bisect_left(self._starts, desc.start)
        if i < len(self._starts) and self._starts[i] == desc.start:
            del self._starts[i]
        self._by_start.pop(desc.start, None)
        self._lru.pop(desc.range_id, None)
