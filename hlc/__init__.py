"""Hybrid logical clock: totally ordered timestamps that never go backwards, even across restarts.

`hlc.timestamp` and `hlc.clock` are pure; `hlc.system` holds the OS clock and the on-disk
ceiling. Nothing here knows about anything above it (raftstore, sql).
"""

from hlc.clock import (
    CEILING_WINDOW_NS_DEFAULT,
    HLC,
    MAX_OFFSET_NS_DEFAULT,
    CeilingStore,
    ClockOffsetError,
    ManualClock,
    MemoryCeilingStore,
    PhysicalClock,
)
from hlc.system import CorruptCeilingError, FileCeilingStore, SystemClock
from hlc.timestamp import LOGICAL_MAX, WALL_NS_MAX, Timestamp

__all__ = [
    "CEILING_WINDOW_NS_DEFAULT",
    "HLC",
    "LOGICAL_MAX",
    "MAX_OFFSET_NS_DEFAULT",
    "WALL_NS_MAX",
    "CeilingStore",
    "ClockOffsetError",
    "CorruptCeilingError",
    "FileCeilingStore",
    "ManualClock",
    "MemoryCeilingStore",
    "PhysicalClock",
    "SystemClock",
    "Timestamp",
]
