"""The PostgreSQL port (`--pg-addr`): the PostgreSQL v3 frontend/backend protocol on the node's
asyncio loop, so psql, psycopg, pg8000, SQLAlchemy and BI tools connect unchanged. Every
statement goes to the same SQL gateway as the native client port (sql.gateway.Gateway.handle),
each connection keeping its own session; a connection's statements run one at a time, in order.

Why written here and not taken from a library: riffq runs its own Rust server with its own
threads, accept loop and buffers, so it could not share the node's event loop, ClientLimits and
MemoryBudget, nor stop a statement through raftstore.coop; buenavista is a thread-per-connection
proxy (socketserver) with the same problem; pygwire is only a message codec, and the codec is the
small part (a few struct formats below): the limits and the streaming are what this module is.

Supported (insecure mode only, today's only mode: trust authentication for any user name):
  * startup: SSLRequest and GSSENCRequest are answered 'N' (go on unencrypted); a
    StartupMessage of protocol 3.0 (user, database, options, application_name...); another
    version is refused with 08P01 naming it. AuthenticationOk, ParameterStatus
    (server_version, encodings UTF8, DateStyle ISO, MDY, TimeZone UTC, integer_datetimes,
    standard_conforming_strings, application_name, is_superuser), BackendKeyData (a pid and a
    secret per connection), ReadyForQuery. The transaction status is always 'I': there are no
    transactions (BEGIN/COMMIT/ROLLBACK answer 0A000 from the engine, with a hint to use
    autocommit).
  * simple query: several statements separated by ';' run one by one, stopping at the first
    error; an empty query answers EmptyQueryResponse.
  * extended query: Parse (named and unnamed; parameter OIDs given or left 0), Bind (text and
    binary parameters, per-column result formats), Describe (statement: ParameterDescription
    and RowDescription/NoData; portal: RowDescription/NoData), Execute (a row limit suspends
    the portal: PortalSuspended, and the next Execute goes on), Close, Sync, Flush. After an
    error every message up to Sync is skipped, as PostgreSQL does. A SELECT is described by
    planning it (Gateway.describe, nothing run); a read whose columns only running tells (SHOW,
    EXPLAIN) or whose column types hang on its parameters (`SELECT $1 + 1`) is run at a
    portal's Describe and its rows kept for the Execute. A statement's Describe (before Bind)
    sends such a column as text, and each parameter as the type the client declared, else text.
  * types: INT int8 (20), FLOAT float8 (701), TEXT text (25), BOOL (16), BYTES bytea (17),
    TIMESTAMP (1114), in text and binary both ways; parameters sent as int2/int4/int8,
    float4/float8, bool, bytea, text/varchar/unknown, timestamp/timestamptz/date are taken;
    a text parameter of no declared type stays a string, which the engine types by context.
  * CommandComplete tags from the engine's status (INSERT/UPSERT n: 'INSERT 0 n');
    ErrorResponse with SQLSTATE (raftstore.errors.SQLSTATE_BY_SQL_CODE), message, hint and
    1-based position; CancelRequest stops the running statement of the connection whose pid
    and secret it carries (57014, through raftstore.coop.Cancel); Terminate.
Not supported: TLS, passwords, COPY, FunctionCall, NOTIFY, NoticeResponse, transactions.

Limits (README "Limits"): the client port's ClientLimits and the node's one MemoryBudget (the
native port's, shared). This port counts its connections apart from the native port's, each
up to --max-client-connections (fit_to_open_files shares the descriptors among both); past it the idle
connection inactive the longest is closed (FATAL 57P01) or, none idle, the newcomer refused
(FATAL 53300). A connection idle for idle_timeout_s is closed; a message begun must be whole
within frame_deadline_s; a message longer than pg_message_bytes_max (or a startup packet longer
than pg_startup_bytes_max) is refused by its length field, before any of it is read, and the
connection closed. Bytes read and not yet handled, and answers not yet taken by the kernel, are
charged to the budget; while it is spent, a connection holding more than client_conn_free_bytes
is not read, and one whose message begun stays unread client_budget_wait_s is refused (53200).
Messages are handled one at a time, so a connection whose answers are not read is not read
either (backpressure); an answer unread write_timeout_s closes it. Results stream: rows are
encoded and written pg_batch_bytes at a time, each batch charged and drained before the next; a
result past result_bytes_max stops with 54000 (the rows sent before stand, as when PostgreSQL
fails mid-result). Prepared statements and portals are capped per connection in number
(pg_prepared_max) and bytes (pg_prepared_bytes_max), and charged to the budget, none kept while
it is spent (53200): a flood of Parse messages without Sync gets an error and is then skipped
to the Sync, so the floods of many connections stay within the budget together.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import itertools
import logging
import math
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from raftstore import constants, coop
from raftstore.errors import SQLSTATE_BY_SQL_CODE
from raftstore.loglimit import LogLimiter
from raftstore.node.metrics import outcome_label, statement_type
from raftstore.server.client_port import ClientLimits, MemoryBudget, peer_host
from raftstore.sqltext import leading_keywords, statement_is_read, statements as split_statements

logger = logging.getLogger(__name__)

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# Our SQL types and the PostgreSQL type OIDs they are sent as; anything untyped goes as text.
OID_BY_TYPE = {"INT": 20, "FLOAT": 701, "TEXT": 25, "BOOL": 16, "BYTES": 17, "TIMESTAMP": 1114,
               "ARRAY": 1009}   # an array (catalog queries: array_agg, ARRAY(SELECT ...)) goes out as text[]
TEXT_ARRAY_OID = 1009
TEXT_OID = 25
TYPE_SIZE = {20: 8, 701: 8, 25: -1, 16: 1, 17: -1, 1114: 8}
_INT_OIDS = {20: ">q", 23: ">i", 21: ">h"}
_FLOAT_OIDS = {701: ">d", 700: ">f"}
_TEXTLIKE_OIDS = {0, 25, 705, 1043, 1042, 19}   # unspecified, text, unknown, varchar, bpchar, name
_TS_OIDS = {1114, 1184}
_DATE_OID = 1082
_PG_EPOCH = datetime.datetime(2000, 1, 1)
_TRANSACTION_WORDS = frozenset({"BEGIN", "START", "COMMIT", "ROLLBACK", "END", "ABORT", "SAVEPOINT", "RELEASE"})
AUTOCOMMIT_HINT = ('raftstore has no transactions yet: use autocommit (psycopg: autocommit=True; '
                   'SQLAlchemy: isolation_level="AUTOCOMMIT", use_native_hstore=False)')
# Error codes of the native protocol (raftstore.errors) that are not SQL errors, as SQLSTATEs.
_SQLSTATE_BY_CODE = {"unavailable": "57P03", "draining": "57P01", "ambiguous": "40003", "too_large": "54000",
                     "bad_request": "08P01"}

_I32 = struct.Struct(">i")
_HEAD = struct.Struct(">ci")     # a message's type byte and length (the length counts itself)


class PgGateway(Protocol):
    """What this port needs of the SQL gateway (sql.gateway.Gateway)."""

    async def handle(self, args: dict, state: dict | None = None, cancel: coop.Cancel | None = None) -> dict:
        """Run one statement (`args`: sql, params) in the session `state`; answer a response map."""
        ...

    async def describe(self, sql: str) -> dict:
        """The parameter count and, for a SELECT, the columns and types of `sql`, not run."""
        ...

    def pg_startup(self, parameters: dict[str, str]) -> dict:
        """A startup packet's parameters as a session: {"settings", "status"} or {"error"}."""
        ...


