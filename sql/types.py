"""SQL types and the value rules between them: input syntax, implicit coercion, CAST, storage.

Why: every stage needs the same answers to "may this value go into that column?" and "what
does '2024-01-01' mean as a TIMESTAMP?". Keeping them in one pure module means INSERT,
UPDATE, WHERE comparisons, parameters and CAST cannot drift apart.

Runtime values are plain Python: INT -> int (64-bit range enforced on write and on
arithmetic), FLOAT -> float, TEXT -> str, BOOL -> bool, BYTES -> bytes, TIMESTAMP ->
naive `datetime.datetime` (UTC, microsecond precision). In storage and keys a TIMESTAMP is
an int of microseconds since the epoch; everything else is stored as is.

Static (plan-time) types add three pseudo types:

* ``NULL``    - the NULL literal; becomes whatever its context needs.
* ``UNKNOWN`` - a quoted string literal; like PostgreSQL's *unknown* it is parsed as the
  type its context needs (``WHERE ts > '2024-01-01'``), and is TEXT when nothing asks.
* ``PARAM``   - a bound parameter with no context; it takes the type of its Python value.
  A parameter *with* context is coerced to the context's type, as PostgreSQL infers it.

Implicit coercion (assignment, comparison with a typed side, parameters) is strict the way
CockroachDB is: INT widens to FLOAT, strings are parsed, nothing else converts (a FLOAT never
silently becomes an INT). Explicit CAST converts more (see `cast_value`).

Pure: no I/O.
"""

from __future__ import annotations

import datetime as _dt
import math

from sql.constants import INT_MAX, INT_MIN
from sql.errors import SQLError

INT = "INT"
FLOAT = "FLOAT"
TEXT = "TEXT"
BOOL = "BOOL"
BYTES = "BYTES"
TIMESTAMP = "TIMESTAMP"
NULL = "NULL"
UNKNOWN = "UNKNOWN"
PARAM = "PARAM"

COLUMN_TYPES = (INT, FLOAT, TEXT, BOOL, BYTES, TIMESTAMP)
NUMERIC_TYPES = frozenset({INT, FLOAT})
UNTYPED = frozenset({NULL, UNKNOWN, PARAM})

EPOCH = _dt.datetime(1970, 1, 1)
_MICROSECOND = _dt.timedelta(microseconds=1)

_TRUE_WORDS = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"f", "false", "n", "no", "off", "0"})


def _mismatch(message: str) -> SQLError:
    return SQLError("datatype_mismatch", message)


def check_int_range(value: int, what: str = "INT") -> int:
    """`value` if it fits a 64-bit INT, else a datatype_mismatch error."""
    if INT_MIN <= value <= INT_MAX:
        return value
    raise _mismatch(
        f"{what} value {value} is out of range for a 64-bit INT "
        f"[{INT_MIN}, {INT_MAX}]; use FLOAT for larger numbers"
    )


def value_type(value: object) -> str:
    """The SQL type of a runtime Python value (NULL for None)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return TEXT
    if isinstance(value, (bytes, bytearray, memoryview)):
        return BYTES
    if isinstance(value, (_dt.datetime, _dt.date)):
        return TIMESTAMP
    raise SQLError(
        "invalid_parameter",
        f"values of Python type {type(value).__name__} cannot be used in SQL; "
        "pass None, bool, int, float, str, bytes or datetime",
    )


def normalize_param(value: object) -> object:
    """A bound parameter as a runtime value (bytearray -> bytes, date -> datetime, ...)."""
    kind = value_type(value)
    if kind == BYTES and not isinstance(value, bytes):
        return bytes(value)  # type: ignore[arg-type]
    if kind == TIMESTAMP:
        return to_naive_utc(value)  # type: ignore[arg-type]
    if kind == INT:
        return check_int_range(int(value), "parameter")  # type: ignore[call-overload]
    return value


def to_naive_utc(value: _dt.datetime | _dt.date) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        return _dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value


# --- text input syntax --------------------------------------------------------------------------


def parse_text(text: str, to_type: str) -> object:
    """`text` read as a literal of `to_type` (PostgreSQL input syntax, roughly)."""
    if to_type in (TEXT, UNKNOWN, PARAM, NULL):
        return text
    stripped = text.strip()
    if to_type == INT:
        try:
            return check_int_range(int(stripped, 10))
        except ValueError:
            raise _mismatch(f"invalid input syntax for type INT: {text!r}") from None
    if to_type == FLOAT:
        try:
            return float(stripped)
        except ValueError:
            raise _mismatch(f"invalid input syntax for type FLOAT: {text!r}") from None
    if to_type == BOOL:
        word = stripped.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise _mismatch(f"invalid input syntax for type BOOL: {text!r} (use true or false)")
    if to_type == BYTES:
        if stripped.startswith("\\x"):
            try:
                return bytes.fromhex(stripped[2:])
            except ValueError:
                raise _mismatch(f"invalid hexadecimal BYTES literal: {text!r}") from None
        return text.encode("utf-8")
    if to_type == TIMESTAMP:
        return parse_timestamp(text)
    raise AssertionError(to_type)


def parse_timestamp(text: str) -> _dt.datetime:
    """'YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][+zone]' -> naive datetime; a zone offset is ignored as
    PostgreSQL's TIMESTAMP (without time zone) ignores it."""
    stripped = text.strip()
    try:
        value = _dt.datetime.fromisoformat(stripped)
    except ValueError:
        raise _mismatch(
            f"invalid input syntax for type TIMESTAMP: {text!r} "
            "(use 'YYYY-MM-DD HH:MM:SS[.ffffff]')"
        ) from None
    return value.replace(tzinfo=None)


