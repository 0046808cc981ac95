"""Framing and schema of the client protocol (the port a node serves as ``--sql-addr``).

Why: server and client must agree byte for byte, and everything a server reads comes from an
untrusted network, so the one definition of a frame and of a well-formed request lives here
and both sides import it.

A frame is ``u32 little-endian body length | msgpack body``. Bodies are at most
``constants.client_frame_bytes_max`` bytes; a longer length prefix is refused as soon as the four
header bytes arrive, before any of the body is buffered. Bodies decode with ``raw=False``
(msgpack str -> str, bin -> bytes), ``strict_map_key=True`` (map keys are str or bytes) and a
bounded buffer; msgpack ext types are refused (the timestamp ext, which msgpack decodes itself,
is let through and then fails schema validation like any other unexpected type). Never pickle.

Request:  ``{"id": int, "op": str, "args": map}``
Response: ``{"id": int, "ok": true, "result": any}`` or
          ``{"id": int, "ok": false, "error": {"code": str, "message": str, "ambiguous": bool}}``

A result with ``rows`` larger than about a megabyte comes in pages: the first frame is the
response with the first rows and ``"more": true``; each next frame of the same id is
``{"id", "ok": true, "result": {"rows": [...]}, "more": bool}``, the last one without ``more``
(or false). The client appends the rows in order. A port that refuses a connection sends one
frame with id ``CONNECTION_REFUSAL_ID`` and closes it: ``too_many_connections`` when all the
connections a node allows are busy, ``unavailable`` when its client memory budget is spent and a
frame the client began cannot be read (nothing of it was run); either way, try again later or
on another node.

The ``sql`` op runs one SQL statement: ``args = {"sql": str, "params": [value, ...], "session":
map}`` with ``params`` optional (absent: no parameters) and ``session`` optional: the SQL
session the statement runs in, ``{"causality": [wall_ns, logical] | nil, "settings": {name:
value}}``, as the previous answer returned it. A connection's session lives on its node; a
client that sends it back with every statement keeps its session variables and its causality
token (its bounded-staleness reads never read below its own writes) when it moves to another
node. A parameter is nil, bool, int, float, str, bytes,
or ``["ts", "YYYY-MM-DD HH:MM:SS[.ffffff]"]`` for a TIMESTAMP (see `parse_sql_timestamp`); it
is bound as a value by the server, never spliced into the text. Its answer:

    result: {"columns": [str], "types": [str], "rows": [[value, ...]], "rowcount": int,
             "status": str, "ts": [wall_ns, logical], "session": {"causality", "settings"}}
    error:  {"code": "sql_error", "message": str, "ambiguous": bool,
             "sql_code": str, "position": int | nil}   (or any other error code)

Row values are nil, bool, int, float, str or bytes; a TIMESTAMP column carries the text form
above. ``types`` holds the SQL type name of each column (``INT``, ``TEXT``, ``TIMESTAMP``...),
``status`` the command tag (``INSERT 3``, ``CREATE TABLE``, ``SELECT 2``), ``ts`` the commit
timestamp of a write or the read timestamp of a read. ``position`` is the 0-based character
offset into ``sql`` of the construct at fault; ``sql_code`` is one of `errors.SQL_CODES`. The
``sql`` op carries no command id: a client must not resend a statement that may have reached
a server unless the statement only reads.

The ``check_consistency`` op checks every range overlapping ``[start, end)`` now (store keys,
not raw user keys: the default, no start and no end, is every range of every keyspace; see
raftstore.kvserver.consistency) and answers ``{"ranges": [result, ...]}`` in key order, each result
``{"range_id", "start", "end", "index", "status": "consistent" | "inconsistent" |
"incomplete", "detail": str, "differing": [node id], "replicas": [[node id, checksum hex |
nil, error | nil]], "at": unix time, "duration_ms"}``.

Requests on one connection may be pipelined; responses carry the request id and may come back
in any order. The args of each op are in `REQUEST_ARGS`; keys and values are bytes, and every
write carries a 16-byte ``command_id`` that the client keeps across retries so a retried write
applies at most once.

Any decode error (`FrameError`) leaves the stream unsynchronised: the reader must drop the
connection. A well-framed request that fails `validate_request` is answered with a
``bad_request`` error instead.

No sockets are opened here: `read_frame`/`write_frame` take an already connected, blocking
socket-like object (``recv``/``sendall``) and are used by the client only.
"""

