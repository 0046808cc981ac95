"""Durations as people type them, for flags and SQL alike: ``10s``, ``500ms``, ``1m30s``,
``2 minutes``, ``1.5h``, ``-5s`` or a plain number of seconds. One parser, so `raftstore kv
--max-staleness`, ``AS OF SYSTEM TIME '-5s'``, ``with_max_staleness('10s')`` and ``SET
statement_timeout`` read the same text the same way."""

from __future__ import annotations

import re

_UNITS = {"ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
          "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
          "hour": 3600.0, "hours": 3600.0}
_INTERVAL = re.compile(r"\s*(-?)\s*((?:\d+(?:\.\d*)?\s*[a-z]*\s*)+)", re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d*)?)\s*([a-z]*)", re.IGNORECASE)


def parse_interval_s(text: str) -> float | None:
    """'10s', '500ms', '1m30s', '2 minutes', '-5s' -> seconds (signed); None if it is not one."""
    match = _INTERVAL.fullmatch(text)
    if match is None:
        return None
    total = 0.0
    for number, unit in _PART.findall(match.group(2)):
        factor = _UNITS.get(unit.lower() or "s")
        if factor is None:
            return None
        total += float(number) * factor
    return -total if match.group(1) else total
