"""Evaluation at the leader (kvserver.store.Store.evaluate_and_propose), with a stand-in Raft
group so each rule is seen alone: a key outside the range is refused before anything is
proposed, with the descriptor of the range that holds it; a retried command id gets its saved or
in-flight answer, never a fresh verdict; a new leader evaluates nothing before it has applied
its term's first entry. Real replicas on real SQLite; tests/test_lost_update_cluster.py runs the
whole path on real nodes."""

from __future__ import annotations

import os

import pytest

from raftstore import constants
from raftstore.kvserver.batch import verdict
from raftstore.kvserver.lease import Lease
from raftstore.kvserver.ranges import (FIRST_DATA_RANGE_ID, RANGE_KEY_MISMATCH, RangeDescriptor, bootstrap_descriptors,
                                       local_desc_key, mismatch_descriptors)
from raftstore.kvserver.replica import RangeReplica, desc_ts
from raftstore.kvserver.store import Store, StoreConfig
from raftstore.raft.commands import Command, Outcome, is_not_leader
from raftstore.storage.mvcc import MVCCStore
from fake_group import FakeGroup

R = FIRST_DATA_RANGE_ID


class Harness:
    def __init__(self, tmp_path, descs=None) -> None:
        self.mvcc = MVCCStore(os.path.join(tmp_path, "store.sqlite"))
        descs = descs or bootstrap_descriptors([1, 2, 3])
        self.mvcc.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in descs])
        self.t = 100.0
        self.store = Store(StoreConfig(node_id=1, replicas=[1, 2, 3], raft_dir=str(tmp_path)), self.mvcc,
                           open_journal=None, transport_class=None, clock=lambda: self.t)
        for d in descs:
            self.store.replicas[d.range_id] = RangeReplica(self.mvcc, d.range_id)
            self.store.groups[d.range_id] = FakeGroup()
            # Node 1 holds every range's lease (kvserver.lease; tests/test_leases.py covers them).
            lease = Lease(1, 1, (0, 0), (1 << 62, 0))
            self.store.replicas[d.range_id].lease = lease
            self.store._on_lease(d.range_id, lease)
        self.answers: list[tuple[Outcome, object]] = []

    def evaluate(self, op, args, cid, range_id=R):
        self.store.evaluate_and_propose(range_id, op, args, lambda o, r: self.answers.append((o, r)), command_id=cid)

    def group(self, range_id=R) -> FakeGroup:
        return self.store.groups[range_id]


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.mvcc.close()


def test_a_retried_command_that_applied_gets_its_saved_answer_without_a_proposal(h):
    cid = b"x" * 16
    replica = h.store.replicas[R]
    with replica.batch():
        first = replica.apply(1, Command(cid, "cas", {"key": b"ka", "expected": None, "new": b"1", "ts": [5, 0]}))
    assert first["swapped"] is True
    # The retry's condition (key absent) is false now; a fresh verdict would say "not swapped".
    h.evaluate("cas", {"key": b"ka", "expected": None, "new": b"1"}, cid)
    [(outcome, answer)] = h.answers
    assert outcome is Outcome.COMMITTED and verdict(answer) == first and h.group().proposed == []
    assert answer["rounds"] == 0 and answer["served_by"] == 1        # no consensus round for it now


def test_a_retry_that_arrives_while_the_first_attempt_is_in_flight_gets_the_same_answer(h):
    cid = b"y" * 16
    h.evaluate("put", {"key": b"kb", "value": b"1"}, cid)
    h.evaluate("put", {"key": b"kb", "value": b"1"}, cid)
    assert len(h.group().proposed) == 1 and h.answers == []
    _, _, callback, _ = h.group().proposed[0]
    callback(Outcome.COMMITTED, {"ts": [9, 0]})
    assert h.answers == [(Outcome.COMMITTED, {"ts": [9, 0], "served_by": 1, "rounds": 1, "quorum_rtt_ms": None})] * 2
    assert h.store.in_flight == {} and len(h.store.latches) == 0


def test_a_new_leader_evaluates_nothing_before_it_applied_its_terms_first_entry(h):
    h.group().ready = False
    h.evaluate("put", {"key": b"kc", "value": b"1"}, b"z" * 16)
    assert h.group().proposed == [] and h.answers == []
    h.store._run_awaiting_lead(h.t)                       # still not ready: it waits on
    assert h.group().proposed == [] and h.answers == []
    h.group().ready = True
    h.store._run_awaiting_lead(h.t)
    assert [p[0] for p in h.group().proposed] == ["put"] and h.store.awaiting_lead == {}