from __future__ import annotations

import datetime
import re
import struct
import sys
from collections import deque
from typing import Any, Protocol

import msgpack

from raftstore import constants
from raftstore.errors import BadRequestError, RaftstoreError

HEADER = struct.Struct("<I")
_EMPTY_BYTEARRAY_SIZE = sys.getsizeof(bytearray())
HEADER_BYTES = HEADER.size
REQUEST_ID_MAX = 2**64 - 1      # any non-negative msgpack integer
# A response with this id answers no request of the client's: the port refuses the client
# itself, e.g. a node's peer port reached by a client (`refusal_frame`); a client port answers
# so a request whose id it could not read. Clients number their requests from 1, so a client
# that gets this id (with an error) knows the address cannot serve it.
CONNECTION_REFUSAL_ID = 0
_RECV_CHUNK_BYTES = 64 * 1024

# The sql op's bounds. PostgreSQL's Bind message counts parameters in 16 bits; a statement's
# text is bounded well below the frame so that the parameters have room beside it.
# (They belong with the other limits in `constants`; kept here while that module is busy.)
sql_text_bytes_max = 1024 * 1024        # UTF-8 bytes of one statement's text
sql_params_count_max = 65_535           # parameters of one statement

# --- request schema ---------------------------------------------------------------------------
# Field kinds: "bytes", "bytes?" (bytes or None), "command_id" (exactly command_id_bytes bytes),
# "limit" (int in [1, scan_rows_max]), "byte_limit" (int in [0, scan_bytes_max]; 0: no limit of
# the caller's), "sql_text" (str of at most sql_text_bytes_max UTF-8
# bytes), "sql_params" (array of at most sql_params_count_max parameters, see module doc).
REQUEST_ARGS: dict[str, dict[str, str]] = {
    "put": {"key": "bytes", "value": "bytes", "command_id": "command_id"},
    "get": {"key": "bytes", "max_staleness_ms": "staleness_ms", "min_ts": "ts?", "read_ts": "ts?"},
    "delete": {"key": "bytes", "command_id": "command_id"},
    "cas": {"key": "bytes", "expected": "bytes?", "new": "bytes", "command_id": "command_id"},
    "scan": {"start": "bytes", "end": "bytes?", "limit": "limit", "max_bytes": "byte_limit",
             "max_staleness_ms": "staleness_ms", "min_ts": "ts?", "read_ts": "ts?"},
    "status": {},
    "split": {"key": "bytes"},
    "sql": {"sql": "sql_text", "params": "sql_params", "session": "sql_session"},
    "check_consistency": {"start": "bytes", "end": "bytes?"},
    "lease_transfer": {"range_id": "id", "to": "id"},
    "drain": {},
}
# Fields of REQUEST_ARGS that a request may leave out (every other one is required).
# A read's `max_staleness_ms` makes it a bounded-staleness read (no older than that, nor than its
# `min_ts`, the client's causality token); `read_ts` makes it an exact-staleness read there.
_STALE_ARGS = frozenset({"max_staleness_ms", "min_ts", "read_ts"})
STALENESS_MS_MAX = 7 * 24 * 3600 * 1000
OPTIONAL_ARGS: dict[str, frozenset[str]] = {"sql": frozenset({"params", "session"}), "scan": frozenset({"max_bytes"}) | _STALE_ARGS,
                                            "get": _STALE_ARGS,
                                            "check_consistency": frozenset({"start", "end"})}
WRITE_OPS = frozenset({"put", "delete", "cas"})


class FrameError(Exception):
    """The byte stream is not a valid frame sequence (oversized length, malformed msgpack, an
    object too large to send). Whoever reads it must drop the connection."""


class BadRequest(BadRequestError):
    """A well-framed request that does not match the schema. `request_id` is the request's id
    when that much was readable (answer it with ``bad_request``), else None (nobody to answer:
    drop the connection)."""

    def __init__(self, message: str, request_id: int | None = None):
        super().__init__(message)
        self.request_id = request_id


