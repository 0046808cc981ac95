"""The real-world edges of the HLC: the operating system's clock and an on-disk ceiling.

`hlc.clock` is pure and takes time and durability as objects; this module supplies the
production versions. `SystemClock` reads ``time.time_ns()``. `FileCeilingStore` keeps the
HLC wall-time ceiling in one small file and keeps its contract: when ``save`` returns, the
new value survives a crash or power loss (temp file, fsync, atomic rename, fsync of the
directory), and ``load`` sees either the old value or the new one, never a torn write.
A file it cannot read is an error, never a guess: a wrong ceiling could let a restarted node
reissue timestamps it already handed out.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

_CEILING_FILE_RE = re.compile(rb"[0-9]+\n?")
_CEILING_FILE_BYTES_MAX = 64


class SystemClock:
    """Physical time from the operating system (``time.time_ns()``, the Unix epoch), plus a
    constant `skew_ns` that is 0 in production: tests set it to play a node with a bad clock."""

    def __init__(self, skew_ns: int = 0) -> None:
        self.skew_ns = skew_ns

    def now_ns(self) -> int:
        return time.time_ns() + self.skew_ns


class CorruptCeilingError(Exception):
    """The ceiling file exists but does not hold a valid ceiling; the message names the file."""


class FileCeilingStore:
    """A `hlc.clock.CeilingStore` in one file holding the ceiling as decimal nanoseconds.

    ``load()`` returns None when the file does not exist and raises `CorruptCeilingError`
    when it exists but is not a non-negative integer. ``save(ns)`` is durable when it returns;
    OSError from the file system propagates.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> int | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read(_CEILING_FILE_BYTES_MAX + 1)
        except FileNotFoundError:
            return None
        if len(data) > _CEILING_FILE_BYTES_MAX or not _CEILING_FILE_RE.fullmatch(data):
            raise CorruptCeilingError(
                f"HLC ceiling file {self.path} is corrupt: expected a non-negative integer "
                f"of nanoseconds, found {data[:40]!r}. Restore it, or write a value at least "
                "as large as any timestamp this node may have issued (for example the current "
                "time in ns plus a few seconds); do not delete it unless the system clock is "
                "known to be ahead of every timestamp this node issued."
            )
        return int(data)

    def save(self, ns: int) -> None:
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
            raise ValueError(f"ceiling must be an int >= 0, got {ns!r}")
        directory = self.path.parent
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"%d\n" % ns)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        # The rename is durable only once the directory entry is on disk.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
