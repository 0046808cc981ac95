"""The composition root of a node process: the only module that wires the store's node
(raftstore.node) to the SQL gateway (sql/). It builds the node, starts its loop, serves the client
port on asyncio in the main thread, and drains and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from raftstore import constants
from raftstore.node.loop import Node, NodeConfig, StartupError
from raftstore.server.client_port import ClientServer
from raftstore.server.nodekv import NodeKV
from sql.gateway import Gateway

logger = logging.getLogger(__name__)


def run_node(cfg: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code. The client port's `sql`
    op is served by the SQL gateway (sql.gateway); the node itself knows no SQL."""
    node = Node(cfg)
    node.start_loop()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = ClientServer(node, Gateway(lambda: NodeKV(node, loop), loop))
        await server.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logger.info("node %d (%s) serving: peers on %s, clients on %s", cfg.node_id, cfg.region, cfg.peer_addr, cfg.sql_addr)
        while not stop.is_set():
            if node.fatal:
                return 1
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        await server.drain(constants.drain_timeout_s)
        return 0

    try:
        code = asyncio.run(main())
    finally:
        node.close()
    if node.fatal:
        raise StartupError(node.fatal)
    return code
