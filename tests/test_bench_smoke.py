"""The write benchmark (`python -m bench.kv_latency`): its statistics, and one end-to-end run.

The end-to-end test checks only that a run completes, stops every node it started and writes a
report of the expected shape with successful writes in it; it asserts nothing about timing.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from bench.kv_latency import CpuSnapshot, cpu_by_role, percentile, summarise_latencies, summarise_speedscope

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99.9) == 7.0


def test_latency_summary_is_in_milliseconds_and_throughput_is_ops_per_window_second():
    summary = summarise_latencies([0.001, 0.002, 0.003, 0.004], window_s=2.0)
    assert summary["ops"] == 4
    assert summary["throughput_ops_s"] == 2.0
    assert summary["latency_ms"]["p50"] == pytest.approx(2.0)
    assert summary["latency_ms"]["mean"] == pytest.approx(2.5)
    assert summarise_latencies([], window_s=1.0)["latency_ms"] is None


def test_profile_self_time_goes_to_the_innermost_frame_and_total_time_to_every_frame_on_the_stack():
    frames = [
        {"name": "Thread._bootstrap", "file": "/usr/lib/python3.11/threading.py", "line": 1},
        {"name": "Node._loop", "file": "/src/raftstore/node/loop.py", "line": 262},
        {"name": "RealLogFile.sync", "file": "/src/raftstore/raft/journal.py", "line": 267},
        {"name": "PeerNetwork._write", "file": "/src/raftstore/node/peer.py", "line": 355},
    ]
    doc = {"shared": {"frames": frames},
           "profiles": [{"type": "sampled", "name": "t", "samples": [[0, 1, 2], [0, 1, 2], [0, 1, 3], [0, 1]],
                         "weights": [0.01, 0.01, 0.01, 0.01]}]}
    summary = summarise_speedscope(doc, duration_s=1.0)
    top = {f["function"]: f for f in summary["top_self"]}
    sync = top["RealLogFile.sync (raftstore/raft/journal.py:267)"]
    assert sync["self_pct"] == pytest.approx(50.0)
    assert top["Node._loop (raftstore/node/loop.py:262)"]["total_pct"] == pytest.approx(100.0)
    assert summary["samples"] == 4
    assert summary["threads"] == [{"thread": "Node._loop", "pct": pytest.approx(100.0)}]


def test_cpu_is_charged_to_the_role_of_the_nearest_named_ancestor_and_the_rest_to_other_programs():
    # pid: (ppid, start_s, cpu_s, kernel_thread)
    before = CpuSnapshot.of(100.0, 50.0, {10: (1, 5.0, 1.0, False), 11: (10, 6.0, 0.0, False),
                                          20: (1, 7.0, 2.0, False), 30: (1, 1.0, 3.0, False),
                                          40: (2, 1.0, 0.0, True)})
    after = CpuSnapshot.of(102.0, 56.0, {10: (1, 5.0, 1.5, False), 11: (10, 6.0, 1.0, False),
                                         20: (1, 7.0, 3.0, False), 30: (1, 1.0, 4.0, False),
                                         40: (2, 1.0, 0.2, True), 12: (10, 101.0, 0.5, False)})
    cores = cpu_by_role(before, after, {10: "load", 20: "leader"})
    assert cores["load"] == pytest.approx((0.5 + 1.0 + 0.5) / 2)  # itself, a child, a child born in between
    assert cores["leader"] == pytest.approx(0.5)
    assert cores["other_programs"] == pytest.approx(0.5)
    assert cores["kernel_threads"] == pytest.approx(0.1)
    assert cores["machine"] == pytest.approx(3.0)
    assert cores["unattributed"] == pytest.approx(3.0 - 1.0 - 0.5 - 0.5 - 0.1)


def _process_cmdlines() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_benchmark_runs_end_to_end_writes_a_report_and_stops_every_node_it_started(tmp_path):
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench.kv_latency", "--clients", "1,2", "--seconds", "1",
                          "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

    reports = [p for p in glob.glob(str(out / "kv_latency-*.json")) if not p.endswith(".speedscope.json")]
    assert len(reports) == 1, reports
    with open(reports[0]) as f:
        report = json.load(f)
    assert {"schema", "started_at", "config", "machine", "cluster", "results", "profiles"} <= set(report)
    assert {"cpu_model", "cpu_count", "ram_bytes", "kernel", "python", "disk"} <= set(report["machine"])
    assert [r["clients"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert {"ops", "throughput_ops_s", "latency_ms", "errors", "cpu_cores"} <= set(r)
        assert r["ops"] > 0 and r["throughput_ops_s"] > 0
        assert {"p50", "p99", "mean"} <= set(r["latency_ms"])
    assert [p["clients"] for p in report["profiles"]] == [1]
    assert "| clients | ops |" in (out / "latest.md").read_text()

    root = report["cluster"]["root"]
    assert root and not os.path.exists(root)
    assert not [c for c in _process_cmdlines() if "raftstore.cli start" in c and root in c]
