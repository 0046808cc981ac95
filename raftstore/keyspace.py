"""The store's keyspace as a person reads it: one rendering of a key for every place that shows one.

Why one module: `raftstore status` (a range's span), SQL's ``SHOW RANGES`` and ``EXPLAIN`` all
show store keys to the same user, who must be able to match a range boundary in one with a key in
the other. So they share `render_key`, and the prefixes it reads are defined here, once, for the
storage layer and the SQL layer alike (kvserver/ranges.py describes the layout):

    b"\\x01..."                     the meta range (range 1): descriptors, the SQL catalog,
                                   zones (b"\\x01z" + span start: a span's home region)
    b"\\x02"                        the start of the data ranges
    b"k" + user key                raw key-value pairs (raftstore.kv)
    b"t" + encode_key((table_id, *primary key))   SQL rows

Pure: no I/O. Renderings are for people; nothing parses them back.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from raftstore.keys import decode_key

META_START = b"\x01"
DATA_START = b"\x02"
RAW_PREFIX = b"k"          # raw key-value keyspace (raftstore.kv); kvserver/replica.py's, pinned equal by a test
SQL_ROW_PREFIX = b"t"      # SQL rows: encode_key((table_id, *pk)) follows
key_display_chars_max = 40    # a rendered key longer than this is cut and ends in "..."


# --- zones: a span's home region (kvserver/zones.py reads them, sql/catalog.py writes them) ---

ZONE_PREFIX = b"\x01z"          # in the meta range: + span start -> msgpack [end, region]
ZONE_END = b"\x01z\xff"          # zone keys are ZONE_PREFIX + a store key (every store key is < b"\xff")
REGION_NAME_CHARS_MAX = 64


def zone_key(start: bytes) -> bytes:
    return ZONE_PREFIX + start


def encode_zone(end: bytes, region: str) -> bytes:
    return msgpack.packb([end, region], use_bin_type=True)


@dataclass(frozen=True)
class Zone:
    start: bytes
    end: bytes
    region: str


def decode_zone(key: bytes, value: bytes) -> Zone | None:
    """The zone a record holds, or None for one that is not well formed (a record is written by
    our own SQL layer; a malformed one is skipped, never trusted)."""
    if not key.startswith(ZONE_PREFIX):
        return None
    try:
        data = msgpack.unpackb(value, raw=False)
    except Exception:   # noqa: BLE001 - any undecodable bytes: not a zone
        return None
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], bytes) and isinstance(data[1], str)):
        return None
    start, (end, region) = key[len(ZONE_PREFIX):], data
    if not start < end or not region or len(region) > REGION_NAME_CHARS_MAX:
        return None
    return Zone(start, end, region)


def escape_bytes(data: bytes) -> str:
    """`data` as readable text that says exactly which bytes it holds: valid UTF-8 that is
    printable stays as is, a backslash becomes ``\\\\``, any other byte ``\\xNN`` and other
    unprintable characters ``\\uNNNN``."""
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not part of valid UTF-8
            out.append("\\x%02x" % (code - 0xDC00))
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append("\\x%02x" % code)
        elif code < 0x10000:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    return "".join(out)


def _shorten(text: str) -> str:
    if len(text) <= key_display_chars_max:
        return text
    return text[: key_display_chars_max - 3] + "..."


def render_key(key: bytes | None, *, is_end: bool = False, table_names: dict[int, str] | None = None) -> str:
    """One store key (a range boundary, a span's start):

    * ``-inf`` for the start of the keyspace or of the data ranges, ``+inf`` for an end of None
      (``?`` for a start of None: a replica that does not know its span yet), ``meta`` for the
      start of the meta range;
    * a raw key-value key as the user's key (``""`` for the empty one), escaped (`escape_bytes`);
    * a SQL row key as ``/<table>/<pk>/...`` - the table's name from `table_names` (id -> name),
      else ``table<id>``; the bare row prefix as ``/t``;
    * anything else as ``b'...'``, escaped.

    Longer than key_display_chars_max: cut, ending in ``...``."""
    if key is None:
        return "+inf" if is_end else "?"
    if key in (b"", DATA_START):
        return "-inf"
    if key == META_START:
        return "meta"
    if key.startswith(RAW_PREFIX):
        user_key = key[len(RAW_PREFIX):]
        return _shorten(escape_bytes(user_key)) if user_key else '""'
    if key == SQL_ROW_PREFIX:
        return "/t"
    if key.startswith(SQL_ROW_PREFIX):
        row = _sql_row_text(key[len(SQL_ROW_PREFIX):], table_names or {})
        if row is not None:
            return _shorten(row)
    return "b'" + _shorten(escape_bytes(key)) + "'"


def _sql_row_text(encoded: bytes, table_names: dict[int, str]) -> str | None:
    try:
        values = decode_key(encoded)
    except ValueError:
        return None
    if not values or not isinstance(values[0], int) or isinstance(values[0], bool):
        return None
    table = table_names.get(values[0], f"table{values[0]}")
    return "/" + "/".join([table, *(_key_value_text(v) for v in values[1:])])


def _key_value_text(value: object) -> str:
    """A decoded key element as SQL prints it as text (sql.types.format_text for the kinds a
    key holds), control characters escaped so that a key stays one line."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, str):
        return escape_bytes(value.encode("utf-8", "surrogatepass"))
    return str(value)
