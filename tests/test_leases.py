"""Range leases (raftstore.kvserver.lease) and the reads a leaseholder serves without a consensus
round (kvserver.store.Store._serve_read), each rule alone: a stand-in Raft group, real replicas on
real SQLite, a clock the test moves. tests/test_leases_cluster.py runs them on real nodes.

Each rule here is also shown to catch a build without it (the `broken` tests)."""

from __future__ import annotations

import os

import msgpack
import pytest

from raftstore import constants
from raftstore.kvserver import lease as lease_mod
from raftstore.kvserver.batch import BATCH_OP, BatchRequest, Get, Header, Put, Scan
from raftstore.kvserver.lease import NOT_LEASEHOLDER, READ_UNCERTAIN, Lease, TimestampCache
from raftstore.kvserver.ranges import FIRST_DATA_RANGE_ID, bootstrap_descriptors, local_desc_key
from raftstore.kvserver.replica import RangeReplica, desc_ts
from raftstore.kvserver.store import Store, StoreConfig
from raftstore.raft.commands import Command, CommandError, Outcome, is_not_leader
from raftstore.storage.mvcc import MVCCStore
from fake_group import FakeGroup

R = FIRST_DATA_RANGE_ID
OFFSET = constants.max_clock_offset_ns
SEC = 1_000_000_000
T0 = 1_000 * SEC       # the test clock's start (HLC wall, ns)


# --- the lease itself ---------------------------------------------------------------------------

def test_a_lease_is_usable_only_before_its_stasis_period():
    lease = Lease(1, 1, (T0, 0), (T0 + 3 * SEC, 0))
    assert lease.usable((T0, 0), OFFSET)
    assert lease.usable((T0 + 3 * SEC - OFFSET - 1, 0), OFFSET)
    assert not lease.usable((T0 + 3 * SEC - OFFSET, 0), OFFSET)       # stasis: another clock may be past it
    assert not lease.expired((T0 + 3 * SEC, 0)) and lease.expired((T0 + 3 * SEC, 1))


@pytest.mark.parametrize("wire, why", [
    ([1, 1], "must be a map"),
    ({"seq": 0, "holder": 1, "start": [1, 0], "expiration": [2, 0]}, "seq"),
    ({"seq": 1, "holder": True, "start": [1, 0], "expiration": [2, 0]}, "holder"),
    ({"seq": 1, "holder": 1, "start": [1], "expiration": [2, 0]}, "start"),
    ({"seq": 1, "holder": 1, "start": [2, 0], "expiration": [2, 0]}, "expire after it starts"),
])
def test_a_malformed_lease_is_refused_by_name(wire, why):
    with pytest.raises(CommandError, match=why):
        Lease.from_wire(wire)


def test_what_may_follow_a_lease():
    prev = Lease(4, 1, (T0, 0), (T0 + SEC, 0))
    assert Lease(5, 2, (T0 + SEC, 1), (T0 + 3 * SEC, 0)).follows(prev) is None            # a new one
    assert Lease(4, 1, (T0, 0), (T0 + 2 * SEC, 0)).follows(prev) is None                  # an extension
    assert "keeps its holder" in Lease(4, 2, (T0, 0), (T0 + 2 * SEC, 0)).follows(prev)
    assert "expire later" in Lease(4, 1, (T0, 0), (T0 + SEC, 0)).follows(prev)
    assert "cannot follow" in Lease(6, 1, (T0, 0), (T0 + 2 * SEC, 0)).follows(prev)
    assert "seq 1" in Lease(2, 1, (T0, 0), (T0 + SEC, 0)).follows(None)


def test_the_timestamp_cache_answers_the_highest_read_of_a_key_or_a_span_over_it():
    cache = TimestampCache((10, 0))
    cache.record_key(b"a", (50, 0))
    cache.record_span(b"c", b"f", (70, 0))
    cache.record_span(b"x", None, (60, 0))
    assert cache.max_for([b"a"]) == (50, 0)
    assert cache.max_for([b"b"]) == (10, 0)
    assert cache.max_for([b"b", b"d"]) == (70, 0)
    assert cache.max_for([b"f"]) == (10, 0)                 # the span's end is not in it
    assert cache.max_for([b"zz"]) == (60, 0)                # a span to the keyspace's end
    assert cache.max_all() == (70, 0)


