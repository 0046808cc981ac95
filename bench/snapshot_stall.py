"""How long a node's loop stalls while a multi-MiB range is snapshotted and installed.

    python -m bench.snapshot_stall [--range-mib 8] [--value-kib 8] [--compaction-entries 400] [--label NAME]

A fresh 3-node local cluster (real processes, loopback, no emulated latency). The data keyspace
is split in two ranges by request: a *big* range is loaded with --range-mib of data, a *probe*
range takes one small write at a time all along (through n1 and, once it is back, through n3),
so the probe's latency is what another group's clients see. Then:
  * compact: n3 is stopped and the big range takes --compaction-entries small writes, so n1 and
    n2 compact its log: each writes a snapshot of the whole range;
  * catch-up: n3 restarts behind the compacted log and catches up from the leader's snapshot
    (sent in chunks, installed on n3).
Each node reports every loop iteration of 20 ms or more (status `loop_stalls`); the bench
reports, per phase and node, the longest iteration and the probe's worst latency. Results:
bench/results/snapshot-stall-<label>-<time>.json|md. (A node's loop also stalls for reasons of
its own -- applying a backlog of entries in one tick after a restart, a big apply batch under
load -- so the phases bound the snapshot's share from above.)

`--micro` times, in one process on real SQLite, each loop-side step of creating and installing
a snapshot the old way and the new, and how late a 5 ms ticker gets while the threaded parts
run (GIL contention): bench/results/snapshot-micro-<label>-<time>.json.

To measure code without `loop_stalls` (e.g. main before this change), run from a copy of that
tree whose node.py has the same few lines of instrumentation (see the report in the results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

from raftstore.errors import RaftstoreError
from raftstore.localcluster import Cluster


class Probe(threading.Thread):
    """One small write at a time to the probe range through `node`; records (start, latency)."""

    def __init__(self, cluster: Cluster, node, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.cluster, self.node = cluster, node
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        client = None
        while not self.stop.is_set():
            if client is None:
                client = self.cluster.client(self.node, timeout_s=10.0)
            t0 = time.time()
            try:
                client.put(b"probe-%s-%08d" % (self.name.encode(), i), b"p" * 32)
                self.samples.append((t0, time.time() - t0))
            except RaftstoreError:
                self.errors += 1
                client.close()
                client = None
                self.stop.wait(0.2)
            i += 1
        if client is not None:
            client.close()


class StallWatch(threading.Thread):
    """Polls every node's status; keeps each loop stall once, with its node."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stalls: set[tuple[int, float, float]] = set()
        self.status: dict[int, dict] = {}
        self.stop = threading.Event()

    def poll_once(self) -> None:
        for n in self.cluster.nodes:
            if n.proc is None or n.proc.poll() is not None:
                continue
            try:
                with self.cluster.client(n, timeout_s=3.0) as c:
                    st = c.status()
            except Exception:
                continue
            self.status[n.node_id] = st
            for t, ms in st.get("loop_stalls", []):
                self.stalls.add((n.node_id, t, ms))

    def run(self) -> None:
        while not self.stop.wait(0.3):
            self.poll_once()


def load(cluster: Cluster, total_bytes: int, value_bytes: int, threads: int = 6) -> int:
    count = total_bytes // value_bytes
    next_i = iter(range(count))
    lock = threading.Lock()

    def worker():
        with cluster.client(cluster.nodes[0], cluster.nodes[1]) as c:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                c.put(b"big-%08d" % i, os.urandom(value_bytes))
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return count


