"""Loopback single-key write latency and throughput of the KV API (issue 3).

    python -m bench.kv_latency [--clients 1,16,64] [--seconds 10] [--value-bytes 100]
                               [--out bench/results] [--url HOST:PORT,...]

Why: "how fast is a write" needs one number that anyone can reproduce on their own machine, and
a picture of where the time goes when it is slow. This starts a fresh 3-node cluster of real
`raftstore start` processes on loopback (`raftstore.localcluster`), or targets a running one with
--url, and for each client count runs that many closed-loop clients, each doing
`raftstore.kv.Client.put` of keys nobody else writes, through its own connection to the leader.

What a number means:

* A step is: all clients connected, then "go", a warm-up (not measured), then the measured window
  [start, start + seconds). An operation counts if it started at or after the window start and
  finished before its end; its latency is `time.perf_counter()` around the whole `put`, the
  client's own retries included. Throughput is counted operations / window length.
* Clients are threads spread over up to `load_procs_max` worker processes, so the GIL of one
  load-generator process does not cap the load. They still share the machine's cores with the
  three nodes, so the CPU used during the window is recorded from /proc by role (leader,
  followers, load generator, other programs, kernel) to show what was saturated and whether
  something else on the machine interfered.
* The profile is taken in an extra, separate step per profiled client count, so the sampler never
  perturbs the reported latencies: two py-spy recordings of the leader, one of on-CPU samples
  (where it burns CPU) and one with --idle (where each thread's wall-clock time goes, waiting
  included), both kept as speedscope files and summarised in the Markdown.

Output in --out: kv_latency-<UTC time>.json (config, machine, per-step summary, profile
summaries), kv_latency-<UTC time>.md and latest.md (the same Markdown), and the speedscope files.

Invariant: every process started here (nodes, load workers, py-spy) is stopped on every exit
path: normal end, error, Ctrl-C, SIGTERM.

Pure parts (percentiles, profile summary, Markdown) take data as arguments; the rest is edge.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from raftstore.kv import Client, parse_addresses

# --- bounds and defaults (units last) ------------------------------------------------------------
clients_default = "1,16,64"
seconds_default = 10.0
warmup_s_default = 1.0
value_bytes_default = 100
load_procs_max = 4                 # worker processes generating load; clients are threads in them
client_timeout_s = 15.0            # kv.Client deadline per put, retries included
leader_wait_s = 60.0               # a fresh cluster must agree on a leader within this
worker_ready_s_max = 60.0          # load workers must be connected and ready within this
result_wait_s_slack = 30.0         # beyond the window + client_timeout_s, for results to arrive
profile_rate_hz = 100              # py-spy samples per second
profile_clients_default = "1,64"
profile_top_functions = 15
profile_top_modules = 8
profile_top_wall = 8               # functions per thread kept in the wall-clock view
profile_top_wall_shown = 5         # ... and shown in the Markdown
fsync_probe_count = 50
fsync_probe_bytes = 4096
machine_saturated_fraction = 0.9   # of the usable cores busy during a step: the CPU was the limit
other_cores_noted_min = 0.25       # CPU used by other programs during a step that earns a note
error_example_chars_max = 300      # first message of each error type, kept in the report

SCHEMA_VERSION = 1


class BenchError(Exception):
    """The benchmark could not run (no leader, workers did not start, ...); message says why."""


# --- pure: statistics, profile summary, report ---------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank q-th percentile (0 < q <= 100) of a non-empty ascending list."""
    assert sorted_values and 0 < q <= 100, (len(sorted_values), q)
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def summarise_latencies(samples_s: list[float], window_s: float) -> dict[str, Any]:
    """Count, throughput and latency percentiles (in ms) of one step's samples (in s)."""
    ops = len(samples_s)
    out: dict[str, Any] = {"ops": ops, "throughput_ops_s": ops / window_s if window_s > 0 else 0.0}
    if not ops:
        out["latency_ms"] = None
        return out
    ordered = sorted(samples_s)
    ms = 1000.0
    out["latency_ms"] = {
        "p50": percentile(ordered, 50) * ms,
        "p90": percentile(ordered, 90) * ms,
        "p99": percentile(ordered, 99) * ms,
        "p999": percentile(ordered, 99.9) * ms,
        "mean": sum(ordered) / ops * ms,
        "min": ordered[0] * ms,
        "max": ordered[-1] * ms,
    }
    return out


_OWN_PACKAGES = ("raftstore", "hlc", "sql", "bench", "pysyncobj")


