"""The KV interface of the SQL engine: one Protocol, `KV`, naming every call the engine makes
on its store, with the contract each call keeps.

Why one explicit interface: the engine (sql/execute.py, writes.py, catalog.py, virtual.py)
runs unchanged over a node (`sql.gateway.NodeKV`, later the router's KV) and over the in-memory
`sql.memkv.MemKV` of the unit tests; what the unit tests prove holds on a node only if both keep
the same contract. tests/test_kv_contract.py runs one suite of checks (tests/kv_contract.py)
against both and shows it catches a broken MemKV.

Versions: until transactions make a statement atomic, a statement that reads a row and then
writes it, or that takes back a row it wrote after a later write failed, must act on exactly the
version it read or wrote - never on one another client wrote meanwhile, or that client's
acknowledged write is lost. A version is the commit timestamp the store gave the write, unique
per key and growing with every write of the key (a delete too), so it tells two writes apart
even when the second put back the very bytes of the first (a compare by value cannot).

Below the Protocol, what its implementations share so that they refuse and stop alike: the
argument checks (`check_key`, `check_value`, `check_writes`, `check_scan_limit`),
`write_each`, a `write_if_many` for a KV that writes one key at a time, and `record_step`,
how a traced call is added to its statement's trace. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict

from raftstore import constants
from raftstore.errors import UnavailableError

Version = tuple[int, int]
"""A commit timestamp (wall_ns, logical): unique per key, ordered like time."""

Write = tuple[bytes, Version | None, bytes | None]
"""One conditioned write: (key, if_version, value); value None deletes."""


class ReadRestart(Exception):
    """The statement's reads must start again at `ts`: a read at the statement's timestamp found
    a version above it that may have been written before the statement began, by a node whose
    clock runs ahead (within the max clock offset). The gateway runs the statement again there,
    when none of its writes applied (raftstore.server.nodekv; sql.gateway)."""

    def __init__(self, ts: Version) -> None:
        super().__init__("read restarted at %s (a version within the read's uncertainty interval)" % (ts,))
        self.ts = ts


@dataclass(frozen=True)
class Locked:
    """A `get_for_update`'s answer: the key's live (value, version), None if it has none, and
    the token of the latch held for the write that follows (None: the store holds no latch)."""

    found: tuple[bytes, Version] | None
    lock: bytes | None = None

    @property
    def version(self) -> Version | None:
        return self.found[1] if self.found is not None else None


@dataclass(frozen=True)
class WriteResult:
    """The answer to one conditioned write.

    `swapped`: the write applied; `version` is then the version it made. Not swapped and no
    `error`: the condition did not hold, and `current` is the key's live (value, version) now
    (None if it has no live value) - enough to decide again without reading. `error`: no
    answer; a raftstore error whose `ambiguous` says whether the write may have applied.
    """

    swapped: bool
    version: Version | None = None
    current: tuple[bytes, Version] | None = None
    error: Exception | None = None

    @property
    def maybe_applied(self) -> bool:
        """The write applied, or may have: it must be counted among the statement's writes."""
        return self.swapped or (self.error is not None and bool(getattr(self.error, "ambiguous", True)))


class ReplicaInfo(TypedDict):
    node_id: int
    region: str


class RangeInfo(TypedDict):
    """One range as `KV.ranges_for` shows it: span [start, end) (end None: keyspace end)."""

    range_id: int
    start: bytes
    end: bytes | None
    replicas: list[ReplicaInfo]
    leader: ReplicaInfo | None    # the leaseholder (before any lease: the Raft leader)
    lease_seq: int | None         # its lease's sequence number (None: no lease yet)
    home: str | None              # its home region: its zone's (a table's LOCALITY), else the primary region


class RegionInfo(TypedDict):
    region: str
    node_id: int
    up: bool


class ConsistencyResult(TypedDict, total=False):
    """One range's check (raftstore.kvserver.consistency): `status` is "consistent",
    "inconsistent" or "incomplete"; `detail` says why; `differing` lists the odd replicas."""

    range_id: int
    start: bytes
    end: bytes | None
    index: int | None
    status: str
    detail: str
    differing: list[int]
    replicas: list


