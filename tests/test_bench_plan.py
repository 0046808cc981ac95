"""The pure parts of `raftstore bench`: which cells run, where the range is, what the clients
send, and how the issue's targets are judged."""

from __future__ import annotations

from bench import loadgen, targets
from bench.sql_bench import Placement, bound_for, parse_placement, plan_cells, symmetric_rtt_ms
from raftstore.node.wan import load_matrix

E, W, U = "us-east1", "europe-west1", "us-west1"


def test_cells_run_from_the_leaseholders_region_first_then_every_other_region():
    cells = plan_cells(["insert", "multirow", "sweep"], [E, W, U], W, [1, 16, 64], rows=10)
    assert [c["name"] for c in cells] == [
        "insert@europe-west1", "insert@us-east1", "insert@us-west1", "multirow@europe-west1",
        "sweep@europe-west1/c1", "sweep@europe-west1/c16", "sweep@europe-west1/c64"]
    assert [c["clients"] for c in cells] == [1, 1, 1, 1, 1, 16, 64]
    assert cells[3]["rows_per_op"] == 10 and cells[0]["rows_per_op"] == 1


def test_workloads_run_in_a_fixed_order_whatever_order_they_are_asked_in():
    cells = plan_cells(["read", "update", "insert"], [E], E, [1], rows=1)
    assert [c["workload"] for c in cells] == ["insert", "update", "read"]


def test_placement_comes_from_show_ranges_and_waits_for_a_leaseholder():
    row = (2, "/bench_kv", "/Max", 3, "us-west1", "n1, n2, n3", "n1=us-east1, n2=europe-west1, n3=us-west1")
    assert parse_placement([row]) == Placement(3, U, (E, W, U), 1)
    assert parse_placement([row, row]).ranges == 2
    assert parse_placement([(2, "/a", "/Max", None, None, "n1", "n1=us-east1")]) is None
    assert parse_placement([]) is None


def test_each_workload_gets_its_bound():
    rtt = load_matrix("global3").rtt_ms
    p = Placement(1, E, (E, W, U))
    assert bound_for("insert", rtt, U, p).total_ms == 66 + 64
    assert bound_for("multirow", rtt, E, p).total_ms == 64
    assert bound_for("read", rtt, W, p).total_ms == 64 + 64       # reads go through the log today
    assert bound_for("stale_read", rtt, W, p).total_ms == 0
    assert bound_for("put", rtt, E, p).total_ms == 64


def test_etcd_is_compared_only_under_a_symmetric_latency():
    assert symmetric_rtt_ms(load_matrix("symmetric60").rtt_ms, [E, W, U]) == 60
    assert symmetric_rtt_ms(load_matrix("global3").rtt_ms, [E, W, U]) is None


def test_clients_never_write_the_same_key():
    seen = set()
    for step in range(3):
        base = loadgen.key_base_for_step(step)
        for client in (0, 1, loadgen.clients_per_step_max - 1):
            for seq in (0, 1, loadgen.keys_per_client - 1):
                seen.add(loadgen.insert_key(base, client, seq))
    assert len(seen) == 3 * 3 * 3
    assert min(seen) > loadgen.seed_key(loadgen.seed_rows_max - 1)
    assert max(seen) < 2**63


def test_statements_bind_parameters_and_never_splice_values():
    assert loadgen.sql_statement("insert", "t") == "INSERT INTO t (k, v) VALUES ($1, $2)"
    assert loadgen.sql_statement("multirow", "t", rows=2) == "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $4)"
    assert loadgen.sql_statement("update", "t") == "UPDATE t SET v = $2 WHERE k = $1"
    assert "follower_read_timestamp()" in loadgen.sql_statement("stale_read", "t")
    base = loadgen.key_base_for_step(0)
    assert loadgen.sql_params("multirow", 1, 2, base, "v", rows=2) == [
        loadgen.insert_key(base, 1, 4), "v", loadgen.insert_key(base, 1, 5), "v"]
    assert loadgen.sql_params("read", 3, 99, base, "v") == [loadgen.seed_key(3)]
    assert loadgen.sql_params("update", 3, 7, base, "v")[0] == loadgen.seed_key(3)


def test_etcd_requests_use_base64_keys_on_the_json_gateway():
    path, body = loadgen.etcd_request("put", "b/", 2, 5, b"xy")
    assert path == "/v3/kv/put"
    assert body == b'{"key": "Yi9jMDAwMi8wMDAwMDAwMDU=", "value": "eHk="}'   # b/c0002/000000005, xy
    path, _ = loadgen.etcd_request("get", "b/", 2, 5, b"xy")
    assert path == "/v3/kv/range"


