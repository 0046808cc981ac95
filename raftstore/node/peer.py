"""One peer port per node: every Raft group of the node over one connection per node pair.

pysyncobj's own TCP transport unpickles whatever reaches its port (remote code execution) and
opens a socket per group per peer. This module replaces it with:

* a challenge-response handshake on the cluster secret before anything else is read: fixed-size
  byte strings compared with `hmac.compare_digest`, nothing decoded, so a stranger (no secret)
  gets nothing parsed beyond 36 bytes and is dropped;
* then length-prefixed msgpack frames, bounded in size (`peer_frame_bytes_max`), each a list
  `[kind, ...]`: HELLO (who I am), RAFT (a group's message, tagged with the group id), REJECT
  (why I refuse you), HEARTBEAT (I am alive, my HLC reads this, and I lead these groups at
  these terms -- their followers wait for me, as idle leaders send no heartbeats of their own --
  and I dispute these of your claims; the receiver's clock moves past mine), CHECKSUM_REQUEST (your checksum
  of range r at index i, please), CHECKSUM_REPLY (mine: the checksum, or why I have none; see
  raftstore.kvserver.consistency), PROPOSE (a command for a range you lead, a client's or a node's own: only a
  range's leader proposes), PROPOSE_REPLY (its outcome) and CLOSED (the side transport of closed
  timestamps: raftstore.kvserver.closedts). Unknown, malformed or oversized frames are logged and the connection is
  dropped; the node keeps serving. A peer that redials and sends the same bad frame again is
  logged once per log_repeat_interval_s, with a count (raftstore.loglimit). Nothing is ever
  unpickled here;
* group commit: frames queued by groups are released to the sockets only by `flush()`, which the
  node loop calls after syncing every dirty journal, so no reply leaves before the write it
  acknowledges is on disk, and one loop iteration's replies share their syncs.

Everything runs on the node loop's thread (no locks): `poll()` reads and dispatches, `send()`
queues, `flush()` releases.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import msgpack

from raftstore import constants
from raftstore.kvserver.closedts import frame_problem as closed_frame_problem
from raftstore.kvserver.consistency import CHECKSUM_BYTES
from raftstore.loglimit import LogLimiter
from raftstore.wire import FrameDecoder, FrameError, refusal_frame

logger = logging.getLogger(__name__)

MAGIC = b"RSP1"
# What a stranger (a client pointed at this port, say) gets back before the connection closes:
# a client-protocol error answering no request, so `raftstore.kv.Client` says so at once.
# Fixed bytes: nothing the stranger sent is parsed to build it.
STRANGER_REPLY = refusal_frame(
    "not_client_port",
    "this is a raftstore node's peer port, for node-to-node traffic; give the node's client "
    "address (its --sql-addr) instead",
)
_NONCE = 32
_MAC = 32
HELLO, RAFT, REJECT, HEARTBEAT, CHECKSUM_REQUEST, CHECKSUM_REPLY, PROPOSE, PROPOSE_REPLY, CLOSED = 0, 1, 2, 3, 4, 5, 6, 7, 8
OUTCOMES = frozenset({"committed", "rejected", "not_committed", "ambiguous"})   # raft.commands.Outcome values


def _mac(secret: bytes, role: bytes, nonce_d: bytes, nonce_a: bytes) -> bytes:
    return hmac.new(secret, role + nonce_d + nonce_a, hashlib.sha256).digest()


def encode_peer_frame(obj) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > constants.peer_frame_bytes_max:
        raise ValueError("peer frame of %d bytes exceeds peer_frame_bytes_max" % len(body))
    return len(body).to_bytes(4, "little") + body


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%r is not HOST:PORT" % text)
    return host, int(port)


def _checksum_frame_problem(frame: list) -> str | None:
    """What is wrong with a CHECKSUM_REQUEST `[4, range_id, index]` or CHECKSUM_REPLY
    `[5, range_id, index, checksum (32 bytes) | nil, error (str) | nil]`, or None."""
    size = 3 if frame[0] == CHECKSUM_REQUEST else 5
    if len(frame) != size:
        return "%d fields, expected %d" % (len(frame), size)
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 for x in frame[1:3]):
        return "range id and index must be non-negative integers"
    if size == 5:
        checksum, error = frame[3], frame[4]
        if not (checksum is None or (isinstance(checksum, bytes) and len(checksum) == CHECKSUM_BYTES)):
            return "checksum must be %d bytes or nil" % CHECKSUM_BYTES
        if not (error is None or (isinstance(error, str) and len(error) <= constants.consistency_error_chars_max)):
            return "error must be a str of at most %d characters or nil" % constants.consistency_error_chars_max
        if (checksum is None) == (error is None):
            return "exactly one of checksum and error must be given"
    return None


def _int_list(x) -> bool:
    return isinstance(x, list) and all(type(v) is int and 0 <= v < 2**63 for v in x)


def _heartbeat_frame_problem(frame: list) -> str | None:
    """What is wrong with a HEARTBEAT `[3, hlc stamp, clock probe, claims, disputes]` (the last
    two optional, nil or lists of non-negative integers; claims in [range id, term] pairs), or
    None. The stamp and probe are checked where they are used."""
    if len(frame) > 5:
        return "%d fields, expected at most 5" % len(frame)
    claims = frame[3] if len(frame) > 3 else None
    disputes = frame[4] if len(frame) > 4 else None
    if claims is not None and not (_int_list(claims) and len(claims) % 2 == 0):
        return "claims must be a list of [range id, term] integer pairs or nil"
    if disputes is not None and not _int_list(disputes):
        return "disputes must be a list of range ids or nil"
    return None


def _propose_frame_problem(frame: list) -> str | None:
    """What is wrong with a PROPOSE `[6, request_id, range_id, op, args (map), command_id]` or a
    PROPOSE_REPLY `[7, request_id, outcome, result]`, or None."""
    size = 6 if frame[0] == PROPOSE else 4
    if len(frame) != size:
        return "%d fields, expected %d" % (len(frame), size)
    if not isinstance(frame[1], int) or isinstance(frame[1], bool) or not 0 <= frame[1] < 2**63:
        return "request id must be a non-negative integer"
    if size == 6:
        _, _, range_id, op, args, command_id = frame
        if not isinstance(range_id, int) or isinstance(range_id, bool) or not 0 < range_id < 2**63:
            return "range id must be a positive integer"
        if not isinstance(op, str) or not isinstance(args, dict):
            return "op must be a str and args a map"
        if not isinstance(command_id, bytes) or len(command_id) != constants.command_id_bytes:
            return "command id must be %d bytes" % constants.command_id_bytes
    elif frame[2] not in OUTCOMES:
        return "outcome must be one of %s" % ", ".join(sorted(OUTCOMES))
    return None


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    addr: str                   # the address we dialed, or the remote address
    dialed: bool
    state: str                  # connecting, hs_accept (dialer waits), hs_dial, hs_mac (acceptor waits), open,
                                # refused (a stranger: told so, closing once it hangs up or times out)
    deadline: float
    rbuf: bytearray = field(default_factory=bytearray)
    wbuf: bytearray = field(default_factory=bytearray)
    outq: list = field(default_factory=list)    # (release time, frame bytes): not yet written
    outq_bytes: int = 0
    outq_synced: int = 0    # the first this many of outq were queued before the last flush (so synced)
    nonce_d: bytes = b""
    nonce_a: bytes = b""
    decoder: FrameDecoder | None = None
    peer_id: int | None = None
    hello: dict | None = None


class PeerNetwork:
    """Authenticated, multiplexed links to the other nodes.

    Callbacks (all on the loop thread): `on_hello(conn_peer_hello) -> reject reason | None`,
    `on_raft(peer_id, group_id, message)`, `on_peer_up(peer_id)`, `on_peer_down(peer_id)`,
    `on_reject(reason)` when a peer refuses us, `on_checksum_request(peer_id, range_id, index)`,
    `on_checksum_reply(peer_id, range_id, index, checksum | None, error | None)`,
    `on_propose(peer_id, request_id, range_id, op, args, command_id)` (a follower hands the
    leader a client's command), `on_propose_reply(peer_id, request_id, outcome, result)` and
    `on_closed(peer_id, seq, full, ts, updates, removed[, extra])` (a CLOSED frame).
    """

    def __init__(self, *, listen_sock: socket.socket, secret: bytes, hello: Callable[[], dict],
                 on_hello: Callable[[dict], str | None], on_raft: Callable[[int, int, dict], None],
                 on_peer_up: Callable[[int], None], on_peer_down: Callable[[int], None],
                 on_reject: Callable[[str], None], node_id: int,
                 on_heartbeat: Callable[..., None] = lambda peer_id, ts, probe, claims, disputes: None,
                 delay_s: Callable[[int], float] = lambda peer_id: 0.0,
                 on_checksum_request: Callable[[int, int, int], None] = lambda peer_id, range_id, index: None,
                 on_checksum_reply: Callable[[int, int, int, bytes | None, str | None], None]
                 = lambda peer_id, range_id, index, checksum, error: None,
                 on_propose: Callable[[int, int, int, str, dict, bytes], None]
                 = lambda peer_id, request_id, range_id, op, args, command_id: None,
                 on_propose_reply: Callable[[int, int, str, object], None]
                 = lambda peer_id, request_id, outcome, result: None,
                 on_closed: Callable[..., None] = lambda peer_id, seq, full, ts, updates, removed: None) -> None:
        self.node_id = node_id
        self.on_closed = on_closed
        self.on_propose, self.on_propose_reply = on_propose, on_propose_reply
        self.on_checksum_request, self.on_checksum_reply = on_checksum_request, on_checksum_reply
        self.secret = secret
        self._hello = hello
        self.on_hello, self.on_raft = on_hello, on_raft
        self.on_peer_up, self.on_peer_down, self.on_reject = on_peer_up, on_peer_down, on_reject
        self.on_heartbeat = on_heartbeat
        self.delay_s = delay_s          # WAN emulation: one-way delay to each peer (raftstore.node.wan)
        # How much earlier than wan_release_slack_s delayed frames are released so that, on
        # average, they leave when due: learnt from their lateness (`_learn_lateness`).
        self.release_lead_s = 0.0
        self.release_late_s = 0.0       # the last released frame's lateness (negative: early), for status
        self.sel = selectors.DefaultSelector()
        self.last_wait_s = 0.0   # how long the last poll waited in select (node loop idle time)
        # Held by the node loop except while it waits in select (Node._loop_lock): another
        # thread that takes it meanwhile may run the loop's work itself (Node._call_soon).
        self.idle_lock: threading.Lock | None = None
        self.listen_sock = listen_sock
        listen_sock.setblocking(False)
        self.sel.register(listen_sock, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self._wake_pending = False
        self.conns: set[_Conn] = set()
        self.peers: dict[int, _Conn] = {}        # open, hello'ed, deduplicated
        # Tests only (RAFTSTORE_TEST_FAULTS_FILE, Node._check_faults): peers whose frames are lost
        # both ways while the links stay up - a partition the nodes notice only by silence.
        self.cut: frozenset[int] = frozenset()
        self.dialing: dict[str, _Conn] = {}      # by address
        self.last_dial: dict[str, float] = {}
        self.dropped_frames = 0
        self.rejected_handshakes = 0
        self.log_limit = LogLimiter()   # drops and frame errors: one line per peer and condition per interval
        self._stranger_log = LogLimiter(constants.peer_stranger_log_interval_s, constants.peer_stranger_hosts_max)

    # --- wake-up from other threads ---------------------------------------------------------
    def wake(self) -> None:
        """Make the loop's poll return (from any thread). One byte per wake-up, not per call:
        while a byte is pending (`_wake_pending`, cleared by the loop before it reads the calls
        handed in), another wake is a no-op - a system call saved per request under load."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self.wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    # --- dialing ---------------------------------------------------------------------------
    def dial(self, addr: str) -> None:
        """Connect to addr unless a connection to it is already being made (rate-limited)."""
        now = time.monotonic()
        if addr in self.dialing or now - self.last_dial.get(addr, 0.0) < constants.peer_redial_interval_s:
            return
        self.last_dial[addr] = now
        try:
            host, port = parse_addr(addr)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex((host, port))
        except OSError as exc:
            logger.debug("dial %s: %s", addr, exc)
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return
        conn = _Conn(sock, addr, True, "connecting", now + constants.peer_connect_timeout_s)
        self.conns.add(conn)
        self.dialing[addr] = conn
        self.sel.register(sock, selectors.EVENT_WRITE, conn)

    # --- sending ---------------------------------------------------------------------------
    def send(self, peer_id: int, frame: list) -> bool:
        """Queue a frame; it leaves at the next flush(). False if the peer is not connected."""
        conn = self.peers.get(peer_id)
        if conn is None:
            return False
        if peer_id in self.cut:
            return True   # a test's partition: the frame is lost on the way
        data = encode_peer_frame(frame)
        delay = self.delay_s(peer_id)
        conn.outq.append((time.monotonic() + delay if delay > 0 else 0.0, data))
        conn.outq_bytes += len(data)
        if conn.outq_bytes + len(conn.wbuf) > constants.peer_send_buffer_bytes_max:
            self._drop(conn, "send buffer over %d bytes (peer too slow)", constants.peer_send_buffer_bytes_max)
            return False
        return True

    def flush(self) -> None:
        """Release queued frames to the sockets. Call only after syncing the journals."""
        self._release(synced_only=False)

    def release_synced(self) -> None:
        """Release the delayed frames now due that were queued before the last `flush` (so
        before the journal sync that preceded it), without waiting for a sync: the node loop
        calls it as soon as its poll returns, so under WAN emulation a frame leaves when it is
        due, not once the loop has done the rest of an iteration's work. Frames queued since
        the last flush (a follower's answer to an append not yet synced) stay for `flush`."""
        self._release(synced_only=True)

    def release_ahead_s(self) -> float:
        """How long before a delayed frame is due the node loop wakes to release it."""
        return constants.wan_release_slack_s + self.release_lead_s

    def _learn_lateness(self, late_s: float) -> None:
        """Move the release lead a twentieth of the way to cancel a released frame's lateness
        (each sample clipped to 1 ms, so one stalled iteration does not swing it): the frames'
        mean lateness settles at zero, whatever the machine's timer wake-up costs."""
        self.release_late_s = late_s
        step = max(-0.001, min(0.001, late_s)) / 20
        self.release_lead_s = max(0.0, min(constants.wan_release_lead_max_s, self.release_lead_s + step))

    def _release(self, synced_only: bool) -> None:
        now = time.monotonic()
        due = now + self.release_ahead_s()
        for conn in list(self.peers.values()):
            if conn.outq:
                limit = conn.outq_synced if synced_only else len(conn.outq)
                n = 0
                while n < limit and conn.outq[n][0] <= due:   # FIFO: delays are per peer
                    n += 1
                if n and conn.outq[0][0] > 0.0:
                    self._learn_lateness(now - conn.outq[0][0])   # the earliest: the one the loop woke for
                if n:
                    released = [data for _, data in conn.outq[:n]]
                    del conn.outq[:n]
                    conn.wbuf += b"".join(released)
                    conn.outq_bytes -= sum(len(d) for d in released)
                conn.outq_synced = len(conn.outq) if not synced_only else conn.outq_synced - n
            if conn.wbuf:
                self._write(conn)

    def next_release(self) -> float | None:
        """When the earliest delayed frame is due (monotonic time), or None."""
        due = [conn.outq[0][0] for conn in self.peers.values() if conn.outq]
        return min(due) if due else None

    # --- the loop's read side -----------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        lock = self.idle_lock
        if lock is not None:
            lock.release()
        try:
            waited_from = time.monotonic()
            events = self.sel.select(timeout)
            self.last_wait_s = time.monotonic() - waited_from   # the node loop's idle time
        finally:
            if lock is not None:
                lock.acquire()   # after a statement's thread that ran loop work meanwhile: busy time
        for key, mask in events:
            if key.data is None:
                self._accept()
            elif key.data == "wake":
                try:
                    while self.wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                # After the byte is read and before the node loop takes the calls handed in: a
                # call appended after this line wakes again; one before it is taken this time.
                self._wake_pending = False
            else:
                conn = key.data
                if conn not in self.conns:
                    continue
                if mask & selectors.EVENT_WRITE:
                    if conn.state == "connecting":
                        self._connected(conn)
                    elif conn.wbuf:
                        self._write(conn)
                if mask & selectors.EVENT_READ and conn in self.conns:
                    self._read(conn)
        now = time.monotonic()
        for conn in list(self.conns):
            if conn.state != "open" and now > conn.deadline:
                why = {"connecting": "connect timed out", "refused": "stranger did not hang up"}
                self._drop(conn, why.get(conn.state, "handshake timed out"),
                           quiet=conn.state in ("connecting", "refused"))

    def _accept(self) -> None:
        try:
            sock, raddr = self.listen_sock.accept()
        except (BlockingIOError, OSError):
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, "%s:%d" % raddr[:2], False, "hs_dial", time.monotonic() + constants.peer_handshake_timeout_s)
        self.conns.add(conn)
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _connected(self, conn: _Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._drop(conn, os.strerror(err), quiet=True)
            return
        conn.state = "hs_accept"
        conn.deadline = time.monotonic() + constants.peer_handshake_timeout_s
        conn.nonce_d = os.urandom(_NONCE)
        conn.wbuf += MAGIC + conn.nonce_d
        self._interest(conn)
        self._write(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(conn, str(exc), quiet=True)
            return
        if not data:
            self._drop(conn, "closed by peer", quiet=True)
            return
        if conn.state == "open":
            self._frames(conn, data)
            return
        if conn.state == "refused":
            return                           # read and dropped until the stranger hangs up
        conn.rbuf += data
        self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        if conn.state == "hs_dial":          # acceptor: expect MAGIC + nonce_d
            need = len(MAGIC) + _NONCE
            seen = min(len(conn.rbuf), len(MAGIC))
            if conn.rbuf[:seen] != MAGIC[:seen]:   # judged on the first bytes: a short request too
                self._refuse_stranger(conn)
                return
            if len(conn.rbuf) < need:
                return
            conn.nonce_d = bytes(conn.rbuf[len(MAGIC):need])
            del conn.rbuf[:need]
            conn.nonce_a = os.urandom(_NONCE)
            conn.wbuf += MAGIC + conn.nonce_a + _mac(self.secret, b"A", conn.nonce_d, conn.nonce_a)
            conn.state = "hs_mac"
            self._write(conn)
            self._handshake(conn)
        elif conn.state == "hs_mac":         # acceptor: expect the dialer's proof
            if len(conn.rbuf) < _MAC:
                return
            proof = bytes(conn.rbuf[:_MAC])
            del conn.rbuf[:_MAC]
            if not hmac.compare_digest(proof, _mac(self.secret, b"D", conn.nonce_d, conn.nonce_a)):
                self.rejected_handshakes += 1
                self._drop(conn, "peer failed the cluster-secret challenge")
                return
            self._open(conn)
        elif conn.state == "hs_accept":      # dialer: expect MAGIC + nonce_a + acceptor's proof
            need = len(MAGIC) + _NONCE + _MAC
            if len(conn.rbuf) < need:
                return
            if conn.rbuf[:len(MAGIC)] != MAGIC:
                self._drop(conn, "not a raftstore peer (bad handshake magic)")
                return
            conn.nonce_a = bytes(conn.rbuf[len(MAGIC):len(MAGIC) + _NONCE])
            proof = bytes(conn.rbuf[len(MAGIC) + _NONCE:need])
            del conn.rbuf[:need]
            if not hmac.compare_digest(proof, _mac(self.secret, b"A", conn.nonce_d, conn.nonce_a)):
                self._drop(conn, "peer at %s does not hold our cluster secret", conn.addr)
                return
            conn.wbuf += _mac(self.secret, b"D", conn.nonce_d, conn.nonce_a)
            self._open(conn)

    def _refuse_stranger(self, conn: _Conn) -> None:
        """Something that is not a raftstore peer (most likely a client given this port) opened
        `conn`: tell it so in the client protocol, stop sending, and close once it hangs up.
        Logged once per remote host per peer_stranger_log_interval_s, not once per connection:
        a client retrying in a loop must not flood the log."""
        self.rejected_handshakes += 1
        self._log_stranger(conn.addr.rpartition(":")[0])
        conn.state = "refused"
        conn.rbuf.clear()
        conn.deadline = time.monotonic() + constants.peer_handshake_timeout_s
        conn.wbuf += STRANGER_REPLY
        self._write(conn)
        if conn in self.conns and not conn.wbuf:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _log_stranger(self, host: str) -> None:
        self._stranger_log.log(logger, logging.WARNING, host,
                               "not a raftstore peer (bad handshake magic) from %s: a client given the peer port? "
                               "told it to use the client port (--sql-addr); logged at most once per %.0f s per host",
                               host, constants.peer_stranger_log_interval_s)

    def _open(self, conn: _Conn) -> None:
        conn.state = "open"
        conn.decoder = FrameDecoder(constants.peer_frame_bytes_max)
        conn.wbuf += encode_peer_frame([HELLO, self._hello()])
        self._write(conn)
        if conn.rbuf:
            rest = bytes(conn.rbuf)
            conn.rbuf.clear()
            self._frames(conn, rest)

    def _frames(self, conn: _Conn, data: bytes) -> None:
        try:
            frames = conn.decoder.feed(data)
        except FrameError as exc:
            self._drop(conn, "bad frame: %s", exc)
            return
        for frame in frames:
            if conn not in self.conns:
                return
            if not isinstance(frame, list) or not frame or not isinstance(frame[0], int):
                self._drop(conn, "frame is not [kind, ...]")
                return
            kind = frame[0]
            if conn.peer_id is None and kind != HELLO and kind != REJECT:
                self._drop(conn, "frame before HELLO")
                return
            if conn.peer_id in self.cut and kind != HELLO and kind != REJECT:
                continue   # a test's partition: the frame is lost on the way
            if kind == RAFT:
                if len(frame) != 3 or not isinstance(frame[1], int) or not isinstance(frame[2], dict):
                    self._drop(conn, "malformed RAFT frame")
                    return
                try:
                    self.on_raft(conn.peer_id, frame[1], frame[2])
                except Exception:
                    self.log_limit.log(logger, logging.ERROR, ("raft frame raised", conn.peer_id),
                                       "handling a raft frame from node %s", conn.peer_id, exc_info=True)
            elif kind == HELLO:
                self._on_hello(conn, frame)
            elif kind == CHECKSUM_REQUEST or kind == CHECKSUM_REPLY:
                problem = _checksum_frame_problem(frame)
                if problem is not None:
                    self._drop(conn, "malformed %s frame: %s",
                               "CHECKSUM_REQUEST" if kind == CHECKSUM_REQUEST else "CHECKSUM_REPLY", problem)
                    return
                if kind == CHECKSUM_REQUEST:
                    self.on_checksum_request(conn.peer_id, frame[1], frame[2])
                else:
                    self.on_checksum_reply(conn.peer_id, frame[1], frame[2], frame[3], frame[4])
            elif kind == PROPOSE or kind == PROPOSE_REPLY:
                problem = _propose_frame_problem(frame)
                if problem is not None:
                    self._drop(conn, "malformed %s frame: %s", "PROPOSE" if kind == PROPOSE else "PROPOSE_REPLY", problem)
                    return
                if kind == PROPOSE:
                    self.on_propose(conn.peer_id, frame[1], frame[2], frame[3], frame[4], frame[5])
                else:
                    self.on_propose_reply(conn.peer_id, frame[1], frame[2], frame[3])
            elif kind == CLOSED:
                problem = closed_frame_problem(frame)
                if problem is not None:
                    self._drop(conn, "malformed CLOSED frame: %s", problem)
                    return
                try:
                    self.on_closed(conn.peer_id, *frame[1:])
                except Exception:
                    self.log_limit.log(logger, logging.ERROR, ("CLOSED frame raised", conn.peer_id),
                                       "handling a CLOSED frame from node %s", conn.peer_id, exc_info=True)
            elif kind == HEARTBEAT:
                problem = _heartbeat_frame_problem(frame)
                if problem is not None:
                    self._drop(conn, "malformed HEARTBEAT frame: %s", problem)
                    return
                self.on_heartbeat(conn.peer_id, *(frame[1:] + [None] * (5 - len(frame))))
            elif kind == REJECT:
                reason = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else "no reason given"
                self._drop(conn, "peer refused us: %s", reason)
                self.on_reject(reason)
            else:
                self._drop(conn, "unknown frame kind %r", kind)
                return

    def _on_hello(self, conn: _Conn, frame: list) -> None:
        hello = frame[1] if len(frame) == 2 else None
        if (not isinstance(hello, dict) or not isinstance(hello.get("node_id"), int)
                or not isinstance(hello.get("region"), str) or not isinstance(hello.get("addr"), str)):
            self._drop(conn, "malformed HELLO")
            return
        if conn.peer_id is not None:
            self._drop(conn, "second HELLO")
            return
        reason = self.on_hello(hello)
        if reason is not None:
            conn.wbuf += encode_peer_frame([REJECT, reason])
            self._write(conn)
            self._drop(conn, "refused node %s: %s", hello["node_id"], reason)
            return
        peer_id = hello["node_id"]
        conn.peer_id, conn.hello = peer_id, hello
        if conn.dialed:
            self.dialing.pop(conn.addr, None)
        existing = self.peers.get(peer_id)
        if existing is not None:
            # One connection per pair: keep the one dialed by the lower node id.
            keep_new = conn.dialed == (self.node_id < peer_id)
            loser = existing if keep_new else conn
            self._drop(loser, "duplicate connection", quiet=True)
            if not keep_new:
                return
        self.peers[peer_id] = conn
        self.on_peer_up(peer_id)

    # --- writing and dropping --------------------------------------------------------------------
    def _write(self, conn: _Conn) -> None:
        try:
            n = conn.sock.send(conn.wbuf)
            del conn.wbuf[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._drop(conn, str(exc), quiet=True)
            return
        self._interest(conn)

    def _interest(self, conn: _Conn) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.wbuf or conn.state == "connecting" else 0)
        try:
            self.sel.modify(conn.sock, events, conn)
        except (KeyError, ValueError):
            pass

    def _drop(self, conn: _Conn, why: str, *why_args, quiet: bool = False) -> None:
        """Close `conn`, saying why: `why` %-formatted with `why_args`, at debug level if `quiet`.
        A warning is limited per peer (its node id, else its host: an acceptor's address has a new
        port each time) and per `why` template, the condition; a peer that redials and repeats its
        bad frame at every redial is said once per interval, with the count."""
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        if conn.dialed and self.dialing.get(conn.addr) is conn:
            del self.dialing[conn.addr]
        text = why % why_args if why_args else why
        if quiet:
            logger.debug("peer connection %s (node %s) dropped: %s", conn.addr, conn.peer_id, text)
        else:
            who = conn.peer_id if conn.peer_id is not None else conn.addr.rpartition(":")[0]
            self.log_limit.log(logger, logging.WARNING, ("dropped", who, why),
                               "peer connection %s (node %s) dropped: %s", conn.addr, conn.peer_id, text)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn.peer_id is not None and self.peers.get(conn.peer_id) is conn:
            del self.peers[conn.peer_id]
            self.on_peer_down(conn.peer_id)

    def close(self) -> None:
        for conn in list(self.conns):
            self._drop(conn, "shutting down", quiet=True)
        self.sel.close()
        self.listen_sock.close()
        self.wake_r.close()
        self.wake_w.close()
