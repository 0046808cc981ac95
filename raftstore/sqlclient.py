"""SQL client in the shape of DB-API 2.0 (PEP 249) for the ``sql`` op of `raftstore.wire`.

Why: Python programs (and ``raftstore sql``) should talk to raftstore the way they talk to any
database: ``connect``, a cursor, ``execute(sql, params)``, ``fetchall``, ``description``,
``rowcount`` and the standard exception classes, with nothing raftstore-specific to learn
beyond the commit timestamp each statement carries (`Cursor.timestamp`).

    >>> import raftstore
    >>> with raftstore.connect("127.0.0.1:26257") as conn:
    ...     cur = conn.cursor()
    ...     cur.execute("INSERT INTO users (id, name) VALUES ($1, $2)", [1, "ada"])
    ...     cur.execute("SELECT name FROM users WHERE id = $1", [1]).fetchall()
    [('ada',)]

Parameters: ``paramstyle`` is ``"numeric"`` in PostgreSQL's spelling: ``$1``, ``$2``, ... take
the 1st, 2nd, ... element of the params sequence; ``%s`` placeholders (taken in order) work
too. Either way the text and the params go to the server as they are and the server binds
the params as values; nothing is ever spliced into the text on this side, so ``%`` needs no
escaping. A parameter is None, bool, int (64-bit), float, str, bytes (or bytearray,
memoryview), or a `datetime.datetime` / `datetime.date` for a TIMESTAMP (an aware datetime is
converted to UTC; a date means its midnight). TIMESTAMP result columns come back as naive
`datetime.datetime`.

Transactions: every statement commits on its own (autocommit). `Connection.commit` is
therefore a no-op and `Connection.rollback` raises NotSupportedError: there is nothing it
could undo.

Retries: the connection retries within `timeout_s` on its own, but never runs a statement
twice. A statement carries no command id the server could deduplicate, so it goes to another
address only after a failure before it could reach a node (the connection failed or was
refused) or after an answer that says nothing of it applied (``unavailable``, ``draining``).
Once it may have reached a node without such an answer - the connection broke after it was
sent, or no answer came within `timeout_s` - the failure raises OperationalError at once: for
a write with ``ambiguous = True`` (the statement may have committed; look, with a SELECT,
before running it again), for a read (a statement starting with SELECT, SHOW or EXPLAIN
without ANALYZE) plainly - it may still be running there, and a read that timed out is not
started again elsewhere. A statement canceled by its ``statement_timeout`` is answered
SQLSTATE 57014 (``query_canceled``) and is never sent again either. A statement that failed
after some of its writes applied is answered SQLSTATE 40003 (statement completion unknown,
``ambiguous``; the message says which rows may remain) and is never sent again. A write
conflict before anything of the statement applied is 40001; the server has already run it
again a few times, and the caller may too.

Errors: every error is a subclass of `Error` and carries ``sql_code`` (the server's kind of SQL
failure, or None), ``sqlstate`` (PostgreSQL's five-character code of that kind, or None),
``position`` (0-based character offset into the statement text, or None), ``ambiguous`` and
``code`` (the wire error code, or None for errors raised on this side).

    sql_code syntax, unsupported, undefined_table, undefined_column, duplicate_table, undefined_object,
             invalid_parameter                        -> ProgrammingError
    sql_code unique_violation, not_null_violation     -> IntegrityError
    sql_code datatype_mismatch, division_by_zero, invalid_value -> DataError
    sql_code feature_not_supported                    -> NotSupportedError
    sql_code serialization_failure (40001), statement_completion_unknown (40003),
             unsatisfiable_bounded_staleness (XCUBS), query_canceled (57014),
             program_limit_exceeded (54000)           -> OperationalError
    any ambiguous outcome; unavailable, draining, connection failures -> OperationalError
    bad_request, protocol (client and server disagree)                -> InterfaceError
    too_large                                                         -> DataError
    internal                                                          -> InternalError
    anything else                                                     -> DatabaseError

This is an edge module (the sockets live in `raftstore.kv.Client`, whose connection and retry
machinery it reuses); `statement_is_read` and `leading_keywords` are pure.
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from hlc import Timestamp as HLCTimestamp
from raftstore import constants, kv, wire
from raftstore.sqltext import leading_keywords, statement_is_read
from raftstore.errors import (
    SQLSTATE_BY_SQL_CODE,
    AmbiguousCommitError,
    BadRequestError,
    InternalError as _ServerInternalError,
    ProtocolError,
    RaftstoreError,
    SqlError,
    TooLargeError,
    UnavailableError,
)

__all__ = [
    "BINARY",
    "Binary",
    "Column",
    "Connection",
    "Cursor",
    "DATETIME",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NUMBER",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "ROWID",
    "STRING",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "apilevel",
    "connect",
    "leading_keywords",
    "paramstyle",
    "statement_is_read",
    "threadsafety",
    "wait_for_sql",
]

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "numeric"  # $1, $2, ... (and %s); see the module docstring

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1  # msgpack's range; the server checks the column type's own range


# --- exceptions (PEP 249) -------------------------------------------------------------------


class Warning(Exception):  # noqa: A001 - the name PEP 249 mandates
    """Important warnings (PEP 249). Not raised at present."""


class Error(Exception):
    """Base of every error this module raises.

    `sql_code`: the server's kind of SQL failure (``syntax``, ``unique_violation``, ...) or None.
    `sqlstate`: the SQLSTATE of that kind (``42601``, ``23505``, ``40001``, ``40003``, ...) or None.
    `position`: 0-based character offset into the statement text of the construct at fault, or
    None. `ambiguous`: the statement may or may not have committed. `code`: the wire error code
    (``sql_error``, ``unavailable``, ...), None for errors raised by the client itself.
    """

    def __init__(
        self,
        message: str,
        *,
        sql_code: str | None = None,
        position: int | None = None,
        ambiguous: bool = False,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.sql_code = sql_code
        self.sqlstate = SQLSTATE_BY_SQL_CODE.get(sql_code) if sql_code is not None else None
        self.position = position
        self.ambiguous = ambiguous
        self.code = code


class InterfaceError(Error):
    """The client was misused (closed cursor, bad address) or client and server disagree."""


class DatabaseError(Error):
    """An error reported by (or about) the database."""


class DataError(DatabaseError):
    """A value cannot be handled: wrong type for a column, division by zero, out of range."""


class OperationalError(DatabaseError):
    """No node could serve the statement in time, or its outcome is unknown (`ambiguous`)."""


class IntegrityError(DatabaseError):
    """A constraint would be violated (duplicate primary key, NULL in a NOT NULL column)."""


class InternalError(DatabaseError):
    """The server failed in a way it did not expect."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: bad syntax, unknown table or column, bad parameters."""


