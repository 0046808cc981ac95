"""Multi-row statements racing other clients on real node processes (issue 9, part 2).

Until transactions make a statement atomic, a statement that fails half-way takes back what
it wrote. These tests check the rule that makes that safe: a clean-up, and every read-then-
write, touches only the exact version this statement read or wrote (compared by commit
timestamp), so an acknowledged write of another client is never undone, even when it put back
the very bytes this statement had written. Each race is set up by watching the statement's
own progress (its first write becomes visible, or its first delete does) and acting then;
a trial in which the race did not happen as planned is run again, and the test fails if none
of a few did (it never passes without having checked the property).
"""

from __future__ import annotations

import threading
import time

import pytest

import raftstore
from cluster import Cluster

TRIALS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Small ranges, as in the runs: a statement's rows span several ranges that split
    # while it runs, so its writes and clean-ups cross ranges and follow splits.
    with Cluster(str(tmp_path_factory.mktemp("races")), extra_args=["--range-max-bytes", "65536"]) as c:
        c.wait_leader()
        conn = raftstore.connect(c.nodes[0].sql_addr)
        raftstore.sqlclient.wait_for_sql(conn, 60)
        conn.close()
        yield c


def _cursor(node, timeout_s: float = 30.0):
    return raftstore.connect(node.sql_addr, timeout_s=timeout_s).cursor()


class Statement(threading.Thread):
    """Runs one statement on its own connection; `error` or `rowcount` once it is done."""

    def __init__(self, node, sql: str, params=None):
        super().__init__(daemon=True)
        # Today's clean-up of a large statement runs row by row: give it time to finish.
        self.cur = _cursor(node, timeout_s=180.0)
        self.sql, self.params = sql, params
        self.error: Exception | None = None
        self.rowcount: int | None = None

    def run(self) -> None:
        try:
            self.rowcount = self.cur.execute(self.sql, self.params).rowcount
        except Exception as exc:   # the outcome under test
            self.error = exc


