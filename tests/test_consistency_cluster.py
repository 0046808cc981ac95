"""Consistency checks on real node processes: replicas that hold the same data are found
identical across many ranges, a replica that cannot answer is named within a bounded wait, and a
replica whose SQLite file was changed behind Raft's back is reported - through the KV client,
`raftstore status`, SQL and the log."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys

import pytest

import raftstore
from cluster import LIVENESS_MARGIN_S, Cluster, assert_replicas_identical, wait_until
from raftstore import constants
from test_cluster_kv import Writers


def _status_ranges(cluster, node):
    with cluster.client(node) as c:
        return c.status()["ranges"]


def _sql(node, statement, params=()):
    cur = raftstore.connect(node.sql_addr).cursor()
    cur.execute(statement, list(params))
    return cur.fetchall() if cur.description else None


@pytest.mark.slow
def test_every_range_is_consistent_after_writes_across_several_ranges(tmp_path):
    with Cluster(str(tmp_path), extra_args=["--range-max-bytes", "10000"]) as cluster:
        cluster.wait_leader()
        n1 = cluster.node(1)
        with Writers(cluster, count=4) as writers:
            wait_until(lambda: len(writers.acked) >= 1500, 300, "1500 acknowledged writes")
            assert_replicas_identical(cluster)       # checked while the writes and splits go on
        _sql(n1, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        _sql(n1, "INSERT INTO t VALUES " + ", ".join("(%d, 'row %d')" % (i, i) for i in range(300)))
        # The ranges the INSERT filled go on splitting for a while (a split per maintenance round
        # while a half is still too big): the KV check, the SQL check and every range's last check
        # in the status must agree on one set of ranges, so they are taken again until they do.
        # An inconsistent range fails at once (assert_replicas_identical, the assert below).
        got: dict = {}

        def checks_agree_over_stable_ranges():
            before = {r["range_id"] for r in _status_ranges(cluster, n1)}
            got["results"] = assert_replicas_identical(cluster)
            got["rows"] = _sql(n1, "SELECT range_id, status, detail FROM crdb_internal.check_consistency(true, '', '')")
            assert not [row for row in got["rows"] if row[1] == "inconsistent"], got["rows"]
            got["last"] = {r["range_id"]: r["last_check"] for r in _status_ranges(cluster, n1)}
            return (before == set(got["last"]) == {r["range_id"] for r in got["results"]} == {row[0] for row in got["rows"]}
                    and all(row[1] == "consistent" for row in got["rows"]))   # not "incomplete" (a busy machine)
        wait_until(checks_agree_over_stable_ranges, 180 + LIVENESS_MARGIN_S, "checks that agree over ranges that stopped splitting")
        ranges = set(got["last"])
        assert len(ranges - {1}) >= 4, "only %d data ranges" % len(ranges - {1})
        for r in got["results"]:
            checksums = {checksum for _, checksum, _ in r["replicas"]}
            assert len(r["replicas"]) == 3 and len(checksums) == 1 and None not in checksums, r
        assert all("3 replicas agree" in row[2] for row in got["rows"]), got["rows"]
        assert all(c is not None and c["status"] == "consistent" for c in got["last"].values()), got["last"]


@pytest.mark.slow
def test_a_replica_that_cannot_answer_is_named_within_the_bounded_wait_and_counts_again_once_back(tmp_path):
    with Cluster(str(tmp_path), extra_args=["--range-max-bytes", "20000"]) as cluster:
        cluster.wait_leader()
        with cluster.client() as c:
            for i in range(400):
                c.put(b"key-%05d" % i, b"v" * 60)
        led_by = {r["range_id"]: r["leader"] for r in _status_ranges(cluster, cluster.node(1))}
        frozen = cluster.node(3)
        os.kill(frozen.pid, signal.SIGSTOP)      # up on the network, answering nothing
        try:
            with cluster.client(cluster.node(1)) as c:
                results = c.check_consistency()
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert results and all(r["status"] == "incomplete" for r in results), results
        for r in results:
            if led_by.get(r["range_id"]) != 3:   # a range n3 led cannot commit the check until a new election
                assert "n3 did not report within %g s" % constants.consistency_report_timeout_s in r["detail"], r
                assert "n1, n2 agree at index %d" % r["index"] in r["detail"], r
        assert_replicas_identical(cluster)       # n3 catches up and agrees again


@pytest.mark.slow
def test_a_replica_changed_behind_raft_is_reported_inconsistent_naming_it(tmp_path):
    with Cluster(str(tmp_path), extra_args=["--range-max-bytes", "20000"]) as cluster:
        cluster.wait_leader()
        n1, n3 = cluster.node(1), cluster.node(3)
        with cluster.client() as c:
            for i in range(600):
                c.put(b"key-%05d" % i, b"v" * 60)
        assert_replicas_identical(cluster)
        target = b"kkey-00042"                   # the raw keyspace's prefix k, then the user key
        [victim] = [r for r in _status_ranges(cluster, n1)
                    if r["start"] <= target and (r["end"] is None or target < r["end"])]
        assert cluster.stop(n3) == 0
        db = sqlite3.connect(os.path.join(n3.data_dir, "store.sqlite"))
        with db:
            changed = db.execute("UPDATE versions SET value = ? WHERE key = ?", (b"w" * 60, target)).rowcount
        db.close()
        assert changed == 1
        cluster.start(n3)

        def settled():   # n3 back and caught up: no range is incomplete any more
            nonlocal results
            with cluster.client(n1) as c:
                results = c.check_consistency()
            return all(r["status"] != "incomplete" for r in results)
        results: list = []
        wait_until(settled, 90, "every range's replicas to report (n3 restarting)")
        by_id = {r["range_id"]: r for r in results}
        bad = by_id[victim["range_id"]]
        assert bad["status"] == "inconsistent" and bad["differing"] == [3], bad
        assert bad["detail"].startswith("n3 differs from n1, n2 at index %d" % bad["index"])
        sums = {n: checksum for n, checksum, _ in bad["replicas"]}
        assert sums[1] == sums[2] != sums[3]
        assert all(r["status"] == "consistent" for rid, r in by_id.items() if rid != victim["range_id"])

        with pytest.raises(AssertionError, match="r%d at index" % victim["range_id"]):
            assert_replicas_identical(cluster)
        # The log names the range, the index and every replica's checksum. (Earlier checks, run
        # while n3 was catching up, may have logged the same range at another index.)
        log = open(n1.log_path).read()
        failed = [l for l in log.splitlines() if "consistency check FAILED: r%d[" % victim["range_id"] in l]
        at_index = [l for l in failed if "at index %d:" % bad["index"] in l]
        assert at_index, "no FAILED line for r%d at index %d: %s" % (victim["range_id"], bad["index"], failed)
        line = at_index[0]
        assert all("n%d %s" % (n, sums[n]) in line for n in (1, 2, 3))
        # raftstore status: the last check, and a check run now that fails the command.
        [shown] = [r for r in _status_ranges(cluster, n1) if r["range_id"] == victim["range_id"]]
        assert shown["last_check"]["status"] == "inconsistent"
        cli = subprocess.run([sys.executable, "-m", "raftstore.cli", "status", "--url", n1.sql_addr,
                              "--check-consistency"], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 1, cli
        assert "error: range %d is INCONSISTENT: n3 differs from n1, n2" % victim["range_id"] in cli.stderr
        assert re.search(r"INCONSISTENT at \d+: n3 differs", cli.stdout), cli.stdout
        # SQL.
        rows = _sql(n1, "SELECT range_id, start_key, status, detail FROM crdb_internal.check_consistency(false, '', '')"
                        " WHERE status <> 'consistent'")
        assert [(row[0], row[1], row[2]) for row in rows] == [(victim["range_id"], victim["start"], "inconsistent")]
        assert rows[0][3].startswith("n3 differs from n1, n2 at index")