class ProtocolViolation(Exception):
    """The client broke the protocol: it is told (FATAL 08P01, or the code given) and closed."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.message, self.sqlstate = message, sqlstate


class _Closing(Exception):
    """A limit ends a connection: the message says which (logged)."""


# --- the codec: pure functions ---------------------------------------------------------------------

def message(kind: bytes, body: bytes = b"") -> bytes:
    """One backend message: type byte, length (itself included), body."""
    return kind + _I32.pack(len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\0", b"") + b"\0"


def error_response(sqlstate: str, text: str, hint: str | None = None, position: int | None = None,
                   severity: str = "ERROR") -> bytes:
    """ErrorResponse: severity (both forms), SQLSTATE, message, hint and 1-based position if known."""
    body = b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(sqlstate) + b"M" + _cstr(text)
    if hint:
        body += b"H" + _cstr(hint)
    if position is not None:
        body += b"P" + _cstr(str(position))
    return message(b"E", body + b"\0")


def row_description(columns: list[str], types: list[str], formats: list[int]) -> bytes:
    parts = [struct.pack(">h", len(columns))]
    for i, (name, kind) in enumerate(zip(columns, types)):
        oid = OID_BY_TYPE.get(kind, TEXT_OID)
        parts.append(_cstr(name) + struct.pack(">ihihih", 0, 0, oid, TYPE_SIZE.get(oid, -1), -1, _format(formats, i)))
    return message(b"T", b"".join(parts))


def _format(formats: list[int], i: int) -> int:
    """The format code of column or parameter i: none given, text; one, for all; else its own."""
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def command_tag(status: str) -> str:
    """PostgreSQL's CommandComplete tag for the engine's status: INSERT carries an OID (0)."""
    words = status.split()
    if len(words) == 2 and words[0] in ("INSERT", "UPSERT") and words[1].isdigit():
        return "INSERT 0 " + words[1]
    return status


def format_float(value: float) -> str:
    """A float8 as PostgreSQL prints it (extra_float_digits 1: the shortest exact form)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _timestamp_text(value: Any) -> str:
    """'YYYY-MM-DD HH:MM:SS[.ffffff]' with PostgreSQL's trailing zeros of the fraction dropped."""
    if isinstance(value, datetime.datetime):
        value = value.isoformat(sep=" ")
    text = str(value)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _as_datetime(value: Any) -> datetime.datetime:
    return value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(str(value))


