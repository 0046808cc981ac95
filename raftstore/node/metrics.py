"""A node's metrics, in one registry of its own, for `/metrics` (raftstore/server/http_port.py).

Why a registry per node, not prometheus-client's global one: tests run nodes in their own
process, and two nodes' figures must never add up in one set of series.

Invariants:
- No label takes a range id, a key or anything a client chooses: a label's values are a short
  fixed list (an op, an outcome code, a statement type, a peer of this cluster), so 1,000 ranges
  are still one series per figure.
- Nothing here touches the store from another thread. Two kinds of figure:
  * observed where they happen (`NodeMetrics`: prometheus-client's own thread-safe counters and
    histograms) - client requests on the asyncio thread, journal fsyncs and peer round trips on
    the node loop;
  * sampled at scrape time (`LoopSample`): the scraping thread asks the node loop for its
    running totals (`Node.counters`) and waits at most `metrics_loop_wait_s`; without an answer
    that scrape leaves them out and counts the miss.
Counters only go up: a total summed over ranges only grows, since a node never drops a range
while it runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from raftstore import constants
from raftstore.raft.journal import RealLogFile

__all__ = ["NodeMetrics", "LoopSample", "TimedLogFile", "statement_type", "SQL_TYPES"]

_REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_RTT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# A statement's type is its first keyword, from this list (anything else is "other").
SQL_TYPES = frozenset({"select", "insert", "upsert", "update", "delete", "create", "drop", "alter", "show",
                       "explain", "begin", "commit", "rollback", "set", "with", "values"})


def statement_type(sql: Any) -> str:
    """The type label of a statement's text: its first keyword, lower-cased, if it is one of
    SQL_TYPES, else "other" (never the text itself: a label's values stay few)."""
    if not isinstance(sql, str):
        return "other"
    word = sql.lstrip(" \t\r\n(").split(None, 1)[0].lower() if sql.strip(" \t\r\n(") else ""
    word = word.rstrip(";")
    return word if word in SQL_TYPES else "other"


def outcome_label(code: Any) -> str:
    """An error code as a label value: codes come from the server's own fixed vocabulary; anything
    that does not look like one is "error"."""
    if isinstance(code, str) and 0 < len(code) <= 40 and code.replace("_", "").isalnum():
        return code
    return "error"


class NodeMetrics:
    """The figures observed where they happen, in the node's own registry (`registry`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.kv_requests = Counter("raftstore_kv_requests", "KV requests on the client port, by op and outcome "
                                   "(ok or the error code answered)", ["op", "outcome"], registry=r)
        self.kv_seconds = Histogram("raftstore_kv_request_duration_seconds", "Time to answer a KV request on "
                                    "the client port, by op", ["op"], buckets=_REQUEST_BUCKETS_S, registry=r)
        self.sql_statements = Counter("raftstore_sql_statements", "SQL statements served by this node's gateway, "
                                      "by type (first keyword) and outcome (ok or the error code)",
                                      ["type", "outcome"], registry=r)
        self.sql_seconds = Histogram("raftstore_sql_statement_duration_seconds", "Time to answer a SQL statement, "
                                     "by type", ["type"], buckets=_REQUEST_BUCKETS_S, registry=r)
        self.client_in_flight = Gauge("raftstore_client_requests_in_flight", "Client requests being answered",
                                      registry=r)
        self.client_connections = Gauge("raftstore_client_connections", "Open client connections", registry=r)
        self.journal_fsync_seconds = Histogram("raftstore_journal_fsync_duration_seconds", "Time of one fsync "
                                               "of a range's Raft journal", buckets=_FSYNC_BUCKETS_S, registry=r)
        self.peer_rtt_seconds = Histogram("raftstore_peer_round_trip_seconds", "Round trip of a clock probe on "
                                          "a peer link (heartbeat and its echo)", buckets=_RTT_BUCKETS_S,
                                          registry=r)

    def observe_kv(self, op: str, outcome: str, seconds: float) -> None:
        self.kv_requests.labels(op, outcome).inc()
        self.kv_seconds.labels(op).observe(seconds)

    def observe_sql(self, kind: str, outcome: str, seconds: float) -> None:
        self.sql_statements.labels(kind, outcome).inc()
        self.sql_seconds.labels(kind).observe(seconds)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """The client port's request totals, as `raftstore status` shows them:
        {"kv": {op: {outcome: n}}, "sql": {type: {outcome: n}}}."""
        return {"kv": _totals(self.kv_requests, "op", "outcome"),
                "sql": _totals(self.sql_statements, "type", "outcome")}


class TimedLogFile(RealLogFile):
    """A journal file on the real disk whose fsyncs are timed into a histogram."""

    def __init__(self, path: str, fsync_seconds: Histogram) -> None:
        super().__init__(path)
        self._fsync_seconds = fsync_seconds

    def sync(self) -> None:
        began = time.perf_counter()
        super().sync()
        self._fsync_seconds.observe(time.perf_counter() - began)


class LoopSample:
    """A prometheus-client collector of the node loop's running totals, asked for at scrape
    time: `ask(timeout_s)` returns `Node.counters()` computed on the loop, or None if the loop
    did not answer in time (that scrape then leaves those figures out)."""

    def __init__(self, ask: Callable[[float], dict | None]) -> None:
        self._ask = ask
        self.misses = 0
        self._lock = threading.Lock()   # scrapes run on threads of their own

    def describe(self) -> Iterable[Metric]:
        return []   # families vary with what the loop answers: not registered up front

    def collect(self) -> Iterable[Metric]:
        c = self._ask(constants.metrics_loop_wait_s)
        miss = CounterMetricFamily("raftstore_metrics_loop_timeouts", "Scrapes the node loop did not answer "
                                   "within %.1f s (their loop figures were left out)" % constants.metrics_loop_wait_s)
        if c is None:
            with self._lock:
                self.misses += 1
            miss.add_metric([], self.misses)
            yield miss
            return
        miss.add_metric([], self.misses)
        yield miss
        yield _gauge("raftstore_cluster_formed", "1 once the cluster has formed", int(c["formed"]))
        yield _gauge("raftstore_peers_connected", "Peer nodes linked to this one", c["peers_connected"])
        yield _gauge("raftstore_ranges", "Range replicas hosted by this node", c["ranges"])
        yield _gauge("raftstore_ranges_leading", "Ranges whose Raft leader is this node", c["leading"])
        proposals = CounterMetricFamily("raftstore_raft_proposals", "Client commands proposed to Raft, by "
                                        "where: here (this node leads), forwarded (to the leader's node), "
                                        "for_peers (handed here by a follower's node), as_follower (left to "
                                        "pysyncobj)", labels=["where"])
        for where, n in sorted(c["proposals"].items()):
            proposals.add_metric([where], n)
        yield proposals
        raft = c["raft"]
        yield _counter("raftstore_raft_entries_applied", "Raft log entries applied", raft["entries_applied"])
        yield _counter("raftstore_raft_elections_started", "Elections this node's replicas started",
                       raft["elections_started"])
        yield _counter("raftstore_raft_leader_changes", "Changes of a range's leader seen by this node",
                       raft["leader_changes"])
        yield _counter("raftstore_raft_snapshots_sent", "Snapshots sent whole to a follower", raft["snapshots_sent"])
        yield _counter("raftstore_raft_snapshots_received", "Snapshots received and installed",
                       raft["snapshots_received"])
        yield _counter("raftstore_raft_snapshots_created", "Snapshots written for log compaction",
                       raft["snapshots_created"])
        yield _counter("raftstore_evaluation_misses", "Writes evaluated at the leader whose condition no longer "
                       "held at apply", c["evaluation_misses"])
        router = CounterMetricFamily("raftstore_router_events", "Router events: lookup (cache miss), redirect "
                                     "(sent again by returned descriptors), backoff, not_leader", labels=["event"])
        for event, n in sorted(c["router"].items()):
            router.add_metric([event], n)
        yield router
        yield _gauge("raftstore_router_cache_ranges", "Ranges in the router's cache", c["router_cached"])
        yield _gauge("raftstore_latches_held", "Key latches held by writes being evaluated", c["latches_held"])
        yield _counter("raftstore_node_loop_stalls", "Node-loop iterations busy for at least %d ms"
                       % constants.loop_stall_report_ms, c["loop_stalls"])
        yield _gauge("raftstore_node_loop_busy_max_seconds", "Longest node-loop iteration since start",
                     c["loop_busy_max_s"])
        yield _gauge("raftstore_clock_serving", "1 while this node's clock is fit to serve", int(c["clock_serving"]))
        yield _counter("raftstore_clock_offset_errors", "Peer clock readings refused as too far off",
                       c["clock_offset_errors"])
        offsets = GaugeMetricFamily("raftstore_clock_offset_seconds", "A peer's clock minus ours, as last "
                                    "measured", labels=["peer"])
        for peer, seconds in sorted(c["clock_offsets_s"].items()):
            offsets.add_metric([str(peer)], seconds)
        yield offsets


def _totals(counter: Counter, first: str, second: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out.setdefault(sample.labels[first], {})[sample.labels[second]] = int(sample.value)
    return out


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
