"""Repeated log lines, rate-limited: one line per condition per interval, with a count.

A condition that holds for a while - a clock out of bounds, a peer that keeps sending a bad
frame, a snapshot that keeps failing - is met again on every heartbeat, tick or frame, and a
line per meeting buries everything else in the log (a fault run left 46,251 copies of one
warning). So each call names its *condition key* (what is wrong and where: a peer, a range;
never the formatted text, whose figures change from one line to the next) and a `LogLimiter`
lets through the first line of a key at once, counts the repeats of the next `interval_s`
without logging them, and appends their number to the next line let through:

    ... dropped: malformed HEARTBEAT frame: 6 fields, expected at most 5 (39 more like this in the last 10 s)

A key's repeats are reported only by its next line: a condition that stops leaves its last
count unsaid (the interval bounds what is lost). Memory is bounded: past `keys_max` keys the
least recently seen is forgotten, which only means its next line is logged at once. Safe from
any thread (the node loop, the asyncio thread, reader and snapshot threads log); the clock is
an argument, so tests drive it. Each object that logs such lines keeps its own limiter (a node,
its peer network, a Raft group, the SQL gateway): two of them in one process, as in a test or
the simulator, never hold back each other's lines.

A line logged once per process, or on an operator's action, needs none of this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from raftstore import constants

__all__ = ["LogLimiter"]

SUMMARY = " (%d more like this in the last %.0f s)"


class LogLimiter:
    """Per condition key: the first line at once, then at most one per `interval_s`, which
    carries the number of lines held back since the last one."""

    def __init__(self, interval_s: float = constants.log_repeat_interval_s,
                 keys_max: int = constants.log_repeat_keys_max, clock: Callable[[], float] = time.monotonic) -> None:
        assert interval_s >= 0 and keys_max >= 1
        self.interval_s, self.keys_max, self.clock = interval_s, keys_max, clock
        self._keys: OrderedDict[Hashable, list] = OrderedDict()   # key -> [when last logged, held back since]
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> tuple[int, float] | None:
        """None: hold this line back (it is counted). Else log it now: (lines held back since the
        key's last line, seconds since that line), (0, 0.0) for a key not seen lately."""
        now = self.clock()
        with self._lock:
            entry = self._keys.get(key)
            if entry is None:
                self._keys[key] = [now, 0]
                if len(self._keys) > self.keys_max:
                    self._keys.popitem(last=False)
                return 0, 0.0
            self._keys.move_to_end(key)
            if now - entry[0] < self.interval_s:
                entry[1] += 1
                return None
            held, since = entry[1], now - entry[0]
            entry[0], entry[1] = now, 0
            return held, since

    def log(self, logger: logging.Logger, level: int, key: Hashable, msg: str, *args, **kwargs) -> bool:
        """`logger.log(level, msg, *args, **kwargs)` unless held back under `key` (within this
        logger's keys); with the count of lines held back appended. True if it was logged."""
        if not logger.isEnabledFor(level):
            return False
        admitted = self.admit((logger.name, key))
        if admitted is None:
            return False
        held, since = admitted
        if held:
            msg = (msg if args else msg.replace("%", "%%")) + SUMMARY
            args = args + (held, since)
        kwargs.setdefault("stacklevel", 2)   # the record names the caller's line, not this one
        logger.log(level, msg, *args, **kwargs)
        return True

    def __len__(self) -> int:
        return len(self._keys)

