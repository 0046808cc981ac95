"""A node stopped with SIGTERM drains quietly: one line that it stopped, no traceback, even with a
client still connected (issue 16); a node closed in-process gives back every descriptor."""

from __future__ import annotations

import os

import pytest


from cluster import LIVENESS_MARGIN_S, Cluster, free_ports, http_get, wait_until
from raftstore.node.loop import Node, NodeConfig
from descriptors import FD_DIR, open_descriptors, opened_since

pytestmark = pytest.mark.slow


def test_sigterm_with_a_client_connected_logs_one_stopped_line_and_no_traceback(tmp_path):
    # One node of a three-node join list: it runs and answers status without the others.
    cluster = Cluster(str(tmp_path))
    n = cluster.node(1)
    try:
        cluster.start(n)
        client = cluster.client(n)
        wait_until(lambda: _answers_status(client), 30 + LIVENESS_MARGIN_S, "node 1 to answer status")
        # Its peers never came: up, but not ready to serve, and it says why.
        assert http_get(n.http_addr, "/health") == (200, "ok\n")
        status, body = http_get(n.http_addr, "/health?ready=1")
        assert status == 503 and "not formed" in body, body
        # The client keeps its connection open (the Client holds one between calls).
        assert cluster.stop(n) == 0
        client.close()
    finally:
        cluster.cleanup()
    with open(n.log_path) as f:
        log = f.read()
    assert "Traceback" not in log and "CancelledError" not in log, log
    stopped = [line for line in log.splitlines() if "stopped" in line and "node 1" in line]
    assert len(stopped) == 1, log


def _answers_status(client) -> bool:
    try:
        client.status()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not os.path.isdir(FD_DIR), reason="counts descriptors in /proc/self/fd")
def test_a_closed_node_gives_back_its_ranges_descriptors(tmp_path):
    # Each range's group holds a journal (and, were appendEntriesUseBatch off, pysyncobj's
    # wake-up pipe); Node.close must release them all, as well as its own files.
    before = open_descriptors()
    peer, sql = ("127.0.0.1:%d" % p for p in free_ports(2))
    node = Node(NodeConfig(node_id=1, region="us-east1", peer_addr=peer, sql_addr=sql, join=[peer],
                           data_dir=str(tmp_path / "d"), secret=b""))   # a cluster of one: it forms at once
    try:
        node.start_loop()
        wait_until(lambda: node.store is not None and len(node.store.groups) >= 2, 30, "the node's ranges to start")
        assert opened_since(before) >= 3 * len(node.store.groups)
    finally:
        node.close()
    assert opened_since(before) == 0