class NotSupportedError(DatabaseError):
    """The statement or method uses something raftstore does not support."""


_CLASS_BY_SQL_CODE: dict[str, type[Error]] = {
    "syntax": ProgrammingError,
    "unsupported": ProgrammingError,
    "undefined_table": ProgrammingError,
    "undefined_column": ProgrammingError,
    "duplicate_table": ProgrammingError,
    "undefined_object": ProgrammingError,
    "invalid_parameter": ProgrammingError,
    "unique_violation": IntegrityError,
    "not_null_violation": IntegrityError,
    "datatype_mismatch": DataError,
    "division_by_zero": DataError,
    "invalid_value": DataError,
    "feature_not_supported": NotSupportedError,
    "serialization_failure": OperationalError,
    "statement_completion_unknown": OperationalError,
    "unsatisfiable_bounded_staleness": OperationalError,
    "query_canceled": OperationalError,
    "program_limit_exceeded": OperationalError,   # as psycopg2 maps SQLSTATE class 54
    "cardinality_violation": ProgrammingError,    # psycopg2's CardinalityViolation (21000)
    "invalid_regular_expression": DataError,      # SQLSTATE class 22
}


def _error_from(exc: RaftstoreError) -> Error:
    """The PEP 249 error for an operating error of `raftstore.kv.Client` (see module doc)."""
    sql = exc if isinstance(exc, SqlError) else exc.__cause__
    sql_code = sql.sql_code if isinstance(sql, SqlError) else None
    position = sql.position if isinstance(sql, SqlError) else None
    cls: type[Error]
    if exc.ambiguous or isinstance(exc, AmbiguousCommitError):
        cls = OperationalError
    elif isinstance(exc, SqlError):
        cls = _CLASS_BY_SQL_CODE.get(exc.sql_code, DatabaseError)
    elif isinstance(exc, UnavailableError):  # also draining and connection_failed
        cls = OperationalError
    elif isinstance(exc, (BadRequestError, ProtocolError)):
        cls = InterfaceError
    elif isinstance(exc, TooLargeError):
        cls = DataError
    elif isinstance(exc, _ServerInternalError):
        cls = InternalError
    else:
        cls = DatabaseError
    message = str(exc)
    if exc.ambiguous and not isinstance(exc, AmbiguousCommitError) and sql_code != "statement_completion_unknown":
        message += (
            "; the statement may have committed (check with a SELECT before running it again)"
        )
    return cls(
        message,
        sql_code=sql_code,
        position=position,
        ambiguous=bool(exc.ambiguous),
        code=exc.code,
    )


