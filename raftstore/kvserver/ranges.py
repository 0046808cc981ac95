"""Ranges: descriptors and the layout of the keyspace. Pure.

The keyspace is cut into ranges `[start, end)`, each one Raft group. Layout:
    b"\\x00..."   node-local keys (a replica's own descriptor); inside no range, never replicated
                  as range data and never part of a snapshot
    b"\\x01..."   range 1, the meta range: descriptors of every range and the range-id counter
    b"\\x02..."   and above: data ranges (range 2 at bootstrap); raw key-value pairs under b"k",
                  SQL rows under b"t"
A descriptor's `generation` grows with every split of that range, so a stale copy is always
recognisable. Routing picks the range whose span holds the key; a replica rejects a command for
a key outside its current span (RangeKeyMismatch) and the router refreshes and retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from raftstore.keyspace import DATA_START, META_START

META_RANGE_ID = 1
FIRST_DATA_RANGE_ID = 2
META_END = DATA_START
LOCAL_DESC_PREFIX = b"\x00rd"
META_DESC_PREFIX = b"\x01d"
META_COUNTER_KEY = b"\x01n"
MISMATCH = "RangeKeyMismatch"          # the first word of a mismatch's message
RANGE_KEY_MISMATCH = "range_key_mismatch"   # its code (raft.commands.Rejection.code)


@dataclass(frozen=True)
class RangeDescriptor:
    range_id: int
    start: bytes
    end: bytes | None          # None: to the end of the keyspace
    generation: int = 0
    replicas: tuple[int, ...] = field(default=())

    def contains(self, key: bytes) -> bool:
        return self.start <= key and (self.end is None or key < self.end)

    def overlaps(self, start: bytes, end: bytes | None) -> bool:
        return (end is None or self.start < end) and (self.end is None or start < self.end)

    def to_wire(self) -> list:
        return [self.range_id, self.start, self.end, self.generation, list(self.replicas)]

    @classmethod
    def from_wire(cls, obj) -> "RangeDescriptor":
        if not isinstance(obj, (list, tuple)) or len(obj) != 5:
            raise ValueError("malformed range descriptor %r" % (obj,))
        rid, start, end, gen, replicas = obj
        if not isinstance(rid, int) or not isinstance(start, bytes) or not (end is None or isinstance(end, bytes)):
            raise ValueError("malformed range descriptor %r" % (obj,))
        return cls(rid, start, end, int(gen), tuple(int(r) for r in replicas))

    def encode(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> "RangeDescriptor":
        return cls.from_wire(msgpack.unpackb(data, raw=False))

    def __str__(self) -> str:
        return "r%d[%s, %s)" % (self.range_id, pretty_key(self.start), "∞" if self.end is None else pretty_key(self.end))


def bootstrap_descriptors(replicas: list[int]) -> list[RangeDescriptor]:
    reps = tuple(sorted(replicas))
    return [RangeDescriptor(META_RANGE_ID, META_START, META_END, 0, reps),
            RangeDescriptor(FIRST_DATA_RANGE_ID, DATA_START, None, 0, reps)]


def local_desc_key(range_id: int) -> bytes:
    return LOCAL_DESC_PREFIX + range_id.to_bytes(8, "big")


def meta_desc_key(range_id: int) -> bytes:
    return META_DESC_PREFIX + range_id.to_bytes(8, "big")


def pretty_key(key: bytes) -> str:
    if key == b"":
        return "-∞"
    text = "".join(chr(b) if 32 <= b < 127 and b != 92 else "\\x%02x" % b for b in key[:24])
    return text + ("…" if len(key) > 24 else "")


def split_key_for(keys: list[bytes]) -> bytes | None:
    """The middle key of a range's (sorted) keys: the right half starts there. None if fewer than 2."""
    if len(keys) < 2:
        return None
    return keys[len(keys) // 2]


def is_mismatch(rejection) -> bool:
    """Whether a rejected command's answer (raft.commands.Rejection) is a range-key mismatch."""
    return getattr(rejection, "code", None) == RANGE_KEY_MISMATCH


def mismatch_descriptors(details: dict) -> list[RangeDescriptor]:
    """The descriptors a range-key mismatch carries (the refusing replica's own); malformed ones
    are left out."""
    out = []
    for obj in details.get("descriptors", []) if isinstance(details, dict) else []:
        try:
            out.append(RangeDescriptor.from_wire(obj))
        except ValueError:
            pass
    return out
