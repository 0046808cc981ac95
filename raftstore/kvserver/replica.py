"""A range's replica: the state machine a RaftGroup applies committed commands to.

Every replica applies the same commands in the same order and must reach the same state, so
everything here is a function of the command, the MVCC data and the replica's descriptor: no
clock, no randomness. The commit timestamp of a write is `max(proposed ts, newest version of the
key + 1 logical)`, so writes to a key get increasing timestamps in log order even when
proposers' clocks disagree. Reads go through the log too (linearizable: a read applies after
every write committed before it); followers compute the same answer, which is what a forwarded
read returns.

A command for a key outside the replica's current span is rejected with RangeKeyMismatch (the
same verdict on every replica, since the span changes only by a split in the same log): the
router refreshes its view and retries on the right range. A split is a command in the parent's
log; applying it narrows the parent's descriptor and writes the new range's descriptor in the
same SQLite transaction, then tells the Store, which starts the new range's group.

Each apply is one SQLite transaction holding the data, the applied index and the command's
outcome under its id (MVCCStore.apply), so replay applies each index once and a retried command
id gets its first answer. An outcome is stored with the key its command touched (`_outcome_key`),
and lives in exactly one range: a split hands the outcomes of the keys that move to the new
range and the parent forgets them (MVCCStore.split_command_results), because a retry is routed
by its key. Outcomes are forgotten by one rule, at the same log index on every replica: at
every dedup_forget_every_entries-th index, those older than dedup_window_entries entries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import msgpack

from raftstore import constants
from raftstore.kvserver.ranges import (FIRST_DATA_RANGE_ID, META_COUNTER_KEY, META_DESC_PREFIX, META_RANGE_ID, MISMATCH,
                                       RANGE_KEY_MISMATCH, RangeDescriptor, local_desc_key, meta_desc_key)
from raftstore.kvserver.batch import (BATCH_OP, BatchRequest, Check, CompareAndSwap, ConditionalPut, Delete, Get,
                                      Header, Increment, Put, Scan, SetFields, decode_int, response_op)
from raftstore.kvserver.gc import check_read, decode_threshold, encode_threshold, gc_key
from raftstore.kvserver.lease import NOT_LEASEHOLDER, Lease, lease_key
from raftstore.raft.commands import Command, CommandError
from raftstore.raft.failstop import FailStop
from raftstore.raft.group import SnapshotRefused
from raftstore.storage.mvcc import TIMESTAMP_PART_MAX, MVCCStore, discard_staged

RAW_PREFIX = b"k"          # raw key-value keyspace (raftstore.kv); SQL rows live under b"t"
RAW_END = b"l"             # first key after the raw keyspace
LATEST = (TIMESTAMP_PART_MAX, TIMESTAMP_PART_MAX)
_LEN = struct.Struct("<I")


class ReadUncertain(Exception):
    """A read at a timestamp found a version above it that may have been written before the read
    began (within the clock offset): it must restart at or above `ts`."""

    def __init__(self, ts: tuple[int, int]) -> None:
        super().__init__("a version at %s is within the read's uncertainty interval" % (ts,))
        self.ts = ts


@dataclass
class StagedSnapshot:
    """A received snapshot decoded into a staging file, waiting to be switched in."""
    desc: RangeDescriptor
    path: str
    index: int
    rows: int
    basis: int | None = None    # applied index the staged difference is against (mvcc.diff_staged)
    lease: Any = None           # the range's lease in the snapshot (RangeReplica._read_head)
    gc_threshold: Any = None    # its GC threshold (None: a snapshot written before GC)


def _bytes(args: dict, name: str, *, optional: bool = False) -> bytes | None:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, bytes):
        raise CommandError("argument %r must be bytes" % name)
    return value


def _ts(args: dict, name: str = "ts") -> tuple[int, int]:
    ts = args.get(name)
    if (not isinstance(ts, (list, tuple)) or len(ts) != 2
            or not all(isinstance(x, int) and 0 <= x <= TIMESTAMP_PART_MAX for x in ts)):
        raise CommandError("argument %r must be [wall_ns, logical]" % name)
    return (ts[0], ts[1])


def desc_ts(desc: RangeDescriptor) -> tuple[int, int]:
    """Versions of a descriptor are ordered by generation, whatever order they are written in."""
    return (desc.generation, 0)


def _as_found(found: tuple | None) -> dict:
    """A conditional op's report of its key: the live value and the newest version (nil, nil if
    never written)."""
    return {"value": found[0] if found else None, "version": list(found[1]) if found else None}


def read_local_descriptor(store: MVCCStore, range_id: int) -> RangeDescriptor | None:
    raw = store.get_value(local_desc_key(range_id), LATEST)
    return RangeDescriptor.decode(raw) if raw is not None else None


class RangeReplica:
    """StateMachine (raftstore.raft.group) of one range over the node's shared MVCCStore.

    `desc` is None for an uninitialized replica (created to receive a snapshot): it applies
    nothing until one arrives. `on_split(left, right)` is called after a split applied here;
    `can_install(desc)` decides whether a snapshot of `desc` may replace local data now;
    `on_checksum(range_id, index, desc)` is called inside the apply of a consistency check, with
    the index applied, to pin the state it must checksum (raftstore.kvserver.consistency).
    """

    descs_changed = 0   # descriptor changes of every replica in the process (Store.descriptor_for's index)

    @property
    def desc(self) -> RangeDescriptor | None:
        return self._desc

    @desc.setter
    def desc(self, desc: RangeDescriptor | None) -> None:
        self._desc = desc
        RangeReplica.descs_changed += 1

    def __init__(self, store: MVCCStore, range_id: int, *,
                 on_split: Callable[[RangeDescriptor, RangeDescriptor], None] | None = None,
                 can_install: Callable[[RangeDescriptor], bool] | None = None,
                 on_write: Callable[[int, int], None] | None = None,
                 on_checksum: Callable[[int, int, RangeDescriptor], None] | None = None,
                 on_lease: Callable[[int, Lease], None] | None = None,
                 on_write_ts: Callable[[int, tuple[int, int]], None] | None = None) -> None:
        self.store, self.range_id = store, range_id
        self.desc = read_local_descriptor(store, range_id)
        raw = store.get_value(lease_key(range_id), LATEST)
        self.lease: Lease | None = Lease.from_wire(msgpack.unpackb(raw, raw=False)) if raw is not None else None
        self.on_lease = on_lease
        self.on_write_ts = on_write_ts
        # The highest commit timestamp this replica applied since the process started: a
        # leaseholder reads no lower, so it sees every write applied here, an earlier
        # holder's too (whose clock may run ahead of ours).
        self.max_write_ts: tuple[int, int] = (0, 0)
        # The highest closed timestamp this replica adopted (kvserver.closedts): from a write of
        # its leaseholder's applied under its lease, or kept from the side transport. Not
        # persisted: a restarted replica starts from nothing, which only makes it serve less.
        self.closed: tuple[int, int] = (0, 0)
        # Reads below this are refused: a GC command removed what they would see (kvserver.gc).
        self.gc_threshold: tuple[int, int] = decode_threshold(store.get_value(gc_key(range_id), LATEST))
        self.on_split = on_split
        self.can_install = can_install
        self.on_write = on_write
        self.on_checksum = on_checksum
        self.evaluation_misses = 0   # conditions the leader evaluated as holding that apply found false

    # --- StateMachine ------------------------------------------------------------------------
    def batch(self):
        """One SQLite transaction around a tick's applies (see RaftGroup)."""
        return self.store.batch()

    def applied_index(self) -> int:
        return self.store.applied_index(self.range_id)

    def apply(self, index: int, command: Command) -> Any:
        if index % constants.dedup_forget_every_entries == 0 and index > constants.dedup_window_entries:
            # Deterministic (by index alone), so every replica keeps the same outcomes.
            self.store.forget_command_results(self.range_id, index - constants.dedup_window_entries)
        if self.desc is None:
            raise self._mismatch("replica of r%d is not initialized" % self.range_id)
        args = command.args
        if not isinstance(args, dict):
            raise CommandError("command args must be a map")
        handler = self.HANDLERS.get(command.op)
        if handler is None:
            raise CommandError("unknown command op %r" % command.op)
        seq = args.get("lease_seq")
        if seq is not None and command.op != "lease":
            current = self.lease.seq if self.lease is not None else 0
            holder = args.get("lease_holder")
            if seq != current or (holder is not None and (self.lease is None or holder != self.lease.holder)):
                # Evaluated under a lease that has moved since: it writes nothing, here and on
                # every replica; its outcome is not saved, so the proposer may send its id again.
                raise CommandError("%s: evaluated under lease %r (n%s) of r%d, whose lease is now %d (n%s)"
                                   % (NOT_LEASEHOLDER, seq, holder, self.range_id, current,
                                      self.lease.holder if self.lease is not None else None), code=NOT_LEASEHOLDER,
                                   details={"holder": self.lease.holder if self.lease is not None else None})
            if args.get("lease_until") is not None:
                self._extend_lease(_ts(args, "lease_until"))
            if args.get("closed") is not None:
                # Its leaseholder closed this under the range's lease: no later entry writes at
                # or below it (the write itself is above it).
                self.closed = max(self.closed, _ts(args, "closed"))
        return handler(self, index, command, args)

    def _extend_lease(self, until: tuple[int, int]) -> None:
        """A write of the leaseholder's that also extends the lease it was evaluated under (so a
        range in use needs no lease command of its own): the same rule as an extension in the
        log, decided here, before the write, the same on every replica."""
        if self.lease is None or until <= self.lease.expiration:
            return
        extended = Lease(self.lease.seq, self.lease.holder, self.lease.start, until)
        self.store.write_local([(lease_key(self.range_id), (0, 0), msgpack.packb(extended.to_wire()))])
        self.lease = extended
        if self.on_lease is not None:
            self.on_lease(self.range_id, extended)

    def record_failed(self, index: int, command: Command | None, error: str | dict) -> None:
        if command is None or (isinstance(error, dict) and error.get("code") == NOT_LEASEHOLDER):
            self.store.mark_applied(self.range_id, index, continuous=True)
        else:
            self.store.apply(self.range_id, index, [], continuous=True, command_id=command.id,
                             result=msgpack.packb([False, error], use_bin_type=True),
                             command_key=self._outcome_key(command))

    def _outcome_key(self, command: Command) -> bytes | None:
        """The key an outcome is filed under, which decides the range it goes to at a split: the
        key (a scan: the start) the command names, which is what its retry is routed by; for a
        command that names none (a split, a malformed command), the range's start, which stays
        with this range."""
        args = command.args
        if isinstance(args, dict) and isinstance(args.get("ops"), list) and args["ops"]:
            first = args["ops"][0]   # a batch: its first key (its retry is routed by its keys)
            args = first[1] if isinstance(first, (list, tuple)) and len(first) == 2 else None
        if isinstance(args, dict):
            for name in ("key", "start"):
                if isinstance(args.get(name), bytes):
                    return args[name]
        return self.desc.start if self.desc is not None else None

    def result_of(self, command_id: bytes) -> tuple[bool, Any]:
        found = self.store.command_result(self.range_id, command_id)
        if found is None or found[1] is None:
            return (False, None)
        return (True, tuple(msgpack.unpackb(found[1], raw=False)))

    def write_snapshot(self, f: BinaryIO, index: int) -> None:
        self.snapshot_writer(index)(f)

    def snapshot_writer(self, index: int) -> Callable[[BinaryIO], None]:
        """Pin the replica's state now (on the loop, with every apply up to `index` committed)
        and return a function that writes exactly that state to a file: it reads a SQLite
        read snapshot on a connection of its own, so it may run on another thread while the
        loop keeps applying. Format: descriptor, msgpack chunks of rows, a 0 length, then
        msgpack chunks of the range's command outcomes (so a replica that installs it answers
        retries of commands applied before the snapshot), a 0 length. The range's lease follows the
        descriptor, as a map {"lease": ...} (a snapshot written before leases has none there)."""
        assert self.desc is not None, "an uninitialized replica has no snapshot to give"
        body = self.desc.encode()
        lease = msgpack.packb({"lease": self.lease.to_wire() if self.lease is not None else None,
                               "gc": list(self.gc_threshold)}, use_bin_type=True)
        export = self.store.export_span(self.desc.start, self.desc.end, constants.snapshot_chunk_rows,
                                        range_id=self.range_id)
        if export.applied_index != index:
            # The stored state must be exactly at the index the log is compacted to: a state
            # behind it would be written as if it were there, and the hole would spread to every
            # follower that installs it. Continuity (RaftGroup) makes this unreachable.
            export.close()
            raise FailStop("r%d: a snapshot at index %d asked for, but the stored state is at index %d"
                           % (self.range_id, index, export.applied_index))

        def write(f: BinaryIO) -> None:
            with export:
                f.write(_LEN.pack(len(body)) + body)
                f.write(_LEN.pack(len(lease)) + lease)
                for chunk in export:
                    packed = msgpack.packb(chunk, use_bin_type=True)
                    f.write(_LEN.pack(len(packed)) + packed)
                f.write(_LEN.pack(0))
                for chunk in export.results():
                    packed = msgpack.packb(chunk, use_bin_type=True)
                    f.write(_LEN.pack(len(packed)) + packed)
                f.write(_LEN.pack(0))
        return write

    _NO_LEASE_RECORD = object()   # a snapshot written before leases: the replica keeps its own

    def _read_head(self, f: BinaryIO) -> tuple[RangeDescriptor, Any, list | None]:
        """The descriptor, the lease (None: the range had none; _NO_LEASE_RECORD: the snapshot
        predates leases) and, for a snapshot without a lease record, its first chunk of rows
        (None: no rows), already read. The GC threshold it carries goes to `_head_gc` (None: a
        snapshot written before GC)."""
        self._head_gc = None
        (n,) = _LEN.unpack(f.read(_LEN.size))
        desc = RangeDescriptor.decode(f.read(n))
        if desc.range_id != self.range_id:
            raise SnapshotRefused("snapshot of r%d sent to r%d" % (desc.range_id, self.range_id))
        (m,) = _LEN.unpack(f.read(_LEN.size))
        if m == 0:
            return desc, self._NO_LEASE_RECORD, None
        record = msgpack.unpackb(f.read(m), raw=False)
        if isinstance(record, dict):
            wire = record.get("lease")
            gc = record.get("gc")
            if gc is not None:
                if not (isinstance(gc, list) and len(gc) == 2 and all(type(x) is int and x >= 0 for x in gc)):
                    raise SnapshotRefused("snapshot of r%d carries a malformed GC threshold" % self.range_id)
                self._head_gc = (gc[0], gc[1])
            try:
                return desc, Lease.from_wire(wire) if wire is not None else None, []
            except CommandError as exc:
                raise SnapshotRefused("snapshot of r%d carries a malformed lease: %s" % (self.range_id, exc)) from None
        return desc, self._NO_LEASE_RECORD, [tuple(row) for row in record]

    @staticmethod
    def _chunks(f: BinaryIO, first: list | None = None):
        if first is None:
            return   # the rows' end was read with the head
        if first:
            yield first
        while True:
            (m,) = _LEN.unpack(f.read(_LEN.size))
            if m == 0:
                return
            yield [tuple(row) for row in msgpack.unpackb(f.read(m), raw=False)]

    def _lease_writes(self, lease: Any) -> list:
        if lease is self._NO_LEASE_RECORD or lease is None:
            return []
        return [(lease_key(self.range_id), (0, 0), msgpack.packb(lease.to_wire()))]

    def _gc_writes(self, threshold: Any) -> list:
        return [] if threshold is None else [(gc_key(self.range_id), (0, 0), encode_threshold(threshold))]

    def _take_gc(self, threshold: Any) -> None:
        if threshold is not None:
            self.gc_threshold = threshold

    def _take_lease(self, lease: Any) -> None:
        """A snapshot's lease becomes the replica's; the store hears of a changed one as of one
        applied from the log (its timestamp cache follows the lease it serves)."""
        if lease is not self._NO_LEASE_RECORD and lease is not None:
            changed = lease != self.lease
            self.lease = lease
            if changed and self.on_lease is not None:
                self.on_lease(self.range_id, lease)

    @classmethod
    def _results(cls, f: BinaryIO):
        """The command outcomes after the rows, or None for a snapshot written before they
        were part of the format (it ends after the rows)."""
        head = f.read(_LEN.size)
        if not head:
            return None
        (m,) = _LEN.unpack(head)

        def chunks():
            n = m
            while n:
                yield [tuple(row) for row in msgpack.unpackb(f.read(n), raw=False)]
                (n,) = _LEN.unpack(f.read(_LEN.size))
        return chunks()

    def _check_install(self, desc: RangeDescriptor) -> None:
        if self.can_install is not None and not self.can_install(desc):
            raise SnapshotRefused("snapshot of %s overlaps a range this node still holds" % desc)

    def read_snapshot(self, f: BinaryIO, index: int) -> None:
        """Install a snapshot from a file in one step (a restart that finds a newer dump)."""
        desc, lease, first = self._read_head(f)
        self._check_install(desc)
        rows = [chunk for chunk in self._chunks(f, first)]   # the outcomes follow the rows in the file
        self.store.import_span(self.range_id, desc.start, desc.end, rows, index, 0,
                               extra_writes=[(local_desc_key(self.range_id), desc_ts(desc), desc.encode())]
                               + self._lease_writes(lease) + self._gc_writes(self._head_gc),
                               results=self._results(f))
        self.desc = desc
        self._take_lease(lease)
        self._take_gc(self._head_gc)

    # Installing a received snapshot in two steps, so the loop never imports a whole range:
    def stage_snapshot(self, f: BinaryIO, index: int) -> "StagedSnapshot":
        """Off the loop (any thread): decode and check the snapshot's rows into a staging file.
        Changes nothing the replica serves."""
        desc, lease, first = self._read_head(f)
        path = "%s.staging-r%d" % (self.store.path, self.range_id)
        rows = MVCCStore.stage_span(path, desc.start, desc.end, self._chunks(f, first),
                                    results=lambda: self._results(f))

        def sole_writer(scan) -> bool:   # no other local range's descriptor overlaps the span
            from raftstore.kvserver.ranges import LOCAL_DESC_PREFIX
            for _, raw in scan(LOCAL_DESC_PREFIX, LOCAL_DESC_PREFIX + b"\xff"):
                other = RangeDescriptor.decode(raw)
                if other.range_id != self.range_id and other.overlaps(desc.start, desc.end):
                    return False
            return True
        basis = self.store.diff_staged(path, self.range_id, desc.start, desc.end, sole_writer)
        return StagedSnapshot(desc, path, index, rows, basis, lease, self._head_gc)

    def check_staged(self, staged: "StagedSnapshot") -> None:
        """On the loop, before anything changes: SnapshotRefused if this node cannot take it now."""
        if staged.desc.range_id != self.range_id:
            raise SnapshotRefused("snapshot of r%d sent to r%d" % (staged.desc.range_id, self.range_id))
        self._check_install(staged.desc)

    def install_staged(self, staged: "StagedSnapshot", index: int) -> None:
        """On the loop: switch the range's data to the staged rows in one short transaction."""
        self.check_staged(staged)
        if staged.index != index:
            raise SnapshotRefused("staged snapshot is at index %d, not %d" % (staged.index, index))
        desc = staged.desc
        self.store.import_staged(self.range_id, desc.start, desc.end, staged.path, index, 0,
                                 extra_writes=[(local_desc_key(self.range_id), desc_ts(desc), desc.encode())]
                                 + self._lease_writes(staged.lease) + self._gc_writes(staged.gc_threshold),
                                 basis=staged.basis)
        self._take_lease(staged.lease)
        self._take_gc(staged.gc_threshold)
        self.desc = desc

    def discard_staged(self, staged: "StagedSnapshot") -> None:
        discard_staged(staged.path)

    # --- data operations -----------------------------------------------------------------------
    def _check_key(self, key: bytes) -> bytes:
        if not self.desc.contains(key):
            raise self._mismatch("key %r is outside %s" % (key, self.desc))
        return key

    # Client ops. Each is a batch (kvserver.batch) evaluated by `_apply_batch`; the one-op
    # commands below (put, delete, cas, put_if, get, scan) are the same thing for one key,
    # answered in the one-op shape (`response_op`).
    def _op_batch(self, index, command, args):
        request = BatchRequest.from_wire(args)
        if request.locking:
            raise CommandError("a locking read is answered by the range's leader, never replicated")
        if not request.writes:
            return self._read_batch(index, request)
        return self._write_batch(index, command, request, _ts(args), args.get("evaluated") is True)

    def _one(self, index, command, args, op, evaluated: bool = False) -> dict:
        request = BatchRequest(Header(), (op,))
        request.validate()
        if op.writes:
            return self._write_batch(index, command, request, _ts(args), evaluated, shape=response_op)
        return response_op(self._read_batch(index, request))

    def _op_put(self, index, command, args):
        return self._one(index, command, args, Put(_bytes(args, "key"), _bytes(args, "value")))

    def _op_delete(self, index, command, args):
        return self._one(index, command, args, Delete(_bytes(args, "key")))

    def _op_cas(self, index, command, args):
        return self._one(index, command, args, CompareAndSwap.from_wire(args), args.get("evaluated") is True)

    def _op_put_if(self, index, command, args):
        return self._one(index, command, args, ConditionalPut.from_wire(args), args.get("evaluated") is True)

    def _op_get(self, index, command, args):
        return self._one(index, command, args, Get(_bytes(args, "key")))

    def _op_scan(self, index, command, args):
        """Rows of `[start, end) ∩ span`, at most `limit`, and, in `versions`, each row's version
        (commit timestamp); `resume` (a byte limit stopped it) or `span_end` tells the router where
        to continue."""
        limit = args.get("limit")
        if not isinstance(limit, int) or not 0 < limit <= constants.scan_rows_max:
            raise CommandError("argument 'limit' must be an integer in 1..%d" % constants.scan_rows_max)
        start = _bytes(args, "start")
        if not self.desc.contains(start):
            raise self._mismatch("scan start %r is outside %s" % (start, self.desc))
        request = BatchRequest(Header(max_keys=limit), (Scan(start, _bytes(args, "end", optional=True)),))
        result = self._read_batch(index, request)
        return dict(response_op(result), span_end=result["span_end"])

    def condition_holds(self, op: str, args: dict) -> bool:
        """Whether a one-op `cas` or `put_if` would write against the state applied now."""
        cls = CompareAndSwap if op == "cas" else ConditionalPut
        return self.batch_holds(BatchRequest(Header(), (cls.from_wire(args),)))

    def batch_holds(self, request: BatchRequest) -> bool:
        """Whether every condition of a write batch holds against the state applied now: what
        the leader evaluates (kvserver.store.Store.evaluate_and_propose) and apply decides again.
        Raises CommandError for a key outside the span or an Increment of a non-integer."""
        for op in request.ops:
            self._check_key(op.key)
        return all(self._holds(op, self.store.get(op.key, LATEST)) for op in request.ops)

    @staticmethod
    def _holds(op, found: tuple | None) -> bool:
        """An op's condition against its key's newest version `found` ((value, version), None if
        never written)."""
        if isinstance(op, (ConditionalPut, Check)):
            if op.if_version is None:
                return found is None or found[0] is None
            return found is not None and found[1] == op.if_version
        if isinstance(op, CompareAndSwap):
            return (found[0] if found is not None else None) == op.expected
        if isinstance(op, Increment):
            decode_int(found[0] if found is not None else None)   # refuses a non-integer
        if isinstance(op, SetFields) and found is not None and found[0] is not None:
            op.apply_to(found[0])   # refuses a value that is not an array of its width
        return True

    def _write_batch(self, index: int, command: Command, request: BatchRequest, proposed: tuple[int, int],
                     evaluated: bool, shape: Callable[[dict], dict] = dict) -> dict:
        """All or nothing: if every condition holds, every op writes at one commit timestamp, the
        proposed one raised above the newest version of every key written (so a key's versions
        only grow, whatever a leader believed); else nothing is written and each op answers its
        key's live value and newest version. A leader that evaluated the conditions as holding
        (`evaluated`) and apply finding one false is an evaluation miss: the state changed
        between evaluation and apply (a leader change; under a stable leader, with latches,
        never). Counted the same on every replica, as it is decided by the log. The answer, saved
        with the command's outcome, is `shape(result)` (a one-op command's: `response_op`)."""
        for op in request.ops:
            self._check_key(op.key)
        found = [self.store.get(op.key, LATEST) for op in request.ops]
        held = [self._holds(op, f) for op, f in zip(request.ops, found)]
        newest = max((f[1] for f in found if f is not None), default=None)
        ts = proposed if newest is None or newest < proposed else (newest[0], newest[1] + 1)
        if not all(held):
            if evaluated:
                self.evaluation_misses += 1
            responses = [{"swapped": False, **_as_found(f)} for f in found]
            result = shape({"ts": list(ts), "ok": False, "responses": responses})
            self._finish(index, command, [], result)
            return result
        writes, responses = [], []
        for op, f in zip(request.ops, found):
            if isinstance(op, Put):
                writes.append((op.key, ts, op.value))
                responses.append({})
            elif isinstance(op, Delete):
                writes.append((op.key, ts, None))
                responses.append({"found": f is not None and f[0] is not None})
            elif isinstance(op, SetFields):
                live = f is not None and f[0] is not None
                if live:
                    writes.append((op.key, ts, op.apply_to(f[0])))
                responses.append({"found": live})
            elif isinstance(op, ConditionalPut):
                writes.append((op.key, ts, op.value))
                responses.append({"swapped": True})
            elif isinstance(op, CompareAndSwap):
                writes.append((op.key, ts, op.new))
                responses.append({"swapped": True})
            elif isinstance(op, Check):
                responses.append({"swapped": True, **_as_found(f)})
            else:
                value = decode_int(f[0] if f is not None else None) + op.delta
                if abs(value) > constants.increment_abs_max:
                    raise CommandError("increment of %r would leave the range of values an increment keeps" % op.key)
                writes.append((op.key, ts, str(value).encode()))
                responses.append({"value": value})
        result = shape({"ts": list(ts), "ok": True, "responses": responses})
        self._finish(index, command, writes, result)
        self.max_write_ts = max(self.max_write_ts, ts)
        if self.on_write_ts is not None:
            self.on_write_ts(self.range_id, ts)
        if self.on_write is not None:
            self.on_write(self.range_id, sum(len(k) + (len(v) if v else 0) for k, _, v in writes))
        return result

    def read_latest(self, key: bytes) -> dict:
        """A Get's answer from the state applied now: the live value (nil: none) and the key's
        newest version, a tombstone's too (`ts`; [0, 0] if never written)."""
        found = self.store.get(key, LATEST)
        return {"value": found[0] if found else None, "ts": list(found[1]) if found else [0, 0]}

    def _read_batch(self, index: int, request: BatchRequest) -> dict:
        """A read batch in the log (before leases, and a log written before them): the state
        applied at this index; reads save no outcome (a retry reads again)."""
        result = self.read_at(request, self.desc, self.store, LATEST)
        self.store.mark_applied(self.range_id, index, continuous=True)
        return result

    @staticmethod
    def read_checked(request: BatchRequest, desc: RangeDescriptor, reader, ts: tuple[int, int],
                     uncertain_to: tuple[int, int] | None = None) -> dict:
        """`read_at` inside the reader's snapshot, refused (CommandError, kvserver.gc.BELOW_GC)
        when `ts` is below the range's GC threshold as of that same snapshot."""
        found = reader.get(gc_key(desc.range_id), LATEST)
        check_read(desc.range_id, ts, decode_threshold(found[0] if found is not None else None))
        return RangeReplica.read_at(request, desc, reader, ts, uncertain_to)

    @staticmethod
    def read_at(request: BatchRequest, desc: RangeDescriptor, reader, ts: tuple[int, int],
                uncertain_to: tuple[int, int] | None = None) -> dict:
        """Gets and scans of `desc`'s span at `ts`, through `reader` (an MVCCStore or an
        MVCCReader inside its snapshot). The batch's scans share its header's key and byte
        limits; a scan stopped by one answers `resume`, the key to continue from (nil: it reached
        its end). Rows are taken until their keys' and values' bytes reach the byte limit: the
        row that reaches it is the last (CockroachDB's TargetBytes), so a scan always makes
        progress. With `uncertain_to`, a version of a key read, or in a span scanned, above `ts`
        and at or below `uncertain_to` raises ReadUncertain (the read must restart above it).
        The answer's `ts` is the newest version read."""
        keys_left, bytes_left = request.header.keys_limit(), request.header.bytes_limit()
        responses, newest = [], (0, 0)
        uncertain: tuple[int, int] | None = None
        for op in request.ops:
            if not desc.contains(op.key):
                raise CommandError("%s: key %r is outside %s" % (MISMATCH, op.key, desc), code=RANGE_KEY_MISMATCH,
                                   details={"descriptors": [desc.to_wire()]})
            if isinstance(op, Get):
                found = reader.get(op.key, uncertain_to or ts)
                if found is not None and found[1] > ts:
                    uncertain = max(uncertain or found[1], found[1])
                    continue
                got = {"value": found[0] if found else None, "ts": list(found[1]) if found else [0, 0]}
                newest = max(newest, tuple(got["ts"]))
                responses.append(got)
                continue
            stop = desc.end if op.end is None or (desc.end is not None and desc.end < op.end) else op.end
            rows = reader.scan(op.key, stop, ts, keys_left) if keys_left > 0 and bytes_left > 0 else []
            taken = 0
            for k, v, _ in rows:
                if bytes_left <= 0:
                    break
                bytes_left -= len(k) + len(v)
                taken += 1
            # Else the span held no more; a scan the batch's earlier scans left no bytes for is limited too.
            limited = taken < len(rows) or len(rows) == keys_left or bytes_left <= 0 and not rows
            rows = rows[:taken]
            keys_left -= taken
            resume = None
            if limited:
                resume = rows[-1][0] + b"\x00" if rows else op.key
                if stop is not None and resume >= stop:
                    resume = None
            if uncertain_to is not None:
                above = reader.newest_between(op.key, resume if resume is not None else stop, ts, uncertain_to)
                if above is not None:
                    uncertain = max(uncertain or above, above)
            newest = max([newest] + [r[2] for r in rows])
            responses.append({"rows": [[k, v] for k, v, _ in rows], "versions": [list(t) for _, _, t in rows],
                              "resume": resume})
        if uncertain is not None:
            raise ReadUncertain(uncertain)
        return {"ts": list(newest), "responses": responses, "span_end": desc.end}

    # --- consistency checks (raftstore.kvserver.consistency) ---------------------------------------------
    def _op_compute_checksum(self, index, command, args):
        """A consistency check at this index: the index is applied first (it writes nothing), then
        `on_checksum` pins exactly this state to hash. The checksum stays on this node."""
        self.store.mark_applied(self.range_id, index, continuous=True)
        if self.on_checksum is not None:
            self.on_checksum(self.range_id, index, self.desc)
        return {"index": index}

    # --- splits --------------------------------------------------------------------------------
    def _op_split(self, index, command, args):
        key = _bytes(args, "split_key")
        new_id = args.get("new_range_id")
        if self.range_id == META_RANGE_ID:
            raise CommandError("the meta range does not split")
        if args.get("generation") != self.desc.generation:
            raise self._mismatch("split of %s expected generation %r, found %d"
                                 % (self.desc, args.get("generation"), self.desc.generation))
        if not isinstance(new_id, int) or new_id <= FIRST_DATA_RANGE_ID:
            raise CommandError("argument 'new_range_id' must be an unused range id")
        if not self.desc.contains(key) or key == self.desc.start:
            raise CommandError("split key %r is not strictly inside %s" % (key, self.desc))
        left = RangeDescriptor(self.range_id, self.desc.start, key, self.desc.generation + 1, self.desc.replicas)
        right = RangeDescriptor(new_id, key, self.desc.end, 0, self.desc.replicas)
        writes = [(local_desc_key(left.range_id), desc_ts(left), left.encode())]
        existing = read_local_descriptor(self.store, new_id)
        if existing is None:
            writes.append((local_desc_key(right.range_id), desc_ts(right), right.encode()))
            if self.lease is not None:
                # The new range starts under the parent's lease (seq 1, same holder, start and
                # expiration): no other node may serve its keys before the parent's lease ends,
                # and its holder keeps what it served (Store._on_split copies the timestamp cache).
                inherited = Lease(1, self.lease.holder, self.lease.start, self.lease.expiration)
                writes.append((lease_key(new_id), (0, 0), msgpack.packb(inherited.to_wire())))
        # The outcomes of the commands whose keys move go with them (copied only if the new
        # range has no state yet: one that got a snapshot first has them from its own leader).
        self.store.split_command_results(self.range_id, new_id, key, self.desc.end, copy=existing is None)
        result = {"left": left.to_wire(), "right": right.to_wire()}
        self._finish(index, command, writes, result)
        self.desc = left
        if self.on_split is not None:
            self.on_split(left, right)
        return result

    # --- leases (raftstore.kvserver.lease) ---------------------------------------------------------
    def _op_lease(self, index, command, args):
        """A new lease, a transfer or an extension, evaluated by the node asking for it: taken
        only if the range's lease is still the one it names as its predecessor (`prev_seq`), the
        same verdict on every replica. The lease is kept under a local key, in this apply's
        transaction."""
        lease = Lease.from_wire(args.get("lease"))
        current = self.lease.seq if self.lease is not None else 0
        current_expiration = list(self.lease.expiration) if self.lease is not None else None
        if args.get("prev_seq") != current or args.get("prev_expiration") != current_expiration:
            raise CommandError("%s: lease %d of r%d asked to follow lease %r, but the range's lease is %d"
                               % (NOT_LEASEHOLDER, lease.seq, self.range_id, args.get("prev_seq"), current),
                               code=NOT_LEASEHOLDER,
                               details={"holder": self.lease.holder if self.lease is not None else None})
        why = lease.follows(self.lease)
        if why is not None:
            raise CommandError(why)
        result = {"lease": lease.to_wire()}
        self._finish(index, command, [(lease_key(self.range_id), (0, 0), msgpack.packb(lease.to_wire()))], result)
        self.lease = lease
        if self.on_lease is not None:
            self.on_lease(self.range_id, lease)
        return result

    # --- garbage collection (kvserver.gc) -----------------------------------------------------------
    def _op_gc(self, index, command, args):
        """Raise the GC threshold to `threshold` (never lower it) and remove, in [start, end) of
        the range, what no read at or above it can see (MVCCStore.gc, inside this apply's
        transaction): the same versions on every replica, at the same index."""
        threshold = _ts(args, "threshold")
        if self.range_id < FIRST_DATA_RANGE_ID:
            raise CommandError("r%d keeps every version (GC runs on data ranges)" % self.range_id)
        start, end = _bytes(args, "start"), _bytes(args, "end", optional=True)
        start = max(start, self.desc.start)
        if self.desc.end is not None and (end is None or end > self.desc.end):
            end = self.desc.end
        removed = 0
        if end is None or start < end:
            removed = self.store.gc(start, end, threshold)
        self.gc_threshold = max(self.gc_threshold, threshold)
        result = {"removed": removed, "threshold": list(self.gc_threshold)}
        self._finish(index, command, [(gc_key(self.range_id), (0, 0), encode_threshold(self.gc_threshold))], result)
        return result

    # --- meta range ----------------------------------------------------------------------------
    def _op_alloc_range_id(self, index, command, args):
        if self.range_id != META_RANGE_ID:
            raise CommandError("range ids are allocated by the meta range")
        raw = self.store.get_value(META_COUNTER_KEY, LATEST)
        next_id = int.from_bytes(raw, "big") if raw else FIRST_DATA_RANGE_ID + 1
        ts = self._write_ts(META_COUNTER_KEY, _ts(args))
        result = {"range_id": next_id}
        self._finish(index, command, [(META_COUNTER_KEY, ts, (next_id + 1).to_bytes(8, "big"))], result)
        return result

    def _op_meta_put(self, index, command, args):
        """Record a range descriptor in meta unless meta already has a newer generation."""
        if self.range_id != META_RANGE_ID:
            raise CommandError("descriptors are kept by the meta range")
        try:
            desc = RangeDescriptor.from_wire(args.get("desc"))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        key = meta_desc_key(desc.range_id)
        current = self.store.get_value(key, LATEST)
        if current is not None and RangeDescriptor.decode(current).generation >= desc.generation:
            self._finish(index, command, [], {"updated": False})
            return {"updated": False}
        ts = self._write_ts(key, _ts(args))
        self._finish(index, command, [(key, ts, desc.encode())], {"updated": True})
        return {"updated": True}

    # The replicated commands, by op: the only ops a log entry can name.
    HANDLERS: dict[str, Callable[["RangeReplica", int, Command, dict], Any]] = {
        BATCH_OP: _op_batch, "lease": _op_lease, "put": _op_put, "delete": _op_delete, "cas": _op_cas, "put_if": _op_put_if,
        "get": _op_get, "scan": _op_scan, "compute_checksum": _op_compute_checksum, "split": _op_split,
        "alloc_range_id": _op_alloc_range_id, "meta_put": _op_meta_put, "gc": _op_gc,
    }

    # --- helpers ---------------------------------------------------------------------------------
    def _mismatch(self, what: str) -> CommandError:
        """The key or span is not this range's (it split since the proposer routed): the answer
        carries this replica's descriptor, so the router can route again without a lookup."""
        return CommandError("%s: %s" % (MISMATCH, what), code=RANGE_KEY_MISMATCH,
                            details={"descriptors": [self.desc.to_wire()] if self.desc is not None else []})

    def _write_ts(self, key: bytes, proposed: tuple[int, int]) -> tuple[int, int]:
        newest = self.store.latest_version_ts(key)
        if newest is not None and newest >= proposed:
            return (newest[0], newest[1] + 1)
        return proposed

    def _finish(self, index: int, command: Command, writes: list, result: dict) -> None:
        self.store.apply(self.range_id, index, writes, continuous=True, command_id=command.id,
                         result=msgpack.packb([True, result], use_bin_type=True),
                         command_key=self._outcome_key(command))


def meta_descriptors(store: MVCCStore) -> list[RangeDescriptor]:
    """Descriptors recorded in this node's copy of the meta range (possibly behind)."""
    rows = store.scan(META_DESC_PREFIX, META_DESC_PREFIX + b"\xff", LATEST, constants.scan_rows_max)
    return [RangeDescriptor.decode(v) for _, v, _ in rows]


def local_descriptors(store: MVCCStore) -> list[RangeDescriptor]:
    """Descriptors of the replicas this node holds (as of what it applied)."""
    from raftstore.kvserver.ranges import LOCAL_DESC_PREFIX
    rows = store.scan(LOCAL_DESC_PREFIX, LOCAL_DESC_PREFIX + b"\xff", LATEST, constants.scan_rows_max)
    return [RangeDescriptor.decode(v) for _, v, _ in rows]
