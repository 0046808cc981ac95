"""Key latches of a node's ranges: no two commands on one key are evaluated against the same state.

A leader evaluates a write (kvserver.store.Store.evaluate_and_propose) under the latch of its
key, held from evaluation until the command's outcome is known (applied, or failed): a second
command on that key waits, and is evaluated against the state the first one left. Everything
runs on the node loop, so there are no locks; `acquire` runs the holder at once when the key is
free and queues it otherwise, in arrival order. A holder's `release` may be called from inside
its own `run` (a proposal refused at once): grants are trampolined, never recursive.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Hashable

Release = Callable[[], None]


class Latches:
    def __init__(self) -> None:
        self._busy: set[Hashable] = set()
        self._waiting: dict[Hashable, deque[Callable[[Release], None]]] = {}
        self._grants: deque[tuple[Hashable, Callable[[Release], None]]] = deque()
        self._granting = False

    def __len__(self) -> int:
        """Latches held now."""
        return len(self._busy)

    def held(self, match: Callable[[Hashable], bool]) -> list:
        """The latches held now whose key `match` accepts, in key order (what a read waits out:
        Store._serve_read)."""
        return sorted(k for k in self._busy if match(k))

    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def acquire(self, key: Hashable, run: Callable[[Release], None]) -> None:
        """Call `run(release)` once the latch on `key` is ours; `release()` (idempotent) frees it."""
        if key in self._busy:
            self._waiting.setdefault(key, deque()).append(run)
            return
        self._busy.add(key)
        self._grant(key, run)

    def acquire_all(self, keys: list[Hashable], run: Callable[[Release], None]) -> None:
        """Call `run(release)` once the latches on every key are ours; `release()` frees them all.
        Callers pass keys in one global order (sorted), and a holder waits for the next key while
        holding the earlier ones: with one order there is no cycle of waiters, so no deadlock."""
        held: list[Release] = []

        def release_all() -> None:
            for release in held:
                release()

        def take(i: int) -> None:
            if i == len(keys):
                run(release_all)
                return

            def got(release: Release) -> None:
                held.append(release)
                take(i + 1)
            self.acquire(keys[i], got)
        take(0)

    def _grant(self, key: Hashable, run: Callable[[Release], None]) -> None:
        self._grants.append((key, run))
        if self._granting:
            return
        self._granting = True
        try:
            while self._grants:
                k, r = self._grants.popleft()
                r(self._releaser(k))
        finally:
            self._granting = False

    def _releaser(self, key: Hashable) -> Release:
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            queue = self._waiting.get(key)
            if queue:
                nxt = queue.popleft()
                if not queue:
                    del self._waiting[key]
                self._grant(key, nxt)      # the latch passes on; it stays busy
            else:
                self._busy.discard(key)
        return release
