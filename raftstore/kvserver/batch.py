"""Typed batch requests: what a gateway's router sends one range's leader, and what comes back.

A batch is a `Header` plus ops for one range (CockroachDB's BatchRequest):

    Header   ts           the write timestamp the gateway's HLC proposes; the leader raises it
                          (never lowers it) and apply raises it above every version of the keys
                          the batch writes, so the answer's `ts` is the batch's commit timestamp
             read_ts      the timestamp to read at: for a strong read, the statement's (nil: the
                          leaseholder picks its own and answers it as `read_ts`); for an `exact`
                          read, required; for a `bounded_staleness` read, the timestamp the
                          gateway negotiated (nil: the replica reads at its closed timestamp)
             consistency  strong: the leaseholder serves it, at its clock or read_ts;
                          exact: any replica that has closed read_ts serves it (kvserver.closedts),
                          else the leaseholder; bounded_staleness: the same at the replica's
                          closed timestamp, provided that is at least `min_ts`
             min_ts       for bounded_staleness: the oldest timestamp the reader accepts (now minus
                          its staleness bound, raised to its causality token)
             txn          the slot a transaction will fill; must be nil until transactions exist
             generation   the descriptor generation the router routed with (informational: the
                          leader checks the keys against its own span, which is what decides)
             max_keys     a limit on the rows the batch's scans return together (0: scan_rows_max)
             max_bytes    a limit on their keys' and values' bytes (0: scan_bytes_max): rows are
                          taken until their bytes reach it, that row the last; a limit that
                          stops a scan gives its `resume` key, where to continue
             lock_token   the latches a locking read (GetForUpdate) holds for this write batch
             uncertainty_limit  for a strong read at a fixed `read_ts`: versions above read_ts
                          and at or below this may have been written before the read began (by a
                          node whose clock runs ahead): finding one restarts the read above it
    ops      Get, Scan (reads), GetForUpdate (a locking read: alone in its batch) or Put, Delete,
             ConditionalPut, CompareAndSwap, Check, Increment, SetFields (writes)

Rules that keep a batch's meaning simple until transactions exist:
  * a batch either reads or writes, never both (a write's own condition is its read);
  * a write batch names each key at most once, and is all or nothing within its range: either
    every condition holds and every write applies at one timestamp, or nothing is written and
    every conditional op answers the key's current value and version;
  * a scan stays within the range (the router pages across ranges).

Decoding never trusts the bytes: anything malformed raises CommandError, the same verdict on
every replica. Responses are plain msgpack maps (`BatchResponse.to_wire`), per op:
    Get {value, ts}   Scan {rows [[k, v]], versions [[wall, logical]], resume}
    GetForUpdate {value, ts} and the batch's `lock_token`
    Put {}   Delete {found}   ConditionalPut/CompareAndSwap/Check {swapped, value, version}
    Increment {value}   SetFields {found}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from raftstore import constants
from raftstore.raft.commands import CommandError

Timestamp = tuple[int, int]
_TS_PART_MAX = (1 << 63) - 1

STRONG, BOUNDED_STALENESS, EXACT = "strong", "bounded_staleness", "exact"
CONSISTENCIES = (STRONG, BOUNDED_STALENESS, EXACT)
BATCH_OP = "batch"     # the replicated command that carries a batch
VALUE_TOO_LARGE = "value_too_large"   # a rejection's code: a write would make a value past command_bytes_max


def _bytes(value: Any, what: str, *, optional: bool = False) -> bytes | None:
    if value is None and optional:
        return None
    if not isinstance(value, bytes):
        raise CommandError("%s must be bytes" % what)
    return value


def _ts(value: Any, what: str, *, optional: bool = False) -> Timestamp | None:
    if value is None and optional:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= _TS_PART_MAX for x in value)):
        raise CommandError("%s must be [wall_ns, logical]" % what)
    return (value[0], value[1])


def _count(value: Any, what: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise CommandError("%s must be an integer in 0..%d" % (what, top))
    return value


# --- ops -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Get:
    key: bytes
    kind: ClassVar[str] = "get"
    writes: ClassVar[bool] = False

    def to_wire(self) -> dict:
        return {"key": self.key}

    @classmethod
    def from_wire(cls, args: dict) -> "Get":
        return cls(_bytes(args.get("key"), "get's key"))


@dataclass(frozen=True)
class Scan:
    """Live rows of `[key, end) ∩ the range's span` (end nil: to the span's end)."""
    key: bytes
    end: bytes | None = None
    kind: ClassVar[str] = "scan"
    writes: ClassVar[bool] = False

    def to_wire(self) -> dict:
        return {"key": self.key, "end": self.end}

    @classmethod
    def from_wire(cls, args: dict) -> "Scan":
        return cls(_bytes(args.get("key"), "scan's start"), _bytes(args.get("end"), "scan's end", optional=True))


@dataclass(frozen=True)
class GetForUpdate:
    """A locking read: the leader reads the key's live value and newest version from its applied
    state - no consensus round - under the key's latch, which it then holds for the write that
    follows (up to locking_read_hold_s), named by the answer's `lock_token`. The answer is not
    a linearizable read: it is only the version a following ConditionalPut or Check is
    conditioned on, and that condition, decided at apply, is what makes the pair safe. A batch
    of GetForUpdate ops holds nothing else."""
    key: bytes
    kind: ClassVar[str] = "get_for_update"
    writes: ClassVar[bool] = False

    def to_wire(self) -> dict:
        return {"key": self.key}

    @classmethod
    def from_wire(cls, args: dict) -> "GetForUpdate":
        return cls(_bytes(args.get("key"), "get_for_update's key"))


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    kind: ClassVar[str] = "put"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key, "value": self.value}

    @classmethod
    def from_wire(cls, args: dict) -> "Put":
        return cls(_bytes(args.get("key"), "put's key"), _bytes(args.get("value"), "put's value"))


