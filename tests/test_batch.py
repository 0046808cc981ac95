"""Typed batches (kvserver.batch), without processes: the wire form and its refusals, a
replica applying write and read batches on a real SQLite MVCCStore, and the leader evaluating a
batch under the latches of every key it writes (tests/test_evaluation.py's Harness: stand-in
Raft groups).

The rules pinned here are those of kvserver.batch's module docstring and of
RangeReplica._write_batch / _read_batch and Store.evaluate_and_propose."""

from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftstore import constants
from raftstore.kvserver.batch import (BATCH_OP, CONSISTENCIES, OPS, STRONG, BatchRequest, CompareAndSwap, ConditionalPut,
                                      Delete, Get, Header, Increment, Put, Scan, SetFields)
from raftstore.kvserver.ranges import (META_RANGE_ID, RANGE_KEY_MISMATCH, RangeDescriptor, bootstrap_descriptors,
                                       local_desc_key, mismatch_descriptors)
from raftstore.kvserver.replica import RangeReplica, desc_ts
from raftstore.raft.commands import Command, CommandError, Outcome
from raftstore.storage.mvcc import TIMESTAMP_PART_MAX, MVCCStore

from test_evaluation import R, Harness   # real replicas on SQLite, a stand-in Raft group per range

# The data range ends at b"km"; range 3 holds the rest (as after a split).
LEFT = RangeDescriptor(R, b"\x02", b"km", 1, (1, 2, 3))
RIGHT = RangeDescriptor(3, b"km", None, 0, (1, 2, 3))
DESCS = [d for d in bootstrap_descriptors([1, 2, 3]) if d.range_id == META_RANGE_ID] + [LEFT, RIGHT]


def _cid(i: int) -> bytes:
    return i.to_bytes(constants.command_id_bytes, "big")


def _wire(*ops, **header) -> dict:
    return BatchRequest(Header(**header), ops).to_wire()


# --- 1. the wire form ------------------------------------------------------------------------------

_keys = st.binary(min_size=1, max_size=12)
_values = st.binary(max_size=24)
_ts = st.tuples(st.integers(0, TIMESTAMP_PART_MAX), st.integers(0, TIMESTAMP_PART_MAX))
_headers = st.builds(Header, ts=st.none() | _ts, read_ts=st.none() | _ts, consistency=st.just(STRONG),
                     generation=st.none() | st.integers(0, 2**64 - 1),
                     max_keys=st.integers(0, constants.scan_rows_max),
                     max_bytes=st.integers(0, constants.scan_bytes_max))
_deltas = st.integers(-constants.increment_abs_max, constants.increment_abs_max)


def _write_op(key: bytes):
    return st.one_of(st.builds(Put, st.just(key), _values), st.builds(Delete, st.just(key)),
                     st.builds(ConditionalPut, st.just(key), st.none() | _ts, st.none() | _values),
                     st.builds(CompareAndSwap, st.just(key), st.none() | _values, _values),
                     st.builds(Increment, st.just(key), _deltas))


_read_ops = st.one_of(st.builds(Get, _keys), st.builds(Scan, st.binary(max_size=12), st.none() | _keys))
_write_batches = st.builds(
    BatchRequest, _headers,
    st.lists(_keys, min_size=1, max_size=12, unique=True).flatmap(lambda ks: st.tuples(*map(_write_op, ks))))
_read_batches = st.builds(BatchRequest, _headers, st.lists(_read_ops, min_size=1, max_size=12))


def _through_msgpack(obj):
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


@given(_write_batches | _read_batches)
def test_a_valid_batch_survives_the_wire_unchanged(batch):
    batch.validate()
    assert BatchRequest.from_wire(_through_msgpack(batch.to_wire())) == batch


def _with(base: dict, **changes) -> dict:
    return {**base, **changes}


_GOOD_OPS = [["put", {"key": b"ka", "value": b"1"}]]
_H = Header().to_wire()

