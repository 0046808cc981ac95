"""`raftstore bench`: cross-region SQL latency against its physical bound, and against etcd.

    raftstore bench [--matrix global3|symmetric60|global5|FILE | --no-latency] [--nodes N]
                    [--url HOST:PORT,...] [--workloads insert,update,multirow,read,stale_read,bounded_read,sweep]
                    [--duration 10] [--warmup 1] [--clients 1,16,64] [--rows 10]
                    [--compare-etcd] [--profile] [--out DIR]
    (the same as `python -m bench.sql_bench ...`)

Why: users of a multi-region store ask one question first: what does a commit cost from each
region? This answers it next to the floor the speed of light sets (bench/bounds.py), so a
number reads as "1.03x the network" or "2.1x: one round trip too many", and next to etcd under
the same delays. It is the tool issue 6 asks for, and its Markdown goes into the README.

What it does: starts a local cluster of `raftstore start` processes, one per region, with the
WAN emulated inside the peer transport from a latency matrix (or targets a running cluster with
--url; then the regions come from each node's status and --matrix only feeds the bound), creates
a table, and runs *cells*: one workload from one client region with one client count, each
client a closed loop through the SQL client (bench/loadgen.py) connected to the node in its own
region. Workloads:

    insert      single-row INSERT, from the leaseholder's region and from each other region
    update      single-row UPDATE by primary key, same regions
    multirow    one INSERT of --rows rows (one range), from the leaseholder's region
    read        strong point SELECT by primary key, from every region
    stale_read  SELECT ... AS OF SYSTEM TIME follower_read_timestamp() (exact staleness), from every
                region; while an engine answers feature_not_supported the cells say "not available yet"
    bounded_read  SELECT ... AS OF SYSTEM TIME with_max_staleness('10s'), from every region
    sweep       single-row INSERTs from the leaseholder's region with each --clients count

The leaseholder is the Raft leader of the table's range, read with SHOW RANGES FROM TABLE
before and after each cell (a change is flagged). For every cell: p50, p99, throughput, the
bound and p50 / bound, in a rich table (with a progress bar while it runs) and in the results
folder (--out, default raftstore-bench/sql-<UTC time>/ in the current directory): report.json
(config, machine, cells, targets, etcd, profiles), samples.json (every latency in ms, by cell),
report.md (the tables, the machine, the CPU milliseconds per statement of each process: the
leaseholder, each follower, the load generator, and the machine's total; the targets met or
missed by how much) and, when matplotlib
is installed (the `plot` extra), cdf.png (latency CDFs per region).

--compare-etcd runs etcd first (bench/etcd_compare.py, when an `etcd` binary is on PATH),
under the same latency when the matrix is symmetric for the regions in use (or --no-latency).
--profile re-runs the cell behind each missed target with py-spy on the leaseholder
(bench/kv_latency.py's recorder) and adds where its time goes to the report.

Invariant: every process started (nodes, etcd members, delay proxies, load workers, py-spy) is
stopped by PID on every exit path: normal end, error, Ctrl-C, SIGTERM. Nothing in the product
imports this package; `raftstore bench` (raftstore/cli/bench.py) imports it lazily, when the
user runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from bench import bounds, loadgen, targets

RESULTS_DIR_DEFAULT = "raftstore-bench"   # under the current directory, unless --out
from bench.kv_latency import (CpuSnapshot, cpu_by_role, machine_info, other_cores_noted_min, summarise_latencies,
                              url_list)

# --- defaults and bounds (units last) --------------------------------------------------------------
duration_s_default = 10.0
warmup_s_default = 1.0
clients_default = "1,16,64"
multirow_rows_default = 10
value_bytes_default = 100
matrix_default = "global3"
cluster_ready_s_max = 60.0        # a fresh cluster has a leader and answers SQL within this
placement_wait_s_max = 30.0       # the table's range has a leaseholder within this
table_local = "bench_kv"
seed_batch_rows = 100
READS_THROUGH_LOG = False         # strong reads are served by the leaseholder from its lease (issue 12; bench/bounds.py)

WORKLOADS = ("insert", "update", "multirow", "read", "stale_read", "bounded_read", "sweep")
SCHEMA_VERSION = 1


class BenchError(Exception):
    """The benchmark could not run (no leader, a bad matrix, ...); the message says why."""


# --- pure: cells, placement, bounds ---------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the table's range lives: its leaseholder (Raft leader) and its replicas' regions."""

    leaseholder: int
    leaseholder_region: str
    replica_regions: tuple[str, ...]
    ranges: int = 1


def parse_placement(rows: list[tuple]) -> Placement | None:
    """From SHOW RANGES FROM TABLE rows (range_id, start_key, end_key, lease_holder,
    lease_holder_region, replicas, replica_regions): the first range's placement, None while it
    has no leaseholder. replica_regions reads "n1=us-east1, n2=europe-west1, ..."."""
    if not rows:
        return None
    row = rows[0]
    if row[3] is None or not row[4]:
        return None
    regions = tuple(part.split("=", 1)[1].strip() for part in str(row[6]).split(",") if "=" in part)
    return Placement(int(row[3]), str(row[4]), regions or (str(row[4]),), len(rows))


def cell_name(workload: str, client_region: str, clients: int) -> str:
    return "%s@%s" % (workload, client_region) + ("/c%d" % clients if workload == "sweep" else "")


