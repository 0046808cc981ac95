"""/metrics and /health on real node processes (issue 16): the counters an operator watches move
with the work done, the histograms fill, no label multiplies with ranges or keys, `raftstore
status --json` shows the same totals, and /health?ready=1 turns unready (503) while a node drains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import raftstore
from raftstore import sqlclient
from cluster import LIVENESS_MARGIN_S, Cluster, http_get, wait_until

pytestmark = pytest.mark.slow

# Every label a raftstore metric may carry: each takes values from a short fixed list (an op, an
# outcome code, a statement type, a proposal's origin, a router event, a peer of the cluster).
ALLOWED_LABELS = {"op", "outcome", "type", "where", "event", "peer", "le"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("metrics"))) as c:
        c.wait_leader(timeout=30 + LIVENESS_MARGIN_S)
        yield c


def scrape(node) -> dict[tuple[str, tuple], float]:
    """Every sample of node's /metrics, parsed by prometheus-client's own parser:
    {(sample name, sorted label items): value}."""
    status, text = http_get(node.http_addr, "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels) -> float:
    """The sum over the samples of `name` whose labels include `labels`."""
    return sum(v for (n, items), v in samples.items()
               if n == name and all((k, str(x)) in items for k, x in labels.items()))


def test_metrics_move_with_kv_puts_and_sql_statements_and_histograms_fill(cluster):
    n1 = cluster.node(1)
    before = scrape(n1)
    puts = 20
    with cluster.client(n1) as client:
        for i in range(puts):
            client.put(b"metrics/%d" % i, b"v%d" % i)
        assert client.get(b"metrics/0") == b"v0"
    cur = raftstore.connect(n1.sql_addr).cursor()
    cur.execute("CREATE TABLE scraped (k INT PRIMARY KEY, v TEXT)")
    cur.execute("INSERT INTO scraped VALUES (1, 'one')")
    with pytest.raises(sqlclient.Error):
        cur.execute("SELECT * FROM no_such_table")
    # Peer round trips are measured by heartbeats, a few a second: wait for some.
    wait_until(lambda: value(scrape(n1), "raftstore_peer_round_trip_seconds_count") > 0,
               10 + LIVENESS_MARGIN_S, "a peer round trip to be measured")
    after = scrape(n1)

    def moved(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    # KV ops by type and outcome, with their latency histogram.
    assert moved("raftstore_kv_requests_total", op="put", outcome="ok") == puts
    assert moved("raftstore_kv_requests_total", op="get", outcome="ok") == 1
    assert moved("raftstore_kv_request_duration_seconds_count", op="put") == puts
    assert moved("raftstore_kv_request_duration_seconds_sum", op="put") > 0
    assert value(after, "raftstore_kv_request_duration_seconds_bucket", op="put", le="+Inf") >= puts
    # Statements by type and outcome (a failed one under its error code), with latency.
    assert moved("raftstore_sql_statements_total", type="create", outcome="ok") == 1
    assert moved("raftstore_sql_statements_total", type="insert", outcome="ok") == 1
    assert moved("raftstore_sql_statements_total", type="select", outcome="undefined_table") == 1
    assert moved("raftstore_sql_statement_duration_seconds_count", type="insert") == 1
    # Raft: proposals (here or forwarded to the leader's node), applies, a leader known.
    assert moved("raftstore_raft_proposals_total", where="here") + moved(
        "raftstore_raft_proposals_total", where="forwarded") >= puts
    assert moved("raftstore_raft_entries_applied_total") >= puts
    assert value(after, "raftstore_raft_leader_changes_total") >= 1
    assert moved("raftstore_journal_fsync_duration_seconds_count") > 0
    assert moved("raftstore_router_events_total", event="lookup") + value(
        before, "raftstore_router_events_total", event="lookup") >= 1
    assert value(after, "raftstore_ranges") >= 1
    assert value(after, "raftstore_cluster_formed") == 1
    assert value(after, "raftstore_peers_connected") == 2
    assert {dict(items)["peer"] for (n, items) in after if n == "raftstore_clock_offset_seconds"} <= {"2", "3"}
    assert value(after, "raftstore_peer_round_trip_seconds_bucket", le="+Inf") > 0
    for name in ("raftstore_raft_snapshots_sent_total", "raftstore_raft_snapshots_received_total",
                 "raftstore_raft_elections_started_total", "raftstore_evaluation_misses_total",
                 "raftstore_node_loop_stalls_total", "raftstore_node_loop_busy_max_seconds",
                 "raftstore_metrics_loop_timeouts_total"):
        assert any(n == name for n, _ in after), name
    # Every range has one leader: the nodes' leaders held add up to the ranges; some node won an election.
    everyone = [scrape(n) for n in cluster.nodes]
    assert sum(value(s, "raftstore_ranges_leading") for s in everyone) >= 1
    assert sum(value(s, "raftstore_raft_elections_started_total") for s in everyone) >= 1
    # No label multiplies with ranges or keys.
    labels = {k for (_, items) in after for k, _ in items}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS


def test_status_json_shows_the_totals_metrics_export(cluster):
    n1 = cluster.node(1)
    with cluster.client(n1) as client:
        client.put(b"status/1", b"x")
    run = subprocess.run([sys.executable, "-m", "raftstore.cli", "status", "--json", "--url", n1.sql_addr],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    metrics = scrape(n1)
    assert status["requests"]["kv"]["put"]["ok"] == value(metrics, "raftstore_kv_requests_total", op="put", outcome="ok")
    totals = status["totals"]
    assert totals["raft"]["entries_applied"] > 0
    assert totals["raft"]["leader_changes"] == value(metrics, "raftstore_raft_leader_changes_total")
    assert totals["ranges"] == value(metrics, "raftstore_ranges")
    assert set(totals["proposals"]) == {dict(items)["where"] for n, items in metrics
                                        if n == "raftstore_raft_proposals_total"}


def test_health_is_ok_and_ready_and_readiness_turns_503_while_the_node_drains(cluster):
    n2 = cluster.node(2)
    assert http_get(n2.http_addr, "/health") == (200, "ok\n")
    wait_until(lambda: http_get(n2.http_addr, "/health?ready=1")[0] == 200, 10 + LIVENESS_MARGIN_S, "n2 ready")
    assert http_get(n2.http_addr, "/health?ready=1") == (200, "ready\n")
    assert http_get(n2.http_addr, "/nope")[0] == 404
    cur = raftstore.connect(n2.sql_addr).cursor()
    cur.execute("CREATE TABLE dropped_while_draining (k INT PRIMARY KEY)")
    cur.execute("SELECT * FROM dropped_while_draining")   # its schema is leased: DROP waits the lease out
    # A statement in flight holds the drain open: DROP TABLE waits for the schema leases to run out.
    outcome: list = []

    def drop() -> None:
        try:
            cur.execute("DROP TABLE dropped_while_draining")
            outcome.append("ok")
        except Exception as exc:   # reported by the assertion below
            outcome.append(exc)
    worker = threading.Thread(target=drop)
    worker.start()
    wait_until(lambda: value(scrape(n2), "raftstore_client_requests_in_flight") >= 1, 10 + LIVENESS_MARGIN_S,
               "the DROP to be in flight on n2")
    os.kill(n2.proc.pid, signal.SIGTERM)
    seen: list = []
    deadline = time.monotonic() + 10 + LIVENESS_MARGIN_S
    while time.monotonic() < deadline and n2.proc.poll() is None:
        try:
            answer = http_get(n2.http_addr, "/health?ready=1")
        except OSError:
            break   # the process is gone
        seen.append(answer)
        if answer[0] == 503:
            break
        time.sleep(0.01)
    assert seen and seen[-1][0] == 503 and "draining" in seen[-1][1], seen[-3:]
    assert http_get(n2.http_addr, "/health")[0] == 200   # still up while it drains
    worker.join(60)
    assert outcome == ["ok"], outcome   # the statement in flight was answered, not cut off
    assert n2.proc.wait(60) == 0
