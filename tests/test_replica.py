"""RangeReplica on a real SQLite MVCC store: the outcomes it keeps for retried commands."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import msgpack
import pytest

from raftstore import constants
from raftstore.kvserver.ranges import FIRST_DATA_RANGE_ID, bootstrap_descriptors, local_desc_key
from raftstore.kvserver.replica import RangeReplica, desc_ts
from raftstore.raft.commands import Command, CommandError
from raftstore.storage.mvcc import MVCCStore


@pytest.fixture
def replica(tmp_path):
    store = MVCCStore(os.path.join(tmp_path, "store.sqlite"))
    store.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in bootstrap_descriptors([1, 2, 3])])
    yield RangeReplica(store, FIRST_DATA_RANGE_ID)
    store.close()


def _cid(i: int) -> bytes:
    return i.to_bytes(constants.command_id_bytes, "big")


def test_outcomes_are_forgotten_only_beyond_the_window_at_the_same_indexes_everywhere(replica, monkeypatch):
    monkeypatch.setattr(constants, "dedup_window_entries", 50)
    monkeypatch.setattr(constants, "dedup_forget_every_entries", 10)
    for index in range(1, 131):
        replica.apply(index, Command(_cid(index), "put", {"key": b"k%04d" % index, "value": b"v", "ts": [index, 0]}))
    # At index 130 everything below 130 - 50 = 80 was forgotten; 80..130 are still known.
    known = [i for i in range(1, 131) if replica.result_of(_cid(i))[0]]
    assert known == list(range(80, 131))
    found, outcome = replica.result_of(_cid(100))
    assert found and outcome[0] is True and outcome[1]["ts"] == [100, 0]


def test_with_the_default_window_recent_outcomes_stay(replica):
    for index in range(1, 2001):
        replica.apply(index, Command(_cid(index), "put", {"key": b"k%04d" % index, "value": b"v", "ts": [index, 0]}))
    assert all(replica.result_of(_cid(i))[0] for i in (1, 1000, 2000))


def _put(replica, index: int, i: int, value: bytes = b"v"):
    return replica.apply(index, Command(_cid(i), "put", {"key": b"k%04d" % i, "value": value, "ts": [index, 0]}))


def _split(replica, index: int, split_key: bytes, new_id: int):
    return replica.apply(index, Command(_cid(10_000 + new_id), "split", {
        "split_key": split_key, "new_range_id": new_id, "generation": replica.desc.generation, "ts": [index, 0]}))


def _saved_outcomes(store: MVCCStore) -> list[tuple[int, bytes]]:
    """(range_id, command_id) of every outcome the store's file holds, read with SQLite itself."""
    store.flush_batch()
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        return conn.execute("SELECT range_id, command_id FROM command_results").fetchall()


def _retry(replica, index: int, i: int, value: bytes):
    """What RaftGroup does with a committed command (raftstore.raft.group._apply): a command id
    with a saved outcome gets that outcome and applies nothing; any other is applied."""
    found, outcome = replica.result_of(_cid(i))
    if found:
        replica.record_failed(index, None, "duplicate of an applied command")
        return outcome
    try:
        return (True, _put(replica, index, i, value))
    except CommandError as exc:
        replica.record_failed(index, Command(_cid(i), "put", {"key": b"k%04d" % i}), str(exc))
        return (False, str(exc))


def test_after_a_split_each_outcome_is_kept_by_the_range_that_holds_its_key(replica):
    for index in range(1, 11):
        _put(replica, index, index)
    _split(replica, 11, b"k0005", 7)
    right = RangeReplica(replica.store, 7)
    assert right.desc.start == b"k0005"
    for i in range(1, 11):             # a retry is routed by its key to the half that holds it
        holder, other = (replica, right) if i < 5 else (right, replica)
        found, outcome = holder.result_of(_cid(i))
        assert found and outcome[1]["ts"] == [i, 0]
        assert not other.result_of(_cid(i))[0]


def test_splits_do_not_multiply_the_saved_outcomes(replica):
    # M outcomes, then N splits of the range (each moving the top eighth of what is left):
    # every outcome stays saved exactly once, in the range holding its key -- not M x splits.
    m, n = 64, 7
    for index in range(1, m + 1):
        _put(replica, index, index)
    index = m
    ranges = [replica]
    for j in range(n):
        index += 1
        _split(replica, index, b"k%04d" % (m - 8 * (j + 1) + 1), 7 + j)
        ranges.append(RangeReplica(replica.store, 7 + j))
    saved = _saved_outcomes(replica.store)
    puts = [(rid, cid) for rid, cid in saved if int.from_bytes(cid, "big") <= m]
    assert len(puts) == m, "%d saved outcomes of %d commands after %d splits" % (len(puts), m, n)
    assert len(saved) == m + n          # and each split's own outcome, kept by the parent
    for i in range(1, m + 1):
        holders = [r.range_id for r in ranges if r.result_of(_cid(i))[0]]
        assert holders == [r.range_id for r in ranges if r.desc.contains(b"k%04d" % i)]


