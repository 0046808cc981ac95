"""The client port: msgpack request/response frames (raftstore.wire), pipelined, on the asyncio
loop of the node's main thread.

Each request is answered by its own task: KV ops go to the node (raftstore.node.loop.Node), the
`sql` op to the SQL gateway the composition root hands in (raftstore.server.main), `status` and
`check_consistency` to the node. The core knows no SQL. Every KV op and statement is counted
and timed into the node's metrics (raftstore.node.metrics) by op or statement type and outcome.

Draining (SIGTERM): refuse new requests (`draining`), stop accepting connections, answer what is
in flight, then close the connections still open: each connection's task ends by itself, so
nothing is cancelled from outside and the shutdown logs no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from raftstore import constants
from raftstore.errors import SQLSTATE_BY_SQL_CODE
from raftstore.kvserver.batch import BOUNDED_STALENESS, EXACT, CompareAndSwap, Delete, Get, Header, Put
from raftstore.kvserver.replica import RAW_END, RAW_PREFIX
from raftstore.node.loop import READ_OPS, Node
from raftstore.node.metrics import outcome_label, statement_type
from raftstore.raft.commands import Outcome
from raftstore.wire import BadRequest, FrameDecoder, FrameError, encode_frame, validate_request

logger = logging.getLogger(__name__)


class SqlGateway(Protocol):
    """What the client port needs of a SQL gateway (sql.gateway.Gateway): the `sql` op."""

    async def handle(self, args: dict) -> dict:
        """Run one statement (`args`: sql, params); answer with a response map."""
        ...


class ClientServer:
    """The client port: msgpack request/response frames (raftstore.wire), pipelined."""

    WRITE_OPS = {"put", "delete", "cas"}
    READ_OPS = READ_OPS
    KV_OPS = WRITE_OPS | READ_OPS | {"split"}   # counted as KV requests in the metrics

    def __init__(self, node: Node, sql_gateway: SqlGateway | None = None) -> None:
        self.node = node
        self.sql_gateway = sql_gateway     # wired by raftstore.server.main; None: the node serves no SQL
        self.inflight = 0
        self.draining = False
        self.server: asyncio.base_events.Server | None = None
        self.metrics = node.metrics
        self._connections: dict[asyncio.StreamWriter, asyncio.Task] = {}   # open connections, their tasks

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.node.sql_sock)

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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(constants.client_frame_bytes_max)
        tasks: set[asyncio.Task] = set()
        session: dict = {}   # the connection's SQL session: its variables and causality token (sql.gateway)
        self._connections[writer] = asyncio.current_task()
        self.metrics.client_connections.inc()
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                try:
                    requests = decoder.feed(data)
                except FrameError as exc:
                    logger.warning("client %s sent a bad frame (%s); closing", writer.get_extra_info("peername"), exc)
                    break
                for req in requests:
                    task = asyncio.create_task(self._answer(req, writer, session))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only a shutdown that skipped the drain cancels a connection's task: close it like
            # any other (Python 3.11's stream callback would log a cancelled task's "exception").
            pass
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            del self._connections[writer]
            self.metrics.client_connections.dec()

    async def _answer(self, req: Any, writer: asyncio.StreamWriter, session: dict | None = None) -> None:
        rid = req.get("id") if isinstance(req, dict) and isinstance(req.get("id"), int) else 0
        self.inflight += 1
        self.metrics.client_in_flight.inc()
        began = time.perf_counter()
        try:
            response = await self._handle(req, session)
        except Exception as exc:
            logger.exception("request failed")
            response = _error("internal", "internal error: %s" % exc)
        finally:
            self.inflight -= 1
            self.metrics.client_in_flight.dec()
        self._observe(req, response, time.perf_counter() - began)
        response["id"] = rid
        try:
            writer.write(encode_frame(response))
            await writer.drain()
        except (ConnectionError, OSError):
            pass

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
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for writer in list(self._connections):
            writer.close()   # its reader sees the end of the stream; its task finishes by itself
        tasks = list(self._connections.values())
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))


_ANSWERED = {"get": ("value", "ts", "read_ts", "served_by"), "put": ("ts",), "delete": ("ts",), "cas": ("swapped", "ts")}   # what a KV op answers


def _error(code: str, message: str, ambiguous: bool = False) -> dict:
    return {"ok": False, "error": {"code": code, "message": message, "ambiguous": ambiguous}}
