"""A cluster of real `raftstore start` processes on loopback, for tests and benchmarks.

Why it lives in the product: the cluster tests and the benchmarks in `bench/` need the same
thing — N nodes as separate OS processes, talking over real sockets and fsyncing real files —
and a benchmark must not import the test suite. Everything here is an edge (subprocess, signals,
sockets, the clock); nothing in raftstore's data path imports it.

Invariant: every process this module starts is tracked in its `NodeProc` and is killed by PID in
`Cluster.cleanup()`, which the context-manager form runs on every exit (normal, exception,
KeyboardInterrupt). Nodes run in their own sessions, so a Ctrl-C at the terminal reaches only the
controlling program, which then kills them; nothing is ever killed by name.

Ports are chosen below 32768 so they cannot collide with the kernel's ephemeral range, from which
the nodes' own outgoing connections draw.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from raftstore.kv import Client

__all__ = ["REGIONS", "Cluster", "NodeProc", "free_ports"]

REGIONS = ["us-east1", "europe-west1", "us-west1", "asia-east1", "australia-southeast1"]
# Local clusters are scratch (demo, bench, tests): no ballast file, and a reserve that fits a
# small free disk. Later `extra_args` override these (argparse keeps the last value).
SCRATCH_DISK_ARGS = ("--disk-reserve-bytes", "64MiB", "--disk-ballast-bytes", "0")

port_min = 20000    # [port_min, port_max): below the ephemeral range (32768+)
port_max = 32000
listen_wait_s_max = 120.0   # a started node binds its ports within this (a busy machine's imports)


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports in [20000, 32000) that are free right now (may be taken later)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(port_min, port_max)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


@dataclass
class NodeProc:
    """One node: its fixed identity and addresses, and the process currently running it (if any)."""

    node_id: int
    region: str
    peer_addr: str
    sql_addr: str
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None
    http_addr: str | None = None   # /metrics and /health (None: the node serves no HTTP)
    pg_addr: str | None = None     # the PostgreSQL port (None: not served)

    @property
    def pg_url(self) -> str | None:
        """A libpq connection URL for its PostgreSQL port (insecure: any user, no password)."""
        return None if self.pg_addr is None else "postgresql://root@%s/defaultdb?sslmode=disable" % self.pg_addr

    @property
    def pid(self) -> int | None:
        """PID of the running process, None if not started or already exited."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid


