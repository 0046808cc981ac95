"""The versioned part of the KV interface the engine uses for writes: reads that return each
row's version, and writes conditioned on one.

Why: until transactions make a statement atomic, a statement that reads a row and then writes
it, or that takes back a row it wrote after a later write failed, must act on exactly the
version it read or wrote - never on one another client wrote meanwhile, or that client's
acknowledged write is lost. A version is the commit timestamp the store gave the write, unique
per key, so it tells two writes apart even when the second put back the very bytes of the
first (a compare by value cannot).

The contract, implemented by a node's `sql.gateway.NodeKV` and by `sql.memkv.MemKV`:

* ``get_version(key) -> (value, version) | None`` - the live value and its version, None if
  the key has no live value.
* ``scan_versions(start, end, limit) -> [(key, value, version)]`` - as ``scan``, with versions.
* ``write_if(key, if_version, value) -> WriteResult`` - write `value` (None: delete) only if
  the key's newest version is exactly `if_version` (a delete's version too), or, with
  `if_version` None, only if the key has no live value.
* ``write_if_many(writes, *, stop_after_failure=True) -> [WriteResult]`` (optional) - the same
  for many (key, if_version, value) triples at once, results in order; with
  `stop_after_failure` it may leave out the calls after one that failed (their results carry
  an error saying they were not sent), without it every call is tried.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, int]
"""A commit timestamp (wall_ns, logical): unique per key, ordered like time."""


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
