"""The client protocol's framing and request schema (raftstore.wire, raftstore.errors).

Pure unit tests: bytes in, objects or FrameError/BadRequest out. The only socket is a local
socketpair for the blocking read/write helpers.
"""

from __future__ import annotations

import socket
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftstore import constants, errors, wire

# --- strategies -------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
msgpackable = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10) | st.binary(max_size=10), children, max_size=5),
    max_leaves=30,
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks, last = [], 0
    for point in points + [len(data)]:
        chunks.append(data[last:point])
        last = point
    return chunks


def decode_all(decoder: wire.FrameDecoder, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


# --- frames -----------------------------------------------------------------------------------


@given(objs=st.lists(msgpackable, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 10_000)))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_frames_round_trip_whatever_the_chunk_boundaries(objs, cuts):
    stream = b"".join(wire.encode_frame(obj) for obj in objs)
    decoder = wire.FrameDecoder()
    assert decode_all(decoder, split_at(stream, cuts)) == objs
    assert decoder.buffered_bytes == 0


def test_a_frame_is_a_little_endian_length_then_msgpack():
    frame = wire.encode_frame({"id": 1})
    body = msgpack.packb({"id": 1}, use_bin_type=True)
    assert frame == struct.pack("<I", len(body)) + body


def test_bytes_and_str_stay_distinct_on_the_wire():
    decoder = wire.FrameDecoder()
    assert decoder.feed(wire.encode_frame([b"raw", "text"])) == [[b"raw", "text"]]


def test_partial_frame_stays_buffered_until_complete():
    frame = wire.encode_frame({"id": 7, "op": "get"})
    decoder = wire.FrameDecoder()
    assert decoder.feed(frame[:3]) == []
    assert decoder.feed(frame[3:-1]) == []
    assert decoder.buffered_bytes == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [{"id": 7, "op": "get"}]


def test_encode_refuses_a_body_over_the_limit():
    with pytest.raises(wire.FrameError, match="exceeds the limit of 100 bytes"):
        wire.encode_frame(b"x" * 200, max_bytes=100)
    assert len(wire.encode_frame(b"x" * 90, max_bytes=100)) > 90


def test_default_limit_is_client_frame_bytes_max():
    assert constants.client_frame_bytes_max == 4 * 1024 * 1024
    with pytest.raises(wire.FrameError):
        wire.encode_frame(b"x" * constants.client_frame_bytes_max)


@given(excess=st.integers(1, 2**32 - 1 - 1000))
def test_oversized_length_prefix_is_rejected_from_the_header_alone(excess):
    decoder = wire.FrameDecoder(max_bytes=1000)
    length = 1000 + excess
    with pytest.raises(wire.FrameError, match=f"length prefix {length} exceeds the limit of 1000"):
        decoder.feed(struct.pack("<I", length))
    assert decoder.buffered_bytes == 0  # nothing of the body was (or will be) kept


def test_oversized_length_after_a_good_frame_still_rejected():
    decoder = wire.FrameDecoder(max_bytes=1000)
    with pytest.raises(wire.FrameError, match="4294967295"):
        decoder.feed(wire.encode_frame(1) + struct.pack("<I", 2**32 - 1) + b"abc")


