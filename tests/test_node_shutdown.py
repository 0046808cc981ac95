"""A node stopped with SIGTERM drains quietly: one line that it stopped, no traceback, even with a
client still connected (issue 16)."""

from __future__ import annotations

import pytest

from cluster import LIVENESS_MARGIN_S, Cluster, http_get, wait_until

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

