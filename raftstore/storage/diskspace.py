"""The free-space reserve: a node stops taking new log entries before its disk is full.

Storage errors are crash-only (raftstore.raft.failstop), and every node holds every range, so
all disks fill at about the same rate: without a reserve, the first full disk would stop its
node, the next would stop the next, and the cluster would be down at once -- with acknowledged
entries that no node can apply. Below the reserve a node therefore refuses proposals ("disk
nearly full", a clear error the client sees) and, as a follower, takes no new entries, so what
it already acknowledged can always be applied: the reserve is room for the applies, the
snapshots and SQLite's own journal, not for new writes.

A ballast file in the data dir holds space an operator can give back (delete it) to restart a
node whose disk filled anyway, e.g. because something else on the machine filled it.

`DiskGuard` reads the free space with os.statvfs (a few microseconds) at most every
disk_check_interval_s; the verdict is a string naming the free space and the reserve, or None.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from raftstore import constants

logger = logging.getLogger(__name__)

BALLAST_NAME = "EMERGENCY_BALLAST"


def default_reserve_bytes(total_bytes: int) -> int:
    """The larger of disk_reserve_bytes_min and disk_reserve_fraction of the disk."""
    return max(constants.disk_reserve_bytes_min, int(total_bytes * constants.disk_reserve_fraction))


def default_ballast_bytes(total_bytes: int) -> int:
    """The smaller of disk_ballast_bytes_max and disk_ballast_fraction of the disk."""
    return min(constants.disk_ballast_bytes_max, int(total_bytes * constants.disk_ballast_fraction))


def _mib(n: int) -> str:
    return "%.1f MiB" % (n / 1024 / 1024)


class DiskGuard:
    """Watches the free space of the file system holding `data_dir`.

    `reserve_bytes` / `ballast_bytes` None take the defaults above, computed from the disk's size.
    """

    def __init__(self, data_dir: str, *, reserve_bytes: int | None = None, ballast_bytes: int | None = None,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self.data_dir = data_dir
        self._statvfs = statvfs
        total = self.total_bytes()
        self.reserve_bytes = default_reserve_bytes(total) if reserve_bytes is None else reserve_bytes
        self.ballast_bytes = default_ballast_bytes(total) if ballast_bytes is None else ballast_bytes
        self.ballast_path = os.path.join(data_dir, BALLAST_NAME)
        self.low: str | None = None
        self.free_bytes = self._free()

    def total_bytes(self) -> int:
        st = self._statvfs(self.data_dir)
        return st.f_blocks * st.f_frsize

    def _free(self) -> int:
        st = self._statvfs(self.data_dir)
        return st.f_bavail * st.f_frsize

    def check(self) -> str | None:
        """Read the free space; return why the node must refuse new entries, or None. Logs a
        line only when the verdict changes."""
        self.free_bytes = self._free()
        low = None
        if self.free_bytes < self.reserve_bytes:
            low = ("disk nearly full: %s free on the disk of %s, below the reserve of %s; new writes are refused "
                   "until space is freed (the ballast file %s can be deleted to make room)"
                   % (_mib(self.free_bytes), self.data_dir, _mib(self.reserve_bytes), self.ballast_path))
        if (low is None) != (self.low is None):
            if low is not None:
                logger.error("%s", low)
            else:
                logger.warning("disk space back above the reserve (%s free); taking writes again", _mib(self.free_bytes))
        self.low = low
        return low

    def ensure_ballast(self) -> None:
        """Create the ballast file if it is missing and the disk has room for it above the
        reserve; never makes the disk low by itself. The space is allocated, not sparse."""
        if self.ballast_bytes <= 0 or os.path.exists(self.ballast_path):
            return
        if self._free() - self.ballast_bytes < self.reserve_bytes:
            logger.warning("not creating the ballast file %s (%s): the disk has too little room above the reserve",
                           self.ballast_path, _mib(self.ballast_bytes))
            return
        tmp = self.ballast_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.ballast_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.ballast_path)
        logger.info("ballast file %s holds %s an operator can free", self.ballast_path, _mib(self.ballast_bytes))

    def status(self) -> dict:
        return {"free_bytes": self.free_bytes, "reserve_bytes": self.reserve_bytes,
                "ballast_bytes": os.path.getsize(self.ballast_path) if os.path.exists(self.ballast_path) else 0,
                "low": self.low}