def test_a_replica_that_stops_leading_while_a_command_waits_answers_not_leader_with_a_hint(h):
    h.group().ready = False
    h.evaluate("put", {"key": b"kc", "value": b"1"}, b"z" * 16)
    h.group().leader, h.group().leader_id_ = False, "3"
    h.store._run_awaiting_lead(h.t)
    [(outcome, result)] = h.answers
    assert outcome is Outcome.NOT_COMMITTED and is_not_leader(result) and result.details == {"leader": 3}
    assert h.group().proposed == []


def test_a_lead_that_never_becomes_ready_answers_not_leader_after_leader_wait(h):
    h.group().ready = False
    h.evaluate("put", {"key": b"kc", "value": b"1"}, b"z" * 16)
    h.t += constants.leader_wait_s - 0.01
    h.store._run_awaiting_lead(h.t)
    assert h.answers == []
    h.t += 0.02
    h.store._run_awaiting_lead(h.t)
    [(outcome, result)] = h.answers
    assert outcome is Outcome.NOT_COMMITTED and is_not_leader(result) and h.store.awaiting_lead == {}


def test_a_key_outside_the_range_is_refused_before_proposing_with_the_range_that_holds_it(tmp_path):
    left = RangeDescriptor(R, b"\x02", b"km", 1, (1, 2, 3))
    right = RangeDescriptor(3, b"km", None, 0, (1, 2, 3))
    boot = [d for d in bootstrap_descriptors([1, 2, 3]) if d.range_id != R]
    h = Harness(tmp_path, boot + [left, right])
    try:
        h.evaluate("put", {"key": b"kz", "value": b"1"}, b"w" * 16)
        h.evaluate("scan", {"start": b"kz", "end": None, "limit": 10}, b"v" * 16)
        assert h.group(R).proposed == []
        for outcome, rejection in h.answers:
            assert outcome is Outcome.REJECTED and rejection.code == RANGE_KEY_MISMATCH
            assert mismatch_descriptors(rejection.details) == [left, right]
        h.evaluate("put", {"key": b"kb", "value": b"1"}, b"u" * 16)   # inside: proposed as before
        assert [p[0] for p in h.group(R).proposed] == ["put"]
    finally:
        h.mvcc.close()


def test_a_command_whose_replica_lost_the_lead_while_it_waited_for_its_latch_is_not_proposed(h):
    h.evaluate("put", {"key": b"kd", "value": b"1"}, b"a" * 16)          # holds kd's latch
    h.evaluate("put", {"key": b"kd", "value": b"2"}, b"b" * 16)          # waits for it
    assert len(h.group().proposed) == 1
    h.group().leader, h.group().leader_id_ = False, "2"
    _, _, first_done, _ = h.group().proposed[0]
    first_done(Outcome.AMBIGUOUS, "the lead moved")                       # releases the latch
    assert len(h.group().proposed) == 1                                   # the second is not proposed here
    assert (Outcome.AMBIGUOUS, "the lead moved") in h.answers and len(h.answers) == 2
    [(outcome, result)] = [a for a in h.answers if a[0] is not Outcome.AMBIGUOUS]
    assert outcome is Outcome.NOT_COMMITTED and is_not_leader(result) and result.details == {"leader": 2}


def test_a_split_asked_of_the_leader_is_split_with_its_own_descriptor(h):
    from raftstore.kvserver.ranges import META_RANGE_ID
    from raftstore.kvserver.store import ADMIN_SPLIT
    start = h.store.replicas[R].desc.start
    h.evaluate(ADMIN_SPLIT, {"key": start}, None)
    assert h.answers == [(Outcome.COMMITTED, {"already": True, "range_id": R})]
    h.evaluate(ADMIN_SPLIT, {"key": b"km"}, None)
    [(op, _, allocated, _)] = h.group(META_RANGE_ID).proposed         # first a range id from meta
    assert op == "alloc_range_id"
    allocated(Outcome.COMMITTED, {"range_id": 9})
    [(op, args, _, _)] = h.group(R).proposed                          # then the split, at this replica's generation
    assert op == "split" and args["split_key"] == b"km" and args["new_range_id"] == 9
    assert args["generation"] == h.store.replicas[R].desc.generation


# --- locking reads (kvserver.batch.GetForUpdate) ------------------------------------------------------

def _batch(ops, **header):
    from raftstore.kvserver.batch import BatchRequest, Header
    return BatchRequest(Header(**header), ops).to_wire()