def plan_cells(workloads: list[str], regions: list[str], leaseholder_region: str, sweep_clients: list[int],
               rows: int) -> list[dict]:
    """The cells of a run, in run order: per workload, the leaseholder's region first."""
    ordered = [leaseholder_region] + [r for r in regions if r != leaseholder_region]
    cells = []
    for wl in WORKLOADS:
        if wl not in workloads:
            continue
        if wl == "multirow":
            places = [(leaseholder_region, 1)]
        elif wl == "sweep":
            places = [(leaseholder_region, n) for n in sweep_clients]
        else:
            places = [(r, 1) for r in ordered]
        for region, n in places:
            cells.append({"name": cell_name(wl, region, n), "workload": wl, "client_region": region, "clients": n,
                          "rows_per_op": rows if wl == "multirow" else 1})
    return cells


def bound_for(workload: str, rtt: bounds.RttFn, client_region: str, placement: Placement) -> bounds.Bound:
    lh, replicas = placement.leaseholder_region, placement.replica_regions
    if workload in ("insert", "update", "multirow", "sweep", "put"):
        return bounds.write_bound(rtt, client_region, lh, replicas)
    if workload in ("read", "get"):
        return bounds.strong_read_bound(rtt, client_region, lh, replicas, reads_through_log=READS_THROUGH_LOG)
    if workload in ("stale_read", "bounded_read"):
        return bounds.stale_read_bound(rtt, client_region, replicas)
    raise ValueError(workload)


def symmetric_rtt_ms(rtt: bounds.RttFn, regions: list[str]) -> float | None:
    """The one RTT between every pair of `regions`, None if the pairs differ."""
    values = {rtt(a, b) for i, a in enumerate(regions) for b in regions[i + 1:]}
    return values.pop() if len(values) == 1 else (0.0 if not values else None)


def finish_cell(plan: dict, result: dict, placement: Placement, after: Placement | None, bound: bounds.Bound,
                system: str) -> dict:
    """A cell's summary from its plan and its load step's result."""
    cell = dict(plan, system=system, leaseholder=placement.leaseholder,
                leaseholder_region=placement.leaseholder_region, bound_ms=bound.total_ms,
                bound_text=bound.explain())
    cell.update(summarise_latencies(result["samples"], result["seconds"]))
    cell.update(errors=result["errors"], error_examples=result["error_examples"],
                warmup_ops=result["warmup_ops"], load_procs=result["load_procs"],
                leaseholder_changed=after is not None and after.leaseholder != placement.leaseholder)
    cell["ratio"] = bounds.ratio((cell["latency_ms"] or {}).get("p50"), bound.total_ms)
    if cell["ops"]:
        cell["status"] = "ok"
    else:
        cell["status"] = "failed"
        first = next(iter(sorted(result["error_examples"].items())), None)
        cell["note"] = ("no statement succeeded (%s: %s)" % first if first else
                        "no statement finished inside the %g s window, and none failed: each takes longer"
                        % result["seconds"])
    return cell


REMOTE_NODES_NOTE = "not measured (remote cluster)"


def cpu_per_statement(before: CpuSnapshot, after: CpuSnapshot, statements: int, nodes: list[tuple[int, int | None]],
                      leader_start: int, leader_end: int | None, load_pid: int, load_procs: int,
                      gateway: int | None = None) -> dict:
    """CPU milliseconds per statement of a cell, by process, between two snapshots taken at the
    start and the end of its measured window.

    `nodes` is (node id, pid or None) per node; a None pid (a cluster given by --url: its PIDs are
    unknown here) leaves the nodes unmeasured. The node that led the table's range when the cell
    started is "leader", the others "followers", in node-id order; `gateway` is the node the
    clients are connected to (a follower gateway runs every statement's SQL). The load generator is
    `load_pid` (the bench process) with its descendants, the node processes excepted (the
    cluster's nodes are its children too): `load_procs` worker processes run the clients. The
    machine is every core's busy time from /proc/stat; "other" is the machine's minus what the
    measured processes used (other programs, kernel threads, interrupts). Each figure: CPU
    seconds used in the window x 1000 / `statements` (the statements counted in the window),
    None when none was; "cores" is CPU seconds / window seconds. Pure: takes the snapshots as
    arguments.
    """
    roles = {load_pid: "load"}
    roles.update({pid: "n%d" % node_id for node_id, pid in nodes if pid is not None})
    cores = cpu_by_role(before, after, roles)
    window_s = after.at_s - before.at_s
    measured = bool(nodes) and all(pid is not None for _, pid in nodes)

    def figure(used_cores: float | None) -> dict:
        if used_cores is None or window_s <= 0:
            return {"ms": None, "cores": None}
        ms = used_cores * window_s * 1000.0 / statements if statements else None
        return {"ms": None if ms is None else round(ms, 4), "cores": round(used_cores, 4)}

    out: dict[str, Any] = {"statements": statements, "window_s": round(window_s, 3), "nodes_measured": measured,
                           "nodes_note": None if measured else REMOTE_NODES_NOTE,
                           "leader_start": leader_start, "leader_end": leader_end,
                           "leader": None, "followers": [],
                           "load": dict(figure(cores.get("load")), processes=1 + load_procs),
                           "machine": figure(cores.get("machine"))}
    ours = [cores.get("load")]
    if measured:
        for node_id, pid in sorted(nodes):
            entry = dict(figure(cores.get("n%d" % node_id)), node_id=node_id, pid=pid, gateway=node_id == gateway)
            ours.append(cores.get("n%d" % node_id))
            if node_id == leader_start:
                out["leader"] = entry
            else:
                out["followers"].append(entry)
    ours_known = None if any(c is None for c in ours) else sum(ours)
    out["measured"] = figure(ours_known)
    machine = cores.get("machine")
    out["other"] = figure(None if machine is None or ours_known is None else max(0.0, machine - ours_known))
    return out