def test_a_full_timestamp_cache_folds_entries_into_its_low_water_mark_never_below_them():
    cache = TimestampCache((0, 0), entries_max=8)
    for i in range(20):
        cache.record_key(b"k%02d" % i, (100 + i, 0))
    assert len(cache) <= 8
    for i in range(20):   # whatever was folded, no answer is below what was recorded
        assert cache.max_for([b"k%02d" % i]) >= (100 + i, 0)


# --- the lease in the log (RangeReplica) ------------------------------------------------------------

@pytest.fixture
def mvcc(tmp_path):
    store = MVCCStore(os.path.join(tmp_path, "store.sqlite"))
    store.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in bootstrap_descriptors([1, 2, 3])])
    yield store
    store.close()


def _apply(replica: RangeReplica, op: str, args: dict, cid: bytes):
    index = replica.applied_index() + 1
    with replica.batch():
        try:
            return True, replica.apply(index, Command(cid, op, args))
        except CommandError as exc:
            replica.record_failed(index, Command(cid, op, args), exc.rejection().to_wire())
            return False, exc.rejection()


def _lease_args(prev: Lease | None, new: Lease) -> dict:
    return {"prev_seq": prev.seq if prev else 0, "prev_expiration": list(prev.expiration) if prev else None,
            "lease": new.to_wire(), "ts": [T0, 0]}


def test_apply_takes_a_lease_only_over_the_one_it_names_and_keeps_it_across_a_restart(mvcc):
    replica = RangeReplica(mvcc, R)
    first = Lease(1, 1, (T0, 0), (T0 + 3 * SEC, 0))
    assert _apply(replica, "lease", _lease_args(None, first), b"a" * 16)[0]
    assert replica.lease == first
    # Two nodes asking to follow lease 1: the first in the log wins, the second is refused.
    mine = Lease(2, 2, (T0 + 4 * SEC, 0), (T0 + 7 * SEC, 0))
    theirs = Lease(2, 3, (T0 + 4 * SEC, 0), (T0 + 7 * SEC, 0))
    assert _apply(replica, "lease", _lease_args(first, mine), b"b" * 16)[0]
    ok, refused = _apply(replica, "lease", _lease_args(first, theirs), b"c" * 16)
    assert not ok and refused.code == NOT_LEASEHOLDER and replica.lease == mine
    # An extension raced by a takeover: the takeover names the old expiration and is refused.
    extended = Lease(2, 2, mine.start, (T0 + 9 * SEC, 0))
    assert _apply(replica, "lease", _lease_args(mine, extended), b"d" * 16)[0]
    ok, _ = _apply(replica, "lease", _lease_args(mine, Lease(3, 3, (T0 + 8 * SEC, 0), (T0 + 10 * SEC, 0))), b"e" * 16)
    assert not ok and replica.lease == extended
    assert RangeReplica(mvcc, R).lease == extended                 # kept with the applied state


def test_a_command_evaluated_under_a_lease_that_moved_writes_nothing_and_may_be_sent_again(mvcc):
    replica = RangeReplica(mvcc, R)
    first = Lease(1, 1, (T0, 0), (T0 + 3 * SEC, 0))
    _apply(replica, "lease", _lease_args(None, first), b"a" * 16)
    _apply(replica, "lease", _lease_args(first, Lease(2, 2, (T0 + 4 * SEC, 0), (T0 + 6 * SEC, 0))), b"b" * 16)
    write = dict(BatchRequest(Header(), (Put(b"ka", b"1"),)).to_wire(), ts=[T0, 0], lease_seq=1)
    ok, refused = _apply(replica, BATCH_OP, write, b"w" * 16)
    assert not ok and refused.code == NOT_LEASEHOLDER and mvcc.get(b"ka", (1 << 62, 0)) is None
    assert replica.result_of(b"w" * 16) == (False, None)           # no outcome saved: its id may come again
    ok, answer = _apply(replica, BATCH_OP, dict(write, lease_seq=2), b"w" * 16)
    assert ok and answer["ok"] and mvcc.get(b"ka", (1 << 62, 0))[0] == b"1"


