"""The TCP delay proxy that puts etcd under emulated WAN latency (bench/delay_proxy.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from bench.delay_proxy import DelayProxy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DELAY_S = 0.05


async def _upstream(arrivals: list, echo: bool):
    """A server recording (monotonic time, bytes) of everything it receives; echoes if asked."""
    async def on_client(reader, writer):
        while data := await reader.read(65536):
            arrivals.append((time.monotonic(), data))
            if echo:
                writer.write(data)
                await writer.drain()
        arrivals.append((time.monotonic(), b""))   # EOF seen
        writer.close()
    return await asyncio.start_server(on_client, "127.0.0.1", 0)


async def _proxied(echo: bool):
    arrivals: list = []
    server = await _upstream(arrivals, echo)
    proxy = DelayProxy("127.0.0.1", 0, "127.0.0.1", server.sockets[0].getsockname()[1], DELAY_S)
    await proxy.start()
    return arrivals, server, proxy


def test_each_direction_waits_at_least_the_configured_delay():
    async def run():
        arrivals, server, proxy = await _proxied(echo=True)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            t0 = time.monotonic()
            writer.write(b"ping")
            await writer.drain()
            assert await reader.readexactly(4) == b"ping"
            round_trip = time.monotonic() - t0
            one_way = arrivals[0][0] - t0
            writer.close()
            return one_way, round_trip
        finally:
            await proxy.close()
            server.close()
    one_way, round_trip = asyncio.run(run())
    assert one_way >= DELAY_S
    assert round_trip >= 2 * DELAY_S


def test_bytes_arrive_in_the_order_they_were_sent_and_eof_follows_them():
    async def run():
        arrivals, server, proxy = await _proxied(echo=False)
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            sent = b""
            for i in range(200):      # many small writes spread over time, some while earlier ones wait
                chunk = b"%05d," % i
                writer.write(chunk)
                sent += chunk
                await writer.drain()
                if i % 20 == 0:
                    await asyncio.sleep(0.003)
            t_eof = time.monotonic()
            writer.write_eof()
            deadline = time.monotonic() + 5
            while not (arrivals and arrivals[-1][1] == b"") and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            writer.close()
            return sent, arrivals, t_eof
        finally:
            await proxy.close()
            server.close()
    sent, arrivals, t_eof = asyncio.run(run())
    assert arrivals and arrivals[-1][1] == b"", "EOF was not forwarded"
    assert b"".join(data for _, data in arrivals) == sent
    assert arrivals[-1][0] - t_eof >= DELAY_S


def test_the_proxy_process_says_ready_and_stops_on_sigterm():
    async def free_target():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return port
    target = asyncio.run(free_target())
    proc = subprocess.Popen([sys.executable, "-m", "bench.delay_proxy", "--listen", "127.0.0.1:0",
                             "--target", "127.0.0.1:%d" % target, "--delay-ms", "10"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready 127.0.0.1:"), line
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
