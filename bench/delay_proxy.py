"""A TCP proxy that delays every byte by a fixed one-way time, in order: WAN for a program we
cannot patch.

    python -m bench.delay_proxy --listen 127.0.0.1:21380 --target 127.0.0.1:21381 --delay-ms 30

Why: raftstore emulates its WAN inside its own peer transport, but etcd has no such hook. To
compare the two under the same latency, each etcd member's advertised peer URL points at one of
these proxies, which forwards to the member's real peer port. Every chunk read from one side is
written to the other side `delay` later (both directions), so a message between two members
takes one-way `delay` whichever member dialled the connection: with delay = RTT / 2 every
member pair is RTT apart. (One proxy per member can only emulate a symmetric latency: a proxy
cannot tell which member is on the other end of a connection.)

Invariants: bytes leave in the order they arrived, never before `delay` after they arrived
(a chunk that arrives while an earlier one is still being written waits for it, so a slow
reader adds to the delay but never reorders); a half-close (EOF) is forwarded after the same
delay; an error on either side closes both. Each direction holds at most
`chunks_in_flight_max` chunks of at most `chunk_bytes_max` bytes; beyond that the proxy stops
reading (TCP backpressure) rather than buffer without bound.

With `--listen` the process prints ``ready <host:port>`` on stdout once it accepts connections
and runs until SIGTERM or SIGINT. `DelayProxy` is also usable inside an asyncio loop (tests).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

chunk_bytes_max = 64 * 1024
chunks_in_flight_max = 1024        # per direction of each connection
connect_timeout_s = 5.0


def _split_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError("%r is not HOST:PORT" % text)
    return host, int(port)


class DelayProxy:
    """Accepts on (listen_host, listen_port) and forwards each connection to the target with a
    one-way delay of `delay_s` in both directions. `start()` then `close()`; `port` is the port
    actually bound (useful with listen_port 0)."""

    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int,
                 delay_s: float) -> None:
        assert delay_s >= 0, delay_s
        self.listen_host, self.listen_port = listen_host, listen_port
        self.target_host, self.target_port = target_host, target_port
        self.delay_s = delay_s
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._on_client, self.listen_host, self.listen_port,
                                                 reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        upstream_writer = None
        try:
            try:
                up_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), connect_timeout_s)
            except (OSError, asyncio.TimeoutError):
                return  # target down: the client sees the connection close, as it would without us
            directions = [asyncio.create_task(self._pipe(reader, upstream_writer)),
                          asyncio.create_task(self._pipe(up_reader, writer))]
            try:
                done, pending = await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
                if any(t.exception() for t in done if not t.cancelled()):
                    for t in pending:
                        t.cancel()
                await asyncio.gather(*directions, return_exceptions=True)
            finally:
                for t in directions:
                    t.cancel()
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src to dst, each chunk `delay_s` after it was read; forward EOF the same way."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=chunks_in_flight_max)

        async def read_side() -> None:
            while True:
                data = await src.read(chunk_bytes_max)
                await queue.put((loop.time() + self.delay_s, data))
                if not data:
                    return

        reader_task = asyncio.create_task(read_side())
        try:
            while True:
                due, data = await queue.get()
                # asyncio may fire a timer a hair early; loop until the due time has surely passed.
                while (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()
        finally:
            reader_task.cancel()
            await asyncio.gather(reader_task, return_exceptions=True)


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
    proxy = DelayProxy(listen[0], listen[1], target[0], target[1], delay_s)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready %s:%d" % (listen[0], proxy.port), flush=True)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delay_proxy",
                                description="TCP proxy adding a fixed one-way delay in both directions.")
    p.add_argument("--listen", type=_split_addr, required=True, metavar="HOST:PORT")
    p.add_argument("--target", type=_split_addr, required=True, metavar="HOST:PORT")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each direction (RTT / 2)")
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    asyncio.run(_serve(args.listen, args.target, args.delay_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
