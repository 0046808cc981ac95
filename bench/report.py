"""How a `raftstore bench` run is shown: the Markdown report, the rich tables, the CDF plot.

Everything here takes the report dict (built by bench/sql_bench.py) as an argument; the only
I/O is writing the PNG, and rich and matplotlib are imported inside the functions that use
them (matplotlib with the Agg backend: no display needed). matplotlib is optional (the `plot`
extra): without it the plot is skipped with a one-line hint.

A cell is one workload from one client region with one client count, e.g. `insert@us-east1`
or `sweep@us-east1/c64`. Its dict holds: name, system (raftstore | etcd), workload,
client_region, leaseholder_region, clients, status (ok | not_available | failed), note,
bound_ms, bound_text, ratio, ops, throughput_ops_s, rows_per_op, latency_ms (p50, p99, ...),
errors, error_examples, leaseholder_changed, cpu_per_statement (CPU ms per statement by process:
leader, each follower, load generator, machine; bench/sql_bench.py's cpu_per_statement) and, for
local runs, cpu_cores by role.
"""

from __future__ import annotations

import importlib.util
import os

from bench.kv_latency import machine_line

profile_functions_shown = 12
profile_wall_shown = 5


# --- pure: cell and value formatting -------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "%.2f" % value if value < 10 else "%.1f" % value


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else "%.2f" % value


def fmt_bound(cell: dict) -> str:
    bound = cell.get("bound_ms")
    if bound is None:
        return "-"
    if not bound:
        return "0"
    return "%g (%s)" % (bound, cell.get("bound_text", ""))


def cell_notes(cell: dict) -> str:
    notes = []
    if cell.get("status") == "not_available":
        notes.append("not available yet (%s)" % cell.get("note", ""))
    elif cell.get("status") == "failed":
        notes.append("failed: %s" % cell.get("note", ""))
    elif cell.get("note"):
        notes.append(cell["note"])
    if cell.get("rows_per_op", 1) > 1 and cell.get("ops"):
        notes.append("%d rows/statement, %.0f rows/s" % (cell["rows_per_op"], cell["throughput_ops_s"] * cell["rows_per_op"]))
    if cell.get("errors"):
        notes.append("errors: " + ", ".join("%s %d" % kv for kv in sorted(cell["errors"].items())))
    if cell.get("leaseholder_changed"):
        notes.append("leaseholder changed during the cell")
    return "; ".join(notes)


def cell_row(cell: dict) -> list[str]:
    """The columns of the cells table, as text."""
    lat = cell.get("latency_ms") or {}
    ok = cell.get("status") == "ok"
    return [cell["name"], cell.get("client_region") or "-", cell.get("leaseholder_region") or "-",
            str(cell.get("clients", "-")), str(cell.get("ops", 0)) if ok else "-",
            fmt_ms(lat.get("p50")), fmt_ms(lat.get("p99")),
            "%.0f" % cell["throughput_ops_s"] if ok else "-", fmt_bound(cell), fmt_ratio(cell.get("ratio")),
            cell_notes(cell)]


CELL_COLUMNS = ["cell", "client region", "leaseholder", "clients", "ops", "p50 (ms)", "p99 (ms)", "ops/s",
                "bound (ms)", "p50 / bound", "notes"]
_RIGHT = {"clients", "ops", "p50 (ms)", "p99 (ms)", "ops/s", "bound (ms)", "p50 / bound"}


def comparison_rows(cells: list[dict], etcd_cells: list[dict]) -> list[tuple[str, dict | None, dict | None]]:
    """(label, raftstore cell, etcd cell) for each workload both systems ran: writes and strong
    reads from the leader's region and from the first other region, and each sweep client count."""
    def first(pred, pool):
        return next((c for c in pool if pred(c)), None)

    def home(c):
        return c.get("client_region") == c.get("leaseholder_region")

    rows = []
    for label, ours, theirs in (("write, leaseholder's region", "insert", "put"),
                                ("read (linearizable), leaseholder's region", "read", "get")):
        rows.append((label, first(lambda c: c["workload"] == ours and home(c), cells),
                     first(lambda c: c["workload"] == theirs and home(c), etcd_cells)))
    for label, ours, theirs in (("write, another region", "insert", "put"),
                                ("read (linearizable), another region", "read", "get")):
        rows.append((label, first(lambda c: c["workload"] == ours and not home(c), cells),
                     first(lambda c: c["workload"] == theirs and not home(c), etcd_cells)))
    counts = sorted({c["clients"] for c in cells + etcd_cells if c["workload"] == "sweep"})
    for n in counts:
        rows.append(("writes, %d client%s" % (n, "" if n == 1 else "s"),
                     first(lambda c: c["workload"] == "sweep" and c["clients"] == n, cells),
                     first(lambda c: c["workload"] == "sweep" and c["clients"] == n, etcd_cells)))
    return [r for r in rows if r[1] is not None or r[2] is not None]


