"""Closed-loop load: N clients, each issuing one operation at a time, timed one by one.

Why a module of its own: `raftstore bench` runs the same kind of step against raftstore (SQL
statements through `raftstore.connect`) and against etcd (its HTTP/JSON gateway), and both must
be measured the same way for the side-by-side table to mean anything.

What one step measures (the same rules as bench/kv_latency.py):

* All clients connect and prepare first; then "go", a warm-up (not measured), then the measured
  window [start, start + seconds). An operation counts if it started at or after the window start
  and finished before its end; its latency is `time.perf_counter()` around the whole call, the
  client's own retries included. Throughput is counted operations / window length.
* Clients are threads spread over up to `procs_max` worker processes (spawned), so one load
  process's GIL does not cap the load. A failed operation is counted by exception type, its first
  message kept; a client never dies on an error.

What a client does is an *operation spec*, a plain dict that crosses the process boundary:

    {"kind": "sql", "addr": "127.0.0.1:26267", "workload": "insert" | "update" | "read" |
     "stale_read" | "bounded_read" | "multirow", "table": "bench_kv", "rows": 10, "key_base": 10**12,
     "value_bytes": 100}
    {"kind": "pg", "addr": "127.0.0.1:26257", ...}   (the same, through a node's PostgreSQL port
     with psycopg: server-side prepared statements, autocommit)
    {"kind": "etcd", "addr": "127.0.0.1:2379", "workload": "put" | "get", "key_prefix": "bench/x/",
     "value_bytes": 100}

Keys: each client of a writing step writes keys nobody else writes (`insert_key`); updates and
reads hit the client's own pre-seeded row (`seed_key`), so clients never contend on a row.
The statement text and parameter builders are pure; the workers are the edge.
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import multiprocessing
import signal
import threading
import time
from typing import Any, Callable

# --- bounds (units last) -----------------------------------------------------------------------
procs_max_default = 4
client_timeout_s = 15.0            # per statement / request, retries included
worker_ready_s_max = 60.0          # every client connected and prepared within this
result_wait_s_slack = 30.0         # beyond window + client_timeout_s, for results to arrive
keys_per_client = 10**9            # insert keys of one client: [base + id * this, base + (id + 1) * this)
clients_per_step_max = 1000        # so that key ranges of clients never overlap
seed_rows_max = clients_per_step_max
error_example_chars_max = 300
progress_tick_s = 0.2

READ_WORKLOADS = ("read", "stale_read", "bounded_read")
SQL_WORKLOADS = ("insert", "update", "read", "stale_read", "bounded_read", "multirow")
ETCD_WORKLOADS = ("put", "get")


# --- pure: statements, parameters and keys ---------------------------------------------------------


def seed_key(client_id: int) -> int:
    """The pre-seeded row a client updates or reads: keys 1 .. seed_rows_max."""
    assert 0 <= client_id < seed_rows_max, client_id
    return client_id + 1


def insert_key(key_base: int, client_id: int, seq: int) -> int:
    """The seq-th new key of a client in a step; distinct across clients and steps given distinct
    key bases at least clients_per_step_max * keys_per_client apart."""
    assert 0 <= client_id < clients_per_step_max and 0 <= seq < keys_per_client, (client_id, seq)
    return key_base + client_id * keys_per_client + seq


def key_base_for_step(step_index: int) -> int:
    """Key base of the step-th writing step: above every seed key, 10^12 apart (fits in INT8)."""
    return (step_index + 1) * clients_per_step_max * keys_per_client


def sql_statement(workload: str, table: str, rows: int = 1) -> str:
    """The SQL text of a workload (the same text every time, so the server can cache its plan)."""
    if workload == "insert":
        return "INSERT INTO %s (k, v) VALUES ($1, $2)" % table
    if workload == "multirow":
        assert rows >= 1, rows
        return "INSERT INTO %s (k, v) VALUES %s" % (
            table, ", ".join("($%d, $%d)" % (2 * i + 1, 2 * i + 2) for i in range(rows)))
    if workload == "update":
        return "UPDATE %s SET v = $2 WHERE k = $1" % table
    if workload == "read":
        return "SELECT v FROM %s WHERE k = $1" % table
    if workload == "stale_read":
        return "SELECT v FROM %s AS OF SYSTEM TIME follower_read_timestamp() WHERE k = $1" % table
    if workload == "bounded_read":
        return "SELECT v FROM %s AS OF SYSTEM TIME with_max_staleness('10s') WHERE k = $1" % table
    raise ValueError("unknown SQL workload %r (known: %s)" % (workload, ", ".join(SQL_WORKLOADS)))


def sql_params(workload: str, client_id: int, seq: int, key_base: int, value: str, rows: int = 1) -> list:
    """Parameters of the seq-th statement of a client."""
    if workload == "insert":
        return [insert_key(key_base, client_id, seq), value]
    if workload == "multirow":
        out: list = []
        for j in range(rows):
            out += [insert_key(key_base, client_id, seq * rows + j), value]
        return out
    if workload == "update":
        return [seed_key(client_id), "%d:%s" % (seq, value)]
    if workload in READ_WORKLOADS:
        return [seed_key(client_id)]
    raise ValueError("unknown SQL workload %r" % workload)


def etcd_request(workload: str, key_prefix: str, client_id: int, seq: int, value: bytes) -> tuple[str, bytes]:
    """(path, JSON body) of an etcd v3 HTTP/JSON gateway call: a put of a new key, or a
    linearizable get (a `range` without `serializable`) of the client's seeded key."""
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()
    if workload == "put":
        key = ("%sc%04d/%09d" % (key_prefix, client_id, seq)).encode()
        return "/v3/kv/put", json.dumps({"key": b64(key), "value": b64(value)}).encode()
    if workload == "get":
        return "/v3/kv/range", json.dumps({"key": b64(etcd_seed_key(key_prefix, client_id))}).encode()
    raise ValueError("unknown etcd workload %r (known: %s)" % (workload, ", ".join(ETCD_WORKLOADS)))