def _array_element_text(value: Any) -> str:
    """One element of an array's text form: NULL bare; quoted when empty, NULL-like, or holding
    a delimiter, a brace, a quote, a backslash or white space (PostgreSQL's array_out)."""
    if value is None:
        return "NULL"
    text = _text_value(value)
    if text == "" or text.upper() == "NULL" or any(c in text for c in '{},"\\ \t\n\r'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def encode_array(value: list, binary: bool) -> bytes:
    """A one-dimensional array as text[]: ``{a,"b c",NULL}``, or the binary array form (one
    dimension, lower bound 1, text elements)."""
    if not binary:
        return ("{" + ",".join(_array_element_text(v) for v in value) + "}").encode("utf-8")
    parts = [struct.pack(">iiiii", 1, int(any(v is None for v in value)), TEXT_OID, len(value), 1)]
    for v in value:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            encoded = _text_value(v).encode("utf-8")
            parts.append(_I32.pack(len(encoded)) + encoded)
    return b"".join(parts)


def encode_value(value: Any, oid: int, binary: bool) -> bytes:
    """A result value in the text or binary form of `oid`."""
    if oid == TEXT_ARRAY_OID and isinstance(value, (list, tuple)):
        return encode_array(list(value), binary)
    if binary:
        if oid == 20:
            return struct.pack(">q", value)
        if oid == 701:
            return struct.pack(">d", value)
        if oid == 16:
            return b"\1" if value else b"\0"
        if oid == 17:
            return bytes(value)
        if oid == 1114:
            delta = _as_datetime(value) - _PG_EPOCH
            return struct.pack(">q", (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
        return _text_value(value).encode("utf-8")
    if oid == 1114:
        return _timestamp_text(value).encode()
    return _text_value(value).encode("utf-8")


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, (bytes, bytearray)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime.datetime):
        return _timestamp_text(value)
    return str(value)


def data_row(values: list, oids: list[int], formats: list[int]) -> bytes:
    parts = [struct.pack(">h", len(values))]
    for i, value in enumerate(values):
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            encoded = encode_value(value, oids[i], _format(formats, i) == 1)
            parts.append(_I32.pack(len(encoded)) + encoded)
    return message(b"D", b"".join(parts))


def decode_param(raw: bytes, oid: int, binary: bool) -> Any:
    """A Bind parameter as the engine takes it (raises ProtocolViolation 22P02/22P03 if it is
    not what its type says). Text of no declared type stays a string: the engine types it by
    the context it is used in, as PostgreSQL types an unknown literal."""
    try:
        if binary:
            if oid in _INT_OIDS:
                return struct.unpack(_INT_OIDS[oid], raw)[0]
            if oid in _FLOAT_OIDS:
                return struct.unpack(_FLOAT_OIDS[oid], raw)[0]
            if oid == 16:
                return raw != b"\0"
            if oid == 17:
                return bytes(raw)
            if oid in _TS_OIDS:
                micros = struct.unpack(">q", raw)[0]
                return _PG_EPOCH + datetime.timedelta(microseconds=micros)
            if oid == _DATE_OID:
                return _PG_EPOCH + datetime.timedelta(days=struct.unpack(">i", raw)[0])
            if oid in _TEXTLIKE_OIDS:
                return raw.decode("utf-8")
            raise ProtocolViolation("binary format of parameter type OID %d is not supported: send it as text" % oid,
                                    "22P03")
        text = raw.decode("utf-8")
        if oid in _INT_OIDS:
            return int(text)
        if oid in _FLOAT_OIDS:
            return float({"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}.get(text.strip(), text))
        if oid == 16:
            word = text.strip().lower()
            if word in ("t", "true", "y", "yes", "on", "1"):
                return True
            if word in ("f", "false", "n", "no", "off", "0"):
                return False
            raise ValueError("not a boolean: %r" % text)
        if oid == 17:
            return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode("utf-8")
        if oid == 1184:   # an instant: the engine takes it to UTC (a TIMESTAMP's text would drop its zone)
            return datetime.datetime.fromisoformat(text.strip())
        return text
    except (struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise ProtocolViolation("parameter of type OID %d is malformed: %s" % (oid, exc),
                                "22P03" if binary else "22P02") from None


def error_of(answer: dict, sql: str, offset: int = 0) -> bytes:
    """The ErrorResponse of a gateway's error answer to `sql` (which starts at `offset` of the
    text the client sent: positions are in that)."""
    error = answer.get("error") or {}
    code = error.get("code")
    sql_code = error.get("sql_code")
    sqlstate = SQLSTATE_BY_SQL_CODE.get(sql_code) if code == "sql_error" else _SQLSTATE_BY_CODE.get(code)
    hint = AUTOCOMMIT_HINT if sqlstate == "0A000" and set(leading_keywords(sql, 1)) & _TRANSACTION_WORDS else None
    position = error.get("position")
    return error_response(sqlstate or "XX000", str(error.get("message") or code),
                          hint, position + 1 + offset if isinstance(position, int) else None)


# --- connections ---------------------------------------------------------------------------------

@dataclass(eq=False)
class _Prepared:
    sql: str
    oids: list[int]
    size: int                   # bytes charged for it (text, parameters)
    described: dict | None = None   # Gateway.describe's result, once asked

    def params_free_read(self) -> bool:
        """A read (SELECT, SHOW, EXPLAIN but not ANALYZE), which a Describe may run when only
        running it tells its columns or their types (`SELECT $1 + 1`: the parameter's type
        decides); a portal keeps the rows for its Execute."""
        return statement_is_read(self.sql)


@dataclass(eq=False)
class _Portal:
    statement: _Prepared
    params: list
    formats: list[int]
    size: int
    types: list[str] | None = None   # the types its RowDescription announced, if one was sent
    result: dict | None = None       # its run's result, once run (rows taken as sent)
    sent: int = 0


@dataclass(eq=False)
class _PgConn:
    """One client connection's state."""
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    secret: int
    last_active: float = field(default_factory=time.monotonic)
    buf: bytearray = field(default_factory=bytearray)
    held: int = 0                   # budget bytes of buf
    began: float | None = None      # when the message being read began (None: between messages)
    busy: bool = False              # a message is being handled
    out: list = field(default_factory=list)
    out_bytes: int = 0
    session: dict = field(default_factory=dict)   # its SQL session (sql.gateway)
    statements: dict = field(default_factory=dict)
    portals: dict = field(default_factory=dict)
    named_bytes: int = 0            # bytes of statements and portals held (charged)
    failed: bool = False            # an extended-protocol error: skip to Sync
    cancel: coop.Cancel | None = None   # the running statement's
    started: bool = False           # past the startup

    def idle(self) -> bool:
        return not self.busy and not self.buf and self.cancel is None


class PgServer:
    """The PostgreSQL port (module docstring). `budget` is the node's one MemoryBudget, shared
    with the native client port."""

    READ_CHUNK = 32 * 1024

    def __init__(self, node: Any, sql_gateway: PgGateway, limits: ClientLimits, budget: MemoryBudget,
                 sock: Any) -> None:
        self.node, self.sql_gateway, self.limits, self.budget, self.sock = node, sql_gateway, limits, budget, sock
        self.server: asyncio.base_events.Server | None = None
        self.draining = False
        self._connections: collections.OrderedDict[int, _PgConn] = collections.OrderedDict()   # by pid, LRU first
        self._tasks: set[asyncio.Task] = set()
        self._pids = itertools.count(1)
        self._log_limit = LogLimiter()
        self.stats = {"connections_total": 0, "refused_connections": 0, "evicted_idle": 0, "idle_closed": 0,
                      "frame_deadline_closed": 0, "write_timeout_closed": 0, "budget_refused": 0,
                      "protocol_errors": 0, "cancels": 0, "results_refused": 0}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.sock, limit=self.READ_CHUNK,
                                                 backlog=constants.listen_backlog)

    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return "%s:%d" % (host, port)

    def limits_status(self) -> dict:
        """What the node's status shows of this port (`pg`)."""
        return dict(self.stats, addr=self.address(), connections=len(self._connections),
                    connections_max=self.limits.connections_max,
                    running=sum(1 for c in self._connections.values() if c.cancel is not None))

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, let running statements answer (within timeout_s), close the rest."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + timeout_s
        while any(c.busy for c in self._connections.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self._connections.values()):
            if not conn.busy:
                conn.writer.write(error_response("57P01", "terminating connection: node %d is shutting down"
                                                 % self.node.node_id, severity="FATAL"))
            conn.writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.1, deadline - time.monotonic()))

    # --- admission ------------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Room for one more connection: under the limit, or made by closing the idle one
        inactive the longest. False: all busy."""
        if len(self._connections) < self.limits.connections_max:
            return True
        for conn in self._connections.values():
            if conn.idle():
                self.stats["evicted_idle"] += 1
                conn.writer.write(error_response("57P01", "terminating connection: node %d closed this idle connection "
                                                 "to admit another (--max-client-connections %d); reconnect"
                                                 % (self.node.node_id, self.limits.connections_max), severity="FATAL"))
                conn.writer.close()
                self._forget(conn)
                return True
        return False

    def _forget(self, conn: _PgConn) -> None:
        if self._connections.get(conn.pid) is conn:
            del self._connections[conn.pid]
            self.budget.give(constants.client_conn_bytes)

    def _active(self, conn: _PgConn) -> None:
        conn.last_active = time.monotonic()
        if conn.pid in self._connections:
            self._connections.move_to_end(conn.pid)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        if hasattr(writer.transport, "max_size"):
            writer.transport.max_size = self.READ_CHUNK   # a connection not read holds at most a chunk
        conn = _PgConn(reader, writer, next(self._pids) & 0x7FFFFFFF, secrets.randbits(31))
        admitted = self._admit() and not self.draining
        if admitted:
            self._connections[conn.pid] = conn
            self.budget.take(constants.client_conn_bytes)
            self.stats["connections_total"] += 1
        try:
            if await self._startup(conn, admitted):
                await self._messages(conn)
        except ProtocolViolation as exc:
            self.stats["protocol_errors"] += 1
            self._log_limit.log(logger, logging.WARNING, ("pg protocol", peer_host(writer)),
                                "pg client %s broke the protocol (%s); closing", writer.get_extra_info("peername"),
                                exc.message)
            if not writer.is_closing():
                writer.write(error_response(exc.sqlstate, exc.message, severity="FATAL"))
        except _Closing as why:
            self._log_limit.log(logger, logging.INFO, ("pg limit", str(why).split(" ")[0], peer_host(writer)),
                                "pg client %s: %s; closing", writer.get_extra_info("peername"), why)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._drop_named(conn)
            self._hold(conn, 0)
            self._give_out(conn)
            self._forget(conn)
            self._tasks.discard(task)

    async def _startup(self, conn: _PgConn, admitted: bool) -> bool:
        """The startup packets (SSL/GSSENC requests answered 'N', a CancelRequest served, then
        a StartupMessage 3.0). True: the connection is ready for queries."""
        while True:
            conn.began = time.monotonic()
            head = await self._read_exactly(conn, 4)
            length = _I32.unpack(head)[0]
            if length < 8 or length > constants.pg_startup_bytes_max:
                raise ProtocolViolation("invalid length of startup packet: %d bytes (at most %d)"
                                        % (length, constants.pg_startup_bytes_max))
            body = (await self._read_exactly(conn, length))[4:]
            self._take(conn, length)
            code = _I32.unpack_from(body)[0]
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                conn.writer.write(b"N")
                continue
            if code == CANCEL_REQUEST and length == 16:
                pid, secret = struct.unpack_from(">ii", body, 4)
                self._cancel(pid, secret)
                return False
            break
        if not admitted:
            self.stats["refused_connections"] += 1
            conn.writer.write(error_response("53300", "sorry, too many clients already: node %d has %d pg connections, "
                                             "all busy (--max-client-connections %d); retry later or on another node"
                                             % (self.node.node_id, len(self._connections), self.limits.connections_max),
                                             severity="FATAL"))
            return False
        if code != PROTOCOL_3_0:
            raise ProtocolViolation("unsupported frontend protocol %d.%d: raftstore serves protocol 3.0"
                                    % (code >> 16, code & 0xFFFF), "0A000")
        fields = body[4:].split(b"\0")
        params = {}
        for key, value in zip(fields[0::2], fields[1::2]):
            if key:
                params[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        # The startup's settings (application_name, client_encoding, ...) are its session's; one
        # SET would refuse refuses the connection, as in PostgreSQL.
        started = self.sql_gateway.pg_startup(params)
        if "error" in started:
            raise ProtocolViolation(started["error"]["message"], SQLSTATE_BY_SQL_CODE.get(started["error"]["code"], "22023"))
        conn.session["settings"] = started["settings"]
        conn.session["backend_pid"] = conn.pid   # pg_backend_pid() says what BackendKeyData said
        statuses = dict(started["status"], session_authorization=params.get("user", "root"))
        out = [message(b"R", _I32.pack(0))]
        out += [message(b"S", _cstr(k) + _cstr(v)) for k, v in statuses.items()]
        out.append(message(b"K", struct.pack(">ii", conn.pid, conn.secret)))
        out.append(message(b"Z", b"I"))
        conn.started = True
        conn.began = None
        self._queue(conn, b"".join(out))
        await self._flush(conn)
        return True

    def _cancel(self, pid: int, secret: int) -> None:
        """A CancelRequest: stop the running statement of connection `pid` if `secret` is its."""
        conn = self._connections.get(pid)
        if conn is None or not secrets.compare_digest(struct.pack(">i", conn.secret), struct.pack(">i", secret)):
            return
        if conn.cancel is not None and conn.cancel.cancel("canceling statement due to user request"):
            self.stats["cancels"] += 1

    # --- reading, within the limits -------------------------------------------------------------

    def _take(self, conn: _PgConn, n: int) -> None:
        """`n` bytes of the buffer are consumed."""
        del conn.buf[:n]
        self._hold(conn, len(conn.buf))

    def _hold(self, conn: _PgConn, n: int) -> None:
        if n > conn.held:
            self.budget.take(n - conn.held)
        elif n < conn.held:
            self.budget.give(conn.held - n)
        conn.held = n

    async def _read_exactly(self, conn: _PgConn, n: int) -> bytes:
        """The first `n` bytes of the connection's buffer (not consumed), reading more as needed."""
        while len(conn.buf) < n:
            await self._read_more(conn)
        return bytes(conn.buf[:n])

    async def _read_more(self, conn: _PgConn) -> None:
        """Read the next bytes into conn.buf, once the budget lets it; _Closing at the idle
        timeout, the frame deadline or a budget spent too long; IncompleteReadError at EOF."""
        starved_since = None
        while self.budget.spent() and conn.held > constants.client_conn_free_bytes:
            now = time.monotonic()
            starved_since = starved_since or now
            if now - starved_since >= constants.client_budget_wait_s:
                self.stats["budget_refused"] += 1
                conn.writer.write(error_response("53200", "node %d's client memory budget (%d bytes, --max-client-memory)"
                                                 " is spent: a message of this connection cannot be read now; nothing "
                                                 "of it was run; retry, or on another node"
                                                 % (self.node.node_id, self.limits.memory_bytes), severity="FATAL"))
                raise _Closing("the client memory budget is spent; refused a message begun")
            await self.budget.freed(constants.client_budget_wait_s)
        if conn.writer.is_closing():
            raise _Closing("the connection was closed here")
        began = conn.began if conn.buf or not conn.started else None
        if began is not None:
            timeout = began + self.limits.frame_deadline_s - time.monotonic()
        else:
            timeout = conn.last_active + self.limits.idle_timeout_s - time.monotonic()
        try:
            data = await asyncio.wait_for(conn.reader.read(self.READ_CHUNK), max(0.0, timeout))
        except asyncio.TimeoutError:
            if began is not None:
                self.stats["frame_deadline_closed"] += 1
                raise _Closing("a message begun %.1f s ago is still not whole (the limit is %g s)"
                               % (time.monotonic() - began, self.limits.frame_deadline_s)) from None
            self.stats["idle_closed"] += 1
            conn.writer.write(error_response("57P01", "terminating connection: idle for %g s (--client-idle-timeout)"
                                             % self.limits.idle_timeout_s, severity="FATAL"))
            raise _Closing("idle for %g s (--client-idle-timeout)" % self.limits.idle_timeout_s) from None
        if not data:
            raise asyncio.IncompleteReadError(b"", None)
        if not conn.buf:
            conn.began = time.monotonic()
        conn.buf += data
        self._hold(conn, len(conn.buf))

    async def _messages(self, conn: _PgConn) -> None:
        """Read and handle the connection's messages, one at a time, until Terminate or EOF."""
        while True:
            try:
                head = await self._read_exactly(conn, 5)
            except asyncio.IncompleteReadError:
                return
            kind, length = _HEAD.unpack(head)
            if length < 4 or length > constants.pg_message_bytes_max:
                raise ProtocolViolation("invalid message length %d (at most %d bytes); closing"
                                        % (length, constants.pg_message_bytes_max),
                                        "54000" if length > 0 else "08P01")
            body = (await self._read_exactly(conn, length + 1))[5:]
            self._take(conn, length + 1)
            conn.began = time.monotonic() if conn.buf else None   # the next message, pipelined, begins now
            self._active(conn)
            if kind == b"X":
                return
            conn.busy = True
            try:
                await self._dispatch(conn, kind, body)
            finally:
                conn.busy = False
                self._active(conn)

    # --- writing -------------------------------------------------------------------------------

    def _queue(self, conn: _PgConn, data: bytes) -> None:
        conn.out.append(data)
        conn.out_bytes += len(data)
        self.budget.take(len(data))

    def _give_out(self, conn: _PgConn) -> None:
        self.budget.give(conn.out_bytes)
        conn.out, conn.out_bytes = [], 0

    async def _flush(self, conn: _PgConn) -> None:
        """Write what is queued and wait until the kernel took it (write_timeout_s at most:
        then the connection is closed, its bytes given back)."""
        if not conn.out:
            return
        data, size = b"".join(conn.out), conn.out_bytes
        conn.out, conn.out_bytes = [], 0
        try:
            if conn.writer.is_closing():
                raise _Closing("the connection was closed")
            conn.writer.write(data)
            del data
            try:
                await asyncio.wait_for(conn.writer.drain(), self.limits.write_timeout_s)
            except asyncio.TimeoutError:
                self.stats["write_timeout_closed"] += 1
                conn.writer.transport.abort()
                raise _Closing("an answer left unread for %g s" % self.limits.write_timeout_s) from None
        finally:
            self.budget.give(size)

    async def _maybe_flush(self, conn: _PgConn) -> None:
        if conn.out_bytes >= constants.pg_batch_bytes:
            await self._flush(conn)

    # --- messages ------------------------------------------------------------------------------

    async def _dispatch(self, conn: _PgConn, kind: bytes, body: bytes) -> None:
        if kind == b"S":
            conn.failed = False
            self._drop_portals(conn)
            self._queue(conn, message(b"Z", b"I"))
            await self._flush(conn)
            return
        if conn.failed and kind in b"PBDECHQ":
            return   # skipped until Sync
        try:
            if kind == b"Q":
                await self._simple_query(conn, _text(body[:-1] if body.endswith(b"\0") else body))
                self._queue(conn, message(b"Z", b"I"))
                await self._flush(conn)
            elif kind == b"P":
                self._parse(conn, body)
            elif kind == b"B":
                self._bind(conn, body)
            elif kind == b"D":
                await self._describe(conn, body)
            elif kind == b"E":
                await self._execute(conn, body)
            elif kind == b"C":
                self._close(conn, body)
            elif kind == b"H":
                await self._flush(conn)
            elif kind in (b"d", b"c", b"f"):
                pass   # COPY data outside a COPY: PostgreSQL ignores it too
            else:
                raise ProtocolViolation("unsupported message type %r" % kind)
        except _ExtendedError as exc:
            conn.failed = True
            self._queue(conn, exc.response)
            await self._flush(conn)

    async def _simple_query(self, conn: _PgConn, sql: str) -> None:
        statements = split_statements(sql)
        if not statements:
            self._queue(conn, message(b"I"))
            return
        for offset, text in statements:
            answer = await self._run(conn, text, [])
            if not answer.get("ok"):
                self._queue(conn, error_of(answer, text, offset))
                return
            result = answer["result"]
            if result["columns"]:
                self._queue(conn, row_description(result["columns"], result["types"], []))
            if not await self._rows(conn, result, result["types"], [], 0, 0):
                return
            self._queue(conn, message(b"C", _cstr(command_tag(result["status"]))))

    async def _run(self, conn: _PgConn, sql: str, params: list) -> dict:
        """Run one statement of `conn` (cancellable by its CancelRequest), counted and timed in
        the node's metrics as the native port counts its statements."""
        conn.cancel = coop.Cancel()
        began = time.perf_counter()
        try:
            if self.draining:
                answer = {"ok": False, "error": {"code": "draining", "message": "node %d is shutting down; "
                                                 "retry on another node" % self.node.node_id}}
            else:
                answer = await self.sql_gateway.handle({"sql": sql, "params": params}, conn.session,
                                                       cancel=conn.cancel)
        except Exception as exc:
            self._log_limit.log(logger, logging.ERROR, ("pg statement failed", type(exc).__qualname__),
                                "statement failed", exc_info=True)
            answer = {"ok": False, "error": {"code": "internal", "message": "internal error: %s" % exc}}
        finally:
            conn.cancel = None
        error = answer.get("error") if not answer.get("ok") else None
        outcome = "ok" if error is None else (error.get("sql_code") if error.get("sql_code") in SQLSTATE_BY_SQL_CODE
                                              else outcome_label(error.get("code")))
        self.node.metrics.observe_sql(statement_type(sql), outcome, time.perf_counter() - began)
        return answer

    async def _rows(self, conn: _PgConn, result: dict, types: list[str], formats: list[int], start: int,
                    limit: int) -> bool:
        """Send rows [start, start+limit) of `result` (limit 0: all) in batches; False if the
        result passed result_bytes_max (the error is queued). Sets result['sent']."""
        rows = result["rows"]
        oids = [OID_BY_TYPE.get(t, TEXT_OID) for t in types]
        end = len(rows) if limit <= 0 else min(len(rows), start + limit)
        total = result.get("bytes", 0)
        for i in range(start, end):
            try:
                encoded = data_row(rows[i], oids, formats)
            except (struct.error, TypeError, ValueError) as exc:
                self._queue(conn, error_response("XX000", "row %d cannot be encoded as its column types: %s" % (i, exc)))
                return False
            rows[i] = None   # sent: its memory goes back as the result streams
            total += len(encoded)
            if total > self.limits.result_bytes_max:
                self.stats["results_refused"] += 1
                self._queue(conn, error_response("54000", "the result is more than the node's limit of %d bytes "
                                                 "(--max-result-bytes): narrow the query or add a LIMIT"
                                                 % self.limits.result_bytes_max))
                return False
            self._queue(conn, encoded)
            await self._maybe_flush(conn)
        result["bytes"], result["sent"] = total, end
        return True

    # --- the extended protocol -----------------------------------------------------------------

    def _charge_named(self, conn: _PgConn, size: int) -> None:
        if (len(conn.statements) + len(conn.portals) >= constants.pg_prepared_max
                or conn.named_bytes + size > constants.pg_prepared_bytes_max):
            raise _ExtendedError(error_response(
                "54000", "this connection holds %d prepared statements and portals (%d bytes): at most %d and %d "
                "bytes; Close some, or Sync" % (len(conn.statements) + len(conn.portals), conn.named_bytes,
                                                constants.pg_prepared_max, constants.pg_prepared_bytes_max)))
        if self.budget.spent():
            self.stats["budget_refused"] += 1
            raise _ExtendedError(error_response(
                "53200", "node %d's client memory budget (%d bytes, --max-client-memory) is spent: no prepared "
                "statement or portal can be kept now; Close some, or retry" % (self.node.node_id, self.limits.memory_bytes)))
        conn.named_bytes += size
        self.budget.take(size)

    def _release(self, conn: _PgConn, item: _Prepared | _Portal) -> None:
        conn.named_bytes -= item.size
        self.budget.give(item.size)

    def _drop_portals(self, conn: _PgConn) -> None:
        for portal in conn.portals.values():
            self._release(conn, portal)
        conn.portals.clear()

    def _drop_named(self, conn: _PgConn) -> None:
        self._drop_portals(conn)
        for statement in conn.statements.values():
            self._release(conn, statement)
        conn.statements.clear()

    def _parse(self, conn: _PgConn, body: bytes) -> None:
        reader = _Reader(body)
        name, sql = reader.cstr(), reader.cstr()
        oids = [reader.i32() for _ in range(reader.i16())]
        if len(split_statements(sql)) > 1:
            raise _ExtendedError(error_response("42601", "cannot insert multiple commands into a prepared statement"))
        if name and name in conn.statements:
            raise _ExtendedError(error_response("42P05", "prepared statement %r already exists" % name))
        old = conn.statements.pop("", None) if not name else None
        if old is not None:
            self._release(conn, old)
        size = len(body)
        self._charge_named(conn, size)
        conn.statements[name] = _Prepared(sql, oids, size)
        self._queue(conn, message(b"1"))

    def _bind(self, conn: _PgConn, body: bytes) -> None:
        reader = _Reader(body)
        portal_name, statement_name = reader.cstr(), reader.cstr()
        statement = conn.statements.get(statement_name)
        if statement is None:
            raise _ExtendedError(error_response("26000", "prepared statement %r does not exist" % statement_name))
        param_formats = [reader.i16() for _ in range(reader.i16())]
        count = reader.i16()
        if len(param_formats) not in (0, 1, count):
            raise _ExtendedError(error_response("08P01", "bind message has %d parameter formats but %d parameters"
                                                % (len(param_formats), count)))
        params = []
        try:
            for i in range(count):
                raw = reader.value()
                oid = statement.oids[i] if i < len(statement.oids) else 0
                params.append(None if raw is None else decode_param(raw, oid, _format(param_formats, i) == 1))
        except ProtocolViolation as exc:
            raise _ExtendedError(error_response(exc.sqlstate, exc.message)) from None
        formats = [reader.i16() for _ in range(reader.i16())]
        old = conn.portals.pop(portal_name, None)
        if old is not None:
            self._release(conn, old)
        size = len(body)
        self._charge_named(conn, size)
        conn.portals[portal_name] = _Portal(statement, params, formats, size)
        self._queue(conn, message(b"2"))

    async def _described(self, conn: _PgConn, statement: _Prepared) -> dict:
        if statement.described is None:
            answer = await self.sql_gateway.describe(statement.sql)
            if not answer.get("ok"):
                raise _ExtendedError(error_of(answer, statement.sql))
            statement.described = answer["result"]
        return statement.described

    async def _describe(self, conn: _PgConn, body: bytes) -> None:
        reader = _Reader(body)
        what, name = reader.byte(), reader.cstr()
        if what == b"S":
            statement = conn.statements.get(name)
            if statement is None:
                raise _ExtendedError(error_response("26000", "prepared statement %r does not exist" % name))
            described = await self._described(conn, statement)
            count = max(described["params"], len(statement.oids))
            oids = [(statement.oids[i] if i < len(statement.oids) and statement.oids[i] else TEXT_OID)
                    for i in range(count)]
            self._queue(conn, message(b"t", struct.pack(">h", count) + b"".join(_I32.pack(o) for o in oids)))
            if described["columns"] is None and not statement.params_free_read():
                self._queue(conn, message(b"n"))
            elif described["columns"] is None:
                answer = await self._run(conn, statement.sql, [])   # SHOW, EXPLAIN: only running tells
                if not answer.get("ok"):
                    raise _ExtendedError(error_of(answer, statement.sql))
                result = answer["result"]
                self._queue(conn, row_description(result["columns"], result["types"], []) if result["columns"]
                            else message(b"n"))
            else:
                self._queue(conn, row_description(described["columns"], described["types"], []))
            return
        if what != b"P":
            raise ProtocolViolation("Describe of %r: only S and P exist" % what)
        portal = conn.portals.get(name)
        if portal is None:
            raise _ExtendedError(error_response("34000", "portal %r does not exist" % name))
        described = await self._described(conn, portal.statement)
        planned = described["columns"] is not None and all(t in OID_BY_TYPE for t in described["types"])
        if planned:
            portal.types = described["types"]
            self._queue(conn, row_description(described["columns"], described["types"], portal.formats))
        elif portal.statement.params_free_read():
            portal.result = await self._result(conn, portal)
            portal.types = portal.result["types"]
            self._queue(conn, row_description(portal.result["columns"], portal.types, portal.formats)
                        if portal.result["columns"] else message(b"n"))
        else:
            self._queue(conn, message(b"n"))

    async def _result(self, conn: _PgConn, portal: _Portal) -> dict:
        answer = await self._run(conn, portal.statement.sql, portal.params)
        if not answer.get("ok"):
            raise _ExtendedError(error_of(answer, portal.statement.sql))
        return answer["result"]

    async def _execute(self, conn: _PgConn, body: bytes) -> None:
        reader = _Reader(body)
        name, limit = reader.cstr(), reader.i32()
        portal = conn.portals.get(name)
        if portal is None:
            raise _ExtendedError(error_response("34000", "portal %r does not exist" % name))
        if portal.result is None:
            portal.result = await self._result(conn, portal)
        result = portal.result
        types = portal.types if portal.types is not None and len(portal.types) == len(result["types"]) else result["types"]
        start = result.get("sent", 0)
        if not await self._rows(conn, result, types, portal.formats, start, limit):
            raise _ExtendedError(b"")   # the error is queued
        if limit > 0 and result["sent"] < len(result["rows"]):
            self._queue(conn, message(b"s"))
        else:
            self._queue(conn, message(b"C", _cstr(command_tag(result["status"]))))
        await self._maybe_flush(conn)

    def _close(self, conn: _PgConn, body: bytes) -> None:
        reader = _Reader(body)
        what, name = reader.byte(), reader.cstr()
        if what == b"S":
            statement = conn.statements.pop(name, None)
            if statement is not None:
                self._release(conn, statement)
        elif what == b"P":
            portal = conn.portals.pop(name, None)
            if portal is not None:
                self._release(conn, portal)
        else:
            raise ProtocolViolation("Close of %r: only S and P exist" % what)
        self._queue(conn, message(b"3"))


class _ExtendedError(Exception):
    """An error of the extended protocol: `response` is sent and messages skipped to Sync."""

    def __init__(self, response: bytes) -> None:
        super().__init__("extended protocol error")
        self.response = response


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("invalid UTF-8 in a message: %s" % exc, "22021") from None


class _Reader:
    """Fields of one message body; a body shorter than its fields is a ProtocolViolation."""

    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def _need(self, n: int) -> None:
        if self.at + n > len(self.body):
            raise ProtocolViolation("a message is shorter than its fields")

    def byte(self) -> bytes:
        self._need(1)
        self.at += 1
        return self.body[self.at - 1:self.at]

    def i16(self) -> int:
        self._need(2)
        self.at += 2
        return struct.unpack_from(">h", self.body, self.at - 2)[0]

    def i32(self) -> int:
        self._need(4)
        self.at += 4
        return _I32.unpack_from(self.body, self.at - 4)[0]

    def cstr(self) -> str:
        end = self.body.find(b"\0", self.at)
        if end < 0:
            raise ProtocolViolation("a message's string is not terminated")
        text = _text(self.body[self.at:end])
        self.at = end + 1
        return text

    def value(self) -> bytes | None:
        n = self.i32()
        if n == -1:
            return None
        if n < 0:
            raise ProtocolViolation("a parameter's length is negative")
        self._need(n)
        self.at += n
        return self.body[self.at - n:self.at]