def _short_file(path: str) -> str:
    """'/x/.venv/lib/python3.11/site-packages/pysyncobj/syncobj.py' -> 'pysyncobj/syncobj.py',
    '/usr/lib/python3.11/asyncio/events.py' -> 'asyncio/events.py'."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "site-packages" or parts[i].startswith("python3"):
            return "/".join(parts[i + 1:]) or str(path)
    for i in range(len(parts) - 2, -1, -1):  # the innermost, for a checkout named like a package
        if parts[i] in _OWN_PACKAGES:
            return "/".join(parts[i:])
    return parts[-1] if parts else str(path)


def _frame_label(frame: dict) -> str:
    return "%s (%s:%s)" % (frame.get("name", "?"), _short_file(frame.get("file", "?")), frame.get("line", "?"))


def _module_of(frame: dict) -> str:
    """Coarse owner of a frame: 'raftstore/node/loop.py', 'pysyncobj/syncobj.py', 'asyncio', 'selectors.py'."""
    short = _short_file(frame.get("file", "?"))
    head, _, _ = short.partition("/")
    return short if head in _OWN_PACKAGES or "/" not in short else head


def _thread_entry(frames: list[dict], stack: list[int]) -> str:
    """What a thread is running: the outermost frame outside threading/runpy/asyncio boilerplate."""
    skip = {"_bootstrap", "_bootstrap_inner", "run", "<module>", "_run_module_as_main", "_run_code",
            "run_forever", "run_until_complete", "_run_once", "_run"}
    for i in stack:
        name = str(frames[i].get("name", "?"))
        if name.rsplit(".", 1)[-1] not in skip:
            return name
    return str(frames[stack[0]].get("name", "?")) if stack else "?"


def summarise_speedscope(doc: dict, duration_s: float, top_n: int = profile_top_functions,
                         top_modules: int = profile_top_modules) -> dict[str, Any]:
    """Where one process spent its on-CPU samples, from a py-spy speedscope document.

    Speedscope `sampled` profiles hold one stack per sample, outermost frame first, with a weight
    in seconds. Self time goes to the innermost frame; total time to every distinct frame on the
    stack. Percentages are of all samples (all threads); `busy_threads_avg` is sampled seconds per
    wall second (py-spy's idle detection is a heuristic, so this is not a CPU measurement).
    """
    frames = doc["shared"]["frames"]
    self_s: collections.Counter = collections.Counter()
    total_s: collections.Counter = collections.Counter()
    module_s: collections.Counter = collections.Counter()
    thread_s: collections.Counter = collections.Counter()
    sampled = 0.0
    count = 0
    for prof in doc.get("profiles", []):
        entries: collections.Counter = collections.Counter()
        thread_weight = 0.0
        for stack, weight in zip(prof.get("samples", []), prof.get("weights", [])):
            if not stack:
                continue
            entries[_thread_entry(frames, stack)] += 1
            thread_weight += weight
            sampled += weight
            count += 1
            leaf = frames[stack[-1]]
            self_s[_frame_label(leaf)] += weight
            module_s[_module_of(leaf)] += weight
            for label in {_frame_label(frames[i]) for i in stack}:
                total_s[label] += weight
        if entries:  # a thread is named for what most of its samples run (stacks can be torn)
            thread_s[entries.most_common(1)[0][0]] += thread_weight

    def pct(value: float) -> float:
        return 100.0 * value / sampled if sampled else 0.0

    return {
        "samples": count,
        "sampled_s": sampled,
        "duration_s": duration_s,
        "busy_threads_avg": sampled / duration_s if duration_s > 0 else 0.0,
        "top_self": [{"function": f, "self_pct": pct(s), "total_pct": pct(total_s[f])}
                     for f, s in self_s.most_common(top_n)],
        "top_modules_self": [{"module": m, "self_pct": pct(s)} for m, s in module_s.most_common(top_modules)],
        "threads": [{"thread": t, "pct": pct(s)} for t, s in thread_s.most_common()],
    }


def summarise_wall_by_thread(doc: dict, top_n: int = profile_top_wall) -> list[dict[str, Any]]:
    """Per thread, where its wall-clock time goes, from a py-spy `--idle` speedscope document.

    With --idle every thread is sampled at every tick, running or waiting, so the share of a
    thread's samples whose innermost frame is a function is the share of its wall-clock time spent
    there (waiting in select or fsync included). Threads are named as in `summarise_speedscope`.
    """
    frames = doc["shared"]["frames"]
    out = []
    for prof in doc.get("profiles", []):
        entries: collections.Counter = collections.Counter()
        leaves: collections.Counter = collections.Counter()
        total = 0.0
        for stack, weight in zip(prof.get("samples", []), prof.get("weights", [])):
            if not stack:
                continue
            entries[_thread_entry(frames, stack)] += 1
            leaves[_frame_label(frames[stack[-1]])] += weight
            total += weight
        if not total:
            continue
        out.append({"thread": entries.most_common(1)[0][0], "sampled_s": total,
                    "top": [{"function": f, "pct": 100.0 * w / total} for f, w in leaves.most_common(top_n)]})
    return out


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "%.2f" % value if value < 10 else "%.1f" % value


def _fmt_errors(errors: dict[str, int]) -> str:
    if not errors:
        return "0"
    return ", ".join("%s %d" % (k, v) for k, v in sorted(errors.items()))


def _fmt_bytes(n: int | None) -> str:
    if not n:
        return "?"
    return "%.1f GiB" % (n / 2**30)


def machine_line(machine: dict) -> str:
    cores = machine.get("cpu_count")
    usable = machine.get("cpu_usable")
    core_text = "%s cores" % cores if usable in (None, cores) else "%s cores (%s usable)" % (cores, usable)
    virt = ", virtualised" if machine.get("hypervisor") else ""
    disk = machine.get("disk", {})
    fsync = disk.get("fsync_ms")
    fsync_text = ("fsync of %d B: p50 %s ms, p99 %s ms" % (disk.get("probe_bytes", 0), _fmt_ms(fsync["p50"]),
                                                          _fmt_ms(fsync["p99"])) if fsync else "fsync not measured")
    return ("%s, %s%s, %s RAM, %s, Python %s; data dir on %s (%s); %s" % (
        machine.get("cpu_model", "?"), core_text, virt, _fmt_bytes(machine.get("ram_bytes")),
        machine.get("kernel", "?"), machine.get("python", "?"), disk.get("fs_type", "?"),
        disk.get("mount_point", "?"), fsync_text))


def markdown_report(report: dict) -> str:
    """The Markdown summary of a run (the table for the README plus context and profiles)."""
    cfg = report["config"]
    lines = [
        "### Loopback single-key write benchmark (`%s`)" % cfg["command"],
        "",
        "%s. %s; single-key `kv.Client.put` of distinct keys, %d-byte values, closed loop (each "
        "client waits for its answer), one connection per client to the leader first; %.0f s warm-up "
        "then %.0f s measured per row; load generated by up to %d worker processes." % (
            report["started_at"], report["cluster"]["description"], cfg["value_bytes"], cfg["warmup_s"],
            cfg["seconds"], cfg["load_procs_max"]),
        "",
        "| clients | ops | throughput (ops/s) | p50 (ms) | p99 (ms) | mean (ms) | errors |",
        "|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for r in report["results"]:
        lat = r["latency_ms"] or {}
        lines.append("| %d | %d | %.0f | %s | %s | %s | %s |" % (
            r["clients"], r["ops"], r["throughput_ops_s"], _fmt_ms(lat.get("p50")), _fmt_ms(lat.get("p99")),
            _fmt_ms(lat.get("mean")), _fmt_errors(r["errors"])))
    lines += ["", "Machine: " + machine_line(report["machine"]) + "."]

    if any((r.get("cpu_cores") or {}).get("leader") is not None for r in report["results"]):
        lines += [
            "",
            "CPU used during each measured window, in cores (of %s), from /proc. Load generator: this script "
            "and its worker processes. Other programs: every other process on the machine. Kernel + "
            "unattributed: kernel threads (journal, writeback), interrupts (loopback networking) and "
            "processes that exited during the window." % report["machine"].get("cpu_usable", "?"),
            "",
            "| clients | leader | followers (sum) | load generator | other programs | kernel + unattributed "
            "| whole machine | leader changed |",
            "|--:|--:|--:|--:|--:|--:|--:|:--|",
        ]
        for r in report["results"]:
            cpu = r.get("cpu_cores") or {}
            lines.append("| %d | %s | %s | %s | %s | %s | %s | %s |" % (
                r["clients"], _fmt_cores(cpu.get("leader")), _fmt_cores(cpu.get("followers")),
                _fmt_cores(cpu.get("load")), _fmt_cores(cpu.get("other_programs")),
                _fmt_cores(_sum_known(cpu.get("kernel_threads"), cpu.get("unattributed"))),
                _fmt_cores(cpu.get("machine")), "yes" if r.get("leader_changed") else "no"))

    if report.get("profiles"):
        lines += ["", "#### Where the leader's time goes (py-spy)", "",
                  "Self % is the share of the leader's non-idle samples (all threads) whose innermost frame is "
                  "the function (time in C code such as SQLite, fsync or socket calls is charged to the Python "
                  "function that made the call); total % counts the function anywhere on the stack."]
        for p in report["profiles"]:
            lines.append("")
            if not p.get("available"):
                lines.append("**%d clients**: no profile: %s" % (p["clients"], p.get("reason", "unknown reason")))
                continue
            s = p["summary"]
            lines.append(
                "**%d client%s** (a separate %.0f s step under py-spy: %.0f ops/s, p50 %s ms; the leader used "
                "%s cores): %d non-idle samples at %d Hz. Speedscope file: `%s`." % (
                    p["clients"], "" if p["clients"] == 1 else "s", p["seconds"], p["throughput_ops_s"],
                    _fmt_ms(p.get("p50_ms")), _fmt_cores(p.get("leader_cores")), s["samples"], p["rate_hz"],
                    os.path.basename(p["speedscope_path"])))
            lines.append("")
            lines.append("Threads: " + "; ".join("%s %.0f%%" % (t["thread"], t["pct"]) for t in s["threads"]) + ".")
            lines.append("")
            lines.append("Self time by module: " + ", ".join(
                "%s %.0f%%" % (m["module"], m["self_pct"]) for m in s["top_modules_self"]) + ".")
            lines += ["", "| self % | total % | function |", "|--:|--:|:--|"]
            for f in s["top_self"]:
                lines.append("| %.1f | %.1f | `%s` |" % (f["self_pct"], f["total_pct"], f["function"]))
            if p.get("wall_by_thread"):
                lines += ["", "Wall-clock time of each leader thread, waiting included (py-spy `--idle`, innermost "
                          "frame; file `%s`):" % os.path.basename(p["wall_speedscope_path"]), ""]
                for t in p["wall_by_thread"]:
                    lines.append("- `%s`: %s" % (t["thread"], ", ".join(
                        "`%s` %.0f%%" % (f["function"], f["pct"]) for f in t["top"][:profile_top_wall_shown])))
    if report.get("notes"):
        lines += [""] + ["Note: " + n for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _sum_known(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _fmt_cores(value: float | None) -> str:
    return "-" if value is None else "%.2f" % value


# --- edge: machine description -----------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, fs type) holding `path`, from /proc/mounts (longest matching mount point)."""
    real = os.path.realpath(path)
    best = ("?", "?")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (best[0] == "?" or len(mount) > len(best[0])):
            best = (mount, parts[2])
    return best


def fsync_probe(directory: str, count: int = fsync_probe_count, size: int = fsync_probe_bytes) -> dict:
    """Latency of write(size) + fsync in `directory`, `count` times (ms)."""
    path = os.path.join(directory, ".fsync-probe-%s" % secrets.token_hex(4))
    block = os.urandom(size)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            samples.append((time.perf_counter() - t0) * 1000.0)
    finally:
        os.close(fd)
        os.unlink(path)
    samples.sort()
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "n": count}


