"""The client port: msgpack request/response frames (raftstore.wire), pipelined, on the asyncio
loop of the node's main thread.

Each request is answered by its own task: KV ops go to the node (raftstore.node.loop.Node), the
`sql` op to the SQL gateway the composition root hands in (raftstore.server.main), `status` and
`check_consistency` to the node. The core knows no SQL. Every KV op and statement is counted
and timed into the node's metrics (raftstore.node.metrics) by op or statement type and outcome.

Draining (SIGTERM): refuse new requests (`draining`), stop accepting connections, answer what is
in flight, then close the connections still open: each connection's task ends by itself, so
nothing is cancelled from outside and the shutdown logs no traceback.

Limits (`ClientLimits`; README "Limits"), so one client cannot starve the others:
  * connections: at most `connections_max`; a newcomer past it closes the connection idle the
    longest (nothing in flight, no frame begun, nothing unread even in the kernel), or, when
    none is idle, is refused with a `too_many_connections` frame and closed. A connection idle
    for `idle_timeout_s` is closed, and one that began a frame must finish it within
    `frame_deadline_s`. An idle connection is closed with a refusal frame saying nothing sent
    on it after its last answer was read: a request that crossed the close on the wire is sent
    again by the client, never reported as possibly run;
  * buffers: a connection with `in_flight_max` requests being answered, or whose answers wait
    for it to read them, is not read (backpressure: its kernel buffers fill and its sender
    blocks). Bytes of frames begun, of requests being answered and of answers not yet taken by
    the kernel are charged to one node-wide budget (`MemoryBudget`, `memory_bytes`); while it
    is spent, a connection holding more than `client_conn_free_bytes` is not read until bytes
    come back, so small requests of other clients go on; one whose frame begun stays unread for
    `client_budget_wait_s` is refused (`unavailable`, nothing of it run) and closed. An answer its client does not read
    within `write_timeout_s` closes the connection, giving its bytes back;
  * results: an answer larger than a page goes out as several frames of the same id, each but
    the last marked `more` (raftstore.wire), so any result up to `result_bytes_max` is answered;
    a larger one is refused with `program_limit_exceeded`.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import gc
import logging
import resource
import struct
import termios
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import msgpack

from raftstore import constants
from raftstore.errors import SQLSTATE_BY_SQL_CODE
from raftstore.kvserver.batch import BOUNDED_STALENESS, EXACT, CompareAndSwap, Delete, Get, Header, Put
from raftstore.kvserver.replica import RAW_END, RAW_PREFIX
from raftstore.loglimit import LogLimiter
from raftstore.node.loop import READ_OPS, Node
from raftstore.node.metrics import outcome_label, statement_type
from raftstore.raft.commands import Outcome
from raftstore.wire import HEADER, BadRequest, FrameDecoder, FrameError, encode_frame, refusal_frame, validate_request

logger = logging.getLogger(__name__)


class SqlGateway(Protocol):
    """What the client port needs of a SQL gateway (sql.gateway.Gateway): the `sql` op."""

    async def handle(self, args: dict) -> dict:
        """Run one statement (`args`: sql, params); answer with a response map."""
        ...


@dataclass(frozen=True)
class ClientLimits:
    """The client port's limits (module doc); the node's flags set them."""
    connections_max: int = constants.client_connections_max
    idle_timeout_s: float = constants.client_idle_timeout_s
    frame_deadline_s: float = constants.client_frame_deadline_s
    in_flight_max: int = constants.client_in_flight_max
    memory_bytes: int = constants.client_memory_bytes
    write_timeout_s: float = constants.client_write_timeout_s
    result_bytes_max: int = constants.sql_result_bytes_max


def fit_to_open_files(limits: ClientLimits, ports: int = 1) -> tuple[ClientLimits, str | None]:
    """`limits` with connections_max within this process's file-descriptor limit (raised to its
    hard limit first), leaving room for every range's journal, the peers and SQLite: half the
    limit and at least 1,024 descriptors are kept for them; `ports` client ports (the native one,
    and the PostgreSQL one if served) each count up to connections_max. Returns (limits, a
    warning or None)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    room = max((soft - max(1024, soft // 2)) // ports, 16)
    if limits.connections_max <= room:
        return limits, None
    fitted = ClientLimits(**{**limits.__dict__, "connections_max": room})
    return fitted, ("--max-client-connections %d does not fit the open-file limit %d (half of it, and at least "
                    "1,024, stays for range journals, peers and SQLite%s): at most %d client connections"
                    % (limits.connections_max, soft, ", the rest shared by %d client ports" % ports if ports > 1 else "",
                       room))


class MemoryBudget:
    """Bytes of client frames and answers buffered by the node, against one limit. `take` may
    go over it (what is already in memory is counted all the same); `spent` says whether it is.
    When the bytes held fall back near zero after a quarter of the limit was held, the C heap's
    free memory goes back to the system (`trim`: glibc's malloc_trim), so a burst of large
    frames does not leave the node's RSS raised."""

    def __init__(self, limit: int, trim: Callable[[], None] | None = None) -> None:
        self.limit, self.used, self.peak = limit, 0, 0
        self._waiters: list[asyncio.Future] = []
        self._trim = trim or _malloc_trim
        self._high = 0   # the most held since the last trim

    def spent(self) -> bool:
        return self.used >= self.limit

    def trim(self) -> None:
        self._high = self.used
        self._trim()

    def take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)
        self._high = max(self._high, self.used)

    def give(self, n: int) -> None:
        self.used -= n
        if self._high > self.limit // 4 and self.used < self.limit // 64:
            self.trim()
        if self._waiters and not self.spent():
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def freed(self, timeout_s: float) -> None:
        """Wait until bytes come back (or timeout_s passes)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)


def _malloc_trim() -> None:
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


@dataclass(eq=False)
class _Conn:
    """One client connection's state for the limits."""
    writer: asyncio.StreamWriter
    task: asyncio.Task | None = None
    reader: asyncio.StreamReader | None = None
    last_active: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    held: int = 0              # budget bytes of its frame begun and its requests being answered
    unsent: int = 0            # budget bytes of its answers the kernel has not taken yet
    frame_began: float | None = None   # when the frame it is sending began (None: between frames)
    partial_held: int = 0      # ... of which its frame begun
    starved_since: float | None = None   # when the spent budget first held back its frame begun
    queued: collections.deque = field(default_factory=collections.deque)   # (request, size) read, not started
    tasks: set = field(default_factory=set)
    session: dict = field(default_factory=dict)   # its SQL session: variables, causality token (sql.gateway)
    statements: asyncio.Lock = field(default_factory=asyncio.Lock)   # one statement at a time, answer included
    answered: int = 0          # requests it has been answered
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)   # one answer's frames at a time, in order
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def idle(self) -> bool:
        return self.in_flight == 0 and not self.queued and self.frame_began is None

    def charged(self) -> int:
        return self.held + self.unsent


class _Closing(Exception):
    """A limit ends a connection: the message says which (logged)."""


class ClientServer:
    """The client port: msgpack request/response frames (raftstore.wire), pipelined."""

    WRITE_OPS = {"put", "delete", "cas"}
    READ_OPS = READ_OPS
    KV_OPS = WRITE_OPS | READ_OPS | {"split"}   # counted as KV requests in the metrics
    READ_CHUNK = 32 * 1024
    STREAM_LIMIT = 16 * 1024     # asyncio buffers at most twice this per connection before it stops reading the socket

    def __init__(self, node: Node, sql_gateway: SqlGateway | None = None, limits: ClientLimits | None = None) -> None:
        self.node = node
        self.sql_gateway = sql_gateway     # wired by raftstore.server.main; None: the node serves no SQL
        self.inflight = 0
        self.draining = False
        self.server: asyncio.base_events.Server | None = None
        self.metrics = node.metrics
        self.pg_status: Callable[[], dict] | None = None   # the PostgreSQL port's, when the node serves one
        self.limits = limits or ClientLimits()
        self.budget = MemoryBudget(self.limits.memory_bytes)
        # Open connections, least recently active first; and those never answered, oldest first
        # (what a newcomer past the limit closes first: `_admit`).
        self._connections: collections.OrderedDict[asyncio.StreamWriter, _Conn] = collections.OrderedDict()
        self._unanswered: collections.OrderedDict[asyncio.StreamWriter, _Conn] = collections.OrderedDict()
        self._last_collect = 0.0
        self._log_limit = LogLimiter()   # one line per condition and client host per interval
        self.stats = {"refused_connections": 0, "evicted_idle": 0, "idle_closed": 0, "frame_deadline_closed": 0,
                      "write_timeout_closed": 0, "paused_reads": 0, "budget_refused": 0, "results_paged": 0, "results_refused": 0}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.node.sql_sock, limit=self.STREAM_LIMIT,
                                                 backlog=constants.listen_backlog)

    def limits_status(self) -> dict:
        """The limits, what they hold now and what they did (the node's status: `clients`)."""
        return dict(self.stats, connections=len(self._connections), connections_max=self.limits.connections_max,
                    memory_used=self.budget.used, memory_peak=self.budget.peak, memory_bytes=self.limits.memory_bytes)

    def not_ready(self) -> str | None:
        """Why this node does not serve clients now (for /health?ready=1), or None. Read from
        the HTTP port's thread: plain flags only."""
        if self.draining:
            return "draining: node %d is shutting down" % self.node.node_id
        if self.node.fatal is not None:
            return "stopping: %s" % self.node.fatal
        if self.node.members is None:
            return "the cluster has not formed yet: node %d waits for its --join peers" % self.node.node_id
        if self.node.clock_unfit is not None:
            return "clock unfit: %s" % self.node.clock_unfit
        return None

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Room for a new connection: under the limit (each connection is charged what it
        costs of its own; while the budget is spent, an idle connection never answered is closed
        for it), or made by closing an idle one. False: every connection is busy (the newcomer
        is refused)."""
        if len(self._connections) < self.limits.connections_max:
            if self.budget.spent():
                self._evict(self._unanswered)   # make room if an unused socket is there to close; come in anyway
            return True
        return self._evict(self._unanswered) or self._evict(self._connections)

    def _evict(self, candidates: collections.OrderedDict) -> bool:
        """Close the first idle connection of `candidates`; False if none is idle."""
        # A connection never answered goes first (an idle socket held open; a client between
        # requests has been answered), then the least recently active: a client's pooled
        # connection is closed only when no other is idle, and its next request, seeing it
        # closed, reconnects. Bytes unread in a connection, in its stream or still in the
        # kernel, are a request under way: not idle.
        for conn in candidates.values():
            if conn.idle() and not _unread_bytes(conn):
                self.stats["evicted_idle"] += 1
                self._close_idle(conn, "too_many_connections", "node %d closed this idle connection to admit another "
                                 "(--max-client-connections %d)" % (self.node.node_id, self.limits.connections_max))
                self._forget(conn)    # counted out now: the newcomer takes its place
                return True
        return False

    @staticmethod
    def _close_idle(conn: _Conn, code: str, why: str) -> None:
        """Close an idle connection, telling its client first: a request it sent that crossed
        this close on the wire was never read, so the client may send it again, here or on
        another node (raftstore.kv treats the refusal frame so)."""
        conn.writer.write(refusal_frame(code, why + "; nothing sent on it after its last answer was read: "
                                        "send it again on a new connection"))
        conn.writer.close()   # its reader sees the end of the stream; its task ends by itself

    def _forget(self, conn: _Conn) -> None:
        if self._connections.get(conn.writer) is conn:
            del self._connections[conn.writer]
            self._unanswered.pop(conn.writer, None)
            self.budget.give(constants.client_conn_bytes)
            self.metrics.client_connections.dec()

    def _active(self, conn: _Conn) -> None:
        conn.last_active = time.monotonic()
        if conn.writer in self._connections:
            self._connections.move_to_end(conn.writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            self.stats["refused_connections"] += 1
            writer.write(refusal_frame("too_many_connections", "node %d has %d client connections, all busy "
                                       "(--max-client-connections %d, --max-client-memory %d bytes); retry later "
                                       "or on another node" % (self.node.node_id, len(self._connections),
                                                               self.limits.connections_max, self.limits.memory_bytes)))
            writer.close()
            return
        conn = _Conn(writer, asyncio.current_task(), reader=reader)
        if hasattr(writer.transport, "max_size"):
            # asyncio's socket transport reads up to 256 KiB at a time into the stream's buffer
            # (whatever its limit): at most a read chunk, so a connection not read holds little.
            writer.transport.max_size = self.READ_CHUNK
        decoder = FrameDecoder(constants.client_frame_bytes_max)
        self._connections[writer] = conn
        self._unanswered[writer] = conn
        self.budget.take(constants.client_conn_bytes)   # what a connection costs in memory of its own
        self.metrics.client_connections.inc()
        try:
            while True:
                data = await self._read(conn, reader, decoder)
                if not data:
                    break
                self._active(conn)
                try:
                    requests = decoder.feed(data)
                except FrameError as exc:
                    self._log_limit.log(logger, logging.WARNING, ("bad frame", peer_host(writer)),
                                        "client %s sent a bad frame (%s); closing", writer.get_extra_info("peername"), exc)
                    break
                partial = decoder.buffered_bytes
                conn.frame_began = None if partial == 0 else conn.last_active if requests else (conn.frame_began or conn.last_active)
                if partial == 0 or requests:
                    conn.starved_since = None   # a new frame, if any: the budget has not held it back yet
                for req, size in zip(requests, decoder.sizes):
                    self.budget.take(size)
                    conn.held += size
                    conn.queued.append((req, size))
                self._start_queued(conn)
                self._hold_partial(conn, decoder.held_bytes + len(getattr(reader, "_buffer", b"")))
        except _Closing as why:
            self._log_limit.log(logger, logging.INFO, ("limit", why.args[0].split(" ")[0], peer_host(writer)),
                                "client %s: %s; closing", writer.get_extra_info("peername"), why)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only a shutdown that skipped the drain cancels a connection's task: close it like
            # any other (Python 3.11's stream callback would log a cancelled task's "exception").
            pass
        finally:
            writer.close()
            while conn.queued:   # read, never started: nobody to answer
                _, size = conn.queued.popleft()
                self.budget.give(size)
                conn.held -= size
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            self._hold_partial(conn, 0)
            self._forget(conn)

    def _start_queued(self, conn: _Conn) -> None:
        """Start the requests `conn` sent, in order, while fewer than in_flight_max of its
        requests are being answered (the rest wait, already counted in the budget)."""
        while conn.queued and conn.in_flight < self.limits.in_flight_max and not conn.writer.is_closing():
            req, size = conn.queued.popleft()
            conn.in_flight += 1
            task = asyncio.create_task(self._answer(req, conn, conn.session, size))
            conn.tasks.add(task)
            task.add_done_callback(conn.tasks.discard)

    def _hold_partial(self, conn: _Conn, partial: int) -> None:
        """Charge the budget for the frame `conn` has begun (`partial` bytes buffered)."""
        was = conn.partial_held
        if partial > was:
            self.budget.take(partial - was)
        elif partial < was:
            self.budget.give(was - partial)
        conn.held += partial - was
        conn.partial_held = partial

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader, decoder: FrameDecoder) -> bytes:
        """The next bytes of `conn`, once the limits let it be read: fewer than in_flight_max
        requests of it being answered, none of its answers waiting for it, and, while the node's
        budget is spent, no more than client_conn_free_bytes held. Raises _Closing when its
        frame deadline or idle timeout passes, or when the frame it began cannot be read within
        client_budget_wait_s of the spent budget first holding it back (it is told so: retry later or elsewhere;
        a paused connection cannot see its client leave, so it would hold its bytes until the
        deadline)."""
        paused = False
        while True:
            if conn.writer.is_closing():
                # Closed here (an unread answer timed out, an eviction): what it queued never starts.
                raise _Closing("the connection was closed")
            now = time.monotonic()
            if conn.frame_began is not None and now - conn.frame_began > self.limits.frame_deadline_s:
                self.stats["frame_deadline_closed"] += 1
                raise _Closing("a frame begun %.1f s ago is still not whole (the limit is %g s)"
                               % (now - conn.frame_began, self.limits.frame_deadline_s))
            busy = conn.in_flight >= self.limits.in_flight_max or conn.unsent > 0 or bool(conn.queued)
            starved = self.budget.spent() and conn.charged() > constants.client_conn_free_bytes
            if not busy and not starved:
                break
            if starved and conn.partial_held > constants.client_conn_free_bytes and conn.in_flight == 0:
                conn.starved_since = conn.starved_since or now
                if now - conn.starved_since >= constants.client_budget_wait_s:
                    self.stats["budget_refused"] += 1
                    conn.writer.write(refusal_frame("unavailable", "node %d's client memory budget (%d bytes, "
                                                    "--max-client-memory) is spent: a frame of %d bytes cannot be "
                                                    "read now; nothing of it was run; retry, or on another node"
                                                    % (self.node.node_id, self.limits.memory_bytes, conn.partial_held)))
                    raise _Closing("the client memory budget is spent; refused a frame begun")
            if not paused:
                paused = True
                self.stats["paused_reads"] += 1
            wait_s = 1.0 if conn.frame_began is None else max(0.01, conn.frame_began + self.limits.frame_deadline_s - now)
            conn.wake.clear()
            if starved and not busy:
                await self.budget.freed(min(wait_s, 1.0))
            else:
                try:
                    async with asyncio.timeout(min(wait_s, 1.0)):
                        await conn.wake.wait()
                except TimeoutError:
                    pass
        while True:
            if conn.frame_began is not None:
                timeout = max(0.0, conn.frame_began + self.limits.frame_deadline_s - time.monotonic())
            else:
                timeout = max(0.0, conn.last_active + self.limits.idle_timeout_s - time.monotonic())
            try:
                async with asyncio.timeout(timeout):   # not wait_for: no task of its own per read
                    return await reader.read(self.READ_CHUNK)
            except TimeoutError:
                pass
            now = time.monotonic()
            if conn.frame_began is not None:
                self.stats["frame_deadline_closed"] += 1
                raise _Closing("a frame begun %.1f s ago is still not whole (the limit is %g s)"
                               % (now - conn.frame_began, self.limits.frame_deadline_s))
            if conn.idle() and not _unread_bytes(conn) and now - conn.last_active >= self.limits.idle_timeout_s:
                self.stats["idle_closed"] += 1
                self._close_idle(conn, "unavailable", "node %d closed this connection after %g s idle "
                                 "(--client-idle-timeout)" % (self.node.node_id, self.limits.idle_timeout_s))
                raise _Closing("idle for %g s (--client-idle-timeout)" % self.limits.idle_timeout_s)
            # A request still being answered (its answer makes the connection active again): wait on.

    async def _answer(self, req: Any, conn: _Conn, session: dict | None = None, size: int = 0) -> None:
        rid = req.get("id") if isinstance(req, dict) and isinstance(req.get("id"), int) else 0
        self.inflight += 1
        self.metrics.client_in_flight.inc()
        began = time.perf_counter()
        statement = isinstance(req, dict) and req.get("op") == "sql"
        turn = False
        try:
            if statement:
                # A connection's statements run one at a time, in the order sent, each answered
                # before the next starts: they share its session (SET, the causality token), and
                # at most one result of it is held.
                await conn.statements.acquire()
                turn = True
            try:
                response = await self._handle(req, session)
            except Exception as exc:
                self._log_limit.log(logger, logging.ERROR, ("request failed", type(exc).__qualname__),
                                    "request failed", exc_info=True)
                response = _error("internal", "internal error: %s" % exc)
            finally:
                self.inflight -= 1
                self.metrics.client_in_flight.dec()
            self._observe(req, response, time.perf_counter() - began)
            response["id"] = rid
            frames = self._frames(response)
            del response
            await self._send(conn, frames)
            if len(frames) > 1 and time.monotonic() - self._last_collect >= 0.25:
                # A large result's rows are freed now: give the C heap's free memory back, or a
                # few large results leave the node's RSS raised for good (collected first: a
                # finished statement's reference cycles, its greenlet's frames, still hold rows).
                # At most four times a second: a full collection holds the loop some milliseconds.
                del frames
                self._last_collect = time.monotonic()
                gc.collect()
                self.budget.trim()
        finally:
            if turn:
                conn.statements.release()
            self.budget.give(size)
            conn.held -= size
            conn.in_flight -= 1
            conn.answered += 1
            self._unanswered.pop(conn.writer, None)
            self._active(conn)
            conn.wake.set()
            self._start_queued(conn)

    def _frames(self, response: dict) -> list[bytes]:
        """The frames of one answer: one, or, for a result larger than a page, its rows in
        pages (raftstore.wire: each frame but the last says `more`). A result over
        result_bytes_max, or a row no frame can hold, is refused instead."""
        try:
            body = msgpack.packb(response, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            logger.exception("answer %s cannot be encoded", response.get("id"))
            return [encode_frame({"id": response["id"], **_error("internal", "the answer cannot be encoded: %s" % exc)})]
        result = response.get("result")
        if len(body) <= constants.client_page_bytes or not isinstance(result, dict) or not isinstance(result.get("rows"), list):
            if len(body) > constants.client_frame_bytes_max:
                return [encode_frame({"id": response["id"], **_error(
                    "too_large", "the answer is %d bytes, more than a frame holds (%d)" % (len(body), constants.client_frame_bytes_max))})]
            return [HEADER.pack(len(body)) + body]
        if len(body) > self.limits.result_bytes_max:
            self.stats["results_refused"] += 1
            return [encode_frame({"id": response["id"], "ok": False, "error": {
                "code": "sql_error", "ambiguous": False, "sql_code": "program_limit_exceeded", "position": None,
                "message": "the result is %d bytes, more than the node's limit of %d (--max-result-bytes): "
                           "narrow the query or add a LIMIT" % (len(body), self.limits.result_bytes_max)}})]
        self.stats["results_paged"] += 1
        del body
        head = {k: v for k, v in result.items() if k != "rows"}
        frames, page, size = [], [], 0
        rows = [msgpack.packb(row, use_bin_type=True) for row in result["rows"]]
        for i, row in enumerate(rows):
            if len(row) > constants.client_frame_bytes_max - 4096:
                return [encode_frame({"id": response["id"], **_error(
                    "too_large", "row %d of the result is %d bytes, more than a frame holds (%d)"
                    % (i, len(row), constants.client_frame_bytes_max))})]
            if page and size + len(row) > constants.client_page_bytes:
                frames.append(_page_frame(response["id"], head if not frames else {}, page, True))
                page, size = [], 0
            page.append(row)
            size += len(row)
        frames.append(_page_frame(response["id"], head if not frames else {}, page, False))
        return frames

    async def _send(self, conn: _Conn, frames: list[bytes]) -> None:
        """Write an answer's frames, all charged to the budget from the start (they are all in
        memory) and each given back once the kernel took it; an answer its client leaves unread
        for write_timeout_s closes the connection."""
        writer = conn.writer
        left = sum(len(f) for f in frames)
        self.budget.take(left)
        conn.unsent += left
        try:
            async with conn.sending:   # an answer's pages go out together, one answer of a connection at a time
                for frame in frames:
                    if writer.is_closing():
                        return   # the connection is gone: nobody to answer (asyncio would warn on each write)
                    try:
                        writer.write(frame)
                        if writer.transport.get_write_buffer_size():   # what the kernel did not take at once
                            async with asyncio.timeout(self.limits.write_timeout_s):
                                await writer.drain()
                    except TimeoutError:
                        self.stats["write_timeout_closed"] += 1
                        self._log_limit.log(logger, logging.INFO, ("unread", peer_host(writer)),
                                            "client %s left an answer unread for %g s; closing",
                                            writer.get_extra_info("peername"), self.limits.write_timeout_s)
                        writer.transport.abort()   # drop what is buffered for it: its bytes come back now
                        return
                    except (ConnectionError, OSError):
                        return
                    self.budget.give(len(frame))
                    conn.unsent -= len(frame)
                    left -= len(frame)
        finally:
            self.budget.give(left)
            conn.unsent -= left

    def _observe(self, req: Any, response: dict, seconds: float) -> None:
        """Count and time one answered request: KV ops by op, statements by type; by outcome
        (ok or the error code). Labels come from fixed lists, never from the client's text."""
        op = req.get("op") if isinstance(req, dict) else None
        error = response.get("error") if not response.get("ok") else None
        outcome = "ok" if error is None else outcome_label(error.get("code") if isinstance(error, dict) else None)
        if op == "sql":
            if isinstance(error, dict) and error.get("sql_code") in SQLSTATE_BY_SQL_CODE:
                outcome = error["sql_code"]
            args = req.get("args")
            self.metrics.observe_sql(statement_type(args.get("sql") if isinstance(args, dict) else None),
                                     outcome, seconds)
        elif op in self.KV_OPS:
            self.metrics.observe_kv(op, outcome, seconds)

    async def _handle(self, req: Any, session: dict | None = None) -> dict:
        try:
            _, op, args = validate_request(req)
        except BadRequest as exc:
            return _error("bad_request", str(exc))
        if self.draining:
            return _error("draining", "node %d is shutting down; retry on another node" % self.node.node_id)
        if op == "status":
            status = await self.node.status()
            status["requests"] = self.metrics.counts()
            status["clients"] = self.limits_status()
            if self.pg_status is not None:
                status["pg"] = self.pg_status()
            return {"ok": True, "result": status}
        if self.node.clock_unfit is not None:
            return _error("unavailable", "node %d does not serve: %s; use another node"
                          % (self.node.node_id, self.node.clock_unfit))
        if op == "sql":
            if self.sql_gateway is None:
                return _error("bad_request", "this node does not serve SQL")
            return await self.sql_gateway.handle(args, session)
        if op == "check_consistency":
            results = await self.node.check_consistency(args.get("start", b""), args.get("end"))
            return {"ok": True, "result": {"ranges": results}}
        if op == "split":
            outcome, result = await self.node.split(RAW_PREFIX + args["key"])
            return self._reply(outcome, result)
        if op == "lease_transfer":
            why = await self.node.lease_transfer(args["range_id"], args["to"])
            return {"ok": True, "result": {"started": True}} if why is None else _error("bad_request", why)
        if op == "drain":
            left = await self.node.drain_leases(constants.drain_timeout_s)
            return {"ok": True, "result": {"leases_left": left}}
        if op == "scan":
            return await self._scan(args)
        if op not in self.WRITE_OPS | self.READ_OPS:
            return _error("bad_request", "unknown op %r" % op)
        header = self._read_header(args) if op == "get" else Header()
        if isinstance(header, dict):
            return header
        key = RAW_PREFIX + args["key"]
        request = {"get": lambda: Get(key), "put": lambda: Put(key, args["value"]), "delete": lambda: Delete(key),
                   "cas": lambda: CompareAndSwap(key, args["expected"], args["new"])}[op]()
        try:
            # A one-op batch; a write keeps the client's command id, so its resends apply once.
            [(outcome, result)] = await self.node.batch([request], header, command_id=args.get("command_id"))
        except ValueError as exc:
            return _error("too_large", "%s; nothing was applied" % exc)
        if outcome is Outcome.COMMITTED:
            result = {name: result.get(name) for name in _ANSWERED[op]}
        return self._reply(outcome, result)

    def _read_header(self, args: dict) -> Header | dict:
        """The header of a client's read: strong; with `read_ts`, an exact-staleness read there;
        with `max_staleness_ms`, a bounded-staleness read no older than that nor than `min_ts`
        (the client's causality token: its own latest write). Any replica that has closed the
        timestamp serves it (kvserver.closedts), the nearest first."""
        staleness, read_ts, min_ts = args.get("max_staleness_ms"), args.get("read_ts"), args.get("min_ts")
        if staleness is not None and read_ts is not None:
            return _error("bad_request", "a read takes max_staleness_ms (bounded staleness) or read_ts (exact), not both")
        if read_ts is not None:
            return Header(consistency=EXACT, read_ts=tuple(read_ts))
        if staleness is None:
            if min_ts is not None:
                return _error("bad_request", "min_ts bounds a bounded-staleness read: give max_staleness_ms too")
            return Header()
        now = self.node.hlc.now()
        floor = (max(0, now.wall_ns - staleness * 1_000_000), 0)
        return Header(consistency=BOUNDED_STALENESS, min_ts=max(floor, tuple(min_ts)) if min_ts is not None else floor)

    async def _scan(self, args: dict) -> dict:
        header = self._read_header(args)
        if isinstance(header, dict):
            return header
        start = RAW_PREFIX + args["start"]
        end = RAW_PREFIX + args["end"] if args.get("end") is not None else RAW_END
        # The answer must fit a frame: the caller's byte limit, at most half a frame (the first
        # row always comes; a row is at most a replicated command, well below half a frame).
        max_bytes = min(args.get("max_bytes") or constants.scan_bytes_max, constants.client_frame_bytes_max // 4)
        outcome, result = await self.node.scan_keys(start, end, args["limit"], max_bytes,
                                                    header if header.consistency != "strong" else None)
        if outcome is not Outcome.COMMITTED:
            return self._reply(outcome, result)
        rows = [[k[len(RAW_PREFIX):], v] for k, v in result["rows"]]
        resume = result["resume"][len(RAW_PREFIX):] if result["resume"] is not None else None
        return {"ok": True, "result": {"rows": rows, "ts": result["ts"], "resume": resume, "read_ts": result.get("read_ts")}}

    @staticmethod
    def _reply(outcome: Outcome, result: Any) -> dict:
        if outcome is Outcome.COMMITTED:
            return {"ok": True, "result": result}
        if outcome is Outcome.REJECTED:
            return _error("bad_request", str(result))
        if outcome is Outcome.NOT_COMMITTED:
            return _error("unavailable", str(result))   # the hint of UnavailableError says it did not commit
        return _error("ambiguous", "the outcome is unknown (%s); the write may have committed" % result, ambiguous=True)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new requests and connections, answer those in flight (within timeout_s), then
        close every connection and wait for its task to end (bounded by the same deadline)."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + timeout_s
        while (self.inflight or any(c.in_flight or c.queued for c in self._connections.values())) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for writer in list(self._connections):
            writer.close()   # its reader sees the end of the stream; its task finishes by itself
        tasks = [c.task for c in self._connections.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))


