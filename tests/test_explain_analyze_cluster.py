"""EXPLAIN ANALYZE on real node processes under the emulated WAN (the symmetric60 matrix: every
pair of regions 60 ms apart).

Rounds are what the range's leader reports for the proposals it made (`served_by`, `rounds` on
each committed answer, kvserver/store.py), not what the plan says: a build whose INSERT reads
before it writes shows 2 here and fails. The bound is computed from the round trips the nodes
measure on their peer links (clock probes), not from the matrix file: 60 ms from the
leaseholder's node (one consensus round to its nearest follower), 120 ms from another (the
round trip to the leader first). Every process is stopped at the end (Cluster's context)."""

from __future__ import annotations

import itertools
import re

import pytest

import raftstore
from cluster import LIVENESS_MARGIN_S, Cluster, wait_until

RTT_MS = 60.0             # symmetric60
RTT_NOISE_MS = 10.0       # what a measured round trip may differ from the matrix's (processing, wake-ups)
READY_TIMEOUT_S = 60.0 + LIVENESS_MARGIN_S

STEP, OPERATION, SPAN, RANGE_ID, SERVED_BY, ROUNDS, TIME_MS, DETAIL = range(8)   # sql.explain.ANALYZE_COLUMNS


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("analyze")), extra_args=["--latency-matrix", "symmetric60"]) as c:
        c.wait_leader(timeout=READY_TIMEOUT_S)
        cur = raftstore.connect(c.nodes[0].sql_addr).cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS accounts (id INT PRIMARY KEY, owner TEXT NOT NULL)")
        cur.execute("CREATE TABLE IF NOT EXISTS events (body TEXT)")      # a hidden rowid key
        wait_until(lambda: all(_probes_fresh(c, n) for n in c.nodes), READY_TIMEOUT_S,
                   "every node to hold a fresh round trip to each peer (logs in %s)" % c.root)
        yield c


def _probes_fresh(cluster: Cluster, node) -> bool:
    """Whether `node` measured a round trip to each peer recently (its status lists the fresh
    clock measurements: those are the round trips EXPLAIN ANALYZE uses)."""
    with cluster.client(node) as client:
        offsets = client.status()["clock"]["offsets"]
    return {int(p) for p in offsets} == {n.node_id for n in cluster.nodes} - {node.node_id}


def analyze(node, sql: str, params=None) -> list[tuple]:
    cur = raftstore.connect(node.sql_addr).cursor()
    cur.execute("EXPLAIN ANALYZE " + sql, params)
    return cur.fetchall()


def operations(rows: list[tuple]) -> list[tuple]:
    return [row for row in rows if row[STEP] not in ("total", "bound")]


def labelled(rows: list[tuple], label: str) -> tuple:
    (row,) = [row for row in rows if row[STEP] == label]
    return row


def served_by(row: tuple) -> int:
    match = re.match(r"n(\d+) \(", row[SERVED_BY])
    assert match, row
    return int(match.group(1))


def leaseholder(cluster: Cluster, table: str) -> int:
    cur = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    cur.execute("SHOW RANGES FROM TABLE " + table)
    (row,) = cur.fetchall()          # one range: nothing here splits it
    return row[3]


def total_rounds(rows: list[tuple]) -> int:
    return labelled(rows, "total")[ROUNDS]


# --- rounds, from the leader's proposals ---------------------------------------------------------------


@pytest.mark.slow
def test_a_point_insert_is_one_consensus_round_at_the_leader(wan):
    rows = analyze(wan.nodes[1], "INSERT INTO accounts VALUES (1, 'ann')")
    assert total_rounds(rows) == 1, rows
    ops = operations(rows)
    assert [(op[OPERATION], op[SPAN], op[ROUNDS]) for op in ops] == [("write", "/accounts/1", 1)], rows
    assert served_by(ops[0]) == leaseholder(wan, "accounts")


@pytest.mark.slow
def test_a_one_range_multi_row_insert_of_generated_keys_is_one_consensus_round(wan):
    rows = analyze(wan.nodes[2], "INSERT INTO events VALUES " + ", ".join("('e%d')" % i for i in range(10)))
    assert total_rounds(rows) == 1, rows
    ops = operations(rows)
    assert [op[OPERATION] for op in ops] == ["write"] and "(10 keys)" in ops[0][SPAN], rows


@pytest.mark.slow
def test_a_one_range_multi_row_insert_of_given_keys_is_one_consensus_round(wan):
    rows = analyze(wan.nodes[2], "INSERT INTO accounts VALUES " + ", ".join("(%d, 'o')" % i for i in range(100, 110)))
    assert len({op[RANGE_ID] for op in operations(rows)}) == 1, rows
    assert total_rounds(rows) == 1, rows


@pytest.mark.slow
@pytest.mark.parametrize("statement, operations_seen", [
    ("UPDATE accounts SET owner = 'gus' WHERE id = 7", ["write"]),               # blind: no read at all
    ("UPDATE accounts SET owner = owner || 's' WHERE id = 7", ["get", "write"]),  # a locking read, no round
    ("DELETE FROM accounts WHERE id = 7", ["write"]),
], ids=["constant SET", "SET reads the row", "DELETE"])
def test_a_primary_key_update_or_delete_is_one_consensus_round(wan, statement, operations_seen):
    raftstore.connect(wan.nodes[0].sql_addr).cursor().execute("UPSERT INTO accounts VALUES (7, 'gil')")
    rows = analyze(wan.nodes[0], statement)
    assert total_rounds(rows) == 1, rows
    assert [op[OPERATION] for op in operations(rows)] == operations_seen, rows


# --- the bound, from measured round trips ----------------------------------------------------------------


@pytest.mark.slow
def test_the_bound_of_an_insert_or_blind_update_is_one_round_trip_from_the_leaseholder_and_two_from_another(wan):
    leader = wan.node(leaseholder(wan, "accounts"))
    other = next(n for n in wan.nodes if n is not leader)
    for statement, (node, expected_ms, key) in itertools.product(
            ("INSERT INTO accounts VALUES ($1, 'b')", "UPDATE accounts SET owner = 'c' WHERE id = $1"),
            ((leader, RTT_MS, 20), (other, 2 * RTT_MS, 21))):
        rows = analyze(node, statement, [key])
        (op,) = operations(rows)
        assert served_by(op) == leader.node_id, rows      # the lead did not move meanwhile
        total, bound = labelled(rows, "total"), labelled(rows, "bound")
        assert bound[TIME_MS] == pytest.approx(expected_ms, abs=RTT_NOISE_MS), (node.node_id, rows)
        ratio = float(re.search(r"time / bound = ([0-9.]+)x", bound[DETAIL]).group(1))
        assert ratio == pytest.approx(total[TIME_MS] / bound[TIME_MS], abs=0.01), rows