def test_decoder_stays_failed_after_an_error():
    decoder = wire.FrameDecoder(max_bytes=10)
    with pytest.raises(wire.FrameError):
        decoder.feed(struct.pack("<I", 11))
    with pytest.raises(wire.FrameError, match="already failed"):
        decoder.feed(wire.encode_frame(1))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty frame"),
        (b"\xc1", "malformed msgpack"),  # 0xc1 is never used
        (b"\x92\x01", "ends inside an object"),  # array of 2 with one element
        (b"\x01\x02", "1 bytes left over"),
        (msgpack.packb({1: 2}), "malformed msgpack"),  # int map keys (strict_map_key)
        (msgpack.packb(msgpack.ExtType(5, b"x")), "ext type 5"),
        (b"\xa2\xff\xfe", "malformed msgpack"),  # str that is not UTF-8
        (b"\x91" * 5000 + b"\x01", "malformed msgpack"),  # nesting deeper than msgpack's stack
    ],
)
def test_malformed_bodies_raise_frame_error_naming_the_problem(body, message):
    decoder = wire.FrameDecoder()
    with pytest.raises(wire.FrameError, match=message):
        decoder.feed(struct.pack("<I", len(body)) + body)


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
@settings(max_examples=500)
def test_random_bytes_decode_or_raise_frame_error_never_anything_else(data, cuts):
    decoder = wire.FrameDecoder(max_bytes=256)
    try:
        decode_all(decoder, split_at(data, cuts))
    except wire.FrameError:
        pass


@given(body=st.binary(min_size=1, max_size=200))
@settings(max_examples=500)
def test_random_bodies_in_a_valid_frame_decode_or_raise_frame_error(body):
    decoder = wire.FrameDecoder(max_bytes=256)
    try:
        decoder.feed(struct.pack("<I", len(body)) + body)
    except wire.FrameError:
        pass


def test_read_and_write_frame_over_a_socket_pair():
    left, right = socket.socketpair()
    try:
        left.settimeout(5)
        right.settimeout(5)
        wire.write_frame(left, {"id": 1, "n": b"a"})
        wire.write_frame(left, {"id": 2})
        decoder = wire.FrameDecoder()
        assert wire.read_frame(right, decoder) == {"id": 1, "n": b"a"}
        assert wire.read_frame(right, decoder) == {"id": 2}
        left.sendall(wire.encode_frame(3)[:2])
        left.close()
        with pytest.raises(ConnectionError, match="middle of a frame"):
            wire.read_frame(right, decoder)
    finally:
        left.close()
        right.close()


def test_read_frame_reports_a_clean_close():
    left, right = socket.socketpair()
    try:
        left.close()
        right.settimeout(5)
        with pytest.raises(ConnectionError, match="closed by the peer"):
            wire.read_frame(right, wire.FrameDecoder())
    finally:
        right.close()


# --- requests ---------------------------------------------------------------------------------

CID = b"c" * constants.command_id_bytes

VALID_REQUESTS = [
    {"id": 1, "op": "put", "args": {"key": b"k", "value": b"v", "command_id": CID}},
    {"id": 2, "op": "get", "args": {"key": b""}},
    {"id": 3, "op": "delete", "args": {"key": b"k", "command_id": CID}},
    {"id": 4, "op": "cas", "args": {"key": b"k", "expected": None, "new": b"n", "command_id": CID}},
    {"id": 5, "op": "cas", "args": {"key": b"k", "expected": b"e", "new": b"n", "command_id": CID}},
    {"id": 6, "op": "scan", "args": {"start": b"a", "end": None, "limit": 1}},
    {"id": 7, "op": "scan", "args": {"start": b"a", "end": b"z", "limit": constants.scan_rows_max}},
    {"id": 2**64 - 1, "op": "status", "args": {}},
]


@pytest.mark.parametrize("request_", VALID_REQUESTS, ids=lambda r: r["op"])
def test_valid_requests_pass_validation_after_a_wire_round_trip(request_):
    decoded = wire.FrameDecoder().feed(wire.encode_frame(request_))[0]
    assert wire.validate_request(decoded) == (request_["id"], request_["op"], request_["args"])


PUT_ARGS = {"key": b"k", "value": b"v", "command_id": CID}