CONSISTENCY_STATUSES = ("consistent", "inconsistent", "incomplete")


class TraceOp(TypedDict):
    """One range operation of a traced statement (`KV.begin_trace`): the part of one KV call
    that one range answered. Parts with the same `step` were sent together and ran
    concurrently; a step starts only after the one before it answered (steps count from 1)."""

    step: int
    kind: str                      # one of TRACE_KINDS
    keys: list[bytes]              # get / write: the part's keys, as sent; scan: [where the page started]
    end: bytes | None              # scan: where the page stopped ([keys[0], end), None: keyspace end); else None
    range_id: int | None
    served_by: int | None          # node id of the range's leader that answered; None: no node (in memory)
    rounds: int                    # consensus rounds that leader made for it (0: an answer it had saved)
    quorum_rtt_ms: float | None    # the least round trip one such round takes from that leader; None: not measured yet
    leader_rtt_ms: float | None    # round trip from this gateway to `served_by`, 0 when it is this node; None: not measured
    ms: float                      # the part's time, from send to answer
    follower: bool                 # served by a replica from what its leaseholder closed (a follower read)


TRACE_KINDS = ("get", "scan", "write")


class KV(Protocol):
    """The blocking KV the SQL engine runs on (one statement at a time per instance).

    Keys and values are `bytes`; a key is non-empty. A value may be empty: ``b""`` is a live
    value, distinct from an absent key. Returned bytes are the caller's. Spans are
    ``[start, end)``; ``end`` None reaches the end of the keyspace. Every read sees every write
    that was acknowledged before it was sent (linearizable on a node).

    Errors (raftstore.errors), the operating errors a call may raise or, for the conditioned
    writes, carry in `WriteResult.error`: `UnavailableError` - nothing was done (no quorum, no
    leader reachable); it may be sent again. `AmbiguousCommitError` (``ambiguous``) - a write
    may or may not have applied. `TooLargeError` - a write whose key and values exceed
    `raftstore.constants.command_bytes_max` is refused before anything is sent; nothing
    applied. A key or value that is not bytes, an empty key, or a scan limit outside
    1..`constants.scan_rows_max` is a caller's bug: TypeError / ValueError, raised before
    anything is sent.
    """

    def get(self, key: bytes) -> bytes | None:
        """The key's live value, None if it has none (never written, or deleted)."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """`get` of every key (sent together where the store can), answers in the order given.
        Raises the error of the first key that failed."""
        ...

    def get_version(self, key: bytes) -> tuple[bytes, Version] | None:
        """The live value and its version, None if the key has no live value."""
        ...

    def scan(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """The live (key, value) pairs with start <= key < end, ascending by key, the first
        `limit` (1..scan_rows_max) of them; fewer only when the span holds fewer. Crosses range
        boundaries: the caller never sees how the span is cut."""
        ...

    def scan_versions(self, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes, Version]]:
        """`scan` with each pair's version: (key, value, version)."""
        ...

    def put(self, key: bytes, value: bytes) -> None:
        """Write `value`: a new version of the key, above every earlier one."""
        ...

    def delete(self, key: bytes) -> bool:
        """Delete the key's live value (none is fine): a tombstone, itself a new version above
        every earlier one, so a later write's version is higher still. True if there was a live
        value (decided with the delete)."""
        ...

    def set_fields(self, key: bytes, width: int, fields: Sequence[tuple[int, object]]) -> bool:
        """Where the key has a live value - a msgpack array of exactly `width` elements (a row,
        sql/rowcodec.py) - replace the elements at the positions `fields` names ((position,
        msgpack-able scalar) pairs, positions distinct and below `width`) and write the result
        as a new version; where it has none, write nothing. One write, decided where the key's
        writes are decided, with no read before it. True if there was a live value. A result
        whose key and value exceed command_bytes_max raises TooLargeError, writing nothing; a
        live value that is not such an array raises ValueError."""
        ...

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        """Write `new` only if the live value equals `expected` (None: the key has no live
        value), decided atomically with the write. True if it wrote."""
        ...

    def write_if(self, key: bytes, if_version: Version | None, value: bytes | None) -> WriteResult:
        """Write `value` (None: delete) only if the key's newest version is exactly
        `if_version` - a delete's version counts too - or, with `if_version` None, only if the
        key has no live value; decided atomically with the write. Swapped: `version` is the
        version written. Not swapped: `current` is the live (value, version) now, or None.
        Never raises an operating error: a write with no answer comes back with `error`."""
        ...

    def write_if_many(self, writes: Sequence[Write], *, stop_after_failure: bool = True,
                      lock: bytes | None = None, all_or_nothing: bool = False) -> list[WriteResult]:
        """`write_if` of every (key, if_version, value), results in the order given. The keys
        must be distinct: the writes may be sent together and apply in any order. A condition
        that did not hold is an answer, not a failure. With `stop_after_failure`, writes not yet
        sent after one came back with an `error` are not sent; their results carry an
        `UnavailableError` saying so (not ambiguous). Without it, every write is tried. `lock`:
        the token of a `get_for_update` of these keys, whose latches the writes then use.

        `all_or_nothing`: the writes that fall in one range apply together or not at all (up to
        WRITE_BATCH_MAX of them within half a replicated command's bytes: one batch): if one's
        condition does not hold, none of that batch is written, and each of its writes answers
        not swapped with its key's `current` - for a write whose own condition held, still as
        it was conditioned (`held_unwritten`). Without it, each write stands alone."""
        ...

    def get_for_update(self, key: bytes) -> Locked:
        """A locking read for a write that follows: the key's live value and version, read where
        the key's writes are evaluated without a consensus round, and a `lock` token holding
        the key for a `write_if_many` or `confirm` naming it (for a short while; then it is
        given back by itself). Not a linearizable read on its own: only the condition of the
        write that follows, decided at apply, makes the pair safe - so act on it only through
        `write_if_many` or `confirm` on its version."""
        ...

    def confirm(self, key: bytes, if_version: Version | None, *, lock: bytes | None = None) -> WriteResult:
        """Write nothing, on `write_if`'s condition, decided in log order like a write: swapped
        means the key is still at `if_version` (None: still has no live value) - what a
        statement that read the key by `get_for_update` and wrote nothing (no row matched, or
        nothing changed) must know before it answers. Not swapped: `current` is the key's
        live (value, version) now. Never raises an operating error: see `write_if`."""
        ...

    def ranges_for(self, start: bytes, end: bytes | None) -> list[RangeInfo]:
        """The ranges overlapping [start, end), in key order, each adjacent pair meeting: their
        span, replicas and leader (None while it has none), as this gateway knows them."""
        ...

    def regions(self) -> list[RegionInfo]:
        """Every node of the cluster, ascending by node id: its region and whether it is up."""
        ...

    def now_ns(self) -> int:
        """The gateway's clock (its HLC's wall time): what AS OF SYSTEM TIME is relative to."""
        ...

    def follower_read(self, spec, spans: list[tuple[bytes, bytes | None]]) -> None:
        """The current statement's reads are follower reads as `spec` (sql.asof.ReadSpec) says,
        all at one timestamp: exact (at spec.ts) or bounded staleness (the newest timestamp
        the nearest replicas of `spans` have closed, at least spec.min_ts; else the latest)."""
        ...

    def check_consistency(self, start: bytes, end: bytes | None) -> list[ConsistencyResult]:
        """Check that the replicas of every range overlapping [start, end) hold the same data:
        one result per range, in key order, with one of CONSISTENCY_STATUSES."""
        ...

    def begin_trace(self) -> None:
        """Record the range operations of the calls that follow (`TraceOp`: which range, which
        leader, its consensus rounds and time), until `end_trace`: what EXPLAIN ANALYZE shows.
        Only reads and writes are recorded (not `ranges_for`, `regions`, `check_consistency`),
        and only parts that committed. A begin while recording starts over."""
        ...

    def end_trace(self) -> list[TraceOp]:
        """Stop recording: the operations recorded since `begin_trace`, in the order issued
        (the caller's list); [] when nothing was being recorded."""
        ...


