"""crdb_internal.check_consistency(...) as a SQL table function, over the in-memory KV.

The rows come from the KV's `check_consistency` (a cluster's is tested on real nodes in
tests/test_consistency_cluster.py); here: the SQL around them - parsing, where the function
may appear, its arguments, and that WHERE / ORDER BY / aggregates / joins work on its rows.
"""

from __future__ import annotations

import pytest

from sql.errors import SQLError
from sql.execute import Session
from sql.memkv import MemKV


@pytest.fixture
def kv():
    kv = MemKV(split_keys=(b"t", b"u"))
    kv.mark_inconsistent(2, 3, "n3 differs from n1, n2 at index 57")
    return kv


@pytest.fixture
def session(kv):
    return Session(kv)


def test_one_row_per_range_in_key_order_with_the_status_and_the_detail(session):
    result = session.execute("SELECT * FROM crdb_internal.check_consistency(true, '', '')")
    assert result.columns == ["range_id", "start_key", "start_key_pretty", "status", "detail"]
    assert result.types == ["INT", "BYTES", "TEXT", "TEXT", "TEXT"]
    assert [(r[0], r[1], r[3]) for r in result.rows] == [
        (1, b"", "consistent"), (2, b"t", "inconsistent"), (3, b"u", "consistent")]
    assert result.rows[1][4] == "n3 differs from n1, n2 at index 57"


def test_no_arguments_checks_every_range_and_a_span_checks_the_ranges_it_overlaps(session, kv):
    assert len(session.execute("SELECT * FROM crdb_internal.check_consistency()").rows) == 3
    rows = session.execute("SELECT range_id FROM crdb_internal.check_consistency(false, x'74', x'75')").rows
    assert rows == [[2]]
    rows = session.execute("SELECT range_id FROM crdb_internal.check_consistency(false, $1, $2)",
                           [b"t", b""]).rows
    assert rows == [[2], [3]]    # an empty end key is the end of the keyspace


def test_where_order_by_aggregates_and_aliases_work_on_its_rows(session):
    rows = session.execute(
        "SELECT range_id, detail FROM crdb_internal.check_consistency() WHERE status <> 'consistent'").rows
    assert rows == [[2, "n3 differs from n1, n2 at index 57"]]
    rows = session.execute(
        "SELECT c.status, count(*) FROM crdb_internal.check_consistency() AS c GROUP BY c.status ORDER BY 1").rows
    assert rows == [["consistent", 2], ["inconsistent", 1]]
    rows = session.execute("SELECT check_consistency.range_id FROM crdb_internal.check_consistency() "
                           "ORDER BY start_key DESC LIMIT 2").rows
    assert rows == [[3], [2]]


def test_it_joins_with_a_table(session):
    session.execute("CREATE TABLE watched (range_id INT PRIMARY KEY, owner TEXT)")
    session.execute("INSERT INTO watched VALUES (2, 'ana'), (9, 'bo')")
    rows = session.execute("SELECT w.owner, c.status FROM watched AS w "
                           "JOIN crdb_internal.check_consistency() AS c ON c.range_id = w.range_id").rows
    assert rows == [["ana", "inconsistent"]]


@pytest.mark.parametrize("sql, message", [
    ("DELETE FROM crdb_internal.check_consistency()", "it can only be read"),
    ("INSERT INTO t SELECT * FROM crdb_internal.nope()", "function crdb_internal.nope()"),
    ("SELECT * FROM crdb_internal.check_consistency(true, '')", "takes 3 arguments or none, got 2"),
    ("SELECT * FROM crdb_internal.check_consistency(1, '', '')", "argument 1 of crdb_internal.check_consistency"),
    ("SELECT * FROM crdb_internal.check_consistency(true, 1.5, '')", "argument 2 of"),
    ("SELECT * FROM crdb_internal.check_consistency(true, NULL, '')", "must not be NULL"),
    ("SELECT * FROM crdb_internal.check_consistency(now(), '', '')", "argument 1 of"),
])
def test_misuse_is_a_clear_error(session, sql, message):
    with pytest.raises(SQLError) as caught:
        session.execute(sql)
    assert message in str(caught.value)


def test_a_user_table_of_the_same_short_name_is_another_table(session):
    session.execute("CREATE TABLE check_consistency (id INT PRIMARY KEY)")
    session.execute("INSERT INTO check_consistency VALUES (1)")
    assert session.execute("SELECT * FROM check_consistency").rows == [[1]]
    assert len(session.execute("SELECT * FROM crdb_internal.check_consistency()").rows) == 3


def test_explain_shows_rows_computed_by_the_cluster(session):
    rows = session.execute("EXPLAIN SELECT * FROM crdb_internal.check_consistency()").rows
    assert rows[0][1] == "virtual table" and rows[0][2] == "crdb_internal.check_consistency"