MALFORMED_REQUESTS = [
    ([1, "put", {}], "request must be a map", None),
    ({"op": "get", "args": {"key": b"k"}}, "request id must be a non-negative int, got nothing", None),
    ({"id": -1, "op": "get", "args": {}}, "non-negative int, got -1", None),
    ({"id": True, "op": "get", "args": {}}, "non-negative int, got bool", None),
    ({"id": "1", "op": "get", "args": {}}, "non-negative int, got str", None),
    ({"id": 9, "args": {}}, "missing field(s) 'op'", 9),
    ({"id": 9, "op": "get", "args": {"key": b"k"}, "x": 1}, "unknown field(s) 'x'", 9),
    ({"id": 9, "op": b"get", "args": {}}, "op must be a str, got bytes", 9),
    ({"id": 9, "op": "drop_table", "args": {}}, "unknown op 'drop_table'; expected one of cas,", 9),
    ({"id": 9, "op": "get", "args": [b"k"]}, "get: args must be a map, got list", 9),
    ({"id": 9, "op": "get", "args": {}}, "get: args is missing 'key'", 9),
    ({"id": 9, "op": "get", "args": {"key": "k"}}, "get: args.key must be bytes (msgpack bin), got str", 9),
    ({"id": 9, "op": "get", "args": {"key": None}}, "args.key must be bytes (msgpack bin), got nil", 9),
    ({"id": 9, "op": "status", "args": {"verbose": True}}, "unknown field(s) 'verbose'; expected no fields", 9),
    ({"id": 9, "op": "put", "args": {**PUT_ARGS, "command_id": b"short"}}, "exactly 16 bytes, got 5 bytes", 9),
    ({"id": 9, "op": "put", "args": {**PUT_ARGS, "command_id": None}}, "exactly 16 bytes, got nil", 9),
    ({"id": 9, "op": "put", "args": {**PUT_ARGS, "value": 5}}, "put: args.value must be bytes", 9),
    (
        {"id": 9, "op": "cas", "args": {"key": b"k", "expected": "e", "new": b"n", "command_id": CID}},
        "cas: args.expected must be bytes (msgpack bin) or nil, got str",
        9,
    ),
    ({"id": 9, "op": "scan", "args": {"start": b"", "end": None, "limit": 0}}, "limit must be an int in [1, ", 9),
    (
        {"id": 9, "op": "scan", "args": {"start": b"", "end": None, "limit": constants.scan_rows_max + 1}},
        f"got {constants.scan_rows_max + 1}",
        9,
    ),
    ({"id": 9, "op": "scan", "args": {"start": b"", "end": None, "limit": 1.0}}, "limit must be an int", 9),
    ({"id": 9, "op": "scan", "args": {"start": b"", "end": None, "limit": True}}, "got bool", 9),
]


@pytest.mark.parametrize("obj, message, request_id", MALFORMED_REQUESTS)
def test_validate_request_rejects_malformed_requests_with_a_clear_message(obj, message, request_id):
    with pytest.raises(wire.BadRequest) as caught:
        wire.validate_request(obj)
    assert message in str(caught.value)
    assert caught.value.request_id == request_id
    assert caught.value.code == "bad_request"
    assert caught.value.ambiguous is False


def test_bad_request_messages_stay_short_whatever_the_input():
    obj = {"id": 1, "op": "x" * 10_000, "args": {}}
    with pytest.raises(wire.BadRequest) as caught:
        wire.validate_request(obj)
    assert len(str(caught.value)) < 200
    obj = {"id": 1, "op": "get", "args": {"key": b"", **{f"f{i}" * 100: 1 for i in range(50)}}}
    with pytest.raises(wire.BadRequest) as caught:
        wire.validate_request(obj)
    assert "and 45 more" in str(caught.value)
    assert len(str(caught.value)) < 600


@given(obj=msgpackable)
@settings(max_examples=300)
def test_validate_request_accepts_or_raises_bad_request_never_anything_else(obj):
    try:
        wire.validate_request(obj)
    except wire.BadRequest:
        pass


FIELD_NAMES = ["key", "value", "command_id", "start", "end", "limit", "expected", "new", "zz"]
FIELD_VALUES = st.sampled_from([b"k", CID, None, 1, 0, "s", True]) | scalars