def test_a_write_evaluated_under_another_nodes_lease_of_the_same_seq_writes_nothing(mvcc):
    # Node 2 asked for lease 2 and proposed a write behind it; node 1's lease 2 won the log.
    replica = RangeReplica(mvcc, R)
    lease1, lease2 = Lease(1, 1, (T0, 0), (T0 + 10 * SEC, 0)), Lease(2, 1, (T0 + 11 * SEC, 0), (T0 + 20 * SEC, 0))
    with replica.batch():
        replica.apply(1, Command(b"1" * 16, "lease", _lease_args(None, lease1)))
        replica.apply(2, Command(b"2" * 16, "lease", _lease_args(lease1, lease2)))
    args = dict(BatchRequest(Header(), (Put(b"ka", b"theirs"),)).to_wire(), ts=[T0 + 5 * SEC, 0], lease_seq=2,
                lease_holder=2, closed=[T0 + 4 * SEC, 0])
    with replica.batch(), pytest.raises(CommandError, match=NOT_LEASEHOLDER):
        replica.apply(3, Command(b"3" * 16, BATCH_OP, args))
    assert mvcc.get_value(b"ka", (T0 + 60 * SEC, 0)) is None and replica.closed == (0, 0)
    mine = dict(args, lease_holder=1)
    with replica.batch():
        replica.apply(3, Command(b"4" * 16, BATCH_OP, mine))
    assert mvcc.get_value(b"ka", (T0 + 60 * SEC, 0)) == b"theirs" and replica.closed == (T0 + 4 * SEC, 0)


def test_a_snapshot_carries_the_lease(mvcc, tmp_path):
    replica = RangeReplica(mvcc, R)
    lease = Lease(1, 2, (T0, 0), (T0 + 3 * SEC, 0))
    _apply(replica, "lease", _lease_args(None, lease), b"a" * 16)
    path = os.path.join(tmp_path, "snap")
    with open(path, "wb") as f:
        replica.write_snapshot(f, replica.applied_index())
    other = MVCCStore(os.path.join(tmp_path, "other.sqlite"))
    try:
        target = RangeReplica(other, R)
        with open(path, "rb") as f:
            target.read_snapshot(f, replica.applied_index())
        assert target.lease == lease and RangeReplica(other, R).lease == lease
    finally:
        other.close()


def test_a_snapshot_written_before_leases_still_installs(mvcc, tmp_path):
    """The old format: the descriptor, then the rows (no lease record)."""
    replica = RangeReplica(mvcc, R)
    _apply(replica, BATCH_OP, dict(BatchRequest(Header(), (Put(b"ka", b"1"),)).to_wire(), ts=[T0, 0]), b"w" * 16)
    body = replica.desc.encode()
    rows = msgpack.packb([[b"ka", T0, 0, b"1"]], use_bin_type=True)
    path = os.path.join(tmp_path, "old")
    with open(path, "wb") as f:
        f.write(len(body).to_bytes(4, "little") + body + len(rows).to_bytes(4, "little") + rows + bytes(4))
    other = MVCCStore(os.path.join(tmp_path, "other.sqlite"))
    try:
        target = RangeReplica(other, R)
        with open(path, "rb") as f:
            target.read_snapshot(f, 5)
        assert target.lease is None and other.get(b"ka", (1 << 62, 0))[0] == b"1"
    finally:
        other.close()


# --- the leaseholder's reads (Store._serve_read) ----------------------------------------------------

class Harness:
    """Node 1 leads range R and holds its lease; the test moves the HLC (`wall`)."""

    def __init__(self, tmp_path) -> None:
        self.mvcc = MVCCStore(os.path.join(tmp_path, "store.sqlite"))
        descs = bootstrap_descriptors([1, 2, 3])
        self.mvcc.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in descs])
        self.wall, self.t = T0, 100.0
        self.forwarded: list = []
        self.store = Store(StoreConfig(node_id=1, replicas=[1, 2, 3], raft_dir=str(tmp_path)), self.mvcc,
                           open_journal=None, transport_class=None, clock=lambda: self.t,
                           now_ts=lambda: [self.wall, 0],
                           propose_at_leader=lambda rid, op, args, cb: self.forwarded.append((rid, op, args)))
        for d in descs:
            self.store.replicas[d.range_id] = RangeReplica(self.mvcc, d.range_id, on_lease=self.store._on_lease)
            self.store.groups[d.range_id] = FakeGroup()
        self.replica = self.store.replicas[R]
        self.lease = Lease(1, 1, (T0, 0), (T0 + 10 * SEC, 0))
        with self.replica.batch():
            self.replica.apply(1, Command(b"L" * 16, "lease", _lease_args(None, self.lease)))
        self.answers: list = []

    def group(self) -> FakeGroup:
        return self.store.groups[R]

    def write(self, key: bytes, value: bytes, ts) -> None:
        """A write applied at exactly `ts` (as another holder's, or a gateway's, would be)."""
        args = dict(BatchRequest(Header(), (Put(key, value),)).to_wire(), ts=list(ts), lease_seq=self.replica.lease.seq)
        with self.replica.batch():
            self.replica.apply(self.replica.applied_index() + 1, Command(os.urandom(16), BATCH_OP, args))

    def read(self, *ops, **header) -> None:
        self.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(**header), ops).to_wire(),
                                        lambda o, r: self.answers.append((o, r)))

    def apply_lease_command(self) -> list[tuple[str, dict]]:
        """The lease upkeep's tick: the one command it proposes is applied and committed, and
        the requests that waited for the lease run. Returns [(op, args)] of that command."""
        self.store._lease_upkeep(R, self.group(), (self.wall, 0))
        [(op, args, callback, _)] = self.group().proposed
        with self.replica.batch():
            callback(Outcome.COMMITTED, self.replica.apply(self.replica.applied_index() + 1, Command(b"E" * 16, op, args)))
        self.store._run_awaiting_lead(self.t)
        self.store.run_deferred_reads()
        return [(op, args)]


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.mvcc.close()


