"""Overload on real node processes (raftstore.server.client_port's limits): each attack runs five
times against one node while an honest client on the same node asks for something every 50 ms.
In every case the node stays up, the honest client gets every answer within 5 s, the node's RSS
during the attack stays within its baseline plus its client memory budget plus 20 %, and its RSS
after the fifth repetition is at most 10 % above its RSS after the first. Each test prints the
honest client's p99 and the RSS figures (the README's "Limits" table comes from them)."""

from __future__ import annotations

import resource
import statistics
import socket
import struct
import threading
import time

import pytest

from raftstore import wire
from raftstore.localcluster import Cluster
from raftstore.sqlclient import connect

pytestmark = pytest.mark.slow

BUDGET = 32 * 1024 * 1024          # the attacked node's --max-client-memory
HONEST_DEADLINE_S = 5.0
REPETITIONS = 5


def rss_bytes(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


class Honest:
    """A client on the attacked node asking for one row every 50 ms; every answer must come
    within HONEST_DEADLINE_S. Samples the node's RSS as it goes."""

    def __init__(self, node) -> None:
        self.node, self.latencies, self.errors, self.rss = node, [], [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with connect(self.node.sql_addr, timeout_s=HONEST_DEADLINE_S) as conn:
            cur = conn.cursor()
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    cur.execute("SELECT v FROM honest WHERE k = 1")
                    assert cur.fetchall() == [("ok",)]
                    self.latencies.append(time.monotonic() - began)
                except Exception as exc:   # noqa: BLE001 - every failure is a finding
                    self.errors.append(repr(exc))
                self.rss.append(rss_bytes(self.node.pid))
                self.stop.wait(0.05)

    def __enter__(self) -> "Honest":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(HONEST_DEADLINE_S + 5)

    def p99_s(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("overload"))
    with Cluster(root, extra_args=["--max-client-memory", str(BUDGET), "--client-idle-timeout", "20"]) as c:
        node = c.nodes[0]
        with connect(node.sql_addr, timeout_s=30) as conn:
            cur = conn.cursor()
            cur.execute("CREATE TABLE honest (k INT PRIMARY KEY, v TEXT)")
            cur.execute("INSERT INTO honest VALUES (1, 'ok')")
            cur.execute("CREATE TABLE hundred (k INT PRIMARY KEY)")     # joined with itself four times: 10^8 rows
            cur.execute("INSERT INTO hundred VALUES " + ", ".join("(%d)" % k for k in range(100)))
            cur.execute("CREATE TABLE wide (k INT PRIMARY KEY, v TEXT)")   # a 64 KB answer
            cur.execute("INSERT INTO wide VALUES " + ", ".join("(%d, '%s')" % (k, "w" * 4000) for k in range(16)))
            cur.execute("SELECT v FROM honest WHERE k = 1")
        yield c


def _attack(cluster, attack, what: str) -> None:
    """Run `attack(node)` REPETITIONS times with an honest client alongside; check the node."""
    node = cluster.nodes[0]
    time.sleep(0.5)
    baseline = rss_bytes(node.pid)
    after = []
    with Honest(node) as honest:
        for _ in range(REPETITIONS):
            attack(node)
            assert node.pid is not None, "the node died"
            _settled(cluster, node)
            after.append(rss_bytes(node.pid))
    assert not honest.errors, honest.errors[:3]
    assert honest.latencies and max(honest.latencies) < HONEST_DEADLINE_S
    peak = max(honest.rss + after)
    print("\n%s: honest p99 %.1f ms (%d answers), RSS baseline %.0f MB, peak %.0f MB, after the 1st %.0f MB, "
          "after the 5th %.0f MB" % (what, honest.p99_s() * 1000, len(honest.latencies), baseline / 2**20,
                                      peak / 2**20, after[0] / 2**20, after[-1] / 2**20))
    assert peak <= (baseline + BUDGET) * 1.2, (peak, baseline)
    assert creep(after) <= 0.1 * after[0], after


def creep(after: list[int]) -> float:
    """What RSS grew from the first repetition to the last along its trend (the least-squares
    slope over the repetitions, times their span): a leak grows it every repetition, while the
    allocator's fragmentation moves single samples up and down by a few MB (a CI run measured
    79, 84, 82, 82, 87 MB, last over first +10.2 %, trend +7 %)."""
    return statistics.linear_regression(range(len(after)), after).slope * (len(after) - 1)


def test_the_creep_check_passes_fragmentation_noise_and_catches_a_leak():
    noise = [79298560, 83877888, 81776640, 81584128, 87351296]   # the CI run above
    assert creep(noise) <= 0.1 * noise[0]
    leak = [int(80e6 * (1 + 0.03 * i)) for i in range(REPETITIONS)]   # 3 % a repetition: 12 % in all
    assert creep(leak) > 0.1 * leak[0]
    assert creep([int(80e6 * 1.1 ** i) for i in range(REPETITIONS)]) > 0.1 * 80e6   # the paged-result leak (10 %/result)


def _settled(cluster, node) -> None:
    """Wait until the attack's connections are gone and their bytes came back (the limits end
    each within seconds: a refused frame, the idle timeout, an unread answer's timeout)."""
    deadline = time.monotonic() + 60
    with cluster.client(node) as c:
        while True:
            clients = c.status()["clients"]
            if clients["memory_used"] < 64 * 1024 and clients["connections"] <= 3:
                return
            assert time.monotonic() < deadline, clients
            time.sleep(0.2)


def _sock(node) -> socket.socket:
    host, port = node.sql_addr.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_a_hundred_connections_holding_partial_4_mib_frames(cluster):
    def attack(node) -> None:
        socks = []
        for _ in range(100):
            s = _sock(node)
            s.setblocking(False)
            try:   # a 4 MiB frame begun, 1 MiB of it sent (or what the node takes)
                s.send(struct.pack("<I", wire.constants.client_frame_bytes_max - 1) + b"\x00" * (1 << 20))
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(1.0)
        for s in socks:
            s.close()
    _attack(cluster, attack, "100 partial 4 MiB frames")


def test_a_client_that_pipelines_requests_and_never_reads(cluster):
    def attack(node) -> None:
        s = _sock(node)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(0.5)
        frame = wire.encode_frame({"id": 3, "op": "sql", "args": {"sql": "SELECT * FROM wide" + " " * 4000}})
        try:
            for _ in range(100_000):
                s.sendall(frame)
        except (socket.timeout, BlockingIOError, OSError):
            pass   # the node stopped reading it
        s.close()
    _attack(cluster, attack, "pipelining without reading")


def test_five_thousand_idle_connections(cluster):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 6000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 6000:
        pytest.skip("this machine allows fewer than 6,000 open files")

    def attack(node) -> None:
        socks = []
        for _ in range(5000):
            try:
                socks.append(_sock(node))
            except OSError:
                break
        time.sleep(0.5)
        for s in socks:
            s.close()
        assert len(socks) == 5000
    _attack(cluster, attack, "5,000 idle connections")


def test_a_ten_megabyte_result(cluster):
    node = cluster.nodes[0]
    with connect(node.sql_addr, timeout_s=60) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE big (k INT PRIMARY KEY, v TEXT)")
        for start in range(0, 2560, 64):
            values = ", ".join("(%d, '%s')" % (k, "b" * 4000) for k in range(start, start + 64))
            cur.execute("INSERT INTO big VALUES " + values)

    def attack(node) -> None:
        with connect(node.sql_addr, timeout_s=60) as conn:
            cur = conn.cursor()
            cur.execute("SELECT * FROM big")
            rows = cur.fetchall()
        assert len(rows) == 2560 and all(len(v) == 4000 for _, v in rows)
    _attack(cluster, attack, "a 10 MB result")


def test_a_statement_that_would_run_for_minutes_is_timed_out(cluster):
    from raftstore.sqlclient import OperationalError

    def attack(node) -> None:
        with connect(node.sql_addr, timeout_s=30) as conn:
            cur = conn.cursor()
            cur.execute("SET statement_timeout = '1s'")
            began = time.monotonic()
            with pytest.raises(OperationalError) as info:
                cur.execute("SELECT count(*) FROM hundred AS a, hundred AS b, hundred AS c, hundred AS d")
            assert info.value.sqlstate == "57014", info.value
            assert time.monotonic() - began < HONEST_DEADLINE_S
            cur.execute("SELECT 1")                      # the session goes on
            assert cur.fetchall() == [(1,)]
    _attack(cluster, attack, "a statement running for minutes, timed out at 1 s")


def test_a_one_megabyte_expression(cluster):
    from raftstore.sqlclient import OperationalError

    statement = "SELECT 1" + "+1" * 499_996          # 1,000,000 bytes
    assert len(statement) == 1_000_000

    def attack(node) -> None:
        with connect(node.sql_addr, timeout_s=30) as conn:
            cur = conn.cursor()
            with pytest.raises(OperationalError, match="SQL_STATEMENT_BYTES_MAX") as info:
                cur.execute(statement)
            assert info.value.sqlstate == "54000", info.value
    _attack(cluster, attack, "a 1 MB expression")
