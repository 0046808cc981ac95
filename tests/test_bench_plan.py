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
    assert bound_for("read", rtt, W, p).total_ms == 64            # the leaseholder answers from its lease (issue 12)
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


# A synthetic py-spy --idle document of a gateway: frames as py-spy writes them (outermost first).
_LOOP = [("BaseEventLoop.run_forever", "/usr/lib/python3.11/asyncio/base_events.py"),
         ("BaseEventLoop._run_once", "/usr/lib/python3.11/asyncio/base_events.py"),
         ("Handle._run", "/usr/lib/python3.11/asyncio/events.py")]
_SELECT = [_LOOP[0], _LOOP[1], ("EpollSelector.select", "/usr/lib/python3.11/selectors.py")]
_ENTRY = [("Gateway.handle.<locals>.run", "/src/sql/gateway.py"), ("Gateway._execute", "/src/sql/gateway.py"),
          ("Session.execute", "/src/sql/execute.py")]
_HANDLE = [("ClientServer._answer", "/src/raftstore/server/client_port.py"),
           ("ClientServer._handle", "/src/raftstore/server/client_port.py"),
           ("Gateway.handle", "/src/sql/gateway.py"), ("run", "/src/raftstore/coop.py")]
_PLAN = _ENTRY + [("Session._plan", "/src/sql/execute.py"), ("NodeKV.get", "/src/raftstore/server/nodekv.py"),
                  ("NodeKV._batch", "/src/raftstore/server/nodekv.py")]
_WRITE = _ENTRY + [("Session._insert", "/src/sql/execute.py"),
                   ("NodeKV.write_if_many", "/src/raftstore/server/nodekv.py"), ("wait", "/src/raftstore/coop.py")]
_ANSWER = _LOOP + [("ClientServer._answer", "/src/raftstore/server/client_port.py"),
                   ("StreamWriter.write", "/usr/lib/python3.11/asyncio/streams.py"),
                   ("_SelectorSocketTransport.write", "/usr/lib/python3.11/asyncio/selector_events.py")]
# the loop's side of a statement: Gateway.handle (sql/) awaiting the statement's KV batch, no statement running
_HANDOFF = _LOOP + _HANDLE + [("Node.batch_within", "/src/raftstore/node/loop.py"),
                              ("wait_for", "/usr/lib/python3.11/asyncio/tasks.py")]
# the loop's side too: Gateway.handle (sql/) turning the result into the answer, no coop.run below it
_ROWS = _LOOP + _HANDLE[:3] + [("_wire_value", "/src/sql/gateway.py")]
_READ = _LOOP + [("_SelectorSocketTransport._read_ready", "/usr/lib/python3.11/asyncio/selector_events.py"),
                 ("BufferedProtocol.data_received", "/usr/lib/python3.11/asyncio/streams.py")]
_NODE_BUSY = [("Node._loop", "/src/raftstore/node/loop.py"), ("RealLogFile.sync", "/src/raftstore/raft/journal.py")]
_PARSE = [("Thread._bootstrap", "/usr/lib/python3.11/threading.py"), ("parse", "/src/sql/parser.py")]


def _speedscope(threads: dict[str, list[list[tuple[str, str]]]]) -> dict:
    frames: list[tuple[str, str]] = []

    def index(frame):
        if frame not in frames:
            frames.append(frame)
        return frames.index(frame)
    profiles = [{"name": 'Thread %d "%s"' % (7000 + n, name), "samples": [[index(f) for f in s] for s in samples],
                 "weights": [0.01] * len(samples)} for n, (name, samples) in enumerate(threads.items())]
    return {"shared": {"frames": [{"name": n, "file": f, "line": 1} for n, f in frames]}, "profiles": profiles}


def _gateway_doc(**main_overrides) -> dict:
    main = {"plan": [_PLAN] * 6, "write": [_WRITE] * 2, "answer": [_ANSWER] * 4, "handoff": [_HANDOFF],
            "rows": [_ROWS],
            "read": [_READ], "empty": [[]], "idle": [_SELECT] * 4}
    main.update(main_overrides)
    return _speedscope({"MainThread": [s for samples in main.values() for s in samples],
                        "node-loop": [_SELECT] * 15 + [_NODE_BUSY] * 5,
                        "asyncio_0": [_PARSE] * 2,                   # coop.offload: a long text parsed
                        "raft-snapshot": [_NODE_BUSY] * 3})          # short-lived, never in select


