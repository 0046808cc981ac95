"""The Raft journal that pysyncobj lacks: every entry and every vote on disk before it counts.

pysyncobj's FileJournal is an mmap that is never synced, so a replica acknowledges entries and
votes that a power cut takes back (PYSYNCOBJ.md, item 2). This journal keeps pysyncobj's
`Journal` interface but writes an append-only file of checksummed records and exposes `sync()`:
the owner (RaftGroup) calls it before any message leaves the group and before the leader counts
itself in a quorum, so an acknowledgement, a vote or a self-count is never ahead of the disk.
Appends between two syncs are written together: one fsync covers them all (group commit).

Invariant: replaying the file's durable prefix gives exactly the log, term and vote this replica
had at its last `sync()` (or later). A torn or corrupt tail (writes that were never synced) is
cut off on open and never read as entries.

File layout: the magic b"RSJ1", then records `u32 length | u32 crc32 | msgpack payload`:
    [0, idx, term, command]   entry appended
    [1, idx]                  entries idx and above deleted (conflict truncation)
    [2, idx]                  entries below idx deleted (log compaction)
    [3]                       log cleared (snapshot installed)
    [4, term, voted_for]      current term and vote
The file is rewritten (durably, by atomic replace) when compaction left enough garbage in it.

Crash-only (failstop.py): a failed write, fsync or replace raises FailStop, and an operation
changes the in-memory log only after its record was written -- an entry the file refused is
never in the log, so nothing can be acknowledged for it.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from typing import Protocol

import msgpack
from pysyncobj.journal import Journal

from raftstore import constants
from raftstore.raft.failstop import FailStop

logger = logging.getLogger(__name__)

MAGIC = b"RSJ1"
_HEADER = struct.Struct("<II")
_ENTRY, _TRUNC_FROM, _TRUNC_TO, _CLEAR, _TERM = range(5)
_KIND_NAMES = ("entry", "truncate-from", "truncate-to", "clear", "term")


class JournalError(Exception):
    """The journal file cannot be used (wrong format); the message names the file."""


class LogFile(Protocol):
    """Where a journal's bytes live. A real file, or the simulator's disk.

    `append` may be lost on a crash until `sync` returns; `replace` is atomic and durable when
    it returns.
    """

    name: str

    def read(self) -> bytes: ...
    def append(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def replace(self, data: bytes) -> None: ...
    def close(self) -> None: ...


def encode_record(payload: list) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


class JournalImage:
    """The state a sequence of journal records describes; records are fed in order.

    Used to open a journal and, by the simulator, to know what a replica holds durably.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, int]] = []
        self.term = 0
        self.voted_for: str | None = None

    def first_index(self) -> int:
        return self.entries[0][1] if self.entries else 0

    def last_index(self) -> int:
        return self.entries[-1][1] if self.entries else 0

    def term_at(self, idx: int) -> int | None:
        pos = idx - self.first_index()
        if not self.entries or pos < 0 or pos >= len(self.entries):
            return None
        return self.entries[pos][2]

    def feed(self, data: bytes | memoryview, offset: int = 0) -> int:
        """Apply every whole, valid record of data[offset:]; return the offset after the last one."""
        view = memoryview(data)
        end = len(view)
        while offset + _HEADER.size <= end:
            length, crc = _HEADER.unpack_from(view, offset)
            start = offset + _HEADER.size
            if length > constants.journal_record_bytes_max or start + length > end:
                break
            body = view[start:start + length]
            if zlib.crc32(body) != crc:
                break
            try:
                record = msgpack.unpackb(body, raw=False)
                self._apply(record)
            except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
                logger.warning("journal record at offset %d unreadable (%s); treating as torn tail", offset, str(exc))  # not exc: its traceback would pin `data`
                break
            offset = start + length
        return offset

    def _apply(self, record: list) -> None:
        kind = record[0]
        if kind == _ENTRY:
            _, idx, term, command = record
            if self.entries and idx != self.entries[-1][1] + 1:
                raise ValueError("entry %d does not follow %d" % (idx, self.entries[-1][1]))
            self.entries.append((bytes(command), int(idx), int(term)))
        elif kind == _TRUNC_FROM:
            pos = record[1] - self.first_index()
            if self.entries and pos >= 0:
                del self.entries[pos:]
        elif kind == _TRUNC_TO:
            pos = record[1] - self.first_index()
            if self.entries and pos > 0:
                del self.entries[:pos]
        elif kind == _CLEAR:
            self.entries = []
        elif kind == _TERM:
            self.term, self.voted_for = int(record[1]), record[2]
        else:
            raise ValueError("unknown record kind %r" % (kind,))