def etcd_seed_key(key_prefix: str, client_id: int) -> bytes:
    return ("%sseed/c%04d" % (key_prefix, client_id)).encode()


def split_clients(clients: int, procs_max: int) -> list[list[int]]:
    """Client ids dealt round-robin to min(procs_max, clients) worker processes."""
    n = max(1, min(procs_max, clients))
    return [list(range(p, clients, n)) for p in range(n)]


# --- edge: one client of each kind -----------------------------------------------------------------


class SqlClientOp:
    """One SQL connection running one workload's statement over and over."""

    def __init__(self, spec: dict, client_id: int) -> None:
        import raftstore
        self.spec, self.client_id = spec, client_id
        self.statement = sql_statement(spec["workload"], spec["table"], spec.get("rows", 1))
        self.value = "v" * spec.get("value_bytes", 100)
        self.conn = raftstore.connect(spec["addr"], timeout_s=client_timeout_s)
        self.cursor = self.conn.cursor()

    def prepare(self) -> None:
        self.cursor.execute("SELECT 1")   # connected now, not during the first timed statement
        self.cursor.fetchall()

    def run(self, seq: int) -> None:
        s = self.spec
        self.cursor.execute(self.statement, sql_params(s["workload"], self.client_id, seq, s.get("key_base", 0),
                                                       self.value, s.get("rows", 1)))
        if s["workload"] in READ_WORKLOADS:
            self.cursor.fetchall()

    def close(self) -> None:
        self.conn.close()


class PgClientOp(SqlClientOp):
    """One psycopg connection to a node's PostgreSQL port (--pg-addr) running one workload's
    statement over and over as a server-side prepared statement ($n placeholders: RawCursor)."""

    def __init__(self, spec: dict, client_id: int) -> None:
        import psycopg
        self.spec, self.client_id = spec, client_id
        self.statement = sql_statement(spec["workload"], spec["table"], spec.get("rows", 1))
        self.value = "v" * spec.get("value_bytes", 100)
        self.conn = psycopg.connect("postgresql://bench@%s/defaultdb?sslmode=disable" % spec["addr"],
                                    autocommit=True, connect_timeout=int(client_timeout_s),
                                    prepare_threshold=0, cursor_factory=psycopg.RawCursor)
        self.cursor = self.conn.cursor()


