"""The hybrid logical clock: timestamps that follow physical time yet never go backwards.

Every write, lease and closed timestamp in raftstore is ordered by HLC timestamps, so a clock
that repeats or reverses a timestamp would let a later write sort before an earlier one. The
HLC here keeps three promises:

1. `HLC.now` and `HLC.update` results strictly increase, whatever the physical clock does
   (NTP steps it backwards, it stalls, it jumps).
2. `HLC.update(remote)` returns a timestamp above `remote`: a message's receive orders after
   its send. A remote timestamp more than ``max_offset_ns`` ahead of our physical clock is
   refused with `ClockOffsetError` and changes nothing: one node with a runaway clock must not
   drag every other clock (and every lease expiration) into the future.
3. Promise 1 holds across restarts. Before any timestamp with ``wall_ns >= ceiling`` is issued
   or accepted, a new ceiling ``wall_ns + ceiling_window_ns`` is made durable through the
   ``ceiling_store``; on start the clock loads the ceiling and issues only timestamps above
   ``Timestamp(ceiling, 0)``. Since every timestamp a previous incarnation issued had a wall
   below the ceiling it had persisted, the new incarnation starts above all of them even if
   the machine's clock now reads earlier. The window makes saves rare (about one per
   ``ceiling_window_ns`` of wall time) at the price of a restart jumping up to one window
   ahead of physical time, where the logical counter carries it until physical time catches up.

This module is pure (etcd-raft style): physical time arrives through a clock object with
``now_ns()`` and durability through a store object, so tests and the deterministic simulation
drive it with `ManualClock` and `MemoryCeilingStore`. The real clock and file store live in
`hlc.system`. It must not import time, socket, sqlite3 or asyncio.
"""

from __future__ import annotations

import threading
from typing import Protocol

from hlc.timestamp import Timestamp

MAX_OFFSET_NS_DEFAULT = 500_000_000
CEILING_WINDOW_NS_DEFAULT = 1_000_000_000


class PhysicalClock(Protocol):
    """A source of physical time: nanoseconds since the Unix epoch. May jump in any direction."""

    def now_ns(self) -> int: ...


class CeilingStore(Protocol):
    """Durable home of the HLC wall-time ceiling.

    ``load()`` returns the last saved ceiling, or None if none was ever saved; it raises if the
    stored value is unreadable (never guess a ceiling). ``save(ns)`` must not return before
    ``ns`` is durable: a crash right after it returns must still load ``ns`` (or a later value).
    The HLC only ever saves increasing values.
    """

    def load(self) -> int | None: ...

    def save(self, ns: int) -> None: ...


class ClockOffsetError(Exception):
    """A remote timestamp is further ahead of our physical clock than the max offset allows.

    An operating error: the remote node's clock (or ours) is wrong. The message says by how
    much; the HLC state is unchanged.
    """

    def __init__(self, remote: Timestamp, physical_ns: int, max_offset_ns: int) -> None:
        self.remote = remote
        self.physical_ns = physical_ns
        self.max_offset_ns = max_offset_ns
        self.ahead_ns = remote.wall_ns - physical_ns
        super().__init__(
            f"remote timestamp {remote} is {_format_ms(self.ahead_ns)} ms ahead of the local "
            f"physical clock, more than the max offset of {_format_ms(max_offset_ns)} ms; "
            "refusing it. Check clock synchronisation (NTP/chrony) on both nodes."
        )


def _format_ms(ns: int) -> str:
    """Exact milliseconds, trailing zeros dropped: 500000001 -> '500.000001', 5e8 -> '500'."""
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), 1_000_000)
    return sign + f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


