"""The bench's CPU-per-statement table (issue 11): parsing /proc, the per-statement arithmetic by
process, and the table's rendering. Unit: no benchmark runs here, every figure is given."""

from __future__ import annotations

import pytest

from bench import report as render
from bench.kv_latency import CpuSnapshot, parse_machine_busy_s, parse_pid_stat
from bench.sql_bench import REMOTE_NODES_NOTE, cpu_per_statement

TICK = 100


def _pid_stat(pid: int, name: str, ppid: int, utime: int, stime: int, start: int, flags: int = 4194560) -> str:
    # fields 1..22 of /proc/<pid>/stat, then the rest as zeros; cutime/cstime (16, 17) set to show
    # they are not counted (a process's CPU is its own threads', not its waited-for children's)
    fields = [str(pid), "(%s)" % name, "S", str(ppid), "1", "1", "0", "-1", str(flags), "10", "0", "0", "0",
              str(utime), str(stime), "999", "999", "20", "0", "4", "0", str(start)] + ["0"] * 30
    return " ".join(fields) + "\n"


def test_a_process_stat_is_parsed_after_the_last_parenthesis_of_its_name():
    text = _pid_stat(4242, "python3 (bench) x)", ppid=17, utime=250, stime=75, start=123456)
    assert parse_pid_stat(text, TICK) == (17, 1234.56, 3.25, False)


def test_a_kernel_thread_is_flagged_and_an_exited_process_parses_to_none():
    assert parse_pid_stat(_pid_stat(2, "kthreadd", 0, 0, 0, 1, flags=0x00208040), TICK)[3] is True
    assert parse_pid_stat("", TICK) is None


def test_this_process_own_stat_parses():
    with open("/proc/self/stat") as f:
        ppid, start_s, cpu_s, kernel = parse_pid_stat(f.read(), 100)
    assert ppid > 0 and start_s > 0 and cpu_s >= 0 and kernel is False


def test_machine_busy_time_is_every_core_not_idle_nor_waiting_for_io():
    text = "cpu  1000 200 300 5000 400 10 20 30 0 0\ncpu0 500 100 150 2500 200 5 10 15 0 0\nintr 1\n"
    # user + nice + system + irq + softirq + steal, idle (5000) and iowait (400) left out
    assert parse_machine_busy_s(text, TICK) == pytest.approx((1000 + 200 + 300 + 10 + 20 + 30) / TICK)
    assert parse_machine_busy_s("intr 1\n", TICK) is None


# pid: (ppid, start_s, cpu_s, kernel_thread). 100 is the bench process, 101/102 its load workers,
# 11/12/13 the nodes n1..n3 (children of the bench too), 50 another program, 2 a kernel thread.
BEFORE = CpuSnapshot.of(1000.0, 500.0, {
    100: (1, 10.0, 2.0, False), 101: (100, 990.0, 1.0, False), 102: (100, 990.0, 1.0, False),
    11: (100, 5.0, 10.0, False), 12: (100, 5.0, 10.0, False), 13: (100, 5.0, 10.0, False),
    50: (1, 1.0, 7.0, False), 2: (0, 0.0, 3.0, True)})
AFTER = CpuSnapshot.of(1005.0, 508.0, {                     # a 5 s window, 8 s of the machine's CPU
    100: (1, 10.0, 2.1, False), 101: (100, 990.0, 1.7, False), 102: (100, 990.0, 1.7, False),
    11: (100, 5.0, 12.5, False), 12: (100, 5.0, 11.0, False), 13: (100, 5.0, 11.2, False),
    50: (1, 1.0, 7.3, False), 2: (0, 0.0, 3.1, True)})
NODES = [(3, 13), (1, 11), (2, 12)]


def test_cpu_per_statement_by_process_is_cpu_seconds_over_statements_in_the_window():
    cpu = cpu_per_statement(BEFORE, AFTER, 1000, NODES, leader_start=1, leader_end=1, load_pid=100, load_procs=2,
                            gateway=1)
    assert cpu["statements"] == 1000 and cpu["window_s"] == 5.0 and cpu["nodes_measured"] is True
    assert cpu["leader"] == {"node_id": 1, "pid": 11, "ms": pytest.approx(2.5), "cores": pytest.approx(0.5),
                             "gateway": True}
    assert [(f["node_id"], f["ms"], f["gateway"]) for f in cpu["followers"]] == [
        (2, pytest.approx(1.0), False), (3, pytest.approx(1.2), False)]
    # the bench process and its two workers, never the nodes although they are its children too
    assert cpu["load"] == {"ms": pytest.approx(1.5), "cores": pytest.approx(0.3), "processes": 3}
    assert cpu["measured"]["ms"] == pytest.approx(2.5 + 1.0 + 1.2 + 1.5)
    assert cpu["machine"] == {"ms": pytest.approx(8.0), "cores": pytest.approx(1.6)}
    assert cpu["other"]["ms"] == pytest.approx(8.0 - 6.2)          # program 50, the kernel, the rest


