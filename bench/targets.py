"""The targets of issue 6, judged from a bench run's cells: met, missed (by how much), or not
measured in this run (and what run would measure it).

Pure: takes the cell summaries (as `bench.sql_bench` builds them) and returns verdicts.

1. `leaseholder_insert`: single-row INSERT from the leaseholder's region, p50 <= 1.05 x bound.
2. `remote_write`: single-row INSERT from every other region, p50 <= 1.05 x its bound.
3. `throughput_vs_etcd`: 64 clients of single-row INSERTs at least match etcd's puts/s under the
   same latency (needs --compare-etcd, which needs a symmetric matrix or --no-latency).
4. `loopback_inserts`: with --no-latency, >= 3,000 single-row INSERTs/s with 64 clients.
5. `leaseholder_read` (issue 12): a strong point read from the leaseholder's region, p50 <= 5 ms.
6. `remote_read` (issue 12): a strong point read from every other region, p50 <= 1.05 x the
   client-to-leaseholder round trip (its bound: the leaseholder answers from its lease).
7. `follower_read` (issue 13): a bounded-staleness point read (with_max_staleness, else the exact
   follower_read_timestamp()) from every region, p50 <= 5 ms: the nearest replica answers.
"""

from __future__ import annotations

from typing import Any

ratio_max = 1.05
throughput_clients = 64
loopback_inserts_s_min = 3000.0
leaseholder_read_ms_max = 5.0
follower_read_ms_max = 5.0

MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"


def _p50(cell: dict | None) -> float | None:
    if not cell or cell.get("status") != "ok" or not cell.get("latency_ms"):
        return None
    return cell["latency_ms"]["p50"]


def _latency_verdict(cell: dict) -> tuple[str, str]:
    p50, bound = _p50(cell), cell.get("bound_ms") or 0.0
    if p50 is None:
        return NOT_MEASURED, "%s: no successful statement" % cell["name"]
    if bound <= 0:
        return NOT_MEASURED, "%s: no emulated latency, so no bound to compare with" % cell["name"]
    limit = ratio_max * bound
    text = "%s: p50 %.1f ms vs %.2f x %.0f ms = %.1f ms (%.2f x the bound)" % (
        cell["name"], p50, ratio_max, bound, limit, p50 / bound)
    if p50 <= limit:
        return MET, text + ", %.1f ms to spare" % (limit - p50)
    return MISSED, text + ", missed by %.1f ms" % (p50 - limit)


def _sweep_cell(cells: list[dict], clients: int) -> dict | None:
    return next((c for c in cells if c["workload"] == "sweep" and c["clients"] == clients), None)


