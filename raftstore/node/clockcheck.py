"""Clock offset to each peer, and whether this node's clock is fit to serve (DESIGN.md, HLC).

A node's HLC rejects a remote timestamp more than `max_offset` ahead, but that alone lets a node
whose clock runs far *ahead* keep issuing timestamps nobody else would accept, and lets a node
far behind keep serving reads at stale timestamps. So every node measures its offset to each
peer and stops serving clients when it is too far from a majority of them.

Measurement (NTP's four timestamps, on the node heartbeats that flow both ways anyway): a
heartbeat carries the sender's physical send time `t`, and echoes the `t` of the last heartbeat
it received from the receiver together with the sender's physical time of receiving it. For my
heartbeat sent at T1 (my clock), received at T2 (peer's clock), and the peer's heartbeat sent at
T3 (peer's clock) that echoes it, received at T4 (my clock):

    offset = ((T2 - T1) + (T3 - T4)) / 2        (peer's clock minus mine)
    rtt    = (T4 - T1) - (T3 - T2)              (time on the wire, both ways)

and the true offset lies within offset ± rtt/2 whatever the split of the delay between the two
directions. A peer is *far* only when that whole interval lies beyond `max_offset`, so network
delay never makes a healthy node look far. Measurements older than `stale_s` are ignored
(a peer that stopped talking says nothing about our clock).

Decision: this node stops serving when it is far from more than half of the peers it has a
fresh measurement for. With three nodes and one clock off, the off node is far from both others
and stops; each of the others is far from one of two and keeps serving. With only two nodes
talking and their clocks apart, neither can tell who is wrong and both stop (safe). Serving
resumes by itself once the measurements are back within bounds.

The same probes give each peer's round trip (`Measurement.rtt_min_ns`): the least of the last
`peer_rtt_probes_kept` probes, what the link itself costs without the queueing and the loop
wake-ups any one probe may meet - the round trip a request cannot avoid, which EXPLAIN ANALYZE's
bound is made of. That round trip is timed with monotonic clocks, not the four wall stamps: a
probe also carries the sender's monotonic send time `m` (echoed back to it untouched as
`echo_m`) and how long it held the probe it echoes (`echo_hold`, by its own monotonic clock),
so `rtt = (now_m - echo_m) - echo_hold`. A wall clock stepped or slewed during one exchange
(NTP, a VM resumed) would otherwise put a round trip far below the link's into the minimum for
the next `peer_rtt_probes_kept` probes. Probes without these fields (an older node) fall back to
the wall stamps.

Everything here is pure: times come in as arguments, so tests drive it without a real clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from raftstore import constants

__all__ = ["OffsetMonitor", "Measurement", "probe_is_valid"]


@dataclass(frozen=True)
class Measurement:
    offset_ns: int          # peer's clock minus ours
    uncertainty_ns: int     # rtt / 2
    at: float               # our monotonic time of the measurement
    rtt_ns: int = 0         # the probe's round trip, less the peer's time holding it (monotonic clocks)
    rtt_min_ns: int = 0     # the least rtt_ns of the peer's last peer_rtt_probes_kept probes, this one's included

    def far(self, max_offset_ns: int) -> bool:
        return abs(self.offset_ns) - self.uncertainty_ns > max_offset_ns


def _int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def probe_is_valid(probe: object) -> bool:
    """A heartbeat's clock probe: {"t": int, "echo_t": int | None, "echo_rx": int | None} and,
    from nodes that time round trips monotonically, "m": int, "echo_m" and "echo_hold": int | None
    (absent from an older node's probes)."""
    if not isinstance(probe, dict) or not isinstance(probe.get("t"), int) or isinstance(probe.get("t"), bool):
        return False
    echo_t, echo_rx = probe.get("echo_t"), probe.get("echo_rx")
    if not ((echo_t is None and echo_rx is None) or (isinstance(echo_t, int) and isinstance(echo_rx, int))):
        return False
    echo_m, echo_hold = probe.get("echo_m"), probe.get("echo_hold")
    return (_int_or_none(probe.get("m")) and _int_or_none(echo_m) and _int_or_none(echo_hold)
            and (echo_m is None) == (echo_hold is None))


class OffsetMonitor:
    """Per-peer clock offsets from heartbeat probes, and the serve / stop-serving decision."""

    def __init__(self, max_offset_ns: int, stale_s: float = 10.0) -> None:
        self.max_offset_ns = max_offset_ns
        self.stale_s = stale_s
        self.measurements: dict[int, Measurement] = {}
        # peer -> (its wall send time t, our wall receive time, its monotonic send time m or None,
        #          our monotonic receive time)
        self._last_from: dict[int, tuple[int, int, int | None, int]] = {}
        self._rtts: dict[int, deque] = {}                  # peer -> its last probes' round trips (ns)

    def probe_for(self, peer_id: int, now_ns: int, mono_ns: int) -> dict:
        """The probe to put in our next heartbeat to peer_id, sent at physical time now_ns and
        monotonic time mono_ns."""
        echo = self._last_from.get(peer_id)
        if echo is None:
            return {"t": now_ns, "m": mono_ns, "echo_t": None, "echo_rx": None, "echo_m": None, "echo_hold": None}
        t, rx, m, rx_mono = echo
        return {"t": now_ns, "m": mono_ns, "echo_t": t, "echo_rx": rx,
                "echo_m": m, "echo_hold": mono_ns - rx_mono if m is not None else None}

    def on_probe(self, peer_id: int, probe: dict, now_ns: int, mono_ns: int) -> Measurement | None:
        """A heartbeat from peer_id carrying `probe` arrived at physical time now_ns and
        monotonic time mono_ns. Returns the new measurement, if the probe completes one."""
        self._last_from[peer_id] = (probe["t"], now_ns, probe.get("m"), mono_ns)
        t1, t2, t3, t4 = probe["echo_t"], probe["echo_rx"], probe["t"], now_ns
        stale_ns = int(self.stale_s * 1e9)
        # The echo must be of a probe we really sent it (not forged, not from before a restart).
        if t1 is None or t1 > t4 or t1 < t4 - stale_ns or t3 < t2:
            return None
        wall_rtt = (t4 - t1) - (t3 - t2)     # what the offset's interval is made of (the same stamps)
        if wall_rtt < 0:
            return None
        echo_m, hold = probe.get("echo_m"), probe.get("echo_hold")
        if echo_m is None:
            rtt = wall_rtt                   # an older peer: wall stamps only
        else:
            rtt = (mono_ns - echo_m) - hold
            if echo_m > mono_ns or echo_m < mono_ns - stale_ns or hold < 0 or rtt < 0:
                return None
        # wall_rtt // 2 + 1: the halving rounds, so the interval is widened by the rounding error.
        rtts = self._rtts.setdefault(peer_id, deque(maxlen=constants.peer_rtt_probes_kept))
        rtts.append(rtt)
        m = Measurement(offset_ns=((t2 - t1) + (t3 - t4)) // 2, uncertainty_ns=wall_rtt // 2 + 1, at=mono_ns / 1e9,
                        rtt_ns=rtt, rtt_min_ns=min(rtts))
        self.measurements[peer_id] = m
        return m

    def fresh(self, mono: float) -> dict[int, Measurement]:
        return {p: m for p, m in self.measurements.items() if mono - m.at <= self.stale_s}

    def latest(self, peer_id: int, mono: float) -> Measurement | None:
        """The peer's latest measurement if it is fresh, else None. One dict read: another
        thread may call it while the node loop records new measurements."""
        m = self.measurements.get(peer_id)
        return m if m is not None and mono - m.at <= self.stale_s else None

    def far_peers(self, mono: float) -> list[int]:
        return sorted(p for p, m in self.fresh(mono).items() if m.far(self.max_offset_ns))

    def unfit_reason(self, mono: float) -> str | None:
        """Why this node must not serve now, or None if its clock is fit."""
        fresh = self.fresh(mono)
        far = self.far_peers(mono)
        if not far or 2 * len(far) <= len(fresh):
            return None
        worst = max((fresh[p] for p in far), key=lambda m: abs(m.offset_ns))
        return ("this node's clock is more than the maximum offset (%d ms) away from %d of the %d "
                "peers it hears from (up to %+d ms, theirs minus ours); it stops serving until its "
                "clock is fixed" % (self.max_offset_ns // 1_000_000, len(far), len(fresh),
                                    worst.offset_ns // 1_000_000))

    def status(self, mono: float) -> dict:
        return {str(p): {"offset_ms": round(m.offset_ns / 1e6, 3), "uncertainty_ms": round(m.uncertainty_ns / 1e6, 3),
                         "far": m.far(self.max_offset_ns)}
                for p, m in sorted(self.fresh(mono).items())}
