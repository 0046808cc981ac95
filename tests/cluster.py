"""Real node processes on loopback for tests; the launcher itself is `raftstore.localcluster`.

Kept so the cluster tests can go on saying ``from cluster import Cluster``.
"""

import time
import urllib.error
import urllib.request

from raftstore.errors import RaftstoreError
from raftstore.localcluster import *  # noqa: F401,F403
from raftstore.localcluster import REGIONS, Cluster, NodeProc, free_ports  # noqa: F401

__all__ = ["LIVENESS_MARGIN_S", "REGIONS", "Cluster", "NodeProc", "assert_replicas_identical", "free_ports", "http_get",
           "wait_until"]

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


def http_get(addr: str, path: str) -> tuple[int, str]:
    """GET http://addr/path (a node's --http-addr): (status, body), an error status included."""
    try:
        with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def assert_replicas_identical(cluster, *nodes, start: bytes = b"", end: bytes | None = None,
                              timeout_s: float = 60.0 + LIVENESS_MARGIN_S) -> list[dict]:
    """Assert that every replica of every range overlapping [start, end) holds the same data:
    run consistency checks (raftstore.kvserver.consistency) through `nodes` (default: the running ones)
    until one finds every range consistent, and return its results. Fails at once naming the
    range, the index and the replicas' checksums if a check finds a range inconsistent (replicas
    compared at one log index never come to agree later); retries a check that is incomplete
    (a replica still starting or catching up) until `timeout_s`, then fails saying why."""
    nodes = nodes or tuple(n for n in cluster.nodes if n.pid is not None)
    deadline = time.monotonic() + timeout_s
    last = "no check ran"
    while True:
        try:
            with cluster.client(*nodes) as client:
                results = client.check_consistency(start, end)
        except RaftstoreError as exc:
            results, last = None, "the check failed: %s" % exc
        if results:
            bad = [r for r in results if r["status"] == "inconsistent"]
            if bad:
                raise AssertionError("replicas differ: " + "; ".join(
                    "r%d at index %s: %s; checksums %s" % (r["range_id"], r["index"], r["detail"], r["replicas"])
                    for r in bad))
            if all(r["status"] == "consistent" for r in results):
                return results
            last = "; ".join("r%d %s: %s" % (r["range_id"], r["status"], r["detail"])
                             for r in results if r["status"] != "consistent")
        elif results is not None:
            last = "the node knows no range yet"
        if time.monotonic() >= deadline:
            raise AssertionError("replicas not shown identical within %.0f s: %s" % (timeout_s, last))
        time.sleep(0.5)