def _wait(predicate, statement: Statement, what: str, timeout_s: float = 60.0) -> bool:
    """Poll until predicate() holds (True) or the statement ended first (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if not statement.is_alive():
            return predicate()
        time.sleep(0.002)
    raise AssertionError("timed out waiting for " + what)


def _value(cur, table: str, key: int):
    rows = cur.execute(f"SELECT v FROM {table} WHERE id = $1", [key]).fetchall()
    return rows[0][0] if rows else None


def _pad(i: int) -> str:
    return "a%d-" % i + "x" * 60


@pytest.mark.slow
def test_a_failed_multi_row_insert_never_undoes_another_clients_acknowledged_writes(cluster):
    # A inserts rows 1..N through n2. Once its first row is visible, B inserts A's last key
    # through n3 (so A fails at its last row), another client UPDATEs row 1, and a third
    # rewrites row 2 with exactly the bytes A wrote (UPSERT naming every column: a blind
    # write). Both are acknowledged, so both must survive A's clean-up.
    n = 1500
    reader, other = _cursor(cluster.nodes[0]), _cursor(cluster.nodes[2])
    for trial in range(TRIALS):
        table = "ins_race_%d" % trial
        reader.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
        values = ", ".join("(%d, '%s')" % (i, _pad(i)) for i in range(1, n + 1))
        a = Statement(cluster.nodes[1], f"INSERT INTO {table} VALUES {values}")
        a.start()
        if not _wait(lambda: _value(reader, table, 1) is not None, a, "A's first row"):
            a.join()
            continue
        try:
            b_count = other.execute(f"INSERT INTO {table} VALUES ($1, 'b')", [n]).rowcount
        except raftstore.sqlclient.IntegrityError:
            b_count = 0   # A wrote its last row first: no race this trial
        updated = other.execute(f"UPDATE {table} SET v = 'updated' WHERE id = 1").rowcount
        upserted = other.execute(f"UPSERT INTO {table} (id, v) VALUES (2, $1)", [_pad(2)]).rowcount
        a.join(240)
        assert not a.is_alive(), "statement A did not finish"
        if not (b_count == 1 and a.error is not None and updated == 1):
            continue
        assert upserted == 1
        # The two acknowledged writes of other clients are there, and so is B's row.
        assert _value(reader, table, 1) == "updated", "A's clean-up deleted an acknowledged UPDATE"
        assert _value(reader, table, 2) == _pad(2), "A's clean-up deleted an acknowledged UPSERT"
        assert _value(reader, table, n) == "b"
        # Everything else A wrote was taken back.
        assert reader.execute(f"SELECT count(*) FROM {table}").fetchall() == [(3,)]
        # A's error says what happened: not "nothing was written", but which rows remain.
        message = str(a.error)
        assert "nothing was written" not in message, message
        assert getattr(a.error, "sqlstate", None) == "40003" and a.error.ambiguous, repr(a.error)
        assert "(id)=(1)" in message and "(id)=(2)" in message and "(id)=(%d)" % n in message, message
        return
    pytest.fail("in %d trials, B never inserted A's last key between A's check and A's write" % TRIALS)


@pytest.mark.slow
def test_a_delete_never_removes_a_row_updated_after_the_delete_read_it(cluster):
    # DELETE ... WHERE v = 'old' reads its rows, then deletes them. Once its first row is
    # gone, another client changes the last row to v = 'kept': that row no longer matches, and
    # the acknowledged UPDATE must not be lost to the delete of the version read before it.
    n = 400
    reader, other = _cursor(cluster.nodes[0]), _cursor(cluster.nodes[2])
    for trial in range(TRIALS):
        table = "del_race_%d" % trial
        reader.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
        for start in range(1, n + 1, 200):
            values = ", ".join("(%d, 'old')" % i for i in range(start, min(start + 200, n + 1)))
            reader.execute(f"INSERT INTO {table} VALUES {values}")
        d = Statement(cluster.nodes[1], f"DELETE FROM {table} WHERE v = 'old'")
        d.start()
        if not _wait(lambda: _value(reader, table, 1) is None, d, "the DELETE's first delete"):
            d.join()
            continue
        updated = other.execute(f"UPDATE {table} SET v = 'kept' WHERE id = $1", [n]).rowcount
        d.join(240)
        assert not d.is_alive(), "the DELETE did not finish"
        assert d.error is None, repr(d.error)
        if updated != 1:
            continue   # the DELETE got to the last row first: no race this trial
        assert _value(reader, table, n) == "kept", "the DELETE removed a row after an acknowledged UPDATE of it"
        assert d.rowcount == n - 1
        assert reader.execute(f"SELECT count(*) FROM {table}").fetchall() == [(1,)]
        return
    pytest.fail("in %d trials the UPDATE never landed between the DELETE's read and its delete" % TRIALS)


@pytest.mark.slow
def test_an_update_moving_primary_keys_that_loses_a_race_puts_every_row_back(cluster):
    # UPDATE ... SET id = id + 100000 deletes the old rows and writes the new ones. Once the
    # first old row is gone, another client inserts the last new key: the UPDATE fails, and
    # must say so truthfully with every old row back in place.
    n, shift = 300, 100000
    reader, other = _cursor(cluster.nodes[0]), _cursor(cluster.nodes[2])
    for trial in range(TRIALS):
        table = "move_race_%d" % trial
        reader.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
        values = ", ".join("(%d, 'r%d')" % (i, i) for i in range(1, n + 1))
        reader.execute(f"INSERT INTO {table} VALUES {values}")
        u = Statement(cluster.nodes[1], f"UPDATE {table} SET id = id + {shift} WHERE id <= {n}")
        u.start()
        if not _wait(lambda: _value(reader, table, 1) is None, u, "the UPDATE's first move"):
            u.join()
            continue
        try:
            racer = other.execute(f"INSERT INTO {table} VALUES ($1, 'racer')", [shift + n]).rowcount
        except raftstore.sqlclient.IntegrityError:
            racer = 0   # the UPDATE wrote that key first: no race this trial
        u.join(240)
        assert not u.is_alive(), "the UPDATE did not finish"
        if racer != 1 or u.error is None:
            continue
        rows = reader.execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()
        assert rows == [(i, "r%d" % i) for i in range(1, n + 1)] + [(shift + n, "racer")], \
            "the failed UPDATE left %d rows: %s ..." % (len(rows), rows[:5])
        message = str(u.error)
        assert isinstance(u.error, raftstore.sqlclient.IntegrityError), repr(u.error)
        assert "nothing was written" not in message and "rolled back" in message, message
        return
    pytest.fail("in %d trials the racer never took a new key between the UPDATE's check and its write" % TRIALS)