def machine_info(data_dir: str) -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.lower().startswith("model name")), platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.lower().startswith("flags")), [])
    ram = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            ram = int(line.split()[1]) * 1024
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    mount, fs_type = _mount_of(data_dir)
    try:
        fsync = fsync_probe(data_dir)
    except OSError as exc:
        fsync = None
        fs_type += " (fsync probe failed: %s)" % exc
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "hypervisor": "hypervisor" in flags,
        "ram_bytes": ram,
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "disk": {
            "data_dir": data_dir,
            "mount_point": mount,
            "fs_type": fs_type,
            "probe_bytes": fsync_probe_bytes,
            "fsync_ms": fsync,
            "note": "raftstore fsyncs its Raft journal before an entry counts on a replica (group "
                    "commit: one fsync covers every append since the last), so each acknowledged "
                    "write waits for at least the leader's and one follower's fsync",
        },
    }


_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags bit of a kernel thread


class CpuSnapshot:
    """CPU accounting of the whole machine at one moment, from /proc (Linux; empty elsewhere).

    `procs` maps pid -> (ppid, start_s, cpu_s, kernel_thread): start_s is seconds after boot, cpu_s
    user + system seconds of all its threads so far. `busy_s` is what all cores spent not idle.
    """

    at_s: float
    busy_s: float | None
    procs: dict[int, tuple[int, float, float, bool]]

    @classmethod
    def of(cls, at_s: float, busy_s: float | None, procs: dict[int, tuple[int, float, float, bool]]) -> CpuSnapshot:
        """A snapshot from given numbers (for tests and replays)."""
        snap = cls.__new__(cls)
        snap.at_s, snap.busy_s, snap.procs = at_s, busy_s, procs
        return snap

    def __init__(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        uptime = _read("/proc/uptime").split()
        self.at_s = float(uptime[0]) if uptime else 0.0
        self.busy_s: float | None = parse_machine_busy_s(_read("/proc/stat"), tick)
        self.procs: dict[int, tuple[int, float, float, bool]] = {}
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            pids = []
        for pid in pids:
            parsed = parse_pid_stat(_read("/proc/%d/stat" % pid), tick)
            if parsed is not None:   # None: exited meanwhile
                self.procs[pid] = parsed


def parse_machine_busy_s(proc_stat: str, tick: int) -> float | None:
    """Seconds all cores spent busy since boot, from the text of /proc/stat: its first ("cpu")
    line's user + nice + system + irq + softirq + steal ticks (idle and iowait are not busy;
    guest time is already inside user), over `tick` (SC_CLK_TCK). None if the line is not there."""
    line = proc_stat.partition("\n")[0].split()
    if len(line) < 9 or line[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line[1:9])
    return (user + nice + system + irq + softirq + steal) / tick


def parse_pid_stat(text: str, tick: int) -> tuple[int, float, float, bool] | None:
    """(ppid, start_s, cpu_s, kernel_thread) from the text of /proc/<pid>/stat: cpu_s is the
    process's user + system time (utime + stime, every thread's, not its children's), start_s
    when it started in seconds after boot. The name field (2nd) may hold spaces and parentheses,
    so fields are counted after its last ")". None for an empty text (the process exited)."""
    if not text:
        return None
    f = text.rpartition(")")[2].split()   # f[0] is field 3 (state)
    return (int(f[1]), int(f[19]) / tick, (int(f[11]) + int(f[12])) / tick, bool(int(f[6]) & _PF_KTHREAD))


def cpu_by_role(before: CpuSnapshot, after: CpuSnapshot, roles: dict[int, str]) -> dict[str, float | None]:
    """Cores used between two snapshots, by role.

    `roles` names our processes (e.g. leader, followers, load); their descendants share the role.
    Every other process is "other_programs" (a kernel thread: "kernel_threads"); what no live
    process accounts for (interrupts, processes that exited in between) is "unattributed". A
    process that started in between counts from zero. Pure: takes the snapshots as arguments.
    """
    wall = after.at_s - before.at_s
    out: dict[str, float | None] = {role: 0.0 for role in set(roles.values())}
    out.update(other_programs=0.0, kernel_threads=0.0)
    if wall <= 0 or not after.procs:
        return {k: None for k in out} | {"machine": None, "unattributed": None}

    def role_of(pid: int) -> str | None:
        seen = set()
        while pid and pid not in seen:
            if pid in roles:
                return roles[pid]
            seen.add(pid)
            pid = after.procs.get(pid, before.procs.get(pid, (0,)))[0]
        return None

    for pid, (_ppid, start_s, cpu_s, kernel) in after.procs.items():
        old = before.procs.get(pid)
        if old is not None and old[1] == start_s:
            used = cpu_s - old[2]
        elif start_s >= before.at_s - 0.01:
            used = cpu_s
        else:
            continue  # missed by the first snapshot (raced it); cannot tell
        role = role_of(pid)
        key = role if role is not None else ("kernel_threads" if kernel else "other_programs")
        out[key] += used / wall
    machine = None
    if before.busy_s is not None and after.busy_s is not None:
        machine = (after.busy_s - before.busy_s) / wall
    out["machine"] = machine
    counted = sum(v for v in out.values() if v is not None) - (machine or 0.0)
    out["unattributed"] = max(0.0, machine - counted) if machine is not None else None
    return out


# --- edge: load workers (run in child processes) ---------------------------------------------------


def _client_loop(client: Client, key_prefix: bytes, value: bytes, window: dict, out: dict) -> None:
    """Closed loop of puts until the window ends; fills `out` with samples and error counts."""
    samples: list[float] = []
    errors: collections.Counter = collections.Counter()
    examples: dict[str, str] = {}
    warmup_ops = 0
    seq = 0
    start, end = window["start"], window["end"]
    perf = time.perf_counter
    while True:
        t0 = perf()
        if t0 >= end:
            break
        key = b"%s%09d" % (key_prefix, seq)
        seq += 1
        try:
            client.put(key, value)
            failed = None
        except Exception as exc:  # counted by type; a benchmark client never dies on an error
            failed = type(exc).__name__
            examples.setdefault(failed, str(exc)[:error_example_chars_max])
        t1 = perf()
        if t0 >= start and t1 <= end:
            if failed is None:
                samples.append(t1 - t0)
            else:
                errors[failed] += 1
        elif t0 < start and failed is None:
            warmup_ops += 1
    out.update(samples=samples, errors=dict(errors), error_examples=examples, warmup_ops=warmup_ops)


def _load_worker(client_ids: list[int], addresses: list[str], value_bytes: int, tag: str,
                 warmup_s: float, seconds: float, go, conn) -> None:
    """One load process: a thread per client. Sends ("ready", n) or ("error", text), then after
    `go` is set, ("result", {...}) on `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    clients: list[Client] = []
    try:
        try:
            for _ in client_ids:
                c = Client(addresses, timeout_s=client_timeout_s)
                clients.append(c)
                c.status()  # connect now, to the first (leader) address
        except Exception as exc:
            conn.send(("error", "client could not connect to %s: %s" % (addresses[0], exc)))
            return
        conn.send(("ready", len(clients)))
        if not go.wait(worker_ready_s_max + leader_wait_s):
            return  # the parent gave up or died
        now = time.perf_counter()
        window = {"start": now + warmup_s, "end": now + warmup_s + seconds}
        outs = [dict() for _ in clients]
        threads = [threading.Thread(target=_client_loop, name="client-%d" % cid, daemon=True,
                                    args=(c, b"bench/%s/c%04d/" % (tag.encode(), cid),
                                          os.urandom(value_bytes), window, out))
                   for cid, c, out in zip(client_ids, clients, outs)]
        for t in threads:
            t.start()
        join_by = window["end"] + client_timeout_s + 5  # an op in flight at the end may take that long
        for t in threads:
            t.join(max(0.0, join_by - time.perf_counter()))
        samples: list[float] = []
        errors: collections.Counter = collections.Counter()
        examples: dict[str, str] = {}
        warmup_ops = 0
        for out in outs:
            samples.extend(out.get("samples", ()))
            errors.update(out.get("errors", {}))
            for kind, text in out.get("error_examples", {}).items():
                examples.setdefault(kind, text)
            warmup_ops += out.get("warmup_ops", 0)
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            errors["ClientStuck"] += stuck
        conn.send(("result", {"samples": samples, "errors": dict(errors), "error_examples": examples,
                              "warmup_ops": warmup_ops}))
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone
    finally:
        for c in clients:
            c.close()
        conn.close()


# --- edge: one step --------------------------------------------------------------------------------


def _pyspy_path() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("py-spy")


class Target:
    """Where load goes: client addresses (leader first) and, for a local cluster, node PIDs."""

    def __init__(self, cluster=None, urls: list[str] | None = None):
        self.cluster = cluster
        self.urls = urls or []

    def leader(self) -> tuple[int | None, list[str], int | None, list[int]]:
        """(leader node id, client addresses with the leader's first, leader PID, follower PIDs)."""
        if self.cluster is not None:
            try:
                leader = self.cluster.wait_leader(leader_wait_s)
            except AssertionError as exc:
                tails = "\n".join("--- n%d log tail ---\n%s" % (n.node_id, self.cluster.log_tail(n, 10))
                                  for n in self.cluster.nodes)
                raise BenchError("%s\n%s" % (exc, tails)) from None
            others = [n for n in self.cluster.nodes if n is not leader]
            return (leader.node_id, [leader.sql_addr] + [n.sql_addr for n in others], leader.pid,
                    [n.pid for n in others if n.pid is not None])
        deadline = time.monotonic() + leader_wait_s
        while time.monotonic() < deadline:
            for addr in self.urls:
                try:
                    with Client([addr], timeout_s=2.0) as c:
                        status = c.status()
                except Exception:
                    continue
                if status.get("is_leader"):
                    return (status.get("node_id"), [addr] + [a for a in self.urls if a != addr], None, [])
            time.sleep(0.2)
        raise BenchError("none of %s says it is the leader after %.0f s" % (",".join(self.urls), leader_wait_s))


def run_step(target: Target, clients: int, *, seconds: float, warmup_s: float, value_bytes: int,
             procs_max: int, tag: str, profile_path: str | None = None) -> dict[str, Any]:
    """Run `clients` closed-loop clients for warm-up + `seconds`; return the step's summary.

    With `profile_path`, py-spy records the leader during the measured window into that
    speedscope file and the summary gets a "profile" entry.
    """
    leader_id, addresses, leader_pid, follower_pids = target.leader()
    nprocs = max(1, min(procs_max, clients))
    groups = [list(range(p, clients, nprocs)) for p in range(nprocs)]
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    workers: list[tuple[Any, Any]] = []
    pyspy: list = []
    profile: dict[str, Any] | None = None
    try:
        for ids in groups:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_load_worker, name="bench-load", daemon=True,
                            args=(ids, addresses, value_bytes, tag, warmup_s, seconds, go, send))
            p.start()
            send.close()
            workers.append((p, recv))
        deadline = time.monotonic() + worker_ready_s_max
        for p, recv in workers:
            if not recv.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError("a load worker was not ready within %.0f s" % worker_ready_s_max)
            kind, payload = recv.recv()
            if kind != "ready":
                raise BenchError("load worker failed: %s" % payload)

        go.set()
        t_go = time.perf_counter()
        time.sleep(max(0.0, t_go + warmup_s - time.perf_counter()))
        cpu0 = CpuSnapshot()
        if profile_path is not None:
            pyspy, profile = _start_profile(leader_pid, seconds, profile_path)
        time.sleep(max(0.0, t_go + warmup_s + seconds - time.perf_counter()))
        cpu1 = CpuSnapshot()

        samples: list[float] = []
        errors: collections.Counter = collections.Counter()
        examples: dict[str, str] = {}
        warmup_ops = 0
        deadline = time.monotonic() + client_timeout_s + result_wait_s_slack
        for p, recv in workers:
            if not recv.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError("a load worker sent no result within %.0f s of the window's end"
                                 % (client_timeout_s + result_wait_s_slack))
            kind, payload = recv.recv()
            if kind != "result":
                raise BenchError("load worker failed: %s" % payload)
            samples.extend(payload["samples"])
            errors.update(payload["errors"])
            for kind, text in payload["error_examples"].items():
                examples.setdefault(kind, text)
            warmup_ops += payload["warmup_ops"]

        if pyspy:
            profile = _finish_profile(pyspy, profile, seconds)
            pyspy = []
        end_leader = target.leader()[0]
    finally:
        for _kind, _path, proc in pyspy:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for p, recv in workers:
            recv.close()
            if p.is_alive():
                p.terminate()
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)

    summary = summarise_latencies(samples, seconds)
    summary.update(clients=clients, load_procs=nprocs, seconds=seconds, warmup_s=warmup_s,
                   warmup_ops=warmup_ops, errors=dict(errors), error_examples=examples, leader=leader_id,
                   leader_changed=end_leader != leader_id)
    # Load = this script and its descendants (workers; py-spy in profiled steps). With --url the
    # cluster's processes are not ours: they count as other programs (if on this machine at all).
    roles = {os.getpid(): "load"}
    if leader_pid is not None:
        roles[leader_pid] = "leader"
    roles.update({pid: "followers" for pid in follower_pids})
    summary["cpu_cores"] = cpu_by_role(cpu0, cpu1, roles)
    if leader_pid is None:
        summary["cpu_cores"].update(leader=None, followers=None)
    if profile is not None:
        summary["profile"] = profile
    return summary


