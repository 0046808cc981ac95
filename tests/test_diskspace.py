"""The free-space reserve: below it a node refuses new writes with a clear error, keeps
applying what it acknowledged, and takes writes again once space is back."""

import contextlib
import logging
import os
import subprocess
import tempfile

import pytest

from raftstore import constants
from raftstore.errors import RaftstoreError
from raftstore.raft.commands import Outcome
from raftstore.sim.world import quiet_world
from raftstore.storage.diskspace import BALLAST_NAME, DiskGuard, default_reserve_bytes

MiB = 1024 * 1024


class FakeStatvfs:
    def __init__(self, total: int, free: int) -> None:
        self.total, self.free = total, free

    def __call__(self, path):
        return os.statvfs_result((4096, 4096, self.total // 4096, self.free // 4096, self.free // 4096,
                                  0, 0, 0, 0, 255))


def test_the_default_reserve_is_the_larger_of_256_mib_and_2_percent_of_the_disk():
    assert default_reserve_bytes(1024 * MiB) == 256 * MiB
    assert default_reserve_bytes(100_000 * MiB) == 2_000 * MiB


def test_below_the_reserve_the_guard_says_why_and_logs_each_change_once(tmp_path, caplog):
    fs = FakeStatvfs(total=1000 * MiB, free=500 * MiB)
    guard = DiskGuard(str(tmp_path), reserve_bytes=100 * MiB, ballast_bytes=0, statvfs=fs)
    assert guard.check() is None
    fs.free = 99 * MiB
    with caplog.at_level(logging.INFO, logger="raftstore.storage.diskspace"):
        for _ in range(3):
            reason = guard.check()
    assert reason.startswith("disk nearly full: 99.0 MiB free") and "reserve of 100.0 MiB" in reason
    assert BALLAST_NAME in reason
    assert sum("disk nearly full" in r.message for r in caplog.records) == 1
    fs.free = 101 * MiB
    assert guard.check() is None


def test_the_ballast_file_is_allocated_only_with_room_above_the_reserve(tmp_path):
    fs = FakeStatvfs(total=1000 * MiB, free=105 * MiB)
    DiskGuard(str(tmp_path), reserve_bytes=100 * MiB, ballast_bytes=8 * MiB, statvfs=fs).ensure_ballast()
    assert not os.path.exists(tmp_path / BALLAST_NAME)
    guard = DiskGuard(str(tmp_path), reserve_bytes=1 * MiB, ballast_bytes=2 * MiB)   # the real disk
    guard.ensure_ballast()
    assert os.path.getsize(tmp_path / BALLAST_NAME) == 2 * MiB
    assert os.stat(tmp_path / BALLAST_NAME).st_blocks * 512 >= 2 * MiB   # allocated, not sparse


# --- the Raft side, in the simulator -----------------------------------------------------------

@pytest.fixture
def world(tmp_path):
    with quiet_world(tmp_path, seed=4) as w:
        yield w


def _propose(w, nid, key):
    got = []
    w.nodes[nid].propose("put", {"k": key}, lambda outcome, result: got.append((outcome, result)))
    w.run_until(w.clock.t + 2.0)
    assert len(got) == 1, got
    return got[0]


def test_a_node_below_the_reserve_refuses_proposals_and_a_leader_denies_forwarded_ones(world):
    leader = world.leader()
    follower = next(n for n in world.ids if n != leader)
    world.nodes[leader]._refuse_entries = lambda: "disk nearly full: test"
    assert _propose(world, leader, "a") == (Outcome.NOT_COMMITTED, "disk nearly full: test")
    outcome, result = _propose(world, follower, "b")
    assert outcome is Outcome.NOT_COMMITTED, (outcome, result)
    assert world.sms[follower].applied == world.sms[leader].applied   # nothing new was appended


def test_a_follower_below_the_reserve_takes_no_new_entries_and_catches_up_after(world):
    leader = world.leader()
    low, other = [n for n in world.ids if n != leader]
    world.nodes[low]._refuse_entries = lambda: "disk nearly full: test"
    before = world.nodes[low].last_log_index()
    assert _propose(world, leader, "a")[0] is Outcome.COMMITTED      # the leader and `other` are a majority
    assert world.nodes[low].last_log_index() == before
    world.nodes[low]._refuse_entries = lambda: None
    world.run_until(world.clock.t + 3.0)
    assert world.sms[low].log == world.sms[leader].log


# --- a real cluster whose leader's disk fills --------------------------------------------------

