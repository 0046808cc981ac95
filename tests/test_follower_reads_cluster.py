"""Follower reads on real node processes (raftstore.kvserver.closedts): a replica that is not the
leaseholder answers a bounded-staleness or exact read from its own store once its leaseholder has
closed the timestamp (on a write, or on the side transport), a client always reads its own writes,
and a read above what a replica closed goes to the leaseholder."""

from __future__ import annotations

import time

import pytest

from hlc.timestamp import Timestamp
from raftstore.localcluster import Cluster

pytestmark = pytest.mark.slow

DATA = 2   # the raw keyspace's range


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def _retrying(check):
    try:
        return check()
    except Exception as exc:
        if "nearest_only" not in str(exc):
            raise
        return False


def test_a_follower_serves_what_its_leaseholder_closed_and_a_client_reads_its_own_writes(tmp_path):
    with Cluster(str(tmp_path)) as cluster:
        holder = cluster.wait_leaseholder(DATA)
        follower = next(n for n in cluster.nodes if n is not holder)
        with cluster.client(holder) as writer, cluster.client(follower) as near:
            t1 = writer.put(b"k", b"v1")
            # Once closed past the write (3 s behind the holder's clock, on the side transport
            # while the range idles), the follower answers from its own store.
            got = _wait(lambda: (lambda r: r if r["served_by"] == follower.node_id and r["value"] == b"v1" else None)(
                near.read(b"k", max_staleness=10.0)), 20, "the follower to serve the write")
            assert Timestamp.from_wire(got["read_ts"]) >= t1
            # An exact read below the write, and at it, from the follower.
            before = near.read(b"k", read_ts=Timestamp(t1.wall_ns - 1, 0))
            at = near.read(b"k", read_ts=t1)
            assert (before["value"], at["value"]) == (None, b"v1")
            assert before["served_by"] == at["served_by"] == follower.node_id
            # Read-your-writes: this client's own write is above what the follower closed, so its
            # bounded read goes to the leaseholder rather than read below it.
            t2 = near.put(b"k", b"v2")
            mine = near.read(b"k", max_staleness=10.0)
            assert mine["value"] == b"v2" and Timestamp.from_wire(mine["read_ts"]) >= t2
            # An exact read above what the follower closed is the leaseholder's.
            fresh = near.read(b"k", read_ts=t2)
            assert fresh["value"] == b"v2" and fresh["served_by"] == holder.node_id
            # A scan at one timestamp across its pages.
            for i in range(5):
                writer.put(b"s%d" % i, b"x")
            _wait(lambda: len(near.scan(b"s", b"t", max_staleness=10.0)) == 5, 20, "the follower's scan")
            status = near.status()
            assert status["closed"]["follower_reads"] >= 3


def test_a_range_only_followers_read_stays_served_by_them(tmp_path):
    """Nothing reads or writes at the leaseholder, so its expiration lease would lapse (2.5 s) and
    its closed timestamp stop; 10 s later every bounded read would go to the leaseholder. The
    follower's reads, reported on the side transport, keep the lease and the closed timestamp
    running: every read for a bound plus a lease is served by the follower."""
    with Cluster(str(tmp_path)) as cluster:
        holder = cluster.wait_leaseholder(DATA)
        follower = next(n for n in cluster.nodes if n is not holder)
        with cluster.client(holder) as writer, cluster.client(follower) as near:
            writer.put(b"k", b"v1")
            _wait(lambda: (lambda r: r["served_by"] == follower.node_id and r["value"] == b"v1")(
                near.read(b"k", max_staleness=10.0)), 20, "the follower to serve the write")
            bound_s, lease_s = 10.0, 2.5
            until = time.monotonic() + bound_s + 2 * lease_s
            served = []
            while time.monotonic() < until:
                got = near.read(b"k", max_staleness=bound_s)
                assert got["value"] == b"v1"
                served.append(got["served_by"])
                time.sleep(0.25)
            assert set(served) == {follower.node_id}, served
            assert writer.status()["closed"]["leases_kept_for_followers"] >= 1