def _write_row(h, key: bytes, value: bytes) -> None:
    replica = h.store.replicas[R]
    with replica.batch():
        replica.apply(1, Command(b"w" * 16, "put", {"key": key, "value": value, "ts": [5, 0]}))


def test_a_locking_read_is_answered_from_the_applied_state_without_a_proposal_and_holds_the_latch(h):
    from raftstore.kvserver.batch import ConditionalPut, GetForUpdate
    _write_row(h, b"kl", b"row")
    h.evaluate("batch", _batch([GetForUpdate(b"kl")]), b"r" * 16)
    [(outcome, answer)] = h.answers
    assert outcome is Outcome.COMMITTED and h.group().proposed == []              # no consensus round
    assert answer["responses"][0]["value"] == b"row" and answer["rounds"] == 0
    token = answer["lock_token"]
    h.evaluate("put", {"key": b"kl", "value": b"other"}, b"o" * 16)               # another writer waits ...
    assert h.group().proposed == []
    version = answer["responses"][0]["ts"]
    h.evaluate("batch", _batch([ConditionalPut(b"kl", tuple(version), b"mine")], lock_token=token), b"m" * 16)
    assert [p[0] for p in h.group().proposed] == ["batch"]                        # ... the holder's write goes first
    h.group().proposed[0][2](Outcome.COMMITTED, {"ts": [6, 0], "ok": True, "responses": [{"swapped": True}]})
    assert [p[0] for p in h.group().proposed] == ["batch", "put"]                 # then the other writer
    assert h.store.holds == {}


def test_a_hold_whose_write_never_comes_is_given_back_after_the_hold_time(h):
    from raftstore.kvserver.batch import GetForUpdate
    h.evaluate("batch", _batch([GetForUpdate(b"kx")]), b"r" * 16)
    h.evaluate("put", {"key": b"kx", "value": b"other"}, b"o" * 16)
    h.t += constants.locking_read_hold_s - 0.01
    h.store._expire_holds(h.t)
    assert h.group().proposed == []
    h.t += 0.02
    h.store._expire_holds(h.t)
    assert [p[0] for p in h.group().proposed] == ["put"] and h.store.holds == {}


def test_a_write_naming_an_unknown_token_takes_its_own_latches(h):
    from raftstore.kvserver.batch import ConditionalPut
    h.evaluate("batch", _batch([ConditionalPut(b"ky", None, b"v")], lock_token=b"t" * 16), b"m" * 16)
    assert [p[0] for p in h.group().proposed] == ["batch"] and len(h.store.latches) == 1


def test_a_locking_read_waits_for_a_ready_leader_and_is_never_replicated(h):
    from raftstore.kvserver.batch import GetForUpdate
    from raftstore.raft.commands import CommandError
    h.group().ready = False
    h.evaluate("batch", _batch([GetForUpdate(b"kz")]), b"r" * 16)
    assert h.answers == []
    h.group().ready = True
    h.store._run_awaiting_lead(h.t)
    assert h.answers[0][0] is Outcome.COMMITTED and h.group().proposed == []
    with pytest.raises(CommandError, match="never replicated"):
        h.store.replicas[R].apply(2, Command(b"q" * 16, "batch", dict(_batch([GetForUpdate(b"kz")]), ts=[7, 0])))


# --- range sizes, kept incrementally (Store.maintain) ---------------------------------------------------

def test_a_range_size_is_measured_once_then_kept_by_adding_writes_and_a_split_is_asked_past_the_limit(h):
    asked = []
    h.store.split_range = lambda rid, *a, **k: asked.append(rid)
    h.store.meta_synced = {rid: 10 ** 9 for rid in h.store.groups}      # meta is up to date: no meta chores
    h.store.cfg.range_bytes_max = 10_000
    replica = h.store.replicas[R]
    for round_ in range(5):
        with replica.batch():
            for i in range(10):
                key, value = b"ks%02d%02d" % (round_, i), b"v" * 400
                replica.apply(10 * round_ + i + 1, Command(bytes([round_, i]) * 8, "put",
                                                            {"key": key, "value": value, "ts": [round_ + 1, i]}))
                h.store._on_write(R, len(key) + len(value))
        h.store.maintain()
        assert h.store.sizes[R] == h.mvcc.approximate_span_bytes(replica.desc.start, replica.desc.end)
    assert h.store.size_measurements == 1                                # the rest were kept by adding writes
    assert asked == [R] * 3                                              # past 10,000 bytes from the third round
    h.store._note_leader(R, FakeGroup(leader_id="2"))                   # another leader ...
    h.store._note_leader(R, FakeGroup(leader_id="1"))                   # ... and back: measured again
    h.store._on_write(R, 1)
    h.store.maintain()
    assert h.store.size_measurements == 2