@contextlib.contextmanager
def _tmpfs(size_mb: int):
    path = tempfile.mkdtemp(prefix="raftstore-tmpfs-")
    try:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mb, "tmpfs", path], check=True,
                           capture_output=True, timeout=30)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip("cannot mount a tmpfs here: %s" % exc)
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _fill(path: str, leave_bytes: int) -> str:
    """Write a filler file until only about leave_bytes are free on path's file system."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        size = 0
        for step in (MiB, 4096):        # the nodes write meanwhile: take what is there, in steps
            while True:
                st = os.statvfs(path)
                if st.f_bavail * st.f_frsize - step < leave_bytes:
                    break
                try:
                    os.posix_fallocate(f.fileno(), size, step)
                except OSError:
                    break
                size += step
    return filler


def _cluster_on_tmpfs(stack: contextlib.ExitStack, root: str, extra_args: list[str]):
    """A running 3-node cluster whose data dirs are each on a 96 MiB tmpfs of its own; returns
    the cluster and the mount points (node order). Everything ends with `stack`."""
    from cluster import Cluster

    mounts = [stack.enter_context(_tmpfs(96)) for _ in range(3)]
    c = Cluster(root, extra_args=extra_args)
    for n, mount in zip(c.nodes, mounts):
        n.data_dir = os.path.join(mount, "n%d" % n.node_id)
    stack.enter_context(c)
    return c, mounts


@pytest.mark.slow
def test_a_leader_below_the_reserve_refuses_writes_clearly_and_loses_nothing(tmp_path):
    from cluster import wait_until

    with contextlib.ExitStack() as stack:
        c, mounts = _cluster_on_tmpfs(stack, str(tmp_path), ["--disk-reserve-bytes", "24MiB", "--disk-ballast-bytes", "4MiB"])
        leader = c.wait_leader(timeout=60)
        acked = {}
        with c.client(timeout_s=30) as kv:
            for i in range(20):
                acked[b"before-%d" % i] = kv.put(b"before-%d" % i, b"v")
        assert os.path.getsize(os.path.join(leader.data_dir, BALLAST_NAME)) == 4 * MiB

        mount = mounts[c.nodes.index(leader)]
        filler = _fill(mount, leave_bytes=12 * MiB)
        with c.client(leader, timeout_s=3) as kv:
            def refused():
                try:
                    kv.put(b"during", b"v")
                except RaftstoreError as exc:
                    return "disk nearly full" in str(exc)
                return False
            wait_until(refused, 30, "the leader to refuse a write with 'disk nearly full'")
            status = kv.status()
        assert status["disk"]["low"] and status["disk"]["reserve_bytes"] == 24 * MiB
        assert leader.proc.poll() is None, "a node below the reserve keeps running"

        os.unlink(filler)
        with c.client(timeout_s=30) as kv:
            for i in range(20):
                acked[b"after-%d" % i] = kv.put(b"after-%d" % i, b"v")
        for n in c.nodes:
            with c.client(n, timeout_s=30) as kv:
                missing = [k for k in acked if kv.get(k) != b"v"]
            assert not missing, (n.node_id, missing)


@pytest.mark.slow
def test_a_node_whose_disk_fills_anyway_stops_with_one_line_and_replays_after_a_restart(tmp_path):
    # No reserve: the disk really fills, and a journal write or a commit of applies fails. The
    # node must stop at once (exit 74, one line naming the range, the index and the error) and,
    # restarted with space back, replay what it had not applied -- nothing acknowledged is lost.
    from cluster import wait_until

    with contextlib.ExitStack() as stack:
        c, mounts = _cluster_on_tmpfs(stack, str(tmp_path), ["--disk-reserve-bytes", "0", "--disk-ballast-bytes", "0"])
        leader = c.wait_leader(timeout=60)
        victim = next(n for n in c.nodes if n is not leader)   # a follower: the cluster keeps a majority
        filler = _fill(mounts[c.nodes.index(victim)], leave_bytes=0)
        acked = {}
        with c.client(leader, timeout_s=30) as kv:
            i = 0
            while victim.proc.poll() is None and i < 20_000:
                key = b"k-%05d" % i
                acked[key] = kv.put(key, b"x" * 200)
                i += 1
        assert victim.proc.wait(30) == constants.exit_code_storage_failure, c.log_tail(victim)
        stops = [line for line in c.log_tail(victim, 200).splitlines() if "CRITICAL" in line and "stopping:" in line]
        assert len(stops) == 1, c.log_tail(victim, 50)
        assert "index" in stops[0] and ("full" in stops[0] or "No space" in stops[0]), stops[0]
        os.unlink(filler)
        c.start(victim)
        with c.client(victim, timeout_s=30) as kv:
            wait_until(lambda: kv.get(key) == b"x" * 200, 60, "the restarted node to catch up")
            missing = [k for k in acked if kv.get(k) != b"x" * 200]
        assert not missing, missing[:5]