class BadResponse(Exception):
    """A well-framed response that does not match the response envelope. The client treats the
    connection as broken."""


class SocketLike(Protocol):
    def recv(self, bufsize: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> Any: ...


# --- frames -----------------------------------------------------------------------------------


def encode_frame(obj: Any, max_bytes: int = constants.client_frame_bytes_max) -> bytes:
    """One frame holding `obj` (msgpack, ``use_bin_type=True``; tuples become arrays).

    Raises FrameError if the body would exceed `max_bytes`, TypeError if `obj` holds something
    msgpack cannot encode.
    """
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > max_bytes:
        raise FrameError(
            f"frame body of {len(body)} bytes exceeds the limit of {max_bytes} bytes "
            "(client_frame_bytes_max)"
        )
    return HEADER.pack(len(body)) + body


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not part of the protocol")


class FrameDecoder:
    """Incremental decoder: feed received bytes, get back every complete object.

    Holds at most one partial frame (at most ``HEADER_BYTES + max_bytes`` bytes beyond what one
    `feed` brought). After a FrameError the decoder is poisoned: every later `feed` raises again.
    """

    def __init__(self, max_bytes: int = constants.client_frame_bytes_max):
        assert max_bytes > 0, max_bytes
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._error: str | None = None
        # Objects decoded but not yet handed out by `read_frame` (feed itself never uses it).
        self._ready: deque[Any] = deque()
        self.sizes: list[int] = []   # the body sizes of the frames the last `feed` completed

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    @property
    def held_bytes(self) -> int:
        """The memory the partial frame holds: its buffer's allocation, growth room included."""
        return sys.getsizeof(self._buffer) - _EMPTY_BYTEARRAY_SIZE if self._buffer else 0

    def feed(self, data: bytes) -> list[Any]:
        """Append `data`; return the objects of every frame it completed, in order.

        Raises FrameError naming the problem (the caller drops the connection).
        """
        if self._error is not None:
            raise FrameError(f"decoder already failed: {self._error}")
        self._buffer += data
        out: list[Any] = []
        self.sizes = []
        pos = 0
        try:
            while len(self._buffer) - pos >= HEADER_BYTES:
                (length,) = HEADER.unpack_from(self._buffer, pos)
                if length > self.max_bytes:
                    self._fail(
                        f"frame length prefix {length} exceeds the limit of {self.max_bytes} bytes"
                    )
                if length == 0:
                    self._fail("empty frame (length prefix 0); a body is at least one msgpack byte")
                end = pos + HEADER_BYTES + length
                if len(self._buffer) < end:
                    break
                body = bytes(self._buffer[pos + HEADER_BYTES : end])
                pos = end
                out.append(self._decode_body(body))
                self.sizes.append(length)
        finally:
            del self._buffer[:pos]
            if not self._buffer and pos:
                self._buffer = bytearray()   # an emptied buffer keeps its allocation: let it go
        return out

    def _fail(self, message: str) -> None:
        self._error = message
        self._buffer.clear()
        raise FrameError(message)

    def _decode_body(self, body: bytes) -> Any:
        unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            max_buffer_size=self.max_bytes,
            ext_hook=_refuse_ext,
        )
        try:
            unpacker.feed(body)
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            self._fail(f"malformed msgpack: frame body of {len(body)} bytes ends inside an object")
        except Exception as exc:  # msgpack raises many unrelated types on garbage
            self._fail(
                f"malformed msgpack in frame body of {len(body)} bytes: "
                f"{type(exc).__name__}: {exc}"
            )
        trailing = len(body) - unpacker.tell()
        if trailing:
            self._fail(
                f"malformed frame: {trailing} bytes left over after the msgpack object "
                f"(frame body of {len(body)} bytes)"
            )
        return obj


def read_frame(sock: SocketLike, decoder: FrameDecoder) -> Any:
    """Block until one object arrives on `sock` and return it (extra complete objects stay
    queued in `decoder` for the next call).

    Raises ConnectionError if the peer closes the connection, FrameError on a bad frame, and
    whatever `sock.recv` raises (e.g. TimeoutError).
    """
    while not decoder._ready:
        data = sock.recv(_RECV_CHUNK_BYTES)
        if not data:
            if decoder.buffered_bytes:
                raise ConnectionError(
                    f"connection closed in the middle of a frame ({decoder.buffered_bytes} bytes "
                    "buffered)"
                )
            raise ConnectionError("connection closed by the peer")
        decoder._ready.extend(decoder.feed(data))
    return decoder._ready.popleft()