MALFORMED = [
    ("a list, not a map", [_H, _GOOD_OPS], "must be a map"),
    ("ops not a list", {"h": _H, "ops": {"put": {}}}, "a list 'ops'"),
    ("no ops at all", {"h": _H}, "a list 'ops'"),
    ("header not a map", {"h": [1, 2], "ops": _GOOD_OPS}, "header must be a map"),
    ("op not a pair", {"h": _H, "ops": [["put"]]}, r"\[kind, args\]"),
    ("op args not a map", {"h": _H, "ops": [["get", [b"ka"]]]}, r"\[kind, args\]"),
    ("unknown op kind", {"h": _H, "ops": [["merge", {"key": b"ka"}]]}, "unknown batch op 'merge'"),
    ("op kind a list", {"h": _H, "ops": [[["put"], {"key": b"ka"}]]}, "unknown batch op"),
    ("op kind a map", {"h": _H, "ops": [[{"put": 1}, {"key": b"ka"}]]}, "unknown batch op"),
    ("get key a string", {"h": _H, "ops": [["get", {"key": "ka"}]]}, "get's key must be bytes"),
    ("scan start missing", {"h": _H, "ops": [["scan", {"end": b"kz"}]]}, "scan's start must be bytes"),
    ("scan end an int", {"h": _H, "ops": [["scan", {"key": b"ka", "end": 5}]]}, "scan's end must be bytes"),
    ("put value nil", {"h": _H, "ops": [["put", {"key": b"ka", "value": None}]]}, "put's value must be bytes"),
    ("delete key missing", {"h": _H, "ops": [["delete", {}]]}, "delete's key must be bytes"),
    ("put_if version too short", {"h": _H, "ops": [["put_if", {"key": b"ka", "if_version": [1], "value": None}]]},
     "put_if's if_version"),
    ("put_if version negative", {"h": _H, "ops": [["put_if", {"key": b"ka", "if_version": [-1, 0]}]]},
     "put_if's if_version"),
    ("put_if version of booleans", {"h": _H, "ops": [["put_if", {"key": b"ka", "if_version": [True, 0]}]]},
     "put_if's if_version"),
    ("put_if value an int", {"h": _H, "ops": [["put_if", {"key": b"ka", "if_version": None, "value": 1}]]},
     "put_if's value must be bytes"),
    ("cas expected a string", {"h": _H, "ops": [["cas", {"key": b"ka", "expected": "a", "new": b"b"}]]},
     "cas's expected must be bytes"),
    ("cas new nil", {"h": _H, "ops": [["cas", {"key": b"ka", "expected": None, "new": None}]]},
     "cas's new must be bytes"),
    ("increment delta a string", {"h": _H, "ops": [["increment", {"key": b"ka", "delta": "1"}]]},
     "increment's delta"),
    ("increment delta a boolean", {"h": _H, "ops": [["increment", {"key": b"ka", "delta": True}]]},
     "increment's delta"),
    ("increment delta a float", {"h": _H, "ops": [["increment", {"key": b"ka", "delta": 1.0}]]},
     "increment's delta"),
    ("increment delta too large",
     {"h": _H, "ops": [["increment", {"key": b"ka", "delta": constants.increment_abs_max + 1}]]}, "increment's delta"),
    ("increment key missing", {"h": _H, "ops": [["increment", {"delta": 1}]]}, "increment's key must be bytes"),
    ("txn not nil", {"h": _with(_H, txn={"id": b"t"}), "ops": _GOOD_OPS}, "txn must be nil"),
    ("exact read without read_ts", {"h": _with(_H, consistency="exact"), "ops": [["get", {"key": b"ka"}]]},
     "an exact read names its read_ts"),
    ("bounded read without min_ts", {"h": _with(_H, consistency="bounded_staleness"), "ops": [["get", {"key": b"ka"}]]},
     "names its min_ts"),
    ("follower read that writes", {"h": _with(_H, consistency="exact", read_ts=[5, 0]), "ops": _GOOD_OPS},
     "only reads"),
    ("min_ts of one part", {"h": _with(_H, consistency="bounded_staleness", min_ts=[5]),
                            "ops": [["get", {"key": b"ka"}]]}, "a batch's min_ts must be"),
    ("unknown consistency", {"h": _with(_H, consistency="linearizable"), "ops": _GOOD_OPS},
     "consistency must be one of"),
    ("consistency a list", {"h": _with(_H, consistency=["strong"]), "ops": _GOOD_OPS}, "consistency must be one of"),
    ("ts of one part", {"h": _with(_H, ts=[1]), "ops": _GOOD_OPS}, "a batch's ts must be"),
    ("ts past 2**63", {"h": _with(_H, ts=[2**63, 0]), "ops": _GOOD_OPS}, "a batch's ts must be"),
    ("read_ts negative", {"h": _with(_H, read_ts=[1, -1]), "ops": _GOOD_OPS}, "a batch's read_ts must be"),
    ("generation negative", {"h": _with(_H, generation=-1), "ops": _GOOD_OPS}, "generation"),
    ("generation a string", {"h": _with(_H, generation="1"), "ops": _GOOD_OPS}, "generation"),
    ("max_keys negative", {"h": _with(_H, max_keys=-1), "ops": _GOOD_OPS}, "max_keys"),
    ("max_keys past scan_rows_max", {"h": _with(_H, max_keys=constants.scan_rows_max + 1), "ops": _GOOD_OPS},
     "max_keys"),
    ("max_keys a boolean", {"h": _with(_H, max_keys=True), "ops": _GOOD_OPS}, "max_keys"),
    ("max_bytes past scan_bytes_max", {"h": _with(_H, max_bytes=constants.scan_bytes_max + 1), "ops": _GOOD_OPS},
     "max_bytes"),
    ("max_bytes nil", {"h": _with(_H, max_bytes=None), "ops": _GOOD_OPS}, "max_bytes"),
    ("empty batch", {"h": _H, "ops": []}, "no ops"),
    ("too many ops", {"h": _H, "ops": [["get", {"key": b"k%d" % i}] for i in range(constants.batch_ops_max + 1)]},
     "exceeds batch_ops_max"),
    ("reads and writes", {"h": _H, "ops": [["get", {"key": b"ka"}], ["put", {"key": b"kb", "value": b"1"}]]},
     "either reads or writes"),
    ("a key written twice", {"h": _H, "ops": [["put", {"key": b"ka", "value": b"1"}], ["delete", {"key": b"ka"}]]},
     "more than once"),
    ("an empty key written", {"h": _H, "ops": [["put", {"key": b"", "value": b"1"}]]}, "keys must not be empty"),
    ("an empty key read", {"h": _H, "ops": [["get", {"key": b""}]]}, "keys must not be empty"),
    ("set_fields without fields", {"h": _H, "ops": [["set_fields", {"key": b"k", "width": 2, "fields": []}]]},
     "non-empty list"),
    ("set_fields at its width", {"h": _H, "ops": [["set_fields", {"key": b"k", "width": 2, "fields": [[2, 1]]}]]},
     "below its width 2"),
    ("set_fields twice at one position",
     {"h": _H, "ops": [["set_fields", {"key": b"k", "width": 2, "fields": [[1, 1], [1, 2]]}]]}, "a new position"),
    ("set_fields of a list value",
     {"h": _H, "ops": [["set_fields", {"key": b"k", "width": 2, "fields": [[0, [1]]]}]]}, "nil, a bool"),
    ("set_fields with a negative width",
     {"h": _H, "ops": [["set_fields", {"key": b"k", "width": -1, "fields": [[0, 1]]}]]}, "width"),
    ("set_fields with a field not a pair",
     {"h": _H, "ops": [["set_fields", {"key": b"k", "width": 2, "fields": [[0]]}]]}, "non-empty list"),
]


