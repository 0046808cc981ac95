"""Range leases on real node processes: partitions inside the peer transport (each node's faults
file, raftstore.node.loop.Node._check_faults: frames to and from the named peers are lost while
the links stay up), clocks set off with RAFTSTORE_TEST_CLOCK_SKEW_MS, kill -9 and SIGTERM.

What each test shows is the issue's: an isolated old leaseholder serves nothing after its lease
ends though pysyncobj still believes it leads; a minority refuses within the unavailable bound;
nothing acknowledged is lost; a slow clock on the old holder or on a gateway never yields a
stale read; a lease moves, and a node drains, with writes refused only briefly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from raftstore import wire
from raftstore.cli.main import CLOCK_SKEW_ENV, FAULTS_FILE_ENV, IGNORE_STASIS_ENV
from raftstore.errors import RaftstoreError
from raftstore.kv import Client
from raftstore.localcluster import Cluster
from raftstore.sqlclient import connect
from sql.catalog import table_span

pytestmark = pytest.mark.slow

DATA = 2              # the raw keyspace's range (no split in these tests)
UNAVAILABLE_S = 3.0   # the nodes' --unavailable-timeout here


def _cluster(tmp_path, skew: dict[int, int] | None = None, lease_s: float | None = None,
             matrix: str | None = None, unavailable_s: float = UNAVAILABLE_S) -> Cluster:
    env = {i: {FAULTS_FILE_ENV: str(tmp_path / ("faults-%d.json" % i))} for i in (1, 2, 3)}
    for nid, ms in (skew or {}).items():
        env[nid][CLOCK_SKEW_ENV] = str(ms)
    extra = ["--unavailable-timeout", str(unavailable_s)] + (["--lease-duration", str(lease_s)] if lease_s else [])
    extra += ["--latency-matrix", matrix] if matrix else []
    return Cluster(str(tmp_path), node_env=env, extra_args=extra)


def _cut(tmp_path, cuts: dict[int, list[int]]) -> None:
    for nid in (1, 2, 3):
        path = tmp_path / ("faults-%d.json" % nid)
        tmp = str(path) + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"cut": cuts.get(nid, [])}, f)
        os.replace(tmp, path)


def _cut_in_effect(cluster: Cluster, cuts: dict[int, list[int]], timeout_s: float = 10.0) -> None:
    """Wait until every running node's status shows the partition it was given."""
    deadline = time.monotonic() + timeout_s
    for n in cluster.nodes:
        if n.pid is None:
            continue
        with Client([n.sql_addr], timeout_s=5.0) as c:
            while c.status()["test_cut"] != sorted(cuts.get(n.node_id, [])):
                assert time.monotonic() < deadline, "n%d did not take its partition" % n.node_id
                time.sleep(0.01)


def _isolate(tmp_path, nid: int, cluster: Cluster) -> None:
    others = [n for n in (1, 2, 3) if n != nid]
    cuts = {nid: others, **{o: [nid] for o in others}}
    _cut(tmp_path, cuts)
    _cut_in_effect(cluster, cuts)


def _range(client: Client, rid: int = DATA) -> dict:
    return next(r for r in client.status()["ranges"] if r["range_id"] == rid)


def _holder(cluster: Cluster, rid: int = DATA):
    return cluster.wait_leaseholder(rid)


