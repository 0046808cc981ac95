"""Snapshots that do not stall the node loop: written from a pinned SQLite read snapshot on
another thread, received ones staged off the loop and switched in with one short transaction.
Behaviour only (events, never timing)."""

from __future__ import annotations

import io
import os
import threading

import pytest

from raftstore.kvserver.ranges import RangeDescriptor
from raftstore.kvserver.replica import LATEST, RangeReplica, SnapshotRefused
from raftstore.sim.split_world import SplitSimConfig, SplitWorld, run_split_seed
from raftstore.storage.mvcc import MVCCStore, StoreError

TS_MAX = (2**63 - 1, 2**63 - 1)


def rows(store, start=b"", end=None):
    return [r for chunk in store.export_span(start, end, 100) for r in chunk]


# --- MVCCStore: stage off the loop, switch in one transaction ------------------------------------

def test_staged_import_gives_what_import_span_gives(tmp_path):
    batch = [(b"k%02d" % i, (i, i % 3), None if i % 5 == 0 else b"v%d" % i) for i in range(30)]
    with MVCCStore(tmp_path / "src.db") as src, MVCCStore(tmp_path / "a.db") as a, MVCCStore(tmp_path / "b.db") as b:
        src.apply(9, 12, batch, raft_term=2)
        for dst in (a, b):
            dst.apply(9, 3, [(b"k50", (1, 0), b"stale"), (b"zz", (1, 0), b"kept")], command_id=b"late", result=b"x")
            dst.apply(9, 20, [], command_id=b"future", result=b"y")
        chunks = list(src.export_span(b"k", b"l", 4))
        extra = [(b"desc", (1, 0), b"d")]
        a.import_span(9, b"k", b"l", chunks, 12, 2, extra_writes=extra)
        staging = str(tmp_path / "stage.db")
        assert MVCCStore.stage_span(staging, b"k", b"l", chunks) == 30
        b.import_staged(9, b"k", b"l", staging, 12, 2, extra_writes=extra)
        assert rows(a) == rows(b)
        assert a.applied_state(9) == b.applied_state(9) == (12, 2)
        assert b.command_result(9, b"late") == (3, b"x") and b.command_result(9, b"future") is None
        assert not os.path.exists(staging)


def test_staging_a_row_outside_the_span_fails_and_leaves_no_file(tmp_path):
    staging = str(tmp_path / "stage.db")
    with pytest.raises(ValueError, match="outside the span"):
        MVCCStore.stage_span(staging, b"k", b"l", [[(b"k1", 1, 0, b"v")], [(b"z", 1, 0, b"x")]])
    assert not os.path.exists(staging)


def test_a_failed_switch_changes_nothing(tmp_path):
    with MVCCStore(tmp_path / "s.db") as store:
        store.apply(1, 5, [(b"k", (1, 0), b"v")])
        before = rows(store)
        staging = str(tmp_path / "stage.db")
        MVCCStore.stage_span(staging, b"", None, [[(b"k", 2, 0, b"new")]])
        import sqlite3
        with sqlite3.connect(staging) as conn:
            conn.execute("DROP TABLE versions")   # the INSERT ... SELECT fails after the DELETE ran
        with pytest.raises(StoreError):
            store.import_staged(1, b"", None, staging, 9, 1)
        assert rows(store) == before and store.applied_state(1) == (5, 0)


def test_a_switch_inside_a_batch_commits_the_batch_and_goes_on(tmp_path):
    with MVCCStore(tmp_path / "s.db") as store:
        staging = str(tmp_path / "stage.db")
        MVCCStore.stage_span(staging, b"k", b"l", [[(b"k1", 1, 0, b"snap")]])
        with store.batch():
            store.apply(2, 1, [(b"other", (1, 0), b"x")])
            store.import_staged(1, b"k", b"l", staging, 7, 1)
            store.apply(2, 2, [(b"other2", (1, 0), b"y")])
        assert store.get_value(b"k1", TS_MAX) == b"snap" and store.applied_index(1) == 7
        assert store.applied_index(2) == 2 and store.get_value(b"other2", TS_MAX) == b"y"