# --- edge: where the nodes are ---------------------------------------------------------------------


@dataclass
class Gateway:
    node_id: int
    region: str
    sql_addr: str
    pid: int | None = None     # known for a cluster this run started
    pg_addr: str | None = None   # its PostgreSQL port, if it serves one


class Deployment:
    """The cluster under test: one gateway per region (the first node seen in each region)."""

    def __init__(self, gateways: list[Gateway], description: str, local: bool) -> None:
        self.gateways, self.description, self.local = [], description, local
        for g in gateways:
            if g.region not in [x.region for x in self.gateways]:
                self.gateways.append(g)
        self.all = gateways

    @property
    def regions(self) -> list[str]:
        return [g.region for g in self.gateways]

    def in_region(self, region: str) -> Gateway:
        for g in self.gateways:
            if g.region == region:
                return g
        raise BenchError("no node of the cluster is in region %s (regions: %s)" % (region, ", ".join(self.regions)))

    def pid_of(self, node_id: int) -> int | None:
        return next((g.pid for g in self.all if g.node_id == node_id), None)


def url_deployment(urls: list[str]) -> Deployment:
    from raftstore.kv import Client
    gateways = []
    for addr in urls:
        try:
            with Client([addr], timeout_s=5.0) as c:
                st = c.status()
        except Exception as exc:
            raise BenchError("cannot read the status of %s: %s" % (addr, exc)) from None
        gateways.append(Gateway(int(st["node_id"]), str(st["region"]), addr,
                                pg_addr=(st.get("pg") or {}).get("addr")))
    return Deployment(gateways, "running cluster at %s" % ",".join(urls), local=False)


def wait_sql(conn, timeout_s: float) -> None:
    from raftstore.sqlclient import wait_for_sql
    try:
        wait_for_sql(conn, timeout_s)
    except Exception as exc:
        raise BenchError("the cluster did not answer SQL within %.0f s: %s" % (timeout_s, exc)) from None


def execute_retrying(conn, sql: str, params: list | None = None, timeout_s: float = cluster_ready_s_max):
    """Run an idempotent setup statement, retrying operating errors until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return cur
        except Exception as exc:
            if time.monotonic() > deadline or getattr(exc, "sql_code", None) in ("syntax", "undefined_table"):
                raise BenchError("setup statement failed: %s: %s" % (sql[:80], exc)) from None
            time.sleep(0.3)


def read_placement(conn, table: str, timeout_s: float = placement_wait_s_max) -> Placement:
    deadline = time.monotonic() + timeout_s
    while True:
        cur = execute_retrying(conn, "SHOW RANGES FROM TABLE %s" % table)
        placement = parse_placement(cur.fetchall())
        if placement is not None:
            return placement
        if time.monotonic() > deadline:
            raise BenchError("table %s's range has no leaseholder after %.0f s" % (table, timeout_s))
        time.sleep(0.3)


def read_meta_placement(conn) -> Placement | None:
    """Placement of the meta range (range 1: descriptors and the schema catalog), which every
    statement that reads the catalog visits."""
    cur = execute_retrying(conn, "SHOW RANGES")
    return parse_placement([r for r in cur.fetchall() if r[0] == 1])


def setup_table(conn, table: str, seed_rows: int, value_bytes: int) -> None:
    execute_retrying(conn, "CREATE TABLE IF NOT EXISTS %s (k INT PRIMARY KEY, v TEXT)" % table)
    value = "s" * value_bytes
    for start in range(0, seed_rows, seed_batch_rows):
        keys = [loadgen.seed_key(i) for i in range(start, min(seed_rows, start + seed_batch_rows))]
        values = ", ".join("($%d, $%d)" % (2 * i + 1, 2 * i + 2) for i in range(len(keys)))
        params: list = []
        for k in keys:
            params += [k, value]
        execute_retrying(conn, "INSERT INTO %s (k, v) VALUES %s ON CONFLICT (k) DO NOTHING" % (table, values), params)


def probe_stale_reads(conn, table: str) -> str | None:
    """The server's message when follower reads are not supported yet, None when they answer."""
    try:
        cur = conn.cursor()
        cur.execute(loadgen.sql_statement("stale_read", table), [loadgen.seed_key(0)])
        cur.fetchall()
    except Exception as exc:
        if getattr(exc, "sql_code", None) == "feature_not_supported":
            return str(exc)
    return None


# --- edge: running cells ---------------------------------------------------------------------------


