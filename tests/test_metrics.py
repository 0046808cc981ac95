"""The metrics' pure parts and the HTTP port in-process, on a real loopback socket (issue 16)."""

from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster import free_ports, http_get
from raftstore.node.metrics import LoopSample, NodeMetrics, outcome_label, statement_type
from raftstore.server.http_port import HttpPort


@pytest.mark.parametrize("sql, kind", [
    ("SELECT 1", "select"), ("  insert into t values (1)", "insert"), ("(SELECT 1)", "select"),
    ("DROP TABLE t;", "drop"), ("commit;", "commit"), ("WITH x AS (SELECT 1) SELECT * FROM x", "with"),
    ("FROBNICATE everything", "other"), ("", "other"), ("   ", "other"), (None, "other"), (42, "other"),
])
def test_a_statements_type_is_its_first_keyword_from_a_fixed_list(sql, kind):
    assert statement_type(sql) == kind


@pytest.mark.parametrize("code, label", [
    ("unavailable", "unavailable"), ("undefined_table", "undefined_table"), (None, "error"), ("", "error"),
    ("x" * 41, "error"), ("bad label\"}", "error"), (7, "error"),
])
def test_an_outcome_label_is_a_code_of_the_servers_vocabulary_or_error(code, label):
    assert outcome_label(code) == label


def test_two_nodes_in_one_process_keep_their_figures_apart():
    a, b = NodeMetrics(), NodeMetrics()
    a.observe_kv("put", "ok", 0.01)
    a.observe_sql("select", "ok", 0.02)
    assert a.counts() == {"kv": {"put": {"ok": 1}}, "sql": {"select": {"ok": 1}}}
    assert b.counts() == {"kv": {}, "sql": {}}


def _serve(metrics: NodeMetrics, not_ready):
    port = free_ports(1)[0]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    http = HttpPort(sock, metrics.registry, not_ready)
    http.start()
    return http, "127.0.0.1:%d" % port


def test_health_answers_while_up_and_readiness_says_why_not():
    why = ["the cluster has not formed yet"]
    http, base = _serve(NodeMetrics(), lambda: why[0])
    try:
        assert http_get(base, "/health") == (200, "ok\n")
        assert http_get(base, "/health?ready=1") == (503, "not ready: the cluster has not formed yet\n")
        why[0] = None
        assert http_get(base, "/health?ready=1") == (200, "ready\n")
        assert http_get(base, "/metricz")[0] == 404
    finally:
        http.close()


def test_a_scrape_the_node_loop_does_not_answer_leaves_its_figures_out_and_counts_the_miss():
    metrics = NodeMetrics()
    asked = []
    metrics.registry.register(LoopSample(lambda timeout_s: asked.append(timeout_s)))   # answers None
    metrics.observe_kv("get", "ok", 0.003)
    http, base = _serve(metrics, lambda: None)
    try:
        status, text = http_get(base, "/metrics")
    finally:
        http.close()
    assert status == 200 and asked
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["raftstore_metrics_loop_timeouts_total"] == 1
    assert "raftstore_ranges" not in samples
    assert samples["raftstore_kv_requests_total"] == 1
    assert samples["raftstore_kv_request_duration_seconds_count"] == 1
