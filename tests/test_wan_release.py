"""WAN emulation (raftstore.node.peer): a delayed frame leaves as soon as the node loop's poll
returns once it is due (PeerNetwork.release_synced), but never before the journal sync that
covers it: only frames queued before the last flush (which follows a sync) leave early."""

from __future__ import annotations

import math
import random
import statistics
import socket
import time

import pytest

from raftstore.node.peer import HEARTBEAT, PeerNetwork, _Conn
from raftstore.wire import FrameDecoder

DELAY_S = 0.05


@pytest.fixture
def network():
    """A PeerNetwork delaying frames to peer 2 by DELAY_S, and the socket peer 2 reads them on."""
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    net = PeerNetwork(listen_sock=listen, secret=b"s", hello=lambda: {}, on_hello=lambda h: None,
                      on_raft=lambda *a: None, on_peer_up=lambda p: None, on_peer_down=lambda p: None,
                      on_reject=lambda r: None, node_id=1, delay_s=lambda peer: DELAY_S)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(0.0)
    conn = _Conn(ours, "peer", True, "open", math.inf)
    net.conns.add(conn)
    net.peers[2] = conn
    yield net, theirs
    for s in (listen, ours, theirs):
        s.close()


def _sent(theirs: socket.socket) -> list[int]:
    """The marks (second field) of the heartbeat frames that reached the other end so far."""
    try:
        data = theirs.recv(1 << 16)
    except BlockingIOError:
        return []
    return [frame[1] for frame in FrameDecoder().feed(data)]


def _release_order(net: PeerNetwork, theirs: socket.socket) -> tuple[list[int], list[int]]:
    net.send(2, [HEARTBEAT, 1])
    net.flush()                      # not due yet: stays, covered by the sync before this flush
    net.send(2, [HEARTBEAT, 2])      # queued after it: its sync has not happened
    time.sleep(DELAY_S * 1.5)        # both are due now
    net.release_synced()
    early = _sent(theirs)
    net.flush()
    return early, _sent(theirs)


def test_a_due_frame_leaves_at_once_but_one_queued_since_the_last_flush_waits_for_it(network):
    assert _release_order(*network) == ([1], [2])


def test_broken_a_release_that_ignores_the_last_flush_sends_an_unsynced_frame_early(network, monkeypatch):
    monkeypatch.setattr(PeerNetwork, "release_synced", PeerNetwork.flush)
    assert _release_order(*network) == ([1, 2], [])


def _lateness_under_a_late_timer(net: PeerNetwork, timer_late_s: float, frames: int = 3000) -> list[float]:
    """A model of the node loop's release of delayed frames: it asks its poll to wake
    `release_ahead_s()` before a frame is due; the poll rounds that up to a whole millisecond and
    the machine's timer wakes it `timer_late_s` later; the frame leaves then."""
    rng = random.Random(7)
    lates = []
    for i in range(frames):
        due = 1000.0 + i * 0.05
        woke = due - net.release_ahead_s() + rng.uniform(0.0, 0.001) + timer_late_s
        net._learn_lateness(woke - due)
        lates.append(woke - due)
    return lates[-1000:]


def test_delayed_frames_leave_on_time_on_average_though_the_timer_wakes_late(network):
    net, _ = network
    lates = _lateness_under_a_late_timer(net, timer_late_s=0.0003)
    assert abs(statistics.mean(lates)) < 0.00005, statistics.mean(lates)
    assert 0.0002 < net.release_lead_s < 0.0004, net.release_lead_s


def test_broken_without_learning_the_timers_lateness_every_frame_leaves_late(network, monkeypatch):
    monkeypatch.setattr(PeerNetwork, "_learn_lateness", lambda self, late_s: None)
    net, _ = network
    assert statistics.mean(_lateness_under_a_late_timer(net, timer_late_s=0.0003)) > 0.00025