@given(
    obj=st.fixed_dictionaries(
        {
            "id": st.integers(-5, 2**64 + 5) | st.none(),
            "op": st.sampled_from(sorted(wire.REQUEST_ARGS)) | st.text(max_size=5),
        },
        optional={"args": st.dictionaries(st.sampled_from(FIELD_NAMES), FIELD_VALUES, max_size=5)},
    )
)
@settings(max_examples=500)
def test_near_miss_requests_are_accepted_only_when_they_match_the_schema(obj):
    try:
        request_id, op, args = wire.validate_request(obj)
    except wire.BadRequest:
        return
    schema = wire.REQUEST_ARGS[op]
    assert 0 <= request_id <= 2**64 - 1
    required = set(schema) - wire.OPTIONAL_ARGS.get(op, frozenset())
    assert required <= set(args) <= set(schema)


# --- responses and errors ---------------------------------------------------------------------


def test_response_helpers_build_the_documented_envelopes():
    assert wire.response_ok(3, {"ts": [1, 2]}) == {"id": 3, "ok": True, "result": {"ts": [1, 2]}}
    error = errors.UnavailableError("no leader for region 1")
    assert wire.response_error(4, error) == {
        "id": 4,
        "ok": False,
        "error": {"code": "unavailable", "message": "no leader for region 1", "ambiguous": False},
    }
    assert wire.response_error(5, errors.AmbiguousCommitError("x"))["error"]["ambiguous"] is True


@pytest.mark.parametrize(
    "obj, message",
    [
        ([], "response must be a map"),
        ({"ok": True, "result": 1}, "response id must be an int, got nil"),
        ({"id": 1, "ok": 1, "result": 1}, "ok must be a bool"),
        ({"id": 1, "ok": True}, "no 'result' field"),
        ({"id": 1, "ok": False}, "no 'error' field"),
    ],
)
def test_validate_response_rejects_malformed_envelopes(obj, message):
    with pytest.raises(wire.BadResponse, match=message):
        wire.validate_response(obj)


@pytest.mark.parametrize(
    "code, cls, ambiguous",
    [
        ("unavailable", errors.UnavailableError, False),
        ("draining", errors.DrainingError, False),
        ("ambiguous", errors.AmbiguousCommitError, True),
        ("bad_request", errors.BadRequestError, False),
        ("too_large", errors.TooLargeError, False),
        ("internal", errors.InternalError, False),
    ],
)
def test_error_from_wire_maps_each_code_to_its_class(code, cls, ambiguous):
    error = errors.error_from_wire({"code": code, "message": "what happened", "ambiguous": False})
    assert type(error) is cls
    assert error.code == code
    assert error.ambiguous is ambiguous
    assert "what happened" in str(error)
    assert cls.hint in str(error)  # ... and what to do


def test_error_from_wire_keeps_an_ambiguous_flag_and_unknown_codes():
    internal = errors.error_from_wire({"code": "internal", "message": "m", "ambiguous": True})
    assert internal.ambiguous is True
    unknown = errors.error_from_wire({"code": "quota", "message": "m", "ambiguous": False})
    assert type(unknown) is errors.RaftstoreError
    assert unknown.code == "quota"


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        {"code": "x"},
        {"code": 1, "message": "m", "ambiguous": False},
        {"code": "x", "message": "m", "ambiguous": 0},
    ],
)
def test_error_from_wire_turns_malformed_errors_into_protocol_errors(obj):
    assert isinstance(errors.error_from_wire(obj), errors.ProtocolError)


def test_error_classes_are_raftstore_errors_with_codes():
    for cls in (
        errors.UnavailableError,
        errors.AmbiguousCommitError,
        errors.BadRequestError,
        errors.TooLargeError,
        errors.ConnectionFailedError,
    ):
        assert issubclass(cls, errors.RaftstoreError)
        assert isinstance(cls.code, str)
    assert errors.AmbiguousCommitError("x").ambiguous is True
    assert errors.UnavailableError("x").ambiguous is False
