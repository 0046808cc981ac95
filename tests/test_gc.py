"""Garbage collection of old versions (raftstore.kvserver.gc): the spans a leaseholder plans, the
`gc` command every replica applies alike, the threshold kept and carried in snapshots, reads
below it refused, and the leaseholder's pass end to end (on the two-store harness of
tests/test_closedts.py). Each rule is shown to catch a build without it."""

from __future__ import annotations

import io
import os

import pytest

from raftstore.kvserver.batch import BATCH_OP, BatchRequest, Delete, Header
from raftstore.kvserver.gc import BELOW_GC, plan_spans, removable
from raftstore.kvserver.replica import RangeReplica
from raftstore.kvserver.store import Store
from raftstore.raft.commands import Outcome
from test_closedts import LAG, R, SEC, T0, Pair

V = b"v"


def test_what_a_gc_removes_of_one_key():
    at = (10, 0)
    assert removable([(12, 0, V), (9, 0, V), (8, 0, V), (7, 0, None)], at) == 2    # 8 and 7; 9 is read at 10
    assert removable([(9, 0, None), (8, 0, V)], at) == 2                            # a tombstone too
    assert removable([(12, 0, V), (11, 0, V)], at) == 0 and removable([(10, 0, V)], at) == 0


def test_planned_spans_hold_at_most_a_batch_and_a_key_with_more_is_alone():
    rows = [(b"a", 5, 0, V), (b"a", 4, 0, V), (b"a", 3, 0, V),    # a: 2
            (b"b", 5, 0, V),                                        # b: 0
            (b"c", 5, 0, None),                                     # c: 1 (tombstone)
            (b"d", 20, 0, V), (b"d", 6, 0, V), (b"d", 5, 0, V), (b"d", 4, 0, V), (b"d", 3, 0, V), (b"d", 2, 0, V)]
    assert plan_spans(rows, (10, 0), 3) == [(b"a", b"d", 3), (b"d", None, 4)]
    assert plan_spans(rows, (10, 0), 100) == [(b"a", None, 7)]
    assert plan_spans(rows, (1, 0), 100) == []


def _pair_with_history(tmp_path) -> Pair:
    """Key a written at T0+10 s, +11 s, +12 s and deleted at +13 s; key b written at +10 s and
    +30 s; the follower has applied it all and the clock is at +40 s."""
    p = Pair(tmp_path)
    for i, (key, value) in enumerate([(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"a", b"3")]):
        p.wall = T0 + (10 + min(i, 2) + (i == 3)) * SEC
        p.write(key, value)
    p.wall = T0 + 13 * SEC
    got = []
    p.leader.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Delete(b"a"),)).to_wire(),
                                  lambda o, r: got.append((o, r)))
    assert got[0][0] is Outcome.COMMITTED, got
    p.wall = T0 + 30 * SEC
    p.write(b"b", b"2")
    p.wall = T0 + 40 * SEC
    p.replicate()
    return p


def _versions(store: Store) -> list:
    with store.mvcc.export_span(b"", b"\xff", 1000) as export:
        return [(k, w, l, v) for chunk in export for k, w, l, v in chunk if not k.startswith(b"\x00")]


def _gc(p: Pair, threshold, start=b"", end=None) -> dict:
    got = []
    p.leader.propose(R, "gc", {"threshold": list(threshold), "start": start, "end": end},
                     lambda o, r: got.append((o, r)))
    [(outcome, result)] = got
    assert outcome is Outcome.COMMITTED, result
    p.replicate()
    return result


@pytest.fixture
def history(tmp_path):
    p = _pair_with_history(tmp_path)
    yield p
    p.close()


@pytest.fixture
def collected(history):
    """The history, collected at T0 + 20 s on both replicas."""
    _gc(history, (T0 + 20 * SEC, 0))
    return history