COMPARISON_COLUMNS = ["workload", "bound (ms)", "raftstore p50", "p99", "ops/s", "p50 / bound",
                      "etcd p50", "p99", "ops/s", "p50 / bound"]


def comparison_row(label: str, ours: dict | None, theirs: dict | None) -> list[str]:
    def part(c: dict | None) -> list[str]:
        if c is None or c.get("status") != "ok" or not c.get("latency_ms"):
            return ["-", "-", "-", "-"]
        return [fmt_ms(c["latency_ms"]["p50"]), fmt_ms(c["latency_ms"]["p99"]), "%.0f" % c["throughput_ops_s"],
                fmt_ratio(c.get("ratio"))]
    bounds = sorted({fmt_bound(c) for c in (ours, theirs) if c is not None})
    return [label, " / ".join(bounds) or "-"] + part(ours) + part(theirs)


CPU_COLUMNS = ["cell", "statements", "leader", "followers", "load generator", "measured sum", "machine",
               "other", "cores used", "leader at end"]
_CPU_RIGHT = {"statements", "measured sum", "machine", "other", "cores used"}
CPU_INTRO = (
    "CPU milliseconds per statement, by process, over each cell's measured window: the process's user + "
    "system time (all its threads) from /proc/<pid>/stat at the window's start and end, divided by the "
    "statements counted in the window. Leader: the node that led the table's range when the cell started "
    "(from SHOW RANGES; \"leader at end\" says if it moved); gateway: the node the cell's clients are "
    "connected to. Load generator: the bench process and its worker processes (the clients run in the "
    "workers). Machine: every core's busy time from /proc/stat, whatever ran it (with --url: the machine the "
    "bench runs on); other: the machine's minus the measured processes' (other programs, kernel threads, "
    "interrupts); measured sum: the leader's, the followers' and the load generator's. Cores used: the "
    "machine's CPU seconds per window second.")


def _cpu_ms(fig: dict | None) -> str:
    return "-" if not fig or fig.get("ms") is None else fmt_ms(fig["ms"])


def _cpu_node(fig: dict) -> str:
    return "%s (n%d%s)" % (_cpu_ms(fig), fig["node_id"], ", gateway" if fig.get("gateway") else "")


def cpu_row(cell: dict, cores_usable: int | None = None) -> list[str] | None:
    """The columns of the CPU-per-statement table for a cell, None for a cell without figures."""
    cpu = cell.get("cpu_per_statement")
    if not cpu:
        return None
    rows = cell.get("rows_per_op", 1)
    statements = "%d" % cpu["statements"] + (" (%d rows each)" % rows if rows > 1 else "")
    if cpu["nodes_measured"]:
        lead = cpu["leader"]
        leader = _cpu_node(lead) if lead else "-"
        followers = ", ".join(_cpu_node(f) for f in cpu["followers"]) or "-"
    else:
        leader = "%s; n%d" % (cpu["nodes_note"], cpu["leader_start"])
        followers = cpu["nodes_note"]
    load = cpu["load"]
    machine = cpu["machine"]
    cores = "-" if machine.get("cores") is None else "%.2f" % machine["cores"] + (
        " of %s" % cores_usable if cores_usable else "")
    end = cpu.get("leader_end")
    moved = end is not None and end != cpu["leader_start"]
    return [cell["name"], statements, leader, followers,
            "%s (%d procs)" % (_cpu_ms(load), load["processes"]), _cpu_ms(cpu["measured"]), _cpu_ms(machine),
            _cpu_ms(cpu["other"]), cores,
            "?" if end is None else "n%d%s" % (end, " (moved from n%d)" % cpu["leader_start"] if moved else "")]


