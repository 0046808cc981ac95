"""Real node processes on loopback for tests; the launcher itself is `raftstore.localcluster`.

Kept so the cluster tests can go on saying ``from cluster import Cluster``.
"""

from raftstore.localcluster import *  # noqa: F401,F403
from raftstore.localcluster import REGIONS, Cluster, NodeProc, free_ports  # noqa: F401

__all__ = ["REGIONS", "Cluster", "NodeProc", "free_ports"]