@dataclass(frozen=True)
class Delete:
    """Delete the key (a tombstone at the commit timestamp); answers whether a live value was
    there (`found`), so a DELETE by primary key knows its row count from its one write."""
    key: bytes
    kind: ClassVar[str] = "delete"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key}

    @classmethod
    def from_wire(cls, args: dict) -> "Delete":
        return cls(_bytes(args.get("key"), "delete's key"))


@dataclass(frozen=True)
class ConditionalPut:
    """Write `value` (nil: delete) only if the key's newest version is exactly `if_version` (a
    tombstone's counts), or, with `if_version` nil, only if the key has no live value. Versions
    are commit timestamps, so a same-bytes write by another client is told apart."""
    key: bytes
    if_version: Timestamp | None
    value: bytes | None
    kind: ClassVar[str] = "put_if"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key, "if_version": None if self.if_version is None else list(self.if_version),
                "value": self.value}

    @classmethod
    def from_wire(cls, args: dict) -> "ConditionalPut":
        return cls(_bytes(args.get("key"), "put_if's key"), _ts(args.get("if_version"), "put_if's if_version",
                                                                  optional=True),
                   _bytes(args.get("value"), "put_if's value", optional=True))


@dataclass(frozen=True)
class CompareAndSwap:
    """Write `new` only if the live value equals `expected` (nil: the key has no live value)."""
    key: bytes
    expected: bytes | None
    new: bytes
    kind: ClassVar[str] = "cas"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key, "expected": self.expected, "new": self.new}

    @classmethod
    def from_wire(cls, args: dict) -> "CompareAndSwap":
        return cls(_bytes(args.get("key"), "cas's key"), _bytes(args.get("expected"), "cas's expected", optional=True),
                   _bytes(args.get("new"), "cas's new"))


@dataclass(frozen=True)
class Check:
    """Write nothing, on the condition of a ConditionalPut: the key's newest version is exactly
    `if_version` (nil: the key has no live value). Goes through the log like a write, so what it
    confirms - that a locking read's answer is still the key's state - holds at its log index:
    an UPDATE or DELETE that matched no row, or changed nothing, says so only once confirmed."""
    key: bytes
    if_version: Timestamp | None
    kind: ClassVar[str] = "check"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key, "if_version": None if self.if_version is None else list(self.if_version)}

    @classmethod
    def from_wire(cls, args: dict) -> "Check":
        return cls(_bytes(args.get("key"), "check's key"), _ts(args.get("if_version"), "check's if_version",
                                                              optional=True))


@dataclass(frozen=True)
class Increment:
    """Add `delta` to the key's value, a decimal integer in ASCII (no value: 0); answers the new
    value. A value that is not such an integer rejects the batch (nothing written)."""
    key: bytes
    delta: int
    kind: ClassVar[str] = "increment"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key, "delta": self.delta}

    @classmethod
    def from_wire(cls, args: dict) -> "Increment":
        delta = args.get("delta")
        if not isinstance(delta, int) or isinstance(delta, bool) or abs(delta) > constants.increment_abs_max:
            raise CommandError("increment's delta must be an integer of magnitude at most %d"
                               % constants.increment_abs_max)
        return cls(_bytes(args.get("key"), "increment's key"), delta)


_FIELD_TYPES = (type(None), bool, int, float, str, bytes)


