"""Real node processes on loopback for tests; the launcher itself is `raftstore.localcluster`.

Kept so the cluster tests can go on saying ``from cluster import Cluster``.
"""

import time

from raftstore.localcluster import *  # noqa: F401,F403
from raftstore.localcluster import REGIONS, Cluster, NodeProc, free_ports  # noqa: F401

__all__ = ["REGIONS", "Cluster", "NodeProc", "free_ports", "wait_until"]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    """Poll predicate every 0.2 s until it holds; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)