class _Follower(FakeGroup):
    """A follower whose election timer runs out at `deadline` (pysyncobj's monotonic time)."""

    def __init__(self, deadline: float) -> None:
        super().__init__(leader=False, leader_id="2")
        self.deadline, self.term, self.ticks = deadline, 5, 0

    def election_due(self) -> float:
        return self.deadline

    def postpone_election(self, heard: float) -> None:
        self.postponed = heard

    def doTick(self, _wait: float) -> None:
        self.ticks += 1

    def set_append_entries_period(self, _seconds: float) -> None:
        pass


def test_a_follower_whose_leader_went_silent_ticks_when_its_election_timer_runs_out(h):
    """Idle ticks run in step on every replica (one period per range, begun by the same append):
    a follower waiting for its next idle tick to notice its timer stood together with the other
    followers, and their votes split (another 1-2 s to elect after a leaseholder died). So once
    its leader's node is silent, a follower ticks when its timer runs out. A timer not due
    before the next idle tick changes nothing, nor does one already past (a follower no peer is
    connected to does not stand: ticking it every iteration would spin), nor one whose leader
    is heard and claims the group (idle followers tick no more often). A leader heard that does
    not claim it (it stepped down) is waited for like a silent one."""
    from raftstore.kvserver import store as store_mod
    idle = store_mod._idle_period(R)
    slack = constants.election_tick_slack_s
    silent, heard = h.t - constants.leader_silent_s - 0.1, h.t - 0.1
    claim, none = {R: 5}, {}
    for last_heard, claims, deadline, expected in [
            (silent, claim, h.t + 0.37, h.t + 0.37 + slack), (None, none, h.t + 0.37, h.t + 0.37 + slack),
            (silent, claim, h.t + idle + 0.5, h.t + idle), (silent, claim, h.t - 1.0, h.t + idle),
            (heard, claim, h.t + 0.37, h.t + idle), (heard, none, h.t + 0.37, h.t + 0.37 + slack)]:
        h.store.groups[R] = group = _Follower(deadline)
        h.store.node_heard = {} if last_heard is None else {2: last_heard}
        h.store.claims_from = {} if last_heard is None else {2: claims}
        h.store.active_until.pop(R, None)
        h.store.tick_soon = {R}          # this range alone (the others' FakeGroups have no timers)
        h.store.tick()
        assert group.ticks == 1
        assert h.store.timer_at[R] == pytest.approx(expected), (last_heard, deadline - h.t)


def test_a_peer_newly_silent_makes_the_groups_it_leads_tick_at_once(h):
    h.store.replicas[R].lease = None                 # node 2 leads R here: the harness's lease of node 1 would move
    h.store.groups[R] = group = _Follower(h.t + 0.8)
    h.store.led_by = {"2": {R}}
    h.store.node_heard = {2: h.t - 0.1}
    h.store.tick_soon = set()
    h.store.tick()
    assert group.ticks == 0                          # heard: nothing to do
    h.t += constants.leader_silent_s
    h.store.tick()
    assert group.ticks == 1 and h.store.timer_at[R] == pytest.approx(h.t - constants.leader_silent_s + 0.8
                                                                    + constants.election_tick_slack_s)
    h.t += constants.silence_check_interval_s
    h.store.tick()
    assert group.ticks == 1                          # once per silence, not at every check
    h.store.on_node_heartbeat(2, [])
    assert 2 not in h.store.silent_peers


# --- resting groups: an idle group with nothing of its own on a timer ticks less often ---------


def test_an_idle_follower_whose_leader_is_heard_and_claims_it_rests(h):
    """An idle follower ticks every idle period so that its election timer is postponed from
    its leader's node's last heartbeat; while that node is heard and claims the group at the
    follower's term, a tick resting_tick_periods idle periods on does the same (nothing else of
    its own is timed). A claim at another term, none, or a silent node: the idle tick as before."""
    from raftstore.kvserver import store as store_mod
    idle = store_mod._idle_period(R)
    h.store.replicas[R].lease = None                  # not this node's lease: nothing to hand over
    for claims, expected in [({R: 5}, h.t + idle * constants.resting_tick_periods), ({R: 4}, h.t + idle),
                             ({}, h.t + idle)]:
        h.store.groups[R] = group = _Follower(h.t + 1.5)
        h.store.node_heard = {2: h.t - 0.1}
        h.store.claims_from = {2: claims}
        h.store.active_until.pop(R, None)
        h.store.tick_soon = {R}
        h.store.tick()
        assert group.ticks == 1
        assert h.store.timer_at[R] == pytest.approx(expected), claims