def cpu_rows(cells: list[dict], cores_usable: int | None = None) -> list[list[str]]:
    return [r for r in (cpu_row(c, cores_usable) for c in cells) if r is not None]


def _md_table(header: list[str], rows: list[list[str]], right: set[str] = frozenset()) -> list[str]:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("--:" if h in right else ":--" for h in header) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return lines


# --- pure: the Markdown report ----------------------------------------------------------------


def markdown_report(report: dict) -> str:
    cfg, rs = report["config"], report["raftstore"]
    lines = ["### raftstore bench: %s (`%s`)" % (report["latency"]["description"], cfg["command"]), ""]
    lines.append(
        "%s. %s. Table `%s` (k INT PRIMARY KEY, v TEXT, %d-byte values); its range's leaseholder at the start: "
        "%s; replicas in %s; the meta range (schema catalog) leaseholder: %s. Each cell: closed-loop clients connected to the node in their region "
        "(loopback, undelayed), %g s warm-up then %g s measured. Bound: the client's round trip to the "
        "leaseholder + the leader's round trip to the follower that completes a majority (strong reads: "
        "the same as a write while reads go through the Raft log; see `bench/bounds.py`)." % (
            report["started_at"], rs["description"], rs.get("table", "?"), cfg["value_bytes"],
            rs.get("leaseholder_text", "?"), ", ".join(rs.get("replica_regions", [])) or "?",
            rs.get("meta_leaseholder_text", "?"),
            cfg["warmup_s"], cfg["duration_s"]))
    lines.append("")
    lines += _md_table(CELL_COLUMNS, [cell_row(c) for c in rs["cells"]], _RIGHT)
    lines += ["", "Machine: " + machine_line(report["machine"]) + "."]

    if any(c.get("cpu_cores") for c in rs["cells"]):
        lines += ["", "CPU used during each cell's window, in cores (of %s), from /proc:" %
                  report["machine"].get("cpu_usable", "?"), ""]
        rows = []
        for c in rs["cells"]:
            cpu = c.get("cpu_cores")
            if not cpu:
                continue
            rows.append([c["name"]] + ["-" if cpu.get(k) is None else "%.2f" % cpu[k]
                                       for k in ("leader", "followers", "load", "other_programs", "machine")])
        lines += _md_table(["cell", "leaseholder node", "other nodes", "load generator", "other programs",
                            "whole machine"], rows, {"leaseholder node", "other nodes", "load generator",
                                                     "other programs", "whole machine"})

    rows = cpu_rows(rs["cells"], report["machine"].get("cpu_usable"))
    if rows:
        lines += ["", "#### CPU milliseconds per statement, by process", "", CPU_INTRO, ""]
        lines += _md_table(CPU_COLUMNS, rows, _CPU_RIGHT)

    if rs.get("pg_cells"):
        lines += ["", "#### The same cells through the PostgreSQL port", "",
                  "psycopg 3 on each node's `--pg-addr`, autocommit, every statement a server-side prepared "
                  "statement (`prepare_threshold=0`), run right after the native client's cell of the same name:", ""]
        lines += _md_table(CELL_COLUMNS, [cell_row(c) for c in rs["pg_cells"]], _RIGHT)

    etcd = report.get("etcd")
    if etcd is not None:
        lines += ["", "#### etcd under the same latency", ""]
        if etcd.get("skipped"):
            lines.append("Skipped: %s" % etcd["skipped"])
        else:
            link = ("every peer link %g ms round trip (a delay proxy in front of each member's peer port)"
                    % etcd["rtt_ms"] if etcd["rtt_ms"] else "no emulated latency")
            lines.append("etcd %s, %d members on loopback, %s, clients through etcd's HTTP/JSON gateway with "
                         "keep-alive; leader %s. Same cell rules as above." % (
                             etcd["version"], etcd["members"], link, etcd.get("leader", "?")))
            lines.append("")
            lines += _md_table(CELL_COLUMNS, [cell_row(c) for c in etcd["cells"]], _RIGHT)
            lines += ["", "Side by side:", ""]
            lines += _md_table(COMPARISON_COLUMNS, [comparison_row(*r) for r in
                                                    comparison_rows(rs["cells"], etcd["cells"])],
                               set(COMPARISON_COLUMNS[1:]))

    lines += ["", "#### Targets (issue 6)", ""]
    for t in report["targets"]:
        mark = {"met": "met", "missed": "**missed**"}.get(t["status"], "not measured")
        lines.append("- %s — %s: %s." % (t["target"], mark, t["detail"]))

    if report.get("profiles"):
        lines += ["", "#### Where the time goes (py-spy on the leaseholder, in a separate run of the cell)"]
        for p in report["profiles"]:
            lines += [""] + profile_markdown(p)
    if report.get("notes"):
        lines += [""] + ["Note: " + n for n in report["notes"]]
    return "\n".join(lines) + "\n"


