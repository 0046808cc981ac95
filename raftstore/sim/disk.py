"""A simulated disk that loses what was not fsynced.

Each SimFile holds durable bytes and pending appends. `sync()` makes the pending bytes durable;
a crash keeps the durable bytes plus, at random, a prefix of the pending ones (a torn write),
and forgets the rest. Two knobs model broken disks: `fsync_works=False` (fsync returns without
persisting anything -- the checker must then catch acknowledged entries that a crash takes back)
and `write_through=True` (every append is durable at once -- a perfect disk, used to show
pysyncobj's log-matching bug on its own). Storage faults make `append` or `sync` raise OSError:
the next `append_failures` appends, the next `sync_failures` fsyncs, and every append and fsync
while the disk is full (`full_until`, on the simulated clock). A failed append writes nothing; a
failed fsync leaves what was pending as unsure as before (a crash may keep or drop it).

The file also keeps a JournalImage of its durable bytes, fed incrementally, so the invariant
checker can ask what a replica holds durably without replaying the whole file at every step.
"""

from __future__ import annotations

import errno
import random

from raftstore.raft.journal import MAGIC, JournalImage


class SimFile:
    def __init__(self, name: str, disk: "SimDisk") -> None:
        self.name = name
        self._disk = disk
        self.durable = bytearray()
        self.pending: list[bytes] = []
        self.image = JournalImage()
        self._fed = 0

    def read(self) -> bytes:
        return bytes(self.durable) + b"".join(self.pending)

    def append(self, data: bytes) -> None:
        self._disk.check("append", self.name)
        self.pending.append(bytes(data))
        if self._disk.write_through:
            self._persist()

    def sync(self) -> None:
        self._disk.check("sync", self.name)
        if self._disk.fsync_works:
            self._persist()

    def replace(self, data: bytes) -> None:  # atomic rename after an fsynced temp file
        self.durable = bytearray(data)
        self.pending = []
        self.image = JournalImage()
        self._fed = 0
        self._feed()
        self._disk.version += 1

    def close(self) -> None:
        pass

    def _persist(self) -> None:
        if self.pending:
            self.durable += b"".join(self.pending)
            self.pending = []
            self._feed()
            self._disk.version += 1

    def _feed(self) -> None:
        if not self._fed:
            if len(self.durable) < len(MAGIC):
                return
            self._fed = len(MAGIC)
        self._fed = self.image.feed(self.durable, self._fed)

    def crash(self, rng: random.Random) -> None:
        """Power loss: keep the durable bytes and maybe a torn prefix of the pending ones."""
        tail = b"".join(self.pending)
        self.pending = []
        if tail and rng.random() < 0.5:
            self.durable += tail[:rng.randrange(len(tail))]
            self._feed()
        self._disk.version += 1


class SimDisk:
    """The disk of one simulated node: named files that survive crashes as a real disk would."""

    def __init__(self, *, fsync_works: bool = True, write_through: bool = False, clock=lambda: 0.0) -> None:
        self.fsync_works = fsync_works
        self.write_through = write_through
        self.files: dict[str, SimFile] = {}
        self.version = 0
        self.clock = clock
        self.append_failures = 0
        self.sync_failures = 0
        self.full_until = float("-inf")

    def check(self, what: str, name: str) -> None:
        """Raise the OSError a storage fault calls for, if any."""
        if self.clock() < self.full_until:
            raise OSError(errno.ENOSPC, "simulated: no space left on device", name)
        if what == "append" and self.append_failures:
            self.append_failures -= 1
            raise OSError(errno.EIO, "simulated: write failed", name)
        if what == "sync" and self.sync_failures:
            self.sync_failures -= 1
            raise OSError(errno.EIO, "simulated: fsync failed", name)

    def clear_faults(self) -> None:
        self.append_failures = self.sync_failures = 0
        self.full_until = float("-inf")

    def open(self, name: str) -> SimFile:
        if name not in self.files:
            self.files[name] = SimFile(name, self)
        return self.files[name]

    def crash(self, rng: random.Random) -> None:
        for name in sorted(self.files):
            self.files[name].crash(rng)