@pytest.mark.parametrize("wire, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_batch_is_a_command_error_naming_what_is_wrong(wire, message):
    with pytest.raises(CommandError, match=message):
        BatchRequest.from_wire(_through_msgpack(wire))


def test_a_scan_may_start_at_the_empty_key_and_a_batch_of_batch_ops_max_ops_is_allowed():
    BatchRequest.from_wire({"h": _H, "ops": [["scan", {"key": b"", "end": None}]]})
    BatchRequest.from_wire({"h": _H, "ops": [["get", {"key": b"k%d" % i}] for i in range(constants.batch_ops_max)]})


# Arbitrary msgpack data, biased towards the names a batch uses so that it gets past the first checks.
_names = st.sampled_from(["h", "ops", "key", "end", "value", "if_version", "expected", "new", "delta", "ts",
                          "read_ts", "consistency", "txn", "generation", "max_keys", "max_bytes"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=6),
                     st.binary(max_size=6), st.sampled_from(sorted(OPS) + list(CONSISTENCIES)))
_junk = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_names | st.text(max_size=4) | st.binary(max_size=4), inner, max_size=5),
                     max_leaves=24)


@st.composite
def _mutated(draw, junk=_junk):
    """A valid batch's wire form with one value somewhere in it replaced by junk, or dropped."""
    obj = _through_msgpack(draw(_write_batches | _read_batches).to_wire())
    node = obj
    while True:
        slots = list(node) if isinstance(node, dict) else list(range(len(node)))
        slot = draw(st.sampled_from(slots))
        child = node[slot]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[slot]
        else:
            node[slot] = draw(junk)
        return obj


@settings(max_examples=300)
@given(st.one_of(_junk, _mutated(), st.fixed_dictionaries({"h": _junk, "ops": st.lists(_junk, max_size=3)}),
                 st.fixed_dictionaries({"h": st.just(_H), "ops": st.lists(st.tuples(_junk, _junk), max_size=3)})))
def test_junk_is_refused_only_ever_with_a_command_error(obj):
    try:
        BatchRequest.from_wire(_through_msgpack(obj))
    except CommandError as exc:
        assert str(exc)


# --- 2. a replica applying write batches ------------------------------------------------------------

@pytest.fixture
def replica(tmp_path):
    store = MVCCStore(os.path.join(tmp_path, "store.sqlite"))
    store.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in DESCS])
    yield RangeReplica(store, R)
    store.close()


def _apply(replica, args: dict, op: str = BATCH_OP, cid: bytes | None = None):
    """Apply a command at the replica's next index, as its Raft group would (by default with an
    id of its own, which no test's command id meets)."""
    index = replica.applied_index() + 1
    return replica.apply(index, Command(cid if cid is not None else _cid(10**6 + index), op, args))


