"""Idle cost and write latency as a node hosts more ranges (issue 4's bench).

    python -m bench.ranges_idle [--ranges 1,100,1000] [--idle-seconds 10] [--write-seconds 10]

Starts a fresh 3-node local cluster, then for each range count: splits the data keyspace by
request until it has that many data ranges, lets the cluster go quiet, measures the idle CPU of
every node process (from /proc, as % of one core) and then single-client write latency to keys
spread over all ranges. Results go to bench/results/ranges-*.json|md and latest-ranges.md.
Targets (issue 4): under 10 % of one core idle at 100 ranges per node; write latency with
1,000 ranges within 10 % of the latency with 1 range.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time

from bench.kv_latency import machine_info, machine_line, summarise_latencies
from raftstore.kv import Client
from raftstore.localcluster import Cluster

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def idle_cpu(cluster: Cluster, seconds: float) -> list[float]:
    pids = [n.proc.pid for n in cluster.nodes]
    before = [cpu_ticks(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return [100.0 * (cpu_ticks(p) - b) / CLK_TCK / elapsed for p, b in zip(pids, before)]


def split_to(client: Client, have: int, want: int) -> int:
    """Split at evenly spaced keys until there are `want` data ranges; returns the count."""
    for i in range(have, want):
        client.split(b"r%06d" % (i * 1000))
    return want


def write_latency(client: Client, ranges: int, seconds: float) -> dict:
    rng = random.Random(7)
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        key = b"r%06d-%d" % (rng.randrange(max(ranges, 1)) * 1000, rng.getrandbits(32))
        t = time.perf_counter()
        client.put(key, b"v" * 100)
        samples.append(time.perf_counter() - t)
    return summarise_latencies(samples, seconds)


def pyspy_top(pid: int, seconds: int, out_path: str, top: int = 8) -> str | None:
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(__import__("sys").executable), "py-spy")
    if not os.path.exists(exe):
        return None
    try:
        subprocess.run([exe, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw",
                        "--output", out_path, "--nonblocking"], capture_output=True, timeout=seconds + 30)
    except (OSError, subprocess.SubprocessError):
        return None
    if not os.path.exists(out_path):
        return None
    self_counts: dict[str, int] = {}
    total = 0
    with open(out_path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            leaf = stack.split(";")[-1]
            self_counts[leaf] = self_counts.get(leaf, 0) + int(count)
            total += int(count)
    best = sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]
    return "; ".join("%s %.0f%%" % (name, 100.0 * n / total) for name, n in best) if total else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ranges_idle", description=__doc__.splitlines()[0])
    p.add_argument("--ranges", default="1,100,1000")
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--write-seconds", type=float, default=10.0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--profile-writes", action="store_true",
                   help="also py-spy the node written through, during the writes at the largest range count")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.ranges.split(",")]
    root = tempfile.mkdtemp(prefix="raftstore-bench-ranges-")
    rows = []
    os.makedirs(args.out, exist_ok=True)
    try:
        machine = machine_info(root)
        with Cluster(root) as cluster:
            cluster.wait_leader()
            client = cluster.client(timeout_s=60.0)
            have = 1
            for want in counts:
                t0 = time.monotonic()
                have = split_to(client, have, want)
                split_s = time.monotonic() - t0
                time.sleep(5.0)   # let the new groups elect and go quiet
                cpu = idle_cpu(cluster, args.idle_seconds)
                profile = None
                if want == max(counts):
                    profile = pyspy_top(cluster.nodes[0].proc.pid, 5, os.path.join(root, "idle.raw"))
                # Write through the node that leads most data ranges (a new range's first leader is
                # its parent's), as a client in the leaseholders' region would.
                leaders = [r["leader"] for r in client.status()["ranges"] if r["range_id"] != 1]
                home = cluster.node(max(set(leaders), key=leaders.count))
                write_profile: list = []
                spy = None
                if args.profile_writes and want == max(counts):
                    spy = threading.Thread(target=lambda: write_profile.append(pyspy_top(
                        home.proc.pid, max(1, int(args.write_seconds) - 1), os.path.join(args.out, "ranges-write-profile-%s.raw" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())), top=14)))
                    spy.start()
                with cluster.client(home, timeout_s=60.0) as writer:
                    lat = write_latency(writer, want, args.write_seconds)
                if spy is not None:
                    spy.join()
                row = {"ranges": want, "split_s": split_s, "idle_cpu_pct": cpu, "write": lat, "idle_profile_n1": profile}
                if write_profile:
                    row["write_profile_home"] = {"node": home.node_id, "top": write_profile[0]}
                rows.append(row)
                print(json.dumps(row), flush=True)
            client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(args.out, "ranges-%s" % stamp)
    with open(base + ".json", "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=1)
    first = rows[0]["write"]["latency_ms"]["p50"]
    lines = ["### Ranges per node: idle CPU and write latency (`python -m bench.ranges_idle`)", "",
             "%s. 3 `raftstore start` processes on loopback; data ranges made by `split` requests; idle CPU of "
             "each node process over %.0f s (%% of one core); then one client writing 100-byte values to random "
             "keys across all ranges for %.0f s." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                    args.idle_seconds, args.write_seconds), "",
             "| data ranges | idle CPU n1 / n2 / n3 (% of a core) | write p50 (ms) | write p99 (ms) | p50 vs 1 range |",
             "|--:|--:|--:|--:|--:|"]
    for r in rows:
        lm = r["write"]["latency_ms"]
        lines.append("| %d | %s | %.2f | %.2f | %+.0f%% |" % (
            r["ranges"], " / ".join("%.1f" % c for c in r["idle_cpu_pct"]), lm["p50"], lm["p99"],
            100.0 * (lm["p50"] / first - 1)))
    lines += ["", "Machine: " + machine_line(machine)]
    for r in rows:
        if r.get("idle_profile_n1"):
            lines += ["", "Idle profile of n1 at %d ranges (py-spy, self time): %s" % (r["ranges"], r["idle_profile_n1"])]
        if r.get("write_profile_home"):
            lines += ["", "Profile of n%d, written through, during the writes at %d ranges (py-spy, self time): %s"
                      % (r["write_profile_home"]["node"], r["ranges"], r["write_profile_home"]["top"])]
    text = "\n".join(lines) + "\n"
    with open(base + ".md", "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "latest-ranges.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
