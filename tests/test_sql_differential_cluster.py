"""The differential test of test_sql_differential, against a three-node cluster.

Same generated schemas and statements, run through the DB-API client on real node processes
(SQL gateway on one node, ranges replicated on three) and through sqlite3, with equal results.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import raftstore
from cluster import Cluster
from sql import SQLError
from test_sql_differential import test_same_results_as_sqlite as _differential


class ClusterSession:
    """sql.Session's execute() contract over the wire: Result-like answers, SQLError on bad SQL."""

    # Each example's tables have fresh names; a DROP on a cluster waits out the schema leases
    # (about 2 s), which over 250 examples would dominate the run. DROP across nodes is tested
    # in test_sql_leases_cluster.
    keep_tables = True

    def __init__(self, address: str) -> None:
        self.conn = raftstore.connect(address)

    def execute(self, sql: str, params=None):
        cur = self.conn.cursor()
        try:
            cur.execute(sql, list(params or []))
        except raftstore.sqlclient.DatabaseError as exc:
            code = getattr(exc, "sql_code", None)
            if code is None:
                raise
            raise SQLError(code, str(exc), getattr(exc, "position", None)) from None
        rows = [list(r) for r in cur.fetchall()] if cur.description else []
        columns = [d[0] for d in cur.description] if cur.description else []
        return SimpleNamespace(rows=rows, rowcount=cur.rowcount, columns=columns)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("diff"))) as c:
        c.wait_leader()
        yield c


@pytest.mark.slow
def test_cluster_gives_the_same_results_as_sqlite(cluster):
    # Statements enter through different nodes in turn: the catalog and the data are shared.
    nodes = iter(range(10**9))
    _differential(session_factory=lambda: ClusterSession(cluster.nodes[next(nodes) % 3].sql_addr))
