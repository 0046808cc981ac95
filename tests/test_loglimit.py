"""Repeated log lines are rate-limited per condition (raftstore.loglimit): the first at once, the
repeats of an interval counted, and the count said by the next line. Then the node's own
repeating conditions - a clock unfit to serve, a peer that keeps sending a bad frame - log one
line per interval, and a build without the limiter is caught flooding."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import msgpack
import pytest

from raftstore import constants
from raftstore.loglimit import LogLimiter

NAME = "raftstore.test_loglimit"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def lines(caplog, text: str, name: str = NAME) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and text in r.getMessage()]


def test_the_first_line_of_a_condition_is_logged_at_once(caplog, clock):
    limit = LogLimiter(10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger=NAME):
        assert limit.log(logging.getLogger(NAME), logging.WARNING, "bad", "node %d sent junk", 3)
    assert lines(caplog, "junk") == ["node 3 sent junk"]


def test_repeats_within_the_interval_are_counted_not_logged(caplog, clock):
    limit, log = LogLimiter(10.0, clock=clock), logging.getLogger(NAME)
    with caplog.at_level(logging.WARNING, logger=NAME):
        for i in range(50):
            clock.now += 0.19                 # 9.5 s in all: still within the interval
            limit.log(log, logging.WARNING, "bad", "node 3 sent junk %d", i)
    assert lines(caplog, "junk") == ["node 3 sent junk 0"]


def test_the_first_line_after_the_interval_carries_the_count_of_those_held_back(caplog, clock):
    limit, log = LogLimiter(10.0, clock=clock), logging.getLogger(NAME)
    with caplog.at_level(logging.WARNING, logger=NAME):
        for i in range(40):                  # one per 250 ms heartbeat: 9.75 s
            limit.log(log, logging.WARNING, "bad", "offset %d ms", 900 + i)
            clock.now += 0.25
        limit.log(log, logging.WARNING, "bad", "offset %d ms", 999)   # 10 s after the first
        clock.now += 30.0
        limit.log(log, logging.WARNING, "bad", "offset %d ms", 1)      # nothing held back since
    assert lines(caplog, "offset") == ["offset 900 ms", "offset 999 ms (39 more like this in the last 10 s)",
                                       "offset 1 ms"]


def test_distinct_conditions_and_loggers_are_limited_independently(caplog, clock):
    limit = LogLimiter(10.0, clock=clock)
    a, b = logging.getLogger(NAME), logging.getLogger(NAME + ".other")
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            limit.log(a, logging.WARNING, ("dropped", 2), "peer 2 dropped")
            limit.log(a, logging.WARNING, ("dropped", 3), "peer 3 dropped")
            limit.log(b, logging.WARNING, ("dropped", 2), "peer 2 dropped, other logger")
    assert lines(caplog, "dropped") == ["peer 2 dropped", "peer 3 dropped"]
    assert lines(caplog, "dropped", NAME + ".other") == ["peer 2 dropped, other logger"]


def test_the_conditions_remembered_are_bounded_and_the_least_recent_is_forgotten(clock):
    limit = LogLimiter(10.0, keys_max=3, clock=clock)
    for key in ("a", "b", "c"):
        assert limit.admit(key) == (0, 0.0)
    assert limit.admit("a") is None           # seen again: now the most recent
    assert limit.admit("d") == (0, 0.0)       # a fourth: "b", the least recent, is forgotten
    assert len(limit) == 3
    assert limit.admit("b") == (0, 0.0)       # forgotten only means logged again at once
    assert limit.admit("a") is None and limit.admit("d") is None
    for i in range(10_000):
        limit.admit(("peer", i))
    assert len(limit) == 3


def test_a_line_below_the_loggers_level_is_neither_logged_nor_counted(caplog, clock):
    limit, log = LogLimiter(10.0, clock=clock), logging.getLogger(NAME)
    with caplog.at_level(logging.WARNING, logger=NAME):
        assert not limit.log(log, logging.DEBUG, "quiet", "noise")
        assert limit.log(log, logging.WARNING, "quiet", "100% sure")       # no args: % is text
        clock.now += 11
        assert limit.log(log, logging.WARNING, "quiet", "100% sure")
    assert lines(caplog, "sure") == ["100% sure", "100% sure"]


def test_a_traceback_is_kept_on_the_lines_logged(caplog, clock):
    limit, log = LogLimiter(10.0, clock=clock), logging.getLogger(NAME)
    with caplog.at_level(logging.ERROR, logger=NAME):
        for _ in range(3):
            try:
                raise ValueError("boom")
            except ValueError:
                limit.log(log, logging.ERROR, "boom", "handling failed", exc_info=True)
    [record] = [r for r in caplog.records if r.name == NAME]
    assert record.exc_info and record.exc_info[0] is ValueError
    assert record.funcName == "test_a_traceback_is_kept_on_the_lines_logged"   # the caller's line, not the limiter's


def test_threads_logging_one_condition_log_one_line_and_every_other_is_counted(caplog, clock):
    limit, log = LogLimiter(10.0, clock=clock), logging.getLogger(NAME)
    threads_n, calls_n = 8, 2000
    start = threading.Barrier(threads_n)

    def hammer() -> None:
        start.wait()
        for i in range(calls_n):
            limit.log(log, logging.WARNING, "busy", "busy %d", i)
            limit.log(log, logging.WARNING, ("other", i % 50), "other %d", i % 50)
    with caplog.at_level(logging.WARNING, logger=NAME):
        workers = [threading.Thread(target=hammer) for _ in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        clock.now += 10
        limit.log(log, logging.WARNING, "busy", "busy %d", -1)
    busy = lines(caplog, "busy")
    assert len(busy) == 2 and busy[1] == "busy -1 (%d more like this in the last 10 s)" % (threads_n * calls_n - 1)
    assert len(lines(caplog, "other")) == 50


# --- the node's repeating conditions -----------------------------------------------------------

def _offsets_unfit(node, offset_ms: int) -> None:
    """Every peer's latest probe puts this node's clock offset_ms behind (far: beyond the max)."""
    from raftstore.node.clockcheck import Measurement
    node.offsets.measurements = {p: Measurement(offset_ns=offset_ms * 1_000_000, uncertainty_ns=1_000_000,
                                                at=time.monotonic()) for p in (2, 3)}


@pytest.fixture
def node(tmp_path):
    from raftstore.localcluster import free_ports
    from raftstore.node.loop import Node, NodeConfig

    peer, sql = ("127.0.0.1:%d" % p for p in free_ports(2))
    n = Node(NodeConfig(node_id=1, region="us-east1", peer_addr=peer, sql_addr=sql, join=[peer],
                        data_dir=str(tmp_path / "d"), secret=b"", disk_reserve_bytes=0, disk_ballast_bytes=0))
    try:
        yield n
    finally:
        n.close()


def _unfit_lines(node, caplog, clock, heartbeats: int) -> list[str]:
    """Run `heartbeats` clock checks 250 ms apart (the node's heartbeat), each after fresh probes
    whose figures differ a little, as real probes' do; then one more an interval later."""
    node.log_limit.clock = clock
    with caplog.at_level(logging.ERROR, logger="raftstore.node.loop"):
        for i in range(heartbeats):
            _offsets_unfit(node, 900 + i)
            node._check_clock()
            clock.now += constants.node_heartbeat_interval_s
        clock.now += constants.log_repeat_interval_s
        node._check_clock()
    return lines(caplog, "not serving clients", "raftstore.node.loop")


def test_a_node_whose_clock_is_unfit_says_so_once_per_interval_with_the_count(node, caplog, clock):
    logged = _unfit_lines(node, caplog, clock, 40)                    # 10 s of heartbeats
    assert len(logged) == 2, logged
    assert node.clock_unfit is not None and node.clock_unfit in logged[1]
    assert logged[1].endswith("(39 more like this in the last %.0f s)" % (constants.log_repeat_interval_s + 10.0))


def test_broken_a_node_without_the_limit_logs_its_unfit_clock_at_every_heartbeat(node, caplog, clock, monkeypatch):
    monkeypatch.setattr(LogLimiter, "admit", lambda self, key: (0, 0.0))
    assert len(_unfit_lines(node, caplog, clock, 40)) == 41


def _drops_logged(caplog, clock, redials: int) -> list[str]:
    """An authenticated peer (node 2) that redials `redials` times and each time sends a
    malformed HEARTBEAT frame; then once more an interval later. The drop lines logged."""
    from raftstore.localcluster import free_ports
    from raftstore.node.peer import HEARTBEAT, HELLO, MAGIC, PeerNetwork, _mac, encode_peer_frame

    secret = b"s" * 32
    [port] = free_ports(1)
    listen = socket.socket()
    listen.bind(("127.0.0.1", port))
    listen.listen()
    downs: list[int] = []
    net = PeerNetwork(listen_sock=listen, secret=secret, node_id=1,
                      hello=lambda: {"node_id": 1, "region": "r", "addr": "127.0.0.1:%d" % port},
                      on_hello=lambda hello: None, on_raft=lambda *a: None, on_peer_up=lambda peer: None,
                      on_peer_down=downs.append, on_reject=lambda reason: None)
    net.log_limit.clock = clock

    def pump(until) -> None:
        deadline = time.monotonic() + 10
        while not until():
            assert time.monotonic() < deadline
            net.poll(0.01)
            net.flush()

    def redial_and_misbehave() -> None:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        nonce_d, got = os.urandom(32), bytearray()
        s.sendall(MAGIC + nonce_d)

        def answered() -> bool:
            try:
                got.extend(s.recv(68 - len(got)))
            except BlockingIOError:
                pass
            return len(got) >= 68
        pump(answered)
        hello = {"node_id": 2, "region": "r", "addr": "127.0.0.1:1"}
        s.sendall(_mac(secret, b"D", nonce_d, bytes(got[4:36])) + encode_peer_frame([HELLO, hello])
                  + encode_peer_frame([HEARTBEAT, None, None, "not a list"]))
        dropped = len(downs) + 1
        pump(lambda: len(downs) == dropped)
        s.close()
    try:
        with caplog.at_level(logging.WARNING, logger="raftstore.node.peer"):
            for _ in range(redials):
                redial_and_misbehave()
            clock.now += constants.log_repeat_interval_s
            redial_and_misbehave()
    finally:
        net.close()
    assert len(downs) == redials + 1
    return lines(caplog, "dropped: malformed HEARTBEAT frame", "raftstore.node.peer")


def test_a_peer_that_keeps_sending_a_bad_frame_is_logged_once_per_interval_with_the_count(caplog, clock):
    logged = _drops_logged(caplog, clock, 12)
    assert len(logged) == 2, logged
    assert "(node 2) dropped: malformed HEARTBEAT frame: claims must be" in logged[0]
    assert logged[1].endswith("(11 more like this in the last %.0f s)" % constants.log_repeat_interval_s)


def test_broken_a_peer_network_without_the_limit_logs_every_drop(caplog, clock, monkeypatch):
    monkeypatch.setattr(LogLimiter, "admit", lambda self, key: (0, 0.0))
    assert len(_drops_logged(caplog, clock, 12)) == 13