# --- type objects and constructors (PEP 249) -------------------------------------------------


class _TypeObject:
    """Compares equal to every `Cursor.description` type_code (an SQL type name) it covers."""

    def __init__(self, *names: str):
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other.upper() in self.names
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"<type {'/'.join(sorted(self.names))}>"


STRING = _TypeObject("TEXT", "STRING", "VARCHAR", "CHAR")
BINARY = _TypeObject("BYTES", "BYTEA", "BLOB")
NUMBER = _TypeObject("INT", "INTEGER", "BIGINT", "SMALLINT", "FLOAT", "REAL", "DOUBLE", "BOOL")
DATETIME = _TypeObject("TIMESTAMP")
ROWID = _TypeObject()

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 name
    return datetime.date.fromtimestamp(ticks)


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802 - PEP 249 name
    return datetime.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802 - PEP 249 name
    return datetime.datetime.fromtimestamp(ticks)


class Column(NamedTuple):
    """One `Cursor.description` entry: PEP 249's 7-tuple. `type_code` is the SQL type name the
    server reports (``INT``, ``TEXT``, ``TIMESTAMP``, ...); the sizes are not known (None)."""

    name: str
    type_code: str
    display_size: None = None
    internal_size: None = None
    precision: None = None
    scale: None = None
    null_ok: None = None


# --- statement text (pure) ------------------------------------------------------------------

# leading_keywords and statement_is_read live in raftstore.sqltext (the pgwire port uses them too).

# --- parameters and results -----------------------------------------------------------------


def _encode_params(params: Any) -> list[Any]:
    if isinstance(params, (str, bytes, bytearray, memoryview)) or not isinstance(
        params, Sequence
    ):
        if isinstance(params, dict):
            raise ProgrammingError(
                "params must be a sequence ($1 is params[0]); named parameters are not "
                "supported (paramstyle is 'numeric')"
            )
        raise ProgrammingError(
            f"params must be a list or tuple of values, got {type(params).__name__}"
        )
    if len(params) > wire.sql_params_count_max:
        raise ProgrammingError(
            f"{len(params)} parameters is more than the limit of {wire.sql_params_count_max}"
        )
    return [_encode_param(index, value) for index, value in enumerate(params)]


