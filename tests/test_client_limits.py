"""The client port's limits (raftstore.server.client_port), on a real loopback socket with a stub
node and SQL gateway behind it: connections (the oldest idle one goes, all busy: refused; idle
timeout; a frame begun must finish), buffers (a connection that does not read its answers is
not read, and its answers' bytes stay within the budget), results in pages, and a result over
its limit refused by name. Real-process overload tests are in tests/test_overload.py."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import msgpack
import pytest

from raftstore import constants, errors, wire
from raftstore.kv import Client
from raftstore.node.metrics import NodeMetrics
from raftstore.server.client_port import ClientLimits, ClientServer
from raftstore.sqlclient import connect
from cluster import wait_until


class StubNode:
    """What ClientServer asks of a node: its socket, metrics and a status."""

    def __init__(self) -> None:
        self.sql_sock = socket.create_server(("127.0.0.1", 0))
        self.node_id = 1
        self.metrics = NodeMetrics()
        self.clock_unfit = self.fatal = None
        self.members = {}

    async def status(self) -> dict:
        return {"node_id": 1}


class StubGateway:
    """`SELECT n, w`: n rows of a w-byte text each; `SLEEP s`: answers after s seconds."""

    async def handle(self, args: dict, session=None) -> dict:
        words = args["sql"].split()
        if words[0] == "SLEEP":
            await asyncio.sleep(float(words[1]))
            rows = []
        else:
            n, width = int(words[1].rstrip(",")), int(words[2])
            rows = [[i, "x" * width] for i in range(n)]
        return {"ok": True, "result": {"columns": ["i", "t"], "types": ["INT", "TEXT"], "rows": rows,
                                       "rowcount": len(rows), "status": "SELECT %d" % len(rows), "ts": [1, 0]}}


class Port:
    """A ClientServer with `limits` on its own asyncio loop thread."""

    def __init__(self, limits: ClientLimits) -> None:
        self.node = StubNode()
        self.addr = "127.0.0.1:%d" % self.node.sql_sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.server = ClientServer(self.node, StubGateway(), limits)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def stats(self) -> dict:
        return asyncio.run_coroutine_threadsafe(_call(self.server.limits_status), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.drain(2.0), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.node.sql_sock.close()


async def _cancel_the_rest() -> None:
    """A test's connections may still wait on answers nobody reads: end them."""
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in rest:
        t.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


async def _call(fn):
    return fn()


@pytest.fixture
def port(request):
    made = []

    def make(**limits) -> Port:
        p = Port(ClientLimits(**limits))
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def _raw(addr: str) -> socket.socket:
    host, port_ = addr.split(":")
    return socket.create_connection((host, int(port_)), timeout=10)