def _batch(replica, *ops, ts=(1, 0), evaluated: bool = False, cid: bytes | None = None, **header):
    args = dict(_wire(*ops, **header), ts=list(ts))
    if evaluated:
        args["evaluated"] = True
    return _apply(replica, args, cid=cid)


def _write(replica, key: bytes, value: bytes | None, ts) -> None:
    """A version of `key` at `ts` exactly (value None: a tombstone), through the replica."""
    answer = _apply(replica, {"key": key, "value": value, "ts": list(ts)} if value is not None
                    else {"key": key, "ts": list(ts)}, op="put" if value is not None else "delete")
    assert answer["ts"] == list(ts)


def _versions(replica, key: bytes) -> list[tuple]:
    """Every version of `key` (wall, logical, value), newest first, tombstones included."""
    with replica.store.export_span(key, key + b"\x00", 100) as export:
        return [row[1:] for chunk in export for row in chunk]


def _snapshot(replica, keys) -> dict:
    return {k: _versions(replica, k) for k in keys}


def test_a_write_batch_writes_every_key_at_one_timestamp_above_every_keys_newest_version(replica):
    _write(replica, b"ka", b"old", (50, 0))
    _write(replica, b"kb", None, (90, 3))             # a tombstone's version counts too
    _write(replica, b"kd", b"7", (10, 0))
    answer = _batch(replica, Put(b"ka", b"A"), ConditionalPut(b"kb", (90, 3), b"B"), CompareAndSwap(b"kc", None, b"C"),
                    Increment(b"kd", 5), Delete(b"ke"), ConditionalPut(b"kf", None, b"F"), ts=(20, 0))
    assert answer == {"ts": [90, 4], "ok": True, "responses": [{}, {"swapped": True}, {"swapped": True},
                                                                {"value": 12}, {"found": False}, {"swapped": True}]}
    written = {k: _versions(replica, k)[0] for k in (b"ka", b"kb", b"kc", b"kd", b"ke", b"kf")}
    assert written == {b"ka": (90, 4, b"A"), b"kb": (90, 4, b"B"), b"kc": (90, 4, b"C"), b"kd": (90, 4, b"12"),
                       b"ke": (90, 4, None), b"kf": (90, 4, b"F")}
    # Above every version already there: the proposed timestamp, when it is the highest.
    later = _batch(replica, Put(b"ka", b"A2"), Put(b"kg", b"G"), ts=(100, 0))
    assert later["ts"] == [100, 0]
    assert [_versions(replica, k)[0] for k in (b"ka", b"kg")] == [(100, 0, b"A2"), (100, 0, b"G")]


FAILING = {
    "cas expects other bytes": CompareAndSwap(b"kb", b"wrong", b"Y"),
    "cas expects no value": CompareAndSwap(b"kb", None, b"Y"),
    "put_if on another version": ConditionalPut(b"kb", (5, 0), b"Y"),
    "put_if on no value": ConditionalPut(b"kb", None, b"Y"),
}


@pytest.mark.parametrize("evaluated", [False, True], ids=["not evaluated", "evaluated"])
@pytest.mark.parametrize("failing", list(FAILING.values()), ids=list(FAILING))
def test_a_write_batch_with_a_failing_condition_writes_nothing_and_answers_every_keys_state(replica, failing,
                                                                                         evaluated):
    _write(replica, b"ka", b"1", (5, 0))
    _write(replica, b"kb", b"2", (6, 0))
    _write(replica, b"kd", None, (7, 0))
    keys = [b"ka", b"kb", b"kc", b"kd", b"ke"]
    before = _snapshot(replica, keys)
    cid = b"f" * constants.command_id_bytes
    answer = _batch(replica, Put(b"ka", b"X"), failing, Increment(b"kc", 1), ConditionalPut(b"kd", (7, 0), b"D"),
                    ConditionalPut(b"ke", None, b"E"), ts=(9, 0), evaluated=evaluated, cid=cid)
    assert answer["ok"] is False
    assert answer["responses"] == [{"swapped": False, "value": b"1", "version": [5, 0]},
                                   {"swapped": False, "value": b"2", "version": [6, 0]},
                                   {"swapped": False, "value": None, "version": None},
                                   {"swapped": False, "value": None, "version": [7, 0]},
                                   {"swapped": False, "value": None, "version": None}]
    assert _snapshot(replica, keys) == before                     # not one of the ops that held wrote
    assert replica.evaluation_misses == (1 if evaluated else 0)
    assert replica.result_of(cid) == (True, (True, answer))       # a retry gets this very answer


def test_a_write_batch_whose_conditions_hold_at_apply_is_no_evaluation_miss(replica):
    _write(replica, b"ka", b"1", (5, 0))
    answer = _batch(replica, CompareAndSwap(b"ka", b"1", b"2"), ConditionalPut(b"kb", None, b"3"), evaluated=True)
    assert answer["ok"] is True and replica.evaluation_misses == 0