class Runner:
    """Runs cells one after another, with a progress bar, and keeps their raw samples."""

    def __init__(self, args: argparse.Namespace, progress, console, out_dir: str) -> None:
        self.args, self.progress, self.console, self.out_dir = args, progress, console, out_dir
        self.samples_ms: dict[str, dict[str, list[float]]] = {"raftstore": {}, "raftstore-pg": {}, "etcd": {}}
        self.step_index = 0
        self.overall = progress.add_task("cells", total=0)
        self.current = progress.add_task("", total=1.0, visible=False)

    def add_cells(self, n: int) -> None:
        task = self.progress.tasks[self.overall]
        self.progress.update(self.overall, total=(task.total or 0) + n)

    def load(self, label: str, spec: dict, clients: int,
             during_window: Callable[[], Callable[[], None]] | None = None) -> dict:
        self.progress.update(self.current, description=label, completed=0.0, visible=True)
        try:
            return loadgen.run_load(spec, clients, warmup_s=self.args.warmup, seconds=self.args.duration,
                                    procs_max=self.args.load_procs,
                                    on_progress=lambda f: self.progress.update(self.current, completed=f),
                                    during_window=during_window)
        finally:
            self.progress.update(self.current, visible=False)

    def done(self, cell: dict, samples_s: list[float] | None) -> None:
        if samples_s is not None:
            self.samples_ms[cell["system"]][cell["name"]] = [round(s * 1000.0, 4) for s in samples_s]
        self.progress.advance(self.overall)
        lat = cell.get("latency_ms") or {}
        from bench.report import cell_notes, fmt_ms, fmt_ratio
        if cell["status"] == "ok":
            line = "%-8s %-34s p50 %7s ms  p99 %7s ms  %6.0f ops/s  bound %5g ms  x%s" % (
                cell["system"], cell["name"], fmt_ms(lat.get("p50")), fmt_ms(lat.get("p99")),
                cell["throughput_ops_s"], cell["bound_ms"], fmt_ratio(cell.get("ratio")))
        else:
            line = "%-8s %-34s %s" % (cell["system"], cell["name"], cell_notes(cell))
        from rich.text import Text
        self.progress.console.print(Text(line))


def run_sql_cell(runner: Runner, plan: dict, deployment: Deployment, conn, table: str, rtt: bounds.RttFn,
                 profile_path: str | None = None, driver: str = "native") -> tuple[dict, list[float], dict | None]:
    """Run one raftstore cell through `driver` (native: raftstore.connect on the client port;
    pg: psycopg on the PostgreSQL port, system "raftstore-pg"); return (cell, samples in s,
    profile info or None)."""
    from bench.kv_latency import _finish_profile, _start_profile

    args = runner.args
    placement = read_placement(conn, table)
    bound = bound_for(plan["workload"], rtt, plan["client_region"], placement)
    workload = "insert" if plan["workload"] == "sweep" else plan["workload"]
    gateway = deployment.in_region(plan["client_region"])
    if driver == "pg" and gateway.pg_addr is None:
        raise BenchError("n%d serves no PostgreSQL port (--pg-addr): --driver pg cannot reach it" % gateway.node_id)
    spec = {"kind": "sql" if driver == "native" else "pg",
            "addr": gateway.sql_addr if driver == "native" else gateway.pg_addr, "workload": workload,
            "table": table, "rows": plan["rows_per_op"], "key_base": loadgen.key_base_for_step(runner.step_index),
            "value_bytes": args.value_bytes}
    runner.step_index += 1
    leader_pid = deployment.pid_of(placement.leaseholder)
    gateway_path = None
    if profile_path is not None and gateway.node_id != placement.leaseholder:
        gateway_path = profile_path.replace(".speedscope.json", "-gateway.speedscope.json")
    roles: dict[int, str] = {os.getpid(): "load"}
    if deployment.local:
        for g in deployment.all:
            if g.pid is not None:
                roles[g.pid] = "leader" if g.node_id == placement.leaseholder else "followers"
    snaps: dict[str, Any] = {}
    pyspy: list = []
    pyspy_gw: list = []
    profile: dict | None = None
    profile_gw: dict | None = None

    def during_window() -> Callable[[], None]:
        nonlocal pyspy, profile, pyspy_gw, profile_gw
        snaps["before"] = CpuSnapshot()
        if profile_path is not None:
            pyspy, profile = _start_profile(leader_pid, args.duration, profile_path)
        if gateway_path is not None:
            pyspy_gw, profile_gw = _start_profile(gateway.pid, args.duration, gateway_path)

        def finish() -> None:
            snaps["after"] = CpuSnapshot()
        return finish

    try:
        result = runner.load("%s %s" % ("profiling" if profile_path else DRIVER_SYSTEMS[driver], plan["name"]),
                             spec, plan["clients"], during_window)
        if pyspy:
            profile = _finish_profile(pyspy, profile, args.duration)
            pyspy = []
        if pyspy_gw:
            profile_gw = _finish_profile(pyspy_gw, profile_gw, args.duration)
            pyspy_gw = []
    finally:
        for _kind, _path, proc in pyspy + pyspy_gw:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    if profile is not None:
        profile["statement_steps"] = _statement_steps(profile_gw if gateway_path else profile)
        profile["gateway"] = "n%d (%s)" % (gateway.node_id, gateway.region)
        if profile_gw is not None:
            profile["gateway_profile"] = {k: profile_gw.get(k) for k in ("available", "reason", "speedscope_path",
                                                                         "wall_speedscope_path")}
    after = read_placement(conn, table)
    cell = finish_cell(plan, result, placement, after, bound, DRIVER_SYSTEMS[driver])
    meta = read_meta_placement(conn)
    cell["meta_leaseholder_region"] = meta.leaseholder_region if meta else None
    if deployment.local and "before" in snaps and "after" in snaps:
        cell["cpu_cores"] = cpu_by_role(snaps["before"], snaps["after"], roles)
    if "before" in snaps and "after" in snaps:
        nodes = [(g.node_id, g.pid if deployment.local else None) for g in deployment.all]
        cell["cpu_per_statement"] = cpu_per_statement(snaps["before"], snaps["after"], cell["ops"], nodes,
                                                      placement.leaseholder, after.leaseholder, os.getpid(),
                                                      result["load_procs"], gateway.node_id)
    return cell, result["samples"], profile