def _encode_param(index: int, value: Any) -> Any:
    where = f"parameter ${index + 1}"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DataError(f"{where} = {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(f"{where} is not valid text: {exc.reason}") from None
        return str(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(datetime.timezone.utc)
        return ["ts", wire.format_sql_timestamp(value.replace(tzinfo=None))]
    if isinstance(value, datetime.date):
        return ["ts", wire.format_sql_timestamp(datetime.datetime.combine(value, datetime.time()))]
    raise ProgrammingError(
        f"{where} has type {type(value).__name__}, which cannot be sent; use None, bool, int, "
        "float, str, bytes or datetime"
    )


class _Result(NamedTuple):
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int
    status: str
    ts: HLCTimestamp
    session: dict | None = None   # the SQL session as the server left it (sent back with the next statement)


_VALUE_TYPES = (type(None), bool, int, float, str, bytes)


def _check_sql_result(result: Any) -> _Result:
    """Check an ok answer of the ``sql`` op (see `raftstore.wire`) and convert its rows: lists
    become tuples, TIMESTAMP texts datetimes. Raises ValueError naming what is malformed."""
    if not isinstance(result, dict):
        raise ValueError(f"sql result must be a map, got {type(result).__name__}")
    ts = HLCTimestamp.from_wire(result.get("ts"))
    columns, types, rows = result.get("columns"), result.get("types"), result.get("rows")
    rowcount, status = result.get("rowcount"), result.get("status")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ValueError("sql result columns must be an array of str")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ValueError("sql result types must be an array of str")
    if len(types) != len(columns):
        raise ValueError(f"sql result has {len(columns)} columns but {len(types)} types")
    if isinstance(rowcount, bool) or not isinstance(rowcount, int):
        raise ValueError(f"sql result rowcount must be an int, got {type(rowcount).__name__}")
    if not isinstance(status, str):
        raise ValueError(f"sql result status must be a str, got {type(status).__name__}")
    if not isinstance(rows, list):
        raise ValueError(f"sql result rows must be an array, got {type(rows).__name__}")
    timestamp_columns = [i for i, name in enumerate(types) if name.upper() == "TIMESTAMP"]
    converted = []
    for row in rows:
        if not isinstance(row, list) or len(row) != len(columns):
            raise ValueError(f"sql result rows must be arrays of {len(columns)} values")
        for value in row:
            if not isinstance(value, _VALUE_TYPES):
                raise ValueError(f"sql result value of type {type(value).__name__}")
        for i in timestamp_columns:
            if row[i] is not None:
                row[i] = wire.parse_sql_timestamp(row[i])
        converted.append(tuple(row))
    session = result.get("session")
    if session is not None and wire.sql_session_problem(session) is not None:
        raise ValueError(f"sql result session {wire.sql_session_problem(session)}")
    return _Result(columns, types, converted, rowcount, status, ts, session)


# --- connection and cursor ------------------------------------------------------------------


def wait_for_sql(conn: "Connection", timeout_s: float) -> None:
    """Run ``SELECT 1`` on conn every 0.2 s until it answers (a cluster just started may not
    have elected its leaders yet); after timeout_s the last error is raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def connect(
    addresses: str | Iterable[str],
    timeout_s: float = constants.client_timeout_s_default,
) -> Connection:
    """A `Connection` to the node(s) at `addresses`: ``"host:port"``, ``"host:port,host:port"``
    or a list of such strs, tried in order.

    The connection is opened here: if no address accepts one, OperationalError is raised now
    (at once when every address refuses it, else within `timeout_s`), not at the first
    statement. Nothing is sent until the first statement. `timeout_s` bounds the connect and
    each statement, retries included. A malformed address (or a URL other than
    ``raftstore://HOST:PORT[,HOST:PORT...]``) raises InterfaceError.
    """
    return Connection(addresses, timeout_s=timeout_s)


class Connection:
    """A DB-API connection; make one with `connect`. Not to be shared between threads.

    Every statement commits on its own: `commit` does nothing, `rollback` raises
    NotSupportedError. Closing closes every cursor's access; `with connect(...) as conn:`
    closes the connection at the end of the block.
    """

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(
        self,
        addresses: str | Iterable[str],
        *,
        timeout_s: float = constants.client_timeout_s_default,
    ):
        try:
            # A statement may legitimately take long, so one attempt may use the whole budget.
            self._client = kv.Client(
                addresses, timeout_s=timeout_s, attempt_timeout_s_max=timeout_s
            )
        except (TypeError, ValueError) as exc:
            raise InterfaceError(str(exc)) from None
        try:
            self._client.connect()
        except RaftstoreError as exc:
            self._client.close()
            raise _error_from(exc) from exc
        self._closed = False
        # The SQL session (its variables, its causality token) as the last answer left it, sent
        # with every statement: a statement resent to another node runs in the same session.
        self._session: dict | None = None

    @property
    def addresses(self) -> list[str]:
        return self._client.addresses

    @property
    def timeout_s(self) -> float:
        return self._client.timeout_s

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<raftstore.sqlclient.Connection {','.join(self.addresses)}{state}>"

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        """Does nothing: every statement has already committed when `execute` returns."""
        self._check_open()

    def rollback(self) -> None:
        """Always raises NotSupportedError: statements autocommit, so there is nothing to undo."""
        self._check_open()
        raise NotSupportedError(
            "rollback is not supported: every statement commits on its own (autocommit)"
        )

    def close(self) -> None:
        """Close the connection. Idempotent; later use raises InterfaceError."""
        self._closed = True
        self._client.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def _run(self, sql: Any, params: Any) -> _Result:
        """Send one statement and return its checked result (module doc: retries, errors)."""
        self._check_open()
        if not isinstance(sql, str):
            raise ProgrammingError(f"the statement must be a str, got {type(sql).__name__}")
        try:
            size = len(sql.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ProgrammingError(f"the statement is not valid text: {exc.reason}") from None
        if size > wire.sql_text_bytes_max:
            raise ProgrammingError(
                f"the statement is {size} bytes, more than the limit of "
                f"{wire.sql_text_bytes_max} bytes"
            )
        args: dict[str, Any] = {"sql": sql}
        if params is not None:
            args["params"] = _encode_params(params)
        if self._session is not None:
            args["session"] = self._session
        read = statement_is_read(sql)
        try:
            # Never resent once it may have reached a node, a read neither (module doc: Retries).
            result = self._client.request(
                "sql", args, _check_sql_result, write=not read, resend=False
            )
        except RaftstoreError as exc:
            raise _error_from(exc) from exc
        if result.session is not None:
            self._session = result.session
        return result


class Cursor:
    """A DB-API cursor: runs statements on its connection and holds the last one's result.

    After `execute`: `description` (None for a statement without result columns), `rowcount`
    (rows returned or affected, as the server counts them; -1 before any statement),
    `statusmessage` (the server's command tag, e.g. ``INSERT 3``) and `timestamp` (the
    statement's commit or read timestamp, an `hlc.Timestamp`). The rows are held in memory.
    """

    def __init__(self, connection: Connection):
        self.connection = connection
        self.arraysize = 1
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self.description: list[Column] | None = None
        self.rowcount = -1
        self.statusmessage: str | None = None
        self.timestamp: HLCTimestamp | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._next_row = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the cursor and drop its rows. Idempotent; later use raises InterfaceError."""
        self._closed = True
        self._rows = []

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check_open()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Cursor:
        """Run one statement with `params` bound to ``$1``.. / ``%s`` (module doc). Returns the
        cursor. Raises a subclass of Error; after an error the cursor holds no result."""
        self._check_open()
        self._reset()
        result = self.connection._run(sql, params)
        if result.columns:
            self.description = [
                Column(name, type_code) for name, type_code in zip(result.columns, result.types)
            ]
        self.rowcount = result.rowcount
        self.statusmessage = result.status
        self.timestamp = result.ts
        self._rows = result.rows
        return self

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> Cursor:
        """Run `sql` once per params sequence, in order, stopping at the first error (the
        statements before it have committed). `rowcount` is the total; no result set is kept."""
        self._check_open()
        total = 0
        ran = False
        for params in seq_of_params:
            self.execute(sql, params)
            ran = True
            total = total + self.rowcount if self.rowcount >= 0 and total >= 0 else -1
        self._rows = []
        self.description = None
        self.rowcount = total if ran else -1
        return self

    def _check_result_set(self) -> None:
        self._check_open()
        if self.description is None:
            raise ProgrammingError("no results to fetch: the last statement returned no rows")

    def fetchone(self) -> tuple[Any, ...] | None:
        self._check_result_set()
        if self._next_row >= len(self._rows):
            return None
        row = self._rows[self._next_row]
        self._next_row += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check_result_set()
        count = self.arraysize if size is None else size
        rows = self._rows[self._next_row : self._next_row + max(count, 0)]
        self._next_row += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check_result_set()
        rows = self._rows[self._next_row :]
        self._next_row = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def setinputsizes(self, sizes: Any) -> None:
        """Does nothing (PEP 249 allows that)."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Does nothing (PEP 249 allows that)."""

    def callproc(self, procname: str, parameters: Any = None) -> Any:
        raise NotSupportedError("stored procedures are not supported")

    def nextset(self) -> None:
        raise NotSupportedError("a statement returns at most one result set")
