"""`raftstore bench` end to end on a tiny workload: it runs, writes every result file, and stops
every process it started. Correctness only: nothing here asserts a latency or a throughput."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _alive_as_ours(pid: int) -> bool:
    """Is `pid` still one of the processes the bench started (not a reused PID)?"""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return any(word in cmdline for word in (b"raftstore.cli", b"etcd", b"bench.delay_proxy"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_runs_a_tiny_workload_writes_every_result_file_and_stops_what_it_started(tmp_path):
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench.sql_bench", "--matrix", "symmetric60", "--duration", "1", "--warmup", "0",
         "--workloads", "insert,read,stale_read,sweep", "--clients", "1,2", "--compare-etcd", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    for name in ("report.json", "samples.json", "report.md", "cdf.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "report.json").read_text())
    cells = {c["name"]: c for c in report["raftstore"]["cells"]}
    regions = ["us-east1", "europe-west1", "us-west1"]
    leaseholder = report["raftstore"]["cells"][0]["leaseholder_region"]
    assert leaseholder in regions
    expected = ({"insert@%s" % r for r in regions} | {"read@%s" % r for r in regions}
                | {"stale_read@%s" % r for r in regions} | {"sweep@%s/c1" % leaseholder, "sweep@%s/c2" % leaseholder})
    assert set(cells) == expected
    for name, cell in cells.items():
        if cell["workload"] == "stale_read":   # follower reads: the nearest replica, no bound
            assert cell["status"] == "ok" and cell["ops"] > 0 and cell["bound_ms"] == 0, cell
            continue
        assert cell["status"] == "ok" and cell["ops"] > 0 and cell["throughput_ops_s"] > 0, cell
        home = cell["client_region"] == cell["leaseholder_region"]
        if cell["workload"] == "read":   # the leaseholder answers from its lease: the client leg only
            assert cell["bound_ms"] == (0 if home else 60)
        else:
            assert cell["bound_ms"] == (60 if home else 120)
        assert {"p50", "p99"} <= set(cell["latency_ms"])

    samples = json.loads((out / "samples.json").read_text())
    assert samples["unit"] == "ms"
    assert all(len(samples["raftstore"][n]) == cells[n]["ops"] for n in cells if cells[n]["status"] == "ok")

    assert [t["id"] for t in report["targets"]] == ["leaseholder_insert", "remote_write", "throughput_vs_etcd",
                                                    "loopback_inserts", "leaseholder_read", "remote_read",
                                                    "follower_read"]
    markdown = (out / "report.md").read_text()
    assert "| cell | client region |" in markdown and "#### Targets (issue 6)" in markdown

    etcd = report["etcd"]
    if shutil.which("etcd") is None:
        assert "no `etcd` binary" in etcd["skipped"]
    else:
        assert not etcd.get("skipped"), etcd
        assert {c["workload"] for c in etcd["cells"]} == {"put", "get", "sweep"}
        assert all(c["ops"] > 0 for c in etcd["cells"]), etcd["cells"]
        assert "#### etcd under the same latency" in markdown

    started = report["raftstore"]["pids"] + etcd.get("pids", [])
    assert len(started) == 3 + (0 if etcd.get("skipped") else 6)   # nodes; etcd members and their proxies
    leftovers = [c for c in _process_cmdlines()
                 if report["cluster_root"] in c or (etcd.get("root") and etcd["root"] in c)]
    leftovers += [pid for pid in started if _alive_as_ours(pid)]
    assert not leftovers, leftovers
    assert not os.path.exists(report["cluster_root"])