class DurableJournal(Journal):
    """pysyncobj `Journal` over a LogFile; nothing is durable until `sync()` returns.

    Positions given by pysyncobj to `deleteEntriesFrom/To` are offsets into the current log, not
    Raft indexes; records store Raft indexes so replay does not depend on offsets.
    """

    def __init__(self, logfile: LogFile) -> None:
        self._file = logfile
        data = logfile.read()
        image = JournalImage()
        if data:
            if data[:len(MAGIC)] != MAGIC:
                raise JournalError("%s is not a raftstore journal (bad magic)" % logfile.name)
            good = image.feed(data, len(MAGIC))
            if good != len(data):
                logger.warning("%s: dropping %d bytes of torn or corrupt tail", logfile.name, len(data) - good)
                logfile.replace(bytes(data[:good]))
        else:
            logfile.replace(MAGIC)
        self._entries = image.entries
        self._term = image.term
        self._voted_for = image.voted_for
        self._commit_index = 0
        self._file_bytes = max(len(data), len(MAGIC))
        self._live_bytes = 0
        self._dirty = False
        self.sync_count = 0

    # --- durability ----------------------------------------------------------------------
    def sync(self) -> None:
        """Make every record written so far durable (no-op when nothing is pending).
        Raises FailStop if the file cannot be synced: never retried (failstop.py)."""
        if self._dirty:
            try:
                self._file.sync()
            except OSError as exc:
                raise FailStop("journal %s: fsync failed: %s" % (self._file.name, exc)) from exc
            self._dirty = False
            self.sync_count += 1

    @property
    def dirty(self) -> bool:
        return self._dirty

    def _write(self, payload: list) -> None:
        """Write one record; FailStop if the file refuses it. Callers change the in-memory log
        only after this returns."""
        record = encode_record(payload)
        try:
            self._file.append(record)
        except OSError as exc:
            what = "%s record" % _KIND_NAMES[payload[0]]
            if payload[0] in (_ENTRY, _TRUNC_FROM, _TRUNC_TO):
                what += " at index %d" % payload[1]
            raise FailStop("journal %s: writing the %s failed: %s" % (self._file.name, what, exc)) from exc
        self._file_bytes += len(record)
        self._dirty = True

    def _rewrite(self) -> None:
        parts = [MAGIC, encode_record([_TERM, self._term, self._voted_for])]
        parts.extend(encode_record([_ENTRY, idx, term, cmd]) for cmd, idx, term in self._entries)
        data = b"".join(parts)
        try:
            self._file.replace(data)
        except OSError as exc:
            raise FailStop("journal %s: rewrite failed: %s" % (self._file.name, exc)) from exc
        self._file_bytes = len(data)
        self._live_bytes = len(data)
        self._dirty = False

    # --- pysyncobj Journal interface -----------------------------------------------------
    def add(self, command, idx, term):
        if self._entries:
            assert idx == self._entries[-1][1] + 1, (idx, self._entries[-1][1])
        command = bytes(command)
        self._write([_ENTRY, idx, term, command])
        self._entries.append((command, idx, term))

    def clear(self):
        self._write([_CLEAR])
        self._entries = []

    def deleteEntriesFrom(self, entryFrom):
        if entryFrom >= len(self._entries):
            return
        self._write([_TRUNC_FROM, self._entries[entryFrom][1]])
        del self._entries[entryFrom:]

    def deleteEntriesTo(self, entryTo):
        if entryTo <= 0 or not self._entries:
            return
        entryTo = min(entryTo, len(self._entries) - 1)
        self._write([_TRUNC_TO, self._entries[entryTo][1]])
        del self._entries[:entryTo]
        live = sum(len(cmd) for cmd, _, _ in self._entries) + 64 * len(self._entries)
        if self._file_bytes - live > max(constants.journal_rewrite_bytes_min, live):
            self._rewrite()

    def __getitem__(self, item):
        return self._entries[item]

    def __len__(self):
        return len(self._entries)

    def close(self, *, sync: bool = True) -> None:
        """Close the file, synced first if `sync` (a clean stop; a crashed replica's journal is
        closed as it is, so nothing it had not synced becomes durable). The file is closed even
        if the sync fails (FailStop)."""
        try:
            if sync:
                self.sync()
        finally:
            self._file.close()

    def _destroy(self):   # pysyncobj's name for a clean close (SyncObj.destroy)
        self.close()

    def setRaftCommitIndex(self, raftCommitIndex):
        # The commit index need not survive a restart (Raft learns it again from the leader,
        # and the state machine remembers what it applied); keeping it in memory saves a write
        # per heartbeat.
        self._commit_index = raftCommitIndex

    def getRaftCommitIndex(self):
        return self._commit_index

    def setCurrentTerm(self, term, votedForNodeId):
        if (term, votedForNodeId) == (self._term, self._voted_for):
            return
        self._write([_TERM, term, votedForNodeId])
        self._term, self._voted_for = term, votedForNodeId

    def getCurrentTerm(self):
        return self._term

    def getVotedForNodeId(self):
        return self._voted_for


class RealLogFile:
    """A journal file on the real disk: `sync` is fsync, `replace` is write-temp/fsync/rename/fsync-dir.
    Unbuffered, so a write the disk refuses (ENOSPC, EIO) raises at `append`, not later."""

    def __init__(self, path: str) -> None:
        self.name = path
        self._f = open(path, "ab+", buffering=0)

    def read(self) -> bytes:
        self._f.seek(0)
        data = self._f.read()
        self._f.seek(0, os.SEEK_END)
        return data

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:   # an unbuffered write may be short
            view = view[self._f.write(view):]

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def replace(self, data: bytes) -> None:
        tmp = self.name + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._f.close()
        os.replace(tmp, self.name)
        fsync_dir(os.path.dirname(os.path.abspath(self.name)))
        self._f = open(self.name, "ab+", buffering=0)

    def close(self) -> None:
        self._f.close()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