def test_the_leaseholder_reads_from_its_own_store_at_its_clock_with_no_proposal(h):
    h.write(b"ka", b"1", (T0 + 5, 0))
    h.wall = T0 + 100
    h.read(Get(b"ka"), Scan(b"kb"))
    [(outcome, result)] = h.answers
    assert outcome is Outcome.COMMITTED and h.group().proposed == []
    assert result["responses"][0]["value"] == b"1" and result["read_ts"] == [T0 + 100, 0]
    assert result["rounds"] == 0 and result["served_by"] == 1


def test_a_read_sees_a_write_applied_above_the_leaseholders_clock(h):
    """An earlier holder's clock ran ahead: its write is above ours; a read picks no lower."""
    h.write(b"ka", b"1", (T0 + SEC // 10, 0))
    h.read(Get(b"ka"))
    [(outcome, result)] = h.answers
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == b"1"


def _write_ts_after_read(h) -> tuple:
    """A read at a timestamp ahead of the leaseholder's clock (a gateway whose clock runs ahead),
    then a write of the same key evaluated here: the write's proposed timestamp."""
    ahead = (T0 + 300 * 1_000_000, 0)
    h.read(Get(b"ka"), read_ts=ahead)
    assert h.answers[-1][0] is Outcome.COMMITTED
    h.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Put(b"ka", b"2"),)).to_wire(),
                                 lambda o, r: None, command_id=b"p" * 16)
    [(op, args, _, _)] = h.group().proposed
    return ahead, tuple(args["ts"])


def test_a_write_after_a_read_goes_above_the_read_so_two_reads_at_one_timestamp_agree(h):
    ahead, ts = _write_ts_after_read(h)
    assert ts > ahead


def test_broken_a_build_without_the_timestamp_cache_writes_below_a_served_read(h, monkeypatch):
    monkeypatch.setattr(TimestampCache, "max_for", lambda self, keys: self.low_water)
    ahead, ts = _write_ts_after_read(h)
    assert ts < ahead          # the check above fails on this build


def _read_below_a_fresh_write(h) -> tuple:
    """A gateway whose clock is 300 ms behind reads at its own time a key written 100 ms ago."""
    h.wall = T0 + SEC
    h.write(b"ka", b"new", (T0 + SEC - 100 * 1_000_000, 0))
    behind = (T0 + SEC - 300 * 1_000_000, 0)
    h.read(Get(b"ka"), read_ts=behind, uncertainty_limit=(behind[0] + OFFSET, 0))
    return h.answers[-1]


def test_a_read_that_finds_a_version_within_its_uncertainty_interval_restarts_above_it(h):
    outcome, result = _read_below_a_fresh_write(h)
    assert outcome is Outcome.REJECTED and result.code == READ_UNCERTAIN
    assert result.details["ts"] == [T0 + SEC - 100 * 1_000_000, 0]
    h.read(Get(b"ka"), read_ts=tuple(result.details["ts"]), uncertainty_limit=(T0 + SEC - 300 * 1_000_000 + OFFSET, 0))
    outcome, result = h.answers[-1]
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == b"new"