def test_sql_follower_reads_as_of_system_time_and_the_session_default(tmp_path):
    from raftstore.sqlclient import connect

    with Cluster(str(tmp_path)) as cluster:
        holder = cluster.wait_leaseholder(DATA)
        follower = next(n for n in cluster.nodes if n is not holder)
        with connect(follower.sql_addr) as conn:
            cur = conn.cursor()
            cur.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)")
            cur.execute("INSERT INTO t VALUES (1, 'a')")
            # Read-your-writes: this session's insert is above what any replica closed yet.
            cur.execute("SELECT v FROM t AS OF SYSTEM TIME with_max_staleness('10s') WHERE k = 1")
            assert cur.fetchall() == [("a",)]
            # nearest_only: not at the leaseholder; this node's replica has not closed the insert yet.
            from raftstore.sqlclient import OperationalError
            with pytest.raises(OperationalError, match="nearest_only keeps the read from the leaseholders") as info:
                cur.execute("SELECT v FROM t AS OF SYSTEM TIME with_max_staleness('10s', true) WHERE k = 1")
            assert info.value.sqlstate == "XCUBS"
            # Long before the table had rows.
            cur.execute("SELECT count(*) FROM t AS OF SYSTEM TIME '-1h'")
            assert cur.fetchall() == [(0,)]

            # follower_read_timestamp() is some 4.7 s ago: once that is past the insert, the
            # follower serves the row itself.
            def served_here() -> bool:
                cur.execute("SELECT v FROM t AS OF SYSTEM TIME follower_read_timestamp() WHERE k = 1")
                if cur.fetchall() != [("a",)]:
                    return False
                cur.execute("EXPLAIN ANALYZE SELECT v FROM t AS OF SYSTEM TIME follower_read_timestamp() WHERE k = 1")
                steps = [row for row in cur.fetchall() if row[1] in ("get", "scan")]
                return bool(steps) and all(row[4].startswith("n%d " % follower.node_id) for row in steps)
            _wait(served_here, 30, "the follower to serve the table's rows")
            def nearest_only() -> bool:   # once this node's replica closed past the insert, it serves it
                cur.execute("SELECT v FROM t AS OF SYSTEM TIME with_max_staleness('10s', true) WHERE k = 1")
                return cur.fetchall() == [("a",)]
            _wait(lambda: _retrying(nearest_only), 30, "the nearest replica to serve a nearest_only read")
            cur.execute("SET default_transaction_use_follower_reads = on")
            cur.execute("SHOW default_transaction_use_follower_reads")
            assert cur.fetchall() == [("on",)]
            cur.execute("SELECT v FROM t WHERE k = 1")
            assert cur.fetchall() == [("a",)]
            cur.execute("UPDATE t SET v = 'b' WHERE k = 1")
            cur.execute("SELECT v FROM t WHERE k = 1")      # the default never reads below its own write
            assert cur.fetchall() == [("b",)]


def test_a_minority_keeps_answering_bounded_reads_within_their_bound_then_says_it_cannot(tmp_path):
    from test_leases_cluster import (UNAVAILABLE_S, _ask_once, _cluster, _cut, _cut_in_effect, _holder, _isolate,
                                     _put_until)
    from raftstore.errors import RaftstoreError

    with _cluster(tmp_path) as cluster:
        holder = _holder(cluster)
        lone = next(n for n in cluster.nodes if n is not holder)         # the minority: a follower
        majority = [n for n in cluster.nodes if n is not lone]
        with cluster.client(holder) as writer:
            writer.put(b"k", b"v1")
        with cluster.client(lone) as near:
            _wait(lambda: (lambda r: r["served_by"] == lone.node_id and r["value"] == b"v1")(
                near.read(b"k", max_staleness=8.0)), 20, "the follower to close past the write")
        _isolate(tmp_path, lone.node_id, cluster)
        cut_at = time.monotonic()
        bounded = {"key": b"k", "max_staleness_ms": 8000}
        answered = _ask_once(lone.sql_addr, "get", bounded, timeout_s=UNAVAILABLE_S + 5.0)
        assert answered["ok"] and answered["result"]["value"] == b"v1", answered    # within its bound
        for op, args in [("get", {"key": b"k"}), ("put", {"key": b"m", "value": b"x", "command_id": b"m" * 16})]:
            answer = _ask_once(lone.sql_addr, op, args, timeout_s=UNAVAILABLE_S + 5.0)
            assert not answer["ok"] and answer["error"]["code"] == "unavailable", (op, answer)
        with cluster.client(*majority) as side:
            _put_until(side, b"k", b"v2", timeout_s=30.0)
        # Past the bound: the minority cannot meet it, and says so.
        def refused() -> dict | None:
            answer = _ask_once(lone.sql_addr, "get", bounded, timeout_s=UNAVAILABLE_S + 5.0)
            return None if answer["ok"] else answer
        answer = _wait(refused, 30, "the bound to pass")
        assert "staleness bound" in answer["error"]["message"], answer
        print("the minority answered bounded reads for %.1f s after the cut" % (time.monotonic() - cut_at))
        _cut(tmp_path, {})
        _cut_in_effect(cluster, {})
        deadline = time.monotonic() + 30
        with cluster.client(lone, timeout_s=30.0) as healed:
            while True:
                try:
                    assert healed.get(b"k") == b"v2"
                    break
                except RaftstoreError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)


def test_gc_removes_old_versions_everywhere_and_refuses_reads_below_its_threshold(tmp_path):
    from raftstore.errors import RaftstoreError

    with Cluster(str(tmp_path), extra_args=["--gc-ttl", "1", "--gc-interval", "0.5"]) as cluster:
        holder = cluster.wait_leaseholder(DATA)
        with cluster.client(holder) as c:
            first = c.put(b"g", b"1")
            c.put(b"g", b"2")
            c.put(b"g", b"3")

            def collected() -> bool:   # on every replica (GC commands are in the log)
                # A range in use (read here): its lease runs, so its closed timestamp, and with it
                # the GC threshold, move (an idle range's lease lapses: epoch leases will fix that).
                assert c.get(b"g") == b"3"
                for n in cluster.nodes:
                    with cluster.client(n) as each:
                        r = next(r for r in each.status()["ranges"] if r["range_id"] == DATA)
                        if Timestamp(*r["gc_threshold"]) <= first:
                            return False
                return True
            _wait(collected, 30, "every replica's GC threshold to pass the first write")
            with pytest.raises(RaftstoreError, match="below its GC threshold"):
                c.read(b"g", read_ts=first)
            assert c.get(b"g") == b"3"
            assert c.status()["gc"]["removed"] >= 2
            results = c.check_consistency()
            assert results and all(r["status"] == "consistent" for r in results), results
