"""Order-preserving encoding of typed tuples into byte keys.

Why: the store only understands byte strings ordered by memcmp. Ranges are cut at byte keys,
scans walk byte keys in order, SQLite's index orders BLOBs bytewise. For a primary-key or index
scan to return rows in SQL order, and for ``/table_id/...`` prefixes to bound a table, the byte
order of encoded keys must be exactly the order of the tuples they encode.

Invariants (all property-tested in tests/test_keys.py):

* ``encode_key(a) < encode_key(b)`` (bytewise) exactly when ``a < b`` in *key order* below.
* ``decode_key(encode_key(t)) == t``, and every byte string either decodes to a tuple whose
  encoding is that very string or raises ValueError (one canonical encoding per tuple).
* ``encode_key(t)`` is a byte prefix of ``encode_key(t + more)``: each element's encoding is
  self-delimiting and the tuple's is their concatenation, so a table or index prefix scan is
  the byte span ``[encode_key(prefix), prefix_end(encode_key(prefix)))``.

Key order (SQL-like, NULLS FIRST):

* Tuples compare element by element; a tuple that is a proper prefix of another sorts first.
* Element kinds sort by kind: ``None < False < True < numbers < str < bytes``. bool is its own
  kind (SQL BOOL is not a number), unlike Python where ``True == 1``.
* Numbers: int and float share one kind and compare by exact numeric value:
  ``-inf < negatives < 0 < positives < +inf``, arbitrary-size ints against floats exactly as
  Python compares them. An int and a float of equal value are distinct keys; the int sorts
  first (``1 < 1.0`` in key order). ``-0.0`` is stored as ``0.0``. NaN is rejected.
* str: by Unicode code point (Python's str order; UTF-8 byte order is the same order).
  Lone surrogates are rejected.
* bytes: unsigned lexicographic, a prefix first (Python's bytes order).

Encoding: one tag byte per element, then a body.

* None, False, True, int 0, float 0.0, -inf, +inf: the tag alone.
* Other numbers: tag ``NEG`` or ``POS``, then for the magnitude ``m = 1.f * 2**e``: the exponent
  ``e`` as an order-preserving signed varint, then the fraction bits ``f`` (trailing zeros
  dropped) six to a byte, most significant first, each byte ``(6 bits << 2) | control`` where
  control is ``0b10`` "more follows" or, on the last byte, the type (int ``0b00``, float
  ``0b01``). Comparing (exponent, fraction bits, type) compares magnitudes, ties going to the
  int. Negative numbers store the same bytes inverted (with the type bits swapped first), so
  larger magnitudes sort lower and the int still sorts first.
* str (UTF-8) and bytes: the content with each ``0x00`` escaped to ``0x00 0xFF``, then the
  terminator ``0x00 0x01``; embedded zero bytes keep their order and a string sorts before
  its extensions.

Bounds: ints of up to INT_BITS_MAX bits (a decoder must not be made to build a huge int from a
few bytes). Errors: ValueError for unsupported values on encode and for malformed or
non-canonical bytes on decode. Pure: no I/O.
"""

from __future__ import annotations

import math

INT_BITS_MAX = 1 << 16

TAG_NULL = 0x05
TAG_FALSE = 0x10
TAG_TRUE = 0x11
TAG_NEG_INF = 0x20
TAG_NEG = 0x21
TAG_ZERO_INT = 0x22
TAG_ZERO_FLOAT = 0x23
TAG_POS = 0x24
TAG_POS_INF = 0x25
TAG_TEXT = 0x30
TAG_BYTES = 0x40

# Exponent varint: one byte 0x80 + e for e in [-_EXP_SMALL, _EXP_SMALL); beyond that a length
# byte (0xE0 + n above, 0x20 - n below) and n big-endian bytes (inverted below).
_EXP_SMALL = 0x60
_EXP_BYTES_MAX = 31

_MANTISSA_BITS_PER_BYTE = 6
_CTRL_MORE = 0b10
_CTRL_INT = 0b00  # last byte of a positive int; inverted order for negatives, see _CTRL_*_NEG
_CTRL_FLOAT = 0b01
_CTRL_INT_NEG = 0b01  # before inversion, so that after it the int still sorts first
_CTRL_FLOAT_NEG = 0b00

_FLIP = bytes(range(255, -1, -1))
_ESCAPED_ZERO = b"\x00\xff"
_TERMINATOR = b"\x00\x01"

_FLOAT_EXP_MAX = 1023
_FLOAT_FRACTION_BITS = 52
_FLOAT_LOWEST_BIT_EXP = -1074


def encode_key(values: tuple) -> bytes:
    """Encode a tuple of None, bool, int, float, str and bytes into an order-preserving key.

    Raises ValueError for any other element type, NaN, a str with lone surrogates, or an int
    wider than INT_BITS_MAX bits. The empty tuple encodes to b"".
    """
    if not isinstance(values, tuple):
        raise ValueError(f"encode_key takes a tuple, got {type(values).__name__}")
    out = bytearray()
    for index, value in enumerate(values):
        _encode_element(out, value, index)
    return bytes(out)