def test_a_claim_withdrawn_or_at_another_term_ticks_its_followers_at_once(h):
    """A resting follower would notice its leader stepping down (no claim) only at its next
    tick, seconds later; the heartbeat that stops claiming the group ticks it now instead."""
    h.store.groups[R] = group = _Follower(h.t - 3.0)   # its timer ran out while it rested
    h.store.on_node_heartbeat(2, [R, 5, R + 1, 5])
    h.store.tick_soon = set()
    h.store.on_node_heartbeat(2, [R, 5, R + 1, 5])   # the same claims: nothing to do
    assert h.store.tick_soon == set() and not hasattr(group, "postponed")
    h.t += 0.25
    h.store.on_node_heartbeat(2, [R + 1, 5, R + 2, 5])   # R withdrawn, R+2 new
    assert h.store.tick_soon == {R}
    # It waits an election timeout from the withdrawal (the leader's last word on the group)
    # instead of standing at once with every other follower whose timer ran out meanwhile.
    assert group.postponed == h.t
    h.store.on_node_heartbeat(2, [R + 1, 6, R + 2, 5])   # R+1 at a new term
    assert h.store.tick_soon == {R, R + 1}


class _HeldLeader(FakeGroup):
    """A leader whose followers are caught up (its appends held) unless told otherwise."""

    def __init__(self, held: bool = True) -> None:
        super().__init__(leader=True, leader_id="1")
        self.held, self.term, self.ticks = held, 5, 0

    def heard_from(self, _peer: str, _at: float) -> None:
        pass

    def unsent(self) -> bool:
        return False

    def caught_up(self) -> bool:
        return self.held

    def hold_appends(self) -> None:
        pass

    def resume_appends(self, now: bool = False) -> None:
        self.held = False

    def appends_held(self) -> bool:
        return self.held

    def doTick(self, _wait: float) -> None:
        self.ticks += 1

    def set_append_entries_period(self, _seconds: float) -> None:
        pass


def test_an_idle_leader_rests_only_once_its_own_lease_has_run_out_and_it_stays_home(h):
    """A leader holding its appends rests, but not while a lease of its own runs (one in use is
    extended at its ticks, past half its life: resting would let it lapse under its readers),
    nor while its followers lack entries, nor while the lease should move to its home region."""
    from raftstore.kvserver import store as store_mod
    idle = store_mod._idle_period(R)
    running, lapsed = Lease(1, 1, (0, 0), (1 << 62, 0)), Lease(1, 1, (0, 0), (1, 0))
    for lease, held, home, expected in [(running, True, None, h.t + idle),
                                        (lapsed, True, None, h.t + idle * constants.resting_tick_periods),
                                        (None, True, None, h.t + idle * constants.resting_tick_periods),
                                        (lapsed, False, None, h.t + idle),
                                        (lapsed, True, 2, h.t + idle)]:
        h.store.replicas[R].lease = lease
        h.store.groups[R] = group = _HeldLeader(held)
        h.store.leader_of[R] = "1"                    # its lead is not news (a new leader wants the lease)
        h.store.preferred_holder = lambda replicas, region, home=home: home
        h.store.active_until.pop(R, None)
        h.store.tick_soon = {R}
        h.store.tick()
        assert group.ticks == 1
        assert h.store.timer_at[R] == pytest.approx(expected), (lease, held, home)


def test_a_silent_leaders_followers_wait_from_its_last_heartbeat_not_from_their_last_rest(h):
    """A resting follower last postponed its election seconds ago, and a link that dropped (a
    `kill -9`) took the claims its next tick would postpone by: with its stale timer long run
    out, every follower would stand the moment the silence is noticed, together, and split the
    vote. The silence check postpones each one's election from the leader's last heartbeat."""
    h.store.replicas[R].lease = None
    h.store.groups[R] = group = _Follower(h.t - 3.0)   # ran out during its rest
    h.store.led_by = {"2": {R}}
    last = h.t - 0.1
    h.store.node_heard = {2: last}
    h.store.on_peer_down(2)                            # the link dropped with the process
    h.t += constants.leader_silent_s
    h.store.tick_soon = set()
    h.store.tick()
    assert group.ticks == 1 and group.postponed == last
