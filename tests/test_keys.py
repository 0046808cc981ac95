"""Properties of the order-preserving key encoding (raftstore/keys.py)."""

from __future__ import annotations

import ast
import math
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from raftstore.keys import INT_BITS_MAX, decode_key, encode_key, prefix_end

# --- the key order, written independently of the encoding ---------------------------------------


def key_order(values: tuple) -> tuple:
    """The documented key order as a Python sort key: kind first, then value (int before float
    on a numeric tie), tuples element by element with a prefix first."""
    return tuple(_element_order(v) for v in values)


def _element_order(v: object) -> tuple:
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, (int, float)):
        return (2, v, isinstance(v, float))
    if isinstance(v, str):
        return (3, v)
    return (4, v)


# --- generators ---------------------------------------------------------------------------------

# Small pools make equal elements (and so deeper comparisons) likely; wide ones hunt edge cases.
ints = st.one_of(
    st.integers(-3, 3),
    st.integers(-(2**70), 2**70),
    st.integers(-(2**300), 2**300),
    st.integers(0, 1100).map(lambda e: 2**e),
    st.integers(0, 1100).map(lambda e: -(2**e)),
    st.integers(0, 1100).map(lambda e: 2**e - 1),
)
floats = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, math.inf, -math.inf, 5e-324, -5e-324,
                     2.2250738585072014e-308, 1.7976931348623157e308]),
    st.floats(allow_nan=False),
)
numbers = st.one_of(ints, floats)
texts = st.one_of(st.text(alphabet="a\x00\x01\x7f\xe9\u0100\uffff\U0001f600", max_size=4),
                  st.text())
blobs = st.one_of(st.binary(max_size=4).map(lambda b: b.replace(b"b", b"\x00")),
                  st.sampled_from([b"\x00\xff", b"\x00\x01", b"\xff"]), st.binary())

KINDS = {"bool": st.booleans(), "int": ints, "float": floats, "number": numbers, "str": texts,
         "bytes": blobs}
any_element = st.one_of(st.none(), *KINDS.values())
any_tuple = st.lists(any_element, max_size=5).map(tuple)


@st.composite
def tuple_pairs_of_one_shape(draw, nulls: bool = True):
    """Two tuples with the same length and the same kind at each position, None mixed in."""
    shape = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=4))

    def one_tuple():
        elements = []
        for kind in shape:
            strategy = KINDS[kind]
            if nulls:
                strategy = st.one_of(st.none(), strategy)
            elements.append(draw(strategy))
        return tuple(elements)

    a = one_tuple()
    b = one_tuple()
    # Often share a prefix, so later positions decide the comparison.
    keep = draw(st.integers(0, len(shape)))
    return a, a[:keep] + b[keep:]


def same_value(original: object, decoded: object) -> bool:
    """Equal and of the same type; a float zero must come back as +0.0."""
    if type(original) is not type(decoded) or original != decoded:
        return False
    return not (isinstance(decoded, float) and decoded == 0.0) or math.copysign(1.0, decoded) > 0


# --- order --------------------------------------------------------------------------------------


@given(tuple_pairs_of_one_shape())
@example(((1,), (1.0,)))
@example(((-1,), (-1.0,)))
@example(((b"a",), (b"a\x00",)))
@example((("a\x00",), ("a\x00\x00",)))
def test_encoding_order_is_key_order_for_tuples_of_one_shape_with_nulls(pair):
    a, b = pair
    ea, eb = encode_key(a), encode_key(b)
    assert (ea < eb) == (key_order(a) < key_order(b))
    assert (ea == eb) == (key_order(a) == key_order(b))


@given(tuple_pairs_of_one_shape(nulls=False))
def test_encoding_order_is_python_order_for_same_typed_tuples(pair):
    a, b = pair
    if any(type(x) is not type(y) for x, y in zip(a, b)):
        return  # an int against a float: Python says 1 == 1.0, key order puts the int first
    assert (encode_key(a) < encode_key(b)) == (a < b)


@given(st.lists(any_tuple, max_size=8))
def test_sorting_encodings_sorts_any_tuples_in_key_order(tuples):
    encoded = [encode_key(t) for t in tuples]
    assert sorted(encoded) == [encode_key(t) for t in sorted(tuples, key=key_order)]


@given(ints, floats)
@example(2**53 + 1, float(2**53))
@example(2**1024, math.inf)
@example(0, -0.0)
def test_ints_and_floats_compare_numerically_with_the_int_first_on_a_tie(i, f):
    ei, ef = encode_key((i,)), encode_key((f,))
    assert (ei < ef) == (i <= f)


def test_kinds_sort_null_bool_number_text_bytes():
    ordered = [(None,), (False,), (True,), (-math.inf,), (-(2**100),), (-1.5,), (0,), (0.0,),
               (1,), (1.0,), (math.inf,), ("",), ("\x00",), ("a",), (b"",), (b"\x00",), (b"a",)]
    encoded = [encode_key(t) for t in ordered]
    assert encoded == sorted(encoded) and len(set(encoded)) == len(encoded)


# --- round trip, prefixes -----------------------------------------------------------------------


