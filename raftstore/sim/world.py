"""Deterministic simulation of real pysyncobj groups in one process.

Real SyncObj code (ours, RaftGroup, or plain pysyncobj 0.3.17) runs with autoTick=False and is
driven by a discrete-event loop: a manual clock (pysyncobj's module-level `monotonicTime` is
patched), one seeded RNG (election timeouts included), an in-memory transport with per-link FIFO
delays taken from a region matrix, partitions, and crash/restart of a node with its durable
journal on a simulated disk that loses what was not fsynced. With PYTHONHASHSEED pinned, one seed
gives one trace: a failing seed replays exactly.

Storage faults (`storage_faults`): a journal append or fsync that fails, a commit of a tick's
applies that fails (rolled back, as SQLite does), and a disk that is full for a while. A replica
must stop at such a fault (FailStop); the simulator then crashes that node and restarts it later,
as an operator's supervisor would.

Invariants are checked at every step, and the first violation stops the run:
  * ack-durable: no replica acknowledges an entry (or answers a vote) it does not hold durably;
  * commit-majority: every entry a leader reported committed is held durably by a majority
    (in its journal, or applied to its durable state machine);
  * apply-agreement: no two replicas applied different commands at one index;
  * apply-continuity: a replica's durable state machine advances by exactly one index at a time,
    pysyncobj's own entries included (a build that goes on after a failed commit leaves a hole);
  * election-safety: at most one leader per term;
  * and at the end, after the faults stop and the cluster settles: every write acknowledged to
    a client is applied on every replica that applied that far.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import itertools
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pysyncobj.dns_resolver as _dns_mod
import pysyncobj.syncobj as _so_mod
import pysyncobj.tcp_connection as _tc_mod
import pysyncobj.transport as _tr_mod
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from raftstore.raft import group as _group  # installs the journal factory
from raftstore.raft import introspect
from raftstore.raft.commands import Command, Outcome
from raftstore.raft.failstop import FailStop
from raftstore.raft.group import RaftGroup
from raftstore.raft.journal import DurableJournal
from raftstore.sim.disk import SimDisk

logger = logging.getLogger(__name__)

REGIONS = {"n1": "us-east", "n2": "eu-west", "n3": "ap-south"}
# One-way delays (seconds): roughly us-east <-> europe, us-east <-> asia, europe <-> asia.
ONE_WAY_S = {frozenset(("us-east", "eu-west")): 0.040, frozenset(("us-east", "ap-south")): 0.080,
             frozenset(("eu-west", "ap-south")): 0.110}


class Violation(AssertionError):
    """An invariant broke; the message says which, where and when."""


@dataclass
class SimConfig:
    seed: int
    target: str = "ours"            # "ours" (RaftGroup) or "plain" (pysyncobj 0.3.17 as it comes)
    fsync_works: bool = True         # False: a lying disk; the checker must catch the loss
    write_through: bool = False      # True: every write durable at once (a perfect disk)
    entry_bytes: int = 20_000
    proposals: int = 300
    propose_interval_s: float = 0.01
    crashes: bool = True             # crash nodes (the leader, mostly) at random moments
    partitions: bool = True
    faults_until_s: float = 8.0
    settle_s: float = 8.0
    tick_s: float = 0.01
    jitter: float = 0.2
    compaction_entries: int = 120    # small, so snapshots and compaction happen in every run
    check_at_send: bool = True       # False: only the commit and end checks (to see losses happen)
    storage_faults: bool = False     # failed appends, fsyncs and apply commits; disks that fill
    conf: dict = field(default_factory=lambda: dict(appendEntriesPeriod=0.05, raftMinTimeout=0.5,
                                                    raftMaxTimeout=1.0))

    def replay_command(self) -> str:
        flags = ["--seed %d" % self.seed, "--target %s" % self.target]
        if not self.fsync_works:
            flags.append("--fsync-off")
        if self.write_through:
            flags.append("--write-through")
        if not self.crashes:
            flags.append("--no-crashes")
        if not self.partitions:
            flags.append("--no-partitions")
        if self.proposals != 300:
            flags.append("--proposals %d" % self.proposals)
        if self.storage_faults:
            flags.append("--storage-faults")
        return "PYTHONHASHSEED=0 python -m raftstore.sim " + " ".join(flags)


class LinkRandom:
    """Each link's own random numbers, drawn in that link's send order. One generator for all
    links would hand out its numbers in the order pysyncobj iterates its sets of peers, which
    depends on PYTHONHASHSEED: a seed would then replay only under the hash seed it ran with
    (the replay command's PYTHONHASHSEED=0), not under pytest's own, nor after other seeds run in
    the same process."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rngs: dict[tuple, random.Random] = {}

    def __call__(self, src, dst) -> float:
        rng = self.rngs.get((src, dst))
        if rng is None:
            rng = self.rngs[(src, dst)] = random.Random("%d/%s/%s" % (self.seed, src, dst))
        return rng.random()


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@contextlib.contextmanager
def patched_pysyncobj(clock: _Clock, rng: random.Random):
    """Route pysyncobj's time and election randomness through the simulation."""
    mods = (_so_mod, _tr_mod, _tc_mod, _dns_mod)
    saved = [m.monotonicTime for m in mods], _so_mod.random
    for m in mods:
        m.monotonicTime = clock
    _so_mod.random = random.Random(rng.random())
    try:
        yield
    finally:
        for m, f in zip(mods, saved[0]):
            m.monotonicTime = f
        _so_mod.random = saved[1]


class SimTransport(Transport):
    """In-memory transport: messages are msgpack-encoded (as on our wire) and queued on the world."""

    def __init__(self, world: "World", syncObj, selfNode, otherNodes):
        super().__init__(syncObj, selfNode, otherNodes)
        self.world, self.me = world, selfNode.id
        self.peers = {n.id: n for n in otherNodes}
        self.started = False
        syncObj.addOnTickCallback(self._first_tick)

    def _first_tick(self):
        if not self.started:  # SyncObj installs its callbacks after constructing the transport
            self.started = True
            for nid in sorted(self.peers):
                if self.world.link_up(self.me, nid):
                    self._onNodeConnected(self.peers[nid])
                    other = self.world.transports.get(nid)
                    if other is not None and other.started:
                        other._onNodeConnected(other.peers[self.me])

    def deliver(self, src: str, payload: bytes) -> None:
        if src in self.peers:
            self._onMessageReceived(self.peers[src], msgpack.unpackb(payload, raw=False))

    def send(self, node, message):
        self.world.check_outgoing(self.me, node.id, message)
        return self.world.send(self.me, node.id, msgpack.packb(message, use_bin_type=True))


class SimStateMachine:
    """A replica's state machine: a tick's applies commit together (`batch`), as in SQLite with
    synchronous=FULL; a commit that fails (a storage fault) rolls the whole batch back."""

    def __init__(self, world: "World", node_id: str) -> None:
        self.world, self.node_id = world, node_id
        self.applied = 0
        self.log: dict[int, bytes] = {}          # index -> command id applied there
        self.results: dict[bytes, tuple] = {}
        self.commit_failures = 0                 # the next this many batch commits fail

    def applied_index(self) -> int:
        return self.applied

    @contextlib.contextmanager
    def batch(self):
        saved = (self.applied, dict(self.log), dict(self.results))
        try:
            yield
            if self.commit_failures and self.applied != saved[0]:   # an empty commit writes nothing
                self.commit_failures -= 1
                raise OSError(errno.ENOSPC, "simulated: database or disk is full")
        except BaseException:
            self.applied, self.log, self.results = saved
            raise

    def _advance(self, index: int) -> bool:
        if index <= self.applied:
            return False   # a replay below the stored state
        if index != self.applied + 1:
            self.world.fail("apply-continuity: %s applies index %d over a hole: its state machine holds %d"
                            % (self.node_id, index, self.applied))
        self.applied = index
        return True

    def apply(self, index: int, command: Command) -> Any:
        assert self._advance(index), (self.node_id, index, self.applied)   # RaftGroup never replays here
        self.world.record_apply(self.node_id, index, command.id)
        self.log[index] = command.id
        self.results[command.id] = (True, index)
        return index

    def record_failed(self, index: int, command: Command | None, error: str | dict) -> None:
        if command is not None:  # every simulated command is valid: a failure is a bug
            self.world.fail("apply-failed: %s could not apply index %d: %s" % (self.node_id, index, error))
        self._advance(index)

    def result_of(self, command_id: bytes):
        return (command_id in self.results, self.results.get(command_id))

    def write_snapshot(self, f, index: int) -> None:
        f.write(msgpack.packb([self.applied, sorted(self.log.items()),
                               sorted((k, list(v)) for k, v in self.results.items())], use_bin_type=True))

    def snapshot_writer(self, index: int):
        state = msgpack.packb([self.applied, sorted(self.log.items()),
                               sorted((k, list(v)) for k, v in self.results.items())], use_bin_type=True)
        return lambda f: f.write(state)   # the state now, written whenever the job runs

    def stage_snapshot(self, f, index: int):
        return msgpack.unpackb(f.read(), raw=False, strict_map_key=False)

    def install_staged(self, staged, index: int) -> None:
        self._install(*staged)

    def read_snapshot(self, f, index: int) -> None:
        self._install(*msgpack.unpackb(f.read(), raw=False, strict_map_key=False))

    def _install(self, applied, log, results) -> None:
        for idx, cid in log:
            if idx > self.applied:
                self.world.record_apply(self.node_id, idx, cid)
        self.applied, self.log = applied, dict(log)
        self.results = {k: tuple(v) for k, v in results}


class PlainKV(SyncObj):
    """pysyncobj 0.3.17 as it comes: its own append handling, a journal it never syncs."""

    def __init__(self, world: "World", me: str, peers: list[str], conf: SyncObjConf, journal_name: str):
        self.world, self.me = world, me
        self.sm = world.sms[me]
        super().__init__(Node(me), [Node(p) for p in peers], conf,
                         transportClass=lambda so, s, o: SimTransport(world, so, s, o))

    @replicated
    def put(self, cid, value):
        index = introspect.last_applied(self) + 1
        self.world.record_apply(self.me, index, cid)
        self.sm.log[index] = cid
        self.sm.applied = index
        return index

    def is_leader(self):
        return self._isLeader()

    @property
    def journal(self):
        return introspect.raft_log(self)


class World:
    def __init__(self, cfg: SimConfig, workdir: str) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.rng = random.Random(cfg.seed)
        self.clock = _Clock()
        self.ids = sorted(REGIONS)
        self.majority = len(self.ids) // 2 + 1
        self.disks = {i: SimDisk(fsync_works=cfg.fsync_works, write_through=cfg.write_through, clock=self.clock)
                      for i in self.ids}
        self.sms = {i: SimStateMachine(self, i) for i in self.ids}
        self.nodes: dict[str, Any] = {}
        self.transports: dict[str, SimTransport] = {}
        self.incarnation = {i: 0 for i in self.ids}
        self.down_links: set[frozenset] = set()
        self.link_epoch: dict[frozenset, int] = {}
        self.link_last: dict[tuple[str, str], float] = {}
        self.link_random = LinkRandom(cfg.seed)
        self.queue: list = []
        self.seq = itertools.count()
        self.trace = hashlib.sha256()
        self.events: list[str] = []
        self.leaders: dict[int, set[str]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}   # index -> (term, command bytes)
        self.commit_seen = 0
        self.checked_version = -1
        self.applied_at: dict[int, bytes] = {}
        self.acked: dict[bytes, int] = {}                   # command id -> index, acknowledged to a client
        self.outcomes: dict[str, int] = {}
        self.steps = 0
        self.fail_stops = 0
        self.violation: str | None = None
        self.sends_this_step = 0

    # --- bookkeeping -----------------------------------------------------------------------
    def log(self, text: str) -> None:
        line = "%.4f %s" % (self.clock.t, text)
        self.trace.update(line.encode() + b"\n")
        self.events.append(line)

    def fail(self, text: str) -> None:
        """Record the first violation and raise it. The code under test may swallow the raise
        (it never lets a message handler throw), so the main loop raises it again after the step."""
        if self.violation is None:
            self.log("VIOLATION " + text)
            self.violation = "seed %d t=%.3f: %s\n  replay: %s" % (self.cfg.seed, self.clock.t, text, self.cfg.replay_command())
        raise Violation(self.violation)

    def push(self, t: float, kind: str, data) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), kind, data))

    # --- nodes -------------------------------------------------------------------------------
    def journal_name(self, nid: str) -> str:
        return "sim-%d-%s-%s.journal" % (self.cfg.seed, self.cfg.target, nid)

    def start_node(self, nid: str) -> None:
        peers = [p for p in self.ids if p != nid]
        jfile = self.disks[nid].open(self.journal_name(nid))
        conf = dict(self.cfg.conf)
        if self.cfg.target == "ours":
            conf["logCompactionMinEntries"] = self.cfg.compaction_entries
            os.makedirs(os.path.join(self.workdir, nid), exist_ok=True)
            node = RaftGroup(nid, peers, journal_file=jfile, dump_path=os.path.join(self.workdir, nid, "dump"),
                             state_machine=self.sms[nid], conf=conf, name=nid, group_key="sim",
                             transport_class=lambda so, s, o: SimTransport(self, so, s, o),
                             snapshot_executor=lambda job, nid=nid: self.push(
                                 self.clock.t + self.rng.uniform(0.005, 0.3), "job", (nid, self.incarnation[nid], job)))
        else:
            with _group._journal_registry_lock:
                _group._journal_registry[jfile.name] = DurableJournal(jfile)
            node = PlainKV(self, nid, peers, SyncObjConf(autoTick=False, journalFile=jfile.name,
                                                          logCompactionMinEntries=10**9, **conf), jfile.name)
        self.transports[nid] = introspect.transport(node) if self.cfg.target == "plain" else introspect.transport(node)._inner
        self.nodes[nid] = node
        self.incarnation[nid] += 1
        self.push(self.clock.t + self.cfg.tick_s * self.rng.random(), "tick", (nid, self.incarnation[nid]))

    def alive(self, nid: str) -> bool:
        return self.nodes.get(nid) is not None

    def crash(self, nid: str) -> None:
        if nid not in self.nodes:
            return
        self.log("crash %s" % nid)
        self._close_node(self.nodes.pop(nid))
        self.transports.pop(nid, None)
        self.incarnation[nid] += 1
        for other in self.ids:
            if other != nid:
                self._cut(nid, other)
        self.disks[nid].crash(self.rng)

    @staticmethod
    def _close_node(node) -> None:
        """Release a group's descriptors (RaftGroup.close); its journal keeps only what it
        synced. pysyncobj as it comes ("plain") opens none here (appendEntriesUseBatch on)."""
        if isinstance(node, RaftGroup):
            node.close(sync=False)

    def close(self) -> None:
        for node in self.nodes.values():
            self._close_node(node)

    def restart(self, nid: str) -> None:
        if self.alive(nid):
            return
        self.log("restart %s" % nid)
        try:
            self.start_node(nid)
        except FailStop as exc:
            self.fail_stop(nid, exc)

    def fail_stop(self, nid: str, exc: FailStop) -> None:
        """The node stopped itself on a storage error: it is down (what it had not synced is
        lost, as in a crash) until a supervisor restarts it a little later."""
        self.fail_stops += 1
        self.log("fail-stop %s: %s" % (nid, exc))
        self.nodes.setdefault(nid, None)   # crash() expects a node; start_node may not have set it
        self.transports.setdefault(nid, None)
        self.crash(nid)
        self.push(self.clock.t + self.rng.uniform(0.2, 1.0), "call", lambda: self.restart(nid))

    # --- network -----------------------------------------------------------------------------
    def link_up(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.down_links and self.alive(a) and self.alive(b)

    def _cut(self, a: str, b: str) -> None:
        key = frozenset((a, b))
        self.link_epoch[key] = self.link_epoch.get(key, 0) + 1   # in-flight messages are dropped
        for x, y in ((a, b), (b, a)):
            t = self.transports.get(x)
            if t is not None and t.started:
                t._onNodeDisconnected(t.peers[y])

    def _join(self, a: str, b: str) -> None:
        if not self.link_up(a, b):
            return
        for x, y in ((a, b), (b, a)):
            t = self.transports.get(x)
            if t is not None and t.started:
                t._onNodeConnected(t.peers[y])

    def partition(self, a: str, b: str) -> None:
        key = frozenset((a, b))
        if key not in self.down_links:
            self.down_links.add(key)
            self.log("partition %s-%s" % tuple(sorted(key)))
            self._cut(a, b)

    def heal_all(self) -> None:
        for key in sorted(self.down_links, key=sorted):
            self.down_links.discard(key)
            a, b = sorted(key)
            self.log("heal %s-%s" % (a, b))
            self._join(a, b)

    def send(self, src: str, dst: str, payload: bytes) -> bool:
        self.sends_this_step += 1
        if self.sends_this_step > 5000:   # simulated time stands still within a step
            self.fail("message-storm: %s sent over 5000 messages while handling one event" % src)
        if not self.link_up(src, dst):
            return False
        base = ONE_WAY_S[frozenset((REGIONS[src], REGIONS[dst]))]
        t = self.clock.t + base * (1.0 + self.cfg.jitter * self.link_random(src, dst))
        t = max(t, self.link_last.get((src, dst), 0.0))   # FIFO per link, like TCP
        self.link_last[(src, dst)] = t
        self.push(t, "msg", (src, dst, self.link_epoch.get(frozenset((src, dst)), 0), payload))
        return True

    # --- clients -----------------------------------------------------------------------------
    def propose(self, i: int) -> None:
        live = [n for n in self.ids if self.alive(n)]
        if not live:
            return
        nid = live[self.rng.randrange(len(live))]
        cid = self.rng.getrandbits(128).to_bytes(16, "big")
        value = self.rng.getrandbits(64).to_bytes(8, "big") * (self.cfg.entry_bytes // 8)
        node = self.nodes[nid]
        if self.cfg.target == "ours":
            def done(outcome: Outcome, result, cid=cid, nid=nid):
                self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1
                self.log("result %s %s %s" % (nid, cid.hex()[:8], outcome.value))
                if outcome is Outcome.COMMITTED:
                    self.acked[cid] = result
            node.propose("put", {"k": "k%d" % i, "v": value}, done, command_id=cid, timeout_s=5.0)
        else:
            def done(res, err, cid=cid, nid=nid):
                name = "committed" if err == FAIL_REASON.SUCCESS else "err%d" % err
                self.outcomes[name] = self.outcomes.get(name, 0) + 1
                self.log("result %s %s %s" % (nid, cid.hex()[:8], name))
                if err == FAIL_REASON.SUCCESS:
                    self.acked[cid] = res
            node.put(cid, value, callback=done)

    # --- invariants ----------------------------------------------------------------------------
    def record_apply(self, nid: str, index: int, cid: bytes) -> None:
        prior = self.applied_at.setdefault(index, cid)
        if prior != cid:
            self.fail("apply-agreement: %s applied %s at index %d, another replica applied %s"
                      % (nid, cid.hex()[:8], index, prior.hex()[:8]))

    def check_outgoing(self, src: str, dst: str, message: dict) -> None:
        if not self.cfg.check_at_send:
            return
        node = self.nodes[src]
        image = self.disks[src].open(self.journal_name(src)).image
        mtype = message.get("type")
        if mtype == "next_node_idx" and message.get("success"):
            ack = message["next_node_idx"] - 1
            if ack > self.sms[src].applied and (image.last_index() < ack or image.term_at(ack) != _term_at(node.journal, ack)):
                self.fail("ack-durable: %s acknowledged index %d to %s but holds durably only up to %d"
                          % (src, ack, dst, image.last_index()))
        elif mtype == "response_vote":
            if image.term < message["term"] or image.voted_for != dst:
                self.fail("ack-durable: %s voted for %s in term %d but its durable vote is %r in term %d"
                          % (src, dst, message["term"], image.voted_for, image.term))

    def check_step(self) -> None:
        for nid in self.ids:
            node = self.nodes.get(nid)
            if node is None or not node._isLeader():
                continue
            term = introspect.current_term(node)
            leaders = self.leaders.setdefault(term, set())
            if nid not in leaders:
                leaders.add(nid)
                self.log("leader %s term %d" % (nid, term))
                if len(leaders) > 1:
                    self.fail("election-safety: leaders %s in term %d" % (sorted(leaders), term))
            commit = introspect.commit_index(node)
            journal = node.journal
            for idx in range(self.commit_seen + 1, commit + 1):
                t = _term_at(journal, idx)
                if t is not None and idx not in self.committed:
                    self.committed[idx] = (t, nid)
            self.commit_seen = max(self.commit_seen, commit)
        version = sum(d.version for d in self.disks.values()) + len(self.committed)
        if version == self.checked_version:
            return
        self.checked_version = version
        floor = min(sm.applied for sm in self.sms.values()) if self.cfg.target == "ours" else 0
        images = {nid: self.disks[nid].open(self.journal_name(nid)).image for nid in self.ids}
        for idx in sorted(i for i in self.committed if i > floor):
            term, leader = self.committed[idx]
            holders = [nid for nid in self.ids
                       if images[nid].term_at(idx) == term
                       or (self.cfg.target == "ours" and (self.sms[nid].applied >= idx or self._dump_covers(nid) >= idx))]
            if len(holders) < self.majority:
                detail = ", ".join("%s: log %d..%d term %s, applied %d" % (
                    nid, images[nid].first_index(), images[nid].last_index(), images[nid].term_at(idx),
                    self.sms[nid].applied) for nid in self.ids)
                self.fail("commit-majority: index %d (term %d), committed by %s, is held durably only by %s (%s)"
                          % (idx, term, leader, holders, detail))

    def _dump_covers(self, nid: str) -> int:
        """Last index covered by the node's snapshot (written and fsynced before the journal is
        compacted to it): a no-op entry the state machine never saw is held there too."""
        try:
            return _group._read_snapshot_header(os.path.join(self.workdir, nid, "dump"))[0][1]
        except (OSError, ValueError):
            return 0

    def check_end(self) -> None:
        for cid, index in sorted(self.acked.items(), key=lambda kv: kv[1]):
            for nid in self.ids:
                sm = self.sms[nid]
                if sm.applied >= index and sm.log.get(index) != cid and cid not in sm.log.values():
                    self.fail("acked-lost: write %s acknowledged at index %d is missing on %s"
                              % (cid.hex()[:8], index, nid))
        top = max(sm.applied for sm in self.sms.values())
        behind = [nid for nid in self.ids if self.sms[nid].applied < top]
        if self.acked and len(self.ids) - len(behind) < self.majority:
            self.fail("liveness: after settling only %s applied up to %d" % (sorted(set(self.ids) - set(behind)), top))

    # --- main loop -------------------------------------------------------------------------------
    def schedule(self) -> None:
        start = self.clock.t + 0.5
        for i in range(self.cfg.proposals):
            self.push(start + i * self.cfg.propose_interval_s, "call", lambda i=i: self.propose(i))
        if not (self.cfg.crashes or self.cfg.partitions):
            return
        t = self.clock.t + 0.5 + self.rng.uniform(0.2, 1.5)
        end = self.clock.t + self.cfg.faults_until_s
        while t < end:
            self.push(t, "call", self.random_fault)
            t += self.rng.uniform(0.3, 2.0)
        self.push(end, "call", self.end_faults)

    def random_fault(self) -> None:
        if self.cfg.storage_faults and self.rng.random() < 0.4:
            self.storage_fault()
            return
        r = self.rng.random()
        down = [n for n in self.ids if not self.alive(n)]
        if down and r < 0.5:
            self.restart(down[self.rng.randrange(len(down))])
            return
        if self.cfg.crashes and r < 0.85:
            leaders = [n for n in self.ids if self.alive(n) and self.nodes[n]._isLeader()]
            pool = leaders if leaders and self.rng.random() < 0.8 else [n for n in self.ids if self.alive(n)]
            if pool and len(down) < 2:
                victim = pool[self.rng.randrange(len(pool))]
                self.crash(victim)
                self.push(self.clock.t + self.rng.uniform(0.2, 3.0), "call", lambda v=victim: self.restart(v))
            return
        if self.cfg.partitions:
            if self.down_links and self.rng.random() < 0.5:
                self.heal_all()
            else:
                a, b = self.rng.sample(self.ids, 2)
                self.partition(a, b)

    def storage_fault(self) -> None:
        """One storage fault on a live node (the leader, mostly): the next appends or fsyncs of
        its journal fail, the next commit of its applies fails, or its disk is full for a while."""
        live = [n for n in self.ids if self.alive(n)]
        if not live:
            return
        leaders = [n for n in live if self.nodes[n]._isLeader()]
        pool = leaders if leaders and self.rng.random() < 0.7 else live
        nid = pool[self.rng.randrange(len(pool))]
        kind = self.rng.choice(("append", "fsync", "commit", "full"))
        disk = self.disks[nid]
        if kind == "append":
            disk.append_failures = self.rng.randint(1, 3)
        elif kind == "fsync":
            disk.sync_failures = 1
        elif kind == "commit":
            self.sms[nid].commit_failures = 1
        else:
            disk.full_until = self.clock.t + self.rng.uniform(0.2, 2.0)
        self.log("storage fault %s: %s" % (nid, kind))

    def end_faults(self) -> None:
        self.heal_all()
        for nid in self.ids:
            self.disks[nid].clear_faults()
            self.sms[nid].commit_failures = 0
            self.restart(nid)

    def start(self) -> None:
        for nid in self.ids:
            self.start_node(nid)

    def leader(self) -> str | None:
        leaders = [n for n in self.ids if self.alive(n) and self.nodes[n]._isLeader()]
        return leaders[0] if len(leaders) == 1 else None

    def run_until(self, t_end: float) -> None:
        """Process events up to simulated time t_end, checking invariants after each one."""
        while self.queue and self.queue[0][0] <= t_end:
            t, _, kind, data = heapq.heappop(self.queue)
            self.clock.t = max(self.clock.t, t)
            self.sends_this_step = 0
            try:
                self._step(kind, data)
            except FailStop as exc:
                if self.violation is not None:
                    raise Violation(self.violation) from exc
                nid = data[1] if kind == "msg" else data[0] if kind in ("tick", "job") else None
                if nid is None:
                    raise
                self.fail_stop(nid, exc)
            self.steps += 1
            if self.violation is not None:
                raise Violation(self.violation)
            self.check_step()
        self.clock.t = max(self.clock.t, t_end)

    def _step(self, kind: str, data) -> None:
        if kind == "tick":
            nid, inc = data
            if self.alive(nid) and inc == self.incarnation[nid]:
                self.nodes[nid].doTick(0.0)
                self.push(self.clock.t + self.cfg.tick_s, "tick", data)
        elif kind == "msg":
            src, dst, epoch, payload = data
            if epoch == self.link_epoch.get(frozenset((src, dst)), 0) and self.link_up(src, dst):
                self.transports[dst].deliver(src, payload)
        elif kind == "job":   # snapshot work, run later as a thread would; dropped by a crash
            nid, inc, job = data
            if self.alive(nid) and inc == self.incarnation[nid]:
                self.log("snapshot job %s" % nid)
                job()
        else:
            data()

    def run(self) -> dict:
        with patched_pysyncobj(self.clock, self.rng), contextlib.closing(self):
            self.start()
            self.schedule()
            self.run_until(self.clock.t + max(self.cfg.faults_until_s, 0.5 + self.cfg.proposals * self.cfg.propose_interval_s)
                           + self.cfg.settle_s)
            self.check_end()
        return dict(seed=self.cfg.seed, target=self.cfg.target, steps=self.steps, acked=len(self.acked),
                    fail_stops=self.fail_stops,
                    outcomes=dict(sorted(self.outcomes.items())), committed=len(self.committed),
                    applied=[self.sms[n].applied for n in self.ids], trace=self.trace.hexdigest()[:16])


def _term_at(journal, idx: int) -> int | None:
    if len(journal) == 0:
        return None
    pos = idx - journal[0][1]
    if pos < 0 or pos >= len(journal):
        return None
    return journal[pos][2]


@contextlib.contextmanager
def quiet_world(workdir: str, seed: int):
    """A started world with no faults and no proposals, run until it has a leader (for tests
    that drive the groups themselves)."""
    w = World(SimConfig(seed=seed, proposals=0, crashes=False, partitions=False), str(workdir))
    with patched_pysyncobj(w.clock, w.rng), contextlib.closing(w):
        w.start()
        w.run_until(w.clock.t + 3.0)
        assert w.leader() is not None, "seed %d elected no leader in 3 s" % seed
        yield w


def run_seed(cfg: SimConfig) -> dict:
    """Run one seed in a scratch directory; raises Violation with a replay command on failure."""
    workdir = tempfile.mkdtemp(prefix="raftstore-sim-")
    try:
        return World(cfg, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