def test_increment_counts_from_zero_and_answers_the_new_value(replica):
    assert _batch(replica, Increment(b"kl", 3))["responses"] == [{"value": 3}]
    assert _batch(replica, Increment(b"kl", -10), ts=(2, 0))["responses"] == [{"value": -7}]
    assert replica.store.get_value(b"kl", (2**62, 0)) == b"-7"
    assert [v for _, _, v in _versions(replica, b"kl")] == [b"-7", b"3"]


@pytest.mark.parametrize("value, delta, message", [
    (b"abc", 1, "not a decimal integer"),
    (b"1" * 25, 1, "not a decimal integer"),
    (str(constants.increment_abs_max).encode(), 1, "range of values"),
], ids=["not a number", "too long", "out of range"])
@pytest.mark.parametrize("first", [True, False], ids=["increment first", "increment last"])
def test_an_increment_of_a_non_integer_rejects_the_whole_batch(replica, value, delta, message, first):
    _write(replica, b"ki", value, (5, 0))
    keys = [b"ka", b"kb", b"ki"]
    before = _snapshot(replica, keys)
    ops = [Put(b"ka", b"1"), Delete(b"kb")]
    ops.insert(0 if first else 2, Increment(b"ki", delta))
    cid = b"i" * constants.command_id_bytes
    with pytest.raises(CommandError, match=message):
        _batch(replica, *ops, ts=(9, 0), cid=cid)
    assert _snapshot(replica, keys) == before and not replica.result_of(cid)[0]


@pytest.mark.parametrize("ops", [
    (Put(b"ka", b"1"), Put(b"kz", b"2")),
    (Put(b"kz", b"2"), Put(b"ka", b"1")),
    (Increment(b"ka", 1), CompareAndSwap(b"\x01x", None, b"1")),
], ids=["last key outside", "first key outside", "key below the range"])
def test_a_write_batch_with_a_key_outside_the_range_is_a_mismatch_carrying_the_descriptor(replica, ops):
    before = _snapshot(replica, [op.key for op in ops])
    with pytest.raises(CommandError) as caught:
        _batch(replica, *ops)
    assert caught.value.code == RANGE_KEY_MISMATCH
    assert mismatch_descriptors(caught.value.details) == [LEFT]
    assert _snapshot(replica, [op.key for op in ops]) == before


def test_a_read_batch_with_a_key_outside_the_range_is_a_mismatch(replica):
    for ops in [(Get(b"ka"), Get(b"kz")), (Scan(b"kz", None),)]:
        with pytest.raises(CommandError) as caught:
            _batch(replica, *ops)
        assert caught.value.code == RANGE_KEY_MISMATCH and mismatch_descriptors(caught.value.details) == [LEFT]


def test_a_retried_batch_id_has_the_first_answer_saved(replica):
    cid = b"r" * constants.command_id_bytes
    first = _batch(replica, Put(b"ka", b"1"), Increment(b"kb", 2), ConditionalPut(b"kc", None, b"3"), cid=cid)
    assert first["ok"] is True
    assert replica.result_of(cid) == (True, (True, first))


# --- 3. a replica applying read batches -------------------------------------------------------------

ROWS = {b"k%c" % c: b"v" * (1 + (c * 7) % 11) for c in b"abcdefghij"}    # ka..kj, values of 1..11 bytes


@pytest.fixture
def rows(replica):
    for i, (k, v) in enumerate(ROWS.items()):
        _write(replica, k, v, (10 + i, 0))
    _write(replica, b"kc2", b"gone", (30, 0))
    _write(replica, b"kc2", None, (31, 0))          # a deleted key: never a row
    # Versions past the range's end (range 3's keys, in the node's one store): never this range's rows.
    replica.store.write_local([(b"km", (1, 0), b"right"), (b"kn", (1, 0), b"right")])
    return replica


def _read(replica, *ops, **header) -> dict:
    return _batch(replica, *ops, **header)


def _rows_of(response) -> list[tuple[bytes, bytes]]:
    return [tuple(r) for r in response["rows"]]


def _expected(start: bytes, end: bytes | None = None) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in ROWS.items() if start <= k and (end is None or k < end)]


def test_gets_answer_the_value_and_version_or_nothing(rows):
    answer = _read(rows, Get(b"kb"), Get(b"kl"), Get(b"kc2"))
    assert answer["responses"] == [{"value": ROWS[b"kb"], "ts": [11, 0]}, {"value": None, "ts": [0, 0]},
                                   {"value": None, "ts": [31, 0]}]


def test_a_scan_to_the_spans_end_answers_every_row_and_no_resume(rows):
    [scan] = _read(rows, Scan(b"ka", None))["responses"]
    assert _rows_of(scan) == _expected(b"ka") and scan["resume"] is None
    assert scan["versions"] == [[10 + i, 0] for i in range(len(ROWS))]


