"""The HTTP port (`--http-addr`): `/metrics` in the Prometheus text format and `/health`.

Why a thread of its own (http.server), not the node loop nor the client port's asyncio loop: a
scrape may wait up to `metrics_loop_wait_s` for the node loop's totals
(raftstore.node.metrics.LoopSample), and neither loop may ever wait on a scraper. Each request
runs on its own short-lived thread, at most `http_connections_max` at once; the handlers read
only thread-safe figures and the plain flags readiness is made of.

- `GET /metrics`: the node's own registry (raftstore.node.metrics.NodeMetrics.registry).
- `GET /health`: 200 "ok" while the process is up.
- `GET /health?ready=1`: 200 "ready" only while the node serves clients; else 503 with the
  reason in the body (cluster not formed, clock unfit, draining).
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import urllib.parse
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from raftstore import constants

logger = logging.getLogger(__name__)

__all__ = ["HttpPort"]


class HttpPort:
    """Serves /metrics and /health on `sock` (bound and listening) from a thread of its own.
    `not_ready()` returns why the node does not serve clients now, or None."""

    def __init__(self, sock: socket.socket, registry: CollectorRegistry, not_ready: Callable[[], str | None]) -> None:
        self._server = _Server(sock, _handler(registry, not_ready))
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-port", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (requests being answered finish on their own threads)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=constants.http_timeout_s)
        self._server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, handler: type) -> None:
        super().__init__(sock.getsockname(), handler, bind_and_activate=False)
        self.socket.close()   # the one the base class made: serve the node's own, bound at start-up
        self.socket = sock
        self._slots = threading.BoundedSemaphore(constants.http_connections_max)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):   # too many at once: refuse, never queue
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _handler(registry: CollectorRegistry, not_ready: Callable[[], str | None]) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = constants.http_timeout_s
        server_version = "raftstore"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif url.path == "/health":
                query = urllib.parse.parse_qs(url.query)
                if query.get("ready", ["0"])[-1].lower() in ("1", "true", "yes"):
                    why = not_ready()
                    if why is None:
                        self._answer(200, b"ready\n")
                    else:
                        self._answer(503, ("not ready: %s\n" % why).encode())
                else:
                    self._answer(200, b"ok\n")
            else:
                self._answer(404, b"not found: try /metrics, /health or /health?ready=1\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:   # one line per scrape would flood the log
            logger.debug("http %s: " + format, self.client_address[0], *args)

    return Handler
