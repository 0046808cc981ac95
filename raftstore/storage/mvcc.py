"""The node's MVCC store: every replica's versioned key/value data, in one SQLite file.

Why it exists: Raft gives each range an ordered log of committed commands; something has to
turn that log into data that can be read at a timestamp. This module is that something for
all ranges on a node. It keeps every version of a key, `(key, timestamp) -> value or
tombstone`, so a read at `ts` sees the newest version at or below `ts` (snapshot reads,
follower reads below the closed timestamp, AS OF SYSTEM TIME), and it drops versions nobody
can see any more (`gc`).

The invariant it keeps: a range's applied Raft index is written in the same SQLite
transaction as the data that command produced. After a crash the file holds either both or
neither, so replaying the log from the stored applied index applies every command exactly
once (`apply` refuses any index at or below it). Snapshots (`import_span`) replace the data
of a span together with the applied index and term for the same reason.

This is an edge module (it owns SQLite and a lock); it knows nothing of HLC objects, Raft or
SQL. A timestamp is a plain tuple `(wall_ns, logical)`, ordered as tuples are; keys and
values are `bytes`. Every public method is thread-safe: one internal lock serialises all use
of the single connection (callers are the Raft tick thread and request threads).

Errors: `StoreError` (an operating error naming the file) for a closed store, a file that is
not ours, a schema from another build, or any SQLite failure (I/O, corruption, full disk);
`TypeError` / `ValueError` for malformed arguments, which are the caller's bug or, for
snapshot rows, bad input from the network that the caller should log and drop.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from raftstore import constants

__all__ = [
    "MVCCStore",
    "SpanExport",
    "StoreError",
    "Timestamp",
    "discard_staged",
    "VersionRow",
    "SCHEMA_VERSION",
]

Timestamp = tuple[int, int]
"""(wall_ns, logical); compared as a tuple."""

VersionRow = tuple[bytes, int, int, "bytes | None"]
"""One stored version as export/import moves it: (key, wall, logical, value or None)."""

# Bounds and format constants. (They belong in the shared constants module once it exists.)
SCHEMA_VERSION = 2
"""PRAGMA user_version of the file format this build reads and writes. Version 1 (command
outcomes without the key their command touched) is migrated in place when opened: its outcomes
get key NULL, which a split copies to both halves (`split_command_results`)."""
APPLICATION_ID = 0x52534D56  # "RSMV": marks a SQLite file as a raftstore MVCC store.
BUSY_TIMEOUT_MS = 5_000
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)   # primary result codes
"""How long a statement waits on another connection's lock (a snapshot export, a second
process opening the file) before SQLite gives up with 'database is locked'."""
SCAN_SKIP_ROWS_MAX = 4
"""A scan streams versions in key order and skips the older versions of each key in Python;
after this many skipped rows for one key it re-seeks the index past that key instead. See
`MVCCStore.scan` for the measurements behind the value."""
TIMESTAMP_PART_MAX = 2**63 - 1  # SQLite INTEGER is a signed 64-bit integer.

_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

_SCHEMA = (
    # Clustered on (key, newest first): a read at ts is one index seek, a scan walks keys in
    # order. NULL value = tombstone.
    """CREATE TABLE versions (
        key BLOB NOT NULL,
        wall INTEGER NOT NULL,
        logical INTEGER NOT NULL,
        value BLOB,
        PRIMARY KEY (key, wall DESC, logical DESC)
    ) WITHOUT ROWID""",
    """CREATE TABLE range_state (
        range_id INTEGER PRIMARY KEY,
        applied_index INTEGER NOT NULL,
        applied_term INTEGER NOT NULL DEFAULT 0
    )""",
    # A rowid table: results may be large, and the second index serves forget_command_results.
    # key: the key (or span start) the command touched, so a split hands the outcome to the
    # range that holds it; NULL for an outcome stored before keys were kept (schema 1).
    """CREATE TABLE command_results (
        range_id INTEGER NOT NULL,
        command_id BLOB NOT NULL,
        raft_index INTEGER NOT NULL,
        result BLOB,
        key BLOB,
        PRIMARY KEY (range_id, command_id)
    )""",
    "CREATE INDEX command_results_by_index ON command_results (range_id, raft_index)",
)

# The visibility rule, in one place: a version is visible to a read at ts when its timestamp
# is at or below ts. Every read and gc query is built from this text.
_VISIBLE = "({t}.wall, {t}.logical) <= (:wall, :logical)"


def _span(t: str, bounded: bool, *, after: bool = False) -> str:
    """SQL for `key in [:start, :end)` (or `(:start, :end)` with after=True); end None is
    written as a missing upper bound, not `OR :end IS NULL`, so SQLite keeps the index range."""
    low = f"{t}.key > :start" if after else f"{t}.key >= :start"
    return f"{low} AND {t}.key < :end" if bounded else low


_GET_SQL = (
    "SELECT v.value, v.wall, v.logical FROM versions AS v"
    f" WHERE v.key = :key AND {_VISIBLE.format(t='v')}"
    " ORDER BY v.wall DESC, v.logical DESC LIMIT 1"
)
_LATEST_SQL = (
    "SELECT wall, logical FROM versions WHERE key = ? ORDER BY wall DESC, logical DESC LIMIT 1"
)
_INSERT_VERSION_SQL = (
    "INSERT OR REPLACE INTO versions (key, wall, logical, value) VALUES (?, ?, ?, ?)"
)
_APPLIED_SQL = "SELECT applied_index, applied_term FROM range_state WHERE range_id = ?"


def _scan_sql(bounded: bool, after: bool) -> str:
    return (
        "SELECT v.key, v.value, v.wall, v.logical FROM versions AS v"
        f" WHERE {_span('v', bounded, after=after)} AND {_VISIBLE.format(t='v')}"
        " ORDER BY v.key, v.wall DESC, v.logical DESC"
    )


_SCAN_SQL = {(b, a): _scan_sql(b, a) for b in (False, True) for a in (False, True)}


def _gc_sql(bounded: bool) -> str:
    # Delete a version at or below before_ts if it is a tombstone, or if a newer version at
    # or below before_ts shadows it. What remains at or below before_ts is, per key, at most
    # the newest version and only if it is live: every read at ts >= before_ts sees the same.
    return (
        "DELETE FROM versions AS v"
        f" WHERE {_span('v', bounded)} AND {_VISIBLE.format(t='v')}"
        " AND (v.value IS NULL OR EXISTS ("
        "   SELECT 1 FROM versions AS n"
        f"   WHERE n.key = v.key AND {_VISIBLE.format(t='n')}"
        "     AND (n.wall, n.logical) > (v.wall, v.logical)))"
    )


_GC_SQL = {b: _gc_sql(b) for b in (False, True)}


def _export_sql(bounded: bool) -> str:
    return (
        "SELECT v.key, v.wall, v.logical, v.value FROM versions AS v"
        f" WHERE {_span('v', bounded)} ORDER BY v.key, v.wall DESC, v.logical DESC"
    )


_EXPORT_SQL = {b: _export_sql(b) for b in (False, True)}


def _span_delete_sql(bounded: bool) -> str:
    return f"DELETE FROM versions AS v WHERE {_span('v', bounded)}"


_SPAN_DELETE_SQL = {b: _span_delete_sql(b) for b in (False, True)}


def _span_bytes_sql(bounded: bool) -> str:
    return (
        "SELECT coalesce(sum(length(v.key) + coalesce(length(v.value), 0)), 0)"
        f" FROM versions AS v WHERE {_span('v', bounded)}"
    )


_SPAN_BYTES_SQL = {b: _span_bytes_sql(b) for b in (False, True)}


class StoreError(Exception):
    """The MVCC store cannot do what was asked: it is closed, the file is not a raftstore
    store or has another schema version, or SQLite failed (I/O error, corruption, disk full).
    The message names the file."""


# --- argument checks (cheap; they keep a str key or a float timestamp out of the file,
# where SQLite would store it with a different type and sort it somewhere else) ---


def _check_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= TIMESTAMP_PART_MAX:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}")
    return value


def _check_ts(ts: Any, name: str = "ts") -> Timestamp:
    try:
        wall, logical = ts
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (wall_ns, logical) pair, got {ts!r}") from None
    return _check_int(f"{name}.wall", wall), _check_int(f"{name}.logical", logical)


def _check_key(name: str, key: Any) -> bytes:
    if type(key) is not bytes:
        raise TypeError(f"{name} must be bytes, got {type(key).__name__}")
    return key


def _check_value(name: str, value: Any) -> bytes | None:
    if value is not None and type(value) is not bytes:
        raise TypeError(f"{name} must be bytes or None, got {type(value).__name__}")
    return value


def _check_span(start: Any, end: Any) -> None:
    _check_key("start", start)
    if end is not None:
        _check_key("end", end)


def _checked_writes(
    writes: Iterable[tuple[bytes, Timestamp, bytes | None]],
) -> Iterator[tuple[bytes, int, int, bytes | None]]:
    for i, write in enumerate(writes):
        key, ts, value = write
        wall, logical = _check_ts(ts, f"writes[{i}].ts")
        key = _check_key(f"writes[{i}].key", key)
        yield key, wall, logical, _check_value(f"writes[{i}].value", value)


class MVCCStore:
    """All ranges' versions and applied state for one node, in one SQLite file (WAL mode).

    Ownership: returned lists and tuples belong to the caller. Durability: a method that
    writes has committed (and, with synchronous FULL, fsynced the WAL) before it returns.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        """Open the store at `path`, creating the file and schema if it does not exist.

        synchronous: SQLite's PRAGMA synchronous (OFF, NORMAL, FULL, EXTRA). FULL fsyncs the
        WAL at every commit, so an applied index that was returned is on disk.
        Raises StoreError naming the path if the file cannot be opened, is not a SQLite
        database, belongs to another application, or has another schema version.
        """
        mode = str(synchronous).upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {_SYNCHRONOUS_MODES}, got {synchronous!r}"
            )
        self._path = os.fspath(path)
        self._lock = threading.RLock()
        self._in_batch = False
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open MVCC store {self._path}: {e}") from e
        try:
            self._prepare(conn, mode)
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open MVCC store {self._path}: {e}") from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection, synchronous: str) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        (journal_mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(journal_mode).lower() != "wal":
            raise StoreError(
                f"MVCC store {self._path}: SQLite refused WAL mode (got {journal_mode!r});"
                " the store needs a file on a local file system"
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # IMMEDIATE: two processes opening a new file at once must not both create the schema.
        conn.execute("BEGIN IMMEDIATE")
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if app_id == 0 and version == 0:
                (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if tables:
                    raise StoreError(
                        f"{self._path} is a SQLite database but not a raftstore MVCC store;"
                        " give the node its own data file"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif app_id != APPLICATION_ID:
                raise StoreError(
                    f"{self._path} is a SQLite database of another application"
                    f" (application_id {app_id:#x}), not a raftstore MVCC store"
                )
            elif version == 1:
                # Schema 1 differs only by the outcomes' key column: add it (old rows NULL).
                conn.execute("ALTER TABLE command_results ADD COLUMN key BLOB")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"MVCC store {self._path} has schema version {version}, but this build"
                    f" reads version {SCHEMA_VERSION}; run a matching raftstore build"
                    " (or migrate the file)"
                )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @property
    def path(self) -> str:
        return self._path

    # --- plumbing ---

    @contextlib.contextmanager
    def _transaction(self, begin: str | None) -> Iterator[sqlite3.Connection]:
        """Hold the lock; run the body in a transaction (`begin` None: no transaction, for a
        single statement). Commit on success, roll back on any exception, and turn SQLite
        errors into StoreError naming the file."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"MVCC store {self._path} is closed")
            try:
                if begin is None:
                    yield conn
                    return
                if self._in_batch:
                    # Inside batch(): each call is a savepoint, atomic on its own, and the
                    # batch commits them all together.
                    conn.execute("SAVEPOINT op")
                    try:
                        yield conn
                    except BaseException:
                        conn.execute("ROLLBACK TO op")
                        raise
                    finally:
                        conn.execute("RELEASE op")
                    return
                conn.execute(begin)
                try:
                    yield conn
                    _commit(conn)
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                raise StoreError(f"MVCC store {self._path}: {type(e).__name__}: {e}") from e

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes (applies of one tick) into one transaction, one commit, one fsync.

        Every write method keeps its own atomicity inside (a savepoint each); reads on this
        store see the batch's writes. Other threads wait until the batch ends. Committing
        early is always allowed (`flush_batch`): a batch only saves syncs, it promises nothing.
        Nested batches join the outer one."""
        with self._lock:
            if self._in_batch:
                yield
                return
            conn = self._conn
            if conn is None:
                raise StoreError(f"MVCC store {self._path} is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._in_batch = True
                try:
                    yield
                    _commit(conn)
                finally:
                    self._in_batch = False
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                raise StoreError(f"MVCC store {self._path}: {type(e).__name__}: {e}") from e

    @property
    def in_batch(self) -> bool:
        """A batch (an apply transaction) is open: what it wrote is not committed yet."""
        return self._in_batch

    def flush_batch(self) -> None:
        """Commit what the current batch wrote so far (so other connections see it)."""
        with self._lock:
            if self._in_batch and self._conn is not None:
                try:
                    _commit(self._conn)
                    self._conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as e:
                    raise StoreError(f"MVCC store {self._path}: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        """Close the file. Idempotent; every later call except close raises StoreError."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as e:
                raise StoreError(f"MVCC store {self._path}: close failed: {e}") from e

    def __enter__(self) -> MVCCStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- applying committed commands ---

    def apply(
        self,
        range_id: int,
        raft_index: int,
        writes: Iterable[tuple[bytes, Timestamp, bytes | None]],
        *,
        command_id: bytes | None = None,
        result: bytes | None = None,
        command_key: bytes | None = None,
        raft_term: int | None = None,
        continuous: bool = False,
    ) -> bool:
        """Apply the command at `raft_index` of range `range_id`, exactly once.

        In one SQLite transaction: if `raft_index` <= the range's applied index, change
        nothing and return False (a replay after a crash). With `continuous`, an index that
        does not follow the applied index by exactly one raises StoreError and writes nothing
        (a hole in what was applied: the caller must stop). Otherwise write every
        `(key, ts, value)` (value None = tombstone; a second write of the same (key, ts)
        replaces the first), record `command_id -> result` if `command_id` is given (with
        `command_key`, the key the command touched, which decides the range the outcome goes
        to when this one splits), set the applied index to `raft_index` (and the applied term
        to `raft_term` if given), commit, and return True. If anything fails, nothing is
        written (TypeError/ValueError for a malformed write, StoreError for SQLite).
        """
        _check_int("range_id", range_id)
        _check_int("raft_index", raft_index)
        if command_id is None and result is not None:
            raise ValueError("a result needs a command_id to be stored under")
        if command_id is not None:
            _check_key("command_id", command_id)
            _check_value("result", result)
            _check_value("command_key", command_key)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            if not self._advances(conn, range_id, raft_index, continuous):
                return False
            conn.executemany(_INSERT_VERSION_SQL, _checked_writes(writes))
            if command_id is not None:
                conn.execute(_INSERT_RESULT_SQL, (range_id, command_id, raft_index, result, command_key))
            self._set_applied(conn, range_id, raft_index, raft_term)
            return True

    def write_local(self, writes: Iterable[tuple[bytes, Timestamp, bytes | None]]) -> None:
        """Write versions outside any Raft index, in one transaction (bootstrap of node-local
        keys such as a replica's first descriptor)."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            conn.executemany(_INSERT_VERSION_SQL, _checked_writes(writes))

    def mark_applied(self, range_id: int, raft_index: int, *, raft_term: int | None = None,
                     continuous: bool = False) -> bool:
        """Advance the applied index past a command that wrote nothing (rejected, no-op).
        Same rules as `apply`: False and no change if `raft_index` <= the applied index; with
        `continuous`, StoreError unless it is the applied index + 1."""
        _check_int("range_id", range_id)
        _check_int("raft_index", raft_index)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            if not self._advances(conn, range_id, raft_index, continuous):
                return False
            self._set_applied(conn, range_id, raft_index, raft_term)
            return True

    def _advances(self, conn: sqlite3.Connection, range_id: int, raft_index: int, continuous: bool) -> bool:
        applied = self._applied(conn, range_id)[0]
        if raft_index <= applied:
            return False
        if continuous and raft_index != applied + 1:
            raise StoreError(f"MVCC store {self._path}: range r{range_id}: index {raft_index} does not follow"
                             f" the applied index {applied} (entries {applied + 1}..{raft_index - 1} were never"
                             " applied here)")
        return True

    @staticmethod
    def _applied(conn: sqlite3.Connection, range_id: int) -> tuple[int, int]:
        row = conn.execute(_APPLIED_SQL, (range_id,)).fetchone()
        return (0, 0) if row is None else (row[0], row[1])

    @staticmethod
    def _set_applied(
        conn: sqlite3.Connection, range_id: int, raft_index: int, raft_term: int | None
    ) -> None:
        if raft_term is None:
            conn.execute(
                "INSERT INTO range_state (range_id, applied_index) VALUES (?, ?)"
                " ON CONFLICT (range_id) DO UPDATE SET applied_index = excluded.applied_index",
                (range_id, raft_index),
            )
        else:
            _check_int("raft_term", raft_term)
            conn.execute(
                "INSERT OR REPLACE INTO range_state (range_id, applied_index, applied_term)"
                " VALUES (?, ?, ?)",
                (range_id, raft_index, raft_term),
            )

    def applied_index(self, range_id: int) -> int:
        """The last Raft index applied to this range; 0 if the range is unknown here."""
        return self.applied_state(range_id)[0]

    def applied_state(self, range_id: int) -> tuple[int, int]:
        """(applied_index, applied_term) of the range; (0, 0) if unknown. The term is the one
        last passed to apply/mark_applied(raft_term=...) or import_span."""
        _check_int("range_id", range_id)
        with self._transaction(None) as conn:
            return self._applied(conn, range_id)

    def command_result(self, range_id: int, command_id: bytes) -> tuple[int, bytes | None] | None:
        """(raft_index, result) stored by `apply(..., command_id=...)`, or None if unknown
        (never applied here, or forgotten)."""
        _check_int("range_id", range_id)
        _check_key("command_id", command_id)
        with self._transaction(None) as conn:
            row = conn.execute(
                "SELECT raft_index, result FROM command_results"
                " WHERE range_id = ? AND command_id = ?",
                (range_id, command_id),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def forget_command_results(self, range_id: int, below_raft_index: int) -> int:
        """Drop the range's command results with raft_index < below_raft_index; returns how
        many. Bounds the dedup table: a retry older than that is answered 'unknown'."""
        _check_int("range_id", range_id)
        _check_int("below_raft_index", below_raft_index)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            cursor = conn.execute(
                "DELETE FROM command_results WHERE range_id = ? AND raft_index < ?",
                (range_id, below_raft_index),
            )
            return cursor.rowcount

    def split_command_results(self, from_range_id: int, to_range_id: int, start: bytes, end: bytes | None,
                              *, copy: bool = True) -> tuple[int, int]:
        """For a split that hands `[start, end)` of from_range_id to to_range_id: move the
        outcomes of commands whose key lies in that span to to_range_id, in one transaction.
        With `copy`, to_range_id gets them (at raft_index 0: older than any entry of its own
        log; any outcome it already has is kept) together with every outcome whose key is
        unknown (NULL, stored before keys were kept), which stays with from_range_id too;
        without `copy` (to_range_id already got its outcomes from a snapshot) it gets nothing.
        Either way from_range_id forgets the outcomes whose key moved. Returns (copied, dropped).
        Why this is enough: a retry is routed by its key, so after the split it reaches the
        range that now holds the key, which has the outcome; a retry that reaches the parent
        with a stale route is refused there as outside its span (every replica the same) and
        routed again. So each outcome lives in one range and splits never multiply them."""
        _check_int("from_range_id", from_range_id)
        _check_int("to_range_id", to_range_id)
        _check_span(start, end)
        moved = "key >= :start" + (" AND key < :end" if end is not None else "")
        params = {"from": from_range_id, "to": to_range_id, "start": start, "end": end}
        with self._transaction("BEGIN IMMEDIATE") as conn:
            copied = 0
            if copy:
                copied = conn.execute(
                    "INSERT OR IGNORE INTO command_results (range_id, command_id, raft_index, result, key)"
                    " SELECT :to, command_id, 0, result, key FROM command_results"
                    f" WHERE range_id = :from AND (key IS NULL OR ({moved}))",
                    params,
                ).rowcount
            dropped = conn.execute(
                f"DELETE FROM command_results WHERE range_id = :from AND {moved}", params
            ).rowcount
            return copied, dropped

    def delete_range_state(self, range_id: int) -> None:
        """Forget a range that left this node: its applied index/term and command results.
        Its versions are not touched (the store does not know the span): delete them with
        `import_span` of an empty snapshot or leave them for the new owner of the span."""
        _check_int("range_id", range_id)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            conn.execute("DELETE FROM range_state WHERE range_id = ?", (range_id,))
            conn.execute("DELETE FROM command_results WHERE range_id = ?", (range_id,))

    # --- reads ---

    def get(self, key: bytes, ts: Timestamp) -> tuple[bytes | None, Timestamp] | None:
        """The newest version of `key` at or below `ts`, as (value, version_ts) where value
        None is a tombstone; None if the key has no version at or below `ts`. (After `gc`, a
        collected tombstone reads as None, which means the same: no live value.)"""
        _check_key("key", key)
        _check_ts(ts)
        with self._transaction(None) as conn:
            return _get(conn, key, ts)

    def get_value(self, key: bytes, ts: Timestamp) -> bytes | None:
        """The live value of `key` at `ts`; None for a tombstone or no version."""
        found = self.get(key, ts)
        return None if found is None else found[0]

    def latest_version_ts(self, key: bytes) -> Timestamp | None:
        """Timestamp of the newest version of `key` at any time (tombstones included), or
        None. For write-write conflict checks: a write must be above it. gc can remove a
        tombstone at or below its before_ts, so this can move back to an older version (or
        None) but never below a gc threshold that writes already respect."""
        _check_key("key", key)
        with self._transaction(None) as conn:
            row = conn.execute(_LATEST_SQL, (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def scan(
        self, start: bytes, end: bytes | None, ts: Timestamp, limit: int
    ) -> list[tuple[bytes, bytes, Timestamp]]:
        """Live rows of `[start, end)` (end None: to the end of the keyspace) at `ts`:
        (key, value, version_ts) of each key's newest version at or below `ts`, tombstones
        skipped, ascending by key, at most `limit` rows. One read transaction, so the rows
        are one consistent snapshot.

        How, measured on the 2-core machine (SQLite 3.40, 1000-row scans, keys with 1 / 10 /
        200 versions each, read at the newest timestamp):
        - one query streaming the visible versions in index order, Python keeping the first
          of each key: ~1 µs per visible version, 1.0 / 9.5 / 80 ms;
        - a query per distinct key (`key > last ... LIMIT 1`): ~4.5 µs per key whatever the
          history, 4.3 / 4.4 / 2.4 ms;
        - one query with a correlated NOT EXISTS (newer visible version): per version in C,
          1.5 / 9.6 / 61 ms; a lag() window: 4.4 / 22 / 190 ms; a recursive-CTE skip scan is
          materialised in full before LIMIT applies (30 ms for LIMIT 10 over 20k keys).
        Chosen: stream, and when one key hides more than SCAN_SKIP_ROWS_MAX older versions,
        re-seek the index past it: 1.0 / 9.9 / 6.8 ms. Cost per key is bounded (about 10 µs)
        and the common case (few versions per key, kept so by gc) is 4x the per-key query.
        Memory is bounded by `limit`, never by the size of the range.
        """
        _check_span(start, end)
        _check_ts(ts)
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        if limit == 0:
            return []
        with self._transaction("BEGIN") as conn:
            return _scan(conn, start, end, ts, limit)

    def newest_between(self, start: bytes, end: bytes | None, low: Timestamp, high: Timestamp) -> Timestamp | None:
        """MVCCReader.newest_between on this store's own connection."""
        _check_span(start, end)
        with self._transaction(None) as conn:
            return _newest_between(conn, start, end, _check_ts(low), _check_ts(high))

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["MVCCStore"]:
        """MVCCReader.snapshot's face on this store, for reads on the thread that writes it (the
        simulator's inline reads): nothing is written between its reads, so it needs no
        transaction of its own."""
        yield self

    def reader(self) -> "MVCCReader":
        """A read-only connection of its own to this store's file, for one thread at a time."""
        return MVCCReader(self._path)

    def approximate_span_bytes(self, start: bytes, end: bytes | None) -> int:
        """Sum of len(key) + len(value) over all versions in `[start, end)` (tombstones count
        their key). Exact for the stored versions, 'approximate' as a size of the range on
        disk. Reads every version of the span: O(rows), for split decisions, not hot paths."""
        _check_span(start, end)
        with self._transaction(None) as conn:
            (total,) = conn.execute(
                _SPAN_BYTES_SQL[end is not None], {"start": start, "end": end}
            ).fetchone()
        return total

    # --- garbage collection ---

    def gc(self, range_start: bytes, range_end: bytes | None, before_ts: Timestamp) -> int:
        """Remove the versions in `[range_start, range_end)` that no read at or above
        `before_ts` can see: per key, every version older than the newest one at or below
        `before_ts`, and that one too if it is a tombstone. Versions above `before_ts` stay.
        Every `get_value`/`scan` at ts >= before_ts returns what it returned before (`get`
        may say None instead of a tombstone). Reads below `before_ts` are no longer
        meaningful; the caller must not serve them nor write at or below `before_ts`.
        One transaction; returns the number of versions removed."""
        _check_span(range_start, range_end)
        wall, logical = _check_ts(before_ts, "before_ts")
        params = {"start": range_start, "end": range_end, "wall": wall, "logical": logical}
        with self._transaction("BEGIN IMMEDIATE") as conn:
            return conn.execute(_GC_SQL[range_end is not None], params).rowcount

    # --- snapshots for a lagging replica ---

    def export_span(
        self, start: bytes, end: bytes | None, chunk_rows: int, *, range_id: int | None = None
    ) -> SpanExport:
        """All versions (tombstones included) of `[start, end)` as an iterator of lists of at
        most `chunk_rows` rows `(key, wall, logical, value)`, ascending by key then newest
        first.

        Consistent: the export reads one SQLite snapshot taken when this method returns, on
        a connection of its own, so applies keep going while the chunks are sent. If
        `range_id` is given, the returned object's `applied_index` / `applied_term` are that
        range's state in the same snapshot (what `import_span` needs on the other side).
        Caveat: while the export is open SQLite cannot checkpoint the WAL past its snapshot,
        so the WAL grows; iterate it to the end or close it (it is a context manager).
        """
        _check_span(start, end)
        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        if range_id is not None:
            _check_int("range_id", range_id)
        with self._lock:
            if self._conn is None:
                raise StoreError(f"MVCC store {self._path} is closed")
            self.flush_batch()   # the export reads on its own connection: it must see the batch
        return SpanExport(self._path, start, end, chunk_rows, range_id)

    def import_span(
        self,
        range_id: int,
        start: bytes,
        end: bytes | None,
        chunks: Iterable[Iterable[VersionRow]],
        applied_index: int,
        applied_term: int,
        *,
        extra_writes: Iterable[tuple[bytes, Timestamp, bytes | None]] = (),
        results: Iterable[Iterable[ResultRow]] | None = None,
    ) -> None:
        """Replace everything this node holds in `[start, end)` with a snapshot, in one
        transaction: delete the span's versions, insert every row of `chunks` (and
        `extra_writes`, keys outside the span such as the range's own descriptor), set the
        range's applied index and term, and drop its command results above `applied_index`
        (they would claim commands the new data does not contain). On any error nothing
        changes: ValueError/TypeError for a row outside the span or malformed (bad input
        from a peer), StoreError for SQLite, or whatever the chunk iterator raises.
        `results` (chunks of `(command_id, raft_index, result, key)`, the command outcomes the
        snapshot's range remembered, see `SpanExport.results`) replace all of the range's
        command results when given, so retries are answered as on the replica that made it.

        The lock is held while `chunks` is consumed, so every other call on this store waits:
        feed it from memory or a local file, not from a slow socket.
        """
        _check_int("range_id", range_id)
        _check_span(start, end)
        _check_int("applied_index", applied_index)
        _check_int("applied_term", applied_term)

        with self._transaction("BEGIN IMMEDIATE") as conn:
            conn.execute(_SPAN_DELETE_SQL[end is not None], {"start": start, "end": end})
            for chunk in chunks:
                conn.executemany(_INSERT_VERSION_SQL, _rows_in_span(chunk, start, end))
            conn.executemany(_INSERT_VERSION_SQL, _checked_writes(extra_writes))
            conn.execute(
                "INSERT OR REPLACE INTO range_state (range_id, applied_index, applied_term)"
                " VALUES (?, ?, ?)",
                (range_id, applied_index, applied_term),
            )
            _clear_command_results(conn, range_id, applied_index, all_of_them=results is not None)
            if results is not None:
                for chunk in results:
                    conn.executemany(_INSERT_RESULT_SQL, ((range_id,) + row for row in _checked_results(chunk)))


    # --- snapshots installed in two steps: staged off the loop, switched in on it ---

    @staticmethod
    def stage_span(
        staging_path: str, start: bytes, end: bytes | None, chunks: Iterable[Iterable[VersionRow]],
        results: Callable[[], Iterable[Iterable[ResultRow]] | None] | None = None,
    ) -> int:
        """Write a snapshot's rows into a fresh staging SQLite file at `staging_path` (any old
        file there is replaced); returns the number of rows. Touches nothing of the store, so
        it may run on any thread while the store keeps applying: the slow part of installing
        a snapshot (decoding, checking, inserting row by row). Rows are checked as
        `import_span` checks them (ValueError/TypeError for a row outside the span or
        malformed). The staging file is scratch: not synced, removed by `import_staged` or
        `discard_staged`, and a crash leaves it behind harmlessly (the next staging replaces it).
        `results()`, called once the rows are consumed, gives the snapshot's command outcomes
        (or None if it has none); they are staged too and replace the range's on import."""
        _check_span(start, end)
        discard_staged(staging_path)
        try:
            conn = sqlite3.connect(staging_path, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot create snapshot staging file {staging_path}: {e}") from e
        count = 0
        try:
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(_SCHEMA[0])
            conn.execute("BEGIN")
            for chunk in chunks:
                rows = list(_rows_in_span(chunk, start, end))
                conn.executemany(_INSERT_VERSION_SQL, rows)
                count += len(rows)
            result_chunks = results() if results is not None else None
            if result_chunks is not None:
                conn.execute(_STAGED_RESULTS_SCHEMA)
                for chunk in result_chunks:
                    conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", list(_checked_results(chunk)))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            conn.close()
            discard_staged(staging_path)
            raise StoreError(f"snapshot staging file {staging_path}: {type(e).__name__}: {e}") from e
        except BaseException:
            conn.close()
            discard_staged(staging_path)
            raise
        conn.close()
        return count

    def diff_staged(
        self, staging_path: str, range_id: int, start: bytes, end: bytes | None,
        sole_writer: Callable[[Callable[[bytes, bytes | None], list]], bool],
    ) -> int | None:
        """Off the loop (any thread; a connection of its own): compare staged rows with what
        this store holds in the span, in one read snapshot R, and record the difference in the
        staging file (`ins`: staged rows not held here, `gone`: held rows not staged). Returns
        the range's applied index at R -- `import_staged(..., basis=that)` then writes only the
        difference -- or None when the difference cannot be trusted: `sole_writer(scan)` (given
        a scan `(start, end) -> [(key, value)]` of R) says whether only this range can write
        into the span.
        Why it is exact: after R the span changes only through this range's applies (seen in
        its applied index, which import_staged compares with the basis) or another range's --
        none held the span at R, and a range that takes it later makes the install refused."""
        _check_span(start, end)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("ATTACH DATABASE ? AS staged", (staging_path,))
            conn.execute("BEGIN")
            (basis,) = conn.execute(
                "SELECT coalesce(max(applied_index), 0) FROM main.range_state WHERE range_id = ?", (range_id,)
            ).fetchone()   # pins R

            def scan(lo: bytes, hi: bytes | None) -> list:
                sql = _SCAN_SQL[hi is not None, False]
                return [(k, v) for k, v, _w, _l in conn.execute(sql, {"start": lo, "end": hi, "wall": TIMESTAMP_PART_MAX, "logical": TIMESTAMP_PART_MAX})]
            if not sole_writer(scan):
                return None
            bounded = end is not None
            params = {"start": start, "end": end}
            conn.execute("DROP TABLE IF EXISTS staged.ins")
            conn.execute("DROP TABLE IF EXISTS staged.gone")
            conn.execute(
                "CREATE TABLE staged.ins AS SELECT s.key, s.wall, s.logical, s.value FROM staged.versions AS s"
                " WHERE NOT EXISTS (SELECT 1 FROM main.versions AS v WHERE v.key = s.key AND v.wall = s.wall"
                " AND v.logical = s.logical AND v.value IS s.value)"
            )
            conn.execute(
                "CREATE TABLE staged.gone AS SELECT v.key, v.wall, v.logical FROM main.versions AS v"
                f" WHERE {_span('v', bounded)} AND NOT EXISTS (SELECT 1 FROM staged.versions AS s"
                " WHERE s.key = v.key AND s.wall = v.wall AND s.logical = v.logical AND s.value IS v.value)",
                params,
            )
            conn.execute("COMMIT")
            return basis
        except sqlite3.Error as e:
            raise StoreError(f"snapshot staging file {staging_path}: {type(e).__name__}: {e}") from e
        finally:
            conn.close()

    def import_staged(
        self,
        range_id: int,
        start: bytes,
        end: bytes | None,
        staging_path: str,
        applied_index: int,
        applied_term: int,
        *,
        extra_writes: Iterable[tuple[bytes, Timestamp, bytes | None]] = (),
        basis: int | None = None,
    ) -> bool:
        """`import_span` of rows staged by `stage_span`: the same single transaction (delete the
        span, insert the rows and `extra_writes`, set the applied index and term, drop command
        results above it), but the rows move with one set-based INSERT ... SELECT inside
        SQLite instead of one Python call per row. A crash leaves the old state of the span or
        the whole snapshot with its applied index, never a mix. The staging file is removed
        after the commit. Inside a batch, the batch is committed first (ATTACH cannot run
        inside a transaction) and a new one begun after.
        `basis` (from `diff_staged`): if the range's applied index is still the basis, only the
        difference is written (a replica that was a little behind rewrites a few rows, not the
        range); otherwise the whole span is replaced as above. Returns True if the difference
        was used."""
        _check_int("range_id", range_id)
        _check_span(start, end)
        _check_int("applied_index", applied_index)
        _check_int("applied_term", applied_term)
        extra = list(_checked_writes(extra_writes))
        if not os.path.exists(staging_path):
            raise StoreError(f"snapshot staging file {staging_path} is missing")
        bounded = end is not None
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"MVCC store {self._path} is closed")
            in_batch = self._in_batch
            try:
                if in_batch:
                    conn.execute("COMMIT")
                conn.execute("ATTACH DATABASE ? AS staged", (staging_path,))
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        params = {"start": start, "end": end}
                        diff = basis is not None and self._applied(conn, range_id)[0] == basis
                        if diff:
                            conn.execute(
                                "DELETE FROM main.versions WHERE (key, wall, logical) IN"
                                " (SELECT key, wall, logical FROM staged.gone)"
                            )
                        else:
                            conn.execute(_SPAN_DELETE_SQL[bounded], params)
                        conn.execute(
                            "INSERT OR REPLACE INTO main.versions (key, wall, logical, value)"
                            " SELECT v.key, v.wall, v.logical, v.value FROM"
                            f" {'staged.ins' if diff else 'staged.versions'} AS v"
                            f" WHERE {_span('v', bounded)}",
                            params,
                        )
                        conn.executemany(_INSERT_VERSION_SQL, extra)
                        conn.execute(
                            "INSERT OR REPLACE INTO range_state (range_id, applied_index, applied_term)"
                            " VALUES (?, ?, ?)",
                            (range_id, applied_index, applied_term),
                        )
                        staged_results = conn.execute(
                            "SELECT 1 FROM staged.sqlite_master WHERE type = 'table' AND name = 'results'"
                        ).fetchone()
                        _clear_command_results(conn, range_id, applied_index, all_of_them=staged_results is not None)
                        if staged_results is not None:
                            conn.execute(
                                "INSERT INTO command_results (range_id, command_id, raft_index, result, key)"
                                " SELECT ?, command_id, raft_index, result, key FROM staged.results",
                                (range_id,),
                            )
                        conn.execute("COMMIT")
                    finally:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                finally:
                    conn.execute("DETACH DATABASE staged")
                    if in_batch:
                        conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"MVCC store {self._path}: {type(e).__name__}: {e}") from e
        discard_staged(staging_path)
        return diff


def _clear_command_results(conn: sqlite3.Connection, range_id: int, applied_index: int, *, all_of_them: bool) -> None:
    """Before a snapshot's data replaces a range's: drop all its command outcomes when the
    snapshot brings its own, else (a snapshot without them, the older format) only those above
    the snapshot's index -- they would claim commands the new data does not contain."""
    if all_of_them:
        conn.execute("DELETE FROM command_results WHERE range_id = ?", (range_id,))
    else:
        conn.execute("DELETE FROM command_results WHERE range_id = ? AND raft_index > ?", (range_id, applied_index))


def _commit(conn: sqlite3.Connection) -> None:
    """COMMIT, retried while SQLite says BUSY or LOCKED (the transaction stays open then), at
    most sqlite_busy_retries_max times; any other error, or BUSY past the bound, raises."""
    for attempt in range(constants.sqlite_busy_retries_max + 1):
        try:
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as e:
            if ((getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF) not in _BUSY_CODES \
                    or attempt == constants.sqlite_busy_retries_max or not conn.in_transaction:
                raise
            time.sleep(constants.sqlite_busy_retry_interval_s)


def discard_staged(staging_path: str) -> None:
    """Remove a staging file of `MVCCStore.stage_span` (and SQLite's side files); idempotent."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging_path + suffix)


ResultRow = tuple  # (command_id: bytes, raft_index: int, result: bytes | None, key: bytes | None)

_INSERT_RESULT_SQL = (
    "INSERT OR REPLACE INTO command_results (range_id, command_id, raft_index, result, key) VALUES (?, ?, ?, ?, ?)"
)
_STAGED_RESULTS_SCHEMA = (
    "CREATE TABLE results (command_id BLOB PRIMARY KEY, raft_index INTEGER NOT NULL, result BLOB, key BLOB)"
)


def _checked_results(chunk: Iterable[Any]) -> Iterator[ResultRow]:
    """Command outcomes from a snapshot (bad input from a peer raises ValueError/TypeError).
    A row of three, from a snapshot written before outcomes kept their key, gets key None."""
    for row in chunk:
        if not isinstance(row, (list, tuple)) or len(row) not in (3, 4):
            raise ValueError(f"snapshot command result {row!r} is not (command_id, raft_index, result, key)")
        command_id, raft_index, result = row[:3]
        key = row[3] if len(row) == 4 else None
        _check_key("snapshot command_id", command_id)
        _check_int("snapshot command raft_index", raft_index)
        if result is not None and not isinstance(result, bytes):
            raise TypeError(f"snapshot command result must be bytes or None, got {type(result).__name__}")
        yield command_id, raft_index, result, _check_value("snapshot command key", key)


def _rows_in_span(chunk: Iterable[VersionRow], start: bytes, end: bytes | None) -> Iterator[VersionRow]:
    for row in chunk:
        key, wall, logical, value = row
        _check_key("snapshot key", key)
        if key < start or (end is not None and key >= end):
            raise ValueError(f"snapshot row key {key!r} is outside the span [{start!r}, {end!r})")
        wall = _check_int("snapshot wall", wall)
        logical = _check_int("snapshot logical", logical)
        yield key, wall, logical, _check_value("snapshot value", value)


def _get(conn: sqlite3.Connection, key: bytes, ts: Timestamp) -> tuple[bytes | None, Timestamp] | None:
    row = conn.execute(_GET_SQL, {"key": key, "wall": ts[0], "logical": ts[1]}).fetchone()
    return None if row is None else (row[0], (row[1], row[2]))


def _scan(conn: sqlite3.Connection, start: bytes, end: bytes | None, ts: Timestamp,
          limit: int) -> list[tuple[bytes, bytes, Timestamp]]:
    """MVCCStore.scan's query, on `conn`, inside the caller's read transaction."""
    rows: list[tuple[bytes, bytes, Timestamp]] = []
    skip_rows_max = SCAN_SKIP_ROWS_MAX
    bounded = end is not None
    params = {"start": start, "end": end, "wall": ts[0], "logical": ts[1]}
    sql = _SCAN_SQL[bounded, False]
    last_key: bytes | None = None
    while True:
        cursor = conn.execute(sql, params)
        reseek = False
        skipped = 0
        try:
            for key, value, v_wall, v_logical in cursor:
                if key == last_key:
                    # An older version of a key already decided: hidden.
                    skipped += 1
                    if skipped > skip_rows_max:
                        reseek = True
                        break
                    continue
                last_key, skipped = key, 0
                if value is not None:
                    rows.append((key, value, (v_wall, v_logical)))
                    if len(rows) >= limit:
                        break
        finally:
            cursor.close()
        if not reseek:
            return rows
        sql = _SCAN_SQL[bounded, True]
        params["start"] = last_key


_NEWEST_BETWEEN_SQL = {
    b: ("SELECT v.wall, v.logical FROM versions AS v"
        f" WHERE {_span('v', b)} AND (v.wall, v.logical) > (:wall, :logical)"
        " AND (v.wall, v.logical) <= (:hwall, :hlogical)")
    for b in (False, True)
}


class MVCCReader:
    """A read-only SQLite connection to a store's file (WAL mode: it reads the last committed
    state and never blocks the writer), for the reads a leaseholder serves off the node loop
    (kvserver.store.Store._serve_read). One thread at a time; `snapshot()` holds one read
    transaction, so every read in it sees the same committed state."""

    def __init__(self, path: str) -> None:
        self._path = path
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open a reader of MVCC store {path}: {e}") from e

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["MVCCReader"]:
        try:
            self._conn.execute("BEGIN")
            try:
                yield self
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"MVCC store {self._path} (reader): {type(e).__name__}: {e}") from e

    def get(self, key: bytes, ts: Timestamp) -> tuple[bytes | None, Timestamp] | None:
        return _get(self._conn, key, ts)

    def scan(self, start: bytes, end: bytes | None, ts: Timestamp, limit: int) -> list[tuple[bytes, bytes, Timestamp]]:
        return _scan(self._conn, start, end, ts, limit) if limit > 0 else []

    def newest_between(self, start: bytes, end: bytes | None, low: Timestamp, high: Timestamp) -> Timestamp | None:
        """The newest version in `[start, end)` above `low` and at or below `high` (tombstones
        count): what makes a read at `low` uncertain (Store._serve_read)."""
        return _newest_between(self._conn, start, end, low, high)

    def close(self) -> None:
        self._conn.close()


def _newest_between(conn: sqlite3.Connection, start: bytes, end: bytes | None, low: Timestamp,
                    high: Timestamp) -> Timestamp | None:
    best: Timestamp | None = None
    params = {"start": start, "end": end, "wall": low[0], "logical": low[1], "hwall": high[0], "hlogical": high[1]}
    for wall, logical in conn.execute(_NEWEST_BETWEEN_SQL[end is not None], params):
        if best is None or (wall, logical) > best:
            best = (wall, logical)
    return best



class SpanExport:
    """Iterator of chunks over one read snapshot of a span; see `MVCCStore.export_span`.

    Owns a private SQLite connection, closed when the iterator is exhausted or `close()`d.
    One consumer at a time (not for sharing between threads).
    """

    def __init__(
        self, path: str, start: bytes, end: bytes | None, chunk_rows: int, range_id: int | None
    ) -> None:
        self._path = path
        self._chunk_rows = chunk_rows
        self._range_id = range_id
        self.applied_index: int | None = None
        self.applied_term: int | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"MVCC store {path}: cannot open export connection: {e}") from e
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("BEGIN")
            # The first read pins the WAL snapshot; the cursor below reads the same one.
            state = conn.execute(_APPLIED_SQL, (range_id or 0,)).fetchone()
            if range_id is not None:
                self.applied_index, self.applied_term = (0, 0) if state is None else state
            self._cursor: sqlite3.Cursor | None = conn.execute(
                _EXPORT_SQL[end is not None], {"start": start, "end": end}
            )
        except sqlite3.Error as e:
            self._conn = None
            conn.close()
            raise StoreError(f"MVCC store {path}: export failed: {e}") from e
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def __iter__(self) -> SpanExport:
        return self

    def __next__(self) -> list[VersionRow]:
        if self._cursor is None:
            raise StopIteration
        try:
            rows = self._cursor.fetchmany(self._chunk_rows)
        except sqlite3.Error as e:
            self.close()
            raise StoreError(f"MVCC store {self._path}: export failed: {e}") from e
        if not rows:
            self._cursor = None
            if self._range_id is None:
                self.close()
            raise StopIteration
        return rows

    def results(self) -> Iterator[list[ResultRow]]:
        """After the rows: the range's command outcomes `(command_id, raft_index, result, key)` in
        the same read snapshot, in chunks (export_span with a range_id only); then closes."""
        if self._range_id is None:
            raise ValueError("export_span was not given a range_id")
        conn = self._conn
        if conn is None:
            return
        try:
            cursor = conn.execute(
                "SELECT command_id, raft_index, result, key FROM command_results WHERE range_id = ?"
                " ORDER BY command_id", (self._range_id,))
            while True:
                chunk = cursor.fetchmany(self._chunk_rows)
                if not chunk:
                    break
                yield chunk
        except sqlite3.Error as e:
            raise StoreError(f"MVCC store {self._path}: export failed: {e}") from e
        finally:
            self.close()

    def close(self) -> None:
        """End the read snapshot and close the connection. Idempotent."""
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None:
            conn.close()  # Closing ends the read transaction.

    def __enter__(self) -> SpanExport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
