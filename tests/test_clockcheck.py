"""Clock offsets from heartbeat probes, and the stop-serving decision (raftstore.node.clockcheck).

The pure part runs two simulated nodes whose clocks differ by a chosen offset, with chosen
one-way delays each way; the cluster part starts real nodes, one with its clock skewed."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftstore import constants
from raftstore.errors import UnavailableError
from raftstore.node.clockcheck import OffsetMonitor, probe_is_valid

MS = 1_000_000
MAX = 500 * MS


A_MONO, B_MONO = 5 * 10**12, 7 * 10**12    # the two nodes' monotonic clocks: unrelated origins


def exchange(offset_ns: int, there_ns: int, back_ns: int, gap_ns: int = 100 * MS, base: int = 10**18,
             a_step_ns: int = 0, b_step_ns: int = 0):
    """Node A (true time = A's clock) probes B, whose clock reads true time + offset_ns; B
    answers gap_ns later. A's wall clock is stepped by a_step_ns while the probe is out, B's by
    b_step_ns while B holds it (their monotonic clocks are not). Returns A's monitor after B's
    answer arrived, and the measurement."""
    a, b = OffsetMonitor(MAX), OffsetMonitor(MAX)
    t = base
    probe = a.probe_for(2, t, A_MONO)                          # A sends at true time t
    assert b.on_probe(1, probe, t + there_ns + offset_ns, B_MONO + there_ns) is None   # first contact: nothing echoed
    reply = b.probe_for(1, t + there_ns + gap_ns + offset_ns + b_step_ns, B_MONO + there_ns + gap_ns)   # B answers gap later
    m = a.on_probe(2, reply, t + there_ns + gap_ns + back_ns + a_step_ns, A_MONO + there_ns + gap_ns + back_ns)
    return a, m


@given(offset=st.integers(-5_000 * MS, 5_000 * MS), there=st.integers(0, 400 * MS), back=st.integers(0, 400 * MS),
       gap=st.integers(0, 300 * MS))
@settings(max_examples=300, deadline=None)
def test_the_true_offset_lies_within_the_measured_interval(offset, there, back, gap):
    _, m = exchange(offset, there, back, gap)
    assert m is not None
    assert abs(m.offset_ns - offset) <= m.uncertainty_ns
    assert m.uncertainty_ns == (there + back) // 2 + 1


@given(offset=st.integers(-MAX, MAX), there=st.integers(0, 2_000 * MS), back=st.integers(0, 2_000 * MS))
@settings(max_examples=300, deadline=None)
def test_delay_never_makes_a_clock_within_bounds_look_far(offset, there, back):
    _, m = exchange(offset, there, back)
    assert not m.far(MAX)


def test_a_clock_beyond_bounds_is_far_when_the_delay_is_small():
    for offset in (-800 * MS, 800 * MS):
        _, m = exchange(offset, 30 * MS, 40 * MS)
        assert m.far(MAX)


def test_a_peers_round_trip_is_the_least_of_its_last_probes_and_forgets_older_ones():
    a, b = OffsetMonitor(MAX), OffsetMonitor(MAX)
    t = 10**18                                   # true time: both wall clocks, A's monotonic clock
    b.on_probe(1, a.probe_for(2, t, t), t + 30 * MS, t + 30 * MS)
    rtts = []
    for extra in [7, 2, 9] + [5] * constants.peer_rtt_probes_kept:   # one-way 30 ms + queueing
        t += 250 * MS
        m = a.on_probe(2, b.probe_for(1, t, t), t + (30 + extra) * MS, t + (30 + extra) * MS)
        b.on_probe(1, a.probe_for(2, t + (30 + extra) * MS, t + (30 + extra) * MS), t + (60 + extra) * MS,
                   t + (60 + extra) * MS)
        rtts.append((m.rtt_ns, m.rtt_min_ns))
    assert rtts[:3] == [(67 * MS, 67 * MS), (62 * MS, 62 * MS), (69 * MS, 62 * MS)]
    assert rtts[-1] == (65 * MS, 65 * MS)                    # the 62 ms probe is no longer among the last
    mono = t / 1e9
    assert a.latest(2, mono) is a.measurements[2]
    assert a.latest(2, mono + a.stale_s + 1) is None and a.latest(3, mono) is None


@pytest.mark.parametrize("a_step_ms, b_step_ms", [(-26, 0), (0, 26), (40, 0), (0, -40), (-15, 15)])
def test_a_wall_clock_stepped_during_a_probe_does_not_change_its_round_trip(a_step_ms, b_step_ms):
    """The round trip is timed by monotonic clocks: a step of either wall clock mid-exchange (NTP,
    a resumed VM) leaves it at the link's 60 ms plus the peer's hold excluded. (Timed by the
    wall stamps, a 26 ms step put 34 ms into the peer's minimum round trip for ~4 s, and
    EXPLAIN ANALYZE's bound with it.)"""
    _, m = exchange(0, 30 * MS, 30 * MS, a_step_ns=a_step_ms * MS, b_step_ns=b_step_ms * MS)
    assert m is not None and m.rtt_ns == m.rtt_min_ns == 60 * MS


def test_an_older_peers_probe_without_monotonic_stamps_is_timed_by_the_wall_stamps():
    a = OffsetMonitor(MAX)
    now = 10**18
    a.on_probe(2, {"t": now, "echo_t": None, "echo_rx": None}, now, 0)
    m = a.on_probe(2, {"t": now + 50 * MS, "echo_t": now - 10 * MS, "echo_rx": now + 10 * MS}, now + 70 * MS, 10**9)
    assert m.rtt_ns == 40 * MS and m.uncertainty_ns == 20 * MS + 1


def _monitor_with(offsets_ms: dict[int, int], at: float = 1.0) -> OffsetMonitor:
    mon = OffsetMonitor(MAX)
    for peer, off in offsets_ms.items():
        _, m = exchange(off * MS, 5 * MS, 5 * MS)
        mon.measurements[peer] = type(m)(m.offset_ns, m.uncertainty_ns, at)
    return mon


def test_a_node_stops_serving_only_when_far_from_a_majority_of_its_peers():
    assert _monitor_with({2: 900, 3: 950}).unfit_reason(1.0) is not None      # off from both: stop
    assert _monitor_with({2: 0, 3: 950}).unfit_reason(1.0) is None            # one of two: keep serving
    assert _monitor_with({2: -700, 3: 10, 4: -800, 5: -900}).unfit_reason(1.0) is not None   # 3 of 4
    assert _monitor_with({2: -700, 3: 10, 4: -800, 5: 20}).unfit_reason(1.0) is None         # 2 of 4
    assert _monitor_with({}).unfit_reason(1.0) is None
    reason = _monitor_with({2: 900, 3: 950}).unfit_reason(1.0)
    assert "maximum offset (500 ms)" in reason and "2 of the 2" in reason


def test_old_measurements_are_forgotten():
    mon = _monitor_with({2: 900, 3: 950}, at=1.0)
    assert mon.unfit_reason(1.0 + mon.stale_s) is not None
    assert mon.unfit_reason(1.0 + mon.stale_s + 0.1) is None


def test_a_probe_that_echoes_nothing_we_sent_is_ignored():
    a = OffsetMonitor(MAX)
    now = 10**18
    # Echo from the future, from long ago, and a reply sent before it was received.
    assert a.on_probe(2, {"t": now, "echo_t": now + MS, "echo_rx": now}, now, 0) is None
    assert a.on_probe(2, {"t": now, "echo_t": now - 3600 * 10**9, "echo_rx": now}, now, 0) is None
    assert a.on_probe(2, {"t": now - MS, "echo_t": now - 2 * MS, "echo_rx": now}, now, 0) is None
    # A monotonic echo from our future, from long ago, or a negative hold.
    mono = 10**13
    echo = {"t": now, "echo_t": now - 50 * MS, "echo_rx": now - 40 * MS}
    assert a.on_probe(2, {**echo, "echo_m": mono + MS, "echo_hold": 0}, now, mono) is None
    assert a.on_probe(2, {**echo, "echo_m": mono - 3600 * 10**9, "echo_hold": 0}, now, mono) is None
    assert a.on_probe(2, {**echo, "echo_m": mono - 50 * MS, "echo_hold": -MS}, now, mono) is None
    assert a.on_probe(2, {**echo, "echo_m": mono - 50 * MS, "echo_hold": 60 * MS}, now, mono) is None   # rtt < 0
    assert a.measurements == {}
    for bad in (None, [], {"t": "x"}, {"t": True}, {"t": 1, "echo_t": 2}, {"t": 1, "echo_t": "a", "echo_rx": 3},
                {"t": 1, "m": "x", "echo_t": None, "echo_rx": None},
                {"t": 1, "m": 1, "echo_t": 2, "echo_rx": 3, "echo_m": 4, "echo_hold": None},
                {"t": 1, "m": 1, "echo_t": 2, "echo_rx": 3, "echo_m": 4, "echo_hold": 1.5}):
        assert not probe_is_valid(bad)
    assert probe_is_valid({"t": 1, "echo_t": None, "echo_rx": None})
    assert probe_is_valid({"t": 1, "m": 5, "echo_t": None, "echo_rx": None, "echo_m": None, "echo_hold": None})
    assert probe_is_valid({"t": 1, "m": 5, "echo_t": 2, "echo_rx": 3, "echo_m": 4, "echo_hold": 0})


# --- real nodes ------------------------------------------------------------------------------------

def _clock(cluster, node) -> dict:
    with cluster.client(node) as c:
        return c.status()["clock"]


@pytest.mark.slow
@pytest.mark.parametrize("skew_ms", [2000, -2000])
def test_a_node_whose_clock_is_off_stops_serving_and_the_others_go_on(tmp_path, skew_ms):
    from cluster import Cluster, http_get, wait_until

    from raftstore.cli.main import CLOCK_SKEW_ENV

    with Cluster(str(tmp_path), node_env={3: {CLOCK_SKEW_ENV: str(skew_ms)}}) as cluster:
        cluster.wait_leader()
        n1, n2, n3 = cluster.nodes
        wait_until(lambda: not _clock(cluster, n3)["serving"], 30, "n3 to stop serving")
        clock = _clock(cluster, n3)
        assert "maximum offset" in clock["reason"]
        # It serves nothing under a lease and hands every lead (and the leases with it) away.
        def shed() -> bool:
            with cluster.client(n3) as c:
                ranges = c.status()["ranges"]
            return not any(r["lease_serving"] or r["leader"] == 3 or (r["lease"] or {}).get("holder") == 3
                           for r in ranges)
        wait_until(shed, 30, "n3 to hand every lead and lease away")
        # A lease moved to it (its lead offered to it) does not stay there either.
        data = 2                                      # the raw keyspace's range
        with cluster.client(n1) as c:
            holder = next(r["lease"]["holder"] for r in c.status()["ranges"] if r["range_id"] == data)
        with cluster.client(cluster.node(holder)) as c:
            c.lease_transfer(data, 3)
        wait_until(shed, 30, "n3 to hand the lead it was offered away again")
        for peer in ("1", "2"):
            offset = clock["offsets"][peer]
            assert offset["far"]
            # The true offset (theirs minus ours: -skew_ms) lies within the measured interval,
            # however long a busy machine made the probe's round trip (+ the 3-decimal rounding).
            assert abs(offset["offset_ms"] + skew_ms) <= offset["uncertainty_ms"] + 0.002, offset
        with cluster.client(n3, timeout_s=3.0) as c:
            with pytest.raises(UnavailableError, match="clock"):
                c.put(b"through-n3", b"x")
        status, body = http_get(n3.http_addr, "/health?ready=1")   # a load balancer takes it out
        assert status == 503 and "clock unfit" in body, body
        assert http_get(n1.http_addr, "/health?ready=1") == (200, "ready\n")
        for node in (n1, n2):
            assert _clock(cluster, node)["serving"]
            assert not _clock(cluster, node)["offsets"]["%d" % (3 - node.node_id)]["far"]   # n1 and n2 agree
        with cluster.client(n3, n1) as c:            # a client that knows another node moves on
            c.put(b"k", b"v")
        with cluster.client(n2) as c:
            assert c.get(b"k") == b"v"
