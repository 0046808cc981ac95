"""EXPLAIN ANALYZE on the in-memory KV (sql/explain.py, Session._explain_analyze): it runs the
statement, shows one row per range operation the KV traced, then the statement's total and its
physical bound beside its time; and the bound's formula on hand-made traces. The same on real
nodes, with rounds counted from the leaders' proposals: tests/test_explain_analyze_cluster.py."""

from __future__ import annotations

import pytest

from sql import MemKV, Session, SQLError
from sql.catalog import read_table
from sql.explain import ANALYZE_COLUMNS, physical_bound, time_bound_ratio
from sql.kv import TraceOp
from sql.rowcodec import key_for_row
from test_sql_leases import FakeTimer

STATEMENT_S = 0.09   # what the fake timer says every write call takes


class SlowWrites(MemKV):
    """A MemKV whose write calls take STATEMENT_S of the session's fake time."""

    def __init__(self, timer: FakeTimer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.timer = timer

    def write_if_many(self, writes, *, stop_after_failure=True, lock=None, all_or_nothing=False):
        self.timer.now += STATEMENT_S
        return super().write_if_many(writes, stop_after_failure=stop_after_failure, lock=lock,
                                     all_or_nothing=all_or_nothing)


@pytest.fixture
def db() -> Session:
    timer = FakeTimer()
    session = Session(SlowWrites(timer, quorum_rtt_ms=60.0), timer=timer)
    session.execute("CREATE TABLE users (id INT PRIMARY KEY, name TEXT NOT NULL)")
    session.execute("CREATE TABLE notes (body TEXT)")           # a hidden rowid key
    session.execute("INSERT INTO users VALUES (1, 'ann'), (2, 'bob')")
    return session


def operations(result) -> list[list]:
    return [row for row in result.rows if row[0] not in ("total", "bound")]


def labelled(result, label: str) -> list:
    (row,) = [row for row in result.rows if row[0] == label]
    return row


def test_explain_analyze_parses_with_analyse_spelled_either_way(db) -> None:
    for word in ("ANALYZE", "analyse"):
        assert db.execute(f"EXPLAIN {word} SELECT * FROM users").columns == ANALYZE_COLUMNS


def test_a_point_insert_is_one_write_on_one_range_in_one_round_and_it_applies(db) -> None:
    result = db.execute("EXPLAIN ANALYZE INSERT INTO users VALUES (3, 'cy')")
    assert result.status == "EXPLAIN ANALYZE" and result.columns == ANALYZE_COLUMNS
    assert [row[:6] for row in operations(result)] == [["1", "write", "/users/3", "2", "", 1]]
    assert [row[:6] for row in result.rows[-2:]] == [["total", "", "", "", "", 1], ["bound", "", "", "", "", 1]]
    assert db.execute("SELECT name FROM users WHERE id = 3").rows == [["cy"]]   # it ran for real


def test_each_kv_call_is_a_step_and_the_total_counts_every_round(db) -> None:
    result = db.execute("EXPLAIN ANALYZE UPDATE users SET name = name || 'l' WHERE id = 1")
    # In memory a read takes no consensus round; on a node it takes one (the cluster test).
    assert [row[:6] for row in operations(result)] == [["1", "get", "/users/1", "2", "", 0],
                                                       ["2", "write", "/users/1", "2", "", 1]]
    assert labelled(result, "total")[5] == 1
    blind = operations(db.execute("EXPLAIN ANALYZE UPDATE users SET name = 'al' WHERE id = 1"))
    assert [row[:6] for row in blind] == [["1", "write", "/users/1", "2", "", 1]]   # no read: SET is constant
    scan = operations(db.execute("EXPLAIN ANALYZE SELECT * FROM users"))
    assert [row[:3] for row in scan] == [["1", "scan", "/users/*"]]
    many = operations(db.execute("EXPLAIN ANALYZE INSERT INTO users VALUES (4, 'd'), (5, 'e'), (6, 'f')"))
    assert [row[1:3] for row in many] == [["write", "/users/4 .. /users/6 (3 keys)"]]   # no read before


def test_parts_in_different_ranges_share_a_step_and_the_bound_takes_the_slowest_not_the_sum(db) -> None:
    db.kv.split(key_for_row(read_table(db.kv, "users"), [2, ""]))    # users 1 and 2 in two ranges
    result = db.execute("EXPLAIN ANALYZE DELETE FROM users WHERE id >= 1")
    writes = [row for row in operations(result) if row[1] == "write"]
    assert len(writes) == 2 and writes[0][0] == writes[1][0] and writes[0][3] != writes[1][3]
    assert labelled(result, "total")[5] == 2
    assert labelled(result, "bound")[5:7] == [1, 60.0]             # one round on the path, not two


def test_the_total_is_the_statements_time_and_the_bound_row_gives_time_over_bound(db) -> None:
    result = db.execute("EXPLAIN ANALYZE INSERT INTO users VALUES (7, 'g')")
    total, bound = labelled(result, "total"), labelled(result, "bound")
    assert total[6] == pytest.approx(STATEMENT_S * 1000)
    assert bound[6] == 60.0                                           # in memory: quorum_rtt_ms x 1 round
    assert "time / bound = 1.50x" in bound[7]


def test_a_statement_that_reads_only_in_memory_has_a_zero_bound_and_no_ratio(db) -> None:
    bound = labelled(db.execute("EXPLAIN ANALYZE SELECT * FROM users WHERE id = 1"), "bound")
    assert bound[5:7] == [0, 0.0] and "undefined" in bound[7]


def test_explain_analyze_binds_its_parameters_and_a_failing_statement_leaves_no_trace_open(db) -> None:
    result = db.execute("EXPLAIN ANALYZE INSERT INTO users VALUES ($1, $2)", [8, "h"])
    assert operations(result)[0][2] == "/users/8"
    with pytest.raises(SQLError) as caught:
        db.execute("EXPLAIN ANALYZE INSERT INTO users VALUES (8, 'again')")
    assert caught.value.code == "unique_violation"
    assert db.kv.end_trace() == []                                     # ended by the failed statement
    with pytest.raises(SQLError) as caught:
        db.execute("EXPLAIN ANALYZE INSERT INTO users VALUES ($1, $2)")
    assert caught.value.code == "invalid_parameter"                    # EXPLAIN's unbound form is not for ANALYZE


def test_a_multi_row_insert_with_generated_keys_is_one_write(db) -> None:
    result = db.execute("EXPLAIN ANALYZE INSERT INTO notes VALUES ('a'), ('b'), ('c')")
    assert [row[1] for row in operations(result)] == ["write"]
    assert labelled(result, "total")[5] == 1


# --- the bound's formula, on hand-made traces ---------------------------------------------------------


def op(step: int, rounds: int = 1, leader: float | None = 0.0, quorum: float | None = 60.0,
       served_by: int | None = 1) -> TraceOp:
    return TraceOp(step=step, kind="write", keys=[b"k"], end=None, range_id=2, served_by=served_by,
                   rounds=rounds, quorum_rtt_ms=quorum, leader_rtt_ms=leader, ms=1.0)


def test_the_bound_is_the_leader_round_trip_plus_one_consensus_round_trip_per_round() -> None:
    assert physical_bound([op(1)]).ms == 60.0                         # the gateway leads the range
    assert physical_bound([op(1, leader=60.0)]).ms == 120.0           # another node leads it
    assert physical_bound([op(1, rounds=2, leader=60.0)]).ms == 180.0
    assert physical_bound([op(1, rounds=0, leader=60.0, quorum=None)]).ms == 60.0   # a saved answer


def test_steps_add_up_and_concurrent_parts_count_once_at_their_slowest() -> None:
    trace = [op(1, leader=10.0), op(1, leader=60.0, quorum=80.0), op(2, leader=0.0)]
    bound = physical_bound(trace)
    assert (bound.ms, bound.rounds) == (60.0 + 80.0 + 60.0, 2)


def test_a_round_trip_not_measured_yet_makes_the_bound_unknown_and_says_which() -> None:
    assert "round trip to n3" in physical_bound([op(1), op(1, leader=None, served_by=3)]).missing
    unknown = physical_bound([op(1, quorum=None, served_by=2)])
    assert unknown.ms is None and "n2's consensus round trip" in unknown.missing


def test_the_ratio_is_time_over_bound_and_undefined_without_a_bound() -> None:
    assert time_bound_ratio(90.0, 60.0) == pytest.approx(1.5)
    assert time_bound_ratio(90.0, 0.0) is None and time_bound_ratio(90.0, None) is None