def profile_markdown(p: dict) -> list[str]:
    head = "**%s** (for target `%s`)" % (p["cell"], p["target"])
    if not p.get("available"):
        return [head + ": no profile: %s" % p.get("reason", "unknown reason")]
    s = p["summary"]
    lines = [head + ": %.0f ops/s, p50 %s ms during the profiled run; %d on-CPU samples of the leaseholder "
             "%s at %d Hz (%.2f busy threads on average). Files: `%s`, `%s`." % (
                 p.get("throughput_ops_s", 0), fmt_ms(p.get("p50_ms")), s["samples"], p.get("leaseholder", ""),
                 p["rate_hz"],
                 s["busy_threads_avg"], os.path.basename(p["speedscope_path"]),
                 os.path.basename(p["wall_speedscope_path"])), ""]
    lines.append("On-CPU by thread: " + "; ".join("%s %.0f%%" % (t["thread"], t["pct"]) for t in s["threads"]) + ".")
    lines.append("")
    lines.append("Self time by module: " + ", ".join("%s %.0f%%" % (m["module"], m["self_pct"])
                                                     for m in s["top_modules_self"]) + ".")
    lines += [""] + _md_table(["self %", "total %", "function"],
                              [["%.1f" % f["self_pct"], "%.1f" % f["total_pct"], "`%s`" % f["function"]]
                               for f in s["top_self"][:profile_functions_shown]], {"self %", "total %"})
    steps = p.get("statement_steps")
    if steps:
        lines += [""] + statement_time_markdown(p, steps)
    if p.get("wall_by_thread"):
        lines += ["", "Wall-clock time of each leaseholder thread, waiting included (py-spy --idle, innermost frame):", ""]
        for t in p["wall_by_thread"]:
            lines.append("- `%s`: %s" % (t["thread"], ", ".join(
                "`%s` %.0f%%" % (f["function"], f["pct"]) for f in t["top"][:profile_wall_shown])))
    return lines


main_thread_saturated_pct = 90   # busier than this, the main thread is what statements queue for