@dataclass(frozen=True)
class SetFields:
    """Where the key has a live value, a msgpack array of exactly `width` elements, replace the
    elements at the positions `fields` names ({position: new element}) and write the result;
    where it has none, write nothing. Answers `found`. Evaluated from the state it applies to,
    so an UPDATE by primary key whose new values do not depend on the old row is one write,
    from any gateway, with no read before it. A live value that is not such an array rejects
    the batch (nothing written)."""
    key: bytes
    width: int
    fields: tuple[tuple[int, Any], ...]
    kind: ClassVar[str] = "set_fields"
    writes: ClassVar[bool] = True

    def to_wire(self) -> dict:
        return {"key": self.key, "width": self.width, "fields": [[i, v] for i, v in self.fields]}

    @classmethod
    def from_wire(cls, args: dict) -> "SetFields":
        width = _count(args.get("width"), "set_fields' width", constants.set_fields_width_max)
        fields = args.get("fields")
        if not isinstance(fields, list) or not fields:
            raise CommandError("set_fields' fields must be a non-empty list of [position, value]")
        seen: set[int] = set()
        out = []
        for item in fields:
            if not (isinstance(item, list) and len(item) == 2):
                raise CommandError("set_fields' fields must be a non-empty list of [position, value]")
            position, value = item
            if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position < width or \
                    position in seen:
                raise CommandError("set_fields' position %r is not a new position below its width %d"
                                   % (position, width))
            if not isinstance(value, _FIELD_TYPES):
                raise CommandError("set_fields' value at %d must be nil, a bool, a number, text or bytes" % position)
            seen.add(position)
            out.append((position, value))
        return cls(_bytes(args.get("key"), "set_fields' key"), width, tuple(out))

    def apply_to(self, value: bytes) -> bytes:
        """The new value: `value` with the fields replaced. CommandError if `value` is not a
        msgpack array of `width` elements."""
        try:
            elements = msgpack.unpackb(value, raw=False)
        except Exception:
            elements = None
        if not isinstance(elements, list) or len(elements) != self.width:
            raise CommandError("set_fields of %r: its value is not an array of %d elements" % (self.key, self.width))
        for position, element in self.fields:
            elements[position] = element
        new = msgpack.packb(elements, use_bin_type=True)
        if len(self.key) + len(new) > constants.command_bytes_max:
            raise CommandError("set_fields of %r would make a value of %d bytes, above command_bytes_max=%d"
                               % (self.key, len(new), constants.command_bytes_max), code=VALUE_TOO_LARGE)
        return new


Op = Get | GetForUpdate | Scan | Put | Delete | ConditionalPut | CompareAndSwap | Check | Increment | SetFields
OPS: dict[str, type] = {cls.kind: cls for cls in (Get, GetForUpdate, Scan, Put, Delete, ConditionalPut, CompareAndSwap,
                                                  Check, Increment, SetFields)}
CONDITIONAL = (ConditionalPut, CompareAndSwap, Check)


def decode_int(value: bytes | None) -> int:
    """An Increment's operand: the value as a decimal integer (no value: 0)."""
    if value is None:
        return 0
    try:
        if len(value) > 24:
            raise ValueError
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CommandError("increment of a value that is not a decimal integer: %r" % value[:40]) from None


# --- header and batch ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    ts: Timestamp | None = None
    read_ts: Timestamp | None = None
    consistency: str = STRONG
    txn: None = None
    generation: int | None = None
    max_keys: int = 0
    max_bytes: int = 0
    lock_token: bytes | None = None
    uncertainty_limit: Timestamp | None = None
    min_ts: Timestamp | None = None

    def to_wire(self) -> dict:
        return {"ts": None if self.ts is None else list(self.ts),
                "uncertainty_limit": None if self.uncertainty_limit is None else list(self.uncertainty_limit),
                "read_ts": None if self.read_ts is None else list(self.read_ts),
                "consistency": self.consistency, "txn": self.txn, "generation": self.generation,
                "max_keys": self.max_keys, "max_bytes": self.max_bytes, "lock_token": self.lock_token,
                "min_ts": None if self.min_ts is None else list(self.min_ts)}

    @classmethod
    def from_wire(cls, obj: Any) -> "Header":
        if not isinstance(obj, dict):
            raise CommandError("a batch's header must be a map")
        consistency = obj.get("consistency", STRONG)
        if consistency not in CONSISTENCIES:
            raise CommandError("consistency must be one of %s, not %r" % (", ".join(CONSISTENCIES), consistency))
        if obj.get("txn") is not None:
            raise CommandError("transactions are not served yet: a batch's txn must be nil")
        generation = obj.get("generation")
        if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool) or generation < 0):
            raise CommandError("a batch's generation must be a non-negative integer or nil")
        return cls(_ts(obj.get("ts"), "a batch's ts", optional=True),
                   _ts(obj.get("read_ts"), "a batch's read_ts", optional=True), consistency, None, generation,
                   _count(obj.get("max_keys", 0), "max_keys", constants.scan_rows_max),
                   _count(obj.get("max_bytes", 0), "max_bytes", constants.scan_bytes_max),
                   _bytes(obj.get("lock_token"), "a batch's lock_token", optional=True),
                   _ts(obj.get("uncertainty_limit"), "a batch's uncertainty_limit", optional=True),
                   _ts(obj.get("min_ts"), "a batch's min_ts", optional=True))

    def keys_limit(self) -> int:
        return self.max_keys or constants.scan_rows_max

    def bytes_limit(self) -> int:
        return self.max_bytes or constants.scan_bytes_max