# --- RangeReplica: the writer is pinned on the loop, written on a thread ----------------------------

def test_a_snapshot_written_on_a_thread_holds_exactly_the_pinned_state(tmp_path):
    desc = RangeDescriptor(2, b"k", None, 0, (1, 2, 3))
    with MVCCStore(tmp_path / "src.db") as src, MVCCStore(tmp_path / "dst.db") as dst:
        src.apply(2, 10, [(b"k%05d" % i, (1, 0), b"old") for i in range(2500)])
        replica = RangeReplica(src, 2)
        replica.desc = desc
        write = replica.snapshot_writer(10)            # on the loop: pins the state at index 10
        src.apply(2, 11, [(b"k%05d" % i, (2, 0), b"new") for i in range(2600)])   # the loop goes on
        buf = io.BytesIO()
        writer_ran_on = []
        t = threading.Thread(target=lambda: (writer_ran_on.append(threading.current_thread()), write(buf)))
        t.start()
        t.join()
        assert writer_ran_on and writer_ran_on[0] is not threading.main_thread()

        target = RangeReplica(dst, 2)
        buf.seek(0)
        staged = target.stage_snapshot(buf, 10)            # off the loop
        assert dst.applied_index(2) == 0 and rows(dst) == []   # staging changes nothing served
        target.install_staged(staged, 10)                     # the switch
        assert dst.applied_index(2) == 10 and target.desc == desc
        assert dst.scan(b"k", None, LATEST, 10_000) == [(b"k%05d" % i, b"old", (1, 0)) for i in range(2500)]


def test_a_staged_snapshot_that_overlaps_a_held_range_is_refused_before_anything_changes(tmp_path):
    desc = RangeDescriptor(3, b"k", b"m", 1, (1, 2, 3))
    with MVCCStore(tmp_path / "src.db") as src, MVCCStore(tmp_path / "dst.db") as dst:
        src.apply(3, 4, [(b"k1", (1, 0), b"v")])
        replica = RangeReplica(src, 3)
        replica.desc = desc
        buf = io.BytesIO()
        replica.write_snapshot(buf, 4)
        buf.seek(0)
        target = RangeReplica(dst, 3, can_install=lambda d: False)
        staged = target.stage_snapshot(buf, 4)
        with pytest.raises(SnapshotRefused):
            target.check_staged(staged)
        with pytest.raises(SnapshotRefused):
            target.install_staged(staged, 4)
        assert dst.applied_index(3) == 0 and rows(dst) == []
        target.discard_staged(staged)
        assert not os.path.exists(staged.path)
        wrong = RangeReplica(dst, 4)
        buf.seek(0)
        with pytest.raises(SnapshotRefused, match="sent to r4"):
            wrong.stage_snapshot(buf, 4)


# --- whole Stores in the simulator, snapshot jobs on real threads held by an event ----------------

def test_while_a_snapshot_job_is_held_on_its_thread_every_group_keeps_committing(tmp_path):
    world = SplitWorld(SplitSimConfig(seed=3, crash_point="none", writes=400, range_bytes_max=60_000), str(tmp_path))
    gate = threading.Event()
    threads: list[threading.Thread] = []
    held: dict = {}

    def submit(nid, job):
        # Held: the jobs from the first one submitted once a split has made a second data range
        # (r1 is the meta range), so that other ranges take writes while it waits.
        hold = not gate.is_set() and len(world.stores[nid].groups) >= 3
        started = threading.Event()

        def body():
            started.set()
            if hold:
                gate.wait(120)
            job()
        t = threading.Thread(target=body, daemon=True)
        t.start()
        started.wait(30)
        if not hold:
            t.join()          # before the first held job or after the check: keep the simulation deterministic
            return
        threads.append(t)
        if "all" not in held:
            # the first snapshot job is blocked on its thread; look again a simulated second later
            held["all"] = {(n, rid): g.raftLastApplied for n, st in world.stores.items() for rid, g in st.groups.items()}
            held["acked"] = len(world.acked)
            world.push(world.clock.t + 1.0, "call", second_check)

    world._submit_job = submit

    def second_check():
        assert threads and all(t.is_alive() for t in threads)   # every job still blocked
        busy = [(n, rid) for n, st in world.stores.items() for rid, g in st.groups.items() if g.snapshot_busy()]
        assert busy
        now = {(n, rid): g.raftLastApplied for n, st in world.stores.items() for rid, g in st.groups.items()}
        # the groups whose snapshot is blocked kept applying, and so did the others
        assert any(now[k] > held["all"].get(k, 0) for k in busy), (busy, now)
        assert any(now[k] > v for k, v in held["all"].items() if k not in busy)
        assert len(world.acked) > held["acked"]
        held["checked"] = True
        gate.set()
        for t in list(threads):
            t.join(60)

    summary = world.run()                              # also checks nothing was lost or doubled
    assert held.get("checked") and gate.is_set()
    assert sum(g.snapshots_created for st in world.stores.values() for g in st.groups.values()) > 0
    assert summary["acked"] > 200


