"""A stranger on the peer port gets nothing executed, and the node keeps serving."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zlib

import msgpack
import pytest

from cluster import Cluster
from raftstore.node.peer import MAGIC, STRANGER_REPLY, _mac


class _MakeFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, ("touch %s" % self.path,))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("sec")))
    try:
        c.start_all()
        c.wait_leader()
        yield c
    finally:
        c.cleanup()


def _send_and_close(addr: str, data: bytes) -> bytes:
    """Send `data`, close our sending side, and return all the node sent back until it closed
    the connection: then it has read and judged every byte (a fixed pause would not say so on a
    busy machine). Fails if the node keeps the connection open."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass                     # the node hung up before reading it all: judged already
        s.settimeout(30.0)
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("%s kept a connection open after %r" % (addr, data[:16]))
        return reply


def _still_serving(cluster, tag: bytes):
    for node in cluster.nodes:
        assert node.proc.poll() is None, cluster.log_tail(node)
    with cluster.client() as c:
        c.put(b"sec-" + tag, b"ok")
        assert c.get(b"sec-" + tag) == b"ok"


def _pickle_payloads(marker):
    obj = pickle.dumps(_MakeFile(marker))
    pysyncobj_frame = zlib.compress(obj)
    return [obj, struct.pack("i", len(pysyncobj_frame)) + pysyncobj_frame]


def test_pickles_built_to_create_a_file_are_never_unpickled(cluster, tmp_path):
    marker = tmp_path / "pwned"
    for i, payload in enumerate(_pickle_payloads(marker)):
        for node in cluster.nodes:
            _send_and_close(node.peer_addr, payload)
            _send_and_close(node.sql_addr, payload)
        assert not marker.exists()
        _still_serving(cluster, b"pickle%d" % i)


def test_random_bytes_huge_length_prefixes_and_frames_before_the_handshake_are_dropped(cluster):
    node = cluster.nodes[0]
    frame_body = msgpack.packb([1, 1, {"type": "append_entries", "term": 99, "commit_index": 10**6,
                                       "prevLogIdx": 1, "prevLogTerm": 0, "entries": []}])
    attacks = [os.urandom(4096), b"\xff\xff\xff\x7f" + b"A" * 1000, struct.pack("<I", len(frame_body)) + frame_body,
               MAGIC + os.urandom(32) + os.urandom(32)]          # right magic, forged proof
    for i, data in enumerate(attacks):
        reply = _send_and_close(node.peer_addr, data)
        # At most the acceptor's challenge, or the fixed word to a client that it has the wrong
        # port, comes back; never a frame of ours.
        assert reply == STRANGER_REPLY or len(reply) <= len(MAGIC) + 64
        _send_and_close(node.sql_addr, data)
        _still_serving(cluster, b"junk%d" % i)
    with cluster.client() as c:
        assert c.status()["leader"] is not None


def _frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def _authenticated(addr: str, secret: bytes) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    nonce_d = os.urandom(32)
    s.sendall(MAGIC + nonce_d)
    got = b""
    while len(got) < 68:
        got += s.recv(68 - len(got))
    nonce_a = got[4:36]
    assert got[36:68] == _mac(secret, b"A", nonce_d, nonce_a)
    s.sendall(_mac(secret, b"D", nonce_d, nonce_a))
    return s


def test_an_authenticated_peer_sending_bad_frames_is_dropped_and_the_node_keeps_serving(cluster):
    secret = open(cluster.secret_path, "rb").read().strip()
    node = cluster.nodes[1]
    bad_frames = [b"\xff\xff\xff\x7f",                                     # oversized
                  struct.pack("<I", 3) + b"\xc1\xc1\xc1",                   # malformed msgpack
                  struct.pack("<I", 2) + msgpack.packb([77]),               # unknown kind
                  _frame(msgpack.packb([1, 1, {}]))]                        # RAFT before HELLO
    for i, data in enumerate(bad_frames):
        s = _authenticated(node.peer_addr, secret)
        s.sendall(data)
        s.settimeout(30.0)           # the event is the node closing the connection
        try:
            while s.recv(65536):     # the node's HELLO, then EOF when it drops us
                pass
        except ConnectionResetError:
            pass                     # dropped with our unread bytes pending: a reset
        except TimeoutError:
            pytest.fail("the node did not drop a peer that sent %r" % data[:16])
        s.close()
        _still_serving(cluster, b"authbad%d" % i)


# --- PROPOSE / PROPOSE_REPLY: a follower's node hands a client's command to the range's leader ---

@pytest.mark.parametrize("frame, problem", [
    ([6, 1, 2, "put", {}], "5 fields"),
    ([6, -1, 2, "put", {}, b"c" * 16], "request id"),
    ([6, True, 2, "put", {}, b"c" * 16], "request id"),
    ([6, 1, 0, "put", {}, b"c" * 16], "range id"),
    ([6, 1, 2, 7, {}, b"c" * 16], "op must be a str"),
    ([6, 1, 2, "put", [], b"c" * 16], "args a map"),
    ([6, 1, 2, "put", {}, b"short"], "command id"),
    ([7, 1, "maybe", None], "outcome must be one of"),
    ([7, 1, "committed"], "3 fields"),
])
def test_malformed_propose_frames_are_named(frame, problem):
    from raftstore.node.peer import _propose_frame_problem
    assert problem in _propose_frame_problem(frame)


def test_well_formed_propose_frames_pass():
    from raftstore import constants
    from raftstore.node.peer import PROPOSE, PROPOSE_REPLY, _propose_frame_problem
    assert _propose_frame_problem([PROPOSE, 1, 2, "put", {"key": b"k", "value": b"v"}, b"c" * constants.command_id_bytes]) is None
    assert _propose_frame_problem([PROPOSE_REPLY, 1, "committed", {"ts": [1, 0]}]) is None
    assert _propose_frame_problem([PROPOSE_REPLY, 1, "rejected", {"code": "c", "message": "m", "details": {}}]) is None
