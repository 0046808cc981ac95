"""RaftGroup's contracts, on real pysyncobj groups inside the simulator (no faults)."""

import importlib
import logging
import os

import pytest

from pysyncobj import SyncObj

from raftstore.raft import group as group_mod
from raftstore.raft.commands import Outcome, encode_command
from raftstore.sim.world import SimConfig, World, patched_pysyncobj, quiet_world
from descriptors import FD_DIR, open_descriptors, opened_since


@pytest.fixture
def world(tmp_path):
    with quiet_world(tmp_path, seed=3) as w:
        yield w


def _propose(w, nid, op, args, **kw):
    got = []
    w.nodes[nid].propose(op, args, lambda outcome, result: got.append((outcome, result)), **kw)
    w.run_until(w.clock.t + 2.0)
    assert len(got) == 1, got
    return got[0]


def test_a_command_commits_and_applies_on_every_replica(world):
    outcome, index = _propose(world, world.leader(), "put", {"k": "a"})
    assert outcome is Outcome.COMMITTED
    world.run_until(world.clock.t + 1.0)
    assert all(sm.log.get(index) for sm in world.sms.values())


def test_a_proposal_through_a_follower_is_forwarded(world):
    follower = next(n for n in world.ids if n != world.leader())
    outcome, _ = _propose(world, follower, "put", {"k": "b"})
    assert outcome is Outcome.COMMITTED


def test_a_retried_command_id_applies_once_and_returns_the_first_result(world):
    leader = world.leader()
    cid = b"\x01" * 16
    first = _propose(world, leader, "put", {"k": "c"}, command_id=cid)
    second = _propose(world, leader, "put", {"k": "c"}, command_id=cid)
    assert first == second and first[0] is Outcome.COMMITTED
    world.run_until(world.clock.t + 1.0)
    for sm in world.sms.values():
        assert list(sm.log.values()).count(cid) == 1


def test_a_bad_command_is_recorded_as_failed_and_the_replica_keeps_going(world):
    leader = world.leader()
    node = world.nodes[leader]
    got = []
    node._apply_payload(b"\xc1 not msgpack", callback=lambda res, err: got.append((res, err)))
    world.run_until(world.clock.t + 2.0)
    assert got and got[0][0][0] is False and "msgpack" in got[0][0][1]["message"] and got[0][0][1]["code"] == "rejected"
    assert all(world.nodes[n].apply_failures == 1 for n in world.ids)
    outcome, _ = _propose(world, leader, "put", {"k": "after"})
    assert outcome is Outcome.COMMITTED


def test_an_exception_inside_apply_stops_the_replica_and_a_restart_applies_the_command(world, monkeypatch):
    leader = world.leader()
    follower = next(n for n in world.ids if n != leader)
    monkeypatch.setattr(world.sms[follower], "apply", lambda index, command: 1 / 0)
    outcome, _ = _propose(world, leader, "put", {"k": "boom"})
    assert outcome is Outcome.COMMITTED            # the leader and the other follower applied it
    assert world.fail_stops >= 1                   # and again after each restart, while apply still fails
    assert any("fail-stop %s: %s: apply of index" % (follower, follower) in e and "ZeroDivisionError" in e
               for e in world.events)
    monkeypatch.undo()
    world.run_until(world.clock.t + 3.0)           # the supervisor restarts it; it replays the entry
    assert world.alive(follower)
    assert world.sms[follower].applied == world.sms[leader].applied
    assert world.sms[follower].log == world.sms[leader].log


def test_a_failed_commit_of_applies_stops_the_replica_before_it_applies_anything_more(world):
    leader = world.leader()
    follower = next(n for n in world.ids if n != leader)
    before = world.sms[follower].applied
    world.sms[follower].commit_failures = 1
    assert _propose(world, leader, "put", {"k": "lost-here"})[0] is Outcome.COMMITTED
    assert world.fail_stops == 1 and any("committing the applies" in e for e in world.events)
    assert world.sms[follower].applied in (before, world.sms[leader].applied)
    world.run_until(world.clock.t + 3.0)
    assert _propose(world, leader, "put", {"k": "after"})[0] is Outcome.COMMITTED
    assert world.sms[follower].log == world.sms[leader].log


def test_a_proposal_without_a_quorum_times_out_as_ambiguous(world):
    leader = world.leader()
    for n in world.ids:
        if n != leader:
            world.partition(leader, n)
    got = []
    world.nodes[leader].propose("put", {"k": "x"}, lambda o, r: got.append((o, r)), timeout_s=1.0)
    world.run_until(world.clock.t + 0.9)
    assert got == []
    world.run_until(world.clock.t + 0.5)
    assert len(got) == 1 and got[0][0] is Outcome.AMBIGUOUS