_ANSWERED = {"get": ("value", "ts", "read_ts", "served_by"), "put": ("ts",), "delete": ("ts",), "cas": ("swapped", "ts")}   # what a KV op answers


def peer_host(writer: asyncio.StreamWriter) -> str | None:
    """A client's host, without its port (which changes with each connection): a log key."""
    peer = writer.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) and peer else None


def _unread_bytes(conn: _Conn) -> int:
    """Bytes `conn`'s client sent that the port has not decoded yet: in its stream's buffer and
    in the kernel's receive queue (FIONREAD; 0 where it cannot be asked)."""
    unread = len(getattr(conn.reader, "_buffer", b""))
    sock = conn.writer.get_extra_info("socket")
    if sock is not None:
        try:
            unread += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            pass
    return unread


def _page_frame(request_id: int, head: dict, rows: list[bytes], more: bool) -> bytes:
    """One page of a result: {"id", "ok": true, "result": {**head, "rows": rows}, "more"}, its
    rows already encoded (each once)."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(4), packer.pack("id"), packer.pack(request_id), packer.pack("ok"), packer.pack(True),
             packer.pack("result"), packer.pack_map_header(len(head) + 1)]
    for key, value in head.items():
        parts += [packer.pack(key), packer.pack(value)]
    parts += [packer.pack("rows"), packer.pack_array_header(len(rows))] + rows + [packer.pack("more"), packer.pack(more)]
    body = b"".join(parts)
    return HEADER.pack(len(body)) + body


def _error(code: str, message: str, ambiguous: bool = False) -> dict:
    return {"ok": False, "error": {"code": code, "message": message, "ambiguous": ambiguous}}
