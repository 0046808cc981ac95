"""Saved command outcomes after many splits: do splits multiply them? (issue 10, deterministic dedup)

    python -m bench.dedup_splits [--range-max-bytes 16384] [--rows 300] [--updates 15] [--label NAME]

Why: a range saves the outcome of every command id it applied, so a retried command gets its
first answer. Before issue 10 a split copied all of the parent's outcomes into the new range,
so with small ranges the outcome tables multiplied with every split and statements slowed to
their timeout. This scenario is the issue's measurement, from outside, on real processes:

  1. start 3 `raftstore start` processes (raftstore.localcluster) with --range-max-bytes;
  2. through one node's SQL port run 2 + --updates statements over --rows rows: CREATE TABLE,
     one INSERT of every row (--pad-bytes of text each), then UPDATEs of every row, timing each
     statement (its error, if it failed, is recorded: the client's timeout is 15 s);
  3. stop the nodes (SIGTERM) and, in each node's SQLite store file (read-only), count the
     range records (`range_state`), the saved outcomes (`command_results`) and the distinct
     command ids among them.

The run is as good as `outcomes_per_command` (saved outcomes / distinct command ids, per node):
about 1 when each outcome is kept once, about the number of splits an outcome lived through
when splits copy them. Output: one JSON summary on stdout, and
bench/results/dedup-splits-<label>-<UTC time>.json.
It runs the same against builds from before issue 10 (only SQL and the store file's tables are
used): `PYTHONPATH=<old checkout> python -m bench.dedup_splits --label before`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass

import raftstore
from raftstore.kvserver.ranges import META_RANGE_ID
from raftstore.localcluster import Cluster
from raftstore.sqlclient import wait_for_sql

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class DedupConfig:
    range_max_bytes: int = 16384
    rows: int = 300
    updates: int = 15
    pad_bytes: int = 100
    statement_timeout_s: float = 15.0    # the SQL client's default (constants.client_timeout_s_default)


def store_counts(path: str) -> dict:
    """Range records, saved outcomes and distinct command ids in one node's store file."""
    with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True)) as conn:
        (ranges,) = conn.execute("SELECT count(*) FROM range_state").fetchone()
        saved, distinct = conn.execute("SELECT count(*), count(DISTINCT command_id) FROM command_results").fetchone()
    return {"range_records": ranges, "saved_outcomes": saved, "distinct_commands": distinct,
            "outcomes_per_command": round(saved / distinct, 2) if distinct else None}


def splits_settled(cluster: Cluster, range_max_bytes: int, timeout_s: float) -> int:
    """The number of ranges once every range's leader reports its size, no larger than
    `range_max_bytes` (splits run behind the writes, after them when the statements are quick),
    waited for at most `timeout_s`; raises TimeoutError with the last view otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        big, count = [], 0
        for node in cluster.nodes:
            with cluster.client(node) as client:
                status = client.status()
            count = max(count, len(status["ranges"]))
            big += [r["range_id"] for r in status["ranges"]
                    if r["leader"] == status["node_id"] and r["range_id"] != META_RANGE_ID   # meta never splits
                    and (r["bytes"] is None or r["bytes"] > range_max_bytes)]
        if not big:
            return count
        if time.monotonic() > deadline:
            raise TimeoutError("ranges %s still above %d bytes after %.0f s" % (big, range_max_bytes, timeout_s))
        time.sleep(0.2)


def run_once(cfg: DedupConfig, root: str) -> dict:
    """One run in `root` (an existing empty directory); every node is stopped on every exit."""
    statements = []
    with Cluster(root, extra_args=["--range-max-bytes", str(cfg.range_max_bytes)]) as cluster:
        cluster.wait_leader()
        conn = raftstore.connect(cluster.nodes[0].sql_addr, timeout_s=cfg.statement_timeout_s)
        try:
            wait_for_sql(conn, 60)
            cur = conn.cursor()
            pad = "x" * cfg.pad_bytes
            sqls = ["CREATE TABLE dedup (id INT PRIMARY KEY, n INT, pad TEXT)",
                    "INSERT INTO dedup VALUES " + ", ".join("(%d, 0, '%s')" % (i, pad) for i in range(cfg.rows))]
            sqls += ["UPDATE dedup SET n = n + 1"] * cfg.updates
            for sql in sqls:
                t0 = time.monotonic()
                error = None
                try:
                    cur.execute(sql)
                except raftstore.sqlclient.Error as exc:   # the measurement: a statement that failed
                    error = "%s: %s" % (type(exc).__name__, exc)
                statements.append({"sql": sql[:40], "seconds": round(time.monotonic() - t0, 3), "error": error})
            ranges = splits_settled(cluster, cfg.range_max_bytes, cfg.statement_timeout_s)
        finally:
            conn.close()
        for node in cluster.nodes:
            cluster.stop(node)
        nodes = {node.node_id: store_counts(os.path.join(node.data_dir, "store.sqlite")) for node in cluster.nodes}
    return {"config": asdict(cfg), "ranges_at_end": ranges, "statements": statements, "nodes": nodes,
            "failed_statements": sum(1 for s in statements if s["error"]),
            "slowest_statement_s": max(s["seconds"] for s in statements)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dedup_splits", description=__doc__.splitlines()[0])
    p.add_argument("--range-max-bytes", type=int, default=DedupConfig.range_max_bytes)
    p.add_argument("--rows", type=int, default=DedupConfig.rows)
    p.add_argument("--updates", type=int, default=DedupConfig.updates)
    p.add_argument("--pad-bytes", type=int, default=DedupConfig.pad_bytes)
    p.add_argument("--label", default="run")
    args = p.parse_args(argv)
    cfg = DedupConfig(range_max_bytes=args.range_max_bytes, rows=args.rows, updates=args.updates,
                      pad_bytes=args.pad_bytes)
    with tempfile.TemporaryDirectory(prefix="raftstore-dedup-") as root:
        report = run_once(cfg, root)
    report["label"] = args.label
    os.makedirs(RESULTS_DIR, exist_ok=True)
    out = os.path.join(RESULTS_DIR, "dedup-splits-%s-%s.json" % (args.label, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: report[k] for k in ("label", "ranges_at_end", "failed_statements", "slowest_statement_s", "nodes")}))
    print("statement seconds:", [s["seconds"] for s in report["statements"]])
    print("written to", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