def test_a_command_larger_than_the_bound_is_refused_before_proposing(world):
    with pytest.raises(ValueError, match="command_bytes_max"):
        world.nodes[world.leader()].propose("put", {"v": b"x" * (600 * 1024)}, lambda o, r: None)


def test_pickled_transmissions_from_peers_are_dropped_not_unpickled(world):
    leader = world.leader()
    follower = next(n for n in world.ids if n != leader)
    node = world.nodes[follower]
    before = node.last_log_index()
    node._SyncObj__onMessageReceived(node._SyncObj__transport._inner.peers[leader], {
        "type": "append_entries", "transmission": "finish", "data": b"cos\nsystem\n(S'touch /tmp/x'\ntR.",
        "term": node.raftCurrentTerm, "commit_index": 0, "prevLogIdx": before, "prevLogTerm": 0})
    assert node.last_log_index() == before


def test_the_module_refuses_a_pysyncobj_without_the_private_names_it_overrides(monkeypatch):
    monkeypatch.delattr(SyncObj, "_SyncObj__sendNextNodeIdx")
    with pytest.raises(ImportError, match="_SyncObj__sendNextNodeIdx"):
        group_mod._check_pysyncobj()


def test_encode_command_rejects_a_bad_id():
    with pytest.raises(ValueError):
        encode_command("put", {}, b"short")


def test_pysyncobjs_false_truncation_warning_is_dropped_and_its_other_lines_are_kept(caplog):
    # pysyncobj logs this just before calling __deleteEntriesFrom, which we override to do nothing.
    import pysyncobj.syncobj as so
    import raftstore.raft.group  # noqa: F401  (installs the filter)
    with caplog.at_level(logging.DEBUG, logger=so.__name__):
        so.logger.critical("truncating already-applied log entries from index %d (last applied: %d) - state "
                           "machine may have diverged from other cluster members", 6769, 8902)
        so.logger.critical("some other pysyncobj line %d", 1)
    messages = [r.getMessage() for r in caplog.records if r.name == so.__name__]
    assert messages == ["some other pysyncobj line 1"]


def test_a_groups_counters_count_the_election_that_made_its_leader_and_every_apply(world):
    leader = world.leader()
    assert world.nodes[leader].elections_started >= 1   # it stood for the term it leads
    before = {nid: g.entries_applied for nid, g in world.nodes.items()}
    outcome, _ = _propose(world, leader, "put", {"k": "counted"})
    assert outcome is Outcome.COMMITTED
    world.run_until(world.clock.t + 1.0)
    assert all(g.entries_applied == before[nid] + 1 for nid, g in world.nodes.items())


@pytest.mark.skipif(not os.path.isdir(FD_DIR), reason="counts descriptors in /proc/self/fd")
def test_close_gives_back_the_wake_up_pipe_refuses_proposals_and_may_be_repeated(tmp_path):
    # As the node and the split simulator run their groups: pysyncobj then opens a wake-up pipe
    # (two descriptors) per group, which its own destroy() never closes.
    conf = dict(SimConfig(seed=3).conf, appendEntriesUseBatch=False)
    before = open_descriptors()
    w = World(SimConfig(seed=3, proposals=0, crashes=False, partitions=False, conf=conf), str(tmp_path))

    def opened() -> int:
        return opened_since(before)
    with patched_pysyncobj(w.clock, w.rng):
        w.start()
        assert opened() == 6
        w.run_until(w.clock.t + 3.0)
        leader = w.leader()
        assert _propose(w, leader, "put", {"k": "a"})[0] is Outcome.COMMITTED
        follower = next(n for n in w.ids if n != leader)
        w.crash(follower)                           # a crashed replica's group is closed, unsynced
        assert opened() == 4
        w.restart(follower)
        assert opened() == 6
        group = w.nodes[leader]
        group.close()
        group.close()                               # idempotent
        assert group.closed and opened() == 4
        got = []
        group.propose("put", {"k": "late"}, lambda outcome, result: got.append((outcome, result)))
        assert got == [(Outcome.NOT_COMMITTED, "%s is closed" % group.name)]
        group._apply_payload(b"x", callback=lambda res, err: None)   # pysyncobj's own path: no write to a stale fd
        group.doTick(0.0)                            # a closed group takes no tick
        w.close()
    assert opened_since(before) == 0


