"""Limits and fixed names of the SQL layer, in one place (unit or qualifier last)."""

from __future__ import annotations

# Keyspace layout (see sql/DESIGN.md). Meta keys sort before every table row key.
CATALOG_KEY_PREFIX = b"\x01c"  # + table name (UTF-8) -> msgpack schema
TABLE_ID_COUNTER_KEY = b"\x01i"  # 8-byte big-endian last allocated table id
ROW_KEY_PREFIX = b"t"  # + encode_key((table_id, *pk)) -> msgpack row

TABLE_ID_CAS_RETRY_COUNT_MAX = 100  # contention on the id counter before giving up
ROW_CAS_RETRY_COUNT_MAX = 20  # per-row optimistic retries of UPDATE / ON CONFLICT / UPSERT
ROWID_RETRY_COUNT_MAX = 8  # fresh random rowids tried when one collides

SCAN_PAGE_ROWS_MAX = 1000  # rows per kv.scan call (the KV contract allows up to 10000)
SCAN_PAGE_ROWS_MIN = 16
DELETE_BATCH_ROWS = 1000  # rows per scan+delete round of DROP TABLE

PLAN_CACHE_ENTRIES_MAX = 512  # per Session: statement text -> parsed statement + plan
PARSE_CACHE_ENTRIES_MAX = 1024  # per process: statement text -> parsed statements

KEY_POINTS_MAX = 1000  # IN-list products beyond this become a span / full scan
STATEMENT_ROWS_MAX = 100_000  # rows one INSERT ... VALUES may carry
IDENTIFIER_LENGTH_MAX = 63  # as PostgreSQL's NAMEDATALEN - 1
PARAMS_MAX = 65535  # as PostgreSQL's wire protocol

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
ROWID_BITS = 63