def statement_time_markdown(p: dict, steps: dict) -> list[str]:
    """The gateway's side of a statement, from bench/profile_view.py's `statement_steps`: its time
    running on the main thread by step, the main thread's other work and idle time, each per
    statement, and the rest of the mean latency as waits the samples cannot divide."""
    ops_s, mean = p.get("throughput_ops_s"), p.get("mean_ms")
    per = 1000.0 / ops_s if ops_s else None    # the main thread's wall-clock ms per statement

    def ms(pct: float) -> str:
        return fmt_ms(pct / 100.0 * per) if per else "-"

    running = steps["statement_pct"] / 100.0 * per if per else None
    lines = ["Where a statement's wall-clock time goes on its gateway %s (leaseholder %s, meta range led from %s): "
             "py-spy --idle of the gateway. Statements run as coroutines on its main thread (`%s`, raftstore/coop.py), "
             "which py-spy sampled for %.2f s%s. py-spy sees a statement only while it is switched in, and cannot "
             "tell a thread running from one waiting for the GIL." % (
                 p.get("gateway", "?"), p.get("leaseholder", "?"), p.get("meta_leaseholder_region") or "?",
                 steps["thread"], steps["wall_s"],
                 ": at %.0f statements/s it has %s ms of wall-clock time per statement" % (ops_s, fmt_ms(per))
                 if per else ""), ""]
    lines.append("- running statements: ≈ %s ms per statement (%.0f%% of the main thread, %d samples), by step "
                 "in the first table;" % (ms(steps["statement_pct"]), steps["statement_pct"], steps["samples"]))
    lines.append("- its other work (client port I/O, asyncio, the loop's side of statements and their KV calls): "
                 "≈ %s ms (%.0f%%), in the second table;" % (ms(steps["other_pct"]), steps["other_pct"]))
    lines.append("- idle, waiting in select: ≈ %s ms (%.0f%%)." % (ms(steps["idle_pct"]), steps["idle_pct"]))
    if steps["offloaded_s"] and steps["wall_s"]:
        lines.append("- besides, statement code on other threads (e.g. long texts parsed by coop.offload): "
                     "≈ %s ms per statement." % ms(100.0 * steps["offloaded_s"] / steps["wall_s"]))
    busy = steps["busy_pct"]
    others = "; ".join("`%s` %.0f%%" % (t["thread"], t["busy_pct"]) for t in steps["loop_threads"])
    rest = ""
    if running is not None and mean:
        rest = ("Of the mean latency %s ms, ≈ %s ms is the statement running on the main thread; the other "
                "≈ %s ms it waits: suspended on its KV batches (the node loop, Raft replication, the leader's log "
                "sync and apply), ready but waiting for the main thread, or outside the statement (the request's "
                "way in and the answer's way out, which the main thread's other work is part of; the client and "
                "its network). " % (fmt_ms(mean), fmt_ms(running), fmt_ms(max(mean - running, 0.0))))
    rest += ("A suspended statement has no stack, so the samples cannot divide those waits. They show how busy "
             "the threads that serve them were (not in select): the main thread %.0f%%%s%s. " % (
                 busy, ", other threads with a select loop: " if others else "", others))
    if busy >= main_thread_saturated_pct:
        rest += "The main thread is saturated: statements ready to go on queue for it, a part of the wait."
    else:
        rest += ("The main thread is not saturated, so statements queue for it only while it is busy, e.g. "
                 "behind a burst of others resumed together; for how long, the samples cannot say.")
    lines += ["", rest, ""]
    lines += _md_table(["share %", "≈ ms", "statement step (our frames, outermost first)"],
                       [["%.0f" % st["pct"], ms(st["pct"] * steps["statement_pct"] / 100.0),
                         "`%s` (%s)" % (st["step"], st["file"])] for st in steps["steps"]], {"share %", "≈ ms"})
    lines.append("")
    lines += _md_table(["main thread %", "≈ ms", "other work on the main thread (our frames, then the call they make)"],
                       [["%.0f" % o["pct"], ms(o["pct"]),
                         "`%s`" % o["work"] + (" (%s)" % o["file"] if o["file"] else "")] for o in steps["other"]],
                       {"main thread %", "≈ ms"})
    return lines


# --- edge: rich tables and the CDF plot -----------------------------------------------------------


def rich_cells_table(title: str, cells: list[dict]):
    from rich.table import Table
    from rich.text import Text
    table = Table(title=title)
    for col in CELL_COLUMNS:
        table.add_column(col, justify="right" if col in _RIGHT else "left",
                         overflow="fold", max_width=48 if col == "notes" else None)
    for c in cells:
        table.add_row(*[Text(v) for v in cell_row(c)])
    return table


def rich_cpu_table(cells: list[dict], cores_usable: int | None = None):
    from rich.table import Table
    from rich.text import Text
    table = Table(title="CPU ms per statement, by process (leader as at the cell's start)")
    for col in CPU_COLUMNS:
        table.add_column(col, justify="right" if col in _CPU_RIGHT else "left", overflow="fold",
                         no_wrap=col == "cell")
    for row in cpu_rows(cells, cores_usable):
        table.add_row(*[Text(v) for v in row])
    return table