def write_frame(
    sock: SocketLike, obj: Any, max_bytes: int = constants.client_frame_bytes_max
) -> None:
    """Encode `obj` as one frame and send all of it. Raises FrameError if it is too large (nothing
    is sent), and whatever `sock.sendall` raises."""
    sock.sendall(encode_frame(obj, max_bytes))


# --- requests and responses ---------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _is_plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_field(op: str, name: str, kind: str, value: Any, request_id: int) -> None:
    where = f"{op}: args.{name}"
    if kind == "bytes":
        if not isinstance(value, bytes):
            raise BadRequest(
                f"{where} must be bytes (msgpack bin), got {_type_name(value)}", request_id
            )
    elif kind == "bytes?":
        if value is not None and not isinstance(value, bytes):
            raise BadRequest(
                f"{where} must be bytes (msgpack bin) or nil, got {_type_name(value)}", request_id
            )
    elif kind == "command_id":
        if not isinstance(value, bytes) or len(value) != constants.command_id_bytes:
            got = f"{len(value)} bytes" if isinstance(value, bytes) else _type_name(value)
            raise BadRequest(
                f"{where} must be exactly {constants.command_id_bytes} bytes, got {got}", request_id
            )
    elif kind == "id":
        if not _is_plain_int(value) or not 1 <= value <= 2**63 - 1:
            got = repr(value) if _is_plain_int(value) else _type_name(value)
            raise BadRequest(f"{where} must be a positive int (an id), got {got}", request_id)
    elif kind == "limit":
        if not _is_plain_int(value) or not 1 <= value <= constants.scan_rows_max:
            got = repr(value) if _is_plain_int(value) else _type_name(value)
            raise BadRequest(
                f"{where} must be an int in [1, {constants.scan_rows_max}], got {got}", request_id
            )
    elif kind == "byte_limit":
        if not _is_plain_int(value) or not 0 <= value <= constants.scan_bytes_max:
            got = repr(value) if _is_plain_int(value) else _type_name(value)
            raise BadRequest(
                f"{where} must be an int in [0, {constants.scan_bytes_max}], got {got}", request_id
            )
    elif kind == "staleness_ms":
        if not _is_plain_int(value) or not 1 <= value <= STALENESS_MS_MAX:
            got = repr(value) if _is_plain_int(value) else _type_name(value)
            raise BadRequest(f"{where} must be an int in [1, {STALENESS_MS_MAX}] (ms), got {got}", request_id)
    elif kind == "ts?":
        if value is not None and not (isinstance(value, list) and len(value) == 2
                                      and all(_is_plain_int(x) and 0 <= x <= 2**63 - 1 for x in value)):
            raise BadRequest(f"{where} must be [wall_ns, logical] (two non-negative ints) or nil", request_id)
    elif kind == "sql_text":
        if not isinstance(value, str):
            raise BadRequest(f"{where} must be a str, got {_type_name(value)}", request_id)
        # A str of n code points is at most 4n UTF-8 bytes: encode only when it could matter.
        if len(value) * 4 > sql_text_bytes_max:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:  # msgpack cannot decode to a lone surrogate; be safe
                raise BadRequest(f"{where} is not valid UTF-8 text", request_id) from None
            if size > sql_text_bytes_max:
                raise BadRequest(
                    f"{where} is {size} bytes, more than the limit of {sql_text_bytes_max} "
                    "bytes (sql_text_bytes_max)",
                    request_id,
                )
    elif kind == "sql_params":
        if not isinstance(value, list):
            raise BadRequest(f"{where} must be an array, got {_type_name(value)}", request_id)
        if len(value) > sql_params_count_max:
            raise BadRequest(
                f"{where} holds {len(value)} parameters, more than the limit of "
                f"{sql_params_count_max} (sql_params_count_max)",
                request_id,
            )
        for index, param in enumerate(value):
            problem = sql_param_problem(param)
            if problem is not None:
                raise BadRequest(f"{where}[{index}] {problem}", request_id)
    elif kind == "sql_session":
        problem = sql_session_problem(value)
        if problem is not None:
            raise BadRequest(f"{where} {problem}", request_id)
    else:  # pragma: no cover - REQUEST_ARGS is fixed above
        raise AssertionError(kind)


