"""The composition root of a node process: the only module that wires the store's node
(raftstore.node) to the SQL gateway (sql/). It builds the node, starts its loop, serves the client
port on asyncio in the main thread, serves /metrics and /health on a thread of its own when
`--http-addr` is given, and drains and stops on SIGTERM/SIGINT (readiness turns 503 as the drain
begins; the HTTP port answers until the process ends).
"""

from __future__ import annotations

import asyncio
import os
import logging
import signal

from raftstore import constants
from raftstore.node.loop import Node, NodeConfig, StartupError
from raftstore.node.metrics import LoopSample
from raftstore.server.client_port import ClientLimits, ClientServer, fit_to_open_files
from raftstore.server.http_port import HttpPort
from raftstore.server.pg_port import PgServer
from raftstore.server.nodekv import NodeKV
from sql.gateway import Gateway

logger = logging.getLogger(__name__)


def _fixed_mmap_threshold() -> None:
    """Have glibc's malloc serve every block of 128 KiB or more by mmap, always (setting the
    threshold turns off its adaptive raising, which after the first large free sends every
    such block to the heap): a client's frame buffers, pages and results are then given back to
    the system when freed, so a burst of large frames does not leave the node's RSS raised for
    good. Nothing on other C libraries."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


def run_node(cfg: NodeConfig, warnings: tuple[str, ...] = ()) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code. The client port's `sql`
    op is served by the SQL gateway (sql.gateway); the node itself knows no SQL. `warnings`
    (about its flags) are logged once it serves, after the line that says where."""
    _fixed_mmap_threshold()
    limits, too_many = fit_to_open_files(ClientLimits(
        connections_max=cfg.client_connections_max, idle_timeout_s=cfg.client_idle_timeout_s,
        memory_bytes=cfg.client_memory_bytes, result_bytes_max=cfg.sql_result_bytes_max),
        ports=2 if cfg.pg_addr is not None else 1)
    if too_many is not None:
        warnings = warnings + (too_many,)
    node = Node(cfg)
    node.metrics.registry.register(LoopSample(lambda timeout_s: _ask_totals(node, timeout_s)))
    http: HttpPort | None = None
    node.start_loop()

    async def main() -> int:
        nonlocal http
        loop = asyncio.get_running_loop()
        gateway = Gateway(lambda: NodeKV(node, loop), loop, statement_timeout_ms=cfg.statement_timeout_ms)
        server = ClientServer(node, gateway, limits)
        await server.start()
        pg = None
        if node.pg_sock is not None:   # the same gateway, limits and memory budget as the client port
            pg = PgServer(node, gateway, limits, server.budget, node.pg_sock)
            await pg.start()
            server.pg_status = pg.limits_status
        if node.http_sock is not None:
            http = HttpPort(node.http_sock, node.metrics.registry, server.not_ready)
            http.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logger.info("node %d (%s) serving: peers on %s, clients on %s%s%s; logs in %s", cfg.node_id, cfg.region,
                    cfg.peer_addr, cfg.sql_addr, ", PostgreSQL clients on %s" % cfg.pg_addr if pg is not None else "",
                    ", metrics and health on http://%s" % cfg.http_addr if http is not None
                    else "", os.path.join(cfg.data_dir, "logs"))
        for warning in warnings:
            logger.warning("%s", warning)
        while not stop.is_set():
            if node.fatal:
                return 1
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        await asyncio.gather(server.drain(constants.drain_timeout_s),
                             *([pg.drain(constants.drain_timeout_s)] if pg is not None else []))
        left = await node.drain_leases(constants.drain_timeout_s)   # their ranges serve on elsewhere at once
        if left:
            logger.warning("node %d stops still holding %d lease(s): they run out on their own", cfg.node_id, left)
        return 0

    try:
        code = asyncio.run(main())
    finally:
        if http is not None:
            http.close()
        node.close()
    if node.fatal:
        raise StartupError(node.fatal)
    logger.info("node %d stopped", cfg.node_id)
    return code


def parse_statement_timeout_ms(text: str) -> int:
    """`raftstore start --statement-timeout`: the forms SET statement_timeout takes, in ms (0:
    none); ValueError saying which forms for anything else."""
    from sql.errors import SQLError
    from sql.session_vars import parse_timeout_ms

    try:
        return parse_timeout_ms(text)
    except SQLError as exc:
        raise ValueError(exc.message.replace("statement_timeout takes", "takes").replace(
            "statement_timeout is", "the timeout is")) from None


def _ask_totals(node: Node, timeout_s: float) -> dict | None:
    """The node loop's running totals for a scrape, or None if it did not answer in time."""
    try:
        return node.ask_loop(node.counters, timeout_s)
    except TimeoutError:
        return None
