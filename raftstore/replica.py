"""A range's replica: the state machine a RaftGroup applies committed commands to.

Every replica applies the same commands in the same order and must reach the same state, so
everything here is a function of the command and the MVCC data: no clock, no randomness. The
commit timestamp of a write is `max(proposed ts, newest version of the key + 1 logical)`, so
writes to a key get increasing timestamps in log order even when proposers' clocks disagree.
Reads go through the log too (linearizable: a read applies after every write committed before
it); followers compute the same answer, which is what a forwarded read returns.

Each apply is one SQLite transaction holding the data, the applied index and the command's
outcome under its id (MVCCStore.apply), so replay applies each index once and a retried command
id gets its first answer.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import msgpack

from raftstore import constants
from raftstore.mvcc import TIMESTAMP_PART_MAX, MVCCStore
from raftstore.raft.commands import Command, CommandError

RAW_PREFIX = b"k"          # raw key-value keyspace (raftstore.kv); SQL rows will live under b"t"
RAW_END = b"l"             # first key after the raw keyspace
LATEST = (TIMESTAMP_PART_MAX, TIMESTAMP_PART_MAX)
_LEN = struct.Struct("<I")


def _bytes(args: dict, name: str, *, optional: bool = False) -> bytes | None:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, bytes):
        raise CommandError("argument %r must be bytes" % name)
    return value


def _ts(args: dict) -> tuple[int, int]:
    ts = args.get("ts")
    if (not isinstance(ts, (list, tuple)) or len(ts) != 2 or not all(isinstance(x, int) and 0 <= x <= TIMESTAMP_PART_MAX for x in ts)):
        raise CommandError("argument 'ts' must be [wall_ns, logical]")
    return (ts[0], ts[1])


class RangeReplica:
    """StateMachine (raftstore.raft.group) of one range `[start, end)` over the node's MVCCStore."""

    def __init__(self, store: MVCCStore, range_id: int, start: bytes = b"", end: bytes | None = None) -> None:
        self.store, self.range_id, self.start, self.end = store, range_id, start, end

    # --- StateMachine ------------------------------------------------------------------------
    def applied_index(self) -> int:
        return self.store.applied_index(self.range_id)

    def apply(self, index: int, command: Command) -> Any:
        args = command.args
        if not isinstance(args, dict):
            raise CommandError("command args must be a map")
        op = command.op
        if op in ("put", "delete", "cas"):
            key = RAW_PREFIX + _bytes(args, "key")
            ts = self._write_ts(key, _ts(args))
            if op == "cas":
                current = self.store.get_value(key, LATEST)
                if current != _bytes(args, "expected", optional=True):
                    result = {"swapped": False, "ts": list(ts)}
                    self._finish(index, command, [], result)
                    return result
                value = _bytes(args, "new")
                result = {"swapped": True, "ts": list(ts)}
            else:
                value = _bytes(args, "value") if op == "put" else None
                result = {"ts": list(ts)}
            self._finish(index, command, [(key, ts, value)], result)
            return result
        if op == "get":
            key = RAW_PREFIX + _bytes(args, "key")
            found = self.store.get(key, LATEST)
            self.store.mark_applied(self.range_id, index)
            if found is None:
                return {"value": None, "ts": [0, 0]}
            return {"value": found[0], "ts": list(found[1])}
        if op == "scan":
            start = RAW_PREFIX + _bytes(args, "start")
            end_arg = _bytes(args, "end", optional=True)
            end = RAW_PREFIX + end_arg if end_arg is not None else RAW_END
            limit = args.get("limit")
            if not isinstance(limit, int) or not 0 < limit <= constants.scan_rows_max:
                raise CommandError("argument 'limit' must be an integer in 1..%d" % constants.scan_rows_max)
            rows = self.store.scan(start, end, LATEST, limit)
            self.store.mark_applied(self.range_id, index)
            return {"rows": [[k[len(RAW_PREFIX):], v] for k, v, _ in rows],
                    "ts": list(max((ts for _, _, ts in rows), default=(0, 0)))}
        raise CommandError("unknown command op %r" % op)

    def record_failed(self, index: int, command: Command | None, error: str) -> None:
        if command is None:
            self.store.mark_applied(self.range_id, index)
        else:
            self.store.apply(self.range_id, index, [], command_id=command.id,
                             result=msgpack.packb([False, error], use_bin_type=True))

    def result_of(self, command_id: bytes) -> tuple[bool, Any]:
        found = self.store.command_result(self.range_id, command_id)
        if found is None or found[1] is None:
            return (False, None)
        return (True, tuple(msgpack.unpackb(found[1], raw=False)))

    def write_snapshot(self, f: BinaryIO, index: int) -> None:
        with self.store.export_span(self.start, self.end, constants.snapshot_chunk_rows, range_id=self.range_id) as export:
            for chunk in export:
                body = msgpack.packb(chunk, use_bin_type=True)
                f.write(_LEN.pack(len(body)) + body)
        f.write(_LEN.pack(0))

    def read_snapshot(self, f: BinaryIO, index: int) -> None:
        def chunks():
            while True:
                (n,) = _LEN.unpack(f.read(_LEN.size))
                if n == 0:
                    return
                yield [tuple(row) for row in msgpack.unpackb(f.read(n), raw=False)]
        self.store.import_span(self.range_id, self.start, self.end, chunks(), index, 0)

    # --- helpers ---------------------------------------------------------------------------------
    def _write_ts(self, key: bytes, proposed: tuple[int, int]) -> tuple[int, int]:
        newest = self.store.latest_version_ts(key)
        if newest is not None and newest >= proposed:
            return (newest[0], newest[1] + 1)
        return proposed

    def _finish(self, index: int, command: Command, writes: list, result: dict) -> None:
        self.store.apply(self.range_id, index, writes, command_id=command.id,
                         result=msgpack.packb([True, result], use_bin_type=True))
