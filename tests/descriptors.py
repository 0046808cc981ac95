"""Counting a test process's open file descriptors by what they are, not by how many there are.

A test process runs many tests, and the garbage collector may close another test's leftover
socket or file at any moment, so "as many descriptors as before" can be off by one either way
without anything leaking. What a test can hold a piece of code to is this: no descriptor that
was not open before it ran is open after. A descriptor is (number, what it points at): a number
reused for another file or pipe counts as new (pipes and sockets carry their inode).
"""

from __future__ import annotations

import os

FD_DIR = "/proc/self/fd"


def open_descriptors() -> dict[int, str]:
    out = {}
    for name in os.listdir(FD_DIR):
        try:
            out[int(name)] = os.readlink(os.path.join(FD_DIR, name))
        except OSError:
            pass   # closed since the listing (the listing's own descriptor among them)
    return out


def opened_since(before: dict[int, str]) -> int:
    """Descriptors open now that were not open in `before`."""
    return sum(1 for fd, target in open_descriptors().items() if before.get(fd) != target)