def evaluate(cells: list[dict], etcd_cells: list[dict] | None, *, latency_emulated: bool,
             local_cluster: bool) -> list[dict[str, Any]]:
    """One verdict per target: {"id", "target", "status", "detail", "cells": [names]}."""
    out: list[dict[str, Any]] = []

    def verdict(tid: str, target: str, status: str, detail: str, names: list[str]) -> None:
        out.append({"id": tid, "target": target, "status": status, "detail": detail, "cells": names})

    inserts = [c for c in cells if c["workload"] == "insert"]
    home = [c for c in inserts if c.get("client_region") == c.get("leaseholder_region")]
    remote = [c for c in inserts if c.get("client_region") != c.get("leaseholder_region")]

    t1 = "single-row INSERT from the leaseholder's region: p50 <= %.2f x bound" % ratio_max
    if not home:
        verdict("leaseholder_insert", t1, NOT_MEASURED, "no INSERT cell in the leaseholder's region "
                "(run with the insert workload)", [])
    else:
        status, detail = _latency_verdict(home[0])
        verdict("leaseholder_insert", t1, status, detail, [home[0]["name"]])

    def every_remote(tid: str, target: str, remote_cells: list[dict], what: str) -> None:
        if not remote_cells:
            verdict(tid, target, NOT_MEASURED, "no %s cell outside the leaseholder's region" % what, [])
            return
        verdicts = [_latency_verdict(c) for c in remote_cells]
        statuses = {s for s, _ in verdicts}
        status = MISSED if MISSED in statuses else (NOT_MEASURED if statuses == {NOT_MEASURED} else MET)
        verdict(tid, target, status, "; ".join(d for _, d in verdicts), [c["name"] for c in remote_cells])

    every_remote("remote_write", "single-row write from a remote region: p50 <= %.2f x its bound" % ratio_max,
                 remote, "INSERT")

    t3 = "%d clients: INSERTs/s >= etcd's puts/s under the same latency" % throughput_clients
    ours = _sweep_cell(cells, throughput_clients)
    theirs = _sweep_cell(etcd_cells or [], throughput_clients)
    if ours is None or theirs is None or _p50(ours) is None or _p50(theirs) is None:
        missing = []
        if ours is None or _p50(ours) is None:
            missing.append("a %d-client sweep cell (--workloads sweep --clients ...,%d)" % (
                throughput_clients, throughput_clients))
        if theirs is None or _p50(theirs) is None:
            missing.append("etcd's %d-client cell (--compare-etcd, symmetric matrix or --no-latency)"
                           % throughput_clients)
        verdict("throughput_vs_etcd", t3, NOT_MEASURED, "needs " + " and ".join(missing), [])
    else:
        a, b = ours["throughput_ops_s"], theirs["throughput_ops_s"]
        detail = "raftstore %.0f INSERTs/s vs etcd %.0f puts/s (%.2f x)" % (a, b, a / b if b else float("inf"))
        status = MET if a >= b else MISSED
        if status == MISSED:
            detail += ", missed by %.0f ops/s" % (b - a)
        verdict("throughput_vs_etcd", t3, status, detail, [ours["name"], theirs["name"]])

    t4 = "loopback (--no-latency), %d clients: >= %.0f single-row INSERTs/s" % (throughput_clients,
                                                                                 loopback_inserts_s_min)
    if latency_emulated or not local_cluster:
        verdict("loopback_inserts", t4, NOT_MEASURED,
                "needs a local run with --no-latency (this run %s)" % (
                    "targets a running cluster" if not local_cluster else "emulates WAN latency"), [])
    elif ours is None or _p50(ours) is None:
        verdict("loopback_inserts", t4, NOT_MEASURED, "needs a %d-client sweep cell" % throughput_clients, [])
    else:
        a = ours["throughput_ops_s"]
        if a >= loopback_inserts_s_min:
            verdict("loopback_inserts", t4, MET, "%.0f INSERTs/s" % a, [ours["name"]])
        else:
            verdict("loopback_inserts", t4, MISSED, "%.0f INSERTs/s, missed by %.0f/s (%.2f x the target)" % (
                a, loopback_inserts_s_min - a, a / loopback_inserts_s_min), [ours["name"]])

    reads = [c for c in cells if c["workload"] == "read"]
    home_reads = [c for c in reads if c.get("client_region") == c.get("leaseholder_region")]
    remote_reads = [c for c in reads if c.get("client_region") != c.get("leaseholder_region")]
    t5 = "strong point read from the leaseholder's region: p50 <= %.0f ms" % leaseholder_read_ms_max
    p50 = _p50(home_reads[0]) if home_reads else None
    if p50 is None:
        verdict("leaseholder_read", t5, NOT_MEASURED, "no read cell in the leaseholder's region (run with the "
                "read workload)", [])
    else:
        status = MET if p50 <= leaseholder_read_ms_max else MISSED
        detail = "%s: p50 %.2f ms" % (home_reads[0]["name"], p50) + (
            ", %.2f ms to spare" % (leaseholder_read_ms_max - p50) if status == MET
            else ", missed by %.2f ms" % (p50 - leaseholder_read_ms_max))
        verdict("leaseholder_read", t5, status, detail, [home_reads[0]["name"]])
    every_remote("remote_read", "strong point read from a remote region: p50 <= %.2f x the round trip to the "
                 "leaseholder" % ratio_max, remote_reads, "read")

    t7 = "follower read (bounded staleness) from every region: p50 <= %.0f ms" % follower_read_ms_max
    stale = [c for c in cells if c["workload"] == "bounded_read"] or [c for c in cells if c["workload"] == "stale_read"]
    measured = [(c, _p50(c)) for c in stale if _p50(c) is not None]
    if not measured:
        verdict("follower_read", t7, NOT_MEASURED, "no bounded_read or stale_read cell answered (run with those "
                "workloads)", [c["name"] for c in stale])
    else:
        worst = max(p for _, p in measured)
        status = MET if worst <= follower_read_ms_max and len(measured) == len(stale) else MISSED
        detail = "; ".join("%s: p50 %.2f ms" % (c["name"], p) for c, p in measured) + (
            ", %.2f ms to spare" % (follower_read_ms_max - worst) if status == MET
            else ", missed by %.2f ms" % max(0.0, worst - follower_read_ms_max))
        verdict("follower_read", t7, status, detail, [c["name"] for c, _ in measured])
    return out