def decode_key(data: bytes) -> tuple:
    """Decode bytes produced by `encode_key` back into the tuple.

    Raises ValueError naming the offset for truncated input, an unknown tag, or any byte
    string `encode_key` would not produce.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise ValueError(f"decode_key takes bytes, got {type(data).__name__}")
    values = []
    pos = 0
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag == TAG_NULL:
            values.append(None)
        elif tag == TAG_FALSE:
            values.append(False)
        elif tag == TAG_TRUE:
            values.append(True)
        elif tag == TAG_POS or tag == TAG_NEG:
            value, pos = _decode_number(data, pos, negative=tag == TAG_NEG)
            values.append(value)
        elif tag == TAG_ZERO_INT:
            values.append(0)
        elif tag == TAG_ZERO_FLOAT:
            values.append(0.0)
        elif tag == TAG_NEG_INF:
            values.append(-math.inf)
        elif tag == TAG_POS_INF:
            values.append(math.inf)
        elif tag == TAG_TEXT:
            raw, pos = _decode_escaped(data, pos)
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(f"malformed key: invalid UTF-8 in text element: {exc}") from None
        elif tag == TAG_BYTES:
            raw, pos = _decode_escaped(data, pos)
            values.append(raw)
        else:
            raise ValueError(f"malformed key: unknown tag 0x{tag:02x} at offset {pos - 1}")
    return tuple(values)


def prefix_end(key: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``key``.

    So ``[key, prefix_end(key))`` is exactly the span of keys with that prefix. None when no
    such string exists (``key`` is empty or all 0xFF): the span then runs to the end.
    """
    stripped = bytes(key).rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


# --- encoding ---------------------------------------------------------------------------------


def _encode_element(out: bytearray, value: object, index: int) -> None:
    if value is None:
        out.append(TAG_NULL)
    elif value is True:
        out.append(TAG_TRUE)
    elif value is False:
        out.append(TAG_FALSE)
    elif isinstance(value, int):
        if isinstance(value, bool):  # a bool subclass that is neither True nor False: no
            raise ValueError(f"key element {index}: unsupported bool value {value!r}")
        _encode_int(out, int(value), index)
    elif isinstance(value, float):
        _encode_float(out, float(value), index)
    elif isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"key element {index}: str is not valid Unicode: {exc}") from None
        out.append(TAG_TEXT)
        out += raw.replace(b"\x00", _ESCAPED_ZERO)
        out += _TERMINATOR
    elif isinstance(value, (bytes, bytearray)):
        out.append(TAG_BYTES)
        out += bytes(value).replace(b"\x00", _ESCAPED_ZERO)
        out += _TERMINATOR
    else:
        raise ValueError(
            f"key element {index}: unsupported type {type(value).__name__} "
            "(keys hold None, bool, int, float, str, bytes)"
        )


def _encode_int(out: bytearray, value: int, index: int) -> None:
    if value == 0:
        out.append(TAG_ZERO_INT)
        return
    magnitude = -value if value < 0 else value
    if magnitude.bit_length() > INT_BITS_MAX:
        raise ValueError(
            f"key element {index}: int of {magnitude.bit_length()} bits is wider than "
            f"INT_BITS_MAX={INT_BITS_MAX}"
        )
    if value > 0:
        out.append(TAG_POS)
        _encode_magnitude(out, magnitude, 0, _CTRL_INT, negative=False)
    else:
        out.append(TAG_NEG)
        _encode_magnitude(out, magnitude, 0, _CTRL_INT_NEG, negative=True)


def _encode_float(out: bytearray, value: float, index: int) -> None:
    if value != value:
        raise ValueError(f"key element {index}: NaN cannot be a key (it has no order)")
    if value == 0.0:
        out.append(TAG_ZERO_FLOAT)  # -0.0 included: it equals 0.0
    elif value == math.inf:
        out.append(TAG_POS_INF)
    elif value == -math.inf:
        out.append(TAG_NEG_INF)
    else:
        numerator, denominator = abs(value).as_integer_ratio()
        shift = denominator.bit_length() - 1  # denominator is a power of two
        if value > 0:
            out.append(TAG_POS)
            _encode_magnitude(out, numerator, shift, _CTRL_FLOAT, negative=False)
        else:
            out.append(TAG_NEG)
            _encode_magnitude(out, numerator, shift, _CTRL_FLOAT_NEG, negative=True)


def _encode_magnitude(
    out: bytearray, numerator: int, shift: int, final_ctrl: int, *, negative: bool
) -> None:
    """Append (exponent, fraction bytes) for the positive value ``numerator / 2**shift``."""
    trailing_zeros = (numerator & -numerator).bit_length() - 1
    numerator >>= trailing_zeros
    shift -= trailing_zeros
    fraction_bits = numerator.bit_length() - 1  # below the leading 1
    exponent = fraction_bits - shift
    body = bytearray()
    _encode_exponent(body, exponent)
    fraction = numerator - (1 << fraction_bits)
    chunks = (fraction_bits + _MANTISSA_BITS_PER_BYTE - 1) // _MANTISSA_BITS_PER_BYTE
    if chunks == 0:
        body.append(final_ctrl)
    else:
        fraction <<= chunks * _MANTISSA_BITS_PER_BYTE - fraction_bits
        for i in range(chunks - 1, 0, -1):
            body.append((((fraction >> (_MANTISSA_BITS_PER_BYTE * i)) & 0x3F) << 2) | _CTRL_MORE)
        body.append(((fraction & 0x3F) << 2) | final_ctrl)
    out += body.translate(_FLIP) if negative else body