def test_a_retry_after_a_split_gets_its_first_outcome_from_the_range_now_holding_its_key(replica):
    first = _put(replica, 1, 9, b"first")
    _put(replica, 2, 2, b"stays")
    _split(replica, 3, b"k0005", 7)
    right = RangeReplica(replica.store, 7)
    right.store.mark_applied(7, 10)     # a split-created range starts its log at INIT_INDEX
    # A retry with a stale route reaches the parent first: it must not apply there (the parent
    # refuses the key as outside its span; the router then routes it again) ...
    ok, answer = _retry(replica, 4, 9, b"second")
    assert (ok, answer) == (True, first) or (not ok and "outside" in answer)
    # ... and the range that holds the key now answers the first outcome.
    assert _retry(right, 11, 9, b"second") == (True, first)
    versions = [row for chunk in replica.store.export_span(b"k0009", b"k0009\x00", 10) for row in chunk]
    assert versions == [(b"k0009", *first["ts"], b"first")]        # applied once
    # A key that stayed: its retry is answered by the parent.
    ok, outcome = _retry(replica, 5, 2, b"again")
    assert ok and outcome["ts"] == [2, 0] and replica.store.get_value(b"k0002", (2**62, 0)) == b"stays"


def test_outcomes_saved_before_keys_were_kept_go_to_both_halves_of_a_split(replica):
    # An outcome from a store or snapshot of the format before (no key) cannot tell which half
    # its retry will reach: both keep it, as before, until the window forgets it.
    replica.store.apply(FIRST_DATA_RANGE_ID, 1, [], command_id=_cid(1), result=msgpack.packb([True, {"ts": [1, 0]}]))
    _put(replica, 2, 2)
    _split(replica, 3, b"k0001", 7)
    right = RangeReplica(replica.store, 7)
    assert replica.result_of(_cid(1))[0] and right.result_of(_cid(1))[0]
    assert not replica.result_of(_cid(2))[0] and right.result_of(_cid(2))[0]


@pytest.mark.parametrize("staged", [False, True])
def test_a_replica_installed_from_a_snapshot_answers_retries_of_earlier_commands(replica, tmp_path, staged):
    import io
    for index in range(1, 21):
        replica.apply(index, Command(_cid(index), "put", {"key": b"k%04d" % index, "value": b"v", "ts": [index, 0]}))
    f = io.BytesIO()
    replica.write_snapshot(f, 20)
    other = MVCCStore(os.path.join(tmp_path, "other.sqlite"))
    try:
        target = RangeReplica(other, FIRST_DATA_RANGE_ID)
        # The target remembers an outcome the snapshot's range does not: it must go.
        other.apply(FIRST_DATA_RANGE_ID, 3, [], command_id=_cid(999), result=b"\x92\xc3\x80")
        f.seek(0)
        if staged:
            target.install_staged(target.stage_snapshot(f, 20), 20)
        else:
            target.read_snapshot(f, 20)
        for i in range(1, 21):
            assert target.result_of(_cid(i)) == replica.result_of(_cid(i))
        assert not target.result_of(_cid(999))[0]
        # A retry of command 7 on the new replica returns its first outcome and applies nothing.
        assert target.store.get(b"k0007", (10**18, 0))[1] == (7, 0)
        # The outcomes came with their keys: the installed replica's next split hands on just
        # those of the keys that move.
        _split(target, 21, b"k0016", 7)
        right = RangeReplica(other, 7)
        assert [i for i in range(1, 21) if right.result_of(_cid(i))[0]] == list(range(16, 21))
        assert [i for i in range(1, 21) if target.result_of(_cid(i))[0]] == list(range(1, 16))
    finally:
        other.close()


def test_a_snapshot_in_the_format_before_outcomes_still_installs(replica, tmp_path):
    import io
    for index in range(1, 6):
        replica.apply(index, Command(_cid(index), "put", {"key": b"k%04d" % index, "value": b"v", "ts": [index, 0]}))
    f = io.BytesIO()
    replica.write_snapshot(f, 5)
    data = f.getvalue()
    import struct
    (n,) = struct.unpack("<I", data[:4])
    pos = 4 + n                                  # past the descriptor
    while True:                                  # past the row chunks and their 0 terminator
        (n,) = struct.unpack("<I", data[pos:pos + 4])
        pos += 4 + n
        if n == 0:
            break
    old = data[:pos]                             # the format before outcomes ended here
    assert len(old) < len(data)
    other = MVCCStore(os.path.join(tmp_path, "other.sqlite"))
    try:
        target = RangeReplica(other, FIRST_DATA_RANGE_ID)
        target.read_snapshot(io.BytesIO(old), 5)
        assert [k for k, _, _ in other.scan(b"k", b"l", (10**18, 0), 100)] == [b"k%04d" % i for i in range(1, 6)]
    finally:
        other.close()