def test_the_leader_is_the_node_that_led_at_the_cells_start_and_the_end_is_kept():
    cpu = cpu_per_statement(BEFORE, AFTER, 500, NODES, leader_start=3, leader_end=2, load_pid=100, load_procs=2,
                            gateway=2)
    assert cpu["leader"]["node_id"] == 3 and cpu["leader"]["ms"] == pytest.approx(2.4)
    assert [(f["node_id"], f["gateway"]) for f in cpu["followers"]] == [(1, False), (2, True)]
    assert (cpu["leader_start"], cpu["leader_end"]) == (3, 2)


def test_without_statements_there_is_no_figure_per_statement_but_cores_still():
    cpu = cpu_per_statement(BEFORE, AFTER, 0, NODES, leader_start=1, leader_end=1, load_pid=100, load_procs=2)
    assert cpu["leader"]["ms"] is None and cpu["leader"]["cores"] == pytest.approx(0.5)
    assert cpu["machine"]["ms"] is None


def test_a_remote_clusters_nodes_are_not_measured_and_not_guessed():
    remote = [(1, None), (2, None), (3, None)]
    cpu = cpu_per_statement(BEFORE, AFTER, 1000, remote, leader_start=2, leader_end=2, load_pid=100, load_procs=2)
    assert cpu["nodes_measured"] is False and cpu["nodes_note"] == REMOTE_NODES_NOTE
    assert cpu["leader"] is None and cpu["followers"] == []
    # with no node named, processes 11-13 are the bench's descendants: here they count as load,
    # as a remote cluster's nodes would not (they run elsewhere)
    assert cpu["load"]["ms"] is not None and cpu["machine"]["ms"] == pytest.approx(8.0)


def _cell(name: str, cpu: dict, rows: int = 1) -> dict:
    return {"name": name, "rows_per_op": rows, "cpu_per_statement": cpu}


def test_the_table_names_each_node_and_says_when_the_leader_moved():
    moved = cpu_per_statement(BEFORE, AFTER, 100, NODES, leader_start=1, leader_end=3, load_pid=100, load_procs=2,
                              gateway=2)
    rows = render.cpu_rows([_cell("insert@us-east1", moved), {"name": "stale_read@x"},
                            _cell("multirow@us-east1", moved, rows=10)], cores_usable=2)
    assert len(rows) == 2
    assert rows[0] == ["insert@us-east1", "100", "25.0 (n1)", "10.0 (n2, gateway), 12.0 (n3)", "15.0 (3 procs)",
                       "62.0", "80.0", "18.0", "1.60 of 2", "n3 (moved from n1)"]
    assert rows[1][1] == "100 (10 rows each)"


def test_the_table_says_not_measured_for_a_remote_cluster():
    remote = cpu_per_statement(BEFORE, AFTER, 1000, [(1, None), (2, None)], leader_start=2, leader_end=2,
                               load_pid=100, load_procs=2)
    row = render.cpu_row(_cell("insert@us-east1", remote))
    assert row[2] == REMOTE_NODES_NOTE + "; n2" and row[3] == REMOTE_NODES_NOTE
    assert row[-1] == "n2" and row[-2] == "1.60"


def test_the_markdown_report_carries_the_table():
    cpu = cpu_per_statement(BEFORE, AFTER, 1000, NODES, leader_start=1, leader_end=1, load_pid=100, load_procs=2,
                            gateway=1)
    cell = {"name": "insert@us-east1", "system": "raftstore", "workload": "insert", "client_region": "us-east1",
            "leaseholder_region": "us-east1", "clients": 1, "status": "ok", "ops": 1000, "throughput_ops_s": 200.0,
            "rows_per_op": 1, "latency_ms": {"p50": 2.0, "p99": 4.0}, "bound_ms": 0, "ratio": None,
            "cpu_per_statement": cpu}
    report = {"config": {"command": "raftstore bench", "value_bytes": 100, "warmup_s": 1, "duration_s": 5},
              "raftstore": {"cells": [cell], "description": "3 nodes"}, "latency": {"description": "loopback"},
              "machine": {"cpu_usable": 2}, "started_at": "now", "targets": []}
    md = render.markdown_report(report)
    assert "#### CPU milliseconds per statement, by process" in md
    assert "| insert@us-east1 | 1000 | 2.50 (n1, gateway) | 1.00 (n2), 1.20 (n3) | 1.50 (3 procs) | 6.20 | 8.00 " \
           "| 1.80 | 1.60 of 2 | n1 |" in md