def _start_profile(leader_pid: int | None, seconds: float, path: str) -> tuple[list, dict]:
    """Start two py-spy recordings of the leader for `seconds`: on-CPU samples into `path` and
    all-threads wall-clock samples (--idle) beside it. Returns (processes, profile info)."""
    wall_path = path.replace(".speedscope.json", "-wall.speedscope.json")
    info: dict[str, Any] = {"available": False, "rate_hz": profile_rate_hz, "speedscope_path": path,
                            "wall_speedscope_path": wall_path}
    tool = _pyspy_path()
    if tool is None:
        info["reason"] = "py-spy is not installed (pip install py-spy into the venv)"
        return [], info
    if leader_pid is None:
        info["reason"] = "the leader's PID is unknown (--url targets a cluster this run did not start)"
        return [], info
    # --nonblocking: read the leader's memory without pausing it, so the sampler barely slows it.
    base = [tool, "record", "--pid", str(leader_pid), "--duration", str(_profile_duration_s(seconds)),
            "--rate", str(profile_rate_hz), "--function", "--nonblocking", "--format", "speedscope"]
    procs = []
    for kind, extra, out in (("cpu", [], path), ("wall", ["--idle"], wall_path)):
        cmd = base + extra + ["--output", out]
        info["command_" + kind] = " ".join(cmd)
        procs.append((kind, out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                  text=True)))
    return procs, info