def _ask_once(addr: str, op: str, args: dict, timeout_s: float) -> dict:
    """One request on a connection of its own, no retry: the node's own answer."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(wire.encode_frame({"id": 1, "op": op, "args": args}))
        decoder = wire.FrameDecoder()
        while True:
            data = sock.recv(65536)
            assert data, "the node closed the connection without answering"
            frames = decoder.feed(data)
            if frames:
                return frames[0]


def _put_until(client: Client, key: bytes, value: bytes, timeout_s: float) -> float:
    """Put until one is acknowledged (a write refused during the failover is sent again: the same
    value, so a repeat changes nothing); returns when it was acknowledged."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.put(key, value)
            return time.monotonic()
        except RaftstoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_an_isolated_leaseholder_serves_nothing_after_its_lease_and_the_majority_goes_on(tmp_path):
    with _cluster(tmp_path) as cluster:
        everyone = cluster.client(*cluster.nodes)
        everyone.put(b"k", b"v1")
        old = _holder(cluster)
        majority = [n for n in cluster.nodes if n is not old]
        _isolate(tmp_path, old.node_id, cluster)
        cut_at = time.monotonic()
        with Client([m.sql_addr for m in majority], timeout_s=30.0) as side:
            acked = _put_until(side, b"k", b"v2", timeout_s=30.0)
            assert side.get(b"k") == b"v2"
        # The new lease began after the old one ended: the old holder may not answer v1 now, and
        # pysyncobj there still believes it leads (its fallback timeout is 30 s).
        with Client([old.sql_addr]) as lone:
            assert _range(lone)["leader"] == old.node_id and not _range(lone)["lease_serving"]
        for op, args in [("get", {"key": b"k"}), ("put", {"key": b"m", "value": b"minority", "command_id": b"m" * 16}),
                         ("get", {"key": b"k"})]:
            asked = time.monotonic()
            answer = _ask_once(old.sql_addr, op, args, timeout_s=UNAVAILABLE_S + 5.0)
            took = time.monotonic() - asked
            assert not answer["ok"] and took < UNAVAILABLE_S + 4.0, (op, answer, took)   # the bound, with a margin
            assert "unavailable" in answer["error"]["message"] and "r2" in answer["error"]["message"], answer
        print("failover: write acknowledged by the majority %.2f s after the cut" % (acked - cut_at))
        _cut(tmp_path, {})
        _cut_in_effect(cluster, {})
        deadline = time.monotonic() + 30
        minority = set()
        for n in cluster.nodes:   # healed: every node answers the acknowledged value
            with Client([n.sql_addr], timeout_s=30.0) as c:
                while True:
                    try:
                        assert c.get(b"k") == b"v2"
                        minority.add(c.get(b"m"))
                        break
                    except RaftstoreError:
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
        # The minority's write was answered "may still commit" (ambiguous): either way, one answer.
        assert len(minority) == 1, minority


