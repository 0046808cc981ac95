"""The store's keyspace as a person reads it: one rendering of a key for every place that shows one.

Why one module: `raftstore status` (a range's span), SQL's ``SHOW RANGES`` and ``EXPLAIN`` all
show store keys to the same user, who must be able to match a range boundary in one with a key in
the other. So they share `render_key`, and the prefixes it reads are defined here, once, for the
storage layer and the SQL layer alike (kvserver/ranges.py describes the layout):

    b"\\x01..."                     the meta range (range 1): descriptors, the SQL catalog
    b"\\x02"                        the start of the data ranges
    b"k" + user key                raw key-value pairs (raftstore.kv)
    b"t" + encode_key((table_id, *primary key))   SQL rows

Pure: no I/O. Renderings are for people; nothing parses them back.
"""

from __future__ import annotations

from raftstore.keys import decode_key

META_START = b"\x01"
DATA_START = b"\x02"
RAW_PREFIX = b"k"          # raw key-value keyspace (raftstore.kv); kvserver/replica.py's, pinned equal by a test
SQL_ROW_PREFIX = b"t"      # SQL rows: encode_key((table_id, *pk)) follows
key_display_chars_max = 40    # a rendered key longer than this is cut and ends in "..."


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