def _statement_steps(info: dict | None) -> dict | None:
    """Statement steps from the wall-clock recording of a profile, None without one."""
    from bench.profile_view import statement_steps
    if not info or not info.get("available"):
        return None
    try:
        with open(info["wall_speedscope_path"]) as f:
            return statement_steps(json.load(f))
    except (OSError, ValueError, KeyError):
        return None


def run_raftstore(runner: Runner, deployment: Deployment, table: str, rtt: bounds.RttFn,
                  etcd_cells: list[dict] | None, latency_emulated: bool) -> dict:
    import raftstore
    args = runner.args
    gw = deployment.gateways[0]
    conn = raftstore.connect(gw.sql_addr, timeout_s=loadgen.client_timeout_s)
    try:
        wait_sql(conn, cluster_ready_s_max)
        seed = max([1] + [n for n in args.clients])
        setup_table(conn, table, min(seed, loadgen.seed_rows_max), args.value_bytes)
        placement = read_placement(conn, table)
        meta = read_meta_placement(conn)
        meta_text = "n%d (%s)" % (meta.leaseholder, meta.leaseholder_region) if meta else "unknown"
        plans = plan_cells(args.workloads, deployment.regions, placement.leaseholder_region, args.clients, args.rows)
        runner.add_cells(len(plans) * len(args.driver))
        stale_unsupported = probe_stale_reads(conn, table) if "stale_read" in args.workloads else None
        cells, pg_cells = [], []   # the native client's (judged against the targets) and the pg driver's
        for plan in plans:
            if plan["workload"] == "stale_read" and stale_unsupported is not None:
                bound = bound_for("stale_read", rtt, plan["client_region"], placement)
                cell = dict(plan, system="raftstore", status="not_available", note="feature_not_supported",
                            leaseholder=placement.leaseholder, leaseholder_region=placement.leaseholder_region,
                            bound_ms=bound.total_ms, bound_text=bound.explain(), ratio=None, ops=0,
                            throughput_ops_s=0.0, latency_ms=None, errors={}, error_examples={})
                cells.append(cell)
                runner.done(cell, None)
                continue
            for driver in args.driver:
                cell, samples, _ = run_sql_cell(runner, plan, deployment, conn, table, rtt, driver=driver)
                (cells if driver == "native" else pg_cells).append(cell)
                runner.done(cell, samples)
        verdicts = targets.evaluate(cells, etcd_cells, latency_emulated=latency_emulated,
                                    local_cluster=deployment.local)
        profiles = []
        if args.profile:
            profiles = profile_missed(runner, deployment, conn, table, rtt, cells, verdicts)
        if not deployment.local:
            try:
                conn.cursor().execute("DROP TABLE %s" % table)
            except Exception as exc:
                runner.progress.console.print("could not drop table %s: %s" % (table, exc))
    finally:
        conn.close()
    notes = []
    if stale_unsupported is not None:
        notes.append("stale_read cells are not available yet: the server answers feature_not_supported: %s"
                     % stale_unsupported)
    return {"description": deployment.description, "table": table, "cells": cells, "pg_cells": pg_cells,
            "targets": verdicts,
            "notes": notes, "meta_leaseholder_text": meta_text,
            "profiles": profiles, "replica_regions": list(placement.replica_regions),
            "leaseholder_text": "n%d (%s)" % (placement.leaseholder, placement.leaseholder_region),
            "regions": deployment.regions}


def profile_missed(runner: Runner, deployment: Deployment, conn, table: str, rtt: bounds.RttFn,
                   cells: list[dict], verdicts: list[dict]) -> list[dict]:
    """Re-run the raftstore cell behind each missed target under py-spy; one profile per cell."""
    by_name = {c["name"]: c for c in cells}
    chosen: dict[str, str] = {}
    for v in verdicts:
        if v["status"] != targets.MISSED:
            continue
        mine = [by_name[n] for n in v["cells"] if n in by_name]
        if not mine:
            continue
        worst = max(mine, key=lambda c: c.get("ratio") or 0.0)
        chosen.setdefault(worst["name"], v["id"])
    out = []
    if not chosen:
        return out
    if not deployment.local:
        return [{"cell": n, "target": t, "available": False,
                 "reason": "--url: the leaseholder's PID is unknown to this run"} for n, t in chosen.items()]
    runner.add_cells(len(chosen))
    for name, target_id in chosen.items():
        plan = {k: by_name[name][k] for k in ("name", "workload", "client_region", "clients", "rows_per_op")}
        path = os.path.join(runner.out_dir, "profile-%s.speedscope.json" % re.sub(r"[^A-Za-z0-9_.-]+", "_", name))
        cell, _samples, info = run_sql_cell(runner, plan, deployment, conn, table, rtt, profile_path=path)
        info = dict(info or {"available": False, "reason": "no profile was taken"})
        info.update(cell=name, target=target_id, throughput_ops_s=cell["throughput_ops_s"],
                    p50_ms=(cell["latency_ms"] or {}).get("p50"), mean_ms=(cell["latency_ms"] or {}).get("mean"),
                    ops=cell["ops"],
                    leaseholder="n%d (%s)" % (cell["leaseholder"], cell["leaseholder_region"]),
                    meta_leaseholder_region=cell.get("meta_leaseholder_region"),
                    leader_cores=(cell.get("cpu_cores") or {}).get("leader"))
        out.append(info)
        runner.progress.advance(runner.overall)
        if not info.get("available"):
            runner.progress.console.print("profile of %s: %s" % (name, info.get("reason")))
    return out