def test_statements_time_on_the_main_thread_is_split_by_step_and_the_rest_of_the_thread_by_its_work():
    from bench.profile_view import NO_FRAME, statement_steps
    steps = statement_steps(_gateway_doc())
    assert steps["thread"] == "MainThread" and abs(steps["wall_s"] - 0.20) < 1e-9
    # only the greenlet's samples are statement time, not Gateway.handle on the loop awaiting a batch
    assert steps["samples"] == 8 and abs(steps["statement_s"] - 0.08) < 1e-9
    assert [round(steps[k]) for k in ("statement_pct", "other_pct", "idle_pct", "busy_pct")] == [40, 40, 20, 80]
    assert [(s["step"], s["file"], round(s["pct"])) for s in steps["steps"]] == [
        ("Session._plan > NodeKV.get", "raftstore/server/nodekv.py", 75),
        ("Session._insert > NodeKV.write_if_many > wait", "raftstore/coop.py", 25)]
    assert [(o["work"], round(o["pct"])) for o in steps["other"]] == [
        ("ClientServer._answer > StreamWriter.write", 20),
        ("ClientServer._answer > ClientServer._handle > Gateway.handle > run > Node.batch_within > wait_for", 5),
        ("ClientServer._answer > ClientServer._handle > Gateway.handle > _wire_value", 5),
        ("_SelectorSocketTransport._read_ready", 5), (NO_FRAME, 5)]
    assert abs(steps["offloaded_s"] - 0.02) < 1e-9
    assert [(t["thread"], round(t["busy_pct"])) for t in steps["loop_threads"]] == [("node-loop", 25)]


def test_a_statement_shown_above_coop_run_still_counts_as_one():
    from bench.profile_view import statement_steps
    chained = _LOOP + _HANDLE + _PLAN       # a build whose greenlet frames chain to coop.run's
    steps = statement_steps(_gateway_doc(plan=[chained] * 6))
    assert steps["samples"] == 8 and round(steps["statement_pct"]) == 40
    assert steps["steps"][0]["step"] == "Session._plan > NodeKV.get"


def test_no_statement_running_in_any_sample_gives_no_statement_steps():
    from bench.profile_view import statement_steps
    assert statement_steps(_speedscope({"MainThread": [_SELECT, _ANSWER, _HANDOFF, _ROWS]})) is None


def test_the_report_gives_ms_per_statement_and_leaves_the_waits_undivided():
    from bench.profile_view import statement_steps
    from bench.report import statement_time_markdown
    p = {"gateway": "n1 (us-east1)", "leaseholder": "n1 (us-east1)", "throughput_ops_s": 1000.0, "ops": 5000,
         "mean_ms": 10.0}
    text = "\n".join(statement_time_markdown(p, statement_steps(_gateway_doc())))
    # 1000 statements/s: the main thread has 1 ms per statement, 40 % of it running statements
    assert "1.00 ms of wall-clock time per statement" in text
    assert "running statements: ≈ 0.40 ms per statement" in text
    assert ("Of the mean latency 10.0 ms, ≈ 0.40 ms is the statement running on the main thread; "
            "the other ≈ 9.60 ms it waits") in text
    assert "| 75 | 0.30 | `Session._plan > NodeKV.get` (raftstore/server/nodekv.py) |" in text
    assert "| 20 | 0.20 | `ClientServer._answer > StreamWriter.write` (raftstore/server/client_port.py) |" in text
    assert "statement code on other threads (e.g. long texts parsed by coop.offload): ≈ 0.10 ms per statement" in text
    assert "cannot divide those waits" in text and "the main thread 80%" in text and "`node-loop` 25%" in text
    assert "not saturated" in text and "worker" not in text
    busy = statement_time_markdown(p, statement_steps(_gateway_doc(idle=[])))
    assert "The main thread is saturated" in "\n".join(busy)


def test_read_targets_judge_the_leaseholders_region_in_milliseconds_and_others_against_the_round_trip():
    cells = [_cell("read@E", "read", E, E, 0.7, 0), _cell("read@W", "read", W, E, 64.2, 60),
             _cell("read@U", "read", U, E, 62.0, 60)]
    verdicts = {v["id"]: v for v in targets.evaluate(cells, None, latency_emulated=True, local_cluster=True)}
    assert verdicts["leaseholder_read"]["status"] == targets.MET and "4.30 ms to spare" in verdicts["leaseholder_read"]["detail"]
    assert verdicts["remote_read"]["status"] == targets.MISSED and "read@W" in verdicts["remote_read"]["detail"]
    slow = {v["id"]: v for v in targets.evaluate([_cell("read@E", "read", E, E, 6.0, 0)], None,
                                                  latency_emulated=True, local_cluster=True)}
    assert slow["leaseholder_read"]["status"] == targets.MISSED and slow["remote_read"]["status"] == targets.NOT_MEASURED


def test_the_follower_read_target_wants_every_region_under_5_ms_and_prefers_the_bounded_cells():
    cells = [_cell("bounded_read@E", "bounded_read", E, E, 0.9, 0), _cell("bounded_read@W", "bounded_read", W, E, 1.4, 0),
             _cell("stale_read@W", "stale_read", W, E, 64.0, 0)]
    verdicts = {v["id"]: v for v in targets.evaluate(cells, None, latency_emulated=True, local_cluster=True)}
    assert verdicts["follower_read"]["status"] == targets.MET and "3.60 ms to spare" in verdicts["follower_read"]["detail"]
    slow = {v["id"]: v for v in targets.evaluate(cells[2:], None, latency_emulated=True, local_cluster=True)}
    assert slow["follower_read"]["status"] == targets.MISSED and "missed by 59.00 ms" in slow["follower_read"]["detail"]
    none = {v["id"]: v for v in targets.evaluate(cells[:0], None, latency_emulated=True, local_cluster=True)}
    assert none["follower_read"]["status"] == targets.NOT_MEASURED
