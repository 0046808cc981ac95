"""Schema descriptor leases: a node reuses a table's schema for a bounded time without a read.

Why: the catalog lives in the meta range (sql/catalog.py), so reading a table's schema is a
linearizable read - a consensus round of its own. Paying it on every statement made a
single-row INSERT two rounds where the bound is one. Like CockroachDB's descriptor leases, a
node may keep a schema it read for a lease period L and use it without asking again; in
exchange, DDL that removes or changes a schema waits until every such copy has expired before
it is acknowledged.

The rules (the cache side here, the DDL side in sql/catalog.py):

1. *Validity from the send time.* A schema read by a ``get`` that was sent at local monotonic
   time ``t_sent`` may be used until ``t_sent + L - margin`` (local monotonic). The read is
   served (applied in the meta range's Raft log) after it was sent, so the copy is at most
   ``L - margin`` old by the clock of the node holding it, however late the answer arrives.
2. *Positive entries only.* A miss, or a name that is being dropped, is never cached: the next
   statement reads the catalog again.
3. *DROP waits.* DROP TABLE first replaces the schema by a drop marker (a CAS on the catalog
   key; from then on every read of the name says "no such table"), then waits ``L + margin``
   on its own monotonic clock from the moment that CAS returned, then frees the name and
   deletes the rows, then acknowledges. A finisher that takes over a marker left by a crashed
   dropper waits ``L + margin`` from the moment its read returned the marker.

Why a statement that starts after DROP is acknowledged never reads or writes the dropped table:
any copy of the old schema comes from a read served before the marker committed (afterwards
reads return the marker), hence sent before the marker's CAS returned, hence valid until at
most ``t_marker + L - margin`` while DROP returns no earlier than ``t_marker + L + margin``
(the 2 x margin absorbs how far two monotonic clocks can drift apart over L and the delay
between a read being served and its answer being noticed). So at the acknowledgement every
copy on every node has expired: a later statement misses the cache and reads the catalog,
which now says marker or nothing ("no such table"), or - after a new CREATE of the name - the
new schema, whose table id is new (ids are never reused), so it cannot touch the old rows.
Statements already running when DROP is acknowledged may still finish a write under the old
id; those rows are unreachable (no schema names that id) - the same leak a crash between
freeing the name and deleting the rows leaves. Safety rests on monotonic clocks running at
nearly the same rate, never on wall clocks agreeing: the marker's wall time only decides when
a marker counts as abandoned, and a taker waits out the leases itself.

Why CREATE on node A is usable on node B at once: B caches no misses, so B's first statement
after A's CREATE returned misses its cache and reads the catalog through the meta range's log,
which holds the committed CREATE.

Renewal: a lease past half its life is still used, and the first statement to notice claims
its renewal (one claim per name at a time); the gateway re-reads the catalog for it after that
statement has answered (Session.renew_leases), so a busy table never makes a statement wait for
a catalog read. A renewal is an ordinary read under rule 1.

Pure: the caller passes the time (``now``, ``sent_at``: local monotonic seconds). Shared by
every session of a process, hence the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sql.catalog import TableSchema
from sql.constants import SCHEMA_LEASE_ENTRIES_MAX, SCHEMA_LEASE_MARGIN_S, SCHEMA_LEASE_S


class SchemaLeases:
    """Table name -> (schema, expiry): the descriptors a process may use without a read.

    ``lease_s = 0`` disables caching and DDL waiting alike - for a KV no other process can
    reach (tests on sql/memkv.py). Every node of a cluster must use the same ``lease_s`` and
    ``margin_s``: a node's DROP waits for the leases the other nodes hold.
    """

    def __init__(self, lease_s: float = SCHEMA_LEASE_S, margin_s: float = SCHEMA_LEASE_MARGIN_S,
                 entries_max: int = SCHEMA_LEASE_ENTRIES_MAX) -> None:
        assert lease_s >= 0 and margin_s >= 0 and entries_max > 0
        assert lease_s == 0 or lease_s > margin_s, "a lease must outlast its margin"
        self.lease_s = lease_s
        self.margin_s = margin_s if lease_s > 0 else 0.0
        self._entries_max = entries_max
        self._entries: OrderedDict[str, tuple[TableSchema, float]] = OrderedDict()
        self._renewing: set[str] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.lease_s > 0

    @property
    def drop_wait_s(self) -> float:
        """How long DDL that removes a schema waits after its marker committed (rule 3)."""
        return self.lease_s + self.margin_s if self.enabled else 0.0

    def get(self, name: str, now: float) -> TableSchema | None:
        """The schema of `name` if this process holds an unexpired lease on it at `now`."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            schema, expires_at = entry
            if now >= expires_at:
                del self._entries[name]
                return None
            return schema

    def put(self, name: str, schema: TableSchema, sent_at: float) -> None:
        """Remember `schema`, read by a get sent at `sent_at`. An entry already held that
        expires later is kept (both are sound; the later one is the newer read)."""
        if not self.enabled:
            return
        expires_at = sent_at + self.lease_s - self.margin_s
        with self._lock:
            held = self._entries.get(name)
            if held is not None and held[1] >= expires_at:
                return
            self._entries[name] = (schema, expires_at)
            self._entries.move_to_end(name)
            self._renewing.discard(name)
            while len(self._entries) > self._entries_max:
                self._entries.popitem(last=False)

    def claim_renewal(self, name: str, now: float) -> bool:
        """True (once, until `renewed`) if the lease on `name` is past half its life at `now`:
        the caller should read the catalog for it soon and `put` what it finds."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or name in self._renewing:
                return False
            if entry[1] - now > (self.lease_s - self.margin_s) / 2:
                return False
            self._renewing.add(name)
            return True

    def renewed(self, name: str) -> None:
        """The renewal claimed for `name` is over (whatever it found)."""
        with self._lock:
            self._renewing.discard(name)

    def forget(self, name: str) -> None:
        """Drop the entry for `name` (the catalog said it is gone or going)."""
        with self._lock:
            self._entries.pop(name, None)
            self._renewing.discard(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