def _profile_duration_s(seconds: float) -> int:
    return max(1, int(round(seconds)))


def _finish_profile(procs: list, info: dict, seconds: float) -> dict:
    docs = {}
    for kind, path, proc in procs:
        try:
            output, _ = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate(timeout=10)
        if proc.returncode != 0 or not os.path.exists(path):
            tail = " ".join((output or "").strip().splitlines()[-3:])
            hint = (" (py-spy needs ptrace rights: run as root, or with CAP_SYS_PTRACE, or set "
                    "kernel.yama.ptrace_scope=0)" if "ermission" in (output or "") else "")
            info["reason"] = "py-spy could not record the leader: exit %s: %s%s" % (proc.returncode, tail, hint)
            return info
        with open(path) as f:
            docs[kind] = json.load(f)
    info["available"] = True
    info["summary"] = summarise_speedscope(docs["cpu"], float(_profile_duration_s(seconds)))
    info["wall_by_thread"] = summarise_wall_by_thread(docs["wall"])
    return info


# --- edge: the whole run ---------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers, got %r" % text) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("client counts must be >= 1, got %r" % text)
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number, got %r" % text) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("expected a positive number, got %r" % text)
    return value


def url_list(text: str) -> list[str]:
    """argparse type of --url: comma-separated HOST:PORT addresses, each checked."""
    try:
        parse_addresses(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return [a.strip() for a in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.kv_latency",
                                description="Loopback single-key write latency and throughput of raftstore.")
    p.add_argument("--clients", type=_int_list, default=_int_list(clients_default),
                   help="comma-separated client counts, one step each (default %s)" % clients_default)
    p.add_argument("--seconds", type=_positive_float, default=seconds_default,
                   help="measured seconds per step (default %g)" % seconds_default)
    p.add_argument("--warmup-seconds", type=_positive_float, default=warmup_s_default,
                   help="unmeasured warm-up per step (default %g)" % warmup_s_default)
    p.add_argument("--value-bytes", type=int, default=value_bytes_default,
                   help="bytes per value (default %d)" % value_bytes_default)
    p.add_argument("--out", default=os.path.join("bench", "results"),
                   help="folder for the JSON, Markdown and profile files (default bench/results)")
    p.add_argument("--url", type=url_list, default=None, metavar="HOST:PORT[,...]",
                   help="client addresses of a running cluster (default: start a fresh 3-node one)")
    p.add_argument("--procs", type=int, default=load_procs_max,
                   help="most load-generator processes (default %d)" % load_procs_max)
    p.add_argument("--profile-clients", type=lambda t: _int_list(t) if t else [], default=None,
                   metavar="N[,...]", help="client counts to profile in an extra step each "
                   "(default: those of %s that are run; '' for none)" % profile_clients_default)
    p.add_argument("--keep-data", action="store_true", help="keep the temporary cluster folder")
    return p


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.value_bytes < 0 or args.procs < 1:
        raise SystemExit("python -m bench.kv_latency: error: --value-bytes must be >= 0 and --procs >= 1")
    profile_clients = args.profile_clients
    if profile_clients is None:
        profile_clients = [c for c in _int_list(profile_clients_default) if c in args.clients]
    # SIGTERM / SIGHUP unwind like Ctrl-C, so the `with` and `finally` blocks stop every process.
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)

    from rich.console import Console
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and pipes: do not wrap at 80 columns
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "kv_latency-%s" % stamp)
    command = "python -m bench.kv_latency " + " ".join(sys.argv[1:] if argv is None else argv)
    run_tag = "%s-%s" % (stamp, secrets.token_hex(3))

    root = tempfile.mkdtemp(prefix="raftstore-bench-") if args.url is None else None
    try:
        machine = machine_info(root or tempfile.gettempdir())
        if args.url is None:
            from raftstore.localcluster import Cluster
            with Cluster(root, size=3) as cluster:
                console.print("[bold]cluster[/] 3 nodes under %s, waiting for a leader" % root)
                target = Target(cluster=cluster)
                description = "3 `raftstore start` processes on 127.0.0.1 (fresh data dirs, authenticated peers)"
                report = _run_all(args, target, console, machine, description, base, run_tag, profile_clients)
        else:
            target = Target(urls=args.url)
            machine["disk"]["note"] += "; --url run: the probe measured this machine's temp dir, not the cluster's"
            machine["disk"]["fs_type"] += ", this machine's temp dir: the cluster's disk is unknown"
            description = "running cluster at %s" % ",".join(args.url)
            report = _run_all(args, target, console, machine, description, base, run_tag, profile_clients)
    except BenchError as exc:
        console.print("[red]benchmark failed:[/] %s" % exc)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: every node and load worker was stopped; no report written")
        return 130
    finally:
        if root is not None and not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)

    report["config"]["command"] = command
    report["cluster"]["root"] = root
    report["cluster"]["data_kept"] = bool(root and args.keep_data)
    report["started_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    markdown = markdown_report(report)
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(base + ".md", "w") as f:
        f.write(markdown)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(markdown)
    _print_tables(console, report)
    console.print("wrote %s.json, %s.md, %s" % (base, base, os.path.join(args.out, "latest.md")))
    idle = [r["clients"] for r in report["results"] if not r["ops"]]
    if idle:
        console.print("[red]no write succeeded in the step(s) with %s clients; see the errors above[/]"
                      % ", ".join(map(str, idle)))
        return 2
    return 0


def _run_all(args, target: Target, console, machine: dict, description: str, base: str, run_tag: str,
             profile_clients: list[int]) -> dict:
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "config": {"clients": args.clients, "seconds": args.seconds, "warmup_s": args.warmup_seconds,
                   "value_bytes": args.value_bytes, "load_procs_max": args.procs, "url": args.url,
                   "profile_clients": profile_clients, "client_timeout_s": client_timeout_s},
        "machine": machine,
        "cluster": {"description": description},
        "results": [],
        "profiles": [],
        "notes": [],
    }
    common = dict(seconds=args.seconds, warmup_s=args.warmup_seconds, value_bytes=args.value_bytes,
                  procs_max=args.procs)
    for n in args.clients:
        console.print("[bold]step[/] %d client(s): %.0f s warm-up + %.0f s" % (n, args.warmup_seconds, args.seconds))
        r = run_step(target, n, tag="%s/m%d" % (run_tag, n), **common)
        report["results"].append(r)
        lat = r["latency_ms"] or {}
        console.print("  %d ops, %.0f ops/s, p50 %s ms, p99 %s ms, errors %s" % (
            r["ops"], r["throughput_ops_s"], _fmt_ms(lat.get("p50")), _fmt_ms(lat.get("p99")),
            _fmt_errors(r["errors"])))
    for n in profile_clients:
        console.print("[bold]profile[/] %d client(s) under py-spy" % n)
        path = "%s-leader-c%d.speedscope.json" % (base, n)
        r = run_step(target, n, tag="%s/p%d" % (run_tag, n), profile_path=path, **common)
        prof = r["profile"]
        prof.update(clients=n, seconds=args.seconds, throughput_ops_s=r["throughput_ops_s"],
                    p50_ms=(r["latency_ms"] or {}).get("p50"), leader_cores=r["cpu_cores"].get("leader"))
        report["profiles"].append(prof)
        if not prof.get("available"):
            console.print("  [yellow]%s[/]" % prof.get("reason"))
    usable = machine.get("cpu_usable") or 0
    if args.url is None and usable and usable < 3 + 1:
        report["notes"].append("the 3 nodes and the load generator share this machine's %d cores." % usable)
    saturated = [r["clients"] for r in report["results"]
                 if usable and (r["cpu_cores"].get("machine") or 0) >= machine_saturated_fraction * usable]
    if saturated:
        report["notes"].append(
            "all cores were nearly always busy during the step(s) with %s clients, so those numbers are "
            "bounded by this machine's CPU." % ", ".join(map(str, saturated)))
    for r in report["results"]:
        for kind, text in sorted(r["error_examples"].items()):
            report["notes"].append("%d clients: %d x %s, first: %s" % (r["clients"], r["errors"][kind], kind, text)
                                   if kind in r["errors"] else
                                   "%d clients: %s during warm-up, first: %s" % (r["clients"], kind, text))
    busy_other = [r["clients"] for r in report["results"]
                  if (r["cpu_cores"].get("other_programs") or 0) > other_cores_noted_min]
    if busy_other and args.url is None:
        report["notes"].append(
            "other programs on this machine used CPU during the step(s) with %s clients (see the CPU "
            "table); those numbers are pessimistic." % ", ".join(map(str, busy_other)))
    if any(r.get("leader_changed") for r in report["results"]):
        report["notes"].append("the leader changed during at least one step; its numbers include the election.")
    return report