WRITE_BATCH_MAX = 64
"""Writes of one `write_if_many(all_or_nothing=True)` in one range that apply together (one
batch; a node sends a statement's batches one after another, so a larger statement's rows
become visible batch by batch, and a failure takes back the batches before it)."""


def held_unwritten(if_version: Version | None, result: WriteResult) -> bool:
    """Whether a write that did not swap found its own condition true (its key still at
    `if_version`, or with no live value for None): with `all_or_nothing`, another write of its
    batch lost, so it was not written."""
    if result.swapped or result.error is not None:
        return False
    if if_version is None:
        return result.current is None
    return result.current is not None and tuple(result.current[1]) == tuple(if_version)


def check_key(key: object, allow_empty: bool = False) -> None:
    """TypeError unless `key` is bytes; ValueError if it is empty (unless `allow_empty`)."""
    if not isinstance(key, bytes):
        raise TypeError(f"keys are bytes, got {type(key).__name__}")
    if not key and not allow_empty:
        raise ValueError("keys must not be empty")


def check_value(value: object) -> None:
    """TypeError unless `value` is bytes."""
    if not isinstance(value, bytes):
        raise TypeError(f"values are bytes, got {type(value).__name__}")


def check_writes(writes: Sequence[Write]) -> None:
    """`check_key` and `check_value` of every (key, if_version, value) of a `write_if_many`."""
    for key, _, value in writes:
        check_key(key)
        if value is not None:
            check_value(value)


