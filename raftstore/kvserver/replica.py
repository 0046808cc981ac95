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
from raftstore.raft.commands import Command, CommandError
from raftstore.raft.failstop import FailStop
from raftstore.raft.group import SnapshotRefused
from raftstore.storage.mvcc import TIMESTAMP_PART_MAX, MVCCStore, discard_staged

RAW_PREFIX = b"k"          # raw key-value keyspace (raftstore.kv); SQL rows live under b"t"
RAW_END = b"l"             # first key after the raw keyspace
LATEST = (TIMESTAMP_PART_MAX, TIMESTAMP_PART_MAX)
_LEN = struct.Struct("<I")


@dataclass
class StagedSnapshot:
    """A received snapshot decoded into a staging file, waiting to be switched in."""
    desc: RangeDescriptor
    path: str
    index: int
    rows: int
    basis: int | None = None    # applied index the staged difference is against (mvcc.diff_staged)


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
                 on_checksum: Callable[[int, int, RangeDescriptor], None] | None = None) -> None:
        self.store, self.range_id = store, range_id
        self.desc = read_local_descriptor(store, range_id)
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
        return handler(self, index, command, args)

    def record_failed(self, index: int, command: Command | None, error: str | dict) -> None:
        if command is None:
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
        retries of commands applied before the snapshot), a 0 length."""
        assert self.desc is not None, "an uninitialized replica has no snapshot to give"
        body = self.desc.encode()
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
                for chunk in export:
                    packed = msgpack.packb(chunk, use_bin_type=True)
                    f.write(_LEN.pack(len(packed)) + packed)
                f.write(_LEN.pack(0))
                for chunk in export.results():
                    packed = msgpack.packb(chunk, use_bin_type=True)
                    f.write(_LEN.pack(len(packed)) + packed)
                f.write(_LEN.pack(0))
        return write

    def _read_desc(self, f: BinaryIO) -> RangeDescriptor:
        (n,) = _LEN.unpack(f.read(_LEN.size))
        desc = RangeDescriptor.decode(f.read(n))
        if desc.range_id != self.range_id:
            raise SnapshotRefused("snapshot of r%d sent to r%d" % (desc.range_id, self.range_id))
        return desc

    @staticmethod
    def _chunks(f: BinaryIO):
        while True:
            (m,) = _LEN.unpack(f.read(_LEN.size))
            if m == 0:
                return
            yield [tuple(row) for row in msgpack.unpackb(f.read(m), raw=False)]

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
        desc = self._read_desc(f)
        self._check_install(desc)
        rows = [chunk for chunk in self._chunks(f)]   # the outcomes follow the rows in the file
        self.store.import_span(self.range_id, desc.start, desc.end, rows, index, 0,
                               extra_writes=[(local_desc_key(self.range_id), desc_ts(desc), desc.encode())],
                               results=self._results(f))
        self.desc = desc

    # Installing a received snapshot in two steps, so the loop never imports a whole range:
    def stage_snapshot(self, f: BinaryIO, index: int) -> "StagedSnapshot":
        """Off the loop (any thread): decode and check the snapshot's rows into a staging file.
        Changes nothing the replica serves."""
        desc = self._read_desc(f)
        path = "%s.staging-r%d" % (self.store.path, self.range_id)
        rows = MVCCStore.stage_span(path, desc.start, desc.end, self._chunks(f), results=lambda: self._results(f))

        def sole_writer(scan) -> bool:   # no other local range's descriptor overlaps the span
            from raftstore.kvserver.ranges import LOCAL_DESC_PREFIX
            for _, raw in scan(LOCAL_DESC_PREFIX, LOCAL_DESC_PREFIX + b"\xff"):
                other = RangeDescriptor.decode(raw)
                if other.range_id != self.range_id and other.overlaps(desc.start, desc.end):
                    return False
            return True
        basis = self.store.diff_staged(path, self.range_id, desc.start, desc.end, sole_writer)
        return StagedSnapshot(desc, path, index, rows, basis)

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
                                 extra_writes=[(local_desc_key(self.range_id), desc_ts(desc), desc.encode())],
                                 basis=staged.basis)
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
        if self.on_write is not None:
            self.on_write(self.range_id, sum(len(k) + (len(v) if v else 0) for k, _, v in writes))
        return result

    def read_latest(self, key: bytes) -> dict:
        """A Get's answer from the state applied now: the live value (nil: none) and the key's
        newest version, a tombstone's too (`ts`; [0, 0] if never written)."""
        found = self.store.get(key, LATEST)
        return {"value": found[0] if found else None, "ts": list(found[1]) if found else [0, 0]}

    def _read_batch(self, index: int, request: BatchRequest) -> dict:
        """Gets and scans of the state applied at this index (reads save no outcome: a retry
        reads again). The batch's scans share its header's key and byte limits; a scan stopped by
        one answers `resume`, the key to continue from (nil: it reached its end). Rows are taken
        until their keys' and values' bytes reach the byte limit: the row that reaches it is the
        last (CockroachDB's TargetBytes), so a scan always makes progress."""
        keys_left, bytes_left = request.header.keys_limit(), request.header.bytes_limit()
        responses, ts = [], (0, 0)
        for op in request.ops:
            self._check_key(op.key)
            if isinstance(op, Get):
                got = self.read_latest(op.key)
                ts = max(ts, tuple(got["ts"]))
                responses.append(got)
                continue
            stop = self.desc.end if op.end is None or (self.desc.end is not None and self.desc.end < op.end) else op.end
            rows = self.store.scan(op.key, stop, LATEST, keys_left) if keys_left > 0 and bytes_left > 0 else []
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
            ts = max([ts] + [r[2] for r in rows])
            responses.append({"rows": [[k, v] for k, v, _ in rows], "versions": [list(t) for _, _, t in rows],
                              "resume": resume})
        self.store.mark_applied(self.range_id, index, continuous=True)
        return {"ts": list(ts), "responses": responses, "span_end": self.desc.end}

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
        # The outcomes of the commands whose keys move go with them (copied only if the new
        # range has no state yet: one that got a snapshot first has them from its own leader).
        self.store.split_command_results(self.range_id, new_id, key, self.desc.end, copy=existing is None)
        result = {"left": left.to_wire(), "right": right.to_wire()}
        self._finish(index, command, writes, result)
        self.desc = left
        if self.on_split is not None:
            self.on_split(left, right)
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
        BATCH_OP: _op_batch, "put": _op_put, "delete": _op_delete, "cas": _op_cas, "put_if": _op_put_if,
        "get": _op_get, "scan": _op_scan, "compute_checksum": _op_compute_checksum, "split": _op_split,
        "alloc_range_id": _op_alloc_range_id, "meta_put": _op_meta_put,
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