@dataclass(frozen=True)
class BatchRequest:
    header: Header
    ops: tuple = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))

    @property
    def writes(self) -> bool:
        return bool(self.ops) and self.ops[0].writes

    @property
    def locking(self) -> bool:
        return any(isinstance(op, GetForUpdate) for op in self.ops)

    def keys(self) -> list[bytes]:
        """Every key the batch names (a scan: its start), in order: what it is routed by."""
        return [op.key for op in self.ops]

    def write_keys(self) -> list[bytes]:
        return [op.key for op in self.ops if op.writes]

    def to_wire(self) -> dict:
        return {"h": self.header.to_wire(), "ops": [[op.kind, op.to_wire()] for op in self.ops]}

    @classmethod
    def from_wire(cls, obj: Any) -> "BatchRequest":
        if not isinstance(obj, dict) or not isinstance(obj.get("ops"), list):
            raise CommandError("a batch must be a map with a header 'h' and a list 'ops'")
        header = Header.from_wire(obj.get("h", {}))
        ops = []
        for item in obj["ops"]:
            if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], dict):
                raise CommandError("a batch op must be [kind, args]")
            cls_ = OPS.get(item[0]) if isinstance(item[0], str) else None   # a list or map is unhashable
            if cls_ is None:
                raise CommandError("unknown batch op %r" % (item[0],))
            ops.append(cls_.from_wire(item[1]))
        request = cls(header, tuple(ops))
        request.validate()
        return request

    def validate_for_send(self) -> None:
        """`validate` for a sender: a batch that breaks the rules is the caller's bug (ValueError)."""
        try:
            self.validate()
        except CommandError as exc:
            raise ValueError(str(exc)) from None

    def validate(self) -> None:
        """CommandError unless the batch keeps the rules in the module docstring."""
        if not self.ops:
            raise CommandError("a batch has no ops")
        if len(self.ops) > constants.batch_ops_max:
            raise CommandError("a batch of %d ops exceeds batch_ops_max=%d" % (len(self.ops), constants.batch_ops_max))
        if len({op.writes for op in self.ops}) > 1:
            raise CommandError("a batch either reads or writes; this one does both")
        if self.locking and not all(isinstance(op, GetForUpdate) for op in self.ops):
            raise CommandError("a locking read (get_for_update) is alone in its batch")
        if self.writes and len(set(self.write_keys())) != len(self.ops):
            raise CommandError("a write batch names a key more than once")
        for op in self.ops:
            if not op.key and not isinstance(op, Scan):
                raise CommandError("keys must not be empty")
        header = self.header
        if header.consistency != STRONG:
            if self.writes or self.locking:
                raise CommandError("a %s batch only reads: writes and locking reads are strong" % header.consistency)
            if header.consistency == EXACT and header.read_ts is None:
                raise CommandError("an exact read names its read_ts")
            if header.consistency == BOUNDED_STALENESS and header.read_ts is None and header.min_ts is None:
                raise CommandError("a bounded_staleness read names its min_ts (or a negotiated read_ts)")


def is_follower_read(op: str, args: Any) -> bool:
    """Whether a command is a follower read (an `exact` or `bounded_staleness` batch), which any
    replica may serve, not only the leader."""
    if op != BATCH_OP or not isinstance(args, dict) or not isinstance(args.get("h"), dict):
        return False
    return args["h"].get("consistency", STRONG) != STRONG


def writes_nothing(op: str, args: Any) -> bool:
    """Whether a command (a one-op command or a batch) only reads, so that a lost answer may be
    asked again without doubt: a read changes nothing."""
    if op == BATCH_OP:
        ops = args.get("ops") if isinstance(args, dict) else None
        return isinstance(ops, list) and all(isinstance(o, (list, tuple)) and o and o[0] in ("get", "scan",
                                                                                          "get_for_update")
                                             for o in ops)
    return op in ("get", "scan")


TRACE_FIELDS = ("served_by", "rounds", "quorum_rtt_ms", "range_id", "ms", "closed_ts")   # how an answer was served, not what it says


def verdict(result: Any) -> Any:
    """An answer without its trace fields: what two answers to one command id must agree on."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k not in TRACE_FIELDS}
    return result


def response_op(result: dict, i: int = 0) -> dict:
    """The answer to a batch's i-th op, with the batch's `ts` (a one-op call's answer)."""
    return {"ts": result["ts"], **result["responses"][i]}
