"""The contract of the SQL engine's KV (`sql.kv.KV`) as plain checks, one property each.

Each `check_*` takes a `Subject` - a KV, key prefixes no other check writes under, and a way to
split a range - and raises AssertionError when the KV breaks the property its name states.
They are plain functions, not tests, so that tests/test_kv_contract.py can run the same checks
against the in-memory KV and against a real node, and also against deliberately broken KVs,
expecting them to fail (the suite must be shown to catch what it claims to catch).

A check only writes under `subject.prefix` (and, for the one scan to the end of the keyspace,
under `subject.tail`), so the checks can share one cluster; it assumes nothing about keys
outside its prefixes except that they sort outside them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from raftstore import constants
from raftstore.errors import TooLargeError
from raftstore.keys import prefix_end
from sql.kv import CONSISTENCY_STATUSES, KV, TRACE_KINDS, WriteResult, held_unwritten


@dataclass
class Subject:
    """What a check runs on. `prefix`: this check's own keys start with it. `tail`: a prefix
    above every key of every other check (the scan to the keyspace end writes there). `split`:
    cut the range holding a key at that key, returning once the new range serves."""

    kv: KV
    prefix: bytes
    tail: bytes
    split: Callable[[bytes], None]

    def key(self, suffix: bytes | str) -> bytes:
        return self.prefix + (suffix.encode() if isinstance(suffix, str) else suffix)


def subject_for(kv: KV, check_name: str, split: Callable[[bytes], None]) -> Subject:
    """The subject of one check: prefixes named after the check, so checks never share keys.
    Row keyspace (b"t..."), above the raw KV keys; every tail sorts above every prefix."""
    name = check_name.encode()
    return Subject(kv, b"t\x01contract/" + name + b"/", b"t\xff\xffcontract/" + name + b"/", split)


def _is_version(version: object) -> bool:
    return (isinstance(version, tuple) and len(version) == 2
            and all(isinstance(part, int) and not isinstance(part, bool) for part in version))


def _version(kv: KV, key: bytes):
    found = kv.get_version(key)
    assert found is not None, "get_version(%r) is None right after a write" % key
    assert _is_version(found[1]), "a version is a (wall, logical) tuple of ints, got %r" % (found[1],)
    return found[1]


def _raises(error: type[Exception], call: Callable, *args) -> None:
    """Assert that call(*args) raises `error` (a plain assert, so the checks stay plain)."""
    try:
        call(*args)
    except error:
        return
    raise AssertionError("%s%r did not raise %s" % (call.__name__, tuple(a if len(repr(a)) < 80 else "..."
                                                                          for a in args), error.__name__))


def _span(subject: Subject) -> tuple[bytes, bytes]:
    end = prefix_end(subject.prefix)
    assert end is not None
    return subject.prefix, end


# --- reads of absent and present keys ------------------------------------------------------------


def check_a_key_never_written_reads_as_absent(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("never")
    assert kv.get(key) is None
    assert kv.get_version(key) is None
    assert kv.get_many([key]) == [None]
    start, end = _span(subject)
    assert kv.scan(start, end, 10) == []
    assert kv.scan_versions(start, end, 10) == []


def check_a_put_is_read_back_as_the_same_bytes(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    kv.put(key, b"one")
    got = kv.get(key)
    assert got == b"one" and type(got) is bytes
    kv.put(key, b"two")
    assert kv.get(key) == b"two"
    value, version = kv.get_version(key)
    assert value == b"two" and type(value) is bytes and _is_version(version)


def check_values_are_any_bytes_and_come_back_as_bytes(subject: Subject) -> None:
    kv = subject.kv
    every_byte = bytes(range(256))
    keys = [subject.key(b"\x00"), subject.key(b"\x7f"), subject.key(b"\xff\xfe")]
    for key in keys:
        kv.put(key, every_byte)
    assert [type(v) for v in kv.get_many(keys)] == [bytes] * 3
    assert kv.get_many(keys) == [every_byte] * 3
    start, end = _span(subject)
    pairs = kv.scan(start, end, 10)
    assert pairs == [(key, every_byte) for key in keys]
    assert all(type(k) is bytes and type(v) is bytes for k, v in pairs)
    triples = kv.scan_versions(start, end, 10)
    assert all(type(k) is bytes and type(v) is bytes and _is_version(t) for k, v, t in triples)


def check_an_empty_value_is_live_and_distinct_from_absent(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("empty")
    kv.put(key, b"")
    assert kv.get(key) == b"", "b'' read back as %r" % (kv.get(key),)
    found = kv.get_version(key)
    assert found is not None and found[0] == b""
    assert kv.scan(*_span(subject), 10) == [(key, b"")]
    assert kv.cas(key, None, b"x") is False, "cas expecting 'absent' swapped over a live b''"
    refused = kv.write_if(key, None, b"x")
    assert not refused.swapped and refused.error is None and refused.current == found
    assert kv.cas(key, b"", b"y") is True
    absent = subject.key("absent")
    assert kv.cas(absent, b"", b"z") is False, "cas expecting b'' swapped over an absent key"
    assert kv.get(absent) is None


def check_get_many_answers_in_the_order_asked(subject: Subject) -> None:
    kv = subject.kv
    kv.put(subject.key("b"), b"B")
    kv.put(subject.key("d"), b"D")
    kv.put(subject.key("a"), b"A")
    asked = [subject.key(s) for s in ("d", "c", "a", "b", "e")]
    assert kv.get_many(asked) == [b"D", None, b"A", b"B", None]
    assert kv.get_many([]) == []


# --- deletes and versions --------------------------------------------------------------------------


def check_a_delete_makes_the_key_absent(subject: Subject) -> None:
    kv = subject.kv
    key, other = subject.key("gone"), subject.key("stays")
    kv.put(key, b"v")
    kv.put(other, b"w")
    assert kv.delete(key) is True              # it says a live value was there
    assert kv.get(key) is None
    assert kv.get_version(key) is None
    assert kv.get_many([key, other]) == [None, b"w"]
    assert kv.scan(*_span(subject), 10) == [(other, b"w")]
    assert kv.delete(subject.key("never-written")) is False   # deleting nothing is fine, and says so
    assert kv.delete(key) is False                              # nor is a second delete of one key
    assert kv.get(subject.key("never-written")) is None


def check_versions_of_a_key_strictly_grow_also_across_deletes(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    kv.put(key, b"same")
    first = _version(kv, key)
    kv.put(key, b"same")
    second = _version(kv, key)
    assert second > first, "rewriting the same bytes made version %r, not above %r" % (second, first)
    deleted = kv.write_if(key, second, None)
    assert deleted.swapped and _is_version(deleted.version)
    assert deleted.version > second, "a delete's version %r is not above %r" % (deleted.version, second)
    kv.put(key, b"back")
    third = _version(kv, key)
    assert third > deleted.version
    kv.delete(key)
    kv.put(key, b"again")
    assert _version(kv, key) > third
    cas_key = subject.key("cas")
    assert kv.cas(cas_key, None, b"1")
    before = _version(kv, cas_key)
    assert kv.cas(cas_key, b"1", b"2")
    assert _version(kv, cas_key) > before


def check_a_delete_is_a_version_of_its_own(subject: Subject) -> None:
    """After a delete, the version the key had before is stale; the delete's own is current."""
    kv = subject.kv
    key = subject.key("k")
    kv.put(key, b"v")
    live = _version(kv, key)
    kv.delete(key)
    stale = kv.write_if(key, live, b"resurrected")
    assert not stale.swapped and stale.error is None, "a write on the version before a delete swapped"
    assert stale.current is None and kv.get(key) is None
    created = kv.write_if(subject.key("t"), None, b"x")
    gone = kv.write_if(subject.key("t"), created.version, None)
    assert gone.swapped
    after = kv.write_if(subject.key("t"), gone.version, b"y")
    assert after.swapped, "a write on the delete's own version did not swap"
    assert kv.get(subject.key("t")) == b"y"


