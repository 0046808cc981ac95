"""Limits and fixed names of the SQL layer, in one place (unit or qualifier last)."""

from __future__ import annotations

from raftstore.keyspace import SQL_ROW_PREFIX

# Keyspace layout (see sql/DESIGN.md). Meta keys sort before every table row key.
CATALOG_KEY_PREFIX = b"\x01c"  # + table name (UTF-8) -> msgpack schema
TABLE_ID_COUNTER_KEY = b"\x01i"  # 8-byte big-endian last allocated table id
ROW_KEY_PREFIX = SQL_ROW_PREFIX  # b"t" + encode_key((table_id, *pk)) -> msgpack row

TABLE_ID_CAS_RETRY_COUNT_MAX = 100  # contention on the id counter before giving up
ROW_CAS_RETRY_COUNT_MAX = 20  # per-row optimistic retries of UPDATE / ON CONFLICT / UPSERT
ROWID_RETRY_COUNT_MAX = 8  # fresh random rowids tried when one collides
ROWS_NAMED_IN_ERRORS_MAX = 10  # rows a failed statement's error names one by one ("and N more")

SCAN_PAGE_ROWS_MAX = 1000  # rows per kv.scan call (the KV contract allows up to 10000)
SCAN_PAGE_ROWS_MIN = 16
DELETE_BATCH_ROWS = 1000  # rows per scan+delete round of DROP TABLE

PLAN_CACHE_ENTRIES_MAX = 512  # per Session: statement text -> parsed statement + plan
PARSE_CACHE_ENTRIES_MAX = 1024  # per process: statement text -> parsed statements

KEY_POINTS_MAX = 1000  # IN-list products beyond this become a span / full scan
STATEMENT_ROWS_MAX = 100_000  # rows one INSERT ... VALUES may carry
IDENTIFIER_LENGTH_MAX = 63  # as PostgreSQL's NAMEDATALEN - 1
PARAMS_MAX = 65535  # as PostgreSQL's wire protocol

# Statement limits (sql/limits.py), each checked before the stage whose cost it bounds; a statement
# over one is SQLError program_limit_exceeded (54000). Read at every check (sql.constants.NAME), so
# a test or an embedding program may change them; a text already in the parse cache is not checked
# again. The depths keep every recursive stage well inside Python's recursion limit of 1000 frames.
SQL_STATEMENT_BYTES_MAX = 256 * 1024  # UTF-8 bytes of one statement's text (the wire carries up to 1 MiB)
SQL_STATEMENT_TOKENS_MAX = 100_000  # tokens: tokenizing + parsing + planning cost ~10 us each
SQL_NESTING_DEPTH_MAX = 20  # parentheses, calls, CASE, IN lists, NOT / - inside one another: the parser recurses <= 24 frames a level
SQL_EXPRESSION_DEPTH_MAX = 200  # levels of the syntax tree, a chain a + b + c ... one per operator: expr.py recurses <= 3 frames a level

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
ROWID_BITS = 63

# Schema descriptor leases (sql/schema_leases.py). Every node of a cluster must run with the same values.
SCHEMA_LEASE_S = 2.0  # a cached table descriptor is used at most this long after its read was sent
SCHEMA_LEASE_MARGIN_S = 0.25  # taken off a lease and added to DROP's wait: clock-rate skew, scheduling
SCHEMA_LEASE_ENTRIES_MAX = 10_000  # cached descriptors per process (oldest dropped beyond this)
DROP_MARKER_STALE_S = 10.0  # a drop marker this old (wall clock of its writer) is finished by the next DDL
DROP_MARKER_POLL_S = 0.2  # how often a DDL that met a live drop marker re-reads the name
DDL_STEP_COUNT_MAX = 1000  # catalog re-reads of one DDL waiting for a drop in progress on its name

# The SQL gateway of a node (sql/gateway.py). Statements are coroutines on the client port's loop
# (raftstore.coop), so statements in flight are not bounded by a pool of threads.
SQL_INLINE_PARSE_CHARS_MAX = 4096  # a longer statement text is parsed on a thread, off that loop
GATEWAY_SESSIONS_IDLE_MAX = 128  # idle sessions (each with its plan cache) kept for reuse
GATEWAY_KV_CALL_TIMEOUT_S = 120.0  # one KV call of a statement (proposals time out well before)
GATEWAY_KV_FANOUT_MAX = 64  # KV calls one statement has in flight at once (multi-row INSERT)
STATEMENT_TIMEOUT_MS_MAX = 2**31 - 1  # the longest statement_timeout (PostgreSQL's bound, about 24.8 days)