SQL_SESSION_SETTINGS_MAX = 16          # session variables one `session` map may carry
SQL_SESSION_TEXT_MAX = 64              # characters of a session variable's name or value


def sql_session_problem(value: Any) -> str | None:
    """None if `value` is a well-formed sql `session` map (module doc), else what is wrong with
    it. Which variables exist and what values they take the SQL gateway checks."""
    if not isinstance(value, dict) or set(value) - {"causality", "settings"}:
        return "must be a map of causality and settings"
    causality = value.get("causality")
    if causality is not None and not (isinstance(causality, list) and len(causality) == 2
                                      and all(_is_plain_int(x) and 0 <= x <= 2**63 - 1 for x in causality)):
        return "causality must be [wall_ns, logical] (two non-negative ints) or nil"
    settings = value.get("settings", {})
    if not isinstance(settings, dict) or len(settings) > SQL_SESSION_SETTINGS_MAX:
        return f"settings must be a map of at most {SQL_SESSION_SETTINGS_MAX} variables"
    for name, setting in settings.items():
        if not (isinstance(name, str) and isinstance(setting, str)
                and len(name) <= SQL_SESSION_TEXT_MAX and len(setting) <= SQL_SESSION_TEXT_MAX):
            return f"settings must map names to values, str of at most {SQL_SESSION_TEXT_MAX} characters"
    return None


_SQL_SCALAR_TYPES = (type(None), bool, int, float, str, bytes)
_SQL_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
)
_SQL_PARAM_KINDS = 'nil, bool, int, float, str, bytes or ["ts", "YYYY-MM-DD HH:MM:SS[.ffffff]"]'


def sql_param_problem(param: Any) -> str | None:
    """None if `param` is a well-formed sql parameter (module doc), else what is wrong with it
    (a phrase like ``must be ..., got dict``). Never raises: `param` comes from the network."""
    if isinstance(param, _SQL_SCALAR_TYPES):
        return None
    if isinstance(param, list) and len(param) == 2 and param[0] == "ts":
        text = param[1]
        if not isinstance(text, str):
            return f"is a timestamp whose text must be a str, got {_type_name(text)}"
        try:
            parse_sql_timestamp(text)
        except ValueError as exc:
            return f"is a malformed timestamp: {exc}"
        return None
    return f"must be {_SQL_PARAM_KINDS}, got {_type_name(param)}"


def parse_sql_timestamp(text: str) -> datetime.datetime:
    """``"YYYY-MM-DD HH:MM:SS[.ffffff]"`` (1 to 6 fraction digits) -> a naive datetime.

    The one text form of a TIMESTAMP on the wire, in parameters and in results. Raises
    ValueError naming the problem for any other form or an impossible date or time.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected 'YYYY-MM-DD HH:MM:SS[.ffffff]', got {_type_name(text)}")
    match = _SQL_TIMESTAMP_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected 'YYYY-MM-DD HH:MM:SS[.ffffff]', got {text[:40]!r}")
    *fields, fraction = match.groups()
    try:
        return datetime.datetime(
            *(int(field) for field in fields),
            microsecond=int(fraction.ljust(6, "0")) if fraction else 0,
        )
    except ValueError:
        raise ValueError(f"{text!r} is not a real date and time") from None


def format_sql_timestamp(value: datetime.datetime) -> str:
    """A naive datetime -> its wire text (microseconds shown only when not zero); the inverse
    of `parse_sql_timestamp`. Asserts the datetime is naive: converting time zones is the
    caller's decision."""
    assert value.tzinfo is None, value
    spec = "microseconds" if value.microsecond else "seconds"
    return value.isoformat(sep=" ", timespec=spec)


def _field_list(names: Any) -> str:
    # Names come from the network: keep the message short whatever they are.
    shown = sorted(repr(name) if len(name) <= 40 else repr(name[:40]) + "..." for name in names)
    more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
    return ", ".join(shown[:5]) + more


