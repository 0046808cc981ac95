"""What a SQL client is told when a statement fails, on real node processes (issue 9, part 3).

The rule: a statement none of whose writes applied may be retried - by the gateway itself
for a write conflict (SQLSTATE 40001), by the client for "unavailable"; once any of its writes
may have applied the answer is 40003 (statement completion unknown, `ambiguous`), and nobody
sends the statement again, since that could apply it twice.

Node n2 of the fault cluster plays a node that cannot reach the leader of the ranges holding
rows id >= 50 of the first table (RAFTSTORE_TEST_REFUSE_WRITES_SPAN: its writes there are
answered "not committed", as a real leaderless range answers); reads and the other nodes are
unaffected, so a client that sent a statement again on n1 would apply it there.
"""

from __future__ import annotations

import threading

import pytest

import raftstore
from cluster import Cluster
from raftstore.keys import encode_key, prefix_end
from raftstore.sqlclient import DataError, IntegrityError, NotSupportedError, OperationalError

FIRST_TABLE_ID = 1     # the first table created in a fresh cluster
REFUSED_FROM_ID = 50


def _row_key(table_id: int, *pk) -> bytes:
    return b"t" + encode_key((table_id, *pk))


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    refused = "%s-%s" % (_row_key(FIRST_TABLE_ID, REFUSED_FROM_ID).hex(),
                         prefix_end(_row_key(FIRST_TABLE_ID)).hex())
    c = Cluster(str(tmp_path_factory.mktemp("faults")),
                node_env={2: {"RAFTSTORE_TEST_REFUSE_WRITES_SPAN": refused}})
    with c:
        c.wait_leader()
        conn = raftstore.connect(c.nodes[0].sql_addr)
        raftstore.sqlclient.wait_for_sql(conn, 60)
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, n INT)")
        assert cur.execute("SHOW TABLES").fetchall()[0][:2] == ("t", FIRST_TABLE_ID)
        yield c


def _through_n2_then_n1(cluster):
    """A connection that would move on to n1 after an answer that lets it (unavailable)."""
    return raftstore.connect([cluster.nodes[1].sql_addr, cluster.nodes[0].sql_addr]).cursor()


@pytest.mark.slow
def test_an_update_that_failed_after_some_rows_is_never_applied_twice(fault_cluster):
    cur = raftstore.connect(fault_cluster.nodes[0].sql_addr).cursor()
    cur.execute("DELETE FROM t")
    cur.execute("INSERT INTO t VALUES " + ", ".join("(%d, 0)" % i for i in range(100)))
    client = _through_n2_then_n1(fault_cluster)
    with pytest.raises(OperationalError) as caught:
        client.execute("UPDATE t SET n = n + 1")
    counts = dict(cur.execute("SELECT n, count(*) FROM t GROUP BY n").fetchall())
    assert 2 not in counts, "the UPDATE applied twice to %d rows: %s" % (counts.get(2, 0), counts)
    err = caught.value
    assert err.sqlstate == "40003" and err.ambiguous, repr(err)
    # Rows 0..49 were written, then row 50 failed: the first 50 were put back.
    assert counts == {0: 100}, counts
    assert "rolled back" in str(err), str(err)


@pytest.mark.slow
def test_an_insert_that_failed_after_some_rows_is_not_sent_again_to_report_a_false_duplicate(fault_cluster):
    cur = raftstore.connect(fault_cluster.nodes[0].sql_addr).cursor()
    client = _through_n2_then_n1(fault_cluster)
    keys = list(range(-10, 0)) + [1000]     # below the refused span, then in it
    with pytest.raises(OperationalError) as caught:
        client.execute("INSERT INTO t VALUES " + ", ".join("(%d, 7)" % k for k in keys))
    err = caught.value
    assert not isinstance(err, IntegrityError)
    assert err.sqlstate == "40003" and err.ambiguous, repr(err)
    assert cur.execute("SELECT count(*) FROM t WHERE id < 0 OR id = 1000").fetchall() == [(0,)]


@pytest.mark.slow
def test_a_statement_that_wrote_nothing_before_the_failure_is_still_unavailable(fault_cluster):
    # Only the refused row: nothing applied, so "unavailable" (retryable) is the truth, and the
    # client's retry on n1 is safe and succeeds.
    cur = raftstore.connect(fault_cluster.nodes[0].sql_addr).cursor()
    cur.execute("DELETE FROM t")
    client = _through_n2_then_n1(fault_cluster)
    assert client.execute("INSERT INTO t VALUES (500, 1)").rowcount == 1
    assert cur.execute("SELECT n FROM t WHERE id = 500").fetchall() == [(1,)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("outcomes"))) as c:
        c.wait_leader()
        conn = raftstore.connect(c.nodes[0].sql_addr)
        raftstore.sqlclient.wait_for_sql(conn, 60)
        yield c


@pytest.mark.slow
def test_contention_on_one_row_is_retried_by_the_gateway_and_never_loses_an_increment(cluster):
    # 8 clients, 50 increments each, on one row through all three nodes. A lost race before
    # anything was written is a write conflict (40001) that the gateway retries itself; what
    # reaches a client is a success or, past the gateway's bound, 40001 - never
    # feature_not_supported - and the row counts exactly the successes.
    cur = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    cur.execute("CREATE TABLE hot (id INT PRIMARY KEY, n INT)")
    cur.execute("INSERT INTO hot VALUES (1, 0)")
    successes, errors = [], []

    def client(i: int) -> None:
        c = raftstore.connect(cluster.nodes[i % 3].sql_addr, timeout_s=60).cursor()
        for _ in range(50):
            try:
                c.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
                successes.append(1)
            except Exception as exc:   # classified below
                errors.append(exc)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads)
    unsupported = [e for e in errors if isinstance(e, NotSupportedError)]
    assert not unsupported, "%d statements failed as feature_not_supported: %s" % (len(unsupported), unsupported[0])
    assert all(isinstance(e, OperationalError) and e.sqlstate == "40001" and not e.ambiguous
               for e in errors), errors[:3]
    assert cur.execute("SELECT n FROM hot").fetchall() == [(len(successes),)]
    assert len(successes) + len(errors) == 400


@pytest.mark.slow
def test_an_update_of_a_row_larger_than_half_the_command_limit_works(cluster):
    # A rewrite is conditioned on the version it read, so its command carries the new row only
    # (a compare by value carried the old row as well, and failed as too large).
    cur = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    cur.execute("CREATE TABLE wide (id INT PRIMARY KEY, n INT, v TEXT)")
    cur.execute("INSERT INTO wide VALUES (1, 0, $1)", ["x" * 300_000])
    assert cur.execute("UPDATE wide SET n = n + 1").rowcount == 1
    assert cur.execute("SELECT n, length(v) FROM wide").fetchall() == [(1, 300_000)]


@pytest.mark.slow
def test_a_row_too_large_after_earlier_rows_were_written_rolls_them_back_and_says_so(cluster):
    cur = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    cur.execute("CREATE TABLE grow (id INT PRIMARY KEY, v TEXT)")
    cur.execute("INSERT INTO grow VALUES (1, 'a'), (2, 'b')")
    cur.execute("INSERT INTO grow VALUES (3, $1)", ["y" * 300_000])
    with pytest.raises(DataError) as caught:
        cur.execute("UPDATE grow SET v = v || v")      # row 3 would be 600 KB: too large to replicate
    message = str(caught.value)
    assert "nothing was applied" not in message and "rolled back" in message, message
    assert cur.execute("SELECT id, length(v) FROM grow ORDER BY id").fetchall() == [(1, 1), (2, 1), (3, 300_000)]
