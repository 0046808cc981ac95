"""statement_timeout on real node processes, through the DB-API (raftstore.sqlclient): a statement
that would compute for minutes is canceled at its timeout with SQLSTATE 57014, and a statement
that timed out - on the server, or at the client's own timeout - is never run again on the
other node the connection names. The second node's request totals (`status()["requests"]`)
show that it never saw a statement; the first node's show how its statements ended.

The nodes run with `--statement-timeout 2min`, which a session's SET overrides."""

from __future__ import annotations

import time

import pytest

import raftstore
from cluster import Cluster, wait_until
from raftstore.kv import Client
from raftstore.sqlclient import OperationalError, wait_for_sql

pytestmark = pytest.mark.slow

ROWS = 100
FOREVER = "SELECT count(*) FROM t AS a, t AS b, t AS c, t AS d"   # 10^8 rows joined: minutes of CPU


def _sql_counts(node) -> dict:
    """{statement type: {outcome: n}} the node's gateway answered (its status)."""
    with Client([node.sql_addr], timeout_s=10) as client:
        return client.status()["requests"]["sql"]


def _canceled_selects(node) -> int:
    return _sql_counts(node).get("select", {}).get("query_canceled", 0)


def test_a_statement_past_its_timeout_is_57014_and_no_timeout_sends_it_to_another_node(tmp_path):
    with Cluster(str(tmp_path), extra_args=["--statement-timeout", "2min"]) as cluster:
        cluster.wait_leader()
        first, second = cluster.nodes[0], cluster.nodes[1]
        conn = raftstore.connect([first.sql_addr, second.sql_addr])
        wait_for_sql(conn, 60)
        cur = conn.cursor()
        assert cur.execute("SHOW statement_timeout").fetchall() == [("2min",)]   # the node's flag
        cur.execute("CREATE TABLE t (k INT PRIMARY KEY)")
        cur.execute("INSERT INTO t VALUES " + ", ".join("(%d)" % i for i in range(ROWS)))
        seen_by_second = _sql_counts(second)

        # The server's timeout: 57014, a definite answer, raised as it is.
        cur.execute("SET statement_timeout = '1s'")
        started = time.monotonic()
        with pytest.raises(OperationalError) as caught:
            cur.execute(FOREVER)
        took_s = time.monotonic() - started
        error = caught.value
        assert (error.sqlstate, error.sql_code, error.ambiguous) == ("57014", "query_canceled", False), error
        assert "statement_timeout = 1s" in str(error)
        assert took_s >= 1.0
        assert _canceled_selects(first) == 1
        assert _sql_counts(second) == seen_by_second
        # The session goes on, its timeout with it.
        assert cur.execute("SELECT count(*) FROM t").fetchall() == [(ROWS,)]
        assert cur.execute("SHOW statement_timeout").fetchall() == [("1s",)]

        # The client's own timeout (1 s), before the server's (4 s): the read may still be
        # running on the first node, so it fails there and then, and is not started elsewhere.
        impatient = raftstore.connect([first.sql_addr, second.sql_addr], timeout_s=1.0)
        try:
            icur = impatient.cursor()
            icur.execute("SET statement_timeout = '4s'")
            with pytest.raises(OperationalError, match="not sent to another node") as caught:
                icur.execute(FOREVER)
            assert caught.value.ambiguous is False and caught.value.sqlstate is None
        finally:
            impatient.close()
        # The first node cancels it at its own timeout; the second never saw it.
        wait_until(lambda: _canceled_selects(first) == 2, 60, "the first node to cancel the statement")
        assert _sql_counts(second) == seen_by_second
        conn.close()