def validate_request(obj: Any) -> tuple[int, str, dict[str, Any]]:
    """Check a decoded request against the schema; return ``(id, op, args)`` (args is the
    request's own dict, not a copy).

    Raises BadRequest with a message naming the first problem found, and with `request_id` set
    once the id itself was valid. Never asserts: `obj` comes from the network.
    """
    if not isinstance(obj, dict):
        raise BadRequest(f"request must be a map {{id, op, args}}, got {_type_name(obj)}")
    request_id = obj.get("id")
    if not _is_plain_int(request_id) or not 0 <= request_id <= REQUEST_ID_MAX:
        shown = repr(request_id) if _is_plain_int(request_id) else _type_name(request_id)
        if "id" not in obj:
            shown = "nothing"
        raise BadRequest(f"request id must be a non-negative int, got {shown}")
    missing = {"id", "op", "args"} - obj.keys()
    if missing:
        raise BadRequest(f"request is missing field(s) {_field_list(missing)}", request_id)
    extra = obj.keys() - {"id", "op", "args"}
    if extra:
        raise BadRequest(
            f"request has unknown field(s) {_field_list(extra)}; expected id, op, args", request_id
        )
    op = obj["op"]
    if not isinstance(op, str):
        raise BadRequest(f"request op must be a str, got {_type_name(op)}", request_id)
    schema = REQUEST_ARGS.get(op)
    if schema is None:
        shown = op if len(op) <= 40 else op[:40] + "..."
        raise BadRequest(
            f"unknown op {shown!r}; expected one of {', '.join(sorted(REQUEST_ARGS))}", request_id
        )
    args = obj["args"]
    if not isinstance(args, dict):
        raise BadRequest(f"{op}: args must be a map, got {_type_name(args)}", request_id)
    missing = schema.keys() - args.keys() - OPTIONAL_ARGS.get(op, frozenset())
    if missing:
        raise BadRequest(f"{op}: args is missing {_field_list(missing)}", request_id)
    extra = args.keys() - schema.keys()
    if extra:
        expected = ", ".join(schema) or "no fields"
        raise BadRequest(
            f"{op}: args has unknown field(s) {_field_list(extra)}; expected {expected}",
            request_id,
        )
    for name, kind in schema.items():
        if name in args:
            _check_field(op, name, kind, args[name], request_id)
    return request_id, op, args


def response_ok(request_id: int, result: Any) -> dict[str, Any]:
    """The response map for a request that succeeded."""
    return {"id": request_id, "ok": True, "result": result}


def response_error(request_id: int, error: RaftstoreError) -> dict[str, Any]:
    """The response map for a request that failed with `error` (a RaftstoreError)."""
    return {"id": request_id, "ok": False, "error": error.to_wire()}


def refusal_frame(code: str, message: str) -> bytes:
    """The frame a port that serves no clients sends a client before closing: an error response
    with id `CONNECTION_REFUSAL_ID` (fixed bytes for given arguments; nothing of the client's
    request is read to build it)."""
    error = {"code": code, "message": message, "ambiguous": False}
    return encode_frame({"id": CONNECTION_REFUSAL_ID, "ok": False, "error": error})


def validate_response(obj: Any) -> tuple[int, bool, Any]:
    """Check a decoded response envelope; return ``(id, ok, result_or_error_map)``.

    Only the envelope is checked (the error map goes through `errors.error_from_wire`, the
    result through the caller's per-op check). Unknown extra fields are ignored so a newer
    server can add some. Raises BadResponse.
    """
    if not isinstance(obj, dict):
        raise BadResponse(f"response must be a map, got {_type_name(obj)}")
    request_id, ok = obj.get("id"), obj.get("ok")
    if not _is_plain_int(request_id):
        raise BadResponse(f"response id must be an int, got {_type_name(request_id)}")
    if not isinstance(ok, bool):
        raise BadResponse(f"response ok must be a bool, got {_type_name(ok)}")
    field = "result" if ok else "error"
    if field not in obj:
        raise BadResponse(f"response with ok={str(ok).lower()} has no {field!r} field")
    return request_id, ok, obj[field]
