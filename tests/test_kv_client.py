"""kv.Client's retry promises and the ``raftstore kv`` CLI, against fake servers.

Each fake server is a thread on 127.0.0.1 (port 0) that decodes frames with raftstore.wire,
validates requests with `wire.validate_request` and answers through a scripted handler, so
these tests also pin the client to exactly the request schema the real server checks.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import threading
import time
from typing import Any, Callable

import pytest

from hlc import Timestamp
from raftstore import constants, errors, kv, wire
from raftstore.cli import kv as cli_kv

CLOSE = object()    # handler result: close the connection without answering
SILENT = object()   # handler result: never answer (the client must time out)

TS = [1_700_000_000_000_000_002, 3]


def ok(result: Any) -> dict:
    return {"ok": True, "result": result}


def err(code: str, message: str = "scripted", ambiguous: bool = False) -> dict:
    return {"ok": False, "error": {"code": code, "message": message, "ambiguous": ambiguous}}


class FakeServer:
    """Serves the client protocol on 127.0.0.1 with a scripted `handler(op, args) -> reply`.

    `reply` is a response without its id (see ok/err), CLOSE, SILENT, or raw bytes to send as is.
    Every valid request is recorded in `requests` as (op, args); `connections` counts accepts.
    """

    def __init__(self, handler: Callable[[str, dict], Any]):
        self.handler = handler
        self.requests: list[tuple[str, dict]] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._peers: list[tuple[str, int]] = []  # each accepted connection's client address
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
                self._peers.append(peer)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        decoder = wire.FrameDecoder()
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for obj in decoder.feed(data):
                    request_id, op, args = wire.validate_request(obj)
                    with self._lock:
                        self.requests.append((op, args))
                    reply = self.handler(op, args)
                    if reply is CLOSE:
                        return
                    if reply is SILENT:
                        continue
                    if isinstance(reply, bytes):
                        conn.sendall(reply)
                    else:
                        conn.sendall(wire.encode_frame({"id": request_id, **reply}))
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._accepter.join(timeout=5)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in threads:
            thread.join(timeout=5)

    def drop_connections(self) -> None:
        """Close every open connection from the server side (as an idle timeout or restart
        would). Returns once every client end has received the close (it left ESTABLISHED), so
        the client's next request cannot race the FIN on a busy machine."""
        with self._lock:
            conns, peers = list(self._conns), list(self._peers)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server_port = self._listener.getsockname()[1]
        deadline = time.monotonic() + 30
        while any(_loopback_tcp_state(peer[1], server_port) == _TCP_ESTABLISHED for peer in peers):
            assert time.monotonic() < deadline, "a client never saw its connection closed"
            time.sleep(0.005)

    def command_ids(self) -> list[bytes]:
        return [args["command_id"] for _, args in self.requests if "command_id" in args]


_TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp (include/net/tcp_states.h)


def _loopback_tcp_state(local_port: int, remote_port: int) -> str | None:
    """The TCP state (hex, as /proc/net/tcp shows it) of the socket 127.0.0.1:local_port ->
    127.0.0.1:remote_port, or None if there is none (or no /proc/net/tcp: not Linux)."""
    host = "%08X" % int.from_bytes(socket.inet_aton("127.0.0.1"), sys.byteorder)
    want = (f"{host}:{local_port:04X}", f"{host}:{remote_port:04X}")
    try:
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if (fields[1], fields[2]) == want:
                    return fields[3]
    except OSError:
        pass
    return None


def raised_with_every_attempt_answered(call: Callable[[], Any], expected: type, runs_max: int = 10,
                                       enough: Callable[[], bool] = lambda: True):
    """The `expected` exception `call()` raises at its client's deadline, from a run in which
    the client's last attempt got its answer (and, `enough()`, the run made the attempts the
    test is about).

    Tests of what a client reports once its deadline passes with every attempt answered
    (unavailable, garbage, ...) race that last attempt: on a busy machine the fake server's
    answer can come after the deadline, and the attempt times out instead, which is (rightly)
    another outcome; or the deadline passes before a second attempt is made. A run whose error
    says its last attempt timed out, or that `enough()` finds short, is run again.
    """
    for _ in range(runs_max):
        with pytest.raises(Exception) as caught:
            call()
        if "timed out" not in str(caught.value) and enough():
            assert isinstance(caught.value, expected), repr(caught.value)
            return caught.value
    pytest.fail(f"the last attempt timed out in each of {runs_max} runs: {caught.value}")