def _closed_by_server(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Read until the server closes `sock`; returns what it sent."""
    sock.settimeout(timeout_s)
    got = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data


def _assert_told(sent: bytes, code: str, naming: str) -> None:
    """`sent` is one refusal frame with `code`, naming `naming`, saying nothing sent was read."""
    frame = msgpack.unpackb(sent[4:])
    assert struct.unpack("<I", sent[:4])[0] == len(sent) - 4
    assert frame["id"] == wire.CONNECTION_REFUSAL_ID and frame["error"]["code"] == code, frame
    assert naming in frame["error"]["message"] and "nothing sent on it" in frame["error"]["message"], frame


def _select(addr: str, n: int, width: int, **kw):
    with connect(addr, **kw) as conn:
        cur = conn.cursor()
        cur.execute("SELECT %d, %d" % (n, width))
        return cur.fetchall()


def test_a_result_larger_than_a_frame_comes_in_pages_and_whole(port):
    p = port()
    rows = _select(p.addr, 3000, 4000)          # some 12 MB: three frames' worth
    assert len(rows) == 3000 and rows[-1] == (2999, "x" * 4000)
    assert p.stats()["results_paged"] == 1
    assert _select(p.addr, 2, 3) == [(0, "xxx"), (1, "xxx")]     # small: one frame
    assert p.stats()["results_paged"] == 1


def test_a_result_over_the_limit_is_refused_by_name(port):
    from raftstore.sqlclient import OperationalError

    p = port(result_bytes_max=2 * 1024 * 1024)
    with pytest.raises(OperationalError, match="--max-result-bytes") as info:
        _select(p.addr, 1000, 4000)
    assert info.value.sqlstate == "54000"
    assert len(_select(p.addr, 100, 4000)) == 100     # the node goes on


def test_past_the_connection_limit_the_oldest_idle_connection_goes(port):
    p = port(connections_max=3)
    idle = [_raw(p.addr) for _ in range(3)]
    wait_until(lambda: p.stats()["connections"] == 3, 10, "three connections")
    assert _select(p.addr, 1, 1) == [(0, "x")]           # a fourth gets in
    _assert_told(_closed_by_server(idle[0]), "too_many_connections", "--max-client-connections")   # the oldest idle one went
    assert p.stats()["evicted_idle"] >= 1
    for s in idle:
        s.close()


def test_past_the_connection_limit_with_all_busy_a_newcomer_is_refused_clearly(port):
    p = port(connections_max=2)
    busy = []
    for _ in range(2):
        s = _raw(p.addr)
        s.sendall(wire.encode_frame({"id": 1, "op": "sql", "args": {"sql": "SLEEP 5"}}))
        busy.append(s)
    wait_until(lambda: p.stats()["connections"] == 2, 10, "two busy connections")
    newcomer = _raw(p.addr)
    refusal = msgpack.unpackb(_closed_by_server(newcomer)[4:])
    assert refusal["id"] == wire.CONNECTION_REFUSAL_ID and refusal["error"]["code"] == "too_many_connections"
    assert "--max-client-connections" in refusal["error"]["message"]
    with Client(p.addr, timeout_s=1.0) as client:      # the client says so and retries, then gives up
        with pytest.raises(errors.UnavailableError, match="all busy"):
            client.status()
    for s in busy:
        s.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(port):
    p = port(idle_timeout_s=0.3)
    s = _raw(p.addr)
    _assert_told(_closed_by_server(s), "unavailable", "--client-idle-timeout")
    assert p.stats()["idle_closed"] == 1


def test_a_frame_begun_must_be_finished_within_its_deadline(port):
    p = port(frame_deadline_s=0.5)
    s = _raw(p.addr)
    s.sendall(struct.pack("<I", 4 * 1024 * 1024 - 1) + b"\x00" * 300_000)   # a 4 MiB frame, begun
    wait_until(lambda: p.stats()["memory_used"] >= 300_000, 10, "the partial frame to be charged")
    assert _closed_by_server(s) == b""
    wait_until(lambda: p.stats()["memory_used"] == 0, 10, "its bytes to come back")
    assert p.stats()["frame_deadline_closed"] == 1


def test_a_connection_that_does_not_read_its_answers_is_not_read_and_stays_in_budget(port):
    p = port(memory_bytes=8 * 1024 * 1024, write_timeout_s=2.0)
    flood = _raw(p.addr)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # ~800 KB answers; requests padded to 10 KB, so kernel buffers alone cannot take 2,000 of them
    frame = wire.encode_frame({"id": 7, "op": "sql", "args": {"sql": "SELECT 200, 4000" + " " * 10_000}})
    flood.settimeout(0.2)
    sent = 0
    try:
        for _ in range(2000):
            flood.sendall(frame)
            sent += 1
    except (socket.timeout, BlockingIOError):
        pass                                                  # the node stopped reading it: backpressure
    assert sent < 2000
    assert p.stats()["paused_reads"] >= 1
    # An honest client on the same node is answered meanwhile.
    assert len(_select(p.addr, 10, 10)) == 10
    stats = p.stats()
    assert stats["memory_peak"] <= 2 * 1024 * 1024, stats   # one answer unsent, the requests being answered
    # Unread for write_timeout_s: the connection is closed and every byte comes back.
    wait_until(lambda: p.stats()["write_timeout_closed"] == 1, 20, "the unread answers to time out")
    wait_until(lambda: p.stats()["memory_used"] == 0, 10, "the budget to come back")
    flood.close()


def test_while_the_budget_is_spent_big_frames_wait_and_small_requests_go_on(port):
    p = port(memory_bytes=1024 * 1024, frame_deadline_s=3)
    big = []
    for _ in range(4):   # four 4 MiB frames begun: the first fills the budget, the rest wait unread
        s = _raw(p.addr)
        s.setblocking(False)
        try:
            s.send(struct.pack("<I", 4 * 1024 * 1024 - 1) + b"\x00" * (2 * 1024 * 1024))
        except BlockingIOError:
            pass
        big.append(s)
    wait_until(lambda: p.stats()["memory_used"] >= 1024 * 1024, 10, "the budget to be spent")
    assert _select(p.addr, 5, 5) == [(i, "xxxxx") for i in range(5)]
    stats = p.stats()
    # Each big frame past the budget stopped being read within what was already on its way: the
    # read chunk being decoded, the stream's buffer up to its pause point (twice its limit) and one
    # more chunk the transport delivers as it pauses (how many of the four were mid-read when
    # the budget ran out depends on the machine's load); and each of the five connections is
    # charged what it costs of its own. Without backpressure it would be 4 x 2 MiB.
    overshoot = 2 * ClientServer.READ_CHUNK + 2 * ClientServer.STREAM_LIMIT
    assert stats["memory_peak"] <= 1024 * 1024 + 4 * overshoot + 5 * constants.client_conn_bytes, stats
    # Unread for a second with the budget spent, each is refused (told so) and closed: the bytes come back.
    wait_until(lambda: p.stats()["memory_used"] == 0, 20, "the budget to come back")
    # Each refused, or, once the budget came back, read on and ended by its frame deadline, or, not
    # read at all yet, closed for a newcomer as an unused socket while the budget was spent.
    stats = p.stats()
    assert stats["budget_refused"] >= 1, stats
    assert stats["budget_refused"] + stats["frame_deadline_closed"] + stats["evicted_idle"] == 4, stats
    for s in big:
        s.close()


def test_an_answered_connection_left_idle_is_closed_too(port):
    p = port(idle_timeout_s=0.5)
    s = _raw(p.addr)
    s.sendall(wire.encode_frame({"id": 1, "op": "sql", "args": {"sql": "SELECT 1, 1"}}))
    decoder = wire.FrameDecoder()
    assert wire.read_frame(s, decoder)["ok"]
    _assert_told(_closed_by_server(s), "unavailable", "--client-idle-timeout")
    assert p.stats()["idle_closed"] == 1


def test_requests_past_the_in_flight_cap_wait_in_order_and_all_are_answered(port):
    p = port(in_flight_max=4)
    s = _raw(p.addr)
    s.sendall(b"".join(wire.encode_frame({"id": i, "op": "status", "args": {}}) for i in range(1, 41))
              + wire.encode_frame({"id": 99, "op": "sql", "args": {"sql": "SLEEP 0.5"}}) * 10)
    decoder = wire.FrameDecoder()
    ids = [wire.read_frame(s, decoder)["id"] for _ in range(50)]
    assert sorted(ids) == list(range(1, 41)) + [99] * 10
    assert asyncio.run_coroutine_threadsafe(_call(lambda: p.server.inflight), p.loop).result(10) == 0
    s.close()


def test_a_connections_statements_run_one_at_a_time_in_order(port):
    p = port()
    s = _raw(p.addr)
    began = time.monotonic()
    s.sendall(wire.encode_frame({"id": 1, "op": "sql", "args": {"sql": "SLEEP 0.4"}})
              + wire.encode_frame({"id": 2, "op": "sql", "args": {"sql": "SLEEP 0.4"}}))
    decoder = wire.FrameDecoder()
    assert [wire.read_frame(s, decoder)["id"] for _ in range(2)] == [1, 2]
    assert time.monotonic() - began >= 0.8          # the second began after the first was answered
    s.close()


def test_drain_delivers_a_paged_answer_whole(port):
    p = port()
    s = _raw(p.addr)
    s.sendall(wire.encode_frame({"id": 5, "op": "sql", "args": {"sql": "SELECT 2000, 4000"}}))
    decoder = wire.FrameDecoder()
    first = wire.read_frame(s, decoder)      # the answer is under way: now the node drains
    drained = asyncio.run_coroutine_threadsafe(p.server.drain(10.0), p.loop)
    rows, frame = list(first["result"]["rows"]), first
    while frame.get("more"):
        frame = wire.read_frame(s, decoder)
        rows += frame["result"]["rows"]
    assert len(rows) == 2000
    drained.result(15)
    s.close()


def test_a_newcomer_closes_a_never_answered_socket_before_a_clients_pooled_connection(port):
    p = port(connections_max=3)
    with Client(p.addr) as honest:
        honest.status()                       # answered, then idle: its connection is the oldest
        idle = [_raw(p.addr) for _ in range(2)]
        wait_until(lambda: p.stats()["connections"] == 3, 10, "three connections")
        assert _select(p.addr, 1, 1) == [(0, "x")]
        _assert_told(_closed_by_server(idle[0]), "too_many_connections", "idle")   # the socket that never asked went, not the client's
        before = p.stats()["evicted_idle"]
        honest.status()
        assert p.stats()["evicted_idle"] == before
    for s in idle:
        s.close()


def test_a_request_crossing_an_eviction_on_the_wire_is_answered_not_lost(port):
    """A client's pooled connection sends its next request while a newcomer arrives: whichever
    the node sees first, the request is answered (it was read: the connection is not idle), or
    its connection is closed with a frame saying nothing was read and the client sends it again
    (never "failed after sending the request"). The node's loop is held while both arrive, so
    both wait in the kernel: before FIONREAD was asked, the eviction took the pooled connection."""
    p = port(connections_max=1)
    failures = []
    for attempt in range(20):
        with connect(p.addr, timeout_s=10) as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1, 1")                  # answered: its connection is idle and pooled
            held = threading.Event()
            p.loop.call_soon_threadsafe(lambda: (held.set(), time.sleep(0.3)))
            assert held.wait(10)
            newcomer = _raw(p.addr)                     # waits in the listen backlog
            try:
                cur.execute("SELECT 2, 1")              # its bytes wait in the kernel too
                assert cur.fetchall() == [(0, "x"), (1, "x")]
            except Exception as exc:   # noqa: BLE001 - every failure is the finding
                failures.append(repr(exc))
            newcomer.close()
    assert not failures, failures[:3]