def test_a_scan_whose_end_is_past_the_ranges_end_stops_at_the_range_end(rows):
    answer = _read(rows, Scan(b"kh", b"kz"))
    [scan] = answer["responses"]
    assert _rows_of(scan) == _expected(b"kh") and scan["resume"] is None and answer["span_end"] == b"km"


def test_two_scans_of_a_batch_share_max_keys(rows):
    first, second = _read(rows, Scan(b"ka", b"kd"), Scan(b"kf", None), max_keys=5)["responses"]
    assert _rows_of(first) == _expected(b"ka", b"kd") and first["resume"] is None
    assert _rows_of(second) == _expected(b"kf", b"kh") and second["resume"] == b"kg\x00"
    # A scan after the limit is used up returns nothing and resumes where it starts.
    first, second = _read(rows, Scan(b"ka", None), Scan(b"kf", None), max_keys=2)["responses"]
    assert _rows_of(first) == _expected(b"ka", b"kc") and first["resume"] == b"kb\x00"
    assert _rows_of(second) == [] and second["resume"] == b"kf"


def _size(k: bytes) -> int:
    return len(k) + len(ROWS[k])


def test_max_bytes_stops_after_the_row_that_reaches_it(rows):
    limit = _size(b"ka") + _size(b"kb") + 1                       # the third row reaches it, and is the last
    [scan] = _read(rows, Scan(b"ka", None), max_bytes=limit)["responses"]
    assert _rows_of(scan) == _expected(b"ka", b"kd") and scan["resume"] == b"kc\x00"
    [scan] = _read(rows, Scan(b"ka", None), max_bytes=limit - 1)["responses"]   # the second reaches it exactly
    assert _rows_of(scan) == _expected(b"ka", b"kc") and scan["resume"] == b"kb\x00"


def test_max_bytes_always_lets_the_batchs_first_row_through_and_only_that_one(rows):
    assert _size(b"ka") > 1 and _size(b"kf") > 1
    first, second = _read(rows, Scan(b"ka", None), Scan(b"kf", None), max_bytes=1)["responses"]
    assert _rows_of(first) == [(b"ka", ROWS[b"ka"])] and first["resume"] == b"ka\x00"
    # The limit is used up: the next scan returns nothing, and resumes where it starts (not "done").
    assert _rows_of(second) == [] and second["resume"] == b"kf"
    # The first row of the batch, not of the first scan: an empty scan before it does not use it up.
    empty, second = _read(rows, Scan(b"kk", b"kl"), Scan(b"kf", None), max_bytes=1)["responses"]
    assert _rows_of(empty) == [] and empty["resume"] is None
    assert _rows_of(second) == [(b"kf", ROWS[b"kf"])] and second["resume"] == b"kf\x00"


def test_a_limited_scan_whose_next_key_is_its_end_answers_no_resume(rows):
    [scan] = _read(rows, Scan(b"ka", b"kb\x00"), max_keys=2)["responses"]
    assert _rows_of(scan) == _expected(b"ka", b"kc") and scan["resume"] is None


_starts = st.sampled_from(sorted(ROWS) + [b"k", b"kc2", b"kk"])
_ends = st.sampled_from([None, b"kd", b"kj", b"kz"])
_read_limits = {"max_keys": st.integers(0, 4), "max_bytes": st.integers(0, 40)}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=_starts, end=_ends, **_read_limits)
def test_paging_by_resume_returns_every_row_once_and_always_makes_progress(rows, start, end, max_keys, max_bytes):
    """Scanning again from `resume` returns exactly the rest: no row lost, none repeated; and
    every page but the last has a row (a limit of 0 is the default, not 'nothing')."""
    got, at = [], start
    for _ in range(len(ROWS) + 1):
        [scan] = _read(rows, Scan(at, end), max_keys=max_keys, max_bytes=max_bytes)["responses"]
        assert _rows_of(scan) or scan["resume"] is None
        got += _rows_of(scan)
        at = scan["resume"]
        if at is None:
            break
    assert at is None and got == _expected(start, end)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scans=st.lists(st.tuples(_starts, _ends), min_size=1, max_size=3), **_read_limits)
def test_the_scans_of_a_batch_share_its_limits_and_each_resumes_where_it_stopped(rows, scans, max_keys, max_bytes):
    keys_limit, bytes_limit = max_keys or constants.scan_rows_max, max_bytes or constants.scan_bytes_max
    responses = _read(rows, *[Scan(s, e) for s, e in scans], max_keys=max_keys, max_bytes=max_bytes)["responses"]
    taken: list[tuple[bytes, bytes]] = []
    for (start, end), response in zip(scans, responses):
        page, want = _rows_of(response), _expected(start, end)
        taken += page
        assert page == want[:len(page)]                              # a prefix of the scan's rows
        if response["resume"] is None:
            assert page == want
            continue
        assert _expected(response["resume"], end) == want[len(page):]   # the rest, from resume
        if len(page) < len(want):      # stopped by a limit, not before: one is used up
            assert len(taken) == keys_limit or sum(len(k) + len(v) for k, v in taken) >= bytes_limit
    assert len(taken) <= keys_limit
    if taken:                          # rows are taken while the limit is not reached: the last may pass it
        assert sum(len(k) + len(v) for k, v in taken[:-1]) < bytes_limit
    else:
        assert not any(_expected(s, e) for s, e in scans)            # progress whenever there is a row