@dataclass
class Cluster:
    """`size` nodes under `root` (which must exist): data dirs ``n<id>``, logs ``n<id>.log``.

    Building a Cluster only chooses ports and writes the shared secret; `start_all()` (or
    ``with Cluster(root) as c:``) starts the processes. Nodes take regions from REGIONS in order,
    so `size` is at most len(REGIONS).
    """

    root: str
    size: int = 3
    secure: bool = True
    nodes: list[NodeProc] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)   # appended to every `raftstore start`
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)   # node id -> extra environment

    def __post_init__(self) -> None:
        assert 1 <= self.size <= len(REGIONS), self.size
        ports = free_ports(4 * self.size)
        self.secret_path = os.path.join(self.root, "secret")
        fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("local-cluster-secret-%s\n" % secrets.token_hex(16))
        for i in range(self.size):
            nid = i + 1
            self.nodes.append(NodeProc(nid, REGIONS[i], "127.0.0.1:%d" % ports[4 * i], "127.0.0.1:%d" % ports[4 * i + 1],
                                       os.path.join(self.root, "n%d" % nid), os.path.join(self.root, "n%d.log" % nid),
                                       http_addr="127.0.0.1:%d" % ports[4 * i + 2],
                                       pg_addr="127.0.0.1:%d" % ports[4 * i + 3]))
        self.join = ",".join(n.peer_addr for n in self.nodes)

    # --- context manager: start everything, always clean up ---------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start_all()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # --- processes ------------------------------------------------------------------------------

    def args(self, n: NodeProc) -> list[str]:
        auth = ["--cluster-secret-file", self.secret_path] if self.secure else ["--insecure"]
        return ([sys.executable, "-m", "raftstore.cli", "start", "--node-id", str(n.node_id), "--region", n.region,
                "--peer-addr", n.peer_addr, "--sql-addr", n.sql_addr, "--join", self.join,
                "--data-dir", n.data_dir] + (["--http-addr", n.http_addr] if n.http_addr else [])
                + (["--pg-addr", n.pg_addr] if n.pg_addr else []) + auth
                + list(SCRATCH_DISK_ARGS) + list(self.extra_args))

    def start(self, n: NodeProc, *, wait: bool = True) -> None:
        """Start `n` (which must not be running) in its own session, appending to its log; with
        `wait`, return once it listens on its client port (see `wait_listening`)."""
        assert n.proc is None or n.proc.poll() is not None
        with open(n.log_path, "a") as log:
            env = dict(os.environ, **self.node_env[n.node_id]) if n.node_id in self.node_env else None
            n.proc = subprocess.Popen(self.args(n), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env=env)
        if wait:
            self.wait_listening(n)

    def start_all(self) -> None:
        for n in self.nodes:
            self.start(n, wait=False)
        for n in self.nodes:
            self.wait_listening(n)

    def wait_listening(self, n: NodeProc, timeout: float = listen_wait_s_max) -> None:
        """Wait until `n` accepts connections on its client port (it binds its ports before it
        forms or joins the cluster), or its process has exited (the caller sees why). A client
        gives up at once on an address that refuses connections, so a just-started node is
        waited for here rather than by each client. Raises AssertionError after `timeout`."""
        host, port = n.sql_addr.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        while n.proc is not None and n.proc.poll() is None:
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("n%d does not listen on %s after %.0f s; log %s"
                                         % (n.node_id, n.sql_addr, timeout, n.log_path)) from None
                time.sleep(0.05)

    def kill9(self, n: NodeProc) -> None:
        """SIGKILL `n`'s process by PID and reap it. No-op if it is not running."""
        if n.proc is not None and n.proc.poll() is None:
            try:
                os.kill(n.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # exited between poll() and kill(); wait() reaps it
            n.proc.wait(10)

    def stop(self, n: NodeProc, timeout: float = 20.0) -> int | None:
        """SIGTERM (the node drains), then SIGKILL after `timeout` s. Exit code, None if killed."""
        if n.proc is None or n.proc.poll() is not None:
            return n.proc.returncode if n.proc else None
        os.kill(n.proc.pid, signal.SIGTERM)
        try:
            return n.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9(n)
            return None

    def cleanup(self) -> None:
        """Kill every node. Keeps going past a failure on one node, then re-raises the first."""
        first: BaseException | None = None
        for n in self.nodes:
            try:
                self.kill9(n)
            except BaseException as exc:  # a second Ctrl-C must not leave the rest running
                first = first or exc
        if first is not None:
            for n in self.nodes:  # best effort, without waiting
                if n.proc is not None and n.proc.poll() is None:
                    try:
                        os.kill(n.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            raise first

    # --- clients and status ---------------------------------------------------------------------

    def client(self, *nodes: NodeProc, timeout_s: float = 15.0) -> Client:
        nodes = nodes or tuple(self.nodes)
        return Client([n.sql_addr for n in nodes], timeout_s=timeout_s)

    def node(self, node_id: int) -> NodeProc:
        return self.nodes[node_id - 1]

    def wait_leader(self, timeout: float = 30.0) -> NodeProc:
        """The node that all live nodes agree leads range 1.

        Raises AssertionError naming the log folder if they do not agree within `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = set()
            for n in self.nodes:
                if n.proc is None or n.proc.poll() is not None:
                    continue
                try:
                    with Client([n.sql_addr], timeout_s=1.0) as c:
                        leaders.add(c.status().get("leader"))
                except Exception:
                    leaders.add(None)
            if len(leaders) == 1 and None not in leaders:
                return self.node(leaders.pop())
            time.sleep(0.1)
        raise AssertionError("no agreed leader within %.0f s; logs in %s" % (timeout, self.root))

    def wait_leaseholder(self, range_id: int = 2, timeout: float = 30.0) -> NodeProc:
        """The node serving `range_id`'s lease, once exactly one live node says it does (status:
        `lease_serving`). Raises AssertionError naming the log folder otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            serving = []
            for n in self.nodes:
                if n.proc is None or n.proc.poll() is not None:
                    continue
                try:
                    with Client([n.sql_addr], timeout_s=2.0) as c:
                        ranges = c.status()["ranges"]
                except Exception:
                    continue
                if any(r["range_id"] == range_id and r.get("lease_serving") for r in ranges):
                    serving.append(n)
            if len(serving) == 1:
                return serving[0]
            time.sleep(0.02)
        raise AssertionError("no single node serves r%d's lease within %.0f s; logs in %s" % (range_id, timeout, self.root))

    def log_tail(self, n: NodeProc, lines: int = 30) -> str:
        try:
            with open(n.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""