@given(any_tuple)
def test_decode_inverts_encode_keeping_types(values):
    decoded = decode_key(encode_key(values))
    assert len(decoded) == len(values)
    assert all(same_value(x, y) for x, y in zip(values, decoded))


def test_negative_zero_encodes_as_zero_and_decodes_as_positive_zero():
    assert encode_key((-0.0,)) == encode_key((0.0,))
    (zero,) = decode_key(encode_key((-0.0,)))
    assert zero == 0.0 and math.copysign(1.0, zero) == 1.0


@given(any_tuple, any_tuple)
def test_encoding_of_a_tuple_prefixes_the_encoding_of_its_extensions(head, tail):
    assert encode_key(head + tail).startswith(encode_key(head))
    assert encode_key(head + tail) == encode_key(head) + encode_key(tail)


@given(any_tuple, any_tuple)
def test_prefix_span_holds_exactly_the_keys_extending_the_prefix(prefix, other):
    start = encode_key(prefix)
    end = prefix_end(start)
    for candidate in (encode_key(prefix + other), encode_key(other)):
        inside = start <= candidate and (end is None or candidate < end)
        assert inside == candidate.startswith(start)


@st.composite
def prefix_and_nearby_key(draw):
    prefix = draw(st.binary(max_size=4).map(lambda b: b.replace(b"a", b"\xff")))
    cut = draw(st.integers(0, len(prefix)))
    key = prefix[:cut] + draw(st.binary(max_size=4).map(lambda b: b.replace(b"a", b"\xff")))
    return prefix, key


@given(prefix_and_nearby_key())
@example((b"", b"x"))
@example((b"\xff\xff", b"\xff\xff\xff"))
@example((b"a\xff", b"b"))
def test_prefix_end_is_the_smallest_key_above_every_key_with_the_prefix(pair):
    prefix, key = pair
    end = prefix_end(prefix)
    assert (prefix <= key and (end is None or key < end)) == key.startswith(prefix)
    if end is None:
        assert prefix.strip(b"\xff") == b""
    else:
        assert not end.startswith(prefix) and end > prefix


# --- malformed input ----------------------------------------------------------------------------


@given(any_tuple)
def test_truncated_keys_are_rejected_unless_cut_between_elements(values):
    data = encode_key(values)
    boundaries = {len(encode_key(values[:k])): k for k in range(len(values) + 1)}
    for cut in range(len(data)):
        if cut in boundaries:
            assert decode_key(data[:cut]) == values[: boundaries[cut]]
        else:
            with pytest.raises(ValueError, match="malformed key"):
                decode_key(data[:cut])


@st.composite
def damaged_keys(draw):
    data = bytearray(encode_key(draw(any_tuple)))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(st.one_of(st.binary(), damaged_keys()))
@example(b"\x24\xe3\xff\xff\xff\x00")  # int with a 2**24-bit exponent: refused, not allocated
@example(b"\x24\x80\x02\x00")  # non-canonical: trailing zero fraction byte
@example(b"\x24\xe2\x00\x01\x00")  # non-canonical: padded exponent
def test_any_bytes_decode_to_their_canonical_tuple_or_raise_value_error(data):
    try:
        values = decode_key(data)
    except ValueError:
        return
    assert encode_key(values) == data


@pytest.mark.parametrize("tag", [0x00, 0x01, 0x06, 0x12, 0x26, 0x31, 0x41, 0xFF])
def test_unknown_tag_is_rejected(tag):
    with pytest.raises(ValueError, match="unknown tag"):
        decode_key(bytes([tag]))


@pytest.mark.parametrize(
    "data", [b"\x30abc", b"\x30a\x00", b"\x30a\x00\x02\x00\x01", b"\x40\x00", b"\x24", b"\x21\x7f",
             b"\x24\x80\x03", b"\x24\x00\x00", b"\x24\x7f\x00", b"\x30\xff\x00\x01"]
)
def test_malformed_keys_are_rejected_with_value_error(data):
    with pytest.raises(ValueError, match="malformed key"):
        decode_key(data)


@pytest.mark.parametrize(
    "values",
    [[1], 1, "a", (float("nan"),), (1j,), (Decimal(1),), ((1,),), ([1],), ({},), (object(),),
     ("\ud800",), (2 ** (INT_BITS_MAX + 1),), (-(2 ** (INT_BITS_MAX + 1)),)],
)
def test_unsupported_values_are_rejected_with_value_error(values):
    with pytest.raises(ValueError):
        encode_key(values)


def test_decode_takes_bytes_only():
    with pytest.raises(ValueError):
        decode_key("\x05")  # type: ignore[arg-type]
    assert decode_key(bytearray(b"\x05")) == (None,)


def test_small_ints_stay_short():
    assert len(encode_key((0,))) == 1
    assert max(len(encode_key((n,))) for n in range(-64, 65)) == 3
    assert len(encode_key((2**63 - 1,))) <= 13


# --- purity -------------------------------------------------------------------------------------


def test_keys_module_imports_no_clock_socket_or_database():
    source = (Path(__file__).resolve().parent.parent / "raftstore" / "keys.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "socket", "sqlite3", "asyncio"}