@pytest.mark.parametrize("seed", [5, 29, 31])
def test_a_node_down_during_splits_catches_up_by_staged_snapshots(seed):
    summary = run_split_seed(SplitSimConfig(seed=seed, lagging=True))
    assert summary["acked"] > 200, summary


def _replica_pair(tmp_path, *, can_install=None):
    src, dst = MVCCStore(tmp_path / "src.db"), MVCCStore(tmp_path / "dst.db")
    desc = RangeDescriptor(2, b"k", b"l", 0, (1, 2, 3))
    leader = RangeReplica(src, 2)
    leader.desc = desc
    return src, dst, leader, RangeReplica(dst, 2, can_install=can_install)


def _snapshot_of(replica, index):
    buf = io.BytesIO()
    replica.write_snapshot(buf, index)
    buf.seek(0)
    return buf


def test_a_replica_a_little_behind_switches_in_only_the_difference(tmp_path):
    src, dst, leader, follower = _replica_pair(tmp_path)
    with src, dst:
        common = [(b"k%05d" % i, (1, 0), b"v%d" % i) for i in range(3000)]
        src.apply(2, 10, common)
        dst.apply(2, 10, common)
        dst.apply(2, 11, [(b"k-diverged", (5, 0), b"follower only")])   # not in the snapshot: goes
        src.apply(2, 12, [(b"k00007", (2, 0), b"newer"), (b"k-new", (2, 0), b"n")])
        staged = follower.stage_snapshot(_snapshot_of(leader, 12), 12)
        assert staged.basis == 11
        follower.install_staged(staged, 12)
        assert rows(dst, b"k", b"l") == rows(src, b"k", b"l") and dst.applied_index(2) == 12


def test_the_difference_is_not_used_when_the_range_moved_on_or_another_range_holds_the_span(tmp_path):
    src, dst, leader, follower = _replica_pair(tmp_path)
    with src, dst:
        src.apply(2, 10, [(b"k1", (1, 0), b"a"), (b"k2", (1, 0), b"b")])
        dst.apply(2, 3, [(b"k1", (1, 0), b"a")])
        staged = follower.stage_snapshot(_snapshot_of(leader, 10), 10)
        assert staged.basis == 3
        dst.apply(2, 4, [(b"k3", (1, 0), b"applied after the diff")])    # the basis is stale now
        assert dst.import_staged(2, b"k", b"l", staged.path, 10, 0, basis=staged.basis) is False
        assert rows(dst, b"k", b"l") == rows(src, b"k", b"l")
        # another local range's descriptor overlaps the span: no difference is computed
        from raftstore.kvserver.ranges import local_desc_key
        dst.write_local([(local_desc_key(7), (0, 0), RangeDescriptor(7, b"a", b"kz", 0, (1, 2, 3)).encode())])
        staged = follower.stage_snapshot(_snapshot_of(leader, 10), 10)
        assert staged.basis is None
        follower.discard_staged(staged)