def check_fields(width: object, fields: object) -> None:
    """ValueError unless `set_fields`' width and fields are what the contract allows."""
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= constants.set_fields_width_max:
        raise ValueError(f"set_fields' width must be 1..{constants.set_fields_width_max}, got {width!r}")
    positions = [p for p, _ in fields] if isinstance(fields, Sequence) and all(
        isinstance(f, tuple) and len(f) == 2 for f in fields) else None
    if not positions or len(set(positions)) != len(positions) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p < width for p in positions):
        raise ValueError(f"set_fields' fields must be distinct (position, value) pairs below {width}, got {fields!r}")


def check_scan_limit(limit: object) -> None:
    """ValueError unless `limit` is a scan limit the contract allows (1..scan_rows_max)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= constants.scan_rows_max:
        raise ValueError(f"scan limit must be 1..{constants.scan_rows_max}, got {limit!r}")


def write_each(write_if: Callable[[bytes, Version | None, bytes | None], WriteResult], writes: Sequence[Write], *,
               stop_after_failure: bool = True) -> list[WriteResult]:
    """`KV.write_if_many` for a KV that writes one key at a time (the in-memory KV, and test
    KVs wrapping it): `write_if` of each write in turn, stopping as that contract says."""
    results: list[WriteResult] = []
    for key, version, value in writes:
        result = write_if(key, version, value)
        results.append(result)
        if result.error is not None and stop_after_failure:
            break
    return results + not_sent(len(writes) - len(results))


def not_sent(count: int) -> list[WriteResult]:
    """The results of `count` writes left unsent after an earlier write failed."""
    error = UnavailableError("not sent: an earlier write of this statement failed")
    return [WriteResult(False, error=error)] * count


def record_step(trace: list[TraceOp] | None, parts: Sequence[dict]) -> None:
    """Add the parts of one KV call (TraceOp without its `step`), sent together, to `trace` as
    its next step; nothing when not recording (`trace` None) or no part committed."""
    if trace is None or not parts:
        return
    step = trace[-1]["step"] + 1 if trace else 1
    trace.extend(TraceOp(step=step, **part) for part in parts)   # type: ignore[typeddict-item]