def _encode_exponent(out: bytearray, exponent: int) -> None:
    if -_EXP_SMALL <= exponent < _EXP_SMALL:
        out.append(0x80 + exponent)
    elif exponent >= _EXP_SMALL:
        rest = exponent - _EXP_SMALL
        n = max(1, (rest.bit_length() + 7) // 8)
        assert n <= _EXP_BYTES_MAX, exponent
        out.append(0xE0 + n)
        out += rest.to_bytes(n, "big")
    else:
        rest = -_EXP_SMALL - 1 - exponent
        n = max(1, (rest.bit_length() + 7) // 8)
        assert n <= _EXP_BYTES_MAX, exponent
        out.append(0x20 - n)
        out += ((1 << (8 * n)) - 1 - rest).to_bytes(n, "big")


# --- decoding ---------------------------------------------------------------------------------


def _decode_number(data: bytes, pos: int, *, negative: bool) -> tuple[int | float, int]:
    flip = 0xFF if negative else 0x00
    start = pos - 1
    exponent, pos = _decode_exponent(data, pos, flip)
    fraction = 0
    chunks = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ValueError(f"malformed key: truncated number starting at offset {start}")
        byte = data[pos] ^ flip
        pos += 1
        ctrl = byte & 0b11
        bits = byte >> 2
        fraction = (fraction << _MANTISSA_BITS_PER_BYTE) | bits
        chunks += 1
        if ctrl != _CTRL_MORE:
            break
    if ctrl == 0b11:
        raise ValueError(f"malformed key: bad number control bits at offset {pos - 1}")
    is_int = ctrl == (_CTRL_INT_NEG if negative else _CTRL_INT)
    if bits == 0 and chunks > 1:
        raise ValueError(f"malformed key: non-canonical number at offset {start}")
    if fraction == 0:
        fraction_bits = 0
    else:
        fraction_bits = chunks * _MANTISSA_BITS_PER_BYTE
        trailing_zeros = (fraction & -fraction).bit_length() - 1
        fraction >>= trailing_zeros
        fraction_bits -= trailing_zeros
    significand = (1 << fraction_bits) | fraction
    shift = exponent - fraction_bits  # value = significand * 2**shift
    value: int | float
    if is_int:
        if shift < 0:
            raise ValueError(f"malformed key: int with a fractional part at offset {start}")
        if exponent >= INT_BITS_MAX:
            raise ValueError(
                f"malformed key: int wider than INT_BITS_MAX={INT_BITS_MAX} at offset {start}"
            )
        value = significand << shift
    else:
        if (
            fraction_bits > _FLOAT_FRACTION_BITS
            or exponent > _FLOAT_EXP_MAX
            or shift < _FLOAT_LOWEST_BIT_EXP
        ):
            raise ValueError(f"malformed key: number at offset {start} is not a float")
        value = math.ldexp(float(significand), shift)
    return (-value if negative else value), pos


def _decode_exponent(data: bytes, pos: int, flip: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ValueError(f"malformed key: truncated number at offset {pos}")
    first = data[pos] ^ flip
    pos += 1
    if 0x80 - _EXP_SMALL <= first < 0x80 + _EXP_SMALL:
        return first - 0x80, pos
    if 0xE0 < first:
        n = first - 0xE0
        above = True
    elif 0x00 < first < 0x20:
        n = 0x20 - first
        above = False
    else:
        raise ValueError(f"malformed key: bad number exponent byte at offset {pos - 1}")
    if pos + n > len(data):
        raise ValueError(f"malformed key: truncated number exponent at offset {pos - 1}")
    raw = data[pos : pos + n]
    if flip:
        raw = raw.translate(_FLIP)
    rest = int.from_bytes(raw, "big")
    if not above:
        rest = (1 << (8 * n)) - 1 - rest
    if n > 1 and rest < (1 << (8 * (n - 1))):
        raise ValueError(f"malformed key: non-canonical number exponent at offset {pos - 1}")
    exponent = _EXP_SMALL + rest if above else -_EXP_SMALL - 1 - rest
    return exponent, pos + n


def _decode_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    start = pos - 1
    parts = []
    while True:
        zero = data.find(b"\x00", pos)
        if zero < 0 or zero + 1 >= len(data):
            raise ValueError(f"malformed key: unterminated string starting at offset {start}")
        parts.append(data[pos:zero])
        marker = data[zero + 1]
        if marker == 0x01:
            return b"\x00".join(parts), zero + 2
        if marker != 0xFF:
            raise ValueError(f"malformed key: bad escape 0x00 0x{marker:02x} at offset {zero}")
        pos = zero + 2