def test_broken_a_build_without_uncertainty_misses_an_acknowledged_write(h, monkeypatch):
    real = RangeReplica.read_at
    monkeypatch.setattr(RangeReplica, "read_at", staticmethod(
        lambda request, desc, reader, ts, uncertain_to=None: real(request, desc, reader, ts)))
    outcome, result = _read_below_a_fresh_write(h)
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] is None   # the stale read


def test_a_scan_restarts_for_a_deleted_key_within_its_uncertainty_interval(h):
    h.write(b"kb", b"1", (T0 + 10, 0))
    h.wall = T0 + SEC
    args = dict(BatchRequest(Header(), (Put(b"kc", b"2"),)).to_wire(), ts=[T0 + SEC - 1000, 0], lease_seq=1)
    with h.replica.batch():
        h.replica.apply(h.replica.applied_index() + 1, Command(b"q" * 16, BATCH_OP, args))
    h.read(Scan(b"ka", b"kz"), read_ts=(T0 + SEC - 5000, 0), uncertainty_limit=(T0 + 2 * SEC, 0))
    outcome, result = h.answers[-1]
    assert outcome is Outcome.REJECTED and result.details["ts"] == [T0 + SEC - 1000, 0]


def test_a_read_waits_out_a_write_in_flight_on_its_key(h):
    h.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Put(b"ka", b"2"),)).to_wire(),
                                 lambda o, r: None, command_id=b"p" * 16)
    [(_, args, callback, cid)] = h.group().proposed
    h.wall += 1000                     # the read comes after the write was evaluated: above it
    h.read(Get(b"ka"))
    assert h.answers == []             # latched: the write may land at or below the read
    with h.replica.batch():
        outcome = h.replica.apply(h.replica.applied_index() + 1, Command(cid, BATCH_OP, args))
        callback(Outcome.COMMITTED, outcome)   # the latch is released inside the apply transaction
        assert h.answers == []          # ... and the read waits for its commit
    h.store.run_deferred_reads()
    [(outcome, result)] = h.answers
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == b"2"


def test_a_lease_in_its_stasis_period_serves_nothing_and_is_extended(h):
    h.wall = T0 + 10 * SEC - OFFSET       # now + max_offset reaches the expiration
    h.store.lease_used[R] = h.t
    h.read(Get(b"ka"))
    assert h.answers == [] and R in h.store.lease_wanted
    [(op, args)] = h.apply_lease_command()
    assert op == "lease" and args["lease"]["seq"] == 1 and args["prev_expiration"] == [T0 + 10 * SEC, 0]
    [(outcome, _)] = h.answers
    assert outcome is Outcome.COMMITTED


def test_broken_a_build_that_ignores_the_stasis_serves_past_it(h, monkeypatch):
    monkeypatch.setattr(Lease, "usable", lambda self, now, max_offset_ns: now < self.expiration)
    h.wall = T0 + 10 * SEC - OFFSET
    h.read(Get(b"ka"))
    assert h.answers and h.answers[0][0] is Outcome.COMMITTED   # the stasis test above fails on it


def test_a_holder_whose_clock_turns_unfit_serves_nothing_and_hands_its_lead_and_lease_away(h):
    h.wall = T0 + 100
    h.store.set_clock_unfit(True)
    assert h.store.serving_lease(R) is None
    h.store.set_clock_unfit(False)                      # back within bounds before it moved: it serves on
    assert h.store.serving_lease(R) == h.lease
    h.store.set_clock_unfit(True)
    h.read(Get(b"ka"))
    assert h.answers == []                              # waits (bounded) for a lease it may serve
    h.store._lease_upkeep(R, h.group(), (h.wall, 0))
    assert h.group().offered == [None] and h.group().proposed == []   # the lead is offered, nothing extended
    h.group().leader, h.group().leader_id_ = False, "2"                 # a follower took it
    h.store._lease_upkeep(R, h.group(), (h.wall, 0))
    [(rid, op, args)] = h.forwarded
    assert (rid, op, args["lease"]["holder"], args["lease"]["seq"]) == (R, "lease", 2, 2)


def test_broken_a_build_that_ignores_an_unfit_clock_keeps_serving(h, monkeypatch):
    monkeypatch.setattr(Store, "set_clock_unfit", lambda self, unfit: None)
    h.wall = T0 + 100
    h.store.set_clock_unfit(True)
    assert h.store.serving_lease(R) is not None         # the test above fails on it


