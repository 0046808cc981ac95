"""The deterministic simulator: it must find pysyncobj's bugs and find none in our layer."""

import re
import subprocess
import sys

import pytest
from pysyncobj import SyncObj

from raftstore.raft import group as group_mod
from raftstore.raft import journal as journal_mod
from raftstore.raft.failstop import FailStop
from raftstore.sim.world import SimConfig, Violation, run_seed

# A many-seed run is CPU-bound: about 220 s of CPU for 105 split seeds, and on a 2-core machine
# shared with other work it gets a fraction of a core (600 s of wall time when the suite runs
# beside one busy process per core). Its bound only catches a hang, so it is generous.
SIM_RUN_TIMEOUT_S = 3600


def assert_sim_clean(env: dict, *flags: str, summary: str) -> None:
    """Run `python -m raftstore.sim FLAGS` as a user would and require its summary line."""
    run = subprocess.run([sys.executable, "-m", "raftstore.sim", *flags],
                         capture_output=True, text=True, env=env, timeout=SIM_RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert summary in run.stdout, run.stdout[-4000:]


def _violations(seeds, *, first_only: bool = False, **kw):
    found = {}
    for seed in seeds:
        try:
            run_seed(SimConfig(seed=seed, **kw))
        except Violation as exc:
            found[seed] = str(exc)
            if first_only:
                break
    return found


def test_plain_pysyncobj_loses_acknowledged_writes_in_the_repro_scenario():
    # The scenario of shared/pysyncobj-repro: 300 x 20 KB entries over us/eu/ap delays, no
    # faults at all, and a perfect disk -- only the log-matching bug can lose anything.
    found = _violations(range(1, 13), target="plain", write_through=True, crashes=False, partitions=False)
    assert found, "the simulator should catch pysyncobj 0.3.17 counting acks for truncated entries"
    assert any("commit-majority" in v for v in found.values()), found


def test_plain_pysyncobj_fails_under_random_leader_crashes():
    found = _violations(range(1, 9), target="plain", write_through=True)
    assert len(found) >= 2, found


def test_plain_pysyncobj_acknowledges_what_it_never_synced():
    found = _violations(range(1, 3), target="plain", crashes=False, partitions=False)
    assert len(found) == 2 and all("ack-durable" in v for v in found.values()), found


def test_our_layer_keeps_every_invariant_on_a_few_seeds():
    for seed in range(1, 11):
        summary = run_seed(SimConfig(seed=seed))
        assert summary["acked"] > 0 and summary["committed"] > 0, summary


def test_checker_catches_acks_of_unsynced_entries_when_fsync_is_off():
    found = _violations(range(1, 4), fsync_works=False)
    assert len(found) == 3 and all("ack-durable" in v for v in found.values()), found


def test_checker_catches_lost_acknowledged_entries_after_crashes_when_fsync_is_off():
    # Without the send-time check the loss itself must show: after a crash a committed entry
    # is held by fewer than a majority, or an acknowledged write is missing.
    found = _violations(range(1, 9), fsync_works=False, check_at_send=False)
    assert found, "crashes on a disk that ignores fsync must lose acknowledged entries"
    assert all(re.search("commit-majority|acked-lost|apply-agreement", v) for v in found.values()), found


def test_one_seed_gives_one_trace():
    a = run_seed(SimConfig(seed=7))
    b = run_seed(SimConfig(seed=7))
    assert a == b
    assert run_seed(SimConfig(seed=8))["trace"] != a["trace"]


def test_a_failing_seed_is_printed_and_replays_exactly(sim_env):
    cmd = [sys.executable, "-m", "raftstore.sim", "--seeds", "12", "--target", "plain", "--write-through",
           "--no-crashes", "--no-partitions"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=sim_env, timeout=600)
    assert first.returncode == 1, first.stdout + first.stderr
    fail = re.search(r"^FAIL (seed (\d+) .*)$", first.stdout, re.M)
    replay = re.search(r"replay: PYTHONHASHSEED=0 python -m raftstore.sim (.*)$", first.stdout, re.M)
    assert fail and replay, first.stdout
    again = subprocess.run([sys.executable, "-m", "raftstore.sim"] + replay.group(1).split(),
                           capture_output=True, text=True, env=sim_env, timeout=600)
    assert again.returncode == 1
    assert "FAIL " + fail.group(1) in again.stdout, (fail.group(1), again.stdout)


def test_storage_faults_stop_the_replica_and_lose_nothing():
    stops = 0
    for seed in range(1, 9):
        summary = run_seed(SimConfig(seed=seed, storage_faults=True))
        assert summary["acked"] > 0, summary
        stops += summary["fail_stops"]
    assert stops > 0, "the faults must actually hit replicas"


# Each broken build below goes on after a storage error the way main did before issue 9; the
# simulator's invariants must catch it within a few seeds.

def test_checker_catches_a_build_that_goes_on_after_a_failed_commit_of_applies(monkeypatch):
    def swallow(self):   # the batch is rolled back, pysyncobj has counted the entries as applied
        try:
            with self._sm.batch():
                return SyncObj._SyncObj__applyLogEntries(self)
        except Exception:
            return False
    monkeypatch.setattr(group_mod.RaftGroup, "_SyncObj__applyLogEntries", swallow)
    found = _violations(range(1, 41), first_only=True, storage_faults=True)
    # A replica that lost a tick's applies either jumps an index (continuity), loses an
    # acknowledged write, or - since appends go out once per tick - may first be found stuck
    # behind after the faults settle (liveness; the correct build shows none in 800 runs of
    # these seeds under four hash seeds).
    assert found and all(re.search("apply-continuity|acked-lost|liveness", v) for v in found.values()), found


def test_checker_catches_a_build_that_keeps_an_entry_its_journal_did_not_write(monkeypatch):
    write = journal_mod.DurableJournal._write

    def swallow(self, payload):
        try:
            write(self, payload)
        except FailStop:
            pass
    monkeypatch.setattr(journal_mod.DurableJournal, "_write", swallow)
    found = _violations(range(1, 41), first_only=True, storage_faults=True)
    assert found and all(re.search("ack-durable|commit-majority|acked-lost", v) for v in found.values()), found


def test_checker_catches_a_build_whose_continuity_skips_raft_no_op_entries(monkeypatch):
    monkeypatch.setattr(group_mod.RaftGroup, "_SyncObj__doApplyCommand",
                        lambda self, command: SyncObj._SyncObj__doApplyCommand(self, command))
    found = _violations(range(1, 3))
    assert len(found) == 2 and all("apply-continuity" in v for v in found.values()), found


def test_continuity_does_not_stop_a_replica_at_elections():
    # Every leader appends a no-op; a continuity check that ignored them would stop the node
    # at the first election after a crash.
    summary = run_seed(SimConfig(seed=5, storage_faults=False))
    assert summary["fail_stops"] == 0 and summary["acked"] > 0, summary


@pytest.mark.slow
@pytest.mark.timeout(SIM_RUN_TIMEOUT_S + 300)
def test_our_layer_keeps_every_invariant_under_storage_faults_over_200_seeds(sim_env):
    assert_sim_clean(sim_env, "--seeds", "200", "--storage-faults", summary="200 seeds, 0 violations (ours)")


@pytest.mark.slow
@pytest.mark.timeout(SIM_RUN_TIMEOUT_S + 300)
def test_our_layer_keeps_every_invariant_over_200_seeds(sim_env):
    assert_sim_clean(sim_env, "--seeds", "200", summary="200 seeds, 0 violations (ours)")


_TRACES = """
import json, sys
from raftstore.sim.world import SimConfig, run_seed
print(json.dumps([run_seed(SimConfig(seed=s, storage_faults=True))["trace"] for s in range(1, 6)]))
"""


def _traces_under(hash_seed: str) -> list:
    import json
    import os
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    run = subprocess.run([sys.executable, "-c", _TRACES], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_seed_runs_alike_under_any_hash_seed_and_after_other_seeds():
    """pytest runs seeds in one process under its own PYTHONHASHSEED; a failing seed prints a
    replay command with PYTHONHASHSEED=0. Each link's delays come from its own generator, so
    the order in which pysyncobj iterates a set of peers does not reorder them (before, one
    generator for all links made seed 4 here ack 0 writes under some hash seeds, 226 under
    others)."""
    assert _traces_under("1") == _traces_under("2")