# --- 4. the leader evaluating a batch (Store.evaluate_and_propose) --------------------------------

@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path, DESCS)
    harness.store.now_ts = lambda: [1000, 5]
    yield harness
    harness.mvcc.close()


def _proposed(h) -> list[tuple[str, dict]]:
    return [(op, args) for op, args, _, _ in h.group().proposed]


def _answer(h, i: int, outcome=Outcome.COMMITTED, result=None) -> None:
    """The group answers the i-th proposal."""
    _, _, callback, _ = h.group().proposed[i]
    callback(outcome, result if result is not None else {"ts": [1000, 5], "ok": True, "responses": []})


def test_a_batch_waits_for_a_single_key_write_holding_one_of_its_latches(h):
    h.evaluate("put", {"key": b"kb", "value": b"1"}, _cid(1))
    h.evaluate(BATCH_OP, _wire(Put(b"ka", b"2"), Put(b"kb", b"2")), _cid(2))
    assert [op for op, _ in _proposed(h)] == ["put"]          # the batch waits for kb
    assert h.store.latches.waiting() == 1
    _answer(h, 0)
    assert [op for op, _ in _proposed(h)] == ["put", BATCH_OP]
    assert len(h.store.latches) == 2                              # ka and kb, until the batch is answered
    h.evaluate("put", {"key": b"ka", "value": b"3"}, _cid(3))    # a write of ka now waits for the batch
    assert len(_proposed(h)) == 2
    _answer(h, 1)
    assert [op for op, _ in _proposed(h)] == ["put", BATCH_OP, "put"]
    _answer(h, 2)
    assert len(h.store.latches) == 0 and h.store.latches.waiting() == 0 and len(h.answers) == 3


def test_batches_writing_overlapping_keys_in_opposite_orders_do_not_deadlock(h):
    h.evaluate("put", {"key": b"ka", "value": b"0"}, _cid(1))    # holds ka
    h.evaluate("put", {"key": b"kb", "value": b"0"}, _cid(2))    # holds kb
    h.evaluate(BATCH_OP, _wire(Put(b"ka", b"1"), Put(b"kb", b"1"), Put(b"kc", b"1")), _cid(3))
    h.evaluate(BATCH_OP, _wire(Put(b"kc", b"2"), Put(b"kb", b"2"), Put(b"ka", b"2")), _cid(4))
    assert len(_proposed(h)) == 2
    _answer(h, 0)                  # ka free: the first batch may take it; the second must not take kb meanwhile
    _answer(h, 1)
    assert len(_proposed(h)) == 3
    first = _proposed(h)[2][1]
    assert [o[1]["key"] for o in first["ops"]] == [b"ka", b"kb", b"kc"]
    _answer(h, 2)                  # once the first answers, the second has every latch
    assert len(_proposed(h)) == 4
    assert [o[1]["key"] for o in _proposed(h)[3][1]["ops"]] == [b"kc", b"kb", b"ka"]
    _answer(h, 3)
    assert len(h.store.latches) == 0 and len(h.answers) == 4


def test_a_batch_whose_conditions_hold_is_evaluated_and_keeps_its_latches_until_answered(h):
    h.evaluate(BATCH_OP, _wire(CompareAndSwap(b"ka", None, b"1"), ConditionalPut(b"kb", None, b"1"),
                               Increment(b"kc", 1)), _cid(1))
    [(_, args)] = _proposed(h)
    assert args["evaluated"] is True and len(h.store.latches) == 3
    _answer(h, 0)
    assert len(h.store.latches) == 0


def test_a_batch_whose_condition_fails_is_proposed_unevaluated_and_gives_its_latches_back_at_once(h):
    _write(h.store.replicas[R], b"ka", b"1", (5, 0))
    h.evaluate(BATCH_OP, _wire(CompareAndSwap(b"ka", b"0", b"2"), Put(b"kb", b"2")), _cid(1))
    [(op, args)] = _proposed(h)
    assert op == BATCH_OP and "evaluated" not in args
    assert len(h.store.latches) == 0 and h.answers == []          # released before it is answered
    h.evaluate("put", {"key": b"kb", "value": b"3"}, _cid(2))    # the next writer of kb goes at once
    assert [op for op, _ in _proposed(h)] == [BATCH_OP, "put"]
    _answer(h, 0, result={"ts": [1000, 5], "ok": False, "responses": []})   # a second release changes nothing
    assert len(h.store.latches) == 1
    _answer(h, 1)
    assert len(h.store.latches) == 0