def test_a_holder_that_lost_the_lead_hands_the_lease_to_the_leader_above_all_it_served(h):
    h.read(Get(b"ka"), read_ts=(T0 + 400 * 1_000_000, 0))
    h.group().leader, h.group().leader_id_ = False, "2"
    h.read(Get(b"ka"))
    assert is_not_leader(h.answers[-1][1])
    h.store._lease_upkeep(R, h.group(), (h.wall, 0))
    [(rid, op, args)] = h.forwarded
    assert (rid, op) == (R, "lease") and args["prev_seq"] == 1
    new = Lease.from_wire(args["lease"])
    assert new.holder == 2 and new.seq == 2 and new.start > (T0 + 400 * 1_000_000, 0)
    h.group().leader, h.group().leader_id_ = True, "1"           # even leading again, it serves nothing under it
    assert h.store.serving_lease(R) is None


def test_a_write_on_its_holders_lapsed_lease_extends_it_with_no_command_of_its_own(h):
    h.wall = T0 + 20 * SEC            # the lease ran out while the range idled
    h.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Put(b"ka", b"2"),)).to_wire(),
                                 lambda o, r: h.answers.append((o, r)), command_id=b"p" * 16)
    [(op, args, callback, cid)] = h.group().proposed                 # no consensus round waited for
    assert op == BATCH_OP and args["lease_seq"] == 1 and args["lease_until"] == [h.wall + h.store.lease_ns, 0]
    with h.replica.batch():
        callback(Outcome.COMMITTED, h.replica.apply(h.replica.applied_index() + 1, Command(cid, op, args)))
    assert h.replica.lease.seq == 1 and h.replica.lease.expiration == (h.wall + h.store.lease_ns, 0)
    assert RangeReplica(h.mvcc, R).lease == h.replica.lease          # kept with the write's apply
    assert h.store.serving_lease(R) is not None and h.answers[0][0] is Outcome.COMMITTED


def test_a_write_on_an_expired_lease_of_another_node_rides_right_behind_the_new_lease_command(h):
    other = Lease(2, 2, (T0 + 11 * SEC, 0), (T0 + 12 * SEC, 0))
    with h.replica.batch():
        h.replica.apply(h.replica.applied_index() + 1, Command(b"O" * 16, "lease", _lease_args(h.lease, other)))
    h.wall = T0 + 20 * SEC
    h.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Put(b"ka", b"2"),)).to_wire(),
                                 lambda o, r: h.answers.append((o, r)), command_id=b"p" * 16)
    (op, args, _, _), (wop, wargs, _, _) = h.group().proposed
    assert op == "lease" and wop == BATCH_OP
    new = Lease.from_wire(args["lease"])
    assert new.seq == wargs["lease_seq"] == 3 and new.holder == 1 and tuple(wargs["ts"]) >= new.start
    # Were the lease command refused, apply would refuse the write too (its lease is not the range's).


def test_a_read_on_a_lapsed_lease_waits_for_the_lease_to_apply(h):
    h.wall = T0 + 20 * SEC
    h.read(Get(b"ka"))
    assert h.answers == []
    h.apply_lease_command()
    [(outcome, _)] = h.answers
    assert outcome is Outcome.COMMITTED


def test_a_read_past_the_clock_by_more_than_the_max_offset_is_refused(h):
    h.read(Get(b"ka"), read_ts=(T0 + OFFSET + 1, 0))
    outcome, result = h.answers[-1]
    assert outcome is Outcome.REJECTED and result.code == lease_mod.READ_TOO_NEW


def _read_racing_an_apply(tmp_path) -> list:
    """A read served on a reader of its own (a separate SQLite connection, as on a node) while a
    write of its key is applied in the open apply transaction: what it answered."""
    h = Harness(tmp_path)
    reader = h.mvcc.reader()
    h.store.read_executor = lambda job, points=None: job(reader)()
    try:
        h.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Put(b"ka", b"2"),)).to_wire(),
                                     lambda o, r: None, command_id=b"p" * 16)
        [(_, args, callback, cid)] = h.group().proposed
        h.wall += 1000
        h.read(Get(b"ka"))
        with h.replica.batch():
            callback(Outcome.COMMITTED, h.replica.apply(h.replica.applied_index() + 1, Command(cid, BATCH_OP, args)))
        h.store.run_deferred_reads()
        return h.answers
    finally:
        reader.close()
        h.mvcc.close()