def run_etcd(runner: Runner, rtt_ms: float) -> dict:
    """etcd's cells under a symmetric RTT, or {"skipped": why}."""
    from bench.etcd_compare import EtcdCluster, EtcdError, etcd_binary, etcd_version

    args = runner.args
    path = etcd_binary()
    if path is None:
        return {"skipped": "no `etcd` binary on PATH (Debian/Ubuntu: apt-get install etcd-server)"}
    root = tempfile.mkdtemp(prefix="raftstore-bench-etcd-")
    wanted = []
    if "insert" in args.workloads:
        wanted.append("put")
    if "read" in args.workloads:
        wanted.append("get")
    sweep = args.clients if "sweep" in args.workloads else []
    try:
        with EtcdCluster(root, rtt_ms, path) as ec:
            leader = ec.wait_leader(30)
            follower = next(m for m in ec.members if m is not leader)
            names = [m.name for m in ec.members]
            rtt = bounds.symmetric_rtt(rtt_ms)
            plans = []
            for wl in wanted:
                for m in (leader, follower):
                    plans.append(({"name": cell_name(wl, m.name, 1), "workload": wl, "client_region": m.name,
                                   "clients": 1, "rows_per_op": 1}, m, wl))
            for n in sweep:
                plans.append(({"name": cell_name("sweep", leader.name, n), "workload": "sweep",
                               "client_region": leader.name, "clients": n, "rows_per_op": 1}, leader, "put"))
            runner.add_cells(len(plans))
            cells = []
            for plan, member, op in plans:
                current = ec.wait_leader(30)
                placement = Placement(int(current.name[1:]), current.name, tuple(names))
                bound = bound_for(op, rtt, plan["client_region"], placement)
                spec = {"kind": "etcd", "addr": member.client_addr, "workload": op,
                        "key_prefix": "bench/%s/%d/" % (plan["name"], runner.step_index), "value_bytes": args.value_bytes}
                runner.step_index += 1
                result = runner.load("etcd %s" % plan["name"], spec, plan["clients"])
                after_member = ec.leader()
                after = Placement(int(after_member.name[1:]), after_member.name, tuple(names)) if after_member else None
                cell = finish_cell(plan, result, placement, after, bound, "etcd")
                cells.append(cell)
                runner.done(cell, result["samples"])
            return {"version": etcd_version(path), "members": len(ec.members), "rtt_ms": rtt_ms,
                    "leader": leader.name, "cells": cells, "root": root, "pids": ec.pids()}
    except EtcdError as exc:
        return {"skipped": "etcd did not start: %s" % exc}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- edge: the command -------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers, got %r" % text) from None
    if not values or any(not 1 <= v <= loadgen.clients_per_step_max for v in values):
        raise argparse.ArgumentTypeError("client counts must be 1..%d, got %r" % (loadgen.clients_per_step_max, text))
    return values


DRIVER_SYSTEMS = {"native": "raftstore", "pg": "raftstore-pg"}   # a cell's `system`, by driver


def _drivers(text: str) -> list[str]:
    drivers = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in drivers if d not in DRIVER_SYSTEMS]
    if not drivers or unknown:
        raise argparse.ArgumentTypeError("unknown driver(s) %s (known: native, pg)" % ", ".join(unknown or [text]))
    return sorted(set(drivers), key=list(DRIVER_SYSTEMS).index)


def _workloads(text: str) -> list[str]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError("unknown workload(s) %s; known: %s" % (", ".join(unknown) or "(none)",
                                                                               ", ".join(WORKLOADS)))
    return names