def test_a_batch_with_a_non_integer_increment_is_proposed_unevaluated_and_keeps_its_latches(h):
    _write(h.store.replicas[R], b"ka", b"abc", (5, 0))
    h.evaluate(BATCH_OP, _wire(Increment(b"ka", 1), Put(b"kb", b"2")), _cid(1))
    [(_, args)] = _proposed(h)
    assert "evaluated" not in args and len(h.store.latches) == 2   # apply rejects it; until then it holds them


@pytest.mark.parametrize("ops", [
    (Put(b"ka", b"1"), Put(b"kz", b"1")),
    (Increment(b"kz", 1), Put(b"ka", b"1")),
    (Get(b"ka"), Get(b"kz")),
    (Scan(b"kz", None),),
], ids=["write, last key outside", "write, first key outside", "get outside", "scan starting outside"])
def test_a_batch_with_a_key_outside_the_range_is_refused_before_anything_is_proposed(h, ops):
    h.evaluate(BATCH_OP, _wire(*ops), _cid(1))
    [(outcome, rejection)] = h.answers
    assert outcome is Outcome.REJECTED and rejection.code == RANGE_KEY_MISMATCH
    assert mismatch_descriptors(rejection.details) == [LEFT, RIGHT]
    assert h.group().proposed == [] and len(h.store.latches) == 0 and h.store.in_flight == {}


def test_a_malformed_batch_is_refused_before_anything_is_proposed(h):
    h.evaluate(BATCH_OP, {"h": _H, "ops": [["get", {"key": b"ka"}], ["put", {"key": b"kb", "value": b"1"}]]}, _cid(1))
    [(outcome, why)] = h.answers
    assert outcome is Outcome.NOT_COMMITTED and "either reads or writes" in why and h.group().proposed == []


@pytest.mark.parametrize("header_ts, proposed", [
    (None, [1000, 5]), ((999, 99), [1000, 5]), ((1000, 4), [1000, 5]), ((1000, 7), [1000, 7]), ((2000, 0), [2000, 0]),
], ids=["no header ts", "header behind", "header's logical behind", "header's logical ahead", "header ahead"])
def test_a_write_batch_is_proposed_at_the_later_of_its_header_ts_and_the_nodes_clock(h, header_ts, proposed):
    # (A read batch is served by the leaseholder, not proposed: tests/test_leases.py.)
    h.evaluate(BATCH_OP, _wire(Put(b"ka", b"1"), Put(b"kb", b"2"), ts=header_ts), _cid(1))
    [(_, args)] = _proposed(h)
    assert args["ts"] == proposed
    assert _apply(h.store.replicas[R], args)["ts"] == proposed   # and apply writes at it (no newer version)


def _row(*elements) -> bytes:
    return msgpack.packb(list(elements), use_bin_type=True)


def test_set_fields_replaces_a_live_arrays_elements_and_writes_nothing_where_there_is_no_value(replica):
    _write(replica, b"ka", _row(1, "a", True), (5, 0))
    _write(replica, b"kb", _row(2, "b", False), (6, 0))
    _write(replica, b"kb", None, (7, 0))                  # deleted: no live value
    answer = _batch(replica, SetFields(b"ka", 3, ((1, "A"), (2, None))), SetFields(b"kb", 3, ((1, "B"),)),
                    SetFields(b"kc", 3, ((1, "C"),)), Delete(b"kd"), ts=(10, 0))
    assert answer == {"ts": [10, 0], "ok": True, "responses": [{"found": True}, {"found": False}, {"found": False},
                                                                {"found": False}]}
    assert _versions(replica, b"ka")[0] == (10, 0, _row(1, "A", None))
    assert _versions(replica, b"kb")[0] == (7, 0, None) and _versions(replica, b"kc") == []
    assert _batch(replica, Delete(b"ka"), ts=(11, 0))["responses"] == [{"found": True}]


@pytest.mark.parametrize("value", [b"not msgpack \xc1", _row(1, "a"), msgpack.packb({"a": 1}), b"7"],
                         ids=["not msgpack", "two elements", "a map", "a number"])
def test_set_fields_of_a_value_not_an_array_of_its_width_rejects_the_whole_batch(replica, value):
    _write(replica, b"kf", value, (5, 0))
    before = _snapshot(replica, [b"ka", b"kf"])
    cid = b"f" * constants.command_id_bytes
    with pytest.raises(CommandError, match="not an array of 3 elements"):
        _batch(replica, Put(b"ka", b"1"), SetFields(b"kf", 3, ((0, 9),)), ts=(9, 0), cid=cid)
    assert _snapshot(replica, [b"ka", b"kf"]) == before and not replica.result_of(cid)[0]