def rich_comparison_table(cells: list[dict], etcd_cells: list[dict]):
    from rich.table import Table
    from rich.text import Text
    table = Table(title="raftstore vs etcd, same latency")
    for i, col in enumerate(COMPARISON_COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right")
    for r in comparison_rows(cells, etcd_cells):
        table.add_row(*[Text(v) for v in comparison_row(*r)])
    return table


def rich_targets_table(targets: list[dict]):
    from rich.table import Table
    from rich.text import Text
    table = Table(title="targets (issue 6)")
    table.add_column("target")
    table.add_column("verdict")
    table.add_column("detail", overflow="fold")
    for t in targets:
        style = {"met": "green", "missed": "bold red"}.get(t["status"], "yellow")
        table.add_row(Text(t["target"]), Text(t["status"], style=style), Text(t["detail"]))
    return table


CDF_WORKLOADS = ("insert", "update", "read", "multirow", "stale_read", "bounded_read")
# Said instead of plotting when matplotlib is absent: a server install needs no plotting stack.
PLOT_HINT = "no cdf.png: plots need matplotlib (pip install 'raftstore[plot]')"


def write_cdf_png_if_possible(report: dict, samples_ms: dict[str, list[float]], path: str) -> str | None:
    """`write_cdf_png` if matplotlib is importable, returning None; else write nothing and return
    the one-line hint (`PLOT_HINT`) to show."""
    if importlib.util.find_spec("matplotlib") is None:
        return PLOT_HINT
    write_cdf_png(report, samples_ms, path)
    return None


def write_cdf_png(report: dict, samples_ms: dict[str, list[float]], path: str) -> None:
    """Latency CDFs: one panel per client region (a line per workload, the bound dashed), and
    one for the concurrency sweep (a line per client count)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    cells = [c for c in report["raftstore"]["cells"] if samples_ms.get(c["name"])]
    regions: list[str] = []
    for c in cells:
        if c["workload"] in CDF_WORKLOADS and c["client_region"] not in regions:
            regions.append(c["client_region"])
    sweep = [c for c in cells if c["workload"] == "sweep"]
    panels = len(regions) + (1 if sweep else 0)
    if panels == 0:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.text(0.5, 0.5, "no successful operations", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    cols = min(3, panels)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def plot(ax, values: list[float], label: str, color: str) -> None:
        ordered = sorted(values)
        n = len(ordered)
        ax.step([ordered[0]] + ordered, [0.0] + [(i + 1) / n for i in range(n)], where="post", label=label,
                color=color)

    shown = [v for c in cells for v in samples_ms[c["name"]]] + [c["bound_ms"] for c in cells if c.get("bound_ms")]
    x_min, x_max = max(min(shown) * 0.8, 0.01), max(shown) * 1.25

    for i, region in enumerate(regions):
        ax = axes[i // cols][i % cols]
        for j, wl in enumerate(CDF_WORKLOADS):
            for c in cells:
                if c["workload"] == wl and c["client_region"] == region and c["workload"] != "sweep":
                    color = colors[j % len(colors)]
                    plot(ax, samples_ms[c["name"]], "%s (p50 %s ms)" % (wl, fmt_ms(c["latency_ms"]["p50"])), color)
                    if c.get("bound_ms"):
                        ax.axvline(c["bound_ms"], color=color, linestyle="--", linewidth=0.8)
        home = any(c["client_region"] == region and c["client_region"] == c.get("leaseholder_region") for c in cells)
        ax.set_title("client in %s%s" % (region, " (leaseholder's region)" if home else ""), fontsize=10)
    if sweep:
        k = len(regions)
        ax = axes[k // cols][k % cols]
        for j, c in enumerate(sweep):
            plot(ax, samples_ms[c["name"]], "%d client%s (%.0f ops/s)" % (
                c["clients"], "" if c["clients"] == 1 else "s", c["throughput_ops_s"]),
                 colors[j % len(colors)])
        if sweep[0].get("bound_ms"):
            ax.axvline(sweep[0]["bound_ms"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_title("INSERT sweep from %s" % sweep[0]["client_region"], fontsize=10)
    for i in range(panels):
        ax = axes[i // cols][i % cols]
        ax.set_xscale("log")
        ax.set_xlim(x_min, x_max)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency (ms, log scale); dashed: bound")
        ax.set_ylabel("fraction of statements")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for i in range(panels, rows * cols):
        axes[i // cols][i % cols].set_axis_off()
    fig.suptitle("raftstore bench, %s: latency CDF per client region" % report["latency"]["description"], fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