# --- scans --------------------------------------------------------------------------------------------


def check_a_scan_returns_the_span_start_inclusive_end_exclusive_ascending(subject: Subject) -> None:
    kv = subject.kv
    names = [b"c", b"a", b"b\x00", b"d", b"b", b"\xff", b"b\xff"]
    for name in names:
        kv.put(subject.key(name), b"v" + name)
    ordered = sorted(subject.key(n) for n in names)
    start, end = _span(subject)
    assert [k for k, _ in kv.scan(start, end, 100)] == ordered
    assert kv.scan(subject.key("b"), subject.key("d"), 100) == [
        (subject.key(n), b"v" + n) for n in (b"b", b"b\x00", b"b\xff", b"c")]
    assert kv.scan(subject.key("b"), subject.key("b"), 100) == []
    assert kv.scan(subject.key("e"), end, 100) == [(subject.key(b"\xff"), b"v\xff")]
    assert kv.scan(start, subject.key("a"), 100) == []


def check_a_scan_returns_at_most_limit_pairs_from_the_start(subject: Subject) -> None:
    kv = subject.kv
    keys = [subject.key("%03d" % i) for i in range(12)]
    for key in reversed(keys):
        kv.put(key, key)
    start, end = _span(subject)
    assert kv.scan(start, end, 1) == [(keys[0], keys[0])]
    assert kv.scan(start, end, 5) == [(k, k) for k in keys[:5]]
    assert kv.scan(keys[7], end, 3) == [(k, k) for k in keys[7:10]]
    assert len(kv.scan(start, end, 12)) == 12
    assert len(kv.scan(start, end, constants.scan_rows_max)) == 12
    assert [k for k, _, _ in kv.scan_versions(start, end, 4)] == keys[:4]


