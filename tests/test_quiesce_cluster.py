"""Quiesced ranges on real nodes: an idle leader sends no heartbeats of its own, yet its ranges
still elect a new leader when its node stops heartbeating, and it steps down when it resumes."""

from __future__ import annotations

import os
import signal

import pytest

from cluster import LIVENESS_MARGIN_S, Cluster, wait_until
from raftstore.errors import RaftstoreError


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(str(tmp_path))
    try:
        c.start_all()
        yield c
    finally:
        for n in c.nodes:   # a stopped node must be able to die
            if n.pid is not None:
                os.kill(n.pid, signal.SIGCONT)
        c.cleanup()


def _ranges(cluster, node) -> list[dict]:
    try:
        with cluster.client(node, timeout_s=5.0) as c:
            return c.status()["ranges"]
    except RaftstoreError:
        return []


@pytest.mark.slow
def test_a_stopped_idle_leaders_ranges_elect_again_and_it_steps_down_when_it_resumes(cluster):
    old = cluster.wait_leader()
    others = [n for n in cluster.nodes if n is not old]
    with cluster.client(old, timeout_s=30.0) as c:
        c.split(b"q-m")
        c.put(b"q-a", b"1")
        c.put(b"q-z", b"1")

    def led_by_old_and_quiet() -> bool:   # both data ranges led by `old`, neither sending heartbeats
        ranges = [r for r in _ranges(cluster, old) if r["range_id"] != 1]
        return len(ranges) == 2 and all(r["leader"] == old.node_id and r["quiet"] for r in ranges)
    wait_until(led_by_old_and_quiet, 30 + LIVENESS_MARGIN_S, "n%d to lead both data ranges, quiesced" % old.node_id)

    # SIGSTOP: the links stay up, only the node heartbeat stops arriving (no per-group
    # heartbeat would have come either). The followers must elect.
    os.kill(old.pid, signal.SIGSTOP)
    try:
        def elected_elsewhere() -> bool:
            views = [_ranges(cluster, n) for n in others]
            return all(views) and all(r["leader"] not in (None, old.node_id) for v in views for r in v)
        wait_until(elected_elsewhere, 5.0 + LIVENESS_MARGIN_S, "every range to elect a leader other than the stopped n%d" % old.node_id)
        with cluster.client(*others, timeout_s=30.0) as c:
            c.put(b"q-b", b"2")
            c.put(b"q-y", b"2")
    finally:
        os.kill(old.pid, signal.SIGCONT)

    # The resumed node still believes it leads every range, at an older term, and every group
    # is idle. Its node heartbeat claims them; the new leaders' appends depose it.
    def one_leader_each() -> bool:
        views = [_ranges(cluster, n) for n in cluster.nodes]
        if not all(views) or len({len(v) for v in views}) != 1:
            return False
        return all(len({v[i]["leader"] for v in views}) == 1 and views[0][i]["leader"] != old.node_id
                   for i in range(len(views[0])))
    wait_until(one_leader_each, 5.0 + LIVENESS_MARGIN_S, "n%d to step down: every node names the same new leader" % old.node_id)
    with cluster.client(old, timeout_s=30.0) as c:
        c.put(b"q-c", b"3")
        assert c.get(b"q-b") is not None and c.get(b"q-y") is not None
