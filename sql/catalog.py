"""The schema catalog: table definitions kept in the meta range, read and written through KV.

Why in the KV: the catalog must be the same on every node the moment a CREATE TABLE returns,
so it lives where every other replicated byte lives - keys in range 1 (the meta range),
replicated through Raft like rows. A gateway holds no schema state of its own beyond a plan
cache that re-checks the stored bytes on every execution (sql/execute.py).

Layout (all keys sort before the first row key ``b"t..."``):

* ``b"\\x01c" + name.encode()`` -> msgpack ``{"id", "name", "columns": [[name, type,
  not_null, default_sql_or_None], ...], "pk": [column names]}``. ``type`` is one of
  sql.types.COLUMN_TYPES.
* ``b"\\x01i"`` -> the last table id handed out, 8 bytes big-endian. Ids start at 1 and are
  never reused, so rows of a dropped table can never be mistaken for a new table's rows.

Invariants: a name maps to at most one schema (creation is ``cas(key, None, schema)``); ids
are unique (allocation is a CAS loop on the counter). DROP TABLE removes the catalog entry
first and then the rows, so a crash in between leaves unreachable rows under a retired id,
never a table whose rows are half gone.

A table without a PRIMARY KEY gets a hidden ``rowid INT`` key filled by ``unique_rowid()``:
a random 63-bit int (CockroachDB's unique_rowid is a timestamp plus node id; a random value
needs no clock or node id and collides with negligible probability - INSERT retries with a
new value if it ever does). ``SELECT *`` does not show it; ``SELECT rowid`` does.

KV errors (raftstore.errors) propagate unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from raftstore.keys import encode_key, prefix_end
from sql.constants import (
    CATALOG_KEY_PREFIX,
    ROW_KEY_PREFIX,
    SCAN_PAGE_ROWS_MAX,
    TABLE_ID_CAS_RETRY_COUNT_MAX,
    TABLE_ID_COUNTER_KEY,
)
from sql.errors import SQLError
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


def read_table(kv, name: str) -> TableSchema | None:
    """The schema of table `name` as stored now, or None."""
    raw = kv.get(catalog_key(name))
    return None if raw is None else decode_schema(raw)


def list_tables(kv) -> list[TableSchema]:
    """Every table, by name (the catalog prefix scanned in pages)."""
    start = CATALOG_KEY_PREFIX
    end = prefix_end(CATALOG_KEY_PREFIX)
    tables = []
    while True:
        page = kv.scan(start, end, SCAN_PAGE_ROWS_MAX)
        tables.extend(decode_schema(value) for _, value in page)
        if len(page) < SCAN_PAGE_ROWS_MAX:
            return tables
        start = page[-1][0] + b"\x00"


def allocate_table_id(kv) -> int:
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
    kv, name: str, columns: tuple[ColumnSchema, ...], pk: tuple[str, ...], if_not_exists: bool
) -> TableSchema | None:
    """Store a new table; None if it exists and `if_not_exists`. Raises duplicate_table."""
    key = catalog_key(name)
    if kv.get(key) is not None:
        if if_not_exists:
            return None
        raise _duplicate(name)
    schema = TableSchema(allocate_table_id(kv), name, columns, pk)
    raw = schema.to_bytes()
    if not kv.cas(key, None, raw):  # created concurrently since our get
        if if_not_exists:
            return None
        raise _duplicate(name)
    return decode_schema(raw)


def _duplicate(name: str) -> SQLError:
    return SQLError(
        "duplicate_table",
        f'relation "{name}" already exists; choose another name, use CREATE TABLE IF NOT '
        "EXISTS, or DROP TABLE it first",
    )


def delete_rows(kv, table_id: int, batch_rows: int) -> int:
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