class EtcdHttpError(Exception):
    """The etcd gateway answered with a non-200 status."""


class EtcdClientOp:
    """One keep-alive HTTP connection to an etcd member's gRPC gateway (no extra dependency)."""

    def __init__(self, spec: dict, client_id: int) -> None:
        self.spec, self.client_id = spec, client_id
        host, _, port = spec["addr"].rpartition(":")
        self.host, self.port = host, int(port)
        self.value = b"v" * spec.get("value_bytes", 100)
        self.http = http.client.HTTPConnection(self.host, self.port, timeout=client_timeout_s)

    def _call(self, path: str, body: bytes) -> dict:
        try:
            self.http.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = self.http.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.http.close()   # reconnects on the next request
            raise
        if resp.status != 200:
            raise EtcdHttpError("HTTP %d from %s: %s" % (resp.status, path, data[:200].decode(errors="replace")))
        return json.loads(data or b"{}")

    def prepare(self) -> None:
        if self.spec["workload"] == "get":
            key = etcd_seed_key(self.spec["key_prefix"], self.client_id)
            self._call("/v3/kv/put", json.dumps({"key": base64.b64encode(key).decode(),
                                                  "value": base64.b64encode(self.value).decode()}).encode())
        else:
            self._call("/v3/maintenance/status", b"{}")

    def run(self, seq: int) -> None:
        self._call(*etcd_request(self.spec["workload"], self.spec["key_prefix"], self.client_id, seq, self.value))

    def close(self) -> None:
        self.http.close()


def make_op(spec: dict, client_id: int):
    if spec["kind"] == "sql":
        return SqlClientOp(spec, client_id)
    if spec["kind"] == "pg":
        return PgClientOp(spec, client_id)
    if spec["kind"] == "etcd":
        return EtcdClientOp(spec, client_id)
    raise ValueError("unknown operation kind %r" % spec.get("kind"))


# --- edge: worker processes ------------------------------------------------------------------------


def _closed_loop(op, window: dict, out: dict) -> None:
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
        try:
            op.run(seq)
            failed = None
        except Exception as exc:  # counted by type; a benchmark client never dies on an error
            failed = type(exc).__name__
            examples.setdefault(failed, str(exc)[:error_example_chars_max])
        seq += 1
        t1 = perf()
        if t0 >= start and t1 <= end:
            if failed is None:
                samples.append(t1 - t0)
            else:
                errors[failed] += 1
        elif t0 < start and failed is None:
            warmup_ops += 1
    out.update(samples=samples, errors=dict(errors), error_examples=examples, warmup_ops=warmup_ops)


