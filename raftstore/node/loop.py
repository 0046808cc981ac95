"""A raftstore node: one process per region, hosting its replicas behind two ports.

Threads: the *node loop* owns the peer port and every Raft group (pysyncobj's callbacks, apply
and journal I/O all happen there); the main thread runs asyncio for the client port. A client
request becomes a proposal (`RaftGroup.propose` is thread-safe); its answer comes back on the
node loop and is handed to asyncio with `call_soon_threadsafe`.

Each loop iteration: read peer frames and dispatch them to groups, tick the groups, sync every
dirty journal, then release queued frames (peer.PeerNetwork.flush): no acknowledgement leaves
before what it acknowledges is on disk, and all groups share one round of syncs.

Data directory: `node.json` (identity, cluster members, this directory's incarnation and the
one each member was seen running with -- a wiped node id cannot rejoin: Node._on_hello --
written once the cluster forms),
`hlc.ceiling`, `store.sqlite` (MVCC data and applied indexes), `raft/` (journals and
snapshots) and `LOCK` (held while the node runs).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import fcntl
import heapq
import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

from pysyncobj.transport import Transport

from hlc import HLC, MAX_OFFSET_NS_DEFAULT, ClockOffsetError, FileCeilingStore, SystemClock, Timestamp
from raftstore import constants
from raftstore.kvserver.batch import BATCH_OP, Header, is_follower_read, writes_nothing
from raftstore.kvserver.consistency import CHECKSUM_OP, Checksum, ChecksumRegistry, ConsistencyChecker
from raftstore.kvserver.ranges import MISMATCH, pretty_key
from raftstore.kvserver.store import ADMIN_SPLIT, Store, StoreConfig
from raftstore.loglimit import LogLimiter
from raftstore.node.clockcheck import OffsetMonitor, probe_is_valid
from raftstore.node.metrics import NodeMetrics, TimedLogFile
from raftstore.node.peer import (CHECKSUM_REPLY, CHECKSUM_REQUEST, CLOSED, HEARTBEAT, PROPOSE, PROPOSE_REPLY, RAFT, PeerNetwork,
                                  parse_addr)
from raftstore.node.wan import LatencyMatrix
from raftstore.raft.commands import Outcome, Rejection, new_command_id
from raftstore.raft.failstop import FailStop, exit_now
from raftstore.raft.group import run_in_thread
from raftstore.raft.journal import fsync_dir
from raftstore.router import Router
from raftstore.storage.diskspace import DiskGuard
from raftstore.storage.mvcc import MVCCStore

logger = logging.getLogger(__name__)

READ_OPS = frozenset({"get", "scan"})   # the client ops that write nothing
CLIENT_OPS = READ_OPS | {"put", "delete", "cas", "put_if", BATCH_OP}
STORE_OPS = frozenset({"meta_put", "alloc_range_id", "split", "lease", CHECKSUM_OP, ADMIN_SPLIT})   # a node's own commands
PEER_PROPOSABLE = CLIENT_OPS | STORE_OPS   # what a peer may hand a range's leader


def _complete(replies: list) -> None:
    """On an asyncio loop: complete the futures of one node-loop iteration's replies (one that
    its waiter gave up on, cancelled, is skipped)."""
    for fut, value in replies:
        if fut.done():
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)


_UNSEEN = object()   # Node.active's answer for a member not seen running yet


def _wiped(node_id: int) -> str:
    """Why a node id seen running with another data directory is refused (Node._on_hello)."""
    return ("node %d's data directory was wiped: it cannot rejoin under its old id (what it acknowledged is "
            "gone); a cluster's members are fixed when it forms, so the others go on without it: "
            "a replacement node cannot join yet" % node_id)


class StartupError(Exception):
    """The node cannot start; the message is the one line the user sees."""


@dataclass
class NodeConfig:
    node_id: int
    region: str
    peer_addr: str
    sql_addr: str
    join: list[str]
    data_dir: str
    secret: bytes
    raft_conf: dict | None = None
    range_bytes_max: int = constants.range_bytes_max
    latency: "LatencyMatrix | None" = None     # WAN emulation between regions (raftstore.node.wan)
    clock_skew_ns: int = 0                     # added to the system clock: for clock-offset tests only
    faults_file: str | None = None             # tests only: a partition to play (Node._check_faults)
    unavailable_s: float = constants.range_unavailable_s   # a request unanswered this long fails "unavailable"
    lease_s: float = constants.lease_duration_s   # a range lease's length (Store.lease_ns)
    gc_ttl_s: float = constants.gc_ttl_s          # versions hidden longer than this are removed (kvserver.gc)
    gc_interval_s: float = constants.gc_interval_s
    primary_region: str | None = None          # leases move to the replica in this region (Node._preferred_holder)
    client_connections_max: int = constants.client_connections_max   # the client port's limits (server.client_port)
    client_idle_timeout_s: float = constants.client_idle_timeout_s
    client_memory_bytes: int = constants.client_memory_bytes
    sql_result_bytes_max: int = constants.sql_result_bytes_max
    ignore_stasis: bool = False                # tests only: a broken build that serves a lease to its very end
    disk_reserve_bytes: int | None = None      # free-space reserve (raftstore.storage.diskspace); None: the default
    disk_ballast_bytes: int | None = None      # ballast file size; None: the default, 0: none
    refuse_writes: tuple[bytes, bytes] | None = None   # tests only: [start, end) whose writes act leaderless here
    http_addr: str | None = None               # /metrics and /health (raftstore.server.http_port); None: not served
    pg_addr: str | None = None                 # the PostgreSQL port (raftstore.server.pg_port); None: not served
    statement_timeout_ms: int = 0              # the SQL gateway's default statement_timeout (sql/gateway.py); 0: none


class GroupTransport(Transport):
    """A group's pysyncobj transport: frames tagged with the group id on the node's links."""

    flushes_after_sync = True

    def __init__(self, node: "Node", group_id: int, syncObj, selfNode, otherNodes):
        super().__init__(syncObj, selfNode, otherNodes)
        self.node, self.group_id = node, group_id
        self.peers = {int(n.id): n for n in otherNodes}
        node.transports[group_id] = self
        syncObj.addOnTickCallback(self._first_tick)
        self._started = False

    def _first_tick(self):
        # SyncObj installs its callbacks after constructing the transport: announce the peers
        # that are already connected on the group's first tick.
        if not self._started:
            self._started = True
            for pid in self.node.net.peers:
                if pid in self.peers:
                    self._onNodeConnected(self.peers[pid])

    def send(self, node, message):
        return self.node.net.send(int(node.id), [RAFT, self.group_id, message])


class _CrashOnlyCeiling:
    """The HLC's ceiling file (hlc.FileCeilingStore), crash-only like every other storage write:
    a save that fails stops the node (FailStop, on the node loop, which alone uses the clock).
    No timestamp may be issued above a ceiling that is not on disk, and the loop needs them.
    Saves come from the clock (a timestamp at the ceiling) and from the node's save-ahead thread
    (Node._save_ceiling_ahead): one at a time, and one not above what is on disk is not written
    again (the file only grows)."""

    def __init__(self, inner: FileCeilingStore) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._saved: int | None = None

    def load(self) -> int | None:
        return self._inner.load()

    def save(self, ns: int) -> None:
        with self._lock:
            if self._saved is not None and ns <= self._saved:
                return
            try:
                self._inner.save(ns)
            except OSError as exc:
                raise FailStop("HLC ceiling %s: saving failed: %s" % (self._inner.path, exc)) from exc
            self._saved = ns


def _write_json_durably(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.store: Store | None = None
        self.transports: dict[int, GroupTransport] = {}
        self._calls: collections.deque = collections.deque()
        # Held by the node loop's thread except while it waits in select (PeerNetwork.poll): a
        # client port thread that takes it then runs a call itself (`_call_soon`).
        self._loop_lock = threading.Lock()
        self._loop_running = False
        self._replies: list = []   # (asyncio future, answer) completed this iteration (_reply)
        self.members: dict[int, dict] | None = None   # node id -> {"addr", "region"}
        # Members seen running with their data: node id -> the incarnation (the id of its data
        # directory, made when it was empty) they ran with; None: seen before incarnations were kept.
        self.active: dict[int, str | None] = {}
        self.incarnation = secrets.token_hex(8)      # this data directory's (node.json keeps it)
        self._peer_incarnation: dict[int, str | None] = {}   # what each connected peer's HELLO said
        self.fatal: str | None = None
        self.clock_offset_errors = 0
        self.offsets = OffsetMonitor(MAX_OFFSET_NS_DEFAULT)
        self.clock_unfit: str | None = None       # why this node stopped serving (clock), or None
        self.protected: dict[int, tuple[int, int]] = {}   # id(owner) -> the timestamp its running statement reads at (protect)
        self._closed_owed_full: set[int] = set()  # peers whose next CLOSED frame lists every member
        self._closed_full_at = 0.0                # when every peer gets every member again
        self.log_limit = LogLimiter()   # lines that repeat per heartbeat, tick or request (raftstore.loglimit)
        self.join_hellos: dict[str, dict] = {}
        self._next_forming_log = 0.0
        self._stop = threading.Event()
        self.loop_busy_max_s = 0.0   # longest node-loop iteration (time not spent waiting in poll)
        self.loop_stalls: collections.deque = collections.deque(maxlen=constants.loop_stalls_kept)
        self.loop_stall_count = 0    # every such iteration, for metrics (loop_stalls keeps the last few)
        self.metrics = NodeMetrics()   # observed where things happen; the loop's totals: counters()
        self._loop_thread: threading.Thread | None = None
        # Client commands this node handed to a range's leader on another node, by request id:
        # (callback, leader node id, deadline, read-only). Answered by PROPOSE_REPLY, or at the
        # deadline or when the link to the leader drops: ambiguous (it may have been proposed),
        # or, for a read, not committed (it changed nothing either way; retry).
        # request id -> (done, peer, deadline, read only, range id)
        self._forwarded: dict[int, tuple[Callable[[Outcome, Any], None], int, float, bool, int]] = {}
        self._forward_ids = itertools.count(1)
        self.proposals = {"here": 0, "forwarded": 0, "for_peers": 0, "near_here": 0}   # client commands, by where proposed
        self._deferred: list[tuple[float, Callable[[], None]]] = []   # (due, fn): run again on the loop later
        self._next_faults_check = 0.0
        self._timeouts: list = []   # (due, id, fn): requests' unavailable deadlines (a heap)
        self._timeout_ids = itertools.count()
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None   # leaseholder reads (_read_on_reader)
        self._reader_local = threading.local()
        self._reader_conns: list = []
        # Where a client's command goes (on the node loop): its own range cache, filled by
        # lookups in this node's view and by the descriptors refusing replicas return.
        self.router = Router(lookup=lambda key: self.store.descriptor_for(key) if self.store is not None else None,
                             send=lambda desc, op, args, done, cid: self._propose_at_leader(
                                 self.store, desc.range_id, op, args, done, cid),
                             later=self._later, now=time.monotonic, send_near=self._send_near,
                             negotiate=lambda spans: self.store.negotiate_closed(spans) if self.store is not None else None)
        self.checksums = ChecksumRegistry()
        self.consistency = ConsistencyChecker(cfg.node_id, self.checksums, send_request=self._send_checksum_request,
                                              send_reply=self._send_checksum_reply, applied_index=self._applied_index)
        self._open_resources()

    # --- start-up: every check that can fail, before anything runs --------------------------
    def _open_resources(self) -> None:
        cfg = self.cfg
        try:
            os.makedirs(os.path.join(cfg.data_dir, "raft"), exist_ok=True)
            self._lock = open(os.path.join(cfg.data_dir, "LOCK"), "a+")
        except OSError as exc:
            raise StartupError("data dir %s is not usable: %s" % (cfg.data_dir, exc.strerror or exc)) from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StartupError("data dir %s is in use by another raftstore process" % cfg.data_dir) from None
        self.peer_sock = self._bind(cfg.peer_addr, "--peer-addr")
        self.sql_sock = self._bind(cfg.sql_addr, "--sql-addr")
        self.http_sock = self._bind(cfg.http_addr, "--http-addr") if cfg.http_addr is not None else None
        self.pg_sock = self._bind(cfg.pg_addr, "--pg-addr") if cfg.pg_addr is not None else None
        meta_path = os.path.join(cfg.data_dir, "node.json")
        if os.path.exists(meta_path):
            try:
                with open(meta_path) as f:
                    meta = json.load(f)
                members = {int(k): v for k, v in meta["members"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StartupError("%s is unreadable: %s" % (meta_path, exc)) from None
            if meta.get("node_id") != cfg.node_id:
                raise StartupError("data dir %s belongs to node %s, not --node-id %d"
                                   % (cfg.data_dir, meta.get("node_id"), cfg.node_id))
            if meta.get("region", cfg.region) != cfg.region:
                raise StartupError("data dir %s was created for region %s, not --region %s: a node keeps its region "
                                   "(start it with --region %s)" % (cfg.data_dir, meta["region"], cfg.region, meta["region"]))
            self.members = members
            active = meta.get("active", [])
            # A list: written before incarnations were kept (no data directory's id is known).
            self.active = ({int(k): v for k, v in active.items()} if isinstance(active, dict)
                           else dict.fromkeys(active))
        elif os.listdir(os.path.join(cfg.data_dir, "raft")):
            raise StartupError("data dir %s has Raft data but no node.json; refusing to guess" % cfg.data_dir)
        self.meta_path = meta_path
        if self.members is not None:
            if isinstance(meta.get("incarnation"), str):
                self.incarnation = meta["incarnation"]
            else:
                self._persist_meta()   # keep the one just made: peers will remember it
        try:
            self.disk = DiskGuard(cfg.data_dir, reserve_bytes=cfg.disk_reserve_bytes, ballast_bytes=cfg.disk_ballast_bytes)
            self.disk.ensure_ballast()
            self.mvcc = MVCCStore(os.path.join(cfg.data_dir, "store.sqlite"))
            self.phys = SystemClock(skew_ns=cfg.clock_skew_ns)
            self.hlc_ceiling = _CrashOnlyCeiling(FileCeilingStore(os.path.join(cfg.data_dir, "hlc.ceiling")))
            self.hlc = HLC(self.phys, ceiling_store=self.hlc_ceiling)
            self._ceiling_saving = False   # a save ahead is under way (_save_ceiling_ahead)
        except Exception as exc:
            raise StartupError("data dir %s: %s" % (cfg.data_dir, exc)) from None
        self.net = PeerNetwork(listen_sock=self.peer_sock, secret=self.cfg.secret, hello=self._hello,
                               on_hello=self._on_hello, on_raft=self._on_raft, on_peer_up=self._on_peer_up,
                               on_peer_down=self._on_peer_down, on_reject=self._on_reject, node_id=cfg.node_id,
                               on_heartbeat=self._on_heartbeat, delay_s=self._delay_s,
                               on_checksum_request=self.consistency.on_request,
                               on_checksum_reply=lambda peer_id, range_id, index, checksum, error:
                               self.consistency.on_reply(peer_id, range_id, index, Checksum(checksum, error)),
                               on_propose=self._on_propose, on_propose_reply=self._on_propose_reply,
                               on_closed=self._on_closed)

    @staticmethod
    def _bind(addr: str, flag: str) -> socket.socket:
        try:
            host, port = parse_addr(addr)
        except ValueError as exc:
            raise StartupError("%s: %s" % (flag, exc)) from None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(constants.listen_backlog)
        except OSError as exc:
            sock.close()
            raise StartupError("%s %s: cannot listen: %s" % (flag, addr, exc.strerror or exc)) from None
        return sock

    # --- membership ------------------------------------------------------------------------------
    def _hello(self) -> dict:
        active = {str(k): v for k, v in self.active.items()}
        if self.members:
            active[str(self.node_id)] = self.incarnation
        return {"node_id": self.node_id, "region": self.cfg.region, "addr": self.cfg.peer_addr,
                "fresh": self.members is None, "incarnation": self.incarnation,
                "members": {str(k): v for k, v in self.members.items()} if self.members else None,
                "active": active}

    def _on_hello(self, hello: dict) -> str | None:
        """Admit a peer's connection (None) or say why not. A member's data directory has an
        incarnation, made when it was empty; once any member has seen a node run with one, that
        node id never runs with another: a wiped directory lost what it acknowledged. Both sides
        check, so which of the two connects first does not matter."""
        pid = hello["node_id"]
        if pid == self.node_id:
            return "node id %d is already used by the node at %s" % (pid, self.cfg.peer_addr)
        incarnation = hello.get("incarnation") if isinstance(hello.get("incarnation"), str) else None
        if self._saw_us_with_other_data(hello):
            self.fatal = _wiped(self.node_id)
            return "wiped"
        if self.members is not None:
            if pid not in self.members:
                return "node %d is not a member of this cluster (members: %s)" % (pid, sorted(self.members))
            if pid in self.active and (hello.get("fresh") if self.active[pid] is None
                                       else incarnation != self.active[pid]):
                return _wiped(pid)
            self._peer_incarnation[pid] = incarnation
            if not hello.get("fresh"):
                self._seen_running(pid)
            return None
        # Still forming: remember who answered; adopt an already-formed cluster's members.
        members = hello.get("members")
        if isinstance(members, dict):
            if str(self.node_id) not in members:
                self.fatal = "the cluster at %s was formed without node %d" % (hello["addr"], self.node_id)
                return "not a member"
            self._peer_incarnation[pid] = incarnation
            self._form({int(k): v for k, v in members.items()})
            return None
        self._peer_incarnation[pid] = incarnation
        self.join_hellos[hello["addr"]] = hello
        self._maybe_form()
        return None

    def _saw_us_with_other_data(self, hello: dict) -> bool:
        """Whether a peer's HELLO remembers this node id running with another data directory
        (one recorded before incarnations were kept counts when this one started empty)."""
        active = hello.get("active")
        if not isinstance(active, dict) or str(self.node_id) not in active:
            return False
        seen = active[str(self.node_id)]
        return self.members is None if seen is None else seen != self.incarnation

    def _seen_running(self, pid: int) -> None:
        """A member sent what only a formed node sends (a Raft message, a heartbeat naming its
        leaderships, a HELLO that is not fresh): remember the data directory it runs with."""
        incarnation = self._peer_incarnation.get(pid)
        if self.members is not None and pid in self.members and self.active.get(pid, _UNSEEN) != incarnation:
            self.active[pid] = incarnation
            self._persist_meta()

    def _say_whom_we_wait_for(self, now: float) -> None:
        """While the cluster has not formed, say so now and then, naming the peers not heard from."""
        if self.members is not None or now < self._next_forming_log:
            return
        self._next_forming_log = now + constants.forming_log_interval_s
        missing = [a for a in self.cfg.join if a != self.cfg.peer_addr and a not in self.join_hellos]
        logger.info("waiting for the cluster to form: heard from %d of the %d other --join nodes; waiting for %s",
                    len(self.cfg.join) - 1 - len(missing), len(self.cfg.join) - 1, ", ".join(missing))

    def _maybe_form(self) -> None:
        wanted = [a for a in self.cfg.join if a != self.cfg.peer_addr]
        if self.members is None and all(a in self.join_hellos for a in wanted):
            members = {self.node_id: {"addr": self.cfg.peer_addr, "region": self.cfg.region}}
            for a in wanted:
                h = self.join_hellos[a]
                members[h["node_id"]] = {"addr": h["addr"], "region": h["region"]}
            self._form(members)

    def _form(self, members: dict[int, dict]) -> None:
        self.members = members
        self._persist_meta()
        logger.info("cluster formed: %s", {k: v["region"] for k, v in sorted(members.items())})
        self._start_groups()

    def _persist_meta(self) -> None:
        _write_json_durably(self.meta_path, {"node_id": self.node_id, "region": self.cfg.region,
                                             "members": {str(k): v for k, v in self.members.items()},
                                             "incarnation": self.incarnation,
                                             "active": {str(k): v for k, v in sorted(self.active.items())}})

    def _on_reject(self, reason: str) -> None:
        if "wiped" in reason or "not a member" in reason or "already used" in reason:
            self.fatal = reason

    # --- ranges ----------------------------------------------------------------------------------
    def _start_groups(self) -> None:
        # Appends go out once per tick with all of its entries (RaftGroup._checkCommandsToApply),
        # not one per proposal; pysyncobj then also opens no wake-up pipe per group.
        conf = dict(appendEntriesUseBatch=True)
        conf.update(self.cfg.raft_conf or {})
        self.store = Store(StoreConfig(node_id=self.node_id, replicas=sorted(self.members),
                                       raft_dir=os.path.join(self.cfg.data_dir, "raft"),
                                       range_bytes_max=self.cfg.range_bytes_max, raft_conf=conf,
                                       gc_ttl_s=self.cfg.gc_ttl_s, gc_interval_s=self.cfg.gc_interval_s),
                           self.mvcc, open_journal=lambda path: TimedLogFile(path, self.metrics.journal_fsync_seconds),
                           transport_class=lambda gid: (lambda so, s, o: GroupTransport(self, gid, so, s, o)),
                           now_ts=lambda: self.hlc.now().to_wire(), snapshot_executor=run_in_thread,
                           checksums=self.checksums, propose_at_leader=self._propose_store_command,
                           peer_rtt_s=self.peer_rtt_s, read_executor=self._read_on_reader,
                           observe_ts=lambda ts: self.hlc.update(Timestamp.from_wire(list(ts))),
                           max_offset_ns=self.hlc.max_offset_ns,
                           stasis_ns=0 if self.cfg.ignore_stasis else None, lease_ns=int(self.cfg.lease_s * 1e9),
                           preferred_holder=self._preferred_holder, protected_here=self.protected_min)
        self.store.disk_low = self.disk.check()
        self.store.set_clock_unfit(self.clock_unfit is not None)
        self.store.start()

    def _preferred_holder(self, replicas: tuple, home: str | None) -> int | None:
        """Where a range's lease should be: a connected replica in its home region (`home`, from
        the zone holding its keys: kvserver/zones.py), else in the primary region
        (--primary-region), when this node is not in it; None: where it is (also when no
        replica there is connected: the lease stays until one is)."""
        home = home or self.cfg.primary_region
        if home is None or self.cfg.region == home or not self.members:
            return None
        for nid in sorted(replicas):
            if nid != self.node_id and self.members.get(nid, {}).get("region") == home and nid in self.net.peers:
                return nid
        return None

    def _read_on_reader(self, job: Callable[[Any], Callable[[], None]], points: int | None = None) -> None:
        """The store's read executor: a leaseholder read runs on one of lease_readers threads,
        each with its own read-only SQLite connection (WAL: it reads the committed state and
        never holds up the node loop's writes), and its answer is handed back to the node loop.
        A read of `points` point keys, at most lease_read_inline_keys_max and no scan, runs here
        on the node loop's own connection instead (the store runs it only when no apply
        transaction is open: it reads the committed state too): it costs less than the two
        thread hand-offs it saves, so it delays the loop's heartbeats by no more than a message does."""
        if points is not None and points <= constants.lease_read_inline_keys_max:
            job(self.mvcc)()
            return
        if self._readers is None:
            self._readers = concurrent.futures.ThreadPoolExecutor(constants.lease_readers,
                                                                  thread_name_prefix="lease-reader")

        def run() -> None:
            reader = getattr(self._reader_local, "reader", None)
            if reader is None:
                reader = self._reader_local.reader = self.mvcc.reader()
                self._reader_conns.append(reader)
            self.call_in_loop(job(reader))
        self._readers.submit(run)

    def _on_raft(self, peer_id: int, group_id: int, message: dict) -> None:
        transport = self.transports.get(group_id)
        if transport is None and self.store is not None:
            self.store.on_unknown_group(group_id)
            transport = self.transports.get(group_id)
        if transport is None or peer_id not in transport.peers:
            return
        if self.active.get(peer_id, _UNSEEN) != self._peer_incarnation.get(peer_id):   # the hot path: no call
            self._seen_running(peer_id)
        self.store.on_message(group_id, message)
        transport._onMessageReceived(transport.peers[peer_id], message)

    def peer_rtt_s(self, peer_id: int) -> float | None:
        """The round trip to a peer: the least of its last clock probes (`Measurement.rtt_min_ns`;
        None: none fresh). Safe from any thread (the SQL gateway's EXPLAIN ANALYZE asks it from
        a worker)."""
        m = self.offsets.latest(peer_id, time.monotonic())
        return m.rtt_min_ns / 1e9 if m is not None else None

    def _delay_s(self, peer_id: int) -> float:
        if self.cfg.latency is None or not self.members or peer_id not in self.members:
            return 0.0
        return self.cfg.latency.one_way_s(self.cfg.region, self.members[peer_id]["region"])

    def _on_heartbeat(self, peer_id: int, stamp, probe=None, claims=None, disputes=None) -> None:
        if claims is not None:
            self._seen_running(peer_id)   # only a formed node names its leaderships (even none)
        if probe is not None:
            if probe_is_valid(probe):   # judged with the others at our next heartbeat (_check_clock)
                m = self.offsets.on_probe(peer_id, probe, self.phys.now_ns(), time.monotonic_ns())
                if m is not None:
                    self.metrics.peer_rtt_seconds.observe(m.rtt_ns / 1e9)
            else:
                self.log_limit.log(logger, logging.WARNING, ("malformed clock probe", peer_id),
                                   "node %d sent a malformed clock probe %r", peer_id, probe)
        if stamp is not None:
            try:
                self.hlc.update(Timestamp.from_wire(stamp))
            except ValueError:
                self.log_limit.log(logger, logging.WARNING, ("malformed clock reading", peer_id),
                                   "node %d sent a malformed clock reading %r", peer_id, stamp)
            except ClockOffsetError as exc:
                # Refuse its clock; whether it is us who is off, the offset monitor decides.
                self.clock_offset_errors += 1
                self.log_limit.log(logger, logging.ERROR, ("clock offset", peer_id),   # one per heartbeat otherwise
                                   "node %d: %s (%d such heartbeats so far)", peer_id, exc, self.clock_offset_errors)
        if self.store is not None:
            self.store.on_node_heartbeat(peer_id, claims, disputes)

    def _on_closed(self, peer_id: int, seq: int, full: bool, ts: list, updates: list, removed: list,
                   extra: dict | None = None) -> None:
        if self.store is not None:
            self.store.on_closed_frame(peer_id, seq, full, ts, updates, removed, extra)

    def protect(self, owner: object, ts: tuple[int, int] | None) -> None:
        """A statement of `owner` (a SQL session's KV) reads at `ts` (None: it ended): GC stays
        at or below the oldest such timestamp, here and at every peer (Store.gc_protected).
        Called from the client port's thread: one dict operation, atomic under the GIL."""
        if ts is None:
            self.protected.pop(id(owner), None)
        else:
            self.protected[id(owner)] = (ts[0], ts[1])

    def protected_min(self) -> tuple[int, int] | None:
        found = list(self.protected.values())
        return min(found) if found else None

    def _send_closed(self) -> None:
        """The side transport (kvserver.closedts): close every range this node serves and tell
        each peer what changed (a peer connected since the last frame gets every member)."""
        seq, ts, updates, removed = self.store.side_transport()
        extra = self.store.side_extra()
        if time.monotonic() >= self._closed_full_at:
            self._closed_full_at = time.monotonic() + constants.closed_full_every_s
            self._closed_owed_full.update(self.net.peers)
        full = self.store.closed_sender.full() if self._closed_owed_full else None
        for pid in list(self.net.peers):
            if pid in self._closed_owed_full:
                if self.net.send(pid, [CLOSED, seq, True, list(ts), full, [], extra]):
                    self._closed_owed_full.discard(pid)
            else:
                self.net.send(pid, [CLOSED, seq, False, list(ts), updates, removed, extra])

    def _on_peer_up(self, peer_id: int) -> None:
        self._closed_owed_full.add(peer_id)
        for t in self.transports.values():
            if peer_id in t.peers:
                t._onNodeConnected(t.peers[peer_id])
        if self.store is not None:
            self.store.on_peer_up(peer_id)

    def _on_peer_down(self, peer_id: int) -> None:
        for t in self.transports.values():
            if peer_id in t.peers:
                t._onNodeDisconnected(t.peers[peer_id])
        if self.store is not None:
            self.store.on_peer_down(peer_id)
        for req in [r for r, entry in self._forwarded.items() if entry[1] == peer_id]:
            entry = self._forwarded[req]
            if entry[3] and self.store is not None:
                # A read changes nothing: sent again (the router, after a not-leader answer) to
                # the leader this node finds next, rather than failed.
                del self._forwarded[req]
                entry[0](Outcome.NOT_COMMITTED, self.store.not_leader(
                    entry[4], "lost its link to n%d, r%d's leader, before it answered a read" % (peer_id, entry[4])))
                continue
            self._forward_unanswered(req, "the link to n%d, the range's leader, dropped before it answered" % peer_id)

    # --- only a range's leader proposes a client's command (on the node loop) ---------------------
    def _propose_at_leader(self, store: Store, range_id: int, op: str, args: dict,
                           done: Callable[[Outcome, Any], None], command_id: bytes | None,
                           waited_from: float | None = None) -> None:
        """Propose here if this node leads the range; else hand the command to the leader over
        the peer link (PROPOSE), never to pysyncobj's forwarding. Raises ValueError, before
        anything is sent, for a command too large to replicate."""
        group = store.groups.get(range_id)
        if group is None or group.is_leader():
            self.proposals["here"] += 1
            store.evaluate_and_propose(range_id, op, args, done, command_id=command_id)   # (answers a range not hosted)
            return
        cid = command_id if command_id is not None else new_command_id()
        if waited_from is None and not (op == BATCH_OP and writes_nothing(op, args)):
            # Checked once, before anything waits or is sent; a read batch is never replicated
            # (its leaseholder serves it, Store._serve_read): a frame too large for the peer link
            # is refused when it is sent.
            store.check_command_size(op, args, cid)
        leader = group.leader_id()
        if leader is None or int(leader) not in self.net.peers:
            # A range just split off, an election, or a leader this node has no link to (it
            # died, or is cut off; the group believes in it until its election timeout): wait
            # for a leader it can reach, as CockroachDB's gateway does, rather than fail a
            # request the next leaseholder serves within seconds. Then a definite answer: nothing
            # was sent (a write surely did not apply), given a second before the request's own
            # bound (`unavailable_s`, _send_batch), which could only say "may still commit".
            waited_from = waited_from if waited_from is not None else time.monotonic()
            wait_s = max(self.cfg.unavailable_s / 2, self.cfg.unavailable_s - constants.leader_wait_margin_s)
            if time.monotonic() - waited_from >= wait_s:
                done(Outcome.NOT_COMMITTED, "unavailable: n%d has found no leader of r%d it can reach in %.1f s (an "
                     "election is under way, or the leader is down or cut off); retry" % (self.node_id, range_id, wait_s))
            else:
                self._later(0.0, done, lambda: self._propose_at_leader(store, range_id, op, args, done, cid,
                                                                       waited_from=waited_from))
            return
        self._forward(int(leader), range_id, op, args, done, cid)

    def _forward(self, peer: int, range_id: int, op: str, args: dict, done: Callable[[Outcome, Any], None],
                 cid: bytes) -> None:
        req = next(self._forward_ids)
        if not self.net.send(peer, [PROPOSE, req, range_id, op, args, cid]):
            done(Outcome.NOT_COMMITTED, "n%d, the leader of r%d, is not connected to this node; retry" % (peer, range_id))
            return
        self.proposals["forwarded"] += 1
        self._forwarded[req] = (done, peer, time.monotonic() + constants.forwarded_proposal_timeout_s,
                               writes_nothing(op, args), range_id)

    def _send_near(self, desc, op: str, args: dict, done: Callable[[Outcome, Any], None],
                   command_id: bytes | None) -> None:
        """A follower read (kvserver.closedts) goes to the range's nearest replica: this node's
        own when it holds an initialized one, else the replica with the least measured round
        trip (`peer_rtt_s`: under emulation, the matrix's), else the leader."""
        rep = self.store.replicas.get(desc.range_id) if self.store is not None else None
        if rep is not None and rep.desc is not None:
            self.proposals["near_here"] += 1
            self.store.evaluate_and_propose(desc.range_id, op, args, done, command_id=command_id)
            return
        rtts = [(self.peer_rtt_s(nid), nid) for nid in desc.replicas if nid != self.node_id and nid in self.net.peers]
        known = sorted((rtt, nid) for rtt, nid in rtts if rtt is not None)
        if not known:
            self._propose_at_leader(self.store, desc.range_id, op, args, done, command_id)
            return
        self._forward(known[0][1], desc.range_id, op, args, done, command_id if command_id is not None else new_command_id())

    def _propose_store_command(self, range_id: int, op: str, args: dict, done: Callable[[Outcome, Any], None]) -> None:
        """The store's own commands (meta updates, range ids, splits, consistency checks) go to
        the range's leader like a client's (never through pysyncobj's forwarding)."""
        self._propose_at_leader(self.store, range_id, op, args, done, None)

    def _on_propose(self, peer_id: int, request_id: int, range_id: int, op: str, args: dict, command_id: bytes) -> None:
        """A follower's node hands us a client's command for a range we lead."""
        def reply(outcome: Outcome, result: Any) -> None:
            wire = result.to_wire() if isinstance(result, Rejection) else (
                result if outcome is Outcome.COMMITTED else str(result))
            self.net.send(peer_id, [PROPOSE_REPLY, request_id, outcome.value, wire])
        group = self.store.groups.get(range_id) if self.store is not None else None
        if op not in PEER_PROPOSABLE:
            reply(Outcome.NOT_COMMITTED, "n%d does not take %r commands from peers" % (self.node_id, op))
        elif group is None:
            reply(Outcome.NOT_COMMITTED, "%s: range r%d is not hosted on n%d" % (MISMATCH, range_id, self.node_id))
        elif not group.is_leader() and not is_follower_read(op, args):
            reply(Outcome.NOT_COMMITTED, self.store.not_leader(range_id, "does not lead r%d" % range_id))
        else:
            self.proposals["for_peers"] += 1
            try:
                self.store.evaluate_and_propose(range_id, op, args, reply, command_id=command_id)
            except ValueError as exc:
                reply(Outcome.NOT_COMMITTED, "refused by n%d before proposing: %s" % (self.node_id, exc))

    def _on_propose_reply(self, peer_id: int, request_id: int, outcome: str, result: Any) -> None:
        entry = self._forwarded.get(request_id)
        if entry is None or entry[1] != peer_id:
            return   # answered already (timed out, or the link dropped)
        del self._forwarded[request_id]
        answer = Outcome(outcome)
        typed = answer is Outcome.REJECTED or (answer is not Outcome.COMMITTED and isinstance(result, dict))
        entry[0](answer, Rejection.from_wire(result) if typed else result)

    def _later(self, due: float, done: Callable[[Outcome, Any], None], attempt: Callable[[], None]) -> None:
        """Run `attempt` (a command's next try) on the loop at the first tick at or after `due`.
        Its size was checked on the first try, so a ValueError is not expected; should one come,
        `done` answers it rather than letting it stop the loop."""
        def run() -> None:
            try:
                attempt()
            except ValueError as exc:
                done(Outcome.NOT_COMMITTED, "refused before proposing: %s" % exc)
        self._deferred.append((due, run))

    def _expire_forwarded(self, now: float) -> None:
        expired = []
        for req, entry in self._forwarded.items():   # inserted in deadline order: one timeout for all
            if entry[2] > now:
                break
            expired.append(req)
        for req in expired:
            self._forward_unanswered(req, "n%d, the range's leader, did not answer in %.0f s"
                                     % (self._forwarded[req][1], constants.forwarded_proposal_timeout_s))

    def _forward_unanswered(self, request_id: int, why: str) -> None:
        done, _, _, read_only, _ = self._forwarded.pop(request_id)
        if read_only:
            done(Outcome.NOT_COMMITTED, "%s; a read changes nothing, retry" % why)
        else:
            done(Outcome.AMBIGUOUS, "%s; the command may have committed" % why)

    # --- consistency checks (raftstore.kvserver.consistency; on the node loop) ------------------------------
    def _applied_index(self, range_id: int) -> int | None:
        rep = self.store.replicas.get(range_id) if self.store is not None else None
        return rep.applied_index() if rep is not None and rep.desc is not None else None

    def _send_checksum_request(self, peer_id: int, range_id: int, index: int) -> bool:
        return self.net.send(peer_id, [CHECKSUM_REQUEST, range_id, index])

    def _send_checksum_reply(self, peer_id: int, range_id: int, index: int, answer: Checksum) -> bool:
        error = answer.error[:constants.consistency_error_chars_max] if answer.error is not None else None
        return self.net.send(peer_id, [CHECKSUM_REPLY, range_id, index, answer.checksum, error])

    async def check_consistency(self, start: bytes = b"", end: bytes | None = None) -> list[dict]:
        """Check every range overlapping `[start, end)` now (raftstore.kvserver.consistency): one result
        map per range, in key order. Bounded: each range's command answers within its proposal
        timeout, its replicas' checksums within consistency_report_timeout_s."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(results: list[dict]) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(results))

        def run() -> None:
            if self.store is None:
                done([])
                return
            self.consistency.check(self.store.descriptors_overlapping(start, end), self._propose_store_command, done)
        self.call_in_loop(run)
        return await fut

    # --- the node loop ---------------------------------------------------------------------------
    def start_loop(self) -> None:
        self._loop_thread = threading.Thread(target=self._loop, name="node-loop", daemon=True)
        self._loop_thread.start()

    def _loop(self) -> None:
        """The node loop. Crash-only: a storage error anywhere in it (FailStop), or any other
        exception, ends the process at once with one log line (failstop.exit_now); a restart
        replays from what is on disk. Nothing is retried over a disk we no longer trust."""
        try:
            self._run_loop()
        except FailStop as exc:
            exit_now(exc)
        except BaseException as exc:   # a bug: the loop's state is unknown, so stop the same way
            logger.exception("node loop failed")
            exit_now("node loop: %s: %s" % (type(exc).__name__, exc))

    def _run_loop(self) -> None:
        if self.members is not None:
            self._start_groups()
        else:
            self._maybe_form()   # a cluster of one (--join names only this node) forms at once
        next_tick = next_heartbeat = next_disk_check = next_closed = time.monotonic()
        self._loop_lock.acquire()   # kept after the loop ends: nothing runs its work then
        self.net.idle_lock, self._loop_running = self._loop_lock, True
        while not self._stop.is_set():
            wake_at = next_tick
            release = self.net.next_release()
            if release is not None and release - self.net.release_ahead_s() < wake_at:
                wake_at = release - self.net.release_ahead_s()   # release_synced() releases it then (peer.py)
            busy_from = time.monotonic()
            self.net.poll(max(0.0, wake_at - time.monotonic()))
            if release is not None:
                self.net.release_synced()   # WAN emulation: what is due leaves now, not after this iteration's work
            while self._calls:
                fn = self._calls.popleft()
                try:
                    fn()
                except Exception as exc:   # a bug in one request's call: one line per kind, not per request
                    self.log_limit.log(logger, logging.ERROR, ("call failed", type(exc).__qualname__),
                                       "call on the node loop failed", exc_info=True)
            if self._replies and self._nothing_unsynced():
                # Replies made by what poll and the calls brought (a peer's answer, a read of
                # committed state) rest on nothing this iteration has yet to sync or commit:
                # they leave now, not after the groups' ticks.
                self._deliver_replies()
            now = time.monotonic()
            if now >= next_disk_check:   # before the tick, so no entry is taken below the reserve
                next_disk_check = now + constants.disk_check_interval_s
                low = self.disk.check()
                if self.store is not None:
                    self.store.disk_low = low
            if self.store is not None:
                self.store.tick()
            self.consistency.sweep()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + constants.tick_interval_s
                self._save_ceiling_ahead()
                self._dial()
                self._check_faults(now)
                self._say_whom_we_wait_for(now)
                if self._forwarded:
                    self._expire_forwarded(now)
                while self._timeouts and self._timeouts[0][0] <= now:
                    heapq.heappop(self._timeouts)[2]()
                if self._deferred:
                    due = [fn for when, fn in self._deferred if when <= now]
                    self._deferred = [(when, fn) for when, fn in self._deferred if when > now]
                    for fn in due:
                        fn()
            if now >= next_closed and self.store is not None:
                next_closed = now + constants.closed_side_interval_s
                self._send_closed()
            if now >= next_heartbeat:
                next_heartbeat = now + constants.node_heartbeat_interval_s
                stamp = self.hlc.now().to_wire()
                claims = self.store.leader_claims() if self.store is not None else None
                for pid in list(self.net.peers):
                    disputes = self.store.disputes_to(pid) if self.store is not None else None
                    self.net.send(pid, [HEARTBEAT, stamp, self.offsets.probe_for(pid, self.phys.now_ns(), time.monotonic_ns()), claims, disputes])
                self._check_clock()
            if self.store is not None:
                self.store.sync()
            self.net.flush()
            if self._replies:
                self._deliver_replies()
            busy = time.monotonic() - busy_from - self.net.last_wait_s   # frames handled in poll count
            if busy > self.loop_busy_max_s:
                self.loop_busy_max_s = busy
            if busy * 1000 >= constants.loop_stall_report_ms:
                self.loop_stalls.append([round(time.time(), 3), round(busy * 1000, 1)])
                self.loop_stall_count += 1
        self._loop_running = False
        if self.store is not None:
            self.store.sync()
        self._deliver_replies()

    def _save_ceiling_ahead(self) -> None:
        """Save the HLC's ceiling half a window before a timestamp would reach it, on a thread
        (HLC.ceiling_ahead): its two fsyncs, once every half second, then never stall the
        node loop or a client's request that asks the clock for a timestamp. A failed save
        stops the node, as it would on the loop."""
        if self._ceiling_saving:
            return
        ahead = self.hlc.ceiling_ahead()
        if ahead is None:
            return
        self._ceiling_saving = True

        def save() -> None:
            try:
                self.hlc_ceiling.save(ahead)
                self.hlc.ceiling_saved(ahead)
            except FailStop as exc:
                exit_now(exc)
            finally:
                self._ceiling_saving = False
        threading.Thread(target=save, name="hlc-ceiling", daemon=True).start()

    def _check_faults(self, now: float) -> None:
        """Tests only: every faults_check_interval_s, the partition the file named by
        cfg.faults_file asks for ({"cut": [peer node ids]}: frames to and from them are lost;
        a missing file cuts nothing). A malformed file is logged and changes nothing."""
        path = self.cfg.faults_file
        if path is None or now < self._next_faults_check:
            return
        self._next_faults_check = now + constants.faults_check_interval_s
        try:
            with open(path) as f:
                faults = json.load(f)
            cut = frozenset(int(p) for p in faults.get("cut", []))
        except FileNotFoundError:
            cut = frozenset()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self.log_limit.log(logger, logging.ERROR, "faults file unreadable",   # read every 50 ms
                               "faults file %s is unreadable: %s", path, exc)
            return
        if cut != self.net.cut:
            logger.warning("test partition: frames to and from %s are now lost", sorted(cut) or "no peer")
            self.net.cut = cut

    def _check_clock(self) -> None:
        """At every heartbeat: judge this node's clock against its peers' (OffsetMonitor) and
        stop or resume serving. While unfit it says so once per log_repeat_interval_s with the
        count of checks since: the reason's figures move with each probe, so it is keyed by the
        condition, never compared as text (which logged it at every heartbeat)."""
        now = time.monotonic()
        unfit = self.offsets.unfit_reason(now)
        if unfit is not None:
            self.log_limit.log(logger, logging.ERROR, "clock unfit", "not serving clients: %s (offsets: %s)",
                               unfit, self.offsets.status(now))
        elif self.clock_unfit is not None:
            self.log_limit.log(logger, logging.WARNING, "clock fit again",
                               "clock back within bounds of a majority of peers; serving again")
        self.clock_unfit = unfit
        if self.store is not None:
            self.store.set_clock_unfit(unfit is not None)   # (a no-op unless that changed)

    def _dial(self) -> None:
        if self.members is None:
            known = {c.hello["addr"] for c in self.net.peers.values() if c.hello}
            for addr in self.cfg.join:
                if addr != self.cfg.peer_addr and addr not in known:
                    self.net.dial(addr)
            return
        for pid, info in self.members.items():
            if pid > self.node_id and pid not in self.net.peers:
                self.net.dial(info["addr"])

    def stop_loop(self) -> None:
        self._stop.set()
        self.net.wake()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=10)

    def close(self) -> None:
        self.stop_loop()
        if self._readers is not None:
            self._readers.shutdown(wait=True, cancel_futures=True)
            for reader in self._reader_conns:
                reader.close()
        if self.store is not None:
            self.store.close()
        self.net.close()
        self.mvcc.close()
        self.sql_sock.close()
        if self.http_sock is not None:
            self.http_sock.close()
        if self.pg_sock is not None:
            self.pg_sock.close()
        self._lock.close()

    # --- requests from the client side (asyncio thread) ----------------------------------------------
    def call_in_loop(self, fn) -> None:
        """Run fn on the node loop (everything that touches the Store runs there)."""
        self._calls.append(fn)
        self.net.wake()

    def _call_soon(self, fn: Callable[[], None]) -> None:
        """Run fn (node loop work) for a statement on an asyncio loop: here and now if the node
        loop is waiting in select with nothing handed in before it, else on the node loop
        (`call_in_loop`). The node loop holds `_loop_lock` at every other moment, so its state is
        never touched by two threads at once, and calls keep their order. Run here, a point
        read this node serves is answered, and a batch for another node leaves, without a
        wake-up of the other thread (0.1-0.3 ms each on an idle virtual CPU). What fn leaves
        for the loop (a proposal to tick, a journal to sync, a reply that waits for either, a
        frame held by the WAN emulation) wakes it as a hand-off would."""
        lock = self._loop_lock
        if self._calls or not self._loop_running or not lock.acquire(blocking=False):
            self.call_in_loop(fn)
            return
        try:
            if self._calls or not self._loop_running:
                self.call_in_loop(fn)
                return
            wake = self._run_here(fn)
        finally:
            lock.release()
        if wake:
            self.net.wake()

    def _run_here(self, fn: Callable[[], None]) -> bool:
        """`_call_soon`'s work on a statement's thread, under `_loop_lock`: fn as the node loop
        runs a call, then what the loop does after its calls (frames out; replies for this asyncio
        loop out, once nothing they rest on waits for a sync). Whether the loop must wake for what
        is left. A failure outside fn ends the process, as on the node loop (`_loop`)."""
        try:
            try:
                fn()
            except Exception as exc:   # as on the node loop: a bug in one request's call
                self.log_limit.log(logger, logging.ERROR, ("call failed", type(exc).__qualname__),
                                   "call on the node loop failed", exc_info=True)
            self.net.flush()
            if self._replies and self._nothing_unsynced():
                here = asyncio.get_running_loop()
                mine = [(fut, value) for fut, value in self._replies if fut.get_loop() is here]
                self._replies = [(fut, value) for fut, value in self._replies if fut.get_loop() is not here]
                _complete(mine)
            store = self.store
            return bool(self._replies or self._calls or self.net.next_release() is not None
                        or (store is not None and (store.tick_soon or store.dirty)))
        except FailStop as exc:   # a storage error (the clock's ceiling, a journal): crash-only
            exit_now(exc)
        except Exception as exc:   # outside the call: the loop's state is unknown
            logger.exception("node loop work on a statement's thread failed")
            exit_now("node loop (on a statement's thread): %s: %s" % (type(exc).__name__, exc))
        return True   # not reached: exit_now ends the process

    def ask_loop(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        """fn() run on the node loop, for another thread that may wait at most timeout_s;
        raises TimeoutError if the loop has not answered by then (fn may still run later)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)
        self.call_in_loop(run)
        try:
            return fut.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError("the node loop did not answer in %.1f s" % timeout_s) from None

    async def _proposal(self, submit) -> tuple:
        """Run submit(store, done) on the node loop; done's (outcome, result), delivered with
        the iteration's other replies (`_reply`), or the ValueError submit raised."""
        fut = asyncio.get_running_loop().create_future()

        def run():
            if self.store is None:
                self._reply(fut, (Outcome.NOT_COMMITTED, "the cluster has not formed yet"))
                return
            try:
                submit(self.store, lambda outcome, result: self._reply(fut, (outcome, result)))
            except ValueError as exc:
                self._reply(fut, exc)
        self._call_soon(run)
        return await fut

    # --- the router's face for batches (asyncio) ------------------------------------------------------
    def _send_batch(self, ops: Sequence, header: Header, command_id: bytes | None, fut: asyncio.Future) -> None:
        """Send typed ops (kvserver.batch) by the router on the node loop (`Router.send_batch`:
        one batch per range, the parts concurrently); `fut` (an asyncio future) gets one
        (Outcome, result) per op, in order, or the ValueError of a batch refused before anything
        was sent. Its completion is one of the node loop's replies (`_reply`), delivered to
        asyncio together at the end of the loop's iteration. The header's write timestamp,
        unless the caller set one, is this gateway's HLC time when the batch leaves."""
        answered = False

        def done(answers: list) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._reply(fut, answers)

        def give_up() -> None:
            """No answer from the ranges' leaseholders in unavailable_s (a partition, no quorum):
            unavailable, naming the ranges; a write may still commit (ambiguous)."""
            if answered:
                return
            ranges = sorted({d.range_id for d in (self.router.descriptor(op.key) for op in ops) if d is not None})
            why = ("unavailable: %s did not answer n%d within %.1f s (no leaseholder or quorum reachable)"
                   % (", ".join("r%d" % r for r in ranges) or "the range", self.node_id, self.cfg.unavailable_s))
            done([(Outcome.AMBIGUOUS, why + "; the write may still commit") if op.writes else (Outcome.NOT_COMMITTED, why)
                  for op in ops])

        def run() -> None:
            if self.store is None:
                done([(Outcome.NOT_COMMITTED, "the cluster has not formed yet")] * len(ops))
                return
            heapq.heappush(self._timeouts, (time.monotonic() + self.cfg.unavailable_s, next(self._timeout_ids), give_up))
            stamped = header if header.ts is not None else replace(header, ts=tuple(self.hlc.now().to_wire()))
            if stamped.uncertainty_limit is None and ops and not any(op.writes for op in ops):
                # A read may restart above a version written (before it began) by a node whose
                # clock runs ahead of this gateway's by up to the max offset (Store._serve_read).
                stamped = replace(stamped, uncertainty_limit=(stamped.ts[0] + self.hlc.max_offset_ns, stamped.ts[1]))
            refused = self.cfg.refuse_writes
            held = [i for i, op in enumerate(ops) if refused is not None and op.writes and refused[0] <= op.key < refused[1]]
            try:
                if not held:
                    self.router.send_batch(stamped, ops, done, command_id, cancelled=lambda: answered)
                    return
                # A test's stand-in for a range whose leader is out of reach (cfg.refuse_writes):
                # the answer a proposer gets then (not committed), for a chosen span and this node only.
                sent = [i for i in range(len(ops)) if i not in held]
                answers: list = [(Outcome.NOT_COMMITTED, "no leader reachable for the range of %s (test fault)"
                                  % pretty_key(ops[i].key)) for i in range(len(ops))]

                def merge(got: list) -> None:
                    for i, answer in zip(sent, got):
                        answers[i] = answer
                    done(answers)
                if sent:
                    self.router.send_batch(stamped, [ops[i] for i in sent], merge)
                else:
                    done(answers)
            except ValueError as exc:
                self._reply(fut, exc)
        self._call_soon(run)

    def _nothing_unsynced(self) -> bool:
        """No journal written since the last sync and no apply transaction open: everything the
        node has done so far is durable, so any reply made so far may leave."""
        store = self.store
        return store is None or (not store.dirty and not store.mvcc.in_batch)

    def _reply(self, fut: asyncio.Future, value: Any) -> None:
        """On the node loop: complete an asyncio future (with `value`, or raise it if it is an
        exception) once this loop iteration ends, with every other reply of the iteration in one
        hand-off (`_deliver_replies`)."""
        self._replies.append((fut, value))

    def _deliver_replies(self) -> None:
        """On the node loop, once per iteration: hand the iteration's replies to their asyncio
        loop (one `call_soon_threadsafe`, so one wake-up of that loop, however many replies)."""
        replies, self._replies = self._replies, []
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for fut, value in replies:
            by_loop.setdefault(fut.get_loop(), []).append((fut, value))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):   # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_complete, batch)

    async def batch(self, ops: Sequence, header: Header = Header(), command_id: bytes | None = None) -> list:
        """`_send_batch` for a coroutine on an asyncio loop: the answers, or the ValueError."""
        fut = asyncio.get_running_loop().create_future()
        self._send_batch(ops, header, command_id, fut)
        return await fut

    async def batch_within(self, ops: Sequence, timeout_s: float, header: Header = Header()) -> list:
        """`batch` for a statement (raftstore.coop), waiting at most timeout_s. Never raises
        but for a cancellation: a batch refused before anything was sent (too large, breaking
        a batch's rules) answers (NOT_COMMITTED, the ValueError) for every op; an op with no
        answer by the deadline answers AMBIGUOUS if it writes (it may still commit), else
        NOT_COMMITTED. Every proposal is answered by the Raft layer's own timeout long before.
        The caller awaits the node loop's future itself (a timer answers it at the deadline), not
        through asyncio.wait_for's task: two turns of the asyncio loop less per batch."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def expire() -> None:
            if not fut.done():
                why = "no answer in %.0f s" % timeout_s
                fut.set_result([(Outcome.AMBIGUOUS, why + "; it may still commit") if op.writes
                                else (Outcome.NOT_COMMITTED, why) for op in ops])
        timer = loop.call_later(timeout_s, expire)
        self._send_batch(ops, header, None, fut)
        try:
            return await fut
        except ValueError as exc:
            return [(Outcome.NOT_COMMITTED, exc)] * len(ops)
        finally:
            timer.cancel()

    async def scan_keys(self, start: bytes, end: bytes | None, limit: int, max_bytes: int = 0,
                        header: Header | None = None) -> tuple:
        """A scan across ranges, by the router on the node loop (`Router.scan`): (Outcome,
        {"rows", "versions", "ts", "resume", "read_ts"}). Every page reads at one timestamp: the
        header's `read_ts`, else the one the first page's leaseholder picks; the uncertainty
        limit is the header's, else this gateway's clock plus the max offset."""
        if header is None or header.uncertainty_limit is None:
            now = self.hlc.now()
            header = replace(header or Header(), uncertainty_limit=(now.wall_ns + self.hlc.max_offset_ns, now.logical))
        return await self._proposal(
            lambda store, done: self.router.scan(start, end, limit, done, max_bytes=max_bytes, header=header))

    async def negotiate(self, spans: list[tuple[bytes, bytes | None]]) -> tuple[int, int] | None:
        """The newest timestamp this node's replicas have closed over `spans` (a bounded-staleness
        statement's one timestamp: Store.negotiate_closed), or None."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def run() -> None:
            ts = self.store.negotiate_closed(spans) if self.store is not None else None
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(ts))
        self.call_in_loop(run)
        return await fut

    async def lease_transfer(self, range_id: int, to: int) -> str | None:
        """Move a lease this node serves to node `to` (Store.transfer_lease): None if under way."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def run() -> None:
            why = self.store.transfer_lease(range_id, to) if self.store is not None else "the cluster has not formed yet"
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(why))
        self.call_in_loop(run)
        return await fut

    async def drain_leases(self, timeout_s: float) -> int:
        """Hand every lease this node serves to another node (Store.drain) and wait, at most
        timeout_s, until it serves none; returns how many it still serves (0: drained)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        while True:
            fut = loop.create_future()

            def run(fut=fut) -> None:
                left = self.store.drain() if self.store is not None else 0
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(left))
            self.call_in_loop(run)
            left = await fut
            if left == 0 or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(0.05)

    async def split(self, key: bytes) -> tuple:
        """Split the range holding key at key: routed like a client's command to the range's
        leader, which splits with its own descriptor (Store.evaluate_and_propose, ADMIN_SPLIT)."""
        return await self._proposal(
            lambda store, done: self.router.send(ADMIN_SPLIT, key, {"key": key}, None, done))

    async def status(self) -> dict:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def run():
            info = self._status()
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(info))
        self.call_in_loop(run)
        return await fut

    def _status(self) -> dict:
        ranges = self.store.status() if self.store is not None else []
        totals = self.counters()
        for r in ranges:
            last = self.consistency.last.get(r["range_id"])
            r["last_check"] = None if last is None else {k: last[k] for k in ("status", "index", "at", "detail")}
            r["home"] = r["home"] or self.cfg.primary_region   # its zone's region, else the cluster's primary
        data = next((r for r in ranges if r["range_id"] == 2), None)
        return {"node_id": self.node_id, "region": self.cfg.region, "formed": self.members is not None,
                "members": {str(k): v for k, v in (self.members or {}).items()},
                "connected": sorted(self.net.peers), "ranges": ranges,
                "leader": data["leader"] if data else None,
                "is_leader": bool(data and data["leader"] == self.node_id),
                "clock": {"serving": self.clock_unfit is None, "reason": self.clock_unfit,
                          "offsets": self.offsets.status(time.monotonic())},
                "disk": self.disk.status(),
                "evaluation_misses": totals["evaluation_misses"],
                "latches": {"held": len(self.store.latches), "waiting": self.store.latches.waiting()} if self.store is not None else None,
                "router": dict(self.router.stats, cached=len(self.router.cache)),
                "test_cut": sorted(self.net.cut), "primary_region": self.cfg.primary_region,
                "wan_emulation": {"release_lead_ms": round(self.net.release_lead_s * 1000, 3),
                                  "last_release_late_ms": round(self.net.release_late_s * 1000, 3)}
                if self.cfg.latency is not None else None,
                "leases": dict(self.store.lease_stats, serving=len(self.store.tscache)) if self.store is not None else None,
                "gc": dict(self.store.gc_stats, protected=self.store.gc_protected()) if self.store is not None else None,
                "closed": dict(self.store.closed_stats, group=len(self.store.closed_sender.members),
                               side_ts=list(self.store.closed_sender.ts), stream_gaps=self.store.closed_receiver.gaps)
                if self.store is not None else None,
                "proposals": totals["proposals"],
                "loop_busy_max_ms": round(self.loop_busy_max_s * 1000, 1),
                "loop_stalls": list(self.loop_stalls),
                "totals": totals}

    def counters(self) -> dict:
        """The node's running totals and counts, read on the node loop (its only reader of the
        store): what /metrics samples at scrape time (raftstore.node.metrics.LoopSample) and
        `raftstore status` shows under "totals". Totals only grow while the process runs."""
        store = self.store
        groups = list(store.groups.values()) if store is not None else []
        now = time.monotonic()
        return {"formed": self.members is not None, "peers_connected": len(self.net.peers),
                "ranges": len(groups),
                "leading": len(store.led_by.get(str(self.node_id), ())) if store is not None else 0,
                "proposals": dict(self.proposals, as_follower=sum(g.proposals_as_follower for g in groups)),
                "raft": {"entries_applied": sum(g.entries_applied for g in groups),
                         "elections_started": sum(g.elections_started for g in groups),
                         "leader_changes": store.leader_changes if store is not None else 0,
                         "snapshots_sent": sum(g.snapshots_sent for g in groups),
                         "snapshots_received": sum(g.snapshots_installed for g in groups),
                         "snapshots_created": sum(g.snapshots_created for g in groups)},
                "evaluation_misses": sum(r.evaluation_misses for r in store.replicas.values()) if store is not None else 0,
                "router": {"lookup": self.router.stats["lookups"], "redirect": self.router.stats["redirects"],
                           "backoff": self.router.stats["backoffs"], "not_leader": self.router.stats["not_leader"]},
                "router_cached": len(self.router.cache),
                "latches_held": len(store.latches) if store is not None else 0,
                "loop_busy_max_s": self.loop_busy_max_s,
                "loop_stalls": self.loop_stall_count,
                "clock_serving": self.clock_unfit is None, "clock_offset_errors": self.clock_offset_errors,
                "clock_offsets_s": {str(p): m.offset_ns / 1e9 for p, m in self.offsets.fresh(now).items()},
                "journal_fsyncs": sum(g.journal.sync_count for g in groups)}