def micro(range_mib: float, value_bytes: int) -> dict:
    """In one process, real SQLite: how long each loop-side step of a snapshot takes, the old
    way (everything on the loop) and the new (pin on the loop, write/stage on a thread, switch on
    the loop), plus how late a 5 ms ticker thread gets while the threaded work runs (the GIL)."""
    from raftstore.kvserver.ranges import RangeDescriptor
    from raftstore.kvserver.replica import RangeReplica
    from raftstore.storage.mvcc import MVCCStore
    d = tempfile.mkdtemp(prefix="raftstore-snapmicro-")
    out: dict = {}
    try:
        n = int(range_mib * (1 << 20)) // value_bytes
        rows = [(b"k%09d" % i, (100, 0), os.urandom(value_bytes)) for i in range(n)]
        src = MVCCStore(os.path.join(d, "src.db"))
        for i in range(0, n, 5000):
            src.apply(2, 1 + i // 5000, rows[i:i + 5000])
        index = src.applied_index(2)
        desc = RangeDescriptor(2, b"k", b"l", 0, (1, 2, 3))
        leader = RangeReplica(src, 2)
        leader.desc = desc
        out["rows"] = n

        def timed(fn):
            t = time.perf_counter()
            r = fn()
            return r, round(1000 * (time.perf_counter() - t), 1)

        def ticker_during(fn):
            """Run fn on a thread while this thread ticks every 5 ms; worst lateness of a tick."""
            done = threading.Event()
            worst = 0.0
            th = threading.Thread(target=lambda: (fn(), done.set()))
            th.start()
            while not done.is_set():
                t = time.perf_counter()
                time.sleep(0.005)
                worst = max(worst, time.perf_counter() - t - 0.005)
            th.join()
            return round(1000 * worst, 1)

        path = os.path.join(d, "dump")
        with open(path, "wb") as f:
            _, out["old_export_on_loop_ms"] = timed(lambda: leader.write_snapshot(f, index))
        write, out["new_export_pin_on_loop_ms"] = timed(lambda: leader.snapshot_writer(index))
        with open(path + ".2", "wb") as f:
            out["new_export_thread_tick_late_ms"] = ticker_during(lambda: write(f))
        for case in ("empty", "behind"):
            for how in ("old", "new"):
                dst = MVCCStore(os.path.join(d, "%s-%s.db" % (case, how)))
                if case == "behind":   # held the range until a little before the snapshot
                    for i in range(0, n - n // 50, 5000):
                        dst.apply(2, 1 + i // 5000, rows[i:min(i + 5000, n - n // 50)])
                rep = RangeReplica(dst, 2)
                with open(path, "rb") as f:
                    if how == "old":
                        _, out["%s_install_old_on_loop_ms" % case] = timed(lambda: rep.read_snapshot(f, index + 1))
                    else:
                        box = {}
                        out["%s_install_new_stage_thread_tick_late_ms" % case] = ticker_during(
                            lambda: box.setdefault("s", rep.stage_snapshot(f, index + 1)))
                        _, out["%s_install_new_switch_on_loop_ms" % case] = timed(
                            lambda: rep.install_staged(box["s"], index + 1))
                dst.close()
        src.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.snapshot_stall", description=__doc__.splitlines()[0])
    p.add_argument("--range-mib", type=float, default=8.0)
    p.add_argument("--value-kib", type=float, default=8.0)
    p.add_argument("--compaction-entries", type=int, default=400)
    p.add_argument("--label", default="run")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--micro", action="store_true", help="only the in-process step timings (no cluster)")
    args = p.parse_args()
    if args.micro:
        res = micro(args.range_mib, int(args.value_kib * 1024))
        print(json.dumps(res, indent=2))
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "snapshot-micro-%s-%s.json" % (args.label, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))), "w") as f:
            json.dump(res, f, indent=2)
        return 0
    root = tempfile.mkdtemp(prefix="raftstore-snapstall-")
    phases: dict[str, tuple[float, float]] = {}
    try:
        cluster = Cluster(root, extra_args=["--range-max-bytes", str(1 << 30),
                                            "--log-compaction-entries", str(args.compaction_entries)])
        with cluster:
            cluster.wait_leader()
            n1, n3 = cluster.nodes[0], cluster.nodes[2]
            with cluster.client(n1) as c:
                c.split(b"m")          # big range [.., m): "big-..."; probe range [m, ..): "probe-..."
            watch = StallWatch(cluster)
            watch.start()
            probe1 = Probe(cluster, n1, "n1")
            probe1.start()
            t = time.time()
            rows = load(cluster, int(args.range_mib * (1 << 20)), int(args.value_kib * 1024))
            phases["load"] = (t, time.time())
            print("loaded %d rows (%.1f MiB) in %.1f s" % (rows, args.range_mib, phases["load"][1] - t), flush=True)
            time.sleep(2.0)

            assert cluster.stop(n3) == 0
            t = time.time()
            with cluster.client(n1) as c:
                for i in range(args.compaction_entries + 50):
                    c.put(b"big-%08d" % (i % 50), b"s" * 16)
            time.sleep(3.0)   # let the compactions finish (threaded ones run after the writes)
            phases["compact"] = (t, time.time())
            print("compact phase %.1f s" % (phases["compact"][1] - t), flush=True)

            cluster.start(n3)
            t = time.time()
            probe3 = Probe(cluster, n3, "n3")
            probe3.start()
            deadline = t + 120
            installed = False
            while time.time() < deadline:
                st = watch.status.get(3, {})
                rs = [r for r in st.get("ranges", []) if r["range_id"] != 1]
                if rs and sum(r.get("snapshots_installed", 0) for r in rs) > 0:
                    lead = watch.status.get(1, {})
                    want = {r["range_id"]: r["applied_index"] for r in lead.get("ranges", [])}
                    if all(r["applied_index"] >= want.get(r["range_id"], 0) - 60 for r in rs):
                        installed = True
                        break
                time.sleep(0.3)
            time.sleep(2.0)
            phases["catch-up"] = (t, time.time())
            print("catch-up phase %.1f s (snapshot installed: %s)" % (phases["catch-up"][1] - t, installed), flush=True)
            watch.poll_once()
            probe1.stop.set()
            probe3.stop.set()
            watch.stop.set()
            probe1.join(15)
            probe3.join(15)
            created = {nid: sum(r.get("snapshots_created", 0) or 0 for r in st.get("ranges", []))
                       for nid, st in watch.status.items()}
            installed_n = {nid: sum(r.get("snapshots_installed", 0) for r in st.get("ranges", []))
                           for nid, st in watch.status.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result = {"label": args.label, "range_mib": args.range_mib, "value_kib": args.value_kib,
              "compaction_entries": args.compaction_entries, "snapshot_installed": installed,
              "snapshots_created": created, "snapshots_installed": installed_n, "phases": {}}
    for name, (a, b) in phases.items():
        per_node = {}
        for nid in (1, 2, 3):
            ms = [s for n, t, s in watch.stalls if n == nid and a <= t <= b]
            per_node["n%d" % nid] = {"longest_ms": max(ms, default=0.0), "stalls_over_20ms": len(ms),
                                     "over_100ms": sum(1 for s in ms if s >= 100)}
        probes = {}
        for pr in (probe1, probe3):
            lat = sorted(l for t0, l in pr.samples if a <= t0 <= b)
            probes["via " + pr.name] = {"writes": len(lat), "max_ms": round(1000 * lat[-1], 1) if lat else None,
                                        "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None}
        result["phases"][name] = {"seconds": round(b - a, 1), "loop": per_node, "probe": probes}
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(args.out, "snapshot-stall-%s-%s" % (args.label, stamp))
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=2)
    lines = ["# snapshot stall: %s (%.0f MiB range, %.0f KiB values)" % (args.label, args.range_mib, args.value_kib), "",
             "| phase | node | longest loop iteration ms | iterations >= 20 ms | >= 100 ms |", "|---|---|---|---|---|"]
    for name, ph in result["phases"].items():
        for node, v in ph["loop"].items():
            lines.append("| %s | %s | %.1f | %d | %d |" % (name, node, v["longest_ms"], v["stalls_over_20ms"], v["over_100ms"]))
    lines += ["", "| phase | probe (other range) | writes | p50 ms | max ms |", "|---|---|---|---|---|"]
    for name, ph in result["phases"].items():
        for pname, v in ph["probe"].items():
            lines.append("| %s | %s | %d | %s | %s |" % (name, pname, v["writes"], v["p50_ms"], v["max_ms"]))
    lines += ["", "snapshots created per node: %s; installed: %s" % (created, installed_n)]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
