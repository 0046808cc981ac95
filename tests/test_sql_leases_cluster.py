"""Schema leases on real node processes: a node reuses a table's schema without reading the
catalog, yet DDL on another node is never missed - CREATE is usable everywhere at once, and
once DROP TABLE returns no node can still read or write the dropped table (sql/schema_leases.py)."""

from __future__ import annotations

import threading
import time

import pytest

import raftstore
from cluster import Cluster
from raftstore.sqlclient import ProgrammingError


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("leases"))) as c:
        c.wait_leader()
        yield c


def _cursors(cluster):
    return (raftstore.connect(cluster.nodes[0].sql_addr).cursor(),
            raftstore.connect(cluster.nodes[1].sql_addr).cursor())


@pytest.mark.slow
def test_a_table_created_on_node_1_is_usable_on_node_2_immediately(cluster):
    one, two = _cursors(cluster)
    two.execute("SELECT 1")                          # node 2 is up and has read nothing yet
    with pytest.raises(ProgrammingError, match="does not exist"):
        two.execute("SELECT * FROM born")            # a miss on node 2 is not remembered...
    one.execute("CREATE TABLE born (k INT PRIMARY KEY, v TEXT)")
    two.execute("INSERT INTO born VALUES (1, 'seen at once')")   # ...so it sees the CREATE
    one.execute("SELECT v FROM born")
    assert one.fetchall() == [("seen at once",)]


@pytest.mark.slow
def test_after_drop_returns_the_other_node_no_longer_reads_or_writes_the_table(cluster):
    one, two = _cursors(cluster)
    one.execute("CREATE TABLE doomed (k INT PRIMARY KEY, v TEXT)")
    two.execute("INSERT INTO doomed VALUES (1, 'a')")
    two.execute("SELECT v FROM doomed WHERE k = 1")    # node 2 now holds a lease on the schema
    assert two.fetchall() == [("a",)]
    one.execute("DROP TABLE doomed")
    with pytest.raises(ProgrammingError, match='relation "doomed" does not exist'):
        two.execute("INSERT INTO doomed VALUES (2, 'b')")
    with pytest.raises(ProgrammingError, match='relation "doomed" does not exist'):
        two.execute("SELECT * FROM doomed")


@pytest.mark.slow
def test_drop_then_create_of_the_same_name_sends_the_other_nodes_writes_to_the_new_table(cluster):
    one, two = _cursors(cluster)
    one.execute("CREATE TABLE reborn (k INT PRIMARY KEY, v TEXT)")
    two.execute("INSERT INTO reborn VALUES (1, 'old')")
    two.execute("SELECT count(*) FROM reborn")        # node 2 leases the old schema
    one.execute("DROP TABLE reborn")
    one.execute("CREATE TABLE reborn (k INT PRIMARY KEY, v TEXT)")   # same shape, new table id
    two.execute("INSERT INTO reborn VALUES (2, 'new')")
    one.execute("SELECT k, v FROM reborn ORDER BY k")
    assert one.fetchall() == [(2, "new")]
    two.execute("SELECT k, v FROM reborn ORDER BY k")
    assert two.fetchall() == [(2, "new")]


@pytest.mark.slow
def test_a_create_racing_a_drop_of_its_name_waits_for_the_drop_and_then_succeeds(cluster):
    one, two = _cursors(cluster)
    one.execute("CREATE TABLE contested (k INT PRIMARY KEY)")
    one.execute("INSERT INTO contested VALUES (1)")
    dropped = threading.Event()

    def drop():
        raftstore.connect(cluster.nodes[0].sql_addr).cursor().execute("DROP TABLE contested")
        dropped.set()
    dropper = threading.Thread(target=drop)
    dropper.start()
    try:
        # Whether this CREATE lands before the marker (then it is a duplicate) or meets it (then
        # it waits for the name to be freed), it never sees half a drop. Tried until the DROP
        # has returned and one more CREATE after it failed (bounded by the dropper's own wait).
        deadline = time.monotonic() + 60
        while True:
            drop_done = dropped.is_set()
            try:
                two.execute("CREATE TABLE contested (k INT PRIMARY KEY, w TEXT)")
                break
            except ProgrammingError as exc:
                assert "already exists" in str(exc)
                if drop_done or time.monotonic() > deadline:
                    pytest.fail("CREATE still failed after the DROP returned: %s" % exc)
                time.sleep(0.02)
    finally:
        dropper.join(timeout=60)
    assert dropped.is_set()
    two.execute("INSERT INTO contested VALUES (7, 'x')")
    one.execute("SELECT * FROM contested")
    assert one.fetchall() == [(7, "x")]
