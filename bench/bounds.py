"""The physical lower bound on a statement's latency, from a matrix of round-trip times.

Why: a latency number means little on its own; "2.1x the speed of light between these
regions" says how much of it is the design and how much is distance. This module says what
the network alone forces on a statement, given where the client, the leaseholder (the range's
Raft leader) and the other replicas are. Pure: takes a round-trip function and region names,
never touches a socket or a clock.

The model (the same one CockroachDB's docs use for its topology patterns):

* The client talks to the gateway node in its own region over a local link, which costs 0.
  The gateway sends the statement to the leaseholder and gets the answer back:
  ``client_rtt = RTT(client region, leaseholder region)``, 0 when they are the same region.
* A write commits when a majority of the range's replicas hold it. The leader counts itself,
  so it waits for the acknowledgements of ``majority - 1`` followers; the fastest way to get
  them is from the nearest followers, so
  ``replication_rtt = the (majority - 1)-th smallest RTT from the leader to a follower``:
  for 3 replicas the nearest other region, for 5 the second-nearest. With a single replica
  it is 0.
* ``write bound = client_rtt + replication_rtt``. One range, one proposal: a multi-row INSERT
  into one range has the same bound as a single-row one.
* A strong (linearizable) read: before range leases a read went through the Raft log like
  a write, so its bound was the write bound (``reads_through_log=True``). Leaseholders serve
  reads from their lease now (``reads_through_log=False``, bench.sql_bench): the bound is ``client_rtt``.
* A bounded-staleness (follower) read is served by the replica in the client's own region, so
  its network bound is 0 when the client's region holds a replica, else the RTT to the nearest
  replica.

What the bound leaves out, on purpose: CPU, disk (an fsync on the leader and on each follower
in the quorum, overlapped with the network), and queueing. A ratio p50 / bound near 1 means the
network is the only cost left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

RttFn = Callable[[str, str], float]   # (region, region) -> round trip in ms; 0 for a region to itself


@dataclass(frozen=True)
class Bound:
    """A lower bound in ms, split into the client's leg and the replication leg."""

    client_ms: float
    replication_ms: float

    @property
    def total_ms(self) -> float:
        return self.client_ms + self.replication_ms

    def explain(self) -> str:
        """'64 + 64 ms' style text: client round trip + replication round trip."""
        return "%g + %g ms" % (self.client_ms, self.replication_ms)


def majority(replica_count: int) -> int:
    """Replicas that must hold an entry for it to commit (the leader included)."""
    assert replica_count >= 1, replica_count
    return replica_count // 2 + 1


def client_rtt_ms(rtt_ms: RttFn, client_region: str, leaseholder_region: str) -> float:
    """Round trip from the gateway in the client's region to the leaseholder (0 if the same)."""
    return 0.0 if client_region == leaseholder_region else float(rtt_ms(client_region, leaseholder_region))


def replication_rtt_ms(rtt_ms: RttFn, leader_region: str, replica_regions: Sequence[str]) -> float:
    """The round trip after which the leader can hold a majority of acknowledgements.

    `replica_regions` lists the region of every replica of the range, the leader's own included
    (once per replica). The leader's own replica is removed once; the rest are followers.
    """
    assert leader_region in replica_regions, (leader_region, list(replica_regions))
    followers = list(replica_regions)
    followers.remove(leader_region)
    acks_needed = majority(len(replica_regions)) - 1
    if acks_needed == 0:
        return 0.0
    rtts = sorted(float(rtt_ms(leader_region, r)) for r in followers)
    return rtts[acks_needed - 1]


def write_bound(rtt_ms: RttFn, client_region: str, leaseholder_region: str,
                replica_regions: Sequence[str]) -> Bound:
    """Lower bound of a single-range write (INSERT, UPDATE, UPSERT, multi-row INSERT in one range)."""
    return Bound(client_rtt_ms(rtt_ms, client_region, leaseholder_region),
                 replication_rtt_ms(rtt_ms, leaseholder_region, replica_regions))


def strong_read_bound(rtt_ms: RttFn, client_region: str, leaseholder_region: str,
                      replica_regions: Sequence[str], reads_through_log: bool = True) -> Bound:
    """Lower bound of a linearizable point read.

    `reads_through_log=True` (the current design): the read is a Raft proposal, so it costs what
    a write costs. `False`: the leaseholder answers from its lease, so only the client leg is left.
    """
    if reads_through_log:
        return write_bound(rtt_ms, client_region, leaseholder_region, replica_regions)
    return Bound(client_rtt_ms(rtt_ms, client_region, leaseholder_region), 0.0)


def stale_read_bound(rtt_ms: RttFn, client_region: str, replica_regions: Sequence[str]) -> Bound:
    """Lower bound of a bounded-staleness (follower) read: the nearest replica, local if any."""
    assert replica_regions, "a range has at least one replica"
    nearest = min(client_rtt_ms(rtt_ms, client_region, r) for r in replica_regions)
    return Bound(nearest, 0.0)


def symmetric_rtt(rtt_ms: float) -> RttFn:
    """Every pair of distinct regions `rtt_ms` apart (0 to itself)."""
    return lambda a, b: 0.0 if a == b else float(rtt_ms)


def ratio(p50_ms: float | None, bound_ms: float) -> float | None:
    """p50 / bound, None when either is missing or the bound is 0 (no emulated latency)."""
    if p50_ms is None or bound_ms <= 0:
        return None
    return p50_ms / bound_ms