def format_text(value: object, from_type: str) -> str:
    """A value as TEXT, PostgreSQL's output format."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value != value:
            return "NaN"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


# --- coercion and casts -------------------------------------------------------------------------


def coerce_implicit(value: object, to_type: str, what: str = "value") -> object:
    """`value` as `to_type` under implicit rules: None stays None, INT widens to FLOAT, str is
    parsed, the matching Python type passes; anything else is a datatype_mismatch."""
    if value is None or to_type in UNTYPED:
        return value
    if isinstance(value, str):
        if to_type == TEXT:
            return value
        return parse_text(value, to_type)
    if to_type == INT:
        if isinstance(value, int) and not isinstance(value, bool):
            return check_int_range(value)
    elif to_type == FLOAT:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    elif to_type == BOOL:
        if isinstance(value, bool):
            return value
    elif to_type == BYTES:
        if isinstance(value, bytes):
            return value
    elif to_type == TIMESTAMP:
        if isinstance(value, _dt.datetime):
            return value
    raise _mismatch(
        f"{what} of type {value_type(value)} cannot be used as {to_type}; "
        f"cast it explicitly, e.g. CAST(... AS {to_type})"
    )


def assignable(from_type: str, to_type: str) -> bool:
    """Whether a statically typed expression may be stored in a column of `to_type`."""
    return from_type in UNTYPED or from_type == to_type or (from_type, to_type) == (INT, FLOAT)


def comparable(a: str, b: str) -> bool:
    """Whether two static types may be compared (after untyped sides are coerced)."""
    if a in UNTYPED or b in UNTYPED:
        return True
    return a == b or (a in NUMERIC_TYPES and b in NUMERIC_TYPES)


def castable(from_type: str, to_type: str) -> bool:
    if from_type in UNTYPED or from_type == to_type or to_type == TEXT or from_type == TEXT:
        return True
    allowed = {
        (INT, FLOAT),
        (FLOAT, INT),
        (INT, BOOL),
        (BOOL, INT),
        (INT, TIMESTAMP),
        (TIMESTAMP, INT),
    }
    return (from_type, to_type) in allowed


def cast_value(value: object, to_type: str) -> object:
    """Explicit CAST(value AS to_type). FLOAT -> INT rounds half to even (PostgreSQL's float8 to
    int8); INT <-> TIMESTAMP counts seconds since the epoch (as CockroachDB)."""
    if value is None:
        return None
    if to_type == TEXT:
        return format_text(value, value_type(value))
    if isinstance(value, str):
        return parse_text(value, to_type)
    if to_type == INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return check_int_range(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _mismatch(f"FLOAT value {format_text(value, FLOAT)} cannot be cast to INT")
            return check_int_range(round(value))
        if isinstance(value, _dt.datetime):
            return (value - EPOCH) // _dt.timedelta(seconds=1)
    elif to_type == FLOAT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif to_type == BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
    elif to_type == BYTES:
        if isinstance(value, bytes):
            return value
    elif to_type == TIMESTAMP:
        if isinstance(value, _dt.datetime):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return EPOCH + _dt.timedelta(seconds=value)
            except OverflowError:
                raise _mismatch(
                    f"{value} seconds since the epoch is out of range for TIMESTAMP "
                    "(years 1 to 9999)"
                ) from None
    raise _mismatch(f"cannot cast {value_type(value)} to {to_type}")


# --- storage ------------------------------------------------------------------------------------


def to_storage(value: object, column_type: str) -> object:
    """A runtime value as stored in a row value or key (TIMESTAMP -> int microseconds)."""
    if column_type == TIMESTAMP and value is not None:
        return (value - EPOCH) // _MICROSECOND  # type: ignore[operator]
    return value


def from_storage(value: object, column_type: str) -> object:
    if column_type == TIMESTAMP and value is not None:
        return EPOCH + _dt.timedelta(microseconds=value)  # type: ignore[arg-type]
    return value


def timestamp_from_micros(micros: int) -> _dt.datetime:
    return EPOCH + _dt.timedelta(microseconds=micros)