def test_clients_are_dealt_round_robin_to_at_most_procs_max_workers():
    assert loadgen.split_clients(1, 4) == [[0]]
    assert loadgen.split_clients(5, 2) == [[0, 2, 4], [1, 3]]


def _cell(name, workload, client, leaseholder, p50, bound, clients=1, ops_s=10.0):
    return {"name": name, "workload": workload, "client_region": client, "leaseholder_region": leaseholder,
            "clients": clients, "status": "ok", "latency_ms": {"p50": p50, "p99": p50}, "bound_ms": bound,
            "throughput_ops_s": ops_s, "ratio": p50 / bound if bound else None}


def test_a_latency_target_is_met_within_five_percent_of_the_bound_and_says_by_how_much_otherwise():
    cells = [_cell("insert@E", "insert", E, E, 63.0, 60), _cell("insert@W", "insert", W, E, 127.0, 120)]
    verdicts = {v["id"]: v for v in targets.evaluate(cells, None, latency_emulated=True, local_cluster=True)}
    assert verdicts["leaseholder_insert"]["status"] == targets.MET
    assert verdicts["remote_write"]["status"] == targets.MISSED
    assert "missed by 1.0 ms" in verdicts["remote_write"]["detail"]
    assert verdicts["throughput_vs_etcd"]["status"] == targets.NOT_MEASURED
    assert verdicts["loopback_inserts"]["status"] == targets.NOT_MEASURED


def test_throughput_targets_compare_64_clients_with_etcd_and_with_3000_per_second_on_loopback():
    ours = [_cell("sweep@E/c64", "sweep", E, E, 20.0, 0, clients=64, ops_s=2500.0)]
    etcd = [_cell("sweep@m1/c64", "sweep", "m1", "m1", 30.0, 0, clients=64, ops_s=2000.0)]
    verdicts = {v["id"]: v for v in targets.evaluate(ours, etcd, latency_emulated=False, local_cluster=True)}
    assert verdicts["throughput_vs_etcd"]["status"] == targets.MET
    assert verdicts["loopback_inserts"]["status"] == targets.MISSED
    assert "missed by 500/s" in verdicts["loopback_inserts"]["detail"]
    assert verdicts["leaseholder_insert"]["status"] == targets.NOT_MEASURED


def test_a_statements_wall_time_is_split_by_the_kv_call_it_waits_in():
    from bench.profile_view import statement_steps
    frames = [
        {"name": "handle_sql.<locals>.run", "file": "/src/sql/gateway.py", "line": 1},
        {"name": "Session.execute", "file": "/src/sql/execute.py", "line": 2},
        {"name": "Session._plan", "file": "/src/sql/execute.py", "line": 3},
        {"name": "NodeKV.get", "file": "/src/sql/gateway.py", "line": 4},
        {"name": "NodeKV._run", "file": "/src/sql/gateway.py", "line": 5},
        {"name": "Condition.wait", "file": "/usr/lib/python3.11/threading.py", "line": 6},
        {"name": "Session._insert", "file": "/src/sql/execute.py", "line": 7},
        {"name": "NodeKV.cas", "file": "/src/sql/gateway.py", "line": 8},
        {"name": "_worker", "file": "/usr/lib/python3.11/concurrent/futures/thread.py", "line": 9},
    ]
    frames.append({"name": "BaseEventLoop.run_forever", "file": "/usr/lib/python3.11/asyncio/base_events.py"})
    catalog = [0, 1, 2, 3, 4, 5]
    write = [0, 1, 6, 7, 4, 5]
    idle = [8]
    dispatch = [9, 0]          # the event loop thread handing a statement over: not statement time
    doc = {"shared": {"frames": frames},
           "profiles": [{"samples": [catalog] * 3 + [write] + [idle] * 10, "weights": [0.01] * 14},
                        {"samples": [dispatch] * 5, "weights": [0.01] * 5}]}
    steps = statement_steps(doc)
    assert steps["samples"] == 4                      # idle samples are not statement time
    assert steps["threads"] == 1 and round(steps["threads_busy_pct"]) == round(100 * 4 / 14)
    assert abs(steps["statement_s"] - 0.04) < 1e-9
    assert [(s["step"], round(s["pct"])) for s in steps["steps"]] == [
        ("Session._plan > NodeKV.get", 75), ("Session._insert > NodeKV.cas", 25)]
    assert statement_steps({"shared": {"frames": frames}, "profiles": [{"samples": [idle], "weights": [1]}]}) is None