def _worker(spec: dict, client_ids: list[int], warmup_s: float, seconds: float, go, conn) -> None:
    """One load process: a thread per client. Sends ("ready", n) or ("error", text), then after
    `go` is set, ("result", {...})."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    ops: list = []
    try:
        try:
            for cid in client_ids:
                op = make_op(spec, cid)
                ops.append(op)
                op.prepare()
        except Exception as exc:
            conn.send(("error", "client could not connect to %s: %s: %s" % (spec.get("addr"), type(exc).__name__, exc)))
            return
        conn.send(("ready", len(ops)))
        if not go.wait(2 * worker_ready_s_max):
            return  # the parent gave up or died
        now = time.perf_counter()
        window = {"start": now + warmup_s, "end": now + warmup_s + seconds}
        outs: list[dict] = [dict() for _ in ops]
        threads = [threading.Thread(target=_closed_loop, args=(op, window, out), daemon=True, name="client-%d" % cid)
                   for cid, op, out in zip(client_ids, ops, outs)]
        for t in threads:
            t.start()
        join_by = window["end"] + client_timeout_s + 5
        for t in threads:
            t.join(max(0.0, join_by - time.perf_counter()))
        result: dict[str, Any] = {"samples": [], "errors": collections.Counter(), "error_examples": {},
                                  "warmup_ops": 0}
        for out in outs:
            result["samples"].extend(out.get("samples", ()))
            result["errors"].update(out.get("errors", {}))
            for kind, text in out.get("error_examples", {}).items():
                result["error_examples"].setdefault(kind, text)
            result["warmup_ops"] += out.get("warmup_ops", 0)
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            result["errors"]["ClientStuck"] += stuck
        result["errors"] = dict(result["errors"])
        conn.send(("result", result))
    except (BrokenPipeError, EOFError):
        pass  # the parent is gone
    finally:
        for op in ops:
            try:
                op.close()
            except Exception:
                pass
        conn.close()


class LoadError(Exception):
    """A step could not run (workers did not start or answer); the message says why."""


def _receive(recv) -> tuple[str, Any]:
    try:
        return recv.recv()
    except (EOFError, OSError):
        return ("error", "the load worker exited without an answer (see its traceback above)")


def run_load(spec: dict, clients: int, *, warmup_s: float, seconds: float, procs_max: int = procs_max_default,
             on_progress: Callable[[float], None] | None = None,
             during_window: Callable[[], Callable[[], None]] | None = None) -> dict[str, Any]:
    """Run one closed-loop step; return {"samples": [s, ...], "errors", "error_examples",
    "warmup_ops", "clients", "load_procs", "seconds", "warmup_s"}.

    `on_progress(elapsed fraction of warm-up + window)` is called every `progress_tick_s`.
    `during_window()` is called when the measured window starts and returns a function called
    when it ends (CPU snapshots, profilers). Every worker is stopped before this returns or raises.
    """
    assert 1 <= clients <= clients_per_step_max, clients
    groups = split_clients(clients, procs_max)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    workers: list[tuple[Any, Any]] = []
    try:
        for ids in groups:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, name="bench-load", daemon=True,
                            args=(spec, ids, warmup_s, seconds, go, send))
            p.start()
            send.close()
            workers.append((p, recv))
        deadline = time.monotonic() + worker_ready_s_max
        for p, recv in workers:
            if not recv.poll(max(0.0, deadline - time.monotonic())):
                raise LoadError("a load worker was not ready within %.0f s" % worker_ready_s_max)
            kind, payload = _receive(recv)
            if kind != "ready":
                raise LoadError("load worker failed: %s" % payload)

        go.set()
        t_go = time.perf_counter()
        total = warmup_s + seconds
        finish: Callable[[], None] | None = None

        def wait_until(t_end: float) -> None:
            while (left := t_end - time.perf_counter()) > 0:
                time.sleep(min(progress_tick_s, left))
                if on_progress is not None and total > 0:
                    on_progress(min(1.0, (time.perf_counter() - t_go) / total))

        wait_until(t_go + warmup_s)
        if during_window is not None:
            finish = during_window()
        wait_until(t_go + total)
        if finish is not None:
            finish()

        out: dict[str, Any] = {"samples": [], "errors": collections.Counter(), "error_examples": {}, "warmup_ops": 0}
        deadline = time.monotonic() + client_timeout_s + result_wait_s_slack
        for p, recv in workers:
            if not recv.poll(max(0.0, deadline - time.monotonic())):
                raise LoadError("a load worker sent no result within %.0f s of the window's end"
                                % (client_timeout_s + result_wait_s_slack))
            kind, payload = _receive(recv)
            if kind != "result":
                raise LoadError("load worker failed: %s" % payload)
            out["samples"].extend(payload["samples"])
            out["errors"].update(payload["errors"])
            for k, text in payload["error_examples"].items():
                out["error_examples"].setdefault(k, text)
            out["warmup_ops"] += payload["warmup_ops"]
    finally:
        for p, recv in workers:
            recv.close()
            if p.is_alive():
                p.terminate()
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    out["errors"] = dict(out["errors"])
    out.update(clients=clients, load_procs=len(groups), seconds=seconds, warmup_s=warmup_s)
    return out
