"""No lost update on real processes (issue 10): 64 clients increment one row through all three
nodes while the leader of its range is killed (-9) and restarted.

Every acknowledged `UPDATE c SET n = n + 1 WHERE id = 1` applied exactly once, an ambiguous one
(SQLSTATE 40003, or a client-side ambiguous error) at most once, and any other failure not at
all: the final value lies between the acknowledged count and the acknowledged plus ambiguous
count. An update is a read of the row's version and a write conditioned on it, decided at apply
on every replica; a build whose conditioned write ignores the version (a blind write) loses
increments and fails this test (seen: put_if that always swaps).
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

import raftstore
from cluster import LIVENESS_MARGIN_S, Cluster, wait_until
from raftstore.keys import encode_key
from raftstore.sqlclient import wait_for_sql

FIRST_TABLE_ID = 1     # the first table created in a fresh cluster
CLIENTS = 64
ACKED_MIN = 1000
KILL_AFTER_ACKED = 300
RUN_LIMIT_S = 600 + LIVENESS_MARGIN_S      # a bound on the whole run, not a speed claim


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked = self.ambiguous = self.failed = 0
        self.stop = threading.Event()
        self.unexpected: list[str] = []

    def client(self, addresses: list[str]) -> None:
        conn = raftstore.connect(addresses, timeout_s=30)
        cur = conn.cursor()
        while not self.stop.is_set():
            try:
                cur.execute("UPDATE c SET n = n + 1 WHERE id = 1")
                count = cur.rowcount
            except raftstore.sqlclient.Error as exc:
                with self.lock:
                    if getattr(exc, "ambiguous", False):
                        self.ambiguous += 1
                    else:
                        self.failed += 1
                continue
            with self.lock:
                if count == 1:
                    self.acked += 1
                else:
                    self.unexpected.append("rowcount %r" % count)


def _leader_of_row(cluster, node, key: bytes) -> int:
    """The node id leading the range that holds `key`."""
    with cluster.client(node) as kv:
        ranges = kv.status()["ranges"]
    [holder] = [r for r in ranges if r["start"] is not None and r["start"] <= key and (r["end"] is None or key < r["end"])]
    return holder["leader"]


def _hot_row(cluster):
    """Table c with the row (1, 0); returns a cursor and the row's key."""
    cluster.wait_leader()
    conn = raftstore.connect(cluster.nodes[0].sql_addr, timeout_s=60)
    wait_for_sql(conn, 60)
    cur = conn.cursor()
    cur.execute("CREATE TABLE c (id INT PRIMARY KEY, n INT)")
    cur.execute("INSERT INTO c VALUES (1, 0)")
    return cur, b"t" + encode_key((FIRST_TABLE_ID, 1))


@contextlib.contextmanager
def _incrementing(cluster):
    """CLIENTS clients running the UPDATE through all three nodes until the block ends."""
    addrs = [n.sql_addr for n in cluster.nodes]
    tally = Tally()
    threads = [threading.Thread(target=tally.client, args=(addrs[i % 3:] + addrs[:i % 3],), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        yield tally
    finally:
        tally.stop.set()
        for t in threads:
            t.join(120)
    assert not any(t.is_alive() for t in threads), "a client did not stop"
    assert not tally.unexpected, tally.unexpected[:5]


@pytest.mark.slow
def test_concurrent_increments_lose_nothing_across_a_leader_kill(tmp_path):
    with Cluster(str(tmp_path)) as cluster:
        cur, key = _hot_row(cluster)
        with _incrementing(cluster) as tally:
            began = time.monotonic()
            wait_until(lambda: tally.acked >= KILL_AFTER_ACKED, RUN_LIMIT_S, "%d acknowledged updates" % KILL_AFTER_ACKED)
            victim = cluster.node(_leader_of_row(cluster, cluster.nodes[0], key))
            cluster.kill9(victim)
            time.sleep(1.0)
            cluster.start(victim)
            left = max(60.0, RUN_LIMIT_S - (time.monotonic() - began))
            wait_until(lambda: tally.acked >= ACKED_MIN, left, "%d acknowledged updates" % ACKED_MIN)
        addrs = [n.sql_addr for n in cluster.nodes]
        final = []

        def read_final():
            try:
                final[:] = raftstore.connect(addrs, timeout_s=30).cursor().execute("SELECT n FROM c WHERE id = 1").fetchall()
                return True
            except raftstore.sqlclient.OperationalError:
                return False
        wait_until(read_final, 60 + LIVENESS_MARGIN_S, "the final value")
        [(n,)] = final
        assert tally.acked <= n <= tally.acked + tally.ambiguous, (
            "final n=%d outside [acked %d, acked + ambiguous %d] (failed: %d)"
            % (n, tally.acked, tally.acked + tally.ambiguous, tally.failed))


@pytest.mark.slow
def test_with_a_stable_leader_no_condition_evaluated_by_the_leader_fails_at_apply(tmp_path):
    # The leader evaluates each conditioned write under its key's latch, held until the write
    # applies, so with no leader change apply never finds false a condition the leader found
    # true (status: evaluation_misses). Without latches, two writes evaluated against the same
    # version both pass evaluation and the second fails at apply.
    with Cluster(str(tmp_path)) as cluster:
        cur, key = _hot_row(cluster)
        leader_before = _leader_of_row(cluster, cluster.nodes[0], key)
        with _incrementing(cluster) as tally:
            wait_until(lambda: tally.acked >= 300, RUN_LIMIT_S, "300 acknowledged updates")
        if _leader_of_row(cluster, cluster.nodes[0], key) != leader_before:
            pytest.skip("the range's leader changed during the run; nothing to conclude")
        misses = {}
        for node in cluster.nodes:
            with cluster.client(node) as kv:
                misses[node.node_id] = kv.status()["evaluation_misses"]
        assert misses == {1: 0, 2: 0, 3: 0}, "conditions the leader found true failed at apply: %s" % misses
        [(n,)] = cur.execute("SELECT n FROM c WHERE id = 1").fetchall()
        assert tally.acked <= n <= tally.acked + tally.ambiguous
