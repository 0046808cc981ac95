"""Recovery after the leaseholder dies, and the cost of a lease move (issue 12's RTO figures).

    python -m bench.lease_rto [--runs 3] [--matrix symmetric60] [--out DIR]

Starts a fresh 3-node local cluster (optionally under an emulated WAN), keeps one writer and one
strong reader going through the two nodes that will survive, and `kill -9`s the range's
leaseholder. Reports, per run, how long after the kill the first write and the first strong
read were acknowledged (the recovery time: the lease runs out, `--lease-duration`, and an
election; the two overlap), and how long writes waited across a cooperative lease transfer
(`raftstore node lease-transfer`). Results go to bench/results/rto-*.json|md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

from bench.kv_latency import machine_info, machine_line
from raftstore.errors import RaftstoreError
from raftstore.kv import Client
from raftstore.localcluster import Cluster

DATA = 2   # the raw keyspace's range


def _first_success(addrs: list[str], op, stop_at: float) -> float | None:
    """Monotonic time of the first `op(client)` that succeeds, trying until stop_at."""
    with Client(addrs, timeout_s=2.0, attempt_timeout_s_max=1.0) as c:
        while time.monotonic() < stop_at:
            try:
                op(c)
                return time.monotonic()
            except RaftstoreError:
                time.sleep(0.005)
    return None


def one_kill(root: str, extra: list[str]) -> dict:
    with Cluster(root, extra_args=extra) as cluster:
        cluster.client(*cluster.nodes).put(b"rto", b"0")
        holder = cluster.wait_leaseholder(DATA)
        survivors = [n.sql_addr for n in cluster.nodes if n is not holder]
        with Client(survivors, timeout_s=10.0) as c:
            for i in range(20):
                c.put(b"rto", b"%d" % i)   # the lease in use (extended)
        killed = time.monotonic()
        cluster.kill9(holder)
        out: dict = {}

        def measure(name, op):
            at = _first_success(survivors, op, killed + 30.0)
            out[name] = None if at is None else round(at - killed, 3)
        threads = [threading.Thread(target=measure, args=("write_s", lambda c: c.put(b"rto", b"after"))),
                   threading.Thread(target=measure, args=("read_s", lambda c: c.get(b"rto")))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # A cooperative move between the two survivors: the longest wait between writes.
        new = cluster.wait_leaseholder(DATA)
        target = next(n for n in cluster.nodes if n.pid is not None and n is not new)
        gaps = []
        with Client([target.sql_addr], timeout_s=10.0) as c:
            with Client([new.sql_addr]) as h:
                h.lease_transfer(DATA, target.node_id)
            last = time.monotonic()
            end = last + 2.0
            while time.monotonic() < end:
                c.put(b"rto", b"move")
                now = time.monotonic()
                gaps.append(now - last)
                last = now
        out["transfer_max_gap_s"] = round(max(gaps), 3)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lease_rto")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--matrix", default=None, help="a --latency-matrix for the nodes (default: none)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args(argv)
    extra = ["--latency-matrix", args.matrix] if args.matrix else []
    runs = []
    for i in range(args.runs):
        root = tempfile.mkdtemp(prefix="raftstore-rto-")
        try:
            runs.append(one_kill(root, extra))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print("run %d: %s" % (i + 1, runs[-1]), flush=True)
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    os.makedirs(args.out, exist_ok=True)
    name = "rto-%s%s" % (stamp, "-" + args.matrix if args.matrix else "")
    report = {"runs": runs, "matrix": args.matrix, "machine": machine_info(tempfile.gettempdir())}
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = ["# Leaseholder kill -9: recovery (%s)" % (args.matrix or "loopback"), "", machine_line(report["machine"]), "",
             "| run | first write after kill (s) | first strong read after kill (s) | longest write wait across a lease transfer (s) |",
             "|--:|--:|--:|--:|"]
    for i, r in enumerate(runs, 1):
        lines.append("| %d | %s | %s | %s |" % (i, r["write_s"], r["read_s"], r["transfer_max_gap_s"]))
    with open(os.path.join(args.out, name + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
