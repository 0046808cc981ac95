"""The MVCC store against its spec: reads see the newest version at or below their timestamp,
each Raft index is applied exactly once (across restarts and crashes), gc never changes a
read at or above its threshold, and a snapshot moves a span and its applied state intact.

The reference is `Model`, a dict of key -> {timestamp: value}; hypothesis drives the store
and the model through the same random histories and compares every answer.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftstore.storage import mvcc
from raftstore.storage.mvcc import MVCCStore, StoreError

TS_MAX = (mvcc.TIMESTAMP_PART_MAX, mvcc.TIMESTAMP_PART_MAX)


# --- the reference model ---


class Model:
    """What the store should answer, computed the obvious way."""

    def __init__(self) -> None:
        self.versions: dict[bytes, dict[tuple[int, int], bytes | None]] = {}

    def write(self, key, ts, value) -> None:
        self.versions.setdefault(key, {})[ts] = value

    def get(self, key, ts):
        visible = [t for t in self.versions.get(key, {}) if t <= ts]
        if not visible:
            return None
        newest = max(visible)
        return self.versions[key][newest], newest

    def get_value(self, key, ts):
        found = self.get(key, ts)
        return None if found is None else found[0]

    def scan(self, start, end, ts, limit):
        rows = []
        for key in sorted(self.versions):
            if key < start or (end is not None and key >= end):
                continue
            found = self.get(key, ts)
            if found is not None and found[0] is not None:
                rows.append((key, found[0], found[1]))
        return rows[:limit]

    def latest_version_ts(self, key):
        return max(self.versions[key]) if self.versions.get(key) else None

    def gc(self, start, end, before) -> int:
        removed = 0
        for key, by_ts in self.versions.items():
            if key < start or (end is not None and key >= end):
                continue
            old = sorted((t for t in by_ts if t <= before), reverse=True)
            doomed = old[1:] + (old[:1] if old and by_ts[old[0]] is None else [])
            for t in doomed:
                del by_ts[t]
            removed += len(doomed)
        return removed

    def rows(self, start=b"", end=None):
        return sorted(
            (k, t[0], t[1], v)
            for k, by_ts in self.versions.items()
            for t, v in by_ts.items()
            if k >= start and (end is None or k < end)
        )


def read_timestamps(model: Model, at_or_above=(0, 0)):
    """Every timestamp where an answer can change, its neighbours, and the extremes."""
    stamps = {at_or_above, TS_MAX}
    for by_ts in model.versions.values():
        for wall, logical in by_ts:
            stamps |= {(wall, logical), (wall, logical + 1)}
            if logical:
                stamps.add((wall, logical - 1))
            elif wall:
                stamps.add((wall - 1, mvcc.TIMESTAMP_PART_MAX))
    return sorted(t for t in stamps if t >= at_or_above)


def store_rows(store: MVCCStore, start=b"", end=None):
    return sorted(row for chunk in store.export_span(start, end, 7) for row in chunk)


# --- strategies: a tiny alphabet and few timestamps, so keys share prefixes and collide ---

keys = st.lists(st.sampled_from(b"\x00ab\xff"), max_size=3).map(bytes)
timestamps = st.tuples(st.integers(0, 6), st.integers(0, 2))
read_ts = st.one_of(st.tuples(st.integers(0, 7), st.integers(0, 3)), st.just(TS_MAX))
values = st.one_of(st.none(), st.binary(max_size=4))  # None = tombstone; b"" is a value
writes = st.lists(st.tuples(keys, timestamps, values), max_size=6)
span_ends = st.one_of(st.none(), keys)


@pytest.fixture
def store(tmp_path):
    s = MVCCStore(tmp_path / "node.db")
    yield s
    s.close()


# --- the model test: random histories of writes, tombstones, reads, gc, restarts ---


class StoreAgreesWithModel(RuleBasedStateMachine):
    """Every get/scan/latest_version_ts at random timestamps answers as the model does,
    across replays, gc, clean restarts and crashes (a second open without closing)."""

    RANGE_ID = 7

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mvcc-model-")
        self.path = str(Path(self.dir) / "node.db")
        self.stores = [MVCCStore(self.path, synchronous="NORMAL")]
        self.model = Model()
        self.applied = 0

    @property
    def store(self) -> MVCCStore:
        return self.stores[-1]

    def teardown(self) -> None:
        for s in self.stores:
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(batch=writes, gap=st.integers(1, 3))
    def apply_command(self, batch, gap):
        self.applied += gap
        assert self.store.apply(self.RANGE_ID, self.applied, batch)
        for key, ts, value in batch:
            self.model.write(key, ts, value)

    @rule(batch=writes, back=st.integers(0, 5))
    def replayed_command_changes_nothing(self, batch, back):
        index = max(self.applied - back, 0)
        assert not self.store.apply(self.RANGE_ID, index, batch)
        assert not self.store.mark_applied(self.RANGE_ID, index)

    @rule(key=keys, ts=read_ts)
    def get(self, key, ts):
        assert self.store.get(key, ts) == self.model.get(key, ts)
        assert self.store.get_value(key, ts) == self.model.get_value(key, ts)

    @rule(
        start=keys,
        end=span_ends,
        ts=read_ts,
        limit=st.integers(0, 6),
        skip_rows_max=st.sampled_from([0, 1, mvcc.SCAN_SKIP_ROWS_MAX]),
    )
    def scan(self, start, end, ts, limit, skip_rows_max):
        with mock.patch.object(mvcc, "SCAN_SKIP_ROWS_MAX", skip_rows_max):
            got = self.store.scan(start, end, ts, limit)
        assert got == self.model.scan(start, end, ts, limit)
        hidden_max = max(
            (sum(t <= ts for t in by_ts) - 1 for by_ts in self.model.versions.values()),
            default=0,
        )
        event(f"scan: a key hides more than skip_rows_max versions: {hidden_max > skip_rows_max}")

    @rule(key=keys)
    def latest_version_ts(self, key):
        assert self.store.latest_version_ts(key) == self.model.latest_version_ts(key)

    @rule(start=keys, end=span_ends, before=timestamps)
    def gc(self, start, end, before):
        old = copy.deepcopy(self.model)
        removed = self.store.gc(start, end, before)
        assert removed == self.model.gc(start, end, before)
        event(f"gc removed versions: {removed > 0}")
        for ts in read_timestamps(old, at_or_above=before):
            assert self.store.scan(b"", None, ts, 10_000) == old.scan(b"", None, ts, 10_000)

    @rule()
    def restart(self):
        self.store.close()
        self.stores.append(MVCCStore(self.path, synchronous="NORMAL"))

    @rule()
    def crash_and_reopen(self):
        # The old connection is never closed, as after a crash; a new one must see it all.
        self.stores.append(MVCCStore(self.path, synchronous="NORMAL"))

    @invariant()
    def applied_index_is_the_last_applied_command(self):
        assert self.store.applied_index(self.RANGE_ID) == self.applied


StoreAgreesWithModel.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestStoreAgreesWithModel = StoreAgreesWithModel.TestCase


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(st.tuples(keys, timestamps, values), max_size=25),
    start=keys,
    end=span_ends,
    before=timestamps,
)
def test_gc_keeps_every_read_at_or_above_before_ts(tmp_path_factory, history, start, end, before):
    path = tmp_path_factory.mktemp("gc") / "node.db"
    model = Model()
    with MVCCStore(path, synchronous="OFF") as store:
        store.apply(1, 1, history)
        for key, ts, value in history:
            model.write(key, ts, value)
        expected = copy.deepcopy(model)
        removed = store.gc(start, end, before)

        assert removed == model.gc(start, end, before)
        assert store_rows(store) == model.rows()
        for ts in read_timestamps(expected, at_or_above=before):
            assert store.scan(b"", None, ts, 100) == expected.scan(b"", None, ts, 100)
            for key in expected.versions:
                assert store.get_value(key, ts) == expected.get_value(key, ts)
        # Outside the span nothing changed, at any timestamp.
        for key in expected.versions:
            if key < start or (end is not None and key >= end):
                for ts in read_timestamps(expected):
                    assert store.get(key, ts) == expected.get(key, ts)


# --- visibility ---


def test_read_sees_newest_version_at_or_below_its_timestamp(store):
    store.apply(
        1, 1, [(b"k", (10, 0), b"v10.0"), (b"k", (10, 2), b"v10.2"), (b"k", (20, 0), b"v20")]
    )
    assert store.get(b"k", (9, 99)) is None
    assert store.get(b"k", (10, 0)) == (b"v10.0", (10, 0))
    assert store.get(b"k", (10, 1)) == (b"v10.0", (10, 0))
    assert store.get(b"k", (10, 2)) == (b"v10.2", (10, 2))
    assert store.get(b"k", (19, 2**40)) == (b"v10.2", (10, 2))
    assert store.get(b"k", TS_MAX) == (b"v20", (20, 0))
    assert store.get(b"other", TS_MAX) is None


def test_tombstone_hides_older_versions_until_a_newer_write(store):
    store.apply(1, 1, [(b"k", (1, 0), b"old"), (b"k", (2, 0), None), (b"k", (3, 0), b"new")])
    assert store.get(b"k", (2, 5)) == (None, (2, 0))
    assert store.get_value(b"k", (2, 5)) is None
    assert store.scan(b"", None, (2, 5), 10) == []
    assert store.get_value(b"k", (1, 9)) == b"old"
    assert store.get_value(b"k", (3, 0)) == b"new"
    assert store.latest_version_ts(b"k") == (3, 0)


def test_empty_value_is_a_value_not_a_tombstone(store):
    store.apply(1, 1, [(b"k", (1, 0), b"")])
    assert store.get(b"k", (1, 0)) == (b"", (1, 0))
    assert store.scan(b"", None, (1, 0), 10) == [(b"k", b"", (1, 0))]


def test_second_write_of_same_key_and_timestamp_replaces_the_first(store):
    store.apply(1, 1, [(b"k", (1, 0), b"a")])
    store.apply(1, 2, [(b"k", (1, 0), None)])
    assert store.get(b"k", (1, 0)) == (None, (1, 0))
    assert store_rows(store) == [(b"k", 1, 0, None)]


def test_latest_version_ts_sees_every_timestamp_and_tombstones(store):
    assert store.latest_version_ts(b"k") is None
    store.apply(1, 1, [(b"k", (5, 1), b"x"), (b"k", (9, 0), None), (b"k", (2, 0), b"y")])
    assert store.latest_version_ts(b"k") == (9, 0)


# --- scan ---


def test_scan_is_start_inclusive_end_exclusive_and_end_none_is_unbounded(store):
    store.apply(1, 1, [(k, (1, 0), k.upper()) for k in (b"a", b"b", b"b\x00", b"c", b"\xff\xff")])
    ts = (1, 0)
    assert [r[0] for r in store.scan(b"b", b"c", ts, 10)] == [b"b", b"b\x00"]
    assert [r[0] for r in store.scan(b"b", None, ts, 10)] == [b"b", b"b\x00", b"c", b"\xff\xff"]
    assert [r[0] for r in store.scan(b"", None, ts, 10)][:1] == [b"a"]
    assert store.scan(b"c", b"c", ts, 10) == []
    assert store.scan(b"d", b"c", ts, 10) == []


def test_scan_limit_counts_only_live_rows(store):
    store.apply(
        1,
        1,
        [(b"a", (1, 0), b"1"), (b"b", (1, 0), None), (b"c", (1, 0), None), (b"d", (1, 0), b"4"),
         (b"e", (1, 0), b"5")],
    )
    assert store.scan(b"", None, (1, 0), 2) == [(b"a", b"1", (1, 0)), (b"d", b"4", (1, 0))]
    assert store.scan(b"", None, (1, 0), 0) == []
    with pytest.raises(ValueError):
        store.scan(b"", None, (1, 0), -1)


@pytest.mark.parametrize("skip_rows_max", [0, 1, mvcc.SCAN_SKIP_ROWS_MAX, 1000])
def test_scan_skips_long_histories_and_returns_each_keys_visible_version(
    tmp_path, monkeypatch, skip_rows_max
):
    monkeypatch.setattr(mvcc, "SCAN_SKIP_ROWS_MAX", skip_rows_max)
    model = Model()
    batch = []
    for i, key in enumerate([b"cold", b"hot", b"hot2", b"warm", b"zz"]):
        for wall in range({b"hot": 60, b"hot2": 30, b"warm": 5}.get(key, 1)):
            value = None if (wall + i) % 7 == 3 else b"%s@%d" % (key, wall)
            batch.append((key, (wall, 0), value))
            model.write(key, (wall, 0), value)
    with MVCCStore(tmp_path / "node.db") as store:
        store.apply(1, 1, batch)
        for ts in read_timestamps(model):
            for limit in (1, 2, 10):
                assert store.scan(b"", None, ts, limit) == model.scan(b"", None, ts, limit)
                assert store.scan(b"h", b"w", ts, limit) == model.scan(b"h", b"w", ts, limit)


# --- exactly-once apply ---


def test_apply_same_raft_index_twice_changes_nothing(store):
    assert store.apply(1, 5, [(b"k", (1, 0), b"first")], command_id=b"c1", result=b"r1")
    assert not store.apply(1, 5, [(b"k", (1, 0), b"again"), (b"x", (1, 0), b"x")],
                           command_id=b"c2", result=b"r2")
    assert not store.apply(1, 4, [(b"x", (2, 0), b"x")])
    assert store.get_value(b"k", (1, 0)) == b"first"
    assert store.get(b"x", TS_MAX) is None
    assert store.command_result(1, b"c2") is None
    assert store.applied_index(1) == 5


def test_mark_applied_advances_the_index_without_data_and_is_idempotent(store):
    assert store.applied_index(1) == 0
    assert store.mark_applied(1, 3)
    assert not store.mark_applied(1, 3)
    assert not store.apply(1, 2, [(b"k", (1, 0), b"v")])
    assert store.applied_index(1) == 3
    assert store.get(b"k", TS_MAX) is None


def test_ranges_have_independent_applied_indexes(store):
    store.apply(1, 10, [(b"a", (1, 0), b"1")])
    assert store.apply(2, 1, [(b"b", (1, 0), b"2")])
    assert (store.applied_index(1), store.applied_index(2), store.applied_index(3)) == (10, 1, 0)


def test_a_malformed_write_applies_nothing(store):
    store.apply(1, 1, [(b"k", (1, 0), b"v")])
    with pytest.raises(TypeError):
        store.apply(1, 2, [(b"k", (2, 0), b"new"), ("str-key", (2, 0), b"x")])
    with pytest.raises(ValueError):
        store.apply(1, 2, [(b"k", (2, 0), b"new"), (b"k", (-1, 0), b"x")])
    assert store.applied_index(1) == 1
    assert store.get_value(b"k", TS_MAX) == b"v"
    assert store.apply(1, 2, [(b"k", (2, 0), b"new")])  # the store is still usable


def test_applied_term_is_recorded_when_given(store):
    store.apply(1, 1, [], raft_term=3)
    store.mark_applied(1, 2)
    assert store.applied_state(1) == (2, 3)
    store.mark_applied(1, 3, raft_term=4)
    assert store.applied_state(1) == (3, 4)


def test_applied_index_and_data_survive_a_restart(tmp_path):
    path = tmp_path / "node.db"
    with MVCCStore(path) as store:
        store.apply(1, 7, [(b"k", (1, 0), b"v")], command_id=b"c", result=b"ok")
    with MVCCStore(path) as store:
        assert store.applied_index(1) == 7
        assert store.get_value(b"k", (1, 0)) == b"v"
        assert store.command_result(1, b"c") == (7, b"ok")
        assert not store.apply(1, 7, [(b"k", (1, 0), b"replayed")])
        assert store.get_value(b"k", (1, 0)) == b"v"


def test_applied_index_and_data_survive_a_crash(tmp_path):
    path = tmp_path / "node.db"
    crashed = MVCCStore(path)  # never closed: the process "died" holding it
    crashed.apply(1, 7, [(b"k", (1, 0), b"v")])
    try:
        with MVCCStore(path) as store:
            assert store.applied_index(1) == 7
            assert store.get_value(b"k", (1, 0)) == b"v"
            assert not store.apply(1, 7, [(b"k", (1, 0), b"replayed")])
            assert store.apply(1, 8, [(b"k", (2, 0), b"w")])
    finally:
        crashed.close()


def test_applied_index_and_data_survive_process_exit_without_close(tmp_path):
    path = tmp_path / "node.db"
    child = (
        "import os, sys\n"
        "from raftstore.storage.mvcc import MVCCStore\n"
        "s = MVCCStore(sys.argv[1])\n"
        "s.apply(3, 9, [(b'k', (1, 0), b'v'), (b'd', (1, 0), None)])\n"
        "os._exit(0)\n"
    )
    # The child imports the same raftstore as this test, however it was put on sys.path.
    env = {**os.environ, "PYTHONPATH": str(Path(mvcc.__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", child, str(path)], check=True, timeout=60, env=env)
    with MVCCStore(path) as store:
        assert store.applied_index(3) == 9
        assert store.get(b"k", TS_MAX) == (b"v", (1, 0))
        assert store.get(b"d", TS_MAX) == (None, (1, 0))


def test_command_results_round_trip_and_are_forgotten_below_an_index(store):
    store.apply(1, 1, [], command_id=b"a", result=b"ra")
    store.apply(1, 2, [], command_id=b"b", result=None)
    store.apply(1, 3, [], command_id=b"c", result=b"rc")
    store.apply(2, 1, [], command_id=b"a", result=b"other range")
    assert store.command_result(1, b"a") == (1, b"ra")
    assert store.command_result(1, b"b") == (2, None)
    assert store.command_result(2, b"a") == (1, b"other range")
    assert store.command_result(1, b"zzz") is None
    assert store.forget_command_results(1, 3) == 2
    assert store.command_result(1, b"a") is None
    assert store.command_result(1, b"b") is None
    assert store.command_result(1, b"c") == (3, b"rc")
    assert store.command_result(2, b"a") == (1, b"other range")
    with pytest.raises(ValueError):
        store.apply(1, 4, [], result=b"no id")


def test_delete_range_state_forgets_index_and_results_but_not_data(store):
    store.apply(1, 4, [(b"k", (1, 0), b"v")], command_id=b"c", result=b"r")
    store.apply(2, 2, [], command_id=b"c", result=b"r2")
    store.delete_range_state(1)
    assert store.applied_index(1) == 0
    assert store.command_result(1, b"c") is None
    assert store.command_result(2, b"c") == (2, b"r2")
    assert store.applied_index(2) == 2
    assert store.get_value(b"k", (1, 0)) == b"v"



def test_a_split_moves_the_outcomes_of_the_keys_that_move_and_copies_the_keyless(store):
    store.apply(1, 1, [], command_id=b"a", result=b"ra", command_key=b"a")
    store.apply(1, 2, [], command_id=b"m", result=b"rm", command_key=b"m")
    store.apply(1, 3, [], command_id=b"z", result=b"rz", command_key=b"z")
    store.apply(1, 4, [], command_id=b"old", result=b"r-old")          # key unknown (older format)
    store.apply(5, 9, [], command_id=b"m", result=b"already there", command_key=b"m")
    # [m, x) goes from range 1 to range 5: m moves (5 keeps what it has), z stays.
    assert store.split_command_results(1, 5, b"m", b"x") == (1, 1)
    assert store.command_result(1, b"m") is None and store.command_result(5, b"m") == (9, b"already there")
    assert store.command_result(1, b"a") == (1, b"ra") and store.command_result(5, b"a") is None
    assert store.command_result(1, b"z") == (3, b"rz") and store.command_result(5, b"z") is None
    assert store.command_result(1, b"old") == (4, b"r-old") and store.command_result(5, b"old") == (0, b"r-old")
    # An unbounded span, and a new range that already has its own outcomes (copy=False).
    assert store.split_command_results(1, 6, b"y", None, copy=False) == (0, 1)
    assert store.command_result(1, b"z") is None and store.command_result(6, b"z") is None


def test_snapshot_outcomes_keep_their_keys_and_rows_of_three_are_read_as_keyless(tmp_path):
    with MVCCStore(tmp_path / "src.db") as src, MVCCStore(tmp_path / "a.db") as a, MVCCStore(tmp_path / "b.db") as b:
        src.apply(9, 1, [(b"k1", (1, 0), b"v")], command_id=b"c1", result=b"r1", command_key=b"k1")
        src.apply(9, 2, [(b"k7", (2, 0), b"v")], command_id=b"c7", result=b"r7", command_key=b"k7")
        export = src.export_span(b"k", b"l", 10, range_id=9)
        chunks = list(export)
        results = list(export.results())
        assert sorted(r for chunk in results for r in chunk) == [(b"c1", 1, b"r1", b"k1"), (b"c7", 2, b"r7", b"k7")]
        old = [[row[:3] for row in chunk] + [(b"c0", 1, b"r0")] for chunk in results]   # the format before
        a.import_span(9, b"k", b"l", chunks, 2, 1, results=old)
        staging = str(tmp_path / "stage.db")
        MVCCStore.stage_span(staging, b"k", b"l", chunks, results=lambda: results)
        b.import_staged(9, b"k", b"l", staging, 2, 1)
        assert b.split_command_results(9, 10, b"k5", b"l") == (1, 1)         # c7 moves, c1 stays
        assert b.command_result(10, b"c7") == (0, b"r7") and b.command_result(9, b"c1") == (1, b"r1")
        assert a.split_command_results(9, 10, b"k5", b"l") == (3, 0)         # keyless: copied, kept
        assert a.command_result(9, b"c7") == (2, b"r7") and a.command_result(10, b"c0") == (0, b"r0")
        with pytest.raises(ValueError, match="command result"):
            a.import_span(9, b"k", b"l", [], 3, 1, results=[[(b"c", 1)]])
        with pytest.raises(TypeError, match="key"):
            a.import_span(9, b"k", b"l", [], 3, 1, results=[[(b"c", 1, b"r", "not bytes")]])
        assert a.command_result(9, b"c1") == (1, b"r1")                       # refused: nothing changed

# --- concurrency ---


def test_concurrent_applies_and_reads_from_many_threads(store):
    errors = []

    def worker(range_id):
        try:
            for i in range(1, 41):
                key = b"r%d/%03d" % (range_id, i)
                assert store.apply(range_id, i, [(key, (i, 0), b"v")])
                assert store.get_value(key, (i, 0)) == b"v"
                store.scan(b"r%d/" % range_id, b"r%d0" % range_id, (i, 0), 5)
        except BaseException as e:  # reported below, not swallowed
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in range(1, 5):
        assert store.applied_index(r) == 40
        assert len(store.scan(b"r%d/" % r, b"r%d0" % r, TS_MAX, 100)) == 40


# --- snapshots ---


def test_export_import_round_trip_into_a_second_store(tmp_path):
    batch = [(b"k%02d" % i, (i, i % 3), None if i % 5 == 0 else b"v%d" % i) for i in range(30)]
    batch += [(b"k07", (40, 0), b"newer"), (b"a-outside", (1, 0), b"x"), (b"z", (1, 0), b"z")]
    with MVCCStore(tmp_path / "src.db") as src, MVCCStore(tmp_path / "dst.db") as dst:
        src.apply(9, 12, batch, raft_term=2)
        dst.apply(9, 3, [(b"k50", (1, 0), b"stale"), (b"k07", (99, 0), b"stale"),
                         (b"zz", (1, 0), b"kept")], command_id=b"late", result=b"x")
        export = src.export_span(b"k", b"l", 4, range_id=9)
        assert (export.applied_index, export.applied_term) == (12, 2)
        chunks = list(export)
        assert chunks and all(1 <= len(c) <= 4 for c in chunks)

        dst.import_span(9, b"k", b"l", chunks, export.applied_index, export.applied_term)

        assert store_rows(dst, b"k", b"l") == store_rows(src, b"k", b"l")
        assert dst.applied_state(9) == (12, 2)
        assert dst.get_value(b"zz", TS_MAX) == b"kept"  # outside the span: untouched
        assert dst.get(b"k50", TS_MAX) is None
        for ts in [(0, 0), (7, 1), (7, 2), (40, 0), TS_MAX]:
            assert dst.scan(b"k", b"l", ts, 100) == src.scan(b"k", b"l", ts, 100)
        assert dst.command_result(9, b"late") == (3, b"x")  # below the snapshot index: true


def test_export_reads_one_snapshot_while_applies_continue(store):
    store.apply(1, 1, [(b"k%d" % i, (1, 0), b"old") for i in range(10)])
    with store.export_span(b"", None, 3, range_id=1) as export:
        first = next(export)
        newer = [(b"k%d" % i, (2, 0), b"new") for i in range(11)]
        store.apply(1, 2, newer)
        rest = [row for chunk in export for row in chunk]
    assert export.applied_index == 1
    assert sorted(first + rest) == [(b"k%d" % i, 1, 0, b"old") for i in range(10)]
    assert store.applied_index(1) == 2


def test_import_drops_command_results_above_the_snapshot_index(store):
    store.apply(1, 5, [(b"k", (1, 0), b"v")], command_id=b"c5", result=b"r")
    store.apply(1, 7, [], command_id=b"c7", result=b"r")
    store.import_span(1, b"", None, [[(b"k", 1, 0, b"v")]], applied_index=6, applied_term=1)
    assert store.command_result(1, b"c5") == (5, b"r")
    assert store.command_result(1, b"c7") is None
    assert store.applied_state(1) == (6, 1)


def test_import_of_a_row_outside_the_span_changes_nothing(store):
    store.apply(1, 5, [(b"k", (1, 0), b"v")])
    bad = [[(b"k", 2, 0, b"new")], [(b"z", 1, 0, b"outside")]]
    with pytest.raises(ValueError, match="outside the span"):
        store.import_span(1, b"k", b"l", bad, applied_index=9, applied_term=1)
    assert store.applied_state(1) == (5, 0)
    assert store_rows(store) == [(b"k", 1, 0, b"v")]


def test_import_is_undone_when_the_chunk_stream_fails(store):
    store.apply(1, 5, [(b"k", (1, 0), b"v")])

    def chunks():
        yield [(b"k", 2, 0, b"new")]
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        store.import_span(1, b"", None, chunks(), applied_index=9, applied_term=1)
    assert store.applied_index(1) == 5
    assert store_rows(store) == [(b"k", 1, 0, b"v")]


def test_approximate_span_bytes_sums_keys_and_values(store):
    store.apply(1, 1, [(b"ab", (1, 0), b"xyz"), (b"ab", (2, 0), None), (b"c", (1, 0), b"12345")])
    assert store.approximate_span_bytes(b"", None) == (2 + 3) + 2 + (1 + 5)
    assert store.approximate_span_bytes(b"a", b"b") == 7
    assert store.approximate_span_bytes(b"d", None) == 0


# --- the file ---


def test_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "node.db"
    MVCCStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == mvcc.SCHEMA_VERSION
    finally:
        conn.close()


def test_closed_store_raises_store_error_naming_the_path(tmp_path):
    path = tmp_path / "node.db"
    store = MVCCStore(path)
    store.close()
    store.close()  # idempotent
    for call in (
        lambda: store.get(b"k", (1, 0)),
        lambda: store.apply(1, 1, []),
        lambda: store.scan(b"", None, (1, 0), 1),
        lambda: store.export_span(b"", None, 1),
    ):
        with pytest.raises(StoreError, match="closed") as err:
            call()
        assert str(path) in str(err.value)


def test_corrupt_file_raises_store_error_naming_the_path(tmp_path):
    path = tmp_path / "node.db"
    path.write_bytes(b"this is not a database, just junk " * 200)
    with pytest.raises(StoreError) as err:
        MVCCStore(path)
    assert str(path) in str(err.value)


def test_unopenable_path_raises_store_error_naming_the_path(tmp_path):
    path = tmp_path / "missing-dir" / "node.db"
    with pytest.raises(StoreError) as err:
        MVCCStore(path)
    assert str(path) in str(err.value)


def test_a_future_schema_version_is_refused(tmp_path):
    path = tmp_path / "node.db"
    MVCCStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {mvcc.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version") as err:
        MVCCStore(path)
    assert str(path) in str(err.value)



_SCHEMA_1_COMMAND_RESULTS = """CREATE TABLE command_results (
    range_id INTEGER NOT NULL, command_id BLOB NOT NULL, raft_index INTEGER NOT NULL, result BLOB,
    PRIMARY KEY (range_id, command_id))"""


def test_a_store_of_schema_1_is_migrated_and_its_outcomes_count_as_keyless(tmp_path):
    # A file written before outcomes kept their key: version 1, command_results without `key`.
    path = tmp_path / "node.db"
    MVCCStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TABLE command_results")
        conn.execute(_SCHEMA_1_COMMAND_RESULTS)
        conn.execute("CREATE INDEX command_results_by_index ON command_results (range_id, raft_index)")
        conn.execute("INSERT INTO command_results VALUES (2, ?, 5, ?)", (b"c", b"r"))
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    with MVCCStore(path) as store:
        assert store.command_result(2, b"c") == (5, b"r")
        assert store.split_command_results(2, 7, b"m", None) == (1, 0)   # a keyless outcome: both keep it
        assert store.command_result(7, b"c") == (0, b"r") and store.command_result(2, b"c") == (5, b"r")
        store.apply(2, 6, [], command_id=b"d", result=b"r", command_key=b"k")
        assert store.command_result(2, b"d") == (6, b"r")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == mvcc.SCHEMA_VERSION == 2

def test_another_applications_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a raftstore MVCC store"):
        MVCCStore(path)


def test_bad_arguments_are_rejected_before_touching_the_file(store):
    with pytest.raises(TypeError):
        store.get("k", (1, 0))
    with pytest.raises(TypeError):
        store.get(b"k", 5)
    with pytest.raises(ValueError):
        store.get(b"k", (2**63, 0))
    with pytest.raises(ValueError):
        MVCCStore(store.path, synchronous="SOMETIMES")


def test_a_continuous_apply_refuses_an_index_that_skips_one_and_writes_nothing(store):
    assert store.apply(1, 1, [(b"a", (1, 0), b"1")], continuous=True)
    with pytest.raises(StoreError, match="index 3 does not follow the applied index 1"):
        store.apply(1, 3, [(b"b", (1, 0), b"2")], continuous=True)
    with pytest.raises(StoreError, match="entries 2..3 were never applied"):
        store.mark_applied(1, 4, continuous=True)
    assert store.applied_index(1) == 1 and store.get(b"b", (9, 0)) is None
    assert not store.apply(1, 1, [(b"a", (2, 0), b"again")], continuous=True)   # a replay: nothing
    assert store.mark_applied(1, 2, continuous=True) and store.applied_index(1) == 2