def test_requests_sent_while_the_leaseholder_is_down_wait_for_the_next_one_instead_of_failing(tmp_path):
    """A gateway whose range's leader died holds a request until a leader it can reach serves it
    (bounded by --unavailable-timeout, long here), as CockroachDB's does, rather than answering at
    once: a SQL client does not retry. One request each, no client retry (`_ask_once`), sent once
    the survivor has seen the link to the dead holder drop (a write sent before that may be in
    flight to it: ambiguous) and before the survivors could have elected another leader (the
    election timeout is at least a second). The build before answered both at once "n3, the
    leader of r2, is not connected to this node; retry"."""
    with _cluster(tmp_path, unavailable_s=60.0) as cluster:
        cluster.client(*cluster.nodes).put(b"k", b"v1")
        old = _holder(cluster)
        gateway = next(n for n in cluster.nodes if n is not old)
        with Client([gateway.sql_addr], timeout_s=10.0) as c:
            cluster.kill9(old)
            deadline = time.monotonic() + 10.0
            while old.node_id in c.status()["connected"]:
                assert time.monotonic() < deadline, "n%d still links to the killed n%d" % (gateway.node_id, old.node_id)
                time.sleep(0.005)
            believed = _range(c)["leader"]
        answers: dict = {}

        def ask(name: str, op: str, args: dict) -> None:
            asked = time.monotonic()
            answers[name] = (_ask_once(gateway.sql_addr, op, args, timeout_s=60.0), time.monotonic() - asked)
        threads = [threading.Thread(target=ask, args=("get", "get", {"key": b"k"})),
                   threading.Thread(target=ask, args=("put", "put", {"key": b"k", "value": b"v2", "command_id": b"p" * 16}))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("sent while n%d believed n%d led r2; answered after %s" % (
            gateway.node_id, believed, {k: round(v[1], 2) for k, v in answers.items()}))
        assert answers["put"][0]["ok"], answers
        assert answers["get"][0]["ok"] and answers["get"][0]["result"]["value"] in (b"v1", b"v2"), answers
        with Client([gateway.sql_addr], timeout_s=10.0) as c:
            assert c.get(b"k") == b"v2"


def _stale_read_after_failover(tmp_path) -> tuple[list, float]:
    """The old holder's clock is 300 ms slow and it is cut off while a reader keeps reading from
    it; a write is acknowledged through the new holder as soon as it takes the lease. Returns
    the reads the old holder answered (value, when the read was sent), when the write was
    acknowledged and when the new lease began (wall clock: one machine's). A read sent after the
    new lease began and answered by the old holder was served under two leases at once.
    Leases last 6 s here, so the majority has always elected its leader (1-2 s) before the old
    lease ends, and takes the lease the moment it may: what happens then is decided by the
    stasis alone, not by how fast an election went."""
    with _cluster(tmp_path, skew={1: -300}, lease_s=6.0) as cluster:
        everyone = cluster.client(*cluster.nodes)
        everyone.put(b"k", b"v1")
        holder = _holder(cluster)
        if holder.node_id != 1:
            with Client([holder.sql_addr]) as c:
                c.lease_transfer(DATA, 1)
            deadline = time.monotonic() + 20
            while _holder(cluster).node_id != 1:
                assert time.monotonic() < deadline, "the lease did not move to n1"
                time.sleep(0.1)
        answers: list = []
        stop = threading.Event()

        def read_old() -> None:   # every read the old holder answers (and when it was sent, wall clock)
            with Client([cluster.node(1).sql_addr], timeout_s=1.0, attempt_timeout_s_max=1.0) as old:
                while not stop.is_set():
                    sent = time.time()
                    try:
                        answers.append((old.get(b"k"), sent))
                    except RaftstoreError:
                        pass
        reader = threading.Thread(target=read_old, daemon=True)
        reader.start()
        try:
            # Cut n1 off right after it extended its lease in use: the majority elects a new
            # leader well before the old lease ends, and takes the lease as soon as it may.
            with Client([cluster.node(1).sql_addr]) as c:
                first = _range(c)["lease"]["expiration"]
                deadline = time.monotonic() + 10
                while _range(c)["lease"]["expiration"] == first:
                    assert time.monotonic() < deadline, "n1 did not extend the lease in use"
                    time.sleep(0.01)
            _isolate(tmp_path, 1, cluster)
            deadline = time.monotonic() + 30
            new = None
            while new is None:       # the first majority node to serve the lease takes the write
                assert time.monotonic() < deadline, "no majority node took the lease"
                for n in (cluster.node(2), cluster.node(3)):
                    with Client([n.sql_addr], timeout_s=2.0) as c:
                        if _range(c)["lease_serving"]:
                            new = n
                            break
            with Client([new.sql_addr], timeout_s=10.0) as c:
                c.put(b"k", b"v2")
                acked = time.time()
                started = _range(c)["lease"]["start"][0] / 1e9   # the new lease's start (its clock is right)
            time.sleep(1.0)
        finally:
            stop.set()
            reader.join(timeout=5)
        _cut(tmp_path, {})
        return answers, acked, started


def test_an_old_holder_with_a_slow_clock_never_answers_a_stale_read(tmp_path):
    answers, acked, started = _stale_read_after_failover(tmp_path)
    stale = [sent - started for value, sent in answers if value == b"v1" and sent > started]
    assert not stale, "the old holder served v1 to reads sent %s s after the new lease began" % stale
    assert not [1 for value, sent in answers if value == b"v1" and sent > acked]
    assert any(value == b"v1" for value, _ in answers)   # it did serve while its lease held


def test_broken_a_build_that_ignores_the_stasis_is_caught(tmp_path, monkeypatch):
    """The same run with nodes that serve until the expiration itself (no max-offset stasis): the
    old holder, 300 ms slow, answers v1 after the new holder acknowledged v2."""
    monkeypatch.setenv(IGNORE_STASIS_ENV, "1")
    answers, acked, started = _stale_read_after_failover(tmp_path)
    assert any(value == b"v1" and sent > started for value, sent in answers)


def test_a_gateway_with_a_slow_clock_sees_every_acknowledged_write(tmp_path):
    """Writes through a correct clock, each read right after its answer through a gateway 300 ms
    behind, in SQL: the read restarts above a version within its uncertainty interval."""
    with _cluster(tmp_path, skew={3: -300}) as cluster:
        writer = connect([cluster.node(1).sql_addr])
        reader = connect([cluster.node(3).sql_addr])
        w, r = writer.cursor(), reader.cursor()
        w.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
        w.execute("INSERT INTO t VALUES (1, 0)")
        for i in range(1, 60):
            w.execute("UPDATE t SET v = %d WHERE k = 1" % i)
            r.execute("SELECT v FROM t WHERE k = 1")
            assert r.fetchall() == [(i,)]
            r.execute("SELECT count(*), max(v) FROM t")      # a scan: one timestamp across its pages
            assert r.fetchall() == [(1, i)]
        holder = _holder(cluster, rid=max(x["range_id"] for x in Client([cluster.node(1).sql_addr]).status()["ranges"]))
        status = Client([holder.sql_addr]).status()
        print("leaseholder n%d: %s" % (holder.node_id, status["leases"]))


@pytest.mark.parametrize("matrix, rtt_s", [(None, 0.0), ("symmetric60", 0.060)])
def test_a_lease_transfer_moves_the_lease_with_writes_refused_only_briefly(tmp_path, matrix, rtt_s):
    """Writes through the new holder, back to back, across three moves: the longest wait between
    two acknowledged writes. The issue's window is two round trips plus 200 ms of refused writes
    (under symmetric60: 320 ms, plus the write's own round trip to be acknowledged)."""
    with _cluster(tmp_path, matrix=matrix) as cluster:
        everyone = cluster.client(*cluster.nodes)
        everyone.put(b"k", b"0")
        holder = _holder(cluster)
        target = next(n for n in cluster.nodes if n is not holder)
        gaps = []
        for i in range(3):
            with Client([holder.sql_addr]) as c:
                c.lease_transfer(DATA, target.node_id)
            last = time.monotonic()
            gap = 0.0
            end = last + 4.0
            with Client([target.sql_addr], timeout_s=10.0) as c:
                j = 0
                while time.monotonic() < end:
                    j += 1
                    c.put(b"k", b"%d-%d" % (i, j))
                    now = time.monotonic()
                    gap, last = max(gap, now - last), now
            gaps.append(gap)
            assert _holder(cluster).node_id == target.node_id
            holder, target = target, holder
        window_s = 2 * rtt_s + 0.2 + rtt_s
        print("%s: longest wait between acknowledged writes across each transfer: %s s (the issue's window: %.2f s)"
              % (matrix or "loopback", [round(g, 3) for g in gaps], window_s))
        # A liveness deadline with a margin for a busy machine, not a speed claim
        # (bench.lease_rto measures it on a quiet one): a move that fell back to an election and a
        # lease running out would wait 2.5 s and more.
        assert max(gaps) < window_s + 0.5


def test_sigterm_and_drain_move_every_lease_off_the_node(tmp_path):
    with _cluster(tmp_path) as cluster:
        everyone = cluster.client(*cluster.nodes)
        everyone.put(b"k", b"0")
        first = _holder(cluster)
        with Client([first.sql_addr], timeout_s=30.0) as c:
            c.get(b"k")   # the lease in use
        started = time.monotonic()
        assert cluster.stop(first) == 0          # SIGTERM: the node drains, then exits 0
        stopped = time.monotonic()
        survivors = [n for n in cluster.nodes if n.pid is not None]
        with Client([n.sql_addr for n in survivors], timeout_s=30.0) as c:
            c.put(b"k", b"1")
            answered = time.monotonic()
        second = _holder(cluster)
        assert second in survivors
        print("SIGTERM to exit %.2f s; first write after exit %.2f s" % (stopped - started, answered - stopped))
        # The lease moved before the process stopped: its log says nothing was left behind, and
        # the survivors did not wait out a lease (2.5 s) and an election (1-2 s) for the write.
        assert "still holding" not in open(first.log_path).read()
        assert answered - stopped < 2.5
        # `raftstore node drain`: the node keeps running and serves no lease.
        drained = subprocess.run([sys.executable, "-m", "raftstore.cli", "node", "drain", "--url", second.sql_addr],
                                 capture_output=True, text=True, timeout=60)
        assert drained.returncode == 0 and "serves no lease" in drained.stdout, drained
        third = _holder(cluster)
        assert third is not second and third in survivors and second.pid is not None
        with Client([second.sql_addr], timeout_s=30.0) as c:
            assert c.get(b"k") == b"1" and not _range(c)["lease_serving"]


def test_leases_live_in_the_primary_region_come_back_after_it_recovers_and_follow_a_change(tmp_path):
    """--primary-region us-west1 (n3): the lease moves there; with n3 down it serves elsewhere and
    returns once n3 is back; every node restarted with europe-west1 (n2), the lease moves there."""
    cluster = Cluster(str(tmp_path), extra_args=["--primary-region", "us-west1"])
    with cluster:
        cluster.client(*cluster.nodes).put(b"k", b"v")
        deadline = time.monotonic() + 30
        while cluster.wait_leaseholder(DATA).node_id != 3:
            assert time.monotonic() < deadline, "the lease did not move to the primary region"
            time.sleep(0.1)
        cluster.kill9(cluster.node(3))
        with Client([cluster.node(1).sql_addr, cluster.node(2).sql_addr], timeout_s=30.0) as c:
            c.put(b"k", b"while n3 was down")
        assert cluster.wait_leaseholder(DATA).node_id in (1, 2)
        cluster.start(cluster.node(3))
        deadline = time.monotonic() + 30
        while cluster.wait_leaseholder(DATA).node_id != 3:
            assert time.monotonic() < deadline, "the lease did not come back to the primary region"
            time.sleep(0.1)
        for n in cluster.nodes:
            assert cluster.stop(n) == 0
        cluster.extra_args = ["--primary-region", "europe-west1"]
        cluster.start_all()
        deadline = time.monotonic() + 60
        while cluster.wait_leaseholder(DATA, timeout=60).node_id != 2:
            assert time.monotonic() < deadline, "the lease did not move to the new primary region"
            time.sleep(0.1)
        with Client([cluster.node(1).sql_addr]) as c:
            assert c.get(b"k") == b"while n3 was down" and c.status()["primary_region"] == "europe-west1"


def _table_range(cluster: Cluster, cur, name: str, timeout_s: float = 60.0, alone: bool = True) -> tuple[int, int]:
    """(range id, its lease holder) of the one range that holds table `name`'s span - exactly
    that span with `alone` (once it was split away from its neighbours) - as SHOW RANGES FROM
    TABLE shows it."""
    cur.execute("SHOW TABLES")
    table_id = next(row[1] for row in cur.fetchall() if row[0] == name)
    start, end = table_span(table_id)
    deadline = time.monotonic() + timeout_s
    while True:
        with cluster.client(cluster.nodes[0]) as c:
            ranges = [r for r in c.status()["ranges"] if r["start"] is not None
                      and r["start"] < end and (r["end"] is None or start < r["end"])]
        cur.execute("SHOW RANGES FROM TABLE %s" % name)
        shown = cur.fetchall()
        exact = len(ranges) == 1 and (ranges[0]["start"], ranges[0]["end"]) == (start, end)
        if len(ranges) == 1 and (exact or not alone) and len(shown) == 1:
            columns = [d[0] for d in cur.description]
            row = dict(zip(columns, shown[0]))
            return row["range_id"], row["lease_holder"]
        assert time.monotonic() < deadline, "table %s was not split away from its neighbours: %s" % (name, ranges)
        time.sleep(0.1)


def _wait_home(cluster: Cluster, cur, name: str, node_id: int, timeout_s: float = 60.0, alone: bool = True) -> int:
    """Wait until the lease of table `name`'s range is node_id's and it serves it (a read of the
    table keeps the lease in use); returns the range id."""
    deadline = time.monotonic() + timeout_s
    while True:
        cur.execute("SELECT count(*) FROM %s" % name)
        rid, holder = _table_range(cluster, cur, name, timeout_s=max(1.0, deadline - time.monotonic()), alone=alone)
        if holder == node_id and cluster.wait_leaseholder(rid).node_id == node_id:
            return rid
        assert time.monotonic() < deadline, "r%d of %s: its lease is n%s's, not n%d's" % (rid, name, holder, node_id)
        time.sleep(0.1)


def test_a_tables_home_region_holds_its_leases_follows_a_change_and_survives_restarts(tmp_path):
    """Primary region us-east1 (n1); table eu lives in europe-west1 (n2), then us-west1 (n3). It
    gets a range of its own (tables plain and after, both at home in the primary region, share one), its lease moves to its home and comes back there after the
    home node's kill -9, and after a restart of every node."""
    cluster = Cluster(str(tmp_path), extra_args=["--primary-region", "us-east1"])
    with cluster:
        conn = connect([n.sql_addr for n in cluster.nodes])
        cur = conn.cursor()
        cur.execute("CREATE TABLE plain (k INT PRIMARY KEY, v TEXT)")
        cur.execute('CREATE TABLE eu (k INT PRIMARY KEY, v TEXT) LOCALITY REGIONAL BY TABLE IN "europe-west1"')
        cur.execute("CREATE TABLE after (k INT PRIMARY KEY)")
        cur.execute("INSERT INTO plain VALUES (1, 'p')")
        cur.execute("INSERT INTO eu VALUES (1, 'e')")
        rid = _wait_home(cluster, cur, "eu", 2)
        assert _wait_home(cluster, cur, "plain", 1, alone=False) != rid   # it stays in the range before eu
        cur.execute("SHOW RANGES FROM TABLE eu")
        columns = [d[0] for d in cur.description]
        row = dict(zip(columns, cur.fetchone()))
        assert row["home_region"] == "europe-west1" and row["lease_holder_region"] == "europe-west1"
        cur.execute("SHOW RANGES FROM TABLE plain")
        assert dict(zip(columns, cur.fetchone()))["home_region"] == "us-east1"   # the primary region

        cur.execute('ALTER TABLE eu SET LOCALITY REGIONAL BY TABLE IN "us-west1"')
        moved_at = time.monotonic()
        assert _wait_home(cluster, cur, "eu", 3) == rid
        print("the lease of r%d moved home %.2f s after the ALTER" % (rid, time.monotonic() - moved_at))
        cur.execute("SHOW CREATE TABLE eu")
        assert cur.fetchone()[1].endswith('LOCALITY REGIONAL BY TABLE IN "us-west1"')

        cluster.kill9(cluster.node(3))
        survivors = connect([cluster.node(1).sql_addr, cluster.node(2).sql_addr])
        scur = survivors.cursor()
        scur.execute("UPDATE eu SET v = 'while n3 was down' WHERE k = 1")
        assert cluster.wait_leaseholder(rid).node_id in (1, 2)
        cluster.start(cluster.node(3))
        _wait_home(cluster, scur, "eu", 3)

        for n in cluster.nodes:
            assert cluster.stop(n) == 0
        cluster.start_all()
        cur = connect([n.sql_addr for n in cluster.nodes]).cursor()
        assert _wait_home(cluster, cur, "eu", 3) == rid
        _wait_home(cluster, cur, "plain", 1, alone=False)
        cur.execute("SELECT v FROM eu")
        assert cur.fetchall() == [("while n3 was down",)]