def test_a_ticks_proposals_go_to_each_follower_in_one_append_at_once(world):
    """Twenty proposals made between two ticks reach each follower as one append carrying all
    twenty, sent by the next tick - not one append per proposal (appendEntriesUseBatch off), nor
    only when the heartbeat period runs out (pysyncobj's own batching)."""
    leader = world.leader()
    group = world.nodes[leader]
    group.set_append_entries_period(10.0)     # no heartbeat will carry them for us
    world.run_until(world.clock.t + 0.2)      # the heartbeat already due goes out first
    appends = []
    checked = world.check_outgoing

    def record(src, dst, message):
        if src == leader and message.get("type") == "append_entries" and message.get("entries"):
            appends.append((dst, world.clock.t, len(message["entries"])))
        checked(src, dst, message)
    world.check_outgoing = record
    proposed_at = world.clock.t
    got = []
    for i in range(20):
        group.propose("put", {"k": "batch-%d" % i}, lambda outcome, result: got.append(outcome))
    world.run_until(proposed_at + 2.0)
    assert got == [Outcome.COMMITTED] * 20
    followers = sorted(n for n in world.ids if n != leader)
    assert sorted(dst for dst, _, _ in appends) == followers, appends   # one append each
    assert all(n == 20 and t <= proposed_at + world.cfg.tick_s for _, t, n in appends), appends


def test_a_followers_election_timeout_is_one_draw_per_term_however_often_its_leader_is_heard(world):
    """The node heartbeat postpones a follower's election every tick (Store._follow). Each
    postponement drawing afresh and keeping the later deadline made the timeout the greatest of
    hundreds of draws: every follower's timer ran out ~raftMaxTimeout after the leader was last
    heard, together, and their votes split (a failover took 3.3 s to elect instead of 1-2)."""
    leader = world.leader()
    for nid in [n for n in world.ids if n != leader]:
        group = world.nodes[nid]
        conf = group._SyncObj__conf
        group._SyncObj__raftElectionDeadline = 0.0
        group.postpone_election(100.0)
        timeout = group._SyncObj__raftElectionDeadline - 100.0
        assert conf.raftMinTimeout <= timeout <= conf.raftMaxTimeout
        for _ in range(200):
            group.postpone_election(100.0)
        assert group._SyncObj__raftElectionDeadline - 100.0 == timeout
        group.postpone_election(101.0)                 # heard later: the same timeout, from then
        assert group._SyncObj__raftElectionDeadline == 101.0 + timeout


def _election_timeouts_by_term(world, terms=range(1, 201)):
    """Each term's election timeouts of the group's replicas, as drawn at that term."""
    groups = [world.nodes[nid] for nid in world.ids]
    saved = [g._SyncObj__raftCurrentTerm for g in groups]
    try:
        drawn = []
        for term in terms:
            for g in groups:
                g._SyncObj__raftCurrentTerm = term
            drawn.append({g._SyncObj__selfNode.id: g._SyncObj__generateRaftTimeout() for g in groups})
        return drawn
    finally:
        for g, term in zip(groups, saved):
            g._SyncObj__raftCurrentTerm = term


def _closest_two(drawn):
    return min(b - a for timeouts in drawn for a, b in zip(sorted(timeouts.values()), sorted(timeouts.values())[1:]))


def test_replicas_election_timeouts_fall_in_slots_so_the_first_candidate_is_heard_before_the_next_stands(world):
    """Two followers of a dead leader whose timers ran out within a message's flight of each
    other both stood and split the vote (1-2 s more, and the next term could split again).
    Each replica's timeout now lies in its own slot, in an order that changes with the term."""
    conf = world.nodes[world.ids[0]]._SyncObj__conf
    drawn = _election_timeouts_by_term(world)
    slot = (conf.raftMaxTimeout - conf.raftMinTimeout) / len(world.ids)
    assert all(conf.raftMinTimeout <= t < conf.raftMaxTimeout for ts in drawn for t in ts.values())
    assert _closest_two(drawn) >= slot * (1 - group_mod.constants.election_slot_jitter) - 1e-9
    firsts = [min(ts, key=ts.get) for ts in drawn]
    assert {n: firsts.count(n) for n in world.ids} == {n: pytest.approx(len(drawn) / 3, rel=0.4) for n in world.ids}
    assert any(a != b for a, b in zip(firsts, firsts[1:]))   # the order moves from term to term
    # every replica computes the same order: the ranks are a permutation in every term
    for term in (1, 2, 3):
        ranks = sorted(group_mod.election_rank("sim", term, n, tuple(sorted(world.ids))) for n in world.ids)
        assert ranks == list(range(len(world.ids)))


def test_broken_uniform_election_timeouts_are_caught(world, monkeypatch):
    conf = world.nodes[world.ids[0]]._SyncObj__conf
    monkeypatch.setattr(group_mod.RaftGroup, "_SyncObj__generateRaftTimeout", SyncObj._SyncObj__generateRaftTimeout)
    slot = (conf.raftMaxTimeout - conf.raftMinTimeout) / len(world.ids)
    assert _closest_two(_election_timeouts_by_term(world)) < slot * (1 - group_mod.constants.election_slot_jitter)
