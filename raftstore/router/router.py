"""The router (CockroachDB's DistSender, the part of it built so far): key -> range -> send ->
on a refusal, learn and send again.

    key --(range cache, else a lookup in the node's copy of meta)--> descriptor
        --(send: the node hands it to the range's leader)--> answer
    a range-key mismatch (the range split since it was cached): drop the refused descriptor,
        cache the descriptors the refusing replica returned, and send again at once when one of
        them holds the key (a redirect: no lookup); otherwise look up again after a short backoff.
    not-leader (the replica lost the lead, or has not applied its term's first entry yet):
        send again after a short backoff, to the leader the node knows of then.

It runs on one thread (the node loop; the simulator's event loop) and never blocks: `send` and
`later` are the node's, so the same router drives real nodes and the simulator. Counters in
`stats` (lookups, redirects, backoffs, not_leader) are in the node's status, where a test reads them.
"""

from __future__ import annotations

from typing import Any, Callable

from raftstore import constants
from raftstore.kvserver.ranges import RangeDescriptor, is_mismatch, mismatch_descriptors, pretty_key
from raftstore.raft.commands import Outcome, is_not_leader, new_command_id
from raftstore.router.cache import RangeCache

Done = Callable[[Outcome, Any], None]
# send(descriptor, op, args, done, command_id): hand the command to the range's leader.
Send = Callable[[RangeDescriptor, str, dict, Done, "bytes | None"], None]
# later(due, done, attempt): run attempt at the first loop pass at or after `due` (monotonic s);
# done answers a ValueError it raises.
Later = Callable[[float, Done, Callable[[], None]], None]


class Router:
    def __init__(self, lookup: Callable[[bytes], RangeDescriptor | None], send: Send, later: Later,
                 now: Callable[[], float], *, capacity: int = constants.range_cache_entries_max) -> None:
        self.cache = RangeCache(capacity)
        self._lookup, self._send, self._later, self._now = lookup, send, later, now
        self.stats = {"lookups": 0, "redirects": 0, "backoffs": 0, "not_leader": 0}

    def descriptor(self, key: bytes) -> RangeDescriptor | None:
        """The range holding key as this router knows it: cached, else looked up (and cached)."""
        desc = self.cache.lookup(key)
        if desc is None:
            self.stats["lookups"] += 1
            desc = self._lookup(key)
            if desc is not None:
                self.cache.insert(desc)
        return desc

    def learn(self, refused: RangeDescriptor, returned: list[RangeDescriptor]) -> None:
        """A replica of `refused`'s range refused a key and returned its own view (and the
        range it knows holds the key): believe the replica over the cache."""
        self.cache.invalidate(refused.range_id)
        for desc in returned:
            self.cache.insert(desc)

    def send(self, op: str, key: bytes, args: dict, command_id: bytes | None, done: Done, attempt: int = 0) -> None:
        """Send a command for `key` to the range holding it; `done(outcome, result)` gets the
        answer, after at most route_retries_max refusals. The command keeps its id across
        sends, so a retry is answered by its first outcome wherever it applied. Raises
        ValueError, before anything is sent, for a command too large to replicate (first
        attempt only)."""
        desc = self.descriptor(key)
        if desc is None:
            done(Outcome.NOT_COMMITTED, "no range known here holds key %s" % pretty_key(key))
            return

        def answer(outcome: Outcome, result: Any) -> None:
            mismatch = outcome is Outcome.REJECTED and is_mismatch(result)
            if not mismatch and not (outcome is Outcome.NOT_COMMITTED and is_not_leader(result)):
                done(outcome, result)
                return
            if attempt + 1 >= constants.route_retries_max:
                done(Outcome.NOT_COMMITTED, "%s (after %d refusals); retry" % (
                    ("the range holding %s kept changing" % pretty_key(key)) if mismatch else result, attempt + 1))
                return
            again = lambda: self.send(op, key, args, command_id, done, attempt + 1)   # noqa: E731
            if not mismatch:
                # Not (or not yet) the leader: the node's view of who leads catches up within a
                # heartbeat; send again after a short backoff.
                self.stats["not_leader"] += 1
                self._later(self._now() + min(0.01 * (attempt + 1), 0.2), done, again)
                return
            returned = mismatch_descriptors(result.details)
            self.learn(desc, returned)
            if any(d.contains(key) and d.range_id != desc.range_id for d in returned):
                self.stats["redirects"] += 1
                self._later(0.0, done, again)
            else:
                # The replica knew no better than we did (it is behind, or its range split again):
                # look up again a little later (10 ms more each time, at most 0.2 s).
                self.stats["backoffs"] += 1
                self._later(self._now() + min(0.01 * (attempt + 1), 0.2), done, again)
        self._send(desc, op, args, answer, command_id)

    def scan(self, start: bytes, end: bytes | None, limit: int, done: Done) -> None:
        """Rows of `[start, end)` across ranges, in key order, at most `limit`: one linearizable
        read per range (each routed by `send`, so a split meanwhile is followed), continuing
        where the range that answered ends (`span_end`). `done` gets (COMMITTED, {"rows": [[key,
        value]], "versions": [[wall, logical]] (each row's commit timestamp), "ts": the highest
        timestamp any range answered}) or the first page's failure."""
        rows: list = []
        versions: list = []
        ts = [0, 0]

        def page(at: bytes) -> None:
            if (end is not None and at >= end) or len(rows) >= limit:
                done(Outcome.COMMITTED, {"rows": rows, "versions": versions, "ts": ts})
                return
            self.send("scan", at, {"start": at, "end": end, "limit": limit - len(rows)}, new_command_id(), got)

        def got(outcome: Outcome, result: Any) -> None:
            nonlocal ts
            if outcome is not Outcome.COMMITTED:
                done(outcome, result)
                return
            rows.extend(result["rows"])
            versions.extend(result["versions"])
            ts = max(ts, result["ts"])
            if result["span_end"] is None:
                done(Outcome.COMMITTED, {"rows": rows, "versions": versions, "ts": ts})
            else:
                page(result["span_end"])
        page(start)
