"""Deterministic simulation of whole Stores (many ranges per node) with crashes inside splits.

Three nodes each run the real Store (store.py) -- real RaftGroups, real RangeReplicas over a
real SQLite MVCC file -- on the simulated clock, network and journal disk of world.py. Ranges
split automatically under a write load (the size threshold is tiny), and one node is crashed
at a chosen step of a split (a *crash point* the Store passes through: after the range id is
allocated, after the split applied, at each step of initializing the new range, after its group
started), then restarted from what it had on disk. SQLite commits survive a crash (a process
death, not a power cut, for the state machine); Raft journals lose what was not fsynced.

At the end, with every node up and settled, it checks the split invariants:
  * no acknowledged write is lost: every node holds every acknowledged key with its value;
  * no key is doubled or served by two ranges: each node's descriptors tile the data keyspace
    with no gap and no overlap, and all nodes agree on them;
  * all replicas hold the same data;
  * no write applied twice: each key (written by one command id, retried with it) has one version,
    and a write sent again after its answer (as a client does when the answer is lost), often
    after splits moved its key, gets its first answer;
  * each saved outcome of a command is kept by one range on a node, the one holding its key, so
    splits hand outcomes on without multiplying them (MVCCStore.split_command_results).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass

import msgpack
from pysyncobj.transport import Transport

from raftstore import constants
from raftstore.kvserver.ranges import DATA_START
from raftstore.kvserver.replica import LATEST, RAW_END, RAW_PREFIX, local_descriptors
from raftstore.kvserver.store import Store, StoreConfig
from raftstore.raft.commands import Outcome, not_leader
from raftstore.raft.failstop import FailStop
from raftstore.kvserver.batch import BOUNDED_STALENESS, EXACT, Get, Header, Put, verdict
from raftstore.router import Router
from raftstore.sim.disk import SimDisk
from raftstore.sim.world import LinkRandom, Violation, _Clock, patched_pysyncobj
from raftstore.storage.mvcc import MVCCStore, StoreError

logger = logging.getLogger(__name__)

CLOSED_SNAP_EVERY_S = 0.1   # check_closed keeps a replica's versions at most this often (simulated s)

CRASH_POINTS = ("split:allocated", "split:applied", "split:init-begin", "split:init-applied",
                "split:init-dump", "split:init-journal", "split:started")


class _FaultyMVCCStore(MVCCStore):
    """The real MVCC store, whose next `commit_failures` commits of a batch that wrote anything
    fail (a storage fault: the batch is rolled back by SQLite, as on a full disk)."""

    commit_failures = 0

    @contextlib.contextmanager
    def batch(self):
        with super().batch():
            before = self._conn.total_changes if self._conn is not None else 0
            yield
            if self.commit_failures and self._conn is not None and self._conn.total_changes != before:
                self.commit_failures -= 1
                raise StoreError(f"MVCC store {self.path}: simulated: database or disk is full")


class SimCrash(BaseException):
    """Raised at a crash point: escapes every `except Exception` on its way out, as a process
    death would."""


@dataclass
class SplitSimConfig:
    seed: int
    writes: int = 240
    value_bytes: int = 300
    range_bytes_max: int = 12_000
    crash_point: str | None = None     # None: chosen from the seed
    crash_hit: int | None = None       # crash on the n-th time a node passes the point
    lagging: bool = False              # instead: one node is down while the others write, split
                                       # and compact; it comes back and catches up by snapshots
    storage_faults: bool = False       # also: a commit of a node's applies fails, now and then
    resend_fraction: float = 0.2       # writes sent once more, with the same id, after their answer
    tick_s: float = 0.01
    settle_s: float = 12.0
    quiesce: bool = False              # idle groups tick rarely and caught-up leaders send no
                                       # heartbeats; every node heartbeats its peers (as a node does)
    heartbeat_s: float = 0.1           # the node heartbeat's period then (raftMinTimeout is 0.4 here)
    leader_fallback_s: float = 2.5     # quiesced: pysyncobj's leaderFallbackTimeout (nodes: 30 s), short
                                       # enough that a leader it deposes shows in a run
    reads: bool = True                 # clients also read keys written before: strong reads at the
                                       # leaseholders and follower reads (exact and bounded staleness)
                                       # at the nearest replica; lease and closed-timestamp invariants
                                       # are checked after every event (check_leases, check_closed)
    closed_lag_s: float = 0.05         # closed timestamps trail the clock this little here (nodes: 3 s),
                                       # so replicas still applying what a frame names are common
    partition_s: float = 0.0           # > 0: once the writes are done, the node leading the most
                                       # ranges is cut off this long (silently: its links stay up,
                                       # every frame is lost); at the end every range must have
                                       # one leader all nodes agree on

    def replay_command(self) -> str:
        return "PYTHONHASHSEED=0 python -m raftstore.sim --splits%s%s%s%s --seed %d" % (
            " --lagging" if self.lagging else "", " --storage-faults" if self.storage_faults else "",
            " --quiesce" if self.quiesce else "",
            " --partition-s %g --leader-fallback-s %g --crash-point %s" % (self.partition_s, self.leader_fallback_s, self.crash_point)
            if self.partition_s else "", self.seed)


class _GroupTransport(Transport):
    def __init__(self, world: "SplitWorld", nid: int, gid: int, syncObj, selfNode, otherNodes):
        super().__init__(syncObj, selfNode, otherNodes)
        self.world, self.nid, self.gid = world, nid, gid
        self.peers = {int(n.id): n for n in otherNodes}
        world.transports[(nid, gid)] = self
        self.started = False
        syncObj.addOnTickCallback(self._first_tick)

    def _first_tick(self):
        if not self.started:
            self.started = True
            for pid in sorted(self.peers):
                if self.world.alive(pid):
                    self._onNodeConnected(self.peers[pid])

    def send(self, node, message):
        return self.world.send(self.nid, int(node.id), self.gid, message)


class SplitWorld:
    def __init__(self, cfg: SplitSimConfig, workdir: str) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.rng = random.Random(cfg.seed)
        self.link_random = LinkRandom(cfg.seed)
        self.clock = _Clock()
        self.ids = [1, 2, 3]
        self.disks = {i: SimDisk() for i in self.ids}
        self.stores: dict[int, Store] = {}
        self.routers: dict[int, Router] = {}
        self.mvccs: dict[int, MVCCStore] = {}
        self.transports: dict[tuple[int, int], _GroupTransport] = {}
        self.incarnation = {i: 0 for i in self.ids}
        self.queue: list = []
        self.seq = itertools.count()
        self.events: list[str] = []
        self.acked: dict[bytes, bytes] = {}
        self.values: dict[int, bytes] = {}
        self.answers: dict[int, dict] = {}        # write i -> its first committed answer
        self.resent: set[int] = set()
        self.fresh_answers: list[str] = []        # resends answered with anything but the first answer
        self.resend_rng = random.Random(cfg.seed ^ 0x5E5D)   # apart, so the choice draws nothing from rng
        self.crash_point = "none" if cfg.lagging else cfg.crash_point or CRASH_POINTS[cfg.seed % len(CRASH_POINTS)]
        self.crash_hit = cfg.crash_hit or 1 + self.rng.randrange(3)
        self.crash_node = self.ids[0]   # set to the node that crashes
        self.hits = 0
        self.crashed_at: str | None = None
        self.splits_seen = 0
        self.fail_stops = 0
        self.appends_sent: list[float] = []   # when each append_entries (heartbeat or not) was sent
        self.votes_asked: list[float] = []    # when each request_vote was sent (an election)
        self.cut: set[int] = set()            # nodes cut off by a partition (partition_s)
        self.cut_led = 0                      # ranges the cut node led when it was cut off
        self.reelected = 0                    # of those, the ranges that elected another leader meanwhile
        self.read_rng = random.Random(cfg.seed ^ 0x2EAD)   # apart, so reads draw nothing from rng
        self.reads: list[tuple[bytes, tuple, tuple, int, float]] = []   # (key, read ts, version answered, node, t)
        self.lease_checks = 0
        # Closed timestamps (kvserver.closedts): the side transport's pairs owed a full frame,
        # each replica's last closed timestamp (per incarnation: a restarted replica starts from
        # nothing) and, each time one advanced, the versions of its span it held at or below it.
        self.closed_owed_full: set[tuple[int, int]] = set()
        self.closed_last: dict[tuple[int, int, int], tuple] = {}
        self.closed_snap_at: dict[tuple[int, int], float] = {}
        self.closed_snaps: list[tuple[int, int, bytes, bytes | None, tuple, frozenset, float]] = []
        self.follower_reads = 0

    # --- nodes --------------------------------------------------------------------------------
    def alive(self, nid: int) -> bool:
        return nid in self.stores

    def log(self, text: str) -> None:
        self.events.append("%.4f %s" % (self.clock.t, text))

    def start_node(self, nid: int) -> None:
        ndir = os.path.join(self.workdir, "n%d" % nid)
        os.makedirs(os.path.join(ndir, "raft"), exist_ok=True)
        mvcc = _FaultyMVCCStore(os.path.join(ndir, "store.sqlite"), synchronous="OFF")
        disk = self.disks[nid]
        store = Store(StoreConfig(node_id=nid, replicas=self.ids, raft_dir=os.path.join(ndir, "raft"),
                                  range_bytes_max=self.cfg.range_bytes_max, maintain_interval_s=0.2, quiesce=self.cfg.quiesce,
                                  closed_lag_s=self.cfg.closed_lag_s,
                                  raft_conf=dict(appendEntriesUseBatch=True, appendEntriesPeriod=0.05,
                                                 raftMinTimeout=0.4, raftMaxTimeout=0.8, logCompactionMinEntries=60,
                                                 **(dict(leaderFallbackTimeout=self.cfg.leader_fallback_s)
                                                    if self.cfg.quiesce else {}))),
                      mvcc, open_journal=lambda path, disk=disk: disk.open(path),
                      transport_class=lambda gid, nid=nid: (lambda so, s, o: _GroupTransport(self, nid, gid, so, s, o)),
                      clock=self.clock, now_ts=lambda: [int(self.clock.t * 1e9), 0],
                      crash_point=lambda point, nid=nid: self._crash_point(nid, point),
                      snapshot_executor=lambda job, nid=nid: self._submit_job(nid, job))
        self.mvccs[nid] = mvcc
        self.stores[nid] = store
        # The node's router (the one the real node runs), starting with an empty cache.
        self.routers[nid] = Router(
            lookup=lambda key, store=store: store.descriptor_for(key) if self.stores.get(nid) is store else None,
            send=lambda desc, op, args, done, cid, store=store: self._send_to_leader(nid, store, desc, op, args, done, cid),
            later=lambda due, done, fn: self.push(max(due, self.clock.t), "call", fn), now=lambda: self.clock.t,
            send_near=lambda desc, op, args, done, cid, store=store: self._send_near(nid, store, desc, op, args, done, cid),
            negotiate=store.negotiate_closed)
        self.incarnation[nid] += 1
        try:
            store.start()
        except SimCrash:
            self._crashed(nid)
            return
        self.push(self.clock.t + self.cfg.tick_s * self.rng.random(), "tick", (nid, self.incarnation[nid]))
        if self.cfg.quiesce:
            self.push(self.clock.t + self.cfg.heartbeat_s * self.rng.random(), "heartbeat", (nid, self.incarnation[nid]))
        if self.cfg.reads:
            self.push(self.clock.t + constants.closed_side_interval_s * self.rng.random(), "closed", (nid, self.incarnation[nid]))
            self.closed_owed_full.update({(nid, p) for p in self.ids if p != nid} | {(p, nid) for p in self.ids if p != nid})
        for pid in self.ids:
            if pid != nid and self.alive(pid):
                for (n, gid), t in list(self.transports.items()):
                    if n == pid and t.started and nid in t.peers:
                        t._onNodeConnected(t.peers[nid])
                if self.cfg.quiesce:
                    self.stores[pid].on_peer_up(nid)

    def _submit_job(self, nid: int, job) -> None:
        """Snapshot work runs later on the simulated clock (as a thread would, while the loop
        goes on), deterministically; a crash before then drops it, as it would the thread."""
        self.push(self.clock.t + self.rng.uniform(0.005, 0.2), "job", (nid, self.incarnation[nid], job))

    def _crash_point(self, nid: int, point: str) -> None:
        if point == "split:applied" and nid == self.ids[0]:
            self.splits_seen += 1
        if self.crashed_at is None and point == self.crash_point:   # whichever node gets there
            self.hits += 1
            if self.hits == self.crash_hit:
                self.crash_node = nid
                self.crashed_at = "%s (hit %d) on n%d at t=%.3f" % (point, self.hits, nid, self.clock.t)
                raise SimCrash(point)

    def _stop(self, nid: int) -> None:
        """Take a node down (its disk loses what was not synced) until restart() is called."""
        if self.alive(nid):
            self.crash_node = nid
            self.crashed_at = "n%d down at t=%.3f" % (nid, self.clock.t)
            self._crashed(nid, restart=False)

    def _crashed(self, nid: int, restart: bool = True) -> None:
        self.log("crash n%d at %s" % (nid, self.crash_point))
        dead = self.stores.pop(nid, None)
        if dead is not None:
            dead.close(sync=False)   # its descriptors go now; its journals keep only what they synced
        for key in [k for k in self.transports if k[0] == nid]:
            del self.transports[key]
        self.incarnation[nid] += 1
        for (n, gid), t in list(self.transports.items()):
            if t.started and nid in t.peers:
                t._onNodeDisconnected(t.peers[nid])
        if self.cfg.quiesce:
            for store in self.stores.values():
                store.on_peer_down(nid)
        self.mvccs.pop(nid).close()
        self.disks[nid].crash(self.rng)
        if restart:
            self.push(self.clock.t + self.rng.uniform(0.3, 2.0), "call", lambda: self.restart(nid))

    def restart(self, nid: int) -> None:
        if not self.alive(nid):
            self.log("restart n%d" % nid)
            self.start_node(nid)

    # --- network --------------------------------------------------------------------------------
    def push(self, t: float, kind: str, data) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), kind, data))

    def send(self, src: int, dst: int, gid: int, message: dict) -> bool:
        if not self.alive(dst):
            return False
        if src in self.cut or dst in self.cut:
            return True   # lost on the way, as on a link that silently drops everything
        if message.get("type") == "append_entries":
            self.appends_sent.append(self.clock.t)
        elif message.get("type") == "request_vote":
            self.votes_asked.append(self.clock.t)
        payload = msgpack.packb(message, use_bin_type=True)
        self.push(self.clock.t + 0.002 + 0.003 * self.link_random(src, dst), "msg", (src, dst, gid, self.incarnation[dst], payload))
        return True

    def _heartbeat(self, src: int) -> None:
        """A node's heartbeat to each live peer (Node._run_loop's), delivered like a message."""
        store = self.stores[src]
        claims = store.leader_claims()
        for dst in self.ids:
            if dst != src and self.alive(dst) and src not in self.cut and dst not in self.cut:
                self.push(self.clock.t + 0.002 + 0.003 * self.rng.random(), "call",
                          lambda dst=dst, inc=self.incarnation[dst], srcinc=self.incarnation[src], disputes=store.disputes_to(dst):
                          self.alive(src) and self.alive(dst) and inc == self.incarnation[dst] and srcinc == self.incarnation[src]
                          and self.stores[dst].on_node_heartbeat(src, claims, disputes))

    def _side_transport(self, src: int) -> None:
        """A node's CLOSED frames to each live peer (Node._send_closed), delivered like messages;
        a pair owed a full frame (a (re)start, and every closed_full_every_s) gets every member."""
        store = self.stores[src]
        seq, ts, updates, removed = store.side_transport()
        if int(self.clock.t / constants.closed_full_every_s) != int((self.clock.t - constants.closed_side_interval_s)
                                                                   / constants.closed_full_every_s):
            self.closed_owed_full.update((src, p) for p in self.ids if p != src)
        for dst in self.ids:
            if dst == src or not self.alive(dst):
                continue
            full = (src, dst) in self.closed_owed_full
            self.closed_owed_full.discard((src, dst))
            if src in self.cut or dst in self.cut:
                continue   # lost on the way (the stream has a gap until the next full frame)
            frame = (seq, True, list(ts), store.closed_sender.full(), []) if full else (seq, False, list(ts), updates, removed)
            self.push(self.clock.t + 0.002 + 0.003 * self.rng.random(), "call",
                      lambda dst=dst, inc=self.incarnation[dst], srcinc=self.incarnation[src], frame=frame:
                      self.alive(src) and self.alive(dst) and inc == self.incarnation[dst]
                      and srcinc == self.incarnation[src] and self.stores[dst].on_closed_frame(src, *frame))

    def _send_near(self, nid: int, store: Store, desc, op: str, args: dict, done, cid: bytes) -> None:
        """A follower read at the nearest replica: this node's own (every node holds every range)."""
        if self.stores.get(nid) is not store:
            done(Outcome.NOT_COMMITTED, "n%d is down" % nid)
            return
        store.evaluate_and_propose(desc.range_id, op, args, done, command_id=cid)

    def _deliver(self, src: int, dst: int, gid: int, inc: int, payload: bytes) -> None:
        if not self.alive(dst) or not self.alive(src) or inc != self.incarnation[dst]:
            return
        t = self.transports.get((dst, gid))
        if t is None:
            self.stores[dst].on_unknown_group(gid)
            t = self.transports.get((dst, gid))
            if t is None:
                return
        message = msgpack.unpackb(payload, raw=False)
        if self.cfg.quiesce:
            self.stores[dst].on_message(gid, message)   # as the node does
        else:
            self.stores[dst].mark(gid)
        t._onMessageReceived(t.peers[src], message)

    def _send_to_leader(self, nid: int, store: Store, desc, op: str, args: dict, done, cid: bytes) -> None:
        """What a node does with a client's command: hand it to the range's leader as this node
        knows it (the peer link's PROPOSE, here without network delay), where it is evaluated
        under latches (Store.evaluate_and_propose); no leader known or reachable: not committed."""
        if self.stores.get(nid) is not store:
            done(Outcome.NOT_COMMITTED, "n%d is down" % nid)
            return
        group = store.groups.get(desc.range_id)
        leader = group.leader_id() if group is not None else None
        target = self.stores.get(int(leader)) if leader is not None and self.alive(int(leader)) else None
        if target is None:
            done(Outcome.NOT_COMMITTED, "n%d knows no live leader of r%d" % (nid, desc.range_id))
            return
        led = target.groups.get(desc.range_id)
        if led is None or not led.is_leader():
            done(Outcome.NOT_COMMITTED, not_leader("n%s does not lead r%d" % (leader, desc.range_id), None))
            return
        target.evaluate_and_propose(desc.range_id, op, args, done, command_id=cid)

    # --- clients ----------------------------------------------------------------------------------
    def write(self, i: int, attempt: int = 0) -> None:
        live = [n for n in self.ids if self.alive(n)]
        if not live or attempt > 60:
            return
        nid = live[self.rng.randrange(len(live))]
        key = RAW_PREFIX + b"%05d" % i
        if i not in self.values:   # a retry proposes the same command (same id, same value)
            self.values[i] = b"%d:" % i + bytes(self.rng.getrandbits(8) for _ in range(8)) * (self.cfg.value_bytes // 8)
        value = self.values[i]

        def done(outcome, result, key=key, value=value):
            if outcome is Outcome.COMMITTED:
                self.acked[key] = value
                first = self.answers.setdefault(i, verdict(result))
                if verdict(result) != first:
                    self.fresh_answers.append("write %d: first %r, then %r" % (i, first, result))
                elif i not in self.resent and self.resend_rng.random() < self.cfg.resend_fraction:
                    self.resent.add(i)   # the answer "was lost": send it again a little later
                    self.push(self.clock.t + self.resend_rng.uniform(0.2, 3.0), "call", lambda: self.write(i))
            else:
                self.push(self.clock.t + 0.05 * (attempt + 1), "call", lambda: self.write(i, attempt + 1))
        self.routers[nid].send_batch(Header(), [Put(key, value)], lambda got: done(*got[0]),
                                     i.to_bytes(8, "big") + b"\x00" * 8)

    def read(self, i: int) -> None:
        """A strong read of a key written before (or being written), from a random live node:
        served by the range's leaseholder without a consensus round. What it answered is checked
        at the end against every version the key ever got (`_check_reads`)."""
        live = [n for n in self.ids if self.alive(n)]
        if not live:
            return
        nid = live[self.read_rng.randrange(len(live))]
        key = RAW_PREFIX + b"%05d" % self.read_rng.randrange(i + 1)
        kind = self.read_rng.random()
        now, lag = int(self.clock.t * 1e9), self.cfg.closed_lag_s
        header = (Header() if kind < 0.4 else
                  Header(consistency=EXACT, read_ts=(now - int(self.read_rng.uniform(0, 3) * lag * 1e9), 0)) if kind < 0.7 else
                  Header(consistency=BOUNDED_STALENESS, min_ts=(now - int(self.read_rng.uniform(1, 3) * lag * 1e9), 0)))

        def done(got, key=key):
            outcome, result = got[0]
            if outcome is Outcome.COMMITTED and header.consistency != "strong" and "closed_ts" in result:
                # A follower read: at or below what the replica that served it had closed.
                self.follower_reads += 1
                server = self.stores.get(result.get("served_by"))
                rid = result.get("range_id")
                if server is not None and tuple(result["read_ts"]) > server.closed_ts(rid):
                    self.fail("n%s served a follower read of r%s at %s above its closed timestamp %s"
                              % (result.get("served_by"), rid, result["read_ts"], server.closed_ts(rid)))
                self.reads.append((key, tuple(result["read_ts"]), tuple(result["ts"]), result.get("served_by"),
                                   self.clock.t))
                return
            if outcome is Outcome.COMMITTED:
                lease = self._lease_of(result.get("served_by"), key)
                if lease is not None and not self.clock.t * 1e9 < lease.expiration[0]:
                    self.fail("n%s served a read of %r at t=%.4f under lease %d, which expired at %.4f"
                              % (result.get("served_by"), key, self.clock.t, lease.seq, lease.expiration[0] / 1e9))
                self.reads.append((key, tuple(result["read_ts"]), tuple(result["ts"]), result.get("served_by"),
                                   self.clock.t))
        self.routers[nid].send_batch(header, [Get(key)], done)

    def _lease_of(self, nid: int | None, key: bytes):
        store = self.stores.get(nid) if nid is not None else None
        if store is None:
            return None
        desc = store.descriptor_for(key)
        rep = store.replicas.get(desc.range_id) if desc is not None else None
        return rep.lease if rep is not None else None

    def check_leases(self) -> None:
        """After every event: no two nodes serve one range's lease at once (every clock here is
        the simulation's, so no stasis hides an overlap), and none serves a lease past its
        expiration."""
        now = (int(self.clock.t * 1e9), 0)
        serving: dict[int, list[int]] = {}
        for nid, store in self.stores.items():
            for rid in list(store.tscache):
                lease = store.serving_lease(rid, now)
                if lease is None:
                    continue
                if not now < lease.expiration:
                    self.fail("n%d serves r%d under lease %d past its expiration" % (nid, rid, lease.seq))
                serving.setdefault(rid, []).append(nid)
        for rid, nodes in serving.items():
            if len(nodes) > 1:
                self.fail("r%d: leases of %s serve at once at t=%.4f" % (rid, nodes, self.clock.t))
        self.lease_checks += 1

    def check_closed(self, nodes=None) -> None:
        """After every event: a replica's closed timestamp never goes backwards (within a process:
        a restarted one starts from nothing), also across lease changes; each time it advances,
        the versions of the range it then holds at or below it are kept, and at the end the
        range's final history must hold exactly those at or below it (`_check_closed_snaps`): no
        write was added at or below a closed timestamp."""
        for nid, store in self.stores.items():
            if nodes is not None and nid not in nodes:
                continue   # the event ran on another node: nothing here changed
            inc = self.incarnation[nid]
            for rid, rep in list(store.replicas.items()):
                if rep.desc is None or rep.desc.end is not None and rep.desc.end <= RAW_PREFIX:
                    continue
                closed = store.closed_ts(rid)
                last = self.closed_last.get((nid, rid, inc), (0, 0))
                if closed < last:
                    self.fail("n%d's closed timestamp of r%d went back from %s to %s" % (nid, rid, last, closed))
                if closed > last:
                    self.closed_last[(nid, rid, inc)] = closed
                    if self.clock.t - self.closed_snap_at.get((nid, rid), -1.0) < CLOSED_SNAP_EVERY_S:
                        continue   # a snapshot a moment ago: the next advance is checked (cost)
                    self.closed_snap_at[(nid, rid)] = self.clock.t
                    start, end = max(rep.desc.start, RAW_PREFIX), rep.desc.end
                    held = set()
                    with self.mvccs[nid].export_span(start, end if end is not None else RAW_END, 1000) as export:
                        for chunk in export:
                            held.update((key, (wall, logical)) for key, wall, logical, _ in chunk if (wall, logical) <= closed)
                    self.closed_snaps.append((nid, rid, start, end, closed, frozenset(held), self.clock.t))

    def _check_closed_snaps(self, history: dict[bytes, list[tuple]]) -> None:
        for nid, rid, start, end, closed, held, t in self.closed_snaps:
            final = {(key, ts) for key, versions in history.items() if key >= start and (end is None or key < end)
                     for ts in versions if ts <= closed}
            if final != held:
                extra = sorted(final - held)[:3]
                self.fail("n%d closed r%d at %s (t=%.4f) holding %d versions at or below it; the final history has "
                          "%d, e.g. written later: %s" % (nid, rid, closed, t, len(held), len(final), extra))

    # --- main loop and checks ---------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            # Every store this run opened is closed however it ended (a crashed one was closed
            # when it crashed): a test process runs many seeds, their files must not pile up.
            for store in list(self.stores.values()):
                with contextlib.suppress(Exception, FailStop):
                    store.close()
            for mvcc in list(self.mvccs.values()):
                with contextlib.suppress(Exception):
                    mvcc.close()

    def _run(self) -> dict:
        with patched_pysyncobj(self.clock, self.rng):
            for nid in self.ids:
                self.start_node(nid)
            start = self.clock.t + 2.0
            for i in range(self.cfg.writes):
                self.push(start + i * 0.02, "call", lambda i=i: self.write(i))
                if self.cfg.reads:
                    self.push(start + i * 0.02 + 0.01, "call", lambda i=i: self.read(i))
            t_end = start + self.cfg.writes * 0.02 + self.cfg.settle_s
            if self.cfg.lagging:
                lagger = self.ids[self.cfg.seed % len(self.ids)]
                self.push(start + self.rng.uniform(0.0, 1.0), "call", lambda: self._stop(lagger))
                self.push(start + self.cfg.writes * 0.02 + self.rng.uniform(0.0, 1.0), "call", lambda: self.restart(lagger))
            if self.cfg.storage_faults:
                for _ in range(3):
                    self.push(start + self.rng.uniform(0.0, self.cfg.writes * 0.02), "call", self._commit_fault)
            self.push(t_end - self.cfg.settle_s / 2, "call", self._restart_all)
            if self.cfg.partition_s > 0:
                self.push(start + self.cfg.writes * 0.02 + 1.0, "call", self._cut_busiest_leader)
            while self.queue and self.queue[0][0] <= t_end:
                t, _, kind, data = heapq.heappop(self.queue)
                self.clock.t = max(self.clock.t, t)
                nid = data[0] if kind in ("tick", "job", "heartbeat", "closed") else data[1] if kind == "msg" else None
                try:
                    if kind == "tick":
                        n, inc = data
                        if self.alive(n) and inc == self.incarnation[n]:
                            self.stores[n].tick()
                            self.stores[n].sync()
                            self.push(self.clock.t + self.cfg.tick_s, "tick", data)
                    elif kind == "heartbeat":
                        n, inc = data
                        if self.alive(n) and inc == self.incarnation[n]:
                            self._heartbeat(n)
                            self.push(self.clock.t + self.cfg.heartbeat_s, "heartbeat", data)
                    elif kind == "closed":
                        n, inc = data
                        if self.alive(n) and inc == self.incarnation[n]:
                            self._side_transport(n)
                            self.push(self.clock.t + constants.closed_side_interval_s, "closed", data)
                    elif kind == "job":
                        n, inc, job = data
                        if self.alive(n) and inc == self.incarnation[n]:
                            job()
                    elif kind == "msg":
                        self._deliver(*data)
                        if self.alive(data[1]):
                            self.stores[data[1]].sync()
                    else:
                        data()
                except SimCrash:
                    self._crashed(nid if nid is not None else self.crash_node)
                except FailStop as exc:   # the node stopped itself on a storage error: a crash
                    self.log("fail-stop n%s: %s" % (nid, exc))
                    self.fail_stops += 1
                    self._crashed(nid if nid is not None else self.crash_node)
                if self.cfg.reads:
                    self.check_leases()
                    self.check_closed(None if nid is None else (nid,))
            self.check()
            if self.cfg.partition_s > 0:
                self._check_one_leader_each()
            summary = dict(seed=self.cfg.seed, crash=self.crashed_at or "point never reached (%s)" % self.crash_point,
                           acked=len(self.acked), resent=len(self.resent), splits=self.splits_seen,
                           fail_stops=self.fail_stops,
                           appends=len(self.appends_sent), appends_last_3s=sum(1 for t in self.appends_sent if t > t_end - 3.0),
                           votes_asked_last_3s=sum(1 for t in self.votes_asked if t > t_end - 3.0),
                           cut_led=self.cut_led, reelected=self.reelected, reads=len(self.reads),
                           follower_reads=self.follower_reads, closed_snaps=len(self.closed_snaps),
                           ranges=len(local_descriptors(self.mvccs[self.ids[0]])))
            for nid in list(self.stores):
                self.stores[nid].close()
                self.mvccs[nid].close()
        return summary

    def _cut_busiest_leader(self) -> None:
        led = {n: sum(1 for g in self.stores[n].groups.values() if g.is_leader()) for n in self.ids if self.alive(n)}
        victim = max(sorted(led), key=lambda n: led[n])
        self.log("partition: n%d (leading %d ranges) cut off" % (victim, led[victim]))
        before = {rid for rid, g in self.stores[victim].groups.items() if g.is_leader()}
        self.cut.add(victim)
        self.cut_led = len(before)

        def heal() -> None:
            self.cut.discard(victim)
            others = [n for n in self.ids if n != victim and self.alive(n)]
            self.reelected = sum(1 for rid in before if any(
                self.stores[n].groups[rid].is_leader() for n in others if rid in self.stores[n].groups))
            self.log("partition healed; %d of n%d's %d ranges elected another leader" % (self.reelected, victim, len(before)))
        self.push(self.clock.t + self.cfg.partition_s, "call", heal)

    def _check_one_leader_each(self) -> None:
        for rid in sorted(self.stores[self.ids[0]].groups):
            groups = [self.stores[n].groups.get(rid) for n in self.ids]
            leaders = [n for n, g in zip(self.ids, groups) if g is not None and g.is_leader()]
            named = {g.leader_id() if g is not None else None for g in groups}
            if len(leaders) != 1 or named != {str(leaders[0])}:
                self.fail("r%d: %d replicas lead (%s); the nodes name %s" % (rid, len(leaders), leaders, sorted(map(str, named))))

    def _commit_fault(self) -> None:
        live = [n for n in self.ids if self.alive(n)]
        if live:
            nid = live[self.rng.randrange(len(live))]
            self.mvccs[nid].commit_failures += 1
            self.log("storage fault n%d: the next commit of applies fails" % nid)

    def _restart_all(self) -> None:
        for nid in self.ids:
            self.restart(nid)

    def fail(self, text: str) -> None:
        raise Violation("seed %d (crash %s): %s\n  replay: %s" % (self.cfg.seed, self.crashed_at, text, self.cfg.replay_command()))

    def check(self) -> None:
        tilings = {}
        for nid in self.ids:
            if not self.alive(nid):
                self.fail("n%d is not running at the end" % nid)
            descs = sorted((d for d in local_descriptors(self.mvccs[nid]) if d.start >= DATA_START), key=lambda d: d.start)
            if not descs or descs[0].start != DATA_START or descs[-1].end is not None:
                self.fail("n%d's ranges do not cover the data keyspace: %s" % (nid, [str(d) for d in descs]))
            for a, b in zip(descs, descs[1:]):
                if a.end != b.start:
                    self.fail("n%d: %s and %s %s" % (nid, a, b, "overlap" if a.end is None or a.end > b.start else "leave a gap"))
            tilings[nid] = [(d.range_id, d.start, d.end) for d in descs]
        if len({tuple(t) for t in tilings.values()}) != 1:
            self.fail("nodes disagree on the ranges: %s" % {n: [r for r, _, _ in t] for n, t in tilings.items()})
        data = {}
        for nid in self.ids:
            rows = self.mvccs[nid].scan(RAW_PREFIX, RAW_END, LATEST, 100_000)
            data[nid] = {k: v for k, v, _ in rows}
            lost = [k for k, v in self.acked.items() if data[nid].get(k) != v]
            if lost:
                self.fail("n%d lost %d acknowledged writes, e.g. %r" % (nid, len(lost), lost[:3]))
        if data[1] != data[2] or data[2] != data[3]:
            self.fail("replicas hold different data: %s" % [len(d) for d in data.values()])
        if self.fresh_answers:
            self.fail("%d writes sent again got a new answer, not their first: %s"
                      % (len(self.fresh_answers), self.fresh_answers[:3]))
        for nid in self.ids:
            self._check_applied_once(nid)
            self._check_outcomes_held_once(nid)
        self._check_reads()

    def _check_reads(self) -> None:
        """Every read saw the newest version at or below its timestamp in the key's final history:
        no version was written at or below a timestamp already read (the timestamp cache), and
        none acknowledged before the read was missing from it."""
        history: dict[bytes, list[tuple]] = {}
        with self.mvccs[self.ids[0]].export_span(RAW_PREFIX, RAW_END, 1000) as export:
            for chunk in export:
                for key, wall, logical, _value in chunk:
                    history.setdefault(key, []).append((wall, logical))
        self._check_closed_snaps(history)
        for key, ts, answered, nid, t in self.reads:
            newest = max((v for v in history.get(key, []) if v <= ts), default=(0, 0))
            if newest != answered:
                self.fail("a read of %r at %s by n%s (t=%.4f) answered version %s, but the key's history has %s "
                          "as the newest at or below it" % (key, ts, nid, t, answered, newest))

    def _check_applied_once(self, nid: int) -> None:
        versions: dict[bytes, int] = {}
        with self.mvccs[nid].export_span(RAW_PREFIX, RAW_END, 1000) as export:
            for chunk in export:
                for key, _wall, _logical, _value in chunk:
                    versions[key] = versions.get(key, 0) + 1
        twice = sorted(k for k, n in versions.items() if n > 1)
        if twice:
            self.fail("n%d applied %d writes more than once (a retry after a split not deduplicated?), e.g. %r"
                      % (nid, len(twice), twice[:3]))

    def _check_outcomes_held_once(self, nid: int) -> None:
        holders: dict[bytes, list[int]] = {}
        for desc in local_descriptors(self.mvccs[nid]):
            with self.mvccs[nid].export_span(b"", b"", 1, range_id=desc.range_id) as export:
                for chunk in export.results():
                    for command_id, _index, result, key in chunk:
                        if result is None or not msgpack.unpackb(result, raw=False)[0]:
                            continue   # a refusal (a stale route) is saved where it was refused
                        holders.setdefault(command_id, []).append(desc.range_id)
                        if key is None or not desc.contains(key):
                            self.fail("n%d: r%d keeps the outcome of a command on %r, outside %s"
                                      % (nid, desc.range_id, key, desc))
        doubled = {cid.hex(): rids for cid, rids in holders.items() if len(rids) > 1}
        if doubled:
            self.fail("n%d: %d command outcomes are kept by several ranges, e.g. %s"
                      % (nid, len(doubled), list(doubled.items())[:3]))


def run_split_seed(cfg: SplitSimConfig) -> dict:
    workdir = tempfile.mkdtemp(prefix="raftstore-splitsim-")
    try:
        return SplitWorld(cfg, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
