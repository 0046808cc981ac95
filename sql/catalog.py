"""The schema catalog: table definitions kept in the meta range, read and written through KV.

Why in the KV: the catalog must be the same on every node the moment a CREATE TABLE returns,
so it lives where every other replicated byte lives - keys in range 1 (the meta range),
replicated through Raft like rows. A gateway holds no schema state of its own beyond schema
leases - copies it may use for a bounded time (sql/schema_leases.py) - and plan caches checked against
them (sql/execute.py).

Layout (all keys sort before the first row key ``b"t..."``):

* ``b"\\x01c" + name.encode()`` -> msgpack ``{"id", "name", "columns": [[name, type,
  not_null, default_sql_or_None], ...], "pk": [column names]}``. ``type`` is one of
  sql.types.COLUMN_TYPES.
* ``b"\\x01z" + table span start`` -> a zone (raftstore/kvserver/zones.py): the table's home
  region, for a table created or altered with ``LOCALITY REGIONAL BY TABLE IN "r"``; none for
  one whose home is the primary region. The stores read these, move the leases of the table's
  ranges to that region and split its span away from its neighbours. Written before the
  schema on CREATE (a crash between leaves a zone over an id no table will have, which
  is harmless), replaced by ALTER TABLE ... SET LOCALITY, deleted with the rows on DROP.
* ``b"\\x01i"`` -> the last table id handed out, 8 bytes big-endian. Ids start at 1 and are
  never reused, so rows of a dropped table can never be mistaken for a new table's rows.

Invariants: a name maps to at most one schema (creation is a CAS from "absent or freed" to
the schema); ids are unique (allocation is a CAS loop on the counter) and never reused, so rows
of a dropped table can never be mistaken for a new table's rows.

DROP TABLE and schema leases (sql/schema_leases.py): other nodes may use a schema they read up to
``L`` earlier without reading it again, so a drop goes through states, each step a CAS on the
catalog key: *schema* -> *drop marker* (the schema plus the dropper's wall time; the name
stays reserved, every statement reading it sees "no such table") -> wait ``L + margin`` ->
*freed* (``{"freed": true}``: the name is free; a catalog entry is never deleted, so freeing
can be a CAS and cannot clobber a table created meanwhile) -> the rows are deleted -> the
DROP is acknowledged. A CREATE or DROP that meets a marker waits for it to go
(`settle_name`); one left by a crashed dropper - older than DROP_MARKER_STALE_S by its wall
time, or still there after we waited that long - is finished by whoever meets it, after
waiting ``L + margin`` itself (so the taker never relies on the wall clocks agreeing). A crash
after freeing leaves unreachable rows under a retired id, never a table whose rows are half
gone.

A table without a PRIMARY KEY gets a hidden ``rowid INT`` key filled by ``unique_rowid()``:
a random 63-bit int (CockroachDB's unique_rowid is a timestamp plus node id; a random value
needs no clock or node id and collides with negligible probability - INSERT retries with a
new value if it ever does). ``SELECT *`` does not show it; ``SELECT rowid`` does.

KV errors (raftstore.errors) propagate unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import msgpack

from raftstore.keys import encode_key, prefix_end
from raftstore.keyspace import ZONE_END, ZONE_PREFIX, decode_zone, encode_zone, zone_key
from sql.constants import (
    CATALOG_KEY_PREFIX,
    DELETE_BATCH_ROWS,
    DROP_MARKER_POLL_S,
    DROP_MARKER_STALE_S,
    DDL_STEP_COUNT_MAX,
    ROW_KEY_PREFIX,
    SCAN_PAGE_ROWS_MAX,
    TABLE_ID_CAS_RETRY_COUNT_MAX,
    TABLE_ID_COUNTER_KEY,
)
from sql.errors import SQLError
from sql.kv import KV
from sql.types import COLUMN_TYPES, INT

ROWID_COLUMN = "rowid"
ROWID_DEFAULT_SQL = "unique_rowid()"


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: str
    not_null: bool
    default_sql: str | None


@dataclass(frozen=True, eq=False)
class TableSchema:
    """A table definition as stored. `raw` is the exact stored bytes (None before storing)."""

    id: int
    name: str
    columns: tuple[ColumnSchema, ...]
    pk: tuple[str, ...]
    raw: bytes | None = None
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        assert self.columns and self.pk
        for i, column in enumerate(self.columns):
            assert column.type in COLUMN_TYPES, column
            self.index[column.name] = i
        assert len(self.index) == len(self.columns), "duplicate column names"
        assert all(name in self.index for name in self.pk)

    @property
    def pk_indexes(self) -> tuple[int, ...]:
        return tuple(self.index[name] for name in self.pk)

    @property
    def hidden(self) -> frozenset[str]:
        """Columns `SELECT *` leaves out: the implicit rowid key."""
        if self.pk == (ROWID_COLUMN,):
            column = self.columns[self.index[ROWID_COLUMN]]
            if column.default_sql == ROWID_DEFAULT_SQL and column.type == INT:
                return frozenset({ROWID_COLUMN})
        return frozenset()

    @property
    def visible_indexes(self) -> tuple[int, ...]:
        hidden = self.hidden
        return tuple(i for i, c in enumerate(self.columns) if c.name not in hidden)

    def column(self, name: str) -> ColumnSchema | None:
        i = self.index.get(name)
        return None if i is None else self.columns[i]

    def span(self) -> tuple[bytes, bytes]:
        return table_span(self.id)

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "id": self.id,
                "name": self.name,
                "columns": [[c.name, c.type, c.not_null, c.default_sql] for c in self.columns],
                "pk": list(self.pk),
            },
            use_bin_type=True,
        )


def catalog_key(name: str) -> bytes:
    return CATALOG_KEY_PREFIX + name.encode("utf-8")


def table_span(table_id: int) -> tuple[bytes, bytes]:
    """``[start, end)`` holding every row of the table."""
    start = ROW_KEY_PREFIX + encode_key((table_id,))
    end = prefix_end(start)
    assert end is not None
    return start, end


class Timer(Protocol):
    """Where DDL gets its time: local monotonic seconds, wall-clock ns, and a way to wait.
    Real: sql.execute.SystemTimer; tests pass a fake whose sleep advances its clock."""

    def monotonic(self) -> float: ...

    def wall_ns(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class DropMarker:
    """A catalog entry saying table `table_id` is being dropped since `wall_ns` (its writer's
    wall clock). `raw` is the exact stored bytes (the CAS that frees the name expects them)."""

    name: str
    table_id: int
    wall_ns: int
    raw: bytes


FREED = msgpack.packb({"freed": True}, use_bin_type=True)  # a name whose table was dropped


def decode_schema(raw: bytes) -> TableSchema:
    """A stored schema. The bytes are our own (written by `create_table`); a malformed entry is
    a broken invariant of the store, hence the asserts."""
    data = msgpack.unpackb(raw, raw=False)
    assert isinstance(data, dict) and {"id", "name", "columns", "pk"} <= set(data), data
    columns = tuple(
        ColumnSchema(str(name), str(kind), bool(not_null), default)
        for name, kind, not_null, default in data["columns"]
    )
    return TableSchema(int(data["id"]), str(data["name"]), columns, tuple(data["pk"]), raw)


def decode_entry(raw: bytes | None) -> TableSchema | DropMarker | None:
    """A catalog entry as stored: a live schema, a drop marker, or None (absent or freed)."""
    if raw is None or raw == FREED:
        return None
    data = msgpack.unpackb(raw, raw=False)
    assert isinstance(data, dict), data
    if "dropping_wall_ns" in data:
        return DropMarker(str(data["name"]), int(data["id"]), int(data["dropping_wall_ns"]), raw)
    return decode_schema(raw)


def encode_drop_marker(schema: TableSchema, wall_ns: int) -> bytes:
    assert schema.raw is not None
    data = msgpack.unpackb(schema.raw, raw=False)
    data["dropping_wall_ns"] = wall_ns
    return msgpack.packb(data, use_bin_type=True)


def read_table(kv: KV, name: str) -> TableSchema | None:
    """The schema of table `name` as stored now, or None (also while it is being dropped)."""
    entry = decode_entry(kv.get(catalog_key(name)))
    return entry if isinstance(entry, TableSchema) else None


def list_tables(kv: KV) -> list[TableSchema]:
    """Every live table, by name (the catalog prefix scanned in pages)."""
    end = prefix_end(CATALOG_KEY_PREFIX)
    assert end is not None
    entries = (decode_entry(value) for _, value in _scan_all(kv, CATALOG_KEY_PREFIX, end))
    return [entry for entry in entries if isinstance(entry, TableSchema)]


def _scan_all(kv: KV, start: bytes, end: bytes):
    """Every (key, value) in [start, end), read in pages of SCAN_PAGE_ROWS_MAX."""
    while True:
        page = kv.scan(start, end, SCAN_PAGE_ROWS_MAX)
        yield from page
        if len(page) < SCAN_PAGE_ROWS_MAX:
            return
        start = page[-1][0] + b"\x00"


def allocate_table_id(kv: KV) -> int:
    """A fresh table id (first is 1): read the counter, CAS it one higher, retry on a race."""
    for _ in range(TABLE_ID_CAS_RETRY_COUNT_MAX):
        current = kv.get(TABLE_ID_COUNTER_KEY)
        last = 0 if current is None else int.from_bytes(current, "big")
        proposed = (last + 1).to_bytes(8, "big")
        if kv.cas(TABLE_ID_COUNTER_KEY, current, proposed):
            return last + 1
    raise SQLError(
        "feature_not_supported",
        f"could not allocate a table id after {TABLE_ID_CAS_RETRY_COUNT_MAX} attempts "
        "(heavy concurrent CREATE TABLE); retry the statement",
    )


def create_table(
    kv: KV, name: str, columns: tuple[ColumnSchema, ...], pk: tuple[str, ...], if_not_exists: bool,
    timer: Timer, drop_wait_s: float, home: str | None = None,
) -> TableSchema | None:
    """Store a new table (with the home region `home`: `set_home`); None if it exists and
    `if_not_exists`. Raises duplicate_table. A drop in progress on the name is waited for (or
    finished, if abandoned) first."""
    key = catalog_key(name)
    raw, schema = settle_name(kv, name, timer, drop_wait_s)
    if schema is not None:
        if if_not_exists:
            return None
        raise _duplicate(name)
    schema = TableSchema(allocate_table_id(kv), name, columns, pk)
    if home is not None:
        set_home(kv, schema.id, home)
    new = schema.to_bytes()
    if not kv.cas(key, raw, new):  # created (or dropped and re-created) concurrently
        if home is not None:
            set_home(kv, schema.id, None)
        if if_not_exists:
            return None
        raise _duplicate(name)
    return decode_schema(new)


def set_home(kv: KV, table_id: int, region: str | None) -> None:
    """Give table `table_id` the home `region` (None: the cluster's primary region), as the
    zone over its span that the stores read (raftstore/kvserver/zones.py)."""
    start, end = table_span(table_id)
    if region is None:
        kv.delete(zone_key(start))
    else:
        kv.put(zone_key(start), encode_zone(end, region))


def zone_regions(kv: KV) -> dict[bytes, str]:
    """Every zone's region by the start of its span (a table's: `table_span(id)[0]`)."""
    zones = (decode_zone(key, value) for key, value in _scan_all(kv, ZONE_PREFIX, ZONE_END))
    return {zone.start: zone.region for zone in zones if zone is not None}


def table_home(kv: KV, table_id: int) -> str | None:
    """The home region table `table_id` was given, or None (the primary region)."""
    start, _ = table_span(table_id)
    raw = kv.get(zone_key(start))
    zone = decode_zone(zone_key(start), raw) if raw is not None else None
    return zone.region if zone is not None else None


def settle_name(kv: KV, name: str, timer: Timer, drop_wait_s: float
                ) -> tuple[bytes | None, TableSchema | None]:
    """The catalog entry of `name` once no drop is in progress on it: (stored bytes, the live
    schema or None). A drop marker is re-read every DROP_MARKER_POLL_S until its dropper frees
    the name; one abandoned (DROP_MARKER_STALE_S old by its wall time, or still there after we
    waited that long ourselves) is finished here with `finish_drop`."""
    key = catalog_key(name)
    waiting_since = timer.monotonic()
    for _ in range(DDL_STEP_COUNT_MAX):
        raw = kv.get(key)
        seen_at = timer.monotonic()
        entry = decode_entry(raw)
        if not isinstance(entry, DropMarker):
            return raw, entry
        age_s = (timer.wall_ns() - entry.wall_ns) / 1e9
        if age_s >= DROP_MARKER_STALE_S or seen_at - waiting_since >= DROP_MARKER_STALE_S:
            finish_drop(kv, key, entry.raw, entry.table_id, timer, seen_at + drop_wait_s)
        else:
            timer.sleep(DROP_MARKER_POLL_S)
    raise SQLError(
        "feature_not_supported",
        f'table "{name}" kept being dropped and created by concurrent statements; retry',
    )


def drop_tables(kv: KV, names: list[str], if_exists: bool, timer: Timer, drop_wait_s: float
                ) -> list[TableSchema]:
    """DROP TABLE: every name is checked first (undefined_table unless `if_exists`), then each
    schema is replaced by a drop marker, then - once, for all - the leases other nodes may
    hold on them run out (`drop_wait_s` after the last marker committed), then each name is
    freed and its rows deleted. Returns the schemas dropped (by this statement)."""
    found = []
    for name in names:
        raw, schema = settle_name(kv, name, timer, drop_wait_s)
        if schema is None:
            if if_exists:
                continue
            raise SQLError(
                "undefined_table",
                f'table "{name}" does not exist; SHOW TABLES lists the tables (or use DROP '
                "TABLE IF EXISTS)",
            )
        found.append(schema)
    marked = []
    lost = []
    for schema in found:
        marker = encode_drop_marker(schema, timer.wall_ns())
        if kv.cas(catalog_key(schema.name), schema.raw, marker):
            marked.append((schema, marker))
        else:
            lost.append(schema.name)
    if marked:
        # Every marker has committed: from here no node can read these schemas any more.
        deadline = timer.monotonic() + drop_wait_s
        for schema, marker in marked:
            finish_drop(kv, catalog_key(schema.name), marker, schema.id, timer, deadline)
    if lost and not if_exists:
        raise SQLError(
            "undefined_table",
            f'table "{lost[0]}" was dropped or re-created by a concurrent statement while this '
            "DROP ran; it was left as that statement made it",
        )
    return [schema for schema, _ in marked]


def finish_drop(kv: KV, key: bytes, marker: bytes, table_id: int, timer: Timer, free_at: float) -> None:
    """Wait until local monotonic `free_at` (when every lease on the schema has run out), free
    the name if it still holds `marker`, and delete the rows of `table_id`."""
    delay = free_at - timer.monotonic()
    if delay > 0:
        timer.sleep(delay)
    kv.cas(key, marker, FREED)  # lost: another finisher freed it (and maybe re-created the name)
    delete_rows(kv, table_id, DELETE_BATCH_ROWS)
    if table_home(kv, table_id) is not None:
        set_home(kv, table_id, None)


def _duplicate(name: str) -> SQLError:
    return SQLError(
        "duplicate_table",
        f'relation "{name}" already exists; choose another name, use CREATE TABLE IF NOT '
        "EXISTS, or DROP TABLE it first",
    )


def delete_rows(kv: KV, table_id: int, batch_rows: int) -> int:
    """Delete every row of table `table_id`, `batch_rows` keys per scan; returns the count."""
    start, end = table_span(table_id)
    deleted = 0
    while True:
        page = kv.scan(start, end, batch_rows)
        for key, _ in page:
            kv.delete(key)
        deleted += len(page)
        if len(page) < batch_rows:
            return deleted
        start = page[-1][0] + b"\x00"