@pytest.fixture
def serve(request):
    """serve(handler) -> a running FakeServer, stopped at teardown."""

    def start(handler: Callable[[str, dict], Any]) -> FakeServer:
        server = FakeServer(handler)
        request.addfinalizer(server.stop)
        return server

    return start


@pytest.fixture
def dead_address():
    """An address nothing listens on (connections are refused)."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"127.0.0.1:{port}"


@pytest.fixture
def client_for(request):
    """client_for(addresses, **kw) -> a kv.Client closed at teardown."""

    def make(addresses, **kw) -> kv.Client:
        client = kv.Client(addresses, **kw)
        request.addfinalizer(client.close)
        return client

    return make


class MemoryStore:
    """A correct single-node server: the happy path for every op, with command-id dedup."""

    def __init__(self):
        self.data: dict[bytes, bytes] = {}
        self.applied: dict[bytes, dict] = {}
        self.boundaries: list[bytes] = [b""]  # start keys of the ranges (split: no command id)

    def __call__(self, op: str, args: dict) -> dict:
        if "command_id" in args and args["command_id"] in self.applied:
            return ok(self.applied[args["command_id"]])
        key = args.get("key")
        if op == "put":
            self.data[key] = args["value"]
            result = {"ts": TS}
        elif op == "delete":
            self.data.pop(key, None)
            result = {"ts": TS}
        elif op == "cas":
            swapped = self.data.get(key) == args["expected"]
            if swapped:
                self.data[key] = args["new"]
            result = {"swapped": swapped, "ts": TS}
        elif op == "get":
            return ok({"value": self.data.get(key), "ts": TS})
        elif op == "scan":
            rows = [
                [k, v]
                for k, v in sorted(self.data.items())
                if k >= args["start"] and (args["end"] is None or k < args["end"])
            ]
            return ok({"rows": rows[: args["limit"]], "ts": TS})
        elif op == "status":
            return ok({"node_id": "n1", "region": "eu", "leader": True})
        elif op == "split":
            if key in self.boundaries:
                return ok({"already": True, "range_id": self.boundaries.index(key) + 1})
            self.boundaries.append(key)
            self.boundaries.sort()
            return ok({"left": [b"", key], "right": [key, None]})
        else:
            raise AssertionError(op)
        self.applied[args["command_id"]] = result
        return ok(result)


# --- happy path -------------------------------------------------------------------------------


def test_every_op_round_trips_against_a_correct_server(serve, client_for):
    store = MemoryStore()
    server = serve(store)
    with client_for([server.address]) as client:
        assert client.put(b"a", b"1") == Timestamp(*TS)
        assert client.put(b"b", b"\x00\xff") == Timestamp.from_wire(TS)
        assert client.get(b"a") == b"1"
        assert client.get(b"missing") is None
        assert client.cas(b"a", b"1", b"2") is True
        assert client.cas(b"a", b"1", b"3") is False
        assert client.cas(b"c", None, b"new") is True
        assert client.scan(b"a") == [(b"a", b"2"), (b"b", b"\x00\xff"), (b"c", b"new")]
        assert client.scan(b"a", b"c", limit=1) == [(b"a", b"2")]
        assert client.delete(b"a") == Timestamp(*TS)
        assert client.get(b"a") is None
        assert client.status() == {"node_id": "n1", "region": "eu", "leader": True}
    assert server.connections == 1  # the one connection is reused across calls
    assert ("scan", {"start": b"a", "end": b"c", "limit": 1}) in server.requests
    op, args = server.requests[6]
    assert (op, args["key"], args["expected"], args["new"]) == ("cas", b"c", None, b"new")


def test_each_write_gets_its_own_random_16_byte_command_id(serve, client_for):
    server = serve(MemoryStore())
    client = client_for(server.address)
    client.put(b"k", b"v")
    client.put(b"k", b"v")
    client.delete(b"k")
    client.cas(b"k", None, b"v")
    ids = server.command_ids()
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(len(cid) == constants.command_id_bytes for cid in ids)
    assert all("command_id" not in args for op, args in server.requests if op == "get")


def test_split_sends_only_the_key_and_returns_the_result_map(serve, client_for):
    store = MemoryStore()
    server = serve(store)
    client = client_for(server.address)
    assert client.split(b"m") == {"left": [b"", b"m"], "right": [b"m", None]}
    assert client.split(bytearray(b"m")) == {"already": True, "range_id": 2}
    assert store.boundaries == [b"", b"m"]
    assert server.requests == [("split", {"key": b"m"}), ("split", {"key": b"m"})]


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["unavailable", "draining"])
def test_unavailable_or_draining_moves_to_the_next_address(serve, client_for, code):
    refusing = serve(lambda op, args: err(code, "no leader"))
    store = MemoryStore()
    working = serve(store)
    client = client_for([refusing.address, working.address], timeout_s=5)
    assert client.put(b"k", b"v") == Timestamp(*TS)
    assert store.data == {b"k": b"v"}
    assert len(refusing.requests) == 1 and len(working.requests) == 1
    assert refusing.command_ids() == working.command_ids()


def test_ambiguous_is_retried_with_the_same_command_id(serve, client_for):
    uncertain = serve(lambda op, args: err("ambiguous", "leader lost", ambiguous=True))
    store = MemoryStore()
    working = serve(store)
    client = client_for([uncertain.address, working.address], timeout_s=5)
    assert client.cas(b"k", None, b"v") is True
    assert uncertain.command_ids() == working.command_ids()
    assert len(working.command_ids()) == 1


def test_a_retried_write_that_already_applied_returns_the_first_outcome(serve, client_for):
    """The server applied the cas but the answer was lost; the retry (same id) is deduplicated."""
    store = MemoryStore()
    lost_answers = []

    def apply_then_drop_first_answer(op, args):
        reply = store(op, args)
        if not lost_answers:
            lost_answers.append(reply)
            return CLOSE
        return reply

    server = serve(apply_then_drop_first_answer)
    client = client_for(server.address, timeout_s=5)
    assert client.cas(b"k", None, b"v") is True  # not False, although the key now exists
    ids = server.command_ids()
    assert len(ids) == 2 and ids[0] == ids[1]


def test_connection_broken_after_send_forever_is_an_ambiguous_commit(serve, client_for):
    server = serve(lambda op, args: CLOSE)
    client = client_for(server.address, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(errors.AmbiguousCommitError, match="may or may not have committed") as caught:
        client.put(b"k", b"v")
    assert time.monotonic() - started < 2.0
    assert caught.value.ambiguous is True
    ids = server.command_ids()
    assert len(ids) >= 2 and len(set(ids)) == 1  # retried, always with the same id


def test_silent_server_makes_a_write_ambiguous_within_the_deadline(serve, client_for):
    server = serve(lambda op, args: SILENT)
    client = client_for(server.address, timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(errors.AmbiguousCommitError):
        client.delete(b"k")
    assert time.monotonic() - started < 1.5


def test_silent_server_makes_a_read_fail_plainly_within_the_deadline(serve, client_for):
    server = serve(lambda op, args: SILENT)
    client = client_for(server.address, timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(errors.ConnectionFailedError, match="timed out") as caught:
        client.get(b"k")
    assert time.monotonic() - started < 1.5
    assert caught.value.ambiguous is False


def test_unavailable_until_the_deadline_raises_unavailable_not_ambiguous(serve, client_for):
    server = serve(lambda op, args: err("unavailable", "no quorum in region eu"))
    client = client_for(server.address, timeout_s=0.5)
    run = {}

    def put():
        run.update(started=time.monotonic(), requests_before=len(server.requests))
        try:
            client.put(b"k", b"v")
        finally:
            run.update(elapsed=time.monotonic() - run["started"])

    error = raised_with_every_attempt_answered(put, errors.UnavailableError)
    assert "no quorum in region eu" in str(error)
    assert 0.4 < run["elapsed"] < 1.5
    assert not isinstance(error, errors.AmbiguousCommitError)
    assert error.ambiguous is False
    assert len(server.requests) - run["requests_before"] >= 3  # retried with backoff, not once


def test_one_ambiguous_attempt_keeps_the_write_ambiguous_until_the_deadline(serve, client_for):
    answers = []  # the first answer of each run is "ambiguous", every later one "unavailable"
    served = []

    def handler(op, args):
        served.append(op)
        return answers.pop(0) if answers else err("unavailable", "no leader")
    server = serve(handler)
    client = client_for(server.address, timeout_s=0.5)

    def put():
        answers[:] = [err("ambiguous", "lost leadership", ambiguous=True)]
        served.clear()
        client.put(b"k", b"v")

    # A busy machine can let the 0.5 s deadline pass before a second attempt: no "unavailable"
    # answer to keep ambiguous then, so such a run is run again.
    error = raised_with_every_attempt_answered(put, errors.AmbiguousCommitError, enough=lambda: len(served) >= 2)
    assert "no leader" in str(error)


def test_every_address_refusing_fails_at_once_naming_them_without_a_retry_sleep(
    dead_address, client_for, monkeypatch
):
    other = "127.0.0.1:1"
    client = client_for([dead_address, other], timeout_s=15)
    sleeps: list[float] = []
    monkeypatch.setattr(kv.time, "sleep", sleeps.append)
    started = time.monotonic()
    with pytest.raises(errors.ConnectionFailedError) as caught:
        client.put(b"k", b"v")  # never sent: surely not applied, so not ambiguous
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"{elapsed:.2f} s to say nothing listens (timeout 15 s)"
    assert sleeps == []
    message = str(caught.value)
    assert f"connection refused by {dead_address}, {other}" in message
    assert "check that the nodes are running" in message
    assert caught.value.ambiguous is False


def test_a_refusing_address_is_passed_over_at_once_for_one_that_answers(
    dead_address, serve, client_for, monkeypatch
):
    server = serve(MemoryStore())
    client = client_for([dead_address, server.address], timeout_s=15)
    sleeps: list[float] = []
    monkeypatch.setattr(kv.time, "sleep", sleeps.append)
    client.put(b"k", b"v")
    assert sleeps == [] and client.get(b"k") == b"v"


def test_a_port_that_refuses_clients_is_named_at_once(client_for):
    # What a node's peer port answers a client (raftstore.node.peer.STRANGER_REPLY).
    listener = socket.create_server(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % listener.getsockname()[1]
    refusal = wire.refusal_frame("not_client_port", "this is a raftstore node's peer port")

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(refusal)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass

    threading.Thread(target=answer, daemon=True).start()
    try:
        client = client_for(address, timeout_s=15)
        started = time.monotonic()
        with pytest.raises(errors.ConnectionFailedError) as caught:
            client.put(b"k", b"v")
        assert time.monotonic() - started < 1.0
        assert f"{address} is not a client port: this is a raftstore node's peer port" in str(caught.value)
        assert caught.value.ambiguous is False
    finally:
        listener.close()


@pytest.mark.parametrize(
    "code, cls",
    [("bad_request", errors.BadRequestError), ("too_large", errors.TooLargeError)],
)
def test_bad_request_and_too_large_raise_at_once_without_retry(serve, client_for, code, cls):
    server = serve(lambda op, args: err(code, "key too long"))
    spare = serve(MemoryStore())
    client = client_for([server.address, spare.address], timeout_s=10)
    started = time.monotonic()
    with pytest.raises(cls, match="key too long"):
        client.put(b"k", b"v")
    assert time.monotonic() - started < 1.0
    assert len(server.requests) == 1 and spare.requests == []


def test_a_connection_the_server_closed_while_idle_is_replaced_transparently(serve, client_for):
    store = MemoryStore()
    server = serve(store)
    client = client_for(server.address, timeout_s=5)
    client.put(b"k", b"1")
    server.drop_connections()
    assert client.put(b"k", b"2") == Timestamp(*TS)
    assert store.data == {b"k": b"2"}
    assert server.connections == 2


def test_reads_are_retried_after_a_broken_connection(serve, client_for):
    store = MemoryStore()
    store.data[b"k"] = b"v"
    calls = []

    def flaky(op, args):
        calls.append(op)
        return CLOSE if len(calls) == 1 else store(op, args)

    server = serve(flaky)
    client = client_for(server.address, timeout_s=5)
    assert client.get(b"k") == b"v"
    assert server.connections == 2


def test_a_read_that_must_not_run_twice_is_not_resent_once_it_may_have_reached_a_server(
    serve, client_for
):
    """`request(write=False, resend=False)` (a SQL read): the connection broke after the request
    was sent, so it fails at once - plainly, not ambiguous - and the second address, which would
    answer, is not asked. A failure before the send (nothing listens) still moves on."""
    store = MemoryStore()
    store.data[b"k"] = b"v"
    broken = serve(lambda op, args: CLOSE)
    answering = serve(store)
    client = client_for([broken.address, answering.address], timeout_s=5)
    with pytest.raises(errors.ConnectionFailedError, match="not sent to another node") as caught:
        client.request("get", {"key": b"k"}, lambda r: r["value"], write=False, resend=False)
    assert caught.value.ambiguous is False
    assert len(broken.requests) == 1 and answering.requests == []
    broken.stop()       # now nothing listens there: refused before anything was sent
    assert client.request("get", {"key": b"k"}, lambda r: r["value"], write=False, resend=False) == b"v"
    assert len(answering.requests) == 1


def test_garbage_from_the_server_is_a_broken_connection_not_a_crash(serve, client_for):
    server = serve(lambda op, args: b"\xff\xff\xff\xff garbage")
    client = client_for(server.address, timeout_s=0.3)
    error = raised_with_every_attempt_answered(
        lambda: client.get(b"k"), errors.ConnectionFailedError
    )
    assert "length prefix" in str(error)
    with pytest.raises(errors.AmbiguousCommitError):
        client.put(b"k", b"v")


def test_a_malformed_result_in_an_ok_answer_is_a_protocol_error(serve, client_for):
    server = serve(lambda op, args: ok({"ts": "yesterday"}))
    client = client_for(server.address, timeout_s=5)
    with pytest.raises(errors.ProtocolError, match="malformed") as caught:
        client.put(b"k", b"v")
    assert caught.value.ambiguous is True  # it said ok: it may well have committed
    with pytest.raises(errors.ProtocolError) as caught:
        client.get(b"k")
    assert caught.value.ambiguous is False


def test_a_request_over_the_frame_limit_is_too_large_before_sending(serve, client_for):
    server = serve(MemoryStore())
    client = client_for(server.address)
    with pytest.raises(errors.TooLargeError, match="exceeds the limit"):
        client.split(b"k" * constants.client_frame_bytes_max)
    assert server.requests == []


def test_a_value_larger_than_one_command_is_refused_naming_the_limit(serve, client_for):
    server = serve(MemoryStore())
    client = client_for(server.address)
    with pytest.raises(errors.TooLargeError, match="one command of 512 KiB \\(524288 bytes"):
        client.put(b"k", b"v" * constants.command_bytes_max)
    with pytest.raises(errors.TooLargeError, match="524288"):
        client.cas(b"k", None, b"v" * constants.command_bytes_max)
    assert server.requests == []


@pytest.mark.parametrize("code", ["unavailable", "draining"])
def test_split_moves_to_the_next_address_like_a_write(serve, client_for, code):
    refusing = serve(lambda op, args: err(code, "no leader"))
    store = MemoryStore()
    working = serve(store)
    client = client_for([refusing.address, working.address], timeout_s=5)
    assert "left" in client.split(b"m")
    assert refusing.requests == working.requests == [("split", {"key": b"m"})]


def test_an_ambiguous_split_is_retried_and_settled_by_the_next_answer(serve, client_for):
    store = MemoryStore()
    store.boundaries.append(b"m")  # the first attempt did split before its answer was lost
    uncertain = serve(lambda op, args: err("ambiguous", "leader lost", ambiguous=True))
    working = serve(store)
    client = client_for([uncertain.address, working.address], timeout_s=5)
    assert client.split(b"m") == {"already": True, "range_id": 2}


def test_a_split_whose_connection_breaks_after_sending_is_ambiguous(serve, client_for):
    server = serve(lambda op, args: CLOSE)
    client = client_for(server.address, timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(errors.AmbiguousCommitError, match="splitting again at the same key"):
        client.split(b"m")
    assert time.monotonic() - started < 1.5
    assert len(server.requests) >= 2
    assert all(request == ("split", {"key": b"m"}) for request in server.requests)


def test_a_split_refused_until_the_deadline_is_unavailable_not_ambiguous(serve, client_for):
    server = serve(lambda op, args: err("unavailable", "no leader for range 2"))
    client = client_for(server.address, timeout_s=0.3)
    error = raised_with_every_attempt_answered(lambda: client.split(b"m"), errors.UnavailableError)
    assert "no leader for range 2" in str(error)
    assert error.ambiguous is False


def test_a_split_answered_ok_with_a_non_map_is_an_ambiguous_protocol_error(serve, client_for):
    server = serve(lambda op, args: ok([1, 2]))
    client = client_for(server.address, timeout_s=5)
    with pytest.raises(errors.ProtocolError, match="split result must be a map") as caught:
        client.split(b"m")
    assert caught.value.ambiguous is True


def test_backoff_grows_from_50ms_to_a_1s_cap_with_jitter():
    rng = random.Random(1)
    for failures in range(1, 40):
        cap = min(
            constants.client_backoff_s_max, constants.client_backoff_s_min * 2 ** (failures - 1)
        )
        assert cap / 2 <= kv.backoff_delay_s(failures, rng) <= cap
    assert constants.client_backoff_s_min == 0.05 and constants.client_backoff_s_max == 1.0
    samples = {kv.backoff_delay_s(3, rng) for _ in range(20)}
    assert len(samples) > 1  # jittered


# --- arguments --------------------------------------------------------------------------------


def test_arguments_are_type_checked_with_clear_messages(client_for):
    client = client_for("127.0.0.1:1")
    with pytest.raises(TypeError, match=r"put: key must be bytes, got str; encode text first"):
        client.put("k", b"v")
    with pytest.raises(TypeError, match="put: value must be bytes, got int"):
        client.put(b"k", 1)
    with pytest.raises(TypeError, match="cas: expected must be bytes, got str"):
        client.cas(b"k", "old", b"new")
    with pytest.raises(TypeError, match="scan: limit must be an int, got bool"):
        client.scan(b"", limit=True)
    with pytest.raises(ValueError, match="scan: limit must be in"):
        client.scan(b"", limit=0)
    with pytest.raises(TypeError, match="scan: end must be bytes"):
        client.scan(b"", "z")
    with pytest.raises(TypeError, match=r"split: key must be bytes, got str; encode text first"):
        client.split("m")
    with pytest.raises(TypeError, match="split: key must be bytes, got NoneType"):
        client.split(None)


@pytest.mark.parametrize(
    "addresses, exc, message",
    [
        (123, TypeError, "addresses must be"),
        ([], ValueError, "addresses is empty"),
        ("localhost", ValueError, "expected HOST:PORT"),
        ("localhost:0", ValueError, "port 0 is outside 1-65535"),
        ("localhost:65536", ValueError, "outside 1-65535"),
        ("localhost:http", ValueError, "port must be a number"),
        (":80", ValueError, "expected HOST:PORT"),
        (["a:1", 2], TypeError, "address must be a str"),
    ],
)
def test_bad_addresses_are_refused_when_the_client_is_made(addresses, exc, message):
    with pytest.raises(exc, match=message):
        kv.Client(addresses)


def test_addresses_accept_a_single_string_a_comma_list_and_ipv6():
    assert kv.Client("h:1").addresses == ["h:1"]
    assert kv.Client("a:1, b:2").addresses == ["a:1", "b:2"]
    assert kv.Client(["[::1]:7000"]).addresses == ["[::1]:7000"]
    with pytest.raises(ValueError, match="positive"):
        kv.Client("h:1", timeout_s=0)


def test_a_closed_client_refuses_calls(serve):
    server = serve(MemoryStore())
    with kv.Client(server.address) as client:
        client.put(b"k", b"v")
    with pytest.raises(RuntimeError, match="closed"):
        client.get(b"k")
    client.close()  # idempotent


# --- CLI --------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftstore")
    cli_kv.add_kv_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run_cli(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    "url, message",
    [
        ("localhost", "expected HOST:PORT"),
        ("localhost:0", "outside 1-65535"),
        ("localhost:99999", "outside 1-65535"),
        ("h:1,h", "expected HOST:PORT"),
        ("h:x", "port must be a number"),
        ("http://127.0.0.1:26267", "a http:// URL is not an address"),
        ("postgresql://127.0.0.1:26257", "give raftstore://HOST:PORT[,HOST:PORT...]"),
        ("127.0.0.1:1,http://127.0.0.1:2", "a http:// URL is not an address"),
    ],
)
def test_cli_rejects_a_bad_url_with_an_argparse_error(capsys, url, message):
    with pytest.raises(SystemExit) as caught:
        make_parser().parse_args(["kv", "get", "--url", url, "k"])
    assert caught.value.code == 2
    stderr = capsys.readouterr().err
    assert "--url" in stderr and message in stderr


@pytest.mark.parametrize("command", [["kv", "get"], ["status"], ["sql"]])
def test_every_client_command_takes_a_raftstore_url_and_bare_addresses(command):
    tail = ["k"] if command[0] == "kv" else []
    for url in ["raftstore://127.0.0.1:1,h:2", "RAFTSTORE://127.0.0.1:1,h:2/", "127.0.0.1:1, h:2"]:
        from raftstore.cli.main import build_parser

        args = build_parser().parse_args(command + ["--url", url, "--timeout", "2"] + tail)
        assert args.url == ["127.0.0.1:1", "h:2"] and args.timeout == 2.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["kv", "get", "k"], "the following arguments are required: --url"),
        (["kv", "cas", "--url", "h:1", "k", "e", "n", "--absent"], "--absent means KEY must have no value"),
        (["kv", "cas", "--url", "h:1", "k", "n"], "cas needs KEY EXPECTED NEW"),
        (["kv", "get", "--url", "h:1", "--hex", "zz"], "not valid hex"),
        (["kv", "scan", "--url", "h:1", "a", "--limit", "0"], "--limit must be an integer"),
        (["kv"], "required"),
    ],
)
def test_cli_usage_errors_exit_2_before_touching_the_network(capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        run_cli(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_prints_each_result_in_its_documented_form(serve, capsys):
    store = MemoryStore()
    url = serve(store).address

    assert run_cli(["kv", "put", "--url", url, "a", "1"]) == 0
    assert capsys.readouterr().out == f"{Timestamp(*TS)}\n"
    assert capsys.readouterr().out == ""
    assert str(Timestamp(*TS)) == "1700000000.000000002,3"

    assert run_cli(["kv", "get", "--url", url, "a"]) == 0
    assert capsys.readouterr().out == "1\n"
    assert run_cli(["kv", "get", "--url", url, "nope"]) == cli_kv.EXIT_NO == 1
    assert capsys.readouterr() == ("", "(not found)\n")   # stdout holds values only

    assert run_cli(["kv", "cas", "--url", url, "a", "1", "2"]) == 0
    assert capsys.readouterr().out == "swapped\n"
    assert run_cli(["kv", "cas", "--url", url, "a", "1", "3"]) == 1
    assert capsys.readouterr().out == "not swapped\n"
    assert run_cli(["kv", "cas", "--url", url, "--absent", "b", "x"]) == 0
    assert capsys.readouterr().out == "swapped\n"
    assert store.data[b"b"] == b"x"

    assert run_cli(["kv", "put", "--url", url, "--hex", "00ff", "c3a9"]) == 0
    capsys.readouterr()
    assert store.data[b"\x00\xff"] == "é".encode()
    assert run_cli(["kv", "get", "--url", url, "--hex", "00ff"]) == 0
    assert capsys.readouterr().out == "c3a9\n"

    assert run_cli(["kv", "scan", "--url", url, "a"]) == 0
    assert capsys.readouterr().out == "a\t2\nb\tx\n"
    assert run_cli(["kv", "scan", "--url", url, "a", "b", "--limit", "5"]) == 0
    assert capsys.readouterr().out == "a\t2\n"
    assert run_cli(["kv", "scan", "--url", url, "--hex", "", "--limit", "1"]) == 0
    assert capsys.readouterr().out == "00ff\tc3a9\n"

    assert run_cli(["kv", "delete", "--url", url, "a"]) == 0
    assert capsys.readouterr().out == f"{Timestamp(*TS)}\n"
    assert b"a" not in store.data


def test_cli_split_says_whether_it_made_a_new_boundary(serve, capsys):
    store = MemoryStore()
    server = serve(store)
    assert run_cli(["kv", "split", "--url", server.address, "m"]) == 0
    assert capsys.readouterr().out == "split at m\n"
    assert run_cli(["kv", "split", "--url", server.address, "m"]) == 0
    assert capsys.readouterr().out == "already a range boundary\n"
    assert run_cli(["kv", "split", "--url", server.address, "--hex", "00ff"]) == 0
    assert capsys.readouterr().out == "split at 00ff\n"
    assert store.boundaries == [b"", b"\x00\xff", b"m"]


def test_cli_split_errors_are_one_line_and_exit_4_when_ambiguous(serve, capsys):
    url = serve(lambda op, args: err("ambiguous", "leader changed", ambiguous=True)).address
    assert run_cli(["kv", "split", "--url", url, "--timeout", "0.3", "m"]) == cli_kv.EXIT_AMBIGUOUS
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert stderr.startswith("error: split may or may not have committed")


def test_cli_prints_undecodable_bytes_as_escapes(serve, capsys):
    store = MemoryStore()
    store.data[b"k"] = b"\xff\x00ok"
    url = serve(store).address
    assert run_cli(["kv", "get", "--url", url, "k"]) == 0
    assert capsys.readouterr().out == "\\xff\x00ok\n"


def test_cli_turns_operating_errors_into_one_line_and_exit_5(serve, capsys):
    url = serve(lambda op, args: err("bad_request", "key is reserved\nsecond line")).address
    assert run_cli(["kv", "put", "--url", url, "k", "v"]) == cli_kv.EXIT_ERROR == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: bad_request: key is reserved second line")


def test_cli_says_an_ambiguous_write_may_have_committed(serve, capsys):
    url = serve(lambda op, args: err("ambiguous", "leader changed", ambiguous=True)).address
    assert run_cli(["kv", "put", "--url", url, "--timeout", "0.3", "k", "v"]) == 4
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert stderr.count("read the key to find out") == 1, stderr   # the hint said once
    assert stderr.startswith("error: put may or may not have committed")


def test_cli_reports_unreachable_nodes_with_the_unavailable_exit_code(dead_address, capsys):
    assert run_cli(["kv", "get", "--url", dead_address, "k"]) == cli_kv.EXIT_UNAVAILABLE == 3
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"error: get: connection refused by {dead_address}")
    assert stderr.count("\n") == 1