def check_a_scan_limit_outside_the_bounds_is_a_value_error(subject: Subject) -> None:
    kv = subject.kv
    kv.put(subject.key("k"), b"v")
    start, end = _span(subject)
    for limit in (0, -1, constants.scan_rows_max + 1):
        _raises(ValueError, kv.scan, start, end, limit)
        _raises(ValueError, kv.scan_versions, start, end, limit)


def check_a_key_or_value_that_is_not_bytes_is_refused_before_anything_is_sent(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    _raises(TypeError, kv.put, key, "text")
    _raises(TypeError, kv.put, key, None)
    _raises(TypeError, kv.put, key.decode("latin-1"), b"v")
    _raises(TypeError, kv.get, key.decode("latin-1"))
    _raises(TypeError, kv.get_many, [key, key.decode("latin-1")])
    _raises(TypeError, kv.get_version, bytearray(key))
    _raises(TypeError, kv.cas, key, None, "text")
    _raises(TypeError, kv.write_if_many, [(key, None, b"v"), (key + b"2", None, "text")])
    _raises(TypeError, kv.scan, key.decode("latin-1"), None, 10)
    _raises(ValueError, kv.put, b"", b"v")
    _raises(ValueError, kv.get, b"")
    assert kv.get(key) is None and kv.get(key + b"2") is None, "a refused call wrote"


def check_a_scan_with_end_none_reaches_the_end_of_the_keyspace(subject: Subject) -> None:
    kv = subject.kv
    tail = subject.tail
    keys = [tail + b"a", tail + b"m", tail + b"\xff\xff\xff"]
    for key in keys:
        kv.put(key, b"x")
    assert [k for k, _ in kv.scan(tail, None, 100)] == keys
    assert [k for k, _ in kv.scan(tail + b"b", None, 100)] == keys[1:]
    assert [k for k, _ in kv.scan(tail, None, 2)] == keys[:2]
    assert [k for k, _, _ in kv.scan_versions(tail + b"n", None, 100)] == keys[2:]


def check_scan_versions_gives_each_pairs_current_version(subject: Subject) -> None:
    kv = subject.kv
    for name in ("b", "a", "c"):
        kv.put(subject.key(name), name.encode())
    kv.put(subject.key("b"), b"b2")
    start, end = _span(subject)
    triples = kv.scan_versions(start, end, 10)
    assert [(k, v) for k, v, _ in triples] == kv.scan(start, end, 10)
    for key, value, version in triples:
        assert kv.get_version(key) == (value, version)


def check_a_scan_crosses_range_splits_in_order(subject: Subject) -> None:
    kv = subject.kv
    names = ["a", "b", "c", "d", "e", "f"]
    for name in names:
        kv.put(subject.key(name), name.encode())
    start, end = _span(subject)
    subject.split(subject.key("d"))
    subject.split(subject.key("b"))   # left of the first cut: a range id above its right neighbour's
    expected = [(subject.key(n), n.encode()) for n in names]
    assert kv.scan(start, end, 100) == expected
    assert kv.scan(start, end, 4) == expected[:4]
    assert kv.scan(subject.key("a\x00"), subject.key("e"), 100) == expected[1:4]
    assert [(k, v) for k, v, _ in kv.scan_versions(start, end, 100)] == expected
    ranges = kv.ranges_for(start, end)
    assert [r["start"] for r in ranges][1:] == [subject.key("b"), subject.key("d")], \
        "ranges_for over two cuts: %r" % [(r["range_id"], r["start"], r["end"]) for r in ranges]
    kv.put(subject.key("c2"), b"after the split")
    assert kv.scan(subject.key("c"), subject.key("d"), 10) == [(subject.key("c"), b"c"),
                                                               (subject.key("c2"), b"after the split")]


# --- conditioned writes ------------------------------------------------------------------------------


def check_write_if_on_the_version_read_swaps_and_returns_the_new_version(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    kv.put(key, b"old")
    _, read = kv.get_version(key)
    result = kv.write_if(key, read, b"new")
    assert isinstance(result, WriteResult)
    assert result.swapped and result.error is None and _is_version(result.version)
    assert result.version > read
    assert kv.get_version(key) == (b"new", result.version)
    assert result.maybe_applied


def check_write_if_on_a_stale_version_refuses_and_returns_the_current_row(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    kv.put(key, b"v1")
    stale = _version(kv, key)
    kv.put(key, b"v1")               # the same bytes again: a different version
    current = kv.get_version(key)
    result = kv.write_if(key, stale, b"lost")
    assert not result.swapped and result.error is None and not result.maybe_applied
    assert result.current == current, "current %r, expected %r" % (result.current, current)
    assert kv.get_version(key) == current
    kv.delete(key)
    result = kv.write_if(key, current[1], b"lost")
    assert not result.swapped and result.error is None and result.current is None
    assert kv.get(key) is None


def check_write_if_none_creates_an_absent_key_and_refuses_a_present_one(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    created = kv.write_if(key, None, b"first")
    assert created.swapped and kv.get_version(key) == (b"first", created.version)
    refused = kv.write_if(key, None, b"second")
    assert not refused.swapped and refused.error is None
    assert refused.current == (b"first", created.version)
    deleted = kv.write_if(key, created.version, None)
    assert deleted.swapped and kv.get(key) is None
    again = kv.write_if(key, None, b"third")
    assert again.swapped and again.version > deleted.version
    assert kv.get(key) == b"third"


def check_write_if_many_answers_each_write_in_order(subject: Subject) -> None:
    kv = subject.kv
    a, b, c, d = (subject.key(s) for s in "abcd")
    kv.put(a, b"a")
    kv.put(c, b"c")
    stale_c = _version(kv, c)
    kv.put(c, b"c2")
    now_c = kv.get_version(c)
    read_a = _version(kv, a)
    results = kv.write_if_many([(a, read_a, b"a2"), (b, None, b"b"), (c, stale_c, b"lost"), (d, None, None)],
                               stop_after_failure=True)
    assert len(results) == 4
    assert results[0].swapped and kv.get_version(a) == (b"a2", results[0].version)
    assert results[1].swapped and kv.get_version(b) == (b"b", results[1].version)
    assert not results[2].swapped and results[2].error is None and results[2].current == now_c
    assert results[3].swapped, "a write after a refused condition got %r: a refusal is no failure" % (results[3],)
    assert kv.get(d) is None                      # write_if(absent, None, None) wrote a tombstone
    assert kv.write_if_many([], stop_after_failure=False) == []


def check_a_locking_read_answers_the_live_row_and_its_write_applies_on_that_version(subject: Subject) -> None:
    kv = subject.kv
    key, absent = subject.key("k"), subject.key("absent")
    kv.put(key, b"v1")
    locked = kv.get_for_update(key)
    assert locked.found == kv.get_version(key) and locked.version == locked.found[1]
    [written] = kv.write_if_many([(key, locked.version, b"v2")], lock=locked.lock)
    assert written.swapped and kv.get_version(key) == (b"v2", written.version)
    assert kv.get_for_update(absent).found is None
    kv.delete(key)
    assert kv.get_for_update(key).found is None and kv.get_for_update(key).version is None   # a tombstone: no row


def check_confirm_holds_only_while_the_key_is_at_the_version_read_and_writes_nothing(subject: Subject) -> None:
    kv = subject.kv
    key, absent = subject.key("k"), subject.key("absent")
    kv.put(key, b"v1")
    locked = kv.get_for_update(key)
    before = kv.get_version(key)
    assert kv.confirm(key, locked.version, lock=locked.lock).swapped
    assert kv.get_version(key) == before                         # nothing written, no new version
    kv.put(key, b"v1")                                           # same bytes, a new version
    stale = kv.confirm(key, locked.version)
    assert not stale.swapped and stale.error is None and stale.current == kv.get_version(key)
    assert kv.confirm(absent, None).swapped                     # no live value: as read
    assert not kv.confirm(key, None).swapped                    # a live value where none was read


def check_all_or_nothing_writes_nothing_of_a_range_where_one_condition_fails(subject: Subject) -> None:
    kv = subject.kv
    taken, free, other = subject.key("taken"), subject.key("free"), subject.key("other")
    kv.put(taken, b"first")
    results = kv.write_if_many([(free, None, b"new"), (taken, None, b"again")], all_or_nothing=True)
    assert not results[0].swapped and held_unwritten(None, results[0]), results[0]   # held, not written
    assert not results[1].swapped and results[1].current == kv.get_version(taken)    # the one that lost
    assert kv.get(free) is None and kv.get(taken) == b"first"
    both = kv.write_if_many([(free, None, b"new"), (other, None, b"o")], all_or_nothing=True)
    assert all(r.swapped for r in both) and kv.get(free) == b"new" and kv.get(other) == b"o"


def check_write_if_many_stops_only_after_a_failed_write(subject: Subject) -> None:
    """A refused condition is an answer; a write with an error (here: too large) is a failure.
    Without stop_after_failure every write is tried; with it, writes after the failure either
    went out and answered, or were not sent (not ambiguous, nothing applied)."""
    kv = subject.kv
    huge = b"x" * (constants.command_bytes_max + 1)
    first, big, after = subject.key("1"), subject.key("2"), subject.key("3")
    kv.put(first, b"taken")
    results = kv.write_if_many([(first, None, b"refused"), (big, None, huge), (after, None, b"tried")],
                               stop_after_failure=False)
    assert not results[0].swapped and results[0].error is None
    assert isinstance(results[1].error, TooLargeError) and not results[1].maybe_applied
    assert results[2].swapped, "without stop_after_failure a write after a failure was not tried"
    assert kv.get(big) is None and kv.get(after) == b"tried"
    later = subject.key("4")
    results = kv.write_if_many([(big, None, huge), (later, None, b"maybe")], stop_after_failure=True)
    assert len(results) == 2 and isinstance(results[0].error, TooLargeError)
    if results[1].error is not None:
        assert not results[1].swapped and not results[1].maybe_applied and kv.get(later) is None
    else:
        assert results[1].swapped and kv.get(later) == b"maybe"


def check_a_write_over_the_command_bound_is_too_large_and_applies_nothing(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    huge = b"x" * (constants.command_bytes_max + 1)
    _raises(TooLargeError, kv.put, key, huge)
    _raises(TooLargeError, kv.cas, key, None, huge)
    result = kv.write_if(key, None, huge)
    assert not result.swapped and isinstance(result.error, TooLargeError) and not result.maybe_applied
    assert kv.get(key) is None
    kv.put(key, b"small")
    assert kv.get(key) == b"small"


def _array(*elements) -> bytes:
    return msgpack.packb(list(elements), use_bin_type=True)


def check_set_fields_replaces_a_live_rows_fields_as_a_new_version_and_leaves_absent_keys_absent(
        subject: Subject) -> None:
    kv = subject.kv
    row, gone, never = subject.key("row"), subject.key("gone"), subject.key("never")
    kv.put(row, _array(1, "a", True, None))
    before = _version(kv, row)
    assert kv.set_fields(row, 4, [(1, "b"), (3, b"\x00")]) is True
    assert kv.get(row) == _array(1, "b", True, b"\x00")
    assert _version(kv, row) > before
    kv.put(gone, _array(2, "x", False, None))
    kv.delete(gone)
    assert kv.set_fields(gone, 4, [(1, "y")]) is False and kv.get(gone) is None
    assert kv.set_fields(never, 4, [(1, "z")]) is False and kv.get(never) is None
    _raises(ValueError, kv.set_fields, row, 4, [(4, "past the width")])
    _raises(ValueError, kv.set_fields, row, 4, [(1, "a"), (1, "b")])
    big = b"x" * (constants.command_bytes_max // 2)
    kv.put(row, _array(big, None))
    _raises(TooLargeError, kv.set_fields, row, 2, [(1, big)])   # the new row would not fit a command
    assert kv.get(row) == _array(big, None)


def check_cas_swaps_only_on_the_expected_value(subject: Subject) -> None:
    kv = subject.kv
    key = subject.key("k")
    assert kv.cas(key, None, b"a") is True
    assert kv.cas(key, None, b"b") is False
    assert kv.cas(key, b"wrong", b"c") is False
    assert kv.get(key) == b"a"
    assert kv.cas(key, b"a", b"d") is True
    assert kv.get(key) == b"d"
    kv.delete(key)
    assert kv.cas(key, b"d", b"e") is False
    assert kv.cas(key, None, b"f") is True and kv.get(key) == b"f"


# --- the cluster's shape ---------------------------------------------------------------------------


def _check_range_shape(ranges: list, start: bytes, end: bytes | None) -> None:
    assert ranges, "no range holds [%r, %r)" % (start, end)
    for r in ranges:
        assert isinstance(r["range_id"], int) and isinstance(r["start"], bytes)
        assert r["end"] is None or (isinstance(r["end"], bytes) and r["start"] < r["end"])
        assert all(isinstance(p["node_id"], int) and isinstance(p["region"], str) for p in r["replicas"])
        assert r["leader"] is None or r["leader"]["node_id"] in {p["node_id"] for p in r["replicas"]}
    for left, right in zip(ranges, ranges[1:]):
        assert left["end"] == right["start"], "ranges not in key order or not adjacent: %r" % (
            [(r["range_id"], r["start"], r["end"]) for r in ranges],)
    assert ranges[0]["start"] <= start
    assert ranges[-1]["end"] is None or (end is not None and ranges[-1]["end"] >= end)
    assert len({r["range_id"] for r in ranges}) == len(ranges)


def check_ranges_for_covers_the_span_in_key_order(subject: Subject) -> None:
    kv = subject.kv
    start, end = _span(subject)
    _check_range_shape(kv.ranges_for(start, end), start, end)
    _check_range_shape(kv.ranges_for(start, None), start, None)
    nodes = {r["node_id"] for r in kv.regions()}
    assert all(p["node_id"] in nodes for r in kv.ranges_for(start, None) for p in r["replicas"])


def check_regions_lists_every_node_once_by_id(subject: Subject) -> None:
    regions = subject.kv.regions()
    ids = [r["node_id"] for r in regions]
    assert ids and ids == sorted(set(ids)), "node ids %r: not distinct and ascending" % ids
    assert all(isinstance(r["region"], str) and r["region"] for r in regions)
    assert all(type(r["up"]) is bool for r in regions) and any(r["up"] for r in regions)


def check_now_is_the_gateways_clock(subject: Subject) -> None:
    import time
    assert abs(subject.kv.now_ns() - time.time_ns()) < 60 * 10**9


def check_a_bounded_follower_read_sees_every_write_at_or_below_its_bound(subject: Subject) -> None:
    from sql.asof import BOUNDED, ReadSpec
    kv = subject.kv
    kv.put(subject.key("k"), b"v1")
    version = _version(kv, subject.key("k"))
    begin, end = getattr(kv, "begin_statement", None), getattr(kv, "end_statement", None)
    if begin is not None:
        begin()
    try:
        kv.follower_read(ReadSpec(BOUNDED, min_ts=version), [_span(subject)])
        assert kv.get(subject.key("k")) == b"v1"
        assert kv.scan(*_span(subject), 10) == [(subject.key("k"), b"v1")]
    finally:
        if end is not None:
            end()


def check_consistency_checks_every_range_of_the_span_in_key_order(subject: Subject) -> None:
    kv = subject.kv
    kv.put(subject.key("k"), b"v")
    start, end = _span(subject)
    results = kv.check_consistency(start, end)
    assert [r["range_id"] for r in results] == [r["range_id"] for r in kv.ranges_for(start, end)]
    assert all(r["status"] in CONSISTENCY_STATUSES and isinstance(r["detail"], str) for r in results)


# --- tracing (EXPLAIN ANALYZE) --------------------------------------------------------------------


def check_a_trace_records_each_range_operation_between_begin_and_end(subject: Subject) -> None:
    """Each call is a step; the parts of one call in different ranges share it (sent together);
    a scan is one step per range it pages through. A write is one consensus round; a read is
    one on a node (through the log) and none in memory."""
    kv = subject.kv
    a, b, c = subject.key("a"), subject.key("b"), subject.key("c")
    start, end = _span(subject)
    kv.put(a, b"not traced")
    assert kv.end_trace() == [], "a trace without begin_trace"
    subject.split(c)
    range_of = {k: kv.ranges_for(k, k + b"\x00")[0]["range_id"] for k in (a, b, c)}
    assert range_of[a] == range_of[b] != range_of[c]
    kv.begin_trace()
    kv.get(c)
    kv.begin_trace()                                      # starts over
    kv.put(a, b"1")
    kv.get(a)
    kv.write_if_many([(b, None, b"2"), (c, None, b"3")])
    assert kv.scan(start, end, 10) == [(a, b"1"), (b, b"2"), (c, b"3")]
    trace = kv.end_trace()
    assert kv.end_trace() == []
    assert [(op["step"], op["kind"]) for op in trace] == [
        (1, "write"), (2, "get"), (3, "write"), (3, "write"), (4, "scan"), (5, "scan")], trace
    assert [(op["keys"], op["range_id"]) for op in trace[:2]] == [([a], range_of[a])] * 2
    assert sorted((op["keys"], op["range_id"]) for op in trace[2:4]) == [([b], range_of[b]), ([c], range_of[c])]
    assert [(op["keys"], op["end"], op["range_id"]) for op in trace[4:]] == [
        ([start], c, range_of[a]), ([c], end, range_of[c])]
    nodes = {r["node_id"] for r in kv.regions()}
    for op in trace:
        assert op["kind"] in TRACE_KINDS
        assert op["rounds"] == 1 if op["kind"] == "write" else op["rounds"] in (0, 1), op
        assert op["served_by"] is None or op["served_by"] in nodes, op
        assert all(op[f] is None or op[f] >= 0 for f in ("quorum_rtt_ms", "leader_rtt_ms")), op
        assert op["ms"] >= 0
        assert op["follower"] is False, op   # strong reads and writes: the leaseholder's


CHECKS: list[Callable[[Subject], None]] = [
    value for name, value in list(globals().items()) if name.startswith("check_") and callable(value)]


# --- the interface itself ---------------------------------------------------------------------------


def protocol_methods() -> list[str]:
    """The calls the Protocol names (its own public methods)."""
    return [name for name, value in vars(KV).items() if inspect.isfunction(value) and not name.startswith("_")]


def signature_mismatches(cls: type) -> list[str]:
    """How `cls` differs from the Protocol in what a caller can pass: a missing method, or
    parameters with other names, kinds or defaults. Empty when every call the engine makes fits."""
    found = []
    for name in protocol_methods():
        method = getattr(cls, name, None)
        if not callable(method):
            found.append("%s: missing" % name)
            continue
        want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(KV, name)).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
        if want != got:
            found.append("%s%s, the Protocol says %s%s" % (name, inspect.signature(method), name,
                                                          inspect.signature(getattr(KV, name))))
    return found
