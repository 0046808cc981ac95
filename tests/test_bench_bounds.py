"""The latency lower bound of `raftstore bench` (bench/bounds.py), against hand-computed values.

Each expected value below was worked out by hand from the shipped matrices:
client leg (0 in the leaseholder's region) + the leader's round trip to the follower that
completes a majority (3 regions: the nearest other region; 5 regions: the second-nearest).
"""

from __future__ import annotations

import pytest

from bench.bounds import (
    Bound,
    majority,
    ratio,
    replication_rtt_ms,
    stale_read_bound,
    strong_read_bound,
    symmetric_rtt,
    write_bound,
)
from raftstore.node.wan import load_matrix

E, W, U, A, AU = "us-east1", "europe-west1", "us-west1", "asia-east1", "australia-southeast1"
THREE = [E, W, U]
FIVE = [E, W, U, A, AU]

# global3: E-U 66, E-W 64, U-W 146.
# leader -> nearest follower: E: min(64, 66) = 64; W: min(64, 146) = 64; U: min(66, 146) = 66.
GLOBAL3_WRITE = {  # (leaseholder, client) -> bound ms
    (E, E): 64, (E, W): 64 + 64, (E, U): 66 + 64,
    (W, W): 64, (W, E): 64 + 64, (W, U): 146 + 64,
    (U, U): 66, (U, E): 66 + 66, (U, W): 146 + 66,
}

# global5 adds A and AU: E-A 190, U-A 120, W-A 250, E-AU 200, U-AU 140, W-AU 270, A-AU 120.
# Second-nearest follower of each leader:
#   E: [64, 66, 190, 200] -> 66     W: [64, 146, 250, 270] -> 146   U: [66, 120, 140, 146] -> 120
#   A: [120, 120, 190, 250] -> 120  AU: [120, 140, 200, 270] -> 140
GLOBAL5_REPLICATION = {E: 66, W: 146, U: 120, A: 120, AU: 140}
GLOBAL5_WRITE = {
    (E, E): 66, (E, W): 64 + 66, (E, U): 66 + 66, (E, A): 190 + 66, (E, AU): 200 + 66,
    (W, W): 146, (W, E): 64 + 146, (W, U): 146 + 146, (W, A): 250 + 146, (W, AU): 270 + 146,
    (U, U): 120, (U, E): 66 + 120, (U, W): 146 + 120, (U, A): 120 + 120, (U, AU): 140 + 120,
    (A, A): 120, (A, E): 190 + 120, (A, W): 250 + 120, (A, U): 120 + 120, (A, AU): 120 + 120,
    (AU, AU): 140, (AU, E): 200 + 140, (AU, W): 270 + 140, (AU, U): 140 + 140, (AU, A): 120 + 140,
}


@pytest.mark.parametrize("leader,client", sorted(GLOBAL3_WRITE))
def test_global3_write_bound_is_client_leg_plus_nearest_follower(leader, client):
    rtt = load_matrix("global3").rtt_ms
    assert write_bound(rtt, client, leader, THREE).total_ms == GLOBAL3_WRITE[(leader, client)]


@pytest.mark.parametrize("leader,client", sorted(GLOBAL5_WRITE))
def test_global5_write_bound_is_client_leg_plus_second_nearest_follower(leader, client):
    rtt = load_matrix("global5").rtt_ms
    bound = write_bound(rtt, client, leader, FIVE)
    assert bound.replication_ms == GLOBAL5_REPLICATION[leader]
    assert bound.total_ms == GLOBAL5_WRITE[(leader, client)]


@pytest.mark.parametrize("regions", [THREE, FIVE])
def test_symmetric60_write_is_one_round_trip_in_the_leaseholder_region_and_two_elsewhere(regions):
    rtt = load_matrix("symmetric60").rtt_ms
    for leader in regions:
        for client in regions:
            expected = 60 if client == leader else 120
            assert write_bound(rtt, client, leader, regions).total_ms == expected, (leader, client)


def test_the_bound_is_split_into_the_client_leg_and_the_replication_leg():
    rtt = load_matrix("global3").rtt_ms
    assert write_bound(rtt, U, E, THREE) == Bound(client_ms=66, replication_ms=64)
    assert write_bound(rtt, E, E, THREE) == Bound(client_ms=0, replication_ms=64)
    assert write_bound(rtt, U, E, THREE).explain() == "66 + 64 ms"


def test_strong_reads_cost_a_write_while_they_go_through_the_log():
    rtt = load_matrix("global3").rtt_ms
    for (leader, client), expected in GLOBAL3_WRITE.items():
        assert strong_read_bound(rtt, client, leader, THREE).total_ms == expected


def test_lease_reads_would_cost_only_the_client_leg():
    rtt = load_matrix("global3").rtt_ms
    assert strong_read_bound(rtt, E, E, THREE, reads_through_log=False).total_ms == 0
    assert strong_read_bound(rtt, W, E, THREE, reads_through_log=False).total_ms == 64
    assert strong_read_bound(rtt, W, U, THREE, reads_through_log=False).total_ms == 146


def test_a_follower_read_is_local_when_the_clients_region_holds_a_replica():
    rtt = load_matrix("global5").rtt_ms
    for client in FIVE:
        assert stale_read_bound(rtt, client, FIVE).total_ms == 0
    # A client in a region without a replica goes to the nearest one: A -> U (120) over E (190).
    assert stale_read_bound(rtt, A, THREE).total_ms == 120


def test_majority_counts_the_leader_itself():
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert replication_rtt_ms(symmetric_rtt(60), E, [E]) == 0
    # 4 replicas: majority 3, so the leader waits for its second-nearest follower.
    assert replication_rtt_ms(load_matrix("global5").rtt_ms, E, [E, W, U, A]) == 66


def test_ratio_is_undefined_without_emulated_latency():
    assert ratio(128.0, 64.0) == 2.0
    assert ratio(1.2, 0.0) is None
    assert ratio(None, 64.0) is None