class ManualClock:
    """A physical clock that moves only when told to; for tests and simulation."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def now_ns(self) -> int:
        return self._now_ns

    def set(self, ns: int) -> None:
        """Jump to ``ns``, forwards or backwards."""
        self._now_ns = ns

    def advance(self, ns: int) -> None:
        """Move by ``ns`` (negative moves backwards, as a stepped NTP clock does)."""
        self._now_ns += ns


class MemoryCeilingStore:
    """A `CeilingStore` in memory: "durable" for as long as the object lives.

    Share one instance between two HLCs to simulate a restart. ``save_count`` counts saves so
    tests can check that persistence stays rare.
    """

    def __init__(self, ceiling_ns: int | None = None) -> None:
        self._ceiling_ns = ceiling_ns
        self.save_count = 0

    def load(self) -> int | None:
        return self._ceiling_ns

    def save(self, ns: int) -> None:
        self._ceiling_ns = ns
        self.save_count += 1


class HLC:
    """A hybrid logical clock over a physical clock; thread-safe.

    Every timestamp returned by `now` or `update` is strictly greater than every timestamp
    this clock returned before, and (with a ``ceiling_store``) than every timestamp any earlier
    clock over the same store returned. Errors from ``ceiling_store.save`` propagate and leave
    the clock unchanged (nothing is issued above an unsaved ceiling).
    """

    def __init__(
        self,
        physical: PhysicalClock,
        *,
        max_offset_ns: int = MAX_OFFSET_NS_DEFAULT,
        ceiling_store: CeilingStore | None = None,
        ceiling_window_ns: int = CEILING_WINDOW_NS_DEFAULT,
    ) -> None:
        if max_offset_ns < 0:
            raise ValueError(f"max_offset_ns must be >= 0, got {max_offset_ns}")
        if ceiling_window_ns <= 0:
            raise ValueError(f"ceiling_window_ns must be > 0, got {ceiling_window_ns}")
        self._physical = physical
        self._max_offset_ns = max_offset_ns
        self._store = ceiling_store
        self._window_ns = ceiling_window_ns
        self._lock = threading.Lock()
        # _ceiling_ns: the durable ceiling; every issued wall_ns is below it (None: no store).
        self._ceiling_ns: int | None = None
        self._last = Timestamp.ZERO
        if ceiling_store is not None:
            loaded = ceiling_store.load()
            if loaded is None:
                self._ceiling_ns = 0
            else:
                if not isinstance(loaded, int) or isinstance(loaded, bool) or loaded < 0:
                    raise ValueError(f"ceiling store returned {loaded!r}, not an int >= 0")
                self._ceiling_ns = loaded
                # Everything the previous incarnation issued is below (loaded, 0).
                self._last = Timestamp(loaded, 0)

    @property
    def max_offset_ns(self) -> int:
        """The largest clock offset between nodes this clock tolerates."""
        return self._max_offset_ns

    def now(self) -> Timestamp:
        """A fresh timestamp for a local event: max(last wall, physical), logical breaking ties."""
        with self._lock:
            physical_ns = self._physical.now_ns()
            last = self._last
            if physical_ns > last.wall_ns:
                issued = Timestamp(physical_ns, 0)
            else:
                issued = last.next()
            self._persist_ceiling_for(issued.wall_ns)
            self._last = issued
            return issued

    def update(self, remote: Timestamp) -> Timestamp:
        """Observe a timestamp received from another node; returns a timestamp above it.

        The result is greater than ``remote`` and than every timestamp this clock issued
        before. Raises `ClockOffsetError`, changing nothing, if ``remote.wall_ns`` is more than
        ``max_offset_ns`` ahead of the physical clock.
        """
        with self._lock:
            physical_ns = self._physical.now_ns()
            if remote.wall_ns > physical_ns + self._max_offset_ns:
                raise ClockOffsetError(remote, physical_ns, self._max_offset_ns)
            last = self._last
            wall_ns = max(last.wall_ns, remote.wall_ns, physical_ns)
            if wall_ns == last.wall_ns and wall_ns == remote.wall_ns:
                issued = max(last, remote).next()
            elif wall_ns == last.wall_ns:
                issued = last.next()
            elif wall_ns == remote.wall_ns:
                issued = remote.next()
            else:
                issued = Timestamp(wall_ns, 0)
            assert issued > last and issued > remote, (issued, last, remote)
            self._persist_ceiling_for(issued.wall_ns)
            self._last = issued
            return issued

    def last(self) -> Timestamp:
        """The latest timestamp issued by `now` or `update`.

        Before the first one: Timestamp.ZERO, or ``Timestamp(loaded_ceiling, 0)`` after a
        restart (a floor every new timestamp is above).
        """
        with self._lock:
            return self._last

    def ceiling_ahead(self) -> int | None:
        """The ceiling to save now, away from the callers of `now` and `update`, or None.

        Once physical time or the last issued wall is within half a window of the durable
        ceiling, the next timestamp may soon have to wait for a save (an fsync) in `now`. A
        caller that saves the returned value on a thread of its own and then reports it with
        `ceiling_saved` keeps those saves off the clock's callers: they save only when physical
        time outruns that caller by half a window."""
        with self._lock:
            if self._ceiling_ns is None:
                return None
            wall_ns = max(self._last.wall_ns, self._physical.now_ns())
            if wall_ns < self._ceiling_ns - self._window_ns // 2:
                return None
            return wall_ns + self._window_ns

    def ceiling_saved(self, ns: int) -> None:
        """``ns``, returned by `ceiling_ahead`, is durable in the ceiling store (saved by the
        caller): timestamps below it are issued without another save."""
        with self._lock:
            if self._ceiling_ns is not None and ns > self._ceiling_ns:
                self._ceiling_ns = ns

    def _persist_ceiling_for(self, wall_ns: int) -> None:
        # Called with the lock held, before a timestamp with this wall is issued or accepted.
        if self._ceiling_ns is None or wall_ns < self._ceiling_ns:
            return
        ceiling_ns = wall_ns + self._window_ns
        assert self._store is not None
        self._store.save(ceiling_ns)
        self._ceiling_ns = ceiling_ns


__all__ = [
    "CEILING_WINDOW_NS_DEFAULT",
    "MAX_OFFSET_NS_DEFAULT",
    "CeilingStore",
    "ClockOffsetError",
    "HLC",
    "ManualClock",
    "MemoryCeilingStore",
    "PhysicalClock",
]
