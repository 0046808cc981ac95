"""The client port: msgpack request/response frames (raftstore.wire), pipelined, on the asyncio
loop of the node's main thread.

Each request is answered by its own task: KV ops go to the node (raftstore.node.loop.Node), the
`sql` op to the SQL gateway the composition root hands in (raftstore.server.main), `status` and
`check_consistency` to the node. The core knows no SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from raftstore import constants
from raftstore.kvserver.replica import RAW_END, RAW_PREFIX
from raftstore.node.loop import READ_OPS, Node
from raftstore.raft.commands import Outcome, new_command_id
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

    def __init__(self, node: Node, sql_gateway: SqlGateway | None = None) -> None:
        self.node = node
        self.sql_gateway = sql_gateway     # wired by raftstore.server.main; None: the node serves no SQL
        self.inflight = 0
        self.draining = False
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.node.sql_sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(constants.client_frame_bytes_max)
        tasks: set[asyncio.Task] = set()
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
                    task = asyncio.create_task(self._answer(req, writer))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (ConnectionError, OSError):
            pass
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()

    async def _answer(self, req: Any, writer: asyncio.StreamWriter) -> None:
        rid = req.get("id") if isinstance(req, dict) and isinstance(req.get("id"), int) else 0
        self.inflight += 1
        try:
            response = await self._handle(req)
        except Exception as exc:
            logger.exception("request failed")
            response = _error("internal", "internal error: %s" % exc)
        finally:
            self.inflight -= 1
        response["id"] = rid
        try:
            writer.write(encode_frame(response))
            await writer.drain()
        except (ConnectionError, OSError):
            pass

    async def _handle(self, req: Any) -> dict:
        try:
            _, op, args = validate_request(req)
        except BadRequest as exc:
            return _error("bad_request", str(exc))
        if self.draining:
            return _error("draining", "node %d is shutting down; retry on another node" % self.node.node_id)
        if op == "status":
            return {"ok": True, "result": await self.node.status()}
        if self.node.clock_unfit is not None:
            return _error("unavailable", "node %d does not serve: %s; use another node"
                          % (self.node.node_id, self.node.clock_unfit))
        if op == "sql":
            if self.sql_gateway is None:
                return _error("bad_request", "this node does not serve SQL")
            return await self.sql_gateway.handle(args)
        if op == "check_consistency":
            results = await self.node.check_consistency(args.get("start", b""), args.get("end"))
            return {"ok": True, "result": {"ranges": results}}
        if op == "split":
            outcome, result = await self.node.split(RAW_PREFIX + args["key"])
            return self._reply(outcome, result)
        if op == "scan":
            return await self._scan(args)
        if op not in self.WRITE_OPS | self.READ_OPS:
            return _error("bad_request", "unknown op %r" % op)
        command_id = args.pop("command_id", None) if op in self.WRITE_OPS else new_command_id()
        key = RAW_PREFIX + args["key"]
        try:
            outcome, result = await self.node.propose_key(op, key, dict(args, key=key), command_id)
        except ValueError as exc:
            return _error("too_large", "%s; nothing was applied" % exc)
        return self._reply(outcome, result)

    async def _scan(self, args: dict) -> dict:
        start = RAW_PREFIX + args["start"]
        end = RAW_PREFIX + args["end"] if args.get("end") is not None else RAW_END
        outcome, result = await self.node.scan_keys(start, end, args["limit"])
        if outcome is not Outcome.COMMITTED:
            return self._reply(outcome, result)
        rows = [[k[len(RAW_PREFIX):], v] for k, v in result["rows"]]
        return {"ok": True, "result": {"rows": rows, "ts": result["ts"]}}

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
        self.draining = True
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


def _error(code: str, message: str, ambiguous: bool = False) -> dict:
    return {"ok": False, "error": {"code": code, "message": message, "ambiguous": ambiguous}}
