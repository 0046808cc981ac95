"""Rows as KV pairs: where a row lives (its key) and what is stored there (its value).

Key: ``b"t" + encode_key((table_id, *pk_values))`` - raftstore.keys' order-preserving tuple
encoding, so a table is one contiguous span, rows sort by primary key (SQL order for each
type: numbers numerically, text by code point, NULL first), and a primary-key prefix or range
is a byte span. Value: a msgpack list of every column in schema order. TIMESTAMP values are
int microseconds since the epoch in both (sql/types.py `to_storage`).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

from raftstore.keys import encode_key
from sql.catalog import TableSchema
from sql.constants import ROW_KEY_PREFIX
from sql.errors import SQLError
from sql.types import format_text, from_storage, to_storage


def key_for_pk(schema: TableSchema, pk_values: Sequence[object]) -> bytes:
    """The key of the row whose primary key columns hold `pk_values` (runtime values)."""
    columns = schema.columns
    stored = tuple(
        to_storage(value, columns[i].type) for value, i in zip(pk_values, schema.pk_indexes)
    )
    return key_for_stored_prefix(schema.id, stored)


def key_for_stored_prefix(table_id: int, stored_values: tuple) -> bytes:
    """``b"t" + encode_key((table_id, *stored_values))``; a prefix of the pk is fine."""
    try:
        return ROW_KEY_PREFIX + encode_key((table_id, *stored_values))
    except ValueError as error:
        raise SQLError(
            "datatype_mismatch", f"value cannot be part of a primary key: {error}"
        ) from None


def key_for_row(schema: TableSchema, row: Sequence[object]) -> bytes:
    return key_for_pk(schema, [row[i] for i in schema.pk_indexes])


def encode_row(schema: TableSchema, row: Sequence[object]) -> bytes:
    columns = schema.columns
    assert len(row) == len(columns)
    return msgpack.packb(
        [to_storage(value, columns[i].type) for i, value in enumerate(row)], use_bin_type=True
    )


def decode_row(schema: TableSchema, raw: bytes) -> list:
    """The runtime values of a stored row (a new list the caller owns)."""
    values = msgpack.unpackb(raw, raw=False)
    columns = schema.columns
    assert isinstance(values, list) and len(values) == len(columns), (schema.name, values)
    return [from_storage(value, columns[i].type) for i, value in enumerate(values)]


def pk_text(schema: TableSchema, row: Sequence[object]) -> str:
    """A row's primary key as error messages name it: ``(id, k)=(1, x)``."""
    values = ", ".join(format_text(row[i], "") for i in schema.pk_indexes)
    return f"({', '.join(schema.pk)})=({values})"