def _put_if(replica, index: int, key: bytes, if_version, value):
    return replica.apply(index, Command(_cid(index), "put_if", {
        "key": key, "if_version": if_version, "value": value, "ts": [index, 0]}))


def test_put_if_writes_only_on_the_exact_version_read_never_on_equal_bytes(replica):
    first = _put_if(replica, 1, b"k1", None, b"v")                 # absent: written
    assert first["swapped"] and first["ts"] == [1, 0]
    assert replica.result_of(_cid(1)) == (True, (True, first))    # a retried id: the same answer
    assert not _put_if(replica, 2, b"k1", None, b"w")["swapped"]   # no longer absent
    # Another writer puts back the very same bytes: a new version, so the old one no longer matches.
    replica.apply(3, Command(_cid(3), "put", {"key": b"k1", "value": b"v", "ts": [3, 0]}))
    lost = _put_if(replica, 4, b"k1", first["ts"], None)
    assert not lost["swapped"] and (lost["value"], lost["version"]) == (b"v", [3, 0])
    assert replica.store.get_value(b"k1", (2**62, 0)) == b"v"
    deleted = _put_if(replica, 5, b"k1", lost["version"], None)    # on the version it was told
    assert deleted["swapped"] and replica.store.get_value(b"k1", (2**62, 0)) is None
    # A tombstone's version is a version too: what a delete answered puts the row back.
    restored = _put_if(replica, 6, b"k1", deleted["ts"], b"v")
    assert restored["swapped"] and replica.store.get_value(b"k1", (2**62, 0)) == b"v"


def test_a_scan_answers_each_rows_version(replica):
    put = _put_if(replica, 1, b"k1", None, b"a")
    _put_if(replica, 2, b"k2", None, b"b")
    again = _put_if(replica, 3, b"k1", put["ts"], b"c")
    scan = replica.apply(4, Command(_cid(4), "scan", {"start": b"k", "end": b"l", "limit": 10, "ts": [4, 0]}))
    assert scan["rows"] == [[b"k1", b"c"], [b"k2", b"b"]] and scan["versions"] == [again["ts"], [2, 0]]


def test_a_retried_cas_gets_the_whole_first_answer_swapped_included(replica):
    replica.apply(1, Command(_cid(1), "put", {"key": b"k1", "value": b"a", "ts": [1, 0]}))
    first = replica.apply(2, Command(_cid(2), "cas", {"key": b"k1", "expected": b"a", "new": b"b", "ts": [2, 0]}))
    assert first["swapped"] is True
    assert replica.result_of(_cid(2)) == (True, (True, first))


def test_a_key_outside_the_range_is_a_typed_mismatch_carrying_the_replicas_descriptor(replica):
    from raftstore.kvserver.ranges import RANGE_KEY_MISMATCH, is_mismatch, mismatch_descriptors
    from raftstore.raft.commands import CommandError, Rejection
    replica.apply(1, Command(_cid(1), "split", {"split_key": b"k5", "new_range_id": 7, "generation": 0, "ts": [1, 0]}))
    with pytest.raises(CommandError) as caught:   # routed before the split: the key moved right
        replica.apply(2, Command(_cid(2), "put", {"key": b"k7", "value": b"v", "ts": [2, 0]}))
    rejection = Rejection.from_wire(caught.value.rejection().to_wire())   # as saved and answered
    assert rejection.code == RANGE_KEY_MISMATCH and is_mismatch(rejection)
    assert mismatch_descriptors(rejection.details) == [replica.desc] and replica.desc.end == b"k5"
    assert "RangeKeyMismatch" in str(rejection) and "k7" in str(rejection)
    with pytest.raises(CommandError) as caught:   # any other rejection is not a mismatch
        replica.apply(2, Command(_cid(2), "put", {"key": b"k1", "value": 5, "ts": [2, 0]}))
    assert not is_mismatch(caught.value.rejection())


def test_rejections_saved_before_they_had_codes_and_malformed_ones_decode_as_plain_rejections():
    from raftstore.kvserver.ranges import is_mismatch
    from raftstore.raft.commands import REJECTED_CODE, Rejection
    old = Rejection.from_wire("RangeKeyMismatch: key b'k7' is outside r2[...]")
    assert (old.code, old.details) == (REJECTED_CODE, {}) and not is_mismatch(old)
    assert Rejection.from_wire({"code": 3, "message": "x"}).code == REJECTED_CODE
    assert Rejection.from_wire({"code": "c", "message": "m", "details": {"a": 1}}) == Rejection("c", "m", {"a": 1})


@pytest.mark.parametrize("op", ["_write_ts", "finish", "mismatch", "HANDLERS", "__init__", ""])
def test_only_the_ops_in_the_handler_table_apply(replica, op):
    from raftstore.raft.commands import CommandError
    with pytest.raises(CommandError, match="unknown command op"):
        replica.apply(1, Command(_cid(1), op, {"key": b"k1", "value": b"v", "ts": [1, 0]}))
