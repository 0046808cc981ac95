"""etcd under the same emulated latency, for the side-by-side table of `raftstore bench --compare-etcd`.

Why: a ratio to the physical bound says how far raftstore is from the network's limit; etcd,
the best-known Raft store, says how close a mature implementation gets on the same machine under
the same delays. etcd 3.4 (Debian package `etcd-server`) is the reference in DESIGN.md.

Setup: three etcd members on loopback (ports below 32768, like raftstore's local clusters). Each
member's advertised peer URL is a `bench.delay_proxy` process that forwards to the member's real
peer port with a one-way delay of RTT / 2 in both directions, so every member pair is RTT apart
(a proxy per member can only do a symmetric latency; see bench/delay_proxy.py). With RTT 0 there
are no proxies. Clients use etcd's HTTP/JSON gRPC gateway (`/v3/kv/put`, `/v3/kv/range`) over
keep-alive connections; see bench/loadgen.py.

Cells, named like raftstore's: `put` and `get` (linearizable) from the leader's "region" (a
client of the leader) and from a follower's (a client of a follower, which forwards to the
leader), and a sweep of puts at the leader with 1, 16, 64 clients. The members are named
m1..m3 and act as regions for the bound calculation (bench/bounds.py with a symmetric RTT).

Invariant: every process started here (etcd members, proxies) is tracked and stopped by PID in
`EtcdCluster.cleanup()`, which the context manager runs on every exit path; they run in their
own sessions, so a Ctrl-C at the terminal reaches only this program.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from raftstore.localcluster import free_ports

etcd_members = 3
etcd_ready_s_max = 60.0       # members up and agreed on a leader within this
proxy_ready_s_max = 20.0
etcd_stop_s_max = 10.0        # SIGTERM, then SIGKILL after this
status_timeout_s = 2.0


class EtcdError(Exception):
    """etcd could not be started or did not form a cluster; the message says why and where its logs are."""


def etcd_binary() -> str | None:
    """Path of the `etcd` server binary on PATH, None when absent."""
    return shutil.which("etcd")


def etcd_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    first = out.strip().splitlines()[:1]
    return first[0].replace("etcd Version: ", "") if first else "?"


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int          # where etcd listens for peers
    advertised_port: int    # what other members dial: the delay proxy, or peer_port without delay
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None
    proxy: subprocess.Popen | None = None

    @property
    def client_addr(self) -> str:
        return "127.0.0.1:%d" % self.client_port


class EtcdCluster:
    """`etcd_members` etcd processes under `root`, every peer link `rtt_ms` apart (round trip).

    ``with EtcdCluster(root, rtt_ms) as c:`` starts everything and waits for a leader;
    `leader()` names the leading member. Nothing is left running after the `with`.
    """

    def __init__(self, root: str, rtt_ms: float, etcd_path: str, size: int = etcd_members) -> None:
        assert rtt_ms >= 0 and size >= 1
        self.root, self.rtt_ms, self.etcd_path = root, rtt_ms, etcd_path
        delayed = rtt_ms > 0
        ports = free_ports(size * (3 if delayed else 2))
        self.members: list[EtcdMember] = []
        for i in range(size):
            client, peer = ports[i * (3 if delayed else 2)], ports[i * (3 if delayed else 2) + 1]
            advertised = ports[i * 3 + 2] if delayed else peer
            self.members.append(EtcdMember("m%d" % (i + 1), client, peer, advertised,
                                           os.path.join(root, "m%d" % (i + 1)), os.path.join(root, "m%d.log" % (i + 1))))
        self.token = "raftstore-bench-%s" % secrets.token_hex(4)

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # --- processes --------------------------------------------------------------------------------

    def start(self) -> None:
        if self.rtt_ms > 0:
            for m in self.members:
                m.proxy = subprocess.Popen(
                    [sys.executable, "-m", "bench.delay_proxy", "--listen", "127.0.0.1:%d" % m.advertised_port,
                     "--target", "127.0.0.1:%d" % m.peer_port, "--delay-ms", repr(self.rtt_ms / 2.0)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            deadline = time.monotonic() + proxy_ready_s_max
            for m in self.members:
                line = _readline_by(m.proxy, deadline)
                if not line.startswith("ready"):
                    raise EtcdError("delay proxy for %s did not start: %r" % (m.name, line))
        initial = ",".join("%s=http://127.0.0.1:%d" % (m.name, m.advertised_port) for m in self.members)
        for m in self.members:
            cmd = [self.etcd_path, "--name", m.name, "--data-dir", m.data_dir,
                   "--listen-client-urls", "http://%s" % m.client_addr,
                   "--advertise-client-urls", "http://%s" % m.client_addr,
                   "--listen-peer-urls", "http://127.0.0.1:%d" % m.peer_port,
                   "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % m.advertised_port,
                   "--initial-cluster", initial, "--initial-cluster-token", self.token,
                   "--initial-cluster-state", "new"]
            with open(m.log_path, "a") as log:
                m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        self.wait_leader(etcd_ready_s_max)

    def cleanup(self) -> None:
        """Stop every etcd member (SIGTERM, then SIGKILL) and every proxy, by PID; reap them."""
        first: BaseException | None = None
        for m in self.members:
            for proc, graceful in ((m.proc, True), (m.proxy, False)):
                try:
                    _stop(proc, graceful)
                except BaseException as exc:   # keep going: a second Ctrl-C must not leave the rest running
                    first = first or exc
            if m.proxy is not None and m.proxy.stdout is not None:
                m.proxy.stdout.close()
        if first is not None:
            for m in self.members:
                for proc in (m.proc, m.proxy):
                    if proc is not None and proc.poll() is None:
                        try:
                            os.kill(proc.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            raise first

    def pids(self) -> list[int]:
        return [p.pid for m in self.members for p in (m.proc, m.proxy) if p is not None and p.poll() is None]

    # --- status -----------------------------------------------------------------------------------

    def status(self, m: EtcdMember) -> dict | None:
        """The member's /v3/maintenance/status answer, None if it does not answer."""
        conn = http.client.HTTPConnection("127.0.0.1", m.client_port, timeout=status_timeout_s)
        try:
            conn.request("POST", "/v3/maintenance/status", body=b"{}", headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            return json.loads(body) if resp.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def leader(self) -> EtcdMember | None:
        """The member that every member names as leader, None if they do not agree (yet)."""
        ids, leaders = {}, set()
        for m in self.members:
            s = self.status(m)
            if s is None:
                return None
            ids[str(s.get("header", {}).get("member_id"))] = m
            leaders.add(str(s.get("leader")))
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def wait_leader(self, timeout_s: float) -> EtcdMember:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise EtcdError("etcd member %s exited with %s; log: %s\n%s" % (
                        m.name, m.proc.returncode, m.log_path, _tail(m.log_path)))
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.2)
        raise EtcdError("etcd members did not agree on a leader within %.0f s; logs in %s" % (timeout_s, self.root))


def _readline_by(proc: subprocess.Popen, deadline: float) -> str:
    """First line of a child's stdout, or '' if it exits or the deadline passes first."""
    import selectors
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            return ""
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen | None, graceful: bool) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(etcd_stop_s_max)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(etcd_stop_s_max)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
