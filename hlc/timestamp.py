"""HLC timestamps: the one total order every replica, lease and transaction agrees on.

A timestamp is a pair (wall_ns, logical): nanoseconds since the Unix epoch, and a counter that
orders events sharing one wall value. Pairs compare lexicographically, so the order is total and
the same on every node; that is the whole point of the type. Timestamps travel on the wire and
in replicated commands as the msgpack array ``[wall_ns, logical]``; anything that arrives from
the network goes through `Timestamp.from_wire`, which rejects malformed input with ValueError
instead of trusting it.

Invariant: a `Timestamp` always holds ``0 <= wall_ns <= WALL_NS_MAX`` and
``0 <= logical <= LOGICAL_MAX`` as plain ints, so it fits the wire format (int64, uint32) and
every comparison is between two well-formed values.

This module is pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

WALL_NS_MAX = 2**63 - 1
LOGICAL_MAX = 2**32 - 1
NS_PER_S = 1_000_000_000

_TEXT_RE = re.compile(r"([0-9]+)\.([0-9]{9}),([0-9]+)")


def _is_plain_int(value: Any) -> bool:
    # bool is an int subclass; True is not a timestamp component.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, order=True, slots=True)
class Timestamp:
    """A hybrid-logical-clock timestamp; compares as the tuple (wall_ns, logical).

    Raises ValueError if a component is not an int in range (see module docstring).
    """

    wall_ns: int
    logical: int = 0

    ZERO: ClassVar[Timestamp]
    MAX: ClassVar[Timestamp]

    def __post_init__(self) -> None:
        if not _is_plain_int(self.wall_ns) or not 0 <= self.wall_ns <= WALL_NS_MAX:
            raise ValueError(
                f"Timestamp.wall_ns must be an int in [0, {WALL_NS_MAX}], got {self.wall_ns!r}"
            )
        if not _is_plain_int(self.logical) or not 0 <= self.logical <= LOGICAL_MAX:
            raise ValueError(
                f"Timestamp.logical must be an int in [0, {LOGICAL_MAX}], got {self.logical!r}"
            )

    def next(self) -> Timestamp:
        """The smallest timestamp greater than this one.

        Normally (wall_ns, logical + 1); when logical is already LOGICAL_MAX it rolls over to
        (wall_ns + 1, 0). Raises OverflowError for Timestamp.MAX.
        """
        if self.logical < LOGICAL_MAX:
            return Timestamp(self.wall_ns, self.logical + 1)
        if self.wall_ns < WALL_NS_MAX:
            return Timestamp(self.wall_ns + 1, 0)
        raise OverflowError("Timestamp.MAX has no successor")

    def to_wire(self) -> list[int]:
        """The msgpack-ready form ``[wall_ns, logical]`` (a new list the caller owns)."""
        return [self.wall_ns, self.logical]

    @classmethod
    def from_wire(cls, obj: Any) -> Timestamp:
        """Rebuild a timestamp from `to_wire` output received from the network.

        Accepts a list or tuple of exactly two ints (msgpack may give either). Raises ValueError
        naming what was wrong for anything else; never asserts, since the input is untrusted.
        """
        if not isinstance(obj, (list, tuple)):
            raise ValueError(
                f"malformed wire timestamp: expected [wall_ns, logical], got {type(obj).__name__}"
            )
        if len(obj) != 2:
            raise ValueError(
                f"malformed wire timestamp: expected 2 elements [wall_ns, logical], got {len(obj)}"
            )
        wall_ns, logical = obj
        if not _is_plain_int(wall_ns) or not _is_plain_int(logical):
            raise ValueError(
                "malformed wire timestamp: wall_ns and logical must be ints, got "
                f"{type(wall_ns).__name__} and {type(logical).__name__}"
            )
        if not 0 <= wall_ns <= WALL_NS_MAX or not 0 <= logical <= LOGICAL_MAX:
            raise ValueError(
                f"malformed wire timestamp: [{wall_ns}, {logical}] out of range "
                f"(wall_ns in [0, {WALL_NS_MAX}], logical in [0, {LOGICAL_MAX}])"
            )
        return cls(int(wall_ns), int(logical))

    def __str__(self) -> str:
        seconds, nanos = divmod(self.wall_ns, NS_PER_S)
        return f"{seconds}.{nanos:09d},{self.logical}"

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Inverse of `str()`: ``"<seconds>.<9-digit nanos>,<logical>"``, e.g.
        ``"1732600000.000000123,4"``. Raises ValueError on any other form or out-of-range values.
        """
        if not isinstance(text, str):
            raise ValueError(f"timestamp text must be a str, got {type(text).__name__}")
        match = _TEXT_RE.fullmatch(text)
        if match is None:
            raise ValueError(
                f"malformed timestamp {text!r}: expected '<seconds>.<9-digit nanos>,<logical>', "
                "e.g. '1732600000.000000123,4'"
            )
        seconds, nanos, logical = (int(group) for group in match.groups())
        wall_ns = seconds * NS_PER_S + nanos
        if wall_ns > WALL_NS_MAX or logical > LOGICAL_MAX:
            raise ValueError(f"timestamp {text!r} is out of range")
        return cls(wall_ns, logical)


Timestamp.ZERO = Timestamp(0, 0)
Timestamp.MAX = Timestamp(WALL_NS_MAX, LOGICAL_MAX)
