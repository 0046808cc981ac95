"""Zones: which region a span of keys calls home. Pure.

A zone is a record in the meta range, ``ZONE_PREFIX + start -> msgpack [end, region]``
(raftstore/keyspace.py, which the SQL layer shares, holds its format): the keys
in ``[start, end)`` live in ``region`` - the leases of their ranges move to the replica there
while it is up (Store._lease_upkeep, Node._preferred_holder) and come back once it recovers.
The SQL layer writes one per table with a home region (``LOCALITY REGIONAL BY TABLE IN "r"``,
sql/catalog.py); the store only reads them, so the core knows spans and regions, never tables.

Why records in meta, read by every store, rather than a field of the table's schema: the node
that must act on a home (the leaseholder of each range) knows ranges, not tables, and the core
imports nothing from `sql/`. Every node holds a replica of meta today (every range is on every
node), so a store reads the zones from its own copy (`Store.refresh_zones`, once a second): a
change takes effect within a second of its apply on that replica; placement is a preference,
never a safety property, so a copy a moment behind is harmless.

Splits: a range must not straddle a zone boundary (tables with different homes never share a
range; CockroachDB splits at every table), so the leader of a range that holds a boundary
strictly inside it splits there (`ZoneMap.boundary_inside`, Store.maintain). A range's home
is the zone holding its start key (`ZoneMap.region_for`); until its split, a straddling range
follows the zone of its start.
"""

from __future__ import annotations

import bisect

from raftstore.keyspace import Zone


class ZoneMap:
    """The zones as a store last read them: disjoint spans sorted by start (an overlapping
    later one is dropped, so a lookup has one answer)."""

    def __init__(self, zones: list[Zone] | tuple[Zone, ...] = ()) -> None:
        kept: list[Zone] = []
        for zone in sorted(zones, key=lambda z: z.start):
            if not kept or kept[-1].end <= zone.start:
                kept.append(zone)
        self.zones = tuple(kept)
        self._starts = [z.start for z in kept]
        bounds = set()
        for z in kept:
            bounds.update((z.start, z.end))
        self._bounds = sorted(bounds)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZoneMap) and self.zones == other.zones

    def __hash__(self) -> int:
        return hash(self.zones)

    def region_for(self, key: bytes) -> str | None:
        """The home region of the zone holding `key`, or None (no zone: the cluster default)."""
        i = bisect.bisect_right(self._starts, key) - 1
        if i >= 0 and key < self.zones[i].end:
            return self.zones[i].region
        return None

    def boundary_inside(self, start: bytes, end: bytes | None) -> bytes | None:
        """The first zone boundary strictly inside ``(start, end)``: where a range over that
        span must split; None when it straddles none."""
        i = bisect.bisect_right(self._bounds, start)
        if i < len(self._bounds) and (end is None or self._bounds[i] < end):
            return self._bounds[i]
        return None
