"""Consistency checks without processes: the checksum, the verdict, and the checker's waits.

The checksum is computed the way a replica computes it (a SQLite read snapshot of a real
MVCCStore, raftstore.storage.mvcc.export_span); the checkers talk through a fake link, on a manual clock.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftstore import constants
from raftstore.kvserver.consistency import (CHECKSUM_OP, CONSISTENT, INCOMPLETE, INCONSISTENT, Checksum, ChecksumRegistry,
                                   ConsistencyChecker, range_checksum, verdict)
from raftstore.kvserver.ranges import FIRST_DATA_RANGE_ID, RangeDescriptor, bootstrap_descriptors, local_desc_key
from raftstore.kvserver.replica import RangeReplica, desc_ts
from raftstore.kvserver.store import Store, StoreConfig
from raftstore.node.peer import CHECKSUM_REPLY, CHECKSUM_REQUEST, _checksum_frame_problem
from raftstore.raft.commands import Command, Outcome
from raftstore.storage.mvcc import MVCCStore

SPAN = (b"\x02", None)

versions = st.lists(
    st.tuples(st.binary(min_size=1, max_size=6).map(lambda k: b"\x02" + k),
              st.tuples(st.integers(0, 2**40), st.integers(0, 5)),
              st.none() | st.binary(max_size=12)),
    max_size=40, unique_by=lambda v: (v[0], v[1]))


def _store_checksum(rows, applied_index: int = 7, *, chunk_rows: int = 3, batches: int = 1) -> bytes:
    """Write `rows` into a fresh store in the order given (in `batches` transactions) and checksum
    the span as a replica does: from a read snapshot of the store."""
    with tempfile.TemporaryDirectory() as d:
        store = MVCCStore(os.path.join(d, "s.sqlite"))
        try:
            step = max(1, -(-len(rows) // batches))
            for i in range(0, len(rows), step):
                store.write_local(rows[i:i + step])
            store.mark_applied(FIRST_DATA_RANGE_ID, applied_index)
            with store.export_span(*SPAN, chunk_rows, range_id=FIRST_DATA_RANGE_ID) as export:
                return range_checksum(FIRST_DATA_RANGE_ID, *SPAN, export.applied_index, export)
        finally:
            store.close()


# --- the checksum ---------------------------------------------------------------------------------


@given(rows=versions, seed=st.integers(0, 2**32), batches=st.integers(1, 4), chunk_rows=st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_the_same_versions_written_in_any_order_have_the_same_checksum(rows, seed, batches, chunk_rows):
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    assert _store_checksum(rows) == _store_checksum(shuffled, batches=batches, chunk_rows=chunk_rows)


@given(rows=versions.filter(bool), data=st.data())
@settings(max_examples=80, deadline=None)
def test_any_one_byte_different_changes_the_checksum(rows, data):
    i = data.draw(st.integers(0, len(rows) - 1), label="row")
    key, ts, value = rows[i]
    fields = ["key"] + (["value"] if value else []) + ["wall", "logical", "tombstone"]
    what = data.draw(st.sampled_from(fields), label="change")
    if what == "key":
        pos = data.draw(st.integers(1, len(key) - 1), label="byte")   # the \x02 keeps it in the span
        key = key[:pos] + bytes([key[pos] ^ data.draw(st.integers(1, 255))]) + key[pos + 1:]
    elif what == "value":
        pos = data.draw(st.integers(0, len(value) - 1), label="byte")
        value = value[:pos] + bytes([value[pos] ^ data.draw(st.integers(1, 255))]) + value[pos + 1:]
    elif what == "wall":
        ts = (ts[0] ^ 1, ts[1])
    elif what == "logical":
        ts = (ts[0], ts[1] ^ 1)
    else:
        value = b"" if value is None else None     # a tombstone is not an empty value
    changed = rows[:i] + [(key, ts, value)] + rows[i + 1:]
    assert _store_checksum(rows) != _store_checksum(changed)


def test_the_applied_index_and_the_span_are_part_of_the_checksum():
    rows = [(b"\x02a", (1, 0), b"x")]
    assert _store_checksum(rows, applied_index=7) != _store_checksum(rows, applied_index=8)
    assert range_checksum(2, b"\x02", None, 7, [rows]) != range_checksum(2, b"\x02", b"\x03", 7, [rows])


# --- the verdict ------------------------------------------------------------------------------------


A, B = b"\xaa" * 32, b"\xbb" * 32


def test_replicas_that_agree_are_consistent():
    status, detail, differing = verdict(9, [1, 2, 3], {1: Checksum(A), 2: Checksum(A), 3: Checksum(A)})
    assert (status, differing) == (CONSISTENT, [])
    assert "3 replicas agree at index 9" in detail


def test_the_replica_that_differs_from_the_majority_is_named():
    status, detail, differing = verdict(9, [1, 2, 3], {1: Checksum(A), 2: Checksum(B), 3: Checksum(A)})
    assert (status, differing) == (INCONSISTENT, [2])
    assert detail.startswith("n2 differs from n1, n3 at index 9")
    assert A.hex()[:16] in detail and B.hex()[:16] in detail


def test_without_a_majority_every_replica_that_reported_is_named():
    status, detail, differing = verdict(9, [1, 2, 3], {1: Checksum(A), 2: Checksum(B), 3: Checksum(None, "n3 down")})
    assert (status, differing) == (INCONSISTENT, [1, 2])
    assert "no majority" in detail and "n3 down" in detail


def test_a_replica_that_did_not_report_makes_the_check_incomplete_not_consistent():
    status, detail, differing = verdict(9, [1, 2, 3], {1: Checksum(A), 2: Checksum(A),
                                                       3: Checksum(None, "n3 did not report within 5 s")})
    assert (status, differing) == (INCOMPLETE, [])
    assert detail.startswith("n3 did not report within 5 s; n1, n2 agree at index 9")


# --- the checker: three nodes on a fake link, a manual clock -----------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Cluster3:
    """Three checkers whose frames go through `outbox` until `deliver()`; each node's replica of
    every range is at `applied[node][range]`."""

    def __init__(self, clock, desc):
        self.clock, self.desc = clock, desc
        self.outbox: list[tuple] = []
        self.applied = {n: {desc.range_id: 0} for n in (1, 2, 3)}
        self.linked = {1, 2, 3}
        self.registries = {n: ChecksumRegistry() for n in (1, 2, 3)}
        self.checkers = {n: ConsistencyChecker(
            n, self.registries[n],
            send_request=lambda peer, rid, index, n=n: self._send(n, peer, [CHECKSUM_REQUEST, rid, index]),
            send_reply=lambda peer, rid, index, answer, n=n: self._send(
                n, peer, [CHECKSUM_REPLY, rid, index, answer.checksum, answer.error]),
            applied_index=lambda rid, n=n: self.applied[n].get(rid),
            clock=clock) for n in (1, 2, 3)}

    def _send(self, src, dst, frame):
        if dst not in self.linked or src not in self.linked:
            return False
        assert _checksum_frame_problem(frame) is None, frame   # what the peer link would check
        self.outbox.append((src, dst, frame))
        return True

    def deliver(self):
        while self.outbox:
            src, dst, frame = self.outbox.pop(0)
            if frame[0] == CHECKSUM_REQUEST:
                self.checkers[dst].on_request(src, frame[1], frame[2])
            else:
                self.checkers[dst].on_reply(src, frame[1], frame[2], Checksum(frame[3], frame[4]))

    def apply_check(self, node, index, checksum):
        """Node `node` applies the check at `index` and hashes it later (a thread)."""
        self.applied[node][self.desc.range_id] = index
        self.registries[node].computing(self.desc.range_id, index)
        self.registries[node].post(self.desc.range_id, index, Checksum(checksum))

    def tick(self, node):
        self.registries[node].collect()
        self.checkers[node].sweep()

    def check(self, index=50):
        """n1 runs a check; its command commits at `index` on n1 (the proposer applies first)."""
        results = []

        def propose(rid, op, args, callback):
            assert (rid, op) == (self.desc.range_id, CHECKSUM_OP)
            self.apply_check(1, index, A)
            callback(Outcome.COMMITTED, {"index": index})
        self.checkers[1].check([self.desc], propose, results.extend)
        return results


@pytest.fixture
def three():
    return Cluster3(Clock(), RangeDescriptor(5, b"ka", b"kz", 1, (1, 2, 3)))


def test_three_replicas_with_the_same_checksum_are_consistent(three):
    results = three.check()
    three.apply_check(2, 50, A)
    three.apply_check(3, 50, A)
    for n in (1, 2, 3):
        three.tick(n)
    three.deliver()
    assert [r["status"] for r in results] == [CONSISTENT]
    assert results[0]["index"] == 50 and results[0]["replicas"] == [[n, A.hex(), None] for n in (1, 2, 3)]
    assert three.checkers[1].last[5]["status"] == CONSISTENT


def test_a_different_replica_is_reported_and_logged_with_the_range_the_index_and_every_checksum(three, caplog):
    results = three.check()
    three.apply_check(2, 50, A)
    three.apply_check(3, 50, B)
    with caplog.at_level(logging.ERROR, logger="raftstore.kvserver.consistency"):
        for n in (1, 2, 3):
            three.tick(n)
        three.deliver()
    assert results[0]["status"] == INCONSISTENT and results[0]["differing"] == [3]
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "r5[" in line and "index 50" in line
    assert all(s in line for s in ("n1 " + A.hex(), "n2 " + A.hex(), "n3 " + B.hex()))


def test_a_replica_behind_answers_once_it_has_applied_the_index(three):
    results = three.check()
    three.tick(1)
    three.deliver()                       # n2 and n3 are asked before they applied index 50
    assert results == [] and three.outbox == []
    three.clock.now += constants.consistency_report_timeout_s / 2
    three.apply_check(2, 50, A)
    three.apply_check(3, 50, A)
    three.tick(2)
    three.tick(3)
    three.deliver()
    assert [r["status"] for r in results] == [CONSISTENT]


def test_a_replica_that_never_reports_is_named_after_the_bounded_wait(three):
    results = three.check()
    three.apply_check(2, 50, A)
    for n in (1, 2):
        three.tick(n)
    three.deliver()                       # n3 was asked but stays behind (index 0)
    assert results == []
    three.clock.now += constants.consistency_report_timeout_s + 0.01
    three.tick(1)                          # the checker gives up first ...
    [result] = results
    assert result["status"] == INCOMPLETE
    assert "n3 did not report within %g s" % constants.consistency_report_timeout_s in result["detail"]
    assert "n1, n2 agree at index 50" in result["detail"]
    three.tick(3)                          # ... and n3 stops waiting too, saying where it is
    assert three.checkers[3]._asks == []
    [(src, dst, frame)] = three.outbox
    assert (src, dst) == (3, 1) and "had not applied index 50 of r5" in frame[4] and "(at 0)" in frame[4]
    three.deliver()                        # a late answer changes nothing
    assert len(results) == 1


def test_a_replica_without_a_link_is_reported_at_once(three):
    three.linked.discard(3)
    results = three.check()
    three.apply_check(2, 50, A)
    for n in (1, 2):
        three.tick(n)
    three.deliver()
    assert results[0]["status"] == INCOMPLETE and "n1 has no link to n3" in results[0]["detail"]


def test_a_replica_past_the_index_without_its_checksum_says_so_instead_of_waiting(three):
    results = three.check()
    three.applied[3][5] = 80              # caught up by a snapshot past index 50, or restarted
    three.apply_check(2, 50, A)
    for n in (1, 2, 3):
        three.tick(n)
    three.deliver()
    assert results[0]["status"] == INCOMPLETE
    assert "n3 is past index 50 of r5 (at 80) without a checksum of it" in results[0]["detail"]


def test_a_check_whose_command_does_not_commit_is_incomplete(three):
    results = []
    three.checkers[1].check([three.desc], lambda rid, op, args, cb: cb(Outcome.NOT_COMMITTED, "no leader"), results.extend)
    assert results[0]["status"] == INCOMPLETE and "no leader" in results[0]["detail"]
    assert results[0]["index"] is None


def test_the_registry_keeps_only_the_newest_checksums():
    registry = ChecksumRegistry(kept_max=2)
    for index in (1, 2, 3):
        registry.computing(7, index)
        registry.post(7, index, Checksum(A))
        assert registry.is_computing(7, index)    # until collected on the loop
    registry.collect()
    assert registry.get(7, 1) is None and registry.get(7, 3) == Checksum(A)
    assert not registry.is_computing(7, 3)


# --- the replica and the store: the checksum is of exactly the state at the index --------------------


def _put(replica, index, key, value):
    return replica.apply(index, Command(index.to_bytes(16, "big"), "put", {"key": key, "value": value, "ts": [index, 0]}))


def test_a_checksum_covers_exactly_the_state_at_its_index_though_it_is_computed_later(tmp_path):
    mvcc = MVCCStore(os.path.join(tmp_path, "store.sqlite"))
    mvcc.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in bootstrap_descriptors([1, 2, 3])])
    jobs = []
    store = Store(StoreConfig(node_id=1, replicas=[1, 2, 3], raft_dir=str(tmp_path)), mvcc,
                  open_journal=None, transport_class=None, snapshot_executor=jobs.append)
    replica = RangeReplica(mvcc, FIRST_DATA_RANGE_ID, on_checksum=store._on_checksum)
    with replica.batch():                 # one tick's applies, as a RaftGroup runs them
        _put(replica, 1, b"ka", b"1")
        _put(replica, 2, b"kb", b"2")
        assert replica.apply(3, Command(b"c" * 16, CHECKSUM_OP, {"ts": [3, 0]})) == {"index": 3}
        _put(replica, 4, b"ka", b"changed after the check")
        _put(replica, 5, b"kc", b"3")
    [job] = jobs
    job()                                 # the hashing runs after later applies committed
    store.checksums.collect()
    expected = range_checksum(FIRST_DATA_RANGE_ID, b"\x02", None, 3,
                              [[(b"ka", 1, 0, b"1"), (b"kb", 2, 0, b"2")]])
    assert store.checksums.get(FIRST_DATA_RANGE_ID, 3) == Checksum(expected)
    mvcc.close()


# --- the peer link's frames --------------------------------------------------------------------------


@pytest.mark.parametrize("frame, problem", [
    ([CHECKSUM_REQUEST, 5], "2 fields"),
    ([CHECKSUM_REQUEST, 5, -1], "non-negative"),
    ([CHECKSUM_REQUEST, "5", 1], "non-negative"),
    ([CHECKSUM_REQUEST, 5, True], "non-negative"),
    ([CHECKSUM_REPLY, 5, 1, b"short", None], "32 bytes"),
    ([CHECKSUM_REPLY, 5, 1, None, 7], "error must be a str"),
    ([CHECKSUM_REPLY, 5, 1, None, "x" * (constants.consistency_error_chars_max + 1)], "error must be a str"),
    ([CHECKSUM_REPLY, 5, 1, None, None], "exactly one"),
    ([CHECKSUM_REPLY, 5, 1, A, "both"], "exactly one"),
])
def test_malformed_checksum_frames_are_named(frame, problem):
    assert problem in _checksum_frame_problem(frame)


def test_well_formed_checksum_frames_pass():
    assert _checksum_frame_problem([CHECKSUM_REQUEST, 5, 1]) is None
    assert _checksum_frame_problem([CHECKSUM_REPLY, 5, 1, A, None]) is None
    assert _checksum_frame_problem([CHECKSUM_REPLY, 5, 1, None, "n3 is behind"]) is None


def test_the_peer_link_delivers_checksum_frames_and_drops_a_peer_that_sends_a_malformed_one():
    import socket
    import time

    from raftstore.localcluster import free_ports
    from raftstore.node.peer import PeerNetwork

    events: dict[int, list] = {1: [], 2: []}
    nets = {}
    ports = free_ports(2)
    for node_id, port in zip((1, 2), ports):
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        addr = "127.0.0.1:%d" % port
        log = events[node_id]
        nets[node_id] = PeerNetwork(
            listen_sock=sock, secret=b"s" * 32, node_id=node_id,
            hello=lambda node_id=node_id, addr=addr: {"node_id": node_id, "region": "r", "addr": addr},
            on_hello=lambda hello: None, on_raft=lambda *a: None, on_peer_up=lambda peer: None,
            on_peer_down=lambda peer, log=log: log.append(("down", peer)), on_reject=lambda reason: None,
            on_checksum_request=lambda *a, log=log: log.append(("request",) + a),
            on_checksum_reply=lambda *a, log=log: log.append(("reply",) + a))

    def pump(until, what):
        deadline = time.monotonic() + 10
        while not until():
            assert time.monotonic() < deadline, "timed out waiting for " + what
            for net in nets.values():
                net.poll(0.01)
                net.flush()
    try:
        nets[1].dial("127.0.0.1:%d" % ports[1])
        pump(lambda: 2 in nets[1].peers and 1 in nets[2].peers, "the link")
        assert nets[1].send(2, [CHECKSUM_REQUEST, 5, 7])
        assert nets[2].send(1, [CHECKSUM_REPLY, 5, 7, A, None])
        pump(lambda: events[1] and events[2], "both frames")
        assert events[2] == [("request", 1, 5, 7)] and events[1] == [("reply", 2, 5, 7, A, None)]
        assert nets[1].send(2, [CHECKSUM_REPLY, 5, 7, b"not 32 bytes", None])
        pump(lambda: ("down", 1) in events[2], "the malformed frame's sender to be dropped")
        assert events[2] == [("request", 1, 5, 7), ("down", 1)]
    finally:
        for net in nets.values():
            net.close()
