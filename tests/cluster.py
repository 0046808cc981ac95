"""Real node processes on loopback for tests; the launcher itself is `raftstore.localcluster`.

Kept so the cluster tests can go on saying ``from cluster import Cluster``.
"""

import time

from raftstore.localcluster import *  # noqa: F401,F403
from raftstore.localcluster import REGIONS, Cluster, NodeProc, free_ports  # noqa: F401

__all__ = ["LIVENESS_MARGIN_S", "REGIONS", "Cluster", "NodeProc", "free_ports", "wait_until"]

# A liveness deadline of the design ("writes resume within 5 s of a leader's kill") holds on an
# idle machine; on a busy one, elections, retries and the nodes themselves get a fraction of a
# core. Tests wait for such an event up to the deadline plus this margin (DESIGN.md: a
# liveness deadline is not a speed claim), so only a build that misses it by far fails.
LIVENESS_MARGIN_S = 25.0


def wait_until(predicate, timeout_s: float, what: str) -> None:
    """Poll predicate every 0.2 s until it holds; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)