def test_a_read_on_another_connection_runs_only_once_the_write_it_waited_for_is_committed(tmp_path):
    [(outcome, result)] = _read_racing_an_apply(tmp_path)
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == b"2"


def test_broken_a_build_that_reads_before_the_apply_commits_misses_the_write(tmp_path, monkeypatch):
    monkeypatch.setattr(Store, "_when_committed", lambda self, run: run())
    [(outcome, result)] = _read_racing_an_apply(tmp_path)
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] is None


# --- what a holder served bounds every later lease of its own (a review found both) ---------------

SERVED = (T0 + 400 * 1_000_000, 0)   # a read at a gateway's timestamp 400 ms ahead of the holder's clock


def test_a_hand_over_that_never_applies_still_keeps_later_leases_above_what_was_served(h):
    """The holder serves a read at SERVED, loses the lead and hands the lease over; the transfer
    is lost (its target failed). Leading again 50 ms later, its new lease and the write riding
    behind it go above SERVED, not at its clock."""
    h.read(Get(b"kx"), read_ts=SERVED, uncertainty_limit=(SERVED[0] + 1, 0))
    assert h.answers[-1][0] is Outcome.COMMITTED
    h.group().leader, h.group().leader_id_ = False, "2"
    h.store._lease_upkeep(R, h.group(), (h.wall, 0))
    assert [op for _, op, _ in h.forwarded] == ["lease"]          # lost on the way
    h.group().leader, h.group().leader_id_ = True, "1"
    h.wall = T0 + 50 * 1_000_000
    h.store.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(), (Put(b"kx", b"new"),)).to_wire(),
                                 lambda o, r: None, command_id=b"w" * 16)
    lease_cmd = next(args for op, args, _, _ in h.group().proposed if op == "lease")
    write = next(args for op, args, _, _ in h.group().proposed if op == BATCH_OP)
    assert Lease.from_wire(lease_cmd["lease"]).start > SERVED and tuple(write["ts"]) > SERVED


def test_a_split_applied_after_the_hand_over_starts_the_new_ranges_next_lease_above_what_was_served(h):
    """The holder serves a read at SERVED and hands the lease over; a split proposed before
    then applies after it. The new range inherits the parent's lease (this node's, seq 1) but
    not its timestamp cache: it serves nothing under it, and its hand-over starts above SERVED."""
    right = R + 5
    h.replica.on_split = h.store._on_split
    h.store._init_range = lambda desc: None

    def start_group(rid: int) -> FakeGroup:   # as Store._start_group: the replica reads its split-written state
        h.store.replicas[rid] = RangeReplica(h.mvcc, rid, on_lease=h.store._on_lease)
        return h.store.groups.setdefault(rid, FakeGroup(leader=False, leader_id="2"))
    h.store._start_group = start_group
    h.read(Get(b"kx"), read_ts=SERVED, uncertainty_limit=(SERVED[0] + 1, 0))
    h.group().leader, h.group().leader_id_ = False, "2"
    h.store._lease_upkeep(R, h.group(), (h.wall, 0))
    split = {"split_key": b"kp", "new_range_id": right, "generation": 0, "ts": [T0, 0]}
    with h.replica.batch():
        h.replica.apply(h.replica.applied_index() + 1, Command(b"S" * 16, "split", split))
    assert h.store.replicas[right].lease.holder == 1 and h.store.serving_lease(right) is None
    h.wall = T0 + 10 * 1_000_000
    h.store._lease_upkeep(right, h.store.groups[right], (h.wall, 0))
    rid, op, args = h.forwarded[-1]
    new = Lease.from_wire(args["lease"])
    assert (rid, op, new.holder, new.seq) == (right, "lease", 2, 2) and new.start > SERVED


def test_a_lease_a_snapshot_brings_is_the_one_served_under_with_a_cache_above_what_was_served(h):
    """A snapshot that installs a new lease of this node's (seq 2) while the cache of seq 1 is
    still in memory: the store hears of it as of a lease applied from the log, and serves under
    it only with a new cache that starts above what it served under seq 1."""
    h.read(Get(b"kx"), read_ts=SERVED, uncertainty_limit=(SERVED[0] + 1, 0))
    h.replica._take_lease(Lease(2, 1, (T0 + 1, 0), (T0 + 10 * SEC, 0)))
    assert h.store.tscache_seq[R] == 2 and h.store.tscache[R].max_for([b"ky"]) > SERVED
    assert h.store.serving_lease(R) == h.replica.lease
