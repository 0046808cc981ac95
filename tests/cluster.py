"""Real node processes on loopback for tests: start, kill -9, restart, always cleaned up."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from raftstore.kv import Client

REGIONS = ["us-east1", "europe-west1", "us-west1", "asia-east1", "australia-southeast1"]


def free_ports(n: int) -> list[int]:
    """n distinct ports below 32768 that are free right now."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
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
    node_id: int
    region: str
    peer_addr: str
    sql_addr: str
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None


@dataclass
class Cluster:
    root: str
    size: int = 3
    secure: bool = True
    nodes: list[NodeProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        self.secret_path = os.path.join(self.root, "secret")
        with open(self.secret_path, "w") as f:
            f.write("test-cluster-secret-%d\n" % random.getrandbits(64))
        for i in range(self.size):
            nid = i + 1
            self.nodes.append(NodeProc(nid, REGIONS[i], "127.0.0.1:%d" % ports[2 * i], "127.0.0.1:%d" % ports[2 * i + 1],
                                       os.path.join(self.root, "n%d" % nid), os.path.join(self.root, "n%d.log" % nid)))
        self.join = ",".join(n.peer_addr for n in self.nodes)

    def args(self, n: NodeProc) -> list[str]:
        auth = ["--cluster-secret-file", self.secret_path] if self.secure else ["--insecure"]
        return [sys.executable, "-m", "raftstore.cli", "start", "--node-id", str(n.node_id), "--region", n.region,
                "--peer-addr", n.peer_addr, "--sql-addr", n.sql_addr, "--join", self.join,
                "--data-dir", n.data_dir] + auth

    def start(self, n: NodeProc) -> None:
        assert n.proc is None or n.proc.poll() is not None
        log = open(n.log_path, "a")
        n.proc = subprocess.Popen(self.args(n), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start_all(self) -> None:
        for n in self.nodes:
            self.start(n)

    def kill9(self, n: NodeProc) -> None:
        if n.proc is not None and n.proc.poll() is None:
            os.kill(n.proc.pid, signal.SIGKILL)
            n.proc.wait(10)

    def stop(self, n: NodeProc, timeout: float = 20.0) -> int | None:
        if n.proc is None or n.proc.poll() is not None:
            return n.proc.returncode if n.proc else None
        os.kill(n.proc.pid, signal.SIGTERM)
        try:
            return n.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9(n)
            return None

    def cleanup(self) -> None:
        for n in self.nodes:
            self.kill9(n)

    def client(self, *nodes: NodeProc, timeout_s: float = 15.0) -> Client:
        nodes = nodes or tuple(self.nodes)
        return Client([n.sql_addr for n in nodes], timeout_s=timeout_s)

    def node(self, node_id: int) -> NodeProc:
        return self.nodes[node_id - 1]

    def wait_leader(self, timeout: float = 30.0) -> NodeProc:
        """The node that all live nodes agree leads range 1."""
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

    def log_tail(self, n: NodeProc, lines: int = 30) -> str:
        try:
            with open(n.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""