def _seconds(text: str, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds, got %r" % text) from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError("expected a %s number of seconds, got %r" % (
            "non-negative" if allow_zero else "positive", text))
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (as in raftstore's CLI)."""

    def error(self, message: str):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def build_parser(prog: str = "raftstore bench") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Cross-region SQL latency of raftstore against its "
                                "physical bound (and against etcd under the same latency).")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--matrix", default=None, metavar="NAME|FILE",
                     help="latency matrix to emulate (global3, symmetric60, global5 or a TOML file; default %s)"
                          % matrix_default)
    lat.add_argument("--no-latency", action="store_true", help="no emulated WAN latency (loopback throughput)")
    p.add_argument("--nodes", type=int, choices=range(1, 6), metavar="N",
                   help="nodes, one per region (default: the matrix's region count, or 3)")
    p.add_argument("--url", type=url_list, metavar="HOST:PORT[,...]",
                   help="client addresses of a running cluster, one per region (default: start a local one); "
                        "--matrix then only feeds the bound")
    p.add_argument("--workloads", type=_workloads, default=list(WORKLOADS), metavar="W[,...]",
                   help="cells to run, of: %s (default all)" % ", ".join(WORKLOADS))
    p.add_argument("--duration", type=_seconds, default=duration_s_default, metavar="S",
                   help="measured seconds per cell (default %g)" % duration_s_default)
    p.add_argument("--warmup", type=lambda t: _seconds(t, True), default=warmup_s_default, metavar="S",
                   help="unmeasured warm-up seconds per cell (default %g)" % warmup_s_default)
    p.add_argument("--clients", type=_int_list, default=_int_list(clients_default), metavar="N[,...]",
                   help="client counts of the concurrency sweep (default %s)" % clients_default)
    p.add_argument("--rows", type=int, default=multirow_rows_default, metavar="N",
                   help="rows per statement of the multirow workload (default %d)" % multirow_rows_default)
    p.add_argument("--value-bytes", type=int, default=value_bytes_default, metavar="N",
                   help="bytes of the text column per row (default %d)" % value_bytes_default)
    p.add_argument("--load-procs", type=int, default=loadgen.procs_max_default, metavar="N",
                   help="most load-generator processes per cell (default %d)" % loadgen.procs_max_default)
    p.add_argument("--driver", type=_drivers, default=["native"], metavar="D[,...]",
                   help="clients to drive the nodes with: native (raftstore.connect on --sql-addr), pg (psycopg "
                        "on the PostgreSQL port, --pg-addr: server-side prepared statements), or native,pg: each "
                        "cell run with both, reported side by side (default native)")
    p.add_argument("--compare-etcd", action="store_true",
                   help="also run etcd (if on PATH) under the same symmetric latency, side by side")
    p.add_argument("--profile", action="store_true",
                   help="re-run the cell behind each missed target with py-spy on the leaseholder")
    p.add_argument("--out", metavar="DIR",
                   help="results folder (default %s/sql-<UTC time> in the current directory)" % RESULTS_DIR_DEFAULT)
    p.add_argument("--keep-data", action="store_true", help="keep the local cluster's data folder")
    return p


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _latency_setup(args) -> tuple[Any, bounds.RttFn, dict]:
    """(matrix or None, rtt function, description dict) from --matrix / --no-latency."""
    from raftstore.node.wan import MatrixError, load_matrix
    if args.no_latency:
        return None, bounds.symmetric_rtt(0.0), {"matrix": None, "description": "no emulated latency (loopback)"}
    name = args.matrix or matrix_default
    try:
        matrix = load_matrix(name)
    except MatrixError as exc:
        raise BenchError(str(exc)) from None
    builtin = os.path.sep not in name and not name.endswith(".toml")
    label = name if builtin else os.path.basename(name)
    return matrix, matrix.rtt_ms, {"matrix": label, "node_arg": name if builtin else os.path.abspath(name),
                                   "name": matrix.name, "source": matrix.source,
                                   "description": "%s matrix (%s)" % (label, matrix.name)}


def results_dir(out: str | None, stamp: str, cwd: str) -> str:
    """The folder a run writes to: ``--out`` (relative to `cwd`) as given, else
    ``RESULTS_DIR_DEFAULT/sql-<stamp>`` under `cwd`, the user's current directory; never a folder
    of the installed package (with a non-editable install that is site-packages)."""
    if out:
        return os.path.join(cwd, out)   # an absolute --out stays as it is
    return os.path.join(cwd, RESULTS_DIR_DEFAULT, "sql-%s" % stamp)