def test_a_gc_command_removes_the_same_versions_on_every_replica_and_keeps_its_threshold(history):
    p = history
    before = _versions(p.leader)
    result = _gc(p, (T0 + 20 * SEC, 0))
    after = _versions(p.leader)
    assert after == _versions(p.follower)
    # a: all gone (its newest at or below the threshold is the tombstone); b: 1 stays for
    # reads at the threshold, 2 above it.
    assert sorted((k, v) for k, _, _, v in after) == [(b"b", b"1"), (b"b", b"2")]
    assert result["removed"] == len(before) - len(after) == 4
    for store in (p.leader, p.follower):
        rep = store.replicas[R]
        assert rep.gc_threshold == (T0 + 20 * SEC, 0)
        assert RangeReplica(store.mvcc, R).gc_threshold == (T0 + 20 * SEC, 0)   # kept on disk
    _gc(p, (T0 + 15 * SEC, 0))                      # never lowered
    assert p.follower.replicas[R].gc_threshold == (T0 + 20 * SEC, 0)


def test_a_read_below_the_threshold_is_refused_by_name_at_the_leaseholder_and_at_a_follower(collected):
    p = collected
    p.wall = T0 + 50 * SEC
    p.write(b"c", b"1")
    p.replicate()
    for store in (p.leader, p.follower):
        outcome, result = p.read(b"b", (T0 + 15 * SEC, 0), store=store)
        assert outcome is Outcome.REJECTED and result.code == BELOW_GC and "GC threshold" in str(result)
        outcome, result = p.read(b"b", (T0 + 20 * SEC, 0), store=store)
        assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == b"1"


def test_broken_a_follower_that_reads_below_the_threshold_answers_what_is_gone(collected, monkeypatch):
    monkeypatch.setattr(RangeReplica, "read_checked", staticmethod(
        lambda request, desc, reader, ts, uncertain_to=None: RangeReplica.read_at(request, desc, reader, ts,
                                                                                  uncertain_to)))
    outcome, result = collected.read(b"a", (T0 + 11 * SEC + 1, 0))
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] is None   # it was b"1"
    assert collected.expected(b"a", (T0 + 11 * SEC + 1, 0)) == b"1"


def test_a_snapshot_carries_the_threshold(collected, tmp_path):
    from raftstore.storage.mvcc import MVCCStore
    rep = collected.leader.replicas[R]
    buf = io.BytesIO()
    rep.snapshot_writer(rep.applied_index())(buf)
    other = MVCCStore(os.path.join(str(tmp_path), "n9.sqlite"))
    try:
        fresh = RangeReplica(other, R)
        buf.seek(0)
        fresh.read_snapshot(buf, rep.applied_index())
        assert fresh.gc_threshold == (T0 + 20 * SEC, 0)
        assert RangeReplica(other, R).gc_threshold == (T0 + 20 * SEC, 0)
    finally:
        other.close()


def test_the_leaseholders_pass_removes_what_its_ttl_allows_never_above_what_it_closed(history):
    p = history
    p.leader.cfg.gc_ttl_s = 15.0
    p.leader.gc_pass()                               # threshold = now - 15 s = T0 + 25 s
    while p.leader.gc_planned:
        p.leader._propose_gc(*p.leader.gc_planned.popleft())
    p.replicate()
    threshold = p.leader.replicas[R].gc_threshold
    assert threshold == (T0 + 25 * SEC, 0) and threshold <= p.leader.closed_floor(R)
    assert p.follower.replicas[R].gc_threshold == threshold
    assert _versions(p.leader) == _versions(p.follower)
    assert sorted((k, v) for k, _, _, v in _versions(p.leader)) == [(b"b", b"1"), (b"b", b"2")]
    assert p.leader.gc_stats["removed"] == 4
    p.leader.cfg.gc_ttl_s = 1.0                      # now - 1 s is past what it closed (now - 3 s)
    p.leader.gc_pass()
    while p.leader.gc_planned:
        p.leader._propose_gc(*p.leader.gc_planned.popleft())
    assert p.leader.replicas[R].gc_threshold <= p.leader.closed_floor(R) < (p.wall - LAG + 1, 0)