def _print_tables(console, report: dict) -> None:
    from rich.table import Table

    table = Table(title="raftstore loopback single-key writes (%g s per step)" % report["config"]["seconds"])
    for col in ("clients", "ops", "ops/s", "p50 ms", "p99 ms", "mean ms", "leader cores", "load cores",
                "other progs cores", "errors"):
        table.add_column(col, justify="left" if col == "errors" else "right")
    for r in report["results"]:
        lat = r["latency_ms"] or {}
        cpu = r.get("cpu_cores") or {}
        table.add_row(str(r["clients"]), str(r["ops"]), "%.0f" % r["throughput_ops_s"], _fmt_ms(lat.get("p50")),
                      _fmt_ms(lat.get("p99")), _fmt_ms(lat.get("mean")), _fmt_cores(cpu.get("leader")),
                      _fmt_cores(cpu.get("load")), _fmt_cores(cpu.get("other_programs")), _fmt_errors(r["errors"]))
    console.print(table)
    console.print("machine: " + machine_line(report["machine"]))
    for p in report["profiles"]:
        if not p.get("available"):
            console.print("profile %d clients: %s" % (p["clients"], p.get("reason")))
            continue
        t = Table(title="leader, %d clients: top self time (py-spy, %d samples)" % (p["clients"],
                                                                                   p["summary"]["samples"]))
        t.add_column("self %", justify="right")
        t.add_column("total %", justify="right")
        t.add_column("function")
        for f in p["summary"]["top_self"][:10]:
            t.add_row("%.1f" % f["self_pct"], "%.1f" % f["total_pct"], f["function"])
        console.print(t)


if __name__ == "__main__":
    sys.exit(main())