def main(argv: list[str] | None = None, prog: str = "raftstore bench") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.rows < 1 or args.value_bytes < 1 or args.load_procs < 1:
        raise SystemExit("%s: error: --rows, --value-bytes and --load-procs must be >= 1" % prog)
    if args.url and args.nodes:
        raise SystemExit("%s: error: --nodes starts a local cluster; with --url the cluster is given" % prog)
    if "pg" in args.driver:
        try:
            import psycopg  # noqa: F401 - the pg driver's client, an optional dependency
        except ImportError:
            raise SystemExit("%s: error: --driver pg needs psycopg: pip install 'psycopg[binary]'" % prog) from None
    # SIGTERM / SIGHUP unwind like Ctrl-C, so every `with` and `finally` stops what it started.
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench import report as render
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = results_dir(args.out, stamp, os.getcwd())
    command = "%s %s" % (prog, " ".join(sys.argv[1:] if argv is None else argv))

    root = None
    try:
        matrix, rtt, latency = _latency_setup(args)
        nodes = args.nodes or (len(matrix.regions()) if matrix is not None and matrix.regions() else 3)
        os.makedirs(out_dir, exist_ok=True)
        if args.url is None:
            from raftstore.localcluster import REGIONS
            regions = REGIONS[:nodes]
            for i, a in enumerate(regions):     # every pair the cluster will use must be in the matrix
                for b in regions[i + 1:]:
                    try:
                        rtt(a, b)
                    except ValueError as exc:
                        raise BenchError(str(exc)) from None
            root = tempfile.mkdtemp(prefix="raftstore-bench-")
        machine = machine_info(root or tempfile.gettempdir())
        report: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "stamp": stamp,
            "started_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "config": {"command": command, "workloads": args.workloads, "duration_s": args.duration,
                       "warmup_s": args.warmup, "clients": args.clients, "rows": args.rows,
                       "value_bytes": args.value_bytes, "load_procs_max": args.load_procs, "url": args.url,
                       "nodes": nodes if args.url is None else None, "compare_etcd": args.compare_etcd,
                       "reads_through_log": READS_THROUGH_LOG},
            "latency": latency, "machine": machine, "notes": [],
        }
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=True)
        with progress:
            runner = Runner(args, progress, console, out_dir)
            etcd_report = None
            if args.compare_etcd:
                etcd_report = _etcd_phase(runner, args, rtt, nodes)
                report["etcd"] = etcd_report
            etcd_cells = (etcd_report or {}).get("cells")
            if args.url is None:
                from raftstore.localcluster import Cluster
                extra = [] if matrix is None else ["--latency-matrix", latency["node_arg"]]
                progress.console.print("starting %d nodes under %s (%s)" % (nodes, root, latency["description"]))
                with Cluster(root, size=nodes, extra_args=extra) as cluster:
                    try:
                        cluster.wait_leader(cluster_ready_s_max)
                    except AssertionError as exc:
                        raise BenchError(str(exc)) from None
                    deployment = Deployment(
                        [Gateway(n.node_id, n.region, n.sql_addr, n.pid, n.pg_addr) for n in cluster.nodes],
                        "%d `raftstore start` processes on 127.0.0.1, one per region (%s)" % (
                            nodes, ", ".join(n.region for n in cluster.nodes)), local=True)
                    rs = run_raftstore(runner, deployment, table_local, rtt, etcd_cells, matrix is not None)
                    rs["pids"] = [n.pid for n in cluster.nodes if n.pid is not None]
            else:
                deployment = url_deployment(args.url)
                table = "bench_%s" % secrets.token_hex(4)
                rs = run_raftstore(runner, deployment, table, rtt, etcd_cells, True)
        report["targets"] = rs.pop("targets")
        report["profiles"] = rs.pop("profiles")
        report["raftstore"] = rs
        report["notes"] += rs.pop("notes")
        busy = [c["name"] for c in rs["cells"]
                if ((c.get("cpu_cores") or {}).get("other_programs") or 0) > other_cores_noted_min]
        if busy:
            report["notes"].append(
                "other programs on this machine used more than %.2f cores during %s (see the CPU table): "
                "throughput there is pessimistic." % (other_cores_noted_min, ", ".join(busy)))
        if args.url is None and (machine.get("cpu_usable") or 0) < nodes + 1:
            report["notes"].append("the %d nodes and the load generator share this machine's %s cores." % (
                nodes, machine.get("cpu_usable")))
    except (BenchError, loadgen.LoadError) as exc:
        console.print("[red]bench failed:[/] %s" % exc)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every process this run started was stopped; no report written")
        return 130
    finally:
        if root is not None and not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)

    report["cluster_root"] = root
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    with open(os.path.join(out_dir, "samples.json"), "w") as f:
        json.dump({"unit": "ms", **runner.samples_ms}, f)
        f.write("\n")
    markdown = render.markdown_report(report)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown)
    written = ["report.json", "samples.json", "report.md"]
    plot_hint = render.write_cdf_png_if_possible(report, runner.samples_ms["raftstore"],
                                                 os.path.join(out_dir, "cdf.png"))
    if plot_hint is None:
        written.append("cdf.png")

    console.print(render.rich_cells_table("raftstore bench, %s (%g s per cell)" % (
        latency["description"], args.duration), report["raftstore"]["cells"]))
    if render.cpu_rows(report["raftstore"]["cells"]):
        console.print(render.rich_cpu_table(report["raftstore"]["cells"], machine.get("cpu_usable")))
    etcd = report.get("etcd")
    if etcd is not None and etcd.get("skipped"):
        console.print("etcd comparison skipped: %s" % etcd["skipped"])
    elif etcd is not None:
        console.print(render.rich_cells_table("etcd %s, %d members, %g ms RTT" % (
            etcd["version"], etcd["members"], etcd["rtt_ms"]), etcd["cells"]))
        console.print(render.rich_comparison_table(report["raftstore"]["cells"], etcd["cells"]))
    if report["raftstore"].get("pg_cells"):
        console.print(render.rich_cells_table("the same cells through the PostgreSQL port (psycopg, prepared)",
                                              report["raftstore"]["pg_cells"]))
    console.print(render.rich_targets_table(report["targets"]))
    from bench.kv_latency import machine_line
    console.print("machine: " + machine_line(machine))
    console.print("wrote %s/{%s}" % (out_dir, ", ".join(written)))
    if plot_hint is not None:
        console.print(plot_hint)
    failed = [c["name"] for c in report["raftstore"]["cells"] if c["status"] == "failed"]
    if failed:
        console.print("[red]no statement succeeded in %s[/]" % ", ".join(failed))
        return 2
    return 0


def _etcd_phase(runner: Runner, args, rtt: bounds.RttFn, nodes: int) -> dict:
    """etcd under the run's latency if that latency is symmetric; else a reason it was skipped."""
    if args.url is not None:
        regions = None
    else:
        from raftstore.localcluster import REGIONS
        regions = REGIONS[:nodes]
    same = symmetric_rtt_ms(rtt, regions) if regions else None
    if same is None:
        return {"skipped": "etcd runs behind one delay proxy per member, which can only emulate a symmetric "
                           "latency; this run's %s is not symmetric (use --matrix symmetric60 or --no-latency)"
                           % ("cluster (--url)" if regions is None else "matrix")}
    runner.progress.console.print("etcd: 3 members, every peer link %g ms round trip" % same)
    return run_etcd(runner, same)


if __name__ == "__main__":
    sys.exit(main(prog="python -m bench.sql_bench"))
