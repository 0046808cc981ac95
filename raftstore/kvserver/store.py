"""Store: the ranges a node hosts, each a RaftGroup over the node's one MVCCStore.

No sockets and no threads here: the node (node.py) or the simulator (sim/) owns those and
injects how journals are opened and how a group's messages travel. Everything runs on one
thread, the node loop.

Range lifecycle:
  * bootstrap: on a fresh cluster every node writes the descriptors of range 1 (meta) and
    range 2 (all data) locally; both start as ordinary empty Raft groups;
  * split: the leader of a big range allocates a range id from meta, then proposes `split` in
    its own log. The split's apply on each replica is the commit point (replica.py); after it,
    the Store *initializes* the right half: applied index INIT_INDEX, a snapshot (dump) of its
    span, and a journal seeded with two no-op entries at INIT_INDEX-1 and INIT_INDEX, then
    starts its group. Initialization is idempotent and repeated at start-up for every local
    descriptor, so a crash at any point either leaves the split unapplied (the parent still
    serves the whole span) or finishes it on restart. The seeded log means a replica that never
    applied the split (an uninitialized one, log at index 1) can only catch up by snapshot;
  * meta: the leader of each range makes sure meta holds its descriptor's generation;
  * uninitialized replicas: frames for a group this node does not know create its replica only
    if this node's copy of meta knows the range and its span overlaps no local range; the
    replica then waits for a snapshot (RangeReplica refuses commands until one arrives).
"""

from __future__ import annotations

import bisect
import collections
import glob
import heapq
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import msgpack

from raftstore import constants
from raftstore.kvserver.closedts import CLOSED_BEHIND, ZERO, Receiver, Sender
from raftstore.kvserver.gc import plan_spans
from raftstore.kvserver.consistency import Checksum, ChecksumRegistry, range_checksum
from raftstore.kvserver.batch import BATCH_OP, STRONG, BatchRequest, Scan
from raftstore.kvserver.latches import Latches
from raftstore.kvserver.lease import READ_TOO_NEW, READ_UNCERTAIN, Lease, TimestampCache, next_ts
from raftstore.raft.commands import (CommandError, Outcome, Rejection, encode_command, new_command_id, not_leader,
                                     saved_outcome)
from raftstore.raft.group import Executor, RaftGroup, _SNAPSHOT_MAGIC, _LEN, run_inline
from raftstore.raft.journal import LogFile, encode_record, MAGIC as JOURNAL_MAGIC
from raftstore.storage.mvcc import MVCCStore, StoreError, discard_staged
from raftstore.kvserver.ranges import (FIRST_DATA_RANGE_ID, META_RANGE_ID, MISMATCH, RANGE_KEY_MISMATCH, RangeDescriptor,
                              bootstrap_descriptors, local_desc_key, pretty_key, split_key_for)
from raftstore.keyspace import ZONE_END, ZONE_PREFIX, decode_zone
from raftstore.kvserver.zones import ZoneMap
from raftstore.kvserver.replica import (LATEST, RangeReplica, ReadUncertain, desc_ts, local_descriptors,
                                        meta_descriptors, read_local_descriptor)

logger = logging.getLogger(__name__)

INIT_INDEX = 10      # a split-created range starts its log here (see module docstring)
INIT_TERM = 5
_NO_OP = b"\x01"     # pysyncobj's _COMMAND_TYPE.NO_OP


EVALUATED_OPS = frozenset({"put", "delete", "cas", "put_if"})   # client writes: evaluated by the leader under latches
ADMIN_SPLIT = "admin_split"   # a split asked for at a key ({"key"}): the range's leader splits with its own descriptor


def _no_crash(point: str) -> None:
    return None


@dataclass
class StoreConfig:
    node_id: int
    replicas: list[int]                    # node ids that host every range
    raft_dir: str                          # journals and snapshots
    range_bytes_max: int = constants.range_bytes_max
    raft_conf: dict | None = None
    maintain_interval_s: float = 0.5
    quiesce: bool = True                   # idle groups tick rarely; the node heartbeats for them
    closed_lag_s: float = constants.closed_lag_s   # how far behind its clock a leaseholder closes
    gc_ttl_s: float = constants.gc_ttl_s           # versions hidden longer than this are removed (kvserver.gc)
    gc_interval_s: float = constants.gc_interval_s


# Raft messages that wake an idle group (keep its timers fast a while); heartbeats and their
# acknowledgements only tick it.
WAKING_MESSAGES = frozenset({"apply_command", "apply_command_response", "request_vote", "response_vote", "timeout_now"})


def _idle_period(rid: int) -> float:
    """An idle group's tick period: idle_tick_interval_s give or take 25 %, fixed per range, so
    groups that went idle together do not keep ticking together (a thousand ticks in one loop
    iteration delay every write behind them). Deterministic, for the simulator."""
    spread = ((rid * 2654435761) % 1024) / 1024.0          # Knuth's multiplicative hash
    return constants.idle_tick_interval_s * (0.75 + 0.5 * spread)


class Store:
    def __init__(self, cfg: StoreConfig, mvcc: MVCCStore, *, open_journal: Callable[[str], LogFile],
                 transport_class: Callable[[int], Any], clock: Callable[[], float] = time.monotonic,
                 now_ts: Callable[[], list] | None = None, crash_point: Callable[[str], None] = _no_crash,
                 snapshot_executor: Executor = run_inline, checksums: ChecksumRegistry | None = None,
                 propose_at_leader: Callable[[int, str, dict, Callable[[Outcome, Any], None]], None] | None = None,
                 peer_rtt_s: Callable[[int], float | None] = lambda peer: None,
                 read_executor: Callable[..., None] | None = None,
                 observe_ts: Callable[[tuple[int, int]], None] = lambda ts: None,
                 max_offset_ns: int = constants.max_clock_offset_ns, stasis_ns: int | None = None,
                 lease_ns: int = int(constants.lease_duration_s * 1e9),
                 preferred_holder: Callable[[tuple, str | None], int | None] = lambda replicas, home: None,
                 protected_here: Callable[[], tuple[int, int] | None] = lambda: None) -> None:
        """`snapshot_executor` runs the slow part of snapshots (writing one, staging a received
        one) and of consistency checks (hashing a range): the node gives
        raftstore.raft.group.run_in_thread so its loop never waits for a whole range; the
        simulator schedules them on its own clock; the default runs them inline. `checksums`
        receives the replicas' checksums (the node shares it with its ConsistencyChecker).
        `propose_at_leader(range_id, op, args, callback)` proposes the store's own commands
        (meta updates, range-id allocation, splits) at the range's leader: the node hands them
        to the leader's node over the peer link, so pysyncobj never forwards a proposal; the
        default proposes here (the simulator). `peer_rtt_s(node_id)` is the round trip the node
        last measured to a peer (None: not known), for the quorum round trip an answer reports.
        `read_executor(job, points)` runs `job(reader)` with a reader of the MVCC file (an MVCCReader, or
        the store itself) and then, on this store's thread, the function the job returns:
        the node runs leaseholder reads on reader threads, but for a read of a few point keys
        (`points`, None for a read with a scan) inline; the default (the simulator) runs every one inline.
        `observe_ts(ts)` tells the node's clock of a commit timestamp applied here (an HLC
        update); `max_offset_ns` is the clock offset leases and uncertainty allow for."""
        self.cfg = cfg
        self.peer_rtt_s = peer_rtt_s
        self.mvcc = mvcc
        self.open_journal = open_journal
        self.transport_class = transport_class
        self.clock = clock
        self.now_ts = now_ts or (lambda: [time.time_ns(), 0])
        self.crash_point = crash_point
        self.groups: dict[int, RaftGroup] = {}
        self.replicas: dict[int, RangeReplica] = {}
        self.disk_low: str | None = None   # why new entries are refused (raftstore.storage.diskspace), set by the node
        self.latches = Latches()
        self.holds: dict[bytes, tuple[float, list, Callable[[], None]]] = {}   # lock token -> (until, latches, release)
        # Client commands by id, from evaluation until answered: a retry that arrives meanwhile
        # waits for the same answer. Commands waiting, per range, for this replica's lead to be
        # ready (kvserver.store.Store._run_awaiting_lead): (deadline, callback, retry).
        self.in_flight: dict[bytes, list[Callable[[Outcome, Any], None]]] = {}
        self.awaiting_lead: dict[int, list[tuple[float, Callable[[Outcome, Any], None], Callable[[], None]]]] = {}
        self.written_bytes: dict[int, int] = {}
        self.sizes: dict[int, int] = {}            # range -> bytes, kept incrementally (maintain)
        self.size_measurements = 0                 # sizes measured by query (the rest are kept by adding writes)
        self.splitting: set[int] = set()
        self.meta_synced: dict[int, int] = {}
        self.next_maintain = 0.0
        self.active_until: dict[int, float] = {}      # busy until then: tick every active_tick_interval_s
        self.timers: list[tuple[float, int]] = []      # (next periodic tick, range id), lazily deleted
        self.timer_at: dict[int, float] = {}
        self.tick_soon: set[int] = set()               # groups with a proposal or message to handle
        self.dirty: set[int] = set()                   # groups whose journal may need a sync
        # Work lists, so that no chore walks every group: the leader each group last showed
        # after a tick (and the groups each node leads), and the groups maintain() must look at.
        self.leader_of: dict[int, str | None] = {}
        self.leader_changes = 0                        # a group newly showing a leader (status, metrics)
        self.led_by: dict[str, set[int]] = {}
        self.maintain_due: set[int] = set()
        # Quiescence (tick, on_node_heartbeat): when each peer's node was last heard, the groups
        # it claims to lead that this node disputes (told in our next heartbeat to it), the
        # groups it disputes and claims (from its last heartbeat), and led groups to send
        # appends at once.
        self.node_heard: dict[int, float] = {}
        self.disputes_for: dict[int, set[int]] = {}
        self.disputes_from: dict[int, set[int]] = {}
        self.claims_from: dict[int, dict[int, int]] = {}   # peer -> {range id: term} it leads, from its last heartbeat
        self.silent_peers: set[int] = set()            # peers not heard for leader_silent_s (their groups' followers watch their timers)
        self.next_silence_check = 0.0
        self.wake_now: dict[int, bool] = {}
        self.snapshot_executor = snapshot_executor
        self.woken: collections.deque[int] = collections.deque()   # snapshot job done (any thread)
        self._desc_index: tuple = (None, [], [])   # (version, starts, descriptors): _replica_descs
        self.checksums = checksums if checksums is not None else ChecksumRegistry()
        self.propose_at_leader = propose_at_leader or self.propose
        # Range leases (kvserver.lease; `_lease_upkeep`, `_serve_read`). Per range: the
        # timestamp cache of the lease this node holds, the highest timestamp it served or
        # proposed under it, the lease seq it stopped serving (handed over, or held by a previous
        # process: its timestamp cache is gone), a lease command of its own in flight, the last use
        # of its lease (a lease in use is extended, an idle one lapses) and ranges whose lease
        # this node should take.
        self.read_executor = read_executor or (lambda job, points=None: job(self.mvcc)())
        self.observe_ts = observe_ts
        self.max_offset_ns = max_offset_ns
        self.stasis_ns = max_offset_ns if stasis_ns is None else stasis_ns   # 0 only in a test's broken build
        self.lease_ns = lease_ns
        # (replicas, the range's home region from its zone or None) -> the node its lease should
        # move to, or None: where it is (Node._preferred_holder; kvserver/zones.py)
        self.preferred_holder = preferred_holder
        self.zones = ZoneMap()
        self.next_zone_refresh = 0.0
        self.tscache: dict[int, TimestampCache] = {}
        self.tscache_seq: dict[int, int] = {}
        # Ranges whose applied lease is this node's and may still reach the side transport's
        # target: each new cache and each lease applied here adds one, the side transport drops
        # one once its applied lease is another's or ends below the target (only a lease
        # applied later, which adds it again, can change that), so it walks the leases in use,
        # not every range this node ever served.
        self.closable: set[int] = set()
        # range -> the highest timestamp this process served (a read) or proposed (a write) in
        # it under any lease of its own: kept for the life of the process, through transfers
        # that may never apply and splits, so no lease of its own starts below it (`_served`).
        self.high_water: dict[int, tuple[int, int]] = {}
        self.given_away: dict[int, int] = {}
        self.lease_asked: set[int] = set()
        self.pending_lease: dict[int, Lease] = {}      # asked for, not applied yet: writes may ride behind it
        # range -> (the expiration a write in flight extends its lease to, when it was proposed)
        self.extending: dict[int, tuple[tuple[int, int], float]] = {}
        self.lease_used: dict[int, float] = {}         # range -> its last strong read here (kept extended while read)
        self.lease_wanted: set[int] = set()
        self.deferred_reads: list[Callable[[], None]] = []
        self.draining = False                          # hand every lease away, take none (a drain)
        self.clock_unfit = False                       # this node's clock is far from a majority's: the same, at once
        self.handing_off: dict[int, float] = {}        # range -> when its lead was last offered away (drain)
        self.paused: dict[int, float] = {}             # range -> until when its holder serves nothing (_offer_lead)
        self.lease_stats = {"acquired": 0, "extended": 0, "transferred": 0, "moved_home": 0, "extended_by_writes": 0, "writes_behind_a_lease_command": 0, "reads_local": 0,
                            "read_restarts": 0, "refused_not_usable": 0}
        self.start_low_water = (0, 0)
        # Closed timestamps (kvserver.closedts). Per range this node serves: the highest
        # timestamp it closed on a command or when the range left the side transport's group
        # (with the group's, `closed_floor`, every write goes above it); the side transport's
        # sender and, for the ranges others serve, the streams they send.
        self.closed_lag_ns = int(cfg.closed_lag_s * 1e9)
        self.closed: dict[int, tuple[int, int]] = {}
        self.closed_sender = Sender()
        self.closed_receiver = Receiver()
        self.closed_stats = {"follower_reads": 0, "refused_behind": 0, "to_leaseholder": 0, "leases_kept_for_followers": 0}
        # Follower reads keep their ranges' leases (kvserver.closedts, the CLOSED frame's extra):
        # the ranges follower reads asked of this node's replicas since its last frame, and, as
        # the leaseholder, when each range's followers last reported a read.
        self.demanded: set[int] = set()
        self.lease_demand: dict[int, float] = {}
        # GC stays below the oldest timestamp a statement running here (`protected_here`) or at
        # a peer (its last CLOSED frame) reads at.
        self.protected_here = protected_here
        self.protected_by_peer: dict[int, tuple[int, int]] = {}
        # Garbage collection (kvserver.gc): the next pass, and the spans a planning job (off the
        # loop) found, waiting to be proposed on the loop.
        self.next_gc = 0.0
        self.gc_planning: set[int] = set()
        self.gc_planned: collections.deque = collections.deque()
        self.gc_stats = {"commands": 0, "removed": 0, "passes": 0}

    # --- start-up ----------------------------------------------------------------------------
    def start(self) -> None:
        now = tuple(self.now_ts())
        # A read this node's previous process served was at most max_offset above its clock,
        # and the clock (its ceiling) is past everything that process saw: no lease taken from
        # here on writes below this.
        self.start_low_water = (now[0] + self.max_offset_ns, now[1])
        for leftover in glob.glob(glob.escape(self.mvcc.path) + ".staging-r*"):
            discard_staged(leftover)   # a snapshot being staged when the node stopped
        descs = local_descriptors(self.mvcc)
        if not descs:
            descs = bootstrap_descriptors(self.cfg.replicas)
            self.mvcc.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in descs])
        for d in sorted(descs, key=lambda d: d.range_id):
            self._init_range(d)
            self._start_group(d.range_id)
        for rid, rep in self.replicas.items():
            if rep.lease is not None and rep.lease.holder == self.cfg.node_id:
                self.given_away[rid] = rep.lease.seq   # a previous process's: its timestamp cache is gone

    def _paths(self, range_id: int) -> tuple[str, str]:
        return (os.path.join(self.cfg.raft_dir, "range-%d.journal" % range_id),
                os.path.join(self.cfg.raft_dir, "range-%d.snapshot" % range_id))

    def _init_range(self, desc: RangeDescriptor) -> None:
        """Make a split-created range ready to start; idempotent, crash-safe at every step."""
        if desc.range_id <= FIRST_DATA_RANGE_ID:
            return
        journal_path, dump_path = self._paths(desc.range_id)
        if self.mvcc.applied_index(desc.range_id) < INIT_INDEX:
            self.crash_point("split:init-begin")
            self.mvcc.mark_applied(desc.range_id, INIT_INDEX, raft_term=INIT_TERM)
            self.crash_point("split:init-applied")
        jfile = self.open_journal(journal_path)
        if len(jfile.read()) <= len(JOURNAL_MAGIC):
            self._write_init_dump(desc, dump_path)
            self.crash_point("split:init-dump")
            e0, e1 = (_NO_OP, INIT_INDEX - 1, INIT_TERM), (_NO_OP, INIT_INDEX, INIT_TERM)
            jfile.replace(JOURNAL_MAGIC + encode_record([4, INIT_TERM, None])
                          + encode_record([0, e0[1], e0[2], e0[0]]) + encode_record([0, e1[1], e1[2], e1[0]]))
            self.crash_point("split:init-journal")
        jfile.close()

    def _write_init_dump(self, desc: RangeDescriptor, path: str) -> None:
        replica = RangeReplica(self.mvcc, desc.range_id)
        replica.desc = desc
        e1, e0 = [_NO_OP, INIT_INDEX, INIT_TERM], [_NO_OP, INIT_INDEX - 1, INIT_TERM]
        header = msgpack.packb([e1, e0, sorted(str(r) for r in desc.replicas)], use_bin_type=True)
        tmp = path + ".init.tmp"
        with open(tmp, "wb") as f:
            f.write(_SNAPSHOT_MAGIC + _LEN.pack(len(header)) + header)
            replica.write_snapshot(f, INIT_INDEX)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        from raftstore.raft.journal import fsync_dir
        fsync_dir(os.path.dirname(os.path.abspath(path)))

    def _start_group(self, range_id: int) -> RaftGroup:
        journal_path, dump_path = self._paths(range_id)
        replica = RangeReplica(self.mvcc, range_id, on_split=self._on_split, can_install=self._can_install,
                               on_write=self._on_write, on_checksum=self._on_checksum, on_lease=self._on_lease,
                               on_write_ts=self._on_write_ts)
        me = str(self.cfg.node_id)
        peers = [str(r) for r in self.cfg.replicas if r != self.cfg.node_id]
        conf = dict(self.cfg.raft_conf or {})
        name = "r%d" % range_id   # the same on every replica: also the group's election order key
        group = RaftGroup(me, peers, journal_file=self.open_journal(journal_path), dump_path=dump_path,
                          state_machine=replica, conf=conf, name=name, group_key=name,
                          transport_class=self.transport_class(range_id), snapshot_executor=self.snapshot_executor,
                          on_snapshot_job_done=lambda: self.woken.append(range_id),
                          refuse_entries=lambda: self.disk_low)
        self.groups[range_id], self.replicas[range_id] = group, replica
        self.touch(range_id)
        self.maintain_due.add(range_id)
        return group

    # --- callbacks from replicas (on the loop thread, inside a group's apply) ----------------------
    def _on_split(self, left: RangeDescriptor, right: RangeDescriptor) -> None:
        self.crash_point("split:applied")
        self.maintain_due.update((left.range_id, right.range_id))
        for rid in (left.range_id, right.range_id):   # each half is measured again once it is written
            self.sizes.pop(rid, None)
        self.splitting.discard(left.range_id)
        cache = self.tscache.get(left.range_id)
        # What this node served of the parent bounds the new range's leases from below, also
        # when it handed the parent's lease away before the split applied: then there is no
        # cache to inherit, so it serves nothing under the new range's copy of that lease until
        # it hands it over (`_transfer`) or extends it (a new cache, above all it served).
        self.high_water[right.range_id] = max(self.high_water.get(right.range_id, (0, 0)), self._served(left.range_id))
        if cache is not None and right.range_id not in self.tscache:
            # The new range starts under the parent's lease (RangeReplica._op_split): what the
            # parent's holder served of its keys is above its low-water mark.
            inherited = TimestampCache(cache.max_for([]), constants.timestamp_cache_entries_max)
            inherited.points = {k: t for k, t in cache.points.items() if right.contains(k)}
            inherited.spans = list(cache.spans)
            self.tscache[right.range_id] = inherited
            self.closable.add(right.range_id)
            self.tscache_seq[right.range_id] = 1   # RangeReplica._op_split: the inherited lease's seq
        # What was closed for the parent's keys stays closed for them (the new range starts under
        # the parent's lease): its holder writes above it, its followers may read below it.
        self.closed[right.range_id] = max(self.closed.get(right.range_id, ZERO), self.closed_floor(left.range_id))
        parent_rep = self.replicas.get(left.range_id)
        if right.range_id in self.groups:
            if parent_rep is not None and right.range_id in self.replicas:
                self.replicas[right.range_id].closed = max(self.replicas[right.range_id].closed, parent_rep.closed)
            return
        desc = read_local_descriptor(self.mvcc, right.range_id) or right
        self._init_range(desc)
        group = self._start_group(desc.range_id)
        if parent_rep is not None:
            self.replicas[desc.range_id].closed = parent_rep.closed
        parent = self.groups.get(left.range_id)
        if parent is not None and parent.is_leader():
            group.campaign()  # the parent's leader leads the new range too, without waiting a timeout
        self.crash_point("split:started")

    def _can_install(self, desc: RangeDescriptor) -> bool:
        for rid, rep in self.replicas.items():
            if rid != desc.range_id and rep.desc is not None and rep.desc.overlaps(desc.start, desc.end):
                return False
        return True

    def _on_write(self, range_id: int, nbytes: int) -> None:
        self.written_bytes[range_id] = self.written_bytes.get(range_id, 0) + nbytes
        self.maintain_due.add(range_id)

    def _on_checksum(self, range_id: int, index: int, desc: RangeDescriptor) -> None:
        """A consistency check applied at `index`: pin a SQLite read snapshot of the range now,
        on the loop (the state is exactly `index`: later applies are not in it), and hash it with
        the snapshot executor, off the loop. The result is posted to `checksums`."""
        export = self.mvcc.export_span(desc.start, desc.end, constants.consistency_chunk_rows, range_id=range_id)
        self.checksums.computing(range_id, index)

        def job() -> None:
            try:
                with export:
                    if export.applied_index != index:
                        raise StoreError("r%d: the state pinned for the check of index %d is at index %s"
                                         % (range_id, index, export.applied_index))
                    answer = Checksum(range_checksum(range_id, desc.start, desc.end, export.applied_index, export))
            except Exception as exc:   # this replica's answer, so the check says incomplete, not nothing
                logger.exception("r%d: checksum of index %d failed", range_id, index)
                answer = Checksum(None, "n%d could not compute its checksum: %s" % (self.cfg.node_id, exc))
            self.checksums.post(range_id, index, answer)
        self.snapshot_executor(job)

    # --- range leases (kvserver.lease) ---------------------------------------------------------
    def _on_lease(self, range_id: int, lease: Lease) -> None:
        """A lease command applied here (every replica): a new lease of this node's starts a
        fresh timestamp cache at its start (never below what this process may have served
        before it started); a lease of another node's ends this node's."""
        self.lease_asked.discard(range_id)
        if lease.holder != self.cfg.node_id:
            self._drop_cache(range_id)
            return
        self.lease_wanted.discard(range_id)
        self.closable.add(range_id)
        if self.tscache_seq.get(range_id) != lease.seq:   # a new lease, not an extension
            self.paused.pop(range_id, None)
            self._drop_cache(range_id)
            self.tscache[range_id] = TimestampCache(max(lease.start, self.start_low_water, next_ts(self._served(range_id))),
                                                    constants.timestamp_cache_entries_max)
            self.tscache_seq[range_id] = lease.seq
        self.tick_soon.add(range_id)   # requests waiting for the lease run after this tick

    def _served(self, range_id: int) -> tuple[int, int]:
        """The highest timestamp this process served or proposed in the range (its high water
        and its timestamp cache): every lease of its own starts above it (_on_lease, _next_lease,
        _transfer)."""
        cache = self.tscache.get(range_id)
        return max(self.high_water.get(range_id, (0, 0)), cache.max_all() if cache is not None else (0, 0))

    def _drop_cache(self, range_id: int) -> None:
        """Forget the range's timestamp cache, keeping the highest timestamp it held."""
        if range_id in self.tscache:
            self.high_water[range_id] = self._served(range_id)
        self.tscache.pop(range_id, None)
        self.tscache_seq.pop(range_id, None)

    def _on_write_ts(self, range_id: int, ts: tuple[int, int]) -> None:
        try:
            self.observe_ts(ts)
        except Exception:   # a timestamp from a clock too far ahead: the replica's max_write_ts still holds it
            pass

    def serving_lease(self, range_id: int, now: tuple[int, int] | None = None) -> Lease | None:
        """The lease under which this node may serve `range_id` now: its own, applied here, not
        handed over, usable (`now + max_offset < expiration`), and its replica leads the range
        (the leaseholder is the leader; one that lost the lead hands the lease over). None while
        this node's clock is unfit: it cannot tell whether a lease runs."""
        rep, group = self.replicas.get(range_id), self.groups.get(range_id)
        lease = rep.lease if rep is not None else None
        if (self.clock_unfit or lease is None or lease.holder != self.cfg.node_id or self.given_away.get(range_id) == lease.seq
                or group is None or not group.is_leader() or self.tscache_seq.get(range_id) != lease.seq
                or self.paused.get(range_id, -1.0) > self.clock()):
            return None
        now = now or tuple(self.now_ts())
        return lease if lease.usable(now, self.stasis_ns) else None

    def _own_unhanded(self, range_id: int, lease: Lease | None) -> bool:
        """Whether `lease` (the range's applied lease) is this node's and not handed over."""
        return lease is not None and lease.holder == self.cfg.node_id and self.given_away.get(range_id) != lease.seq

    def _home(self, rep) -> int | None:
        """The node the range's lease should move to (its zone's region, else the primary
        region), or None: where it is."""
        return self.preferred_holder(rep.desc.replicas, self.zones.region_for(rep.desc.start))

    def _lease_upkeep(self, range_id: int, group: RaftGroup, now: tuple[int, int]) -> None:
        """On a group's tick: hand this node's lease to the new leader at once if this replica lost
        the lead; extend a lease in use past half its life; take the lease as the ready leader
        when it is wanted (just elected, or a request waits for it)."""
        rep = self.replicas.get(range_id)
        if rep is None or rep.desc is None or range_id in self.lease_asked:
            return
        lease, me = rep.lease, self.cfg.node_id
        mine = self._own_unhanded(range_id, lease)
        if mine and not group.is_leader():
            leader = group.leader_id()
            if leader is not None and leader != str(me):
                self._transfer(range_id, lease, int(leader), now)
            return
        if not group.leader_ready():
            return
        if self.shedding:
            # Offer the lead to a caught-up follower; once it leads, the lease follows it (above).
            if self.handing_off.get(range_id, -1e18) < self.clock() - constants.drain_offer_interval_s:
                self.handing_off[range_id] = self.clock()
                self._offer_lead(range_id, group, None)
            self.tick_soon.add(range_id)
            return
        home = self._home(rep)
        if home is not None and home != me:
            # The range's home is elsewhere (its zone's region, else --primary-region): offer
            # the lead to its replica there; the lease follows the lead (above). A down home
            # node leaves it here.
            if self.handing_off.get(range_id, -1e18) < self.clock() - constants.drain_offer_interval_s:
                self.handing_off[range_id] = self.clock()
                if self._offer_lead(range_id, group, home):
                    self.lease_stats["moved_home"] += 1
        if mine and self.paused.get(range_id, -1.0) > self.clock():
            return   # its lead is on offer: it extends nothing
        if mine:
            used = self.lease_used.get(range_id, -1e18) > self.clock() - self.lease_ns / 1e9
            ahead = self.lease_ns // 2
            if self.lease_demand.get(range_id, -1e18) > self.clock() - constants.follower_demand_keep_s:
                # Followers read it: extend a tick early (an idle group ticks about once a
                # second), so the lease never lapses under their closed timestamp.
                used, ahead = True, ahead + int(_idle_period(range_id) * 1e9)
            if ((used or range_id in self.lease_wanted) and lease.expiration[0] - now[0] < ahead
                    and not self._extension_in_flight(range_id, lease)):
                self._ask(range_id, lease, Lease(lease.seq, me, lease.start, (now[0] + self.lease_ns, 0)))
            return
        if range_id not in self.lease_wanted:
            return
        asked = self._next_lease(range_id, now)
        if asked is not None:
            self._ask(range_id, *asked)
        else:
            # Another node's lease still runs: a live holder hands it over (_transfer); a gone
            # one's is taken the moment it expires, not at the next idle tick.
            self._schedule(range_id, self.clock() + (lease.expiration[0] - now[0]) / 1e9 + 0.001)

    def _extension_in_flight(self, range_id: int, lease: Lease) -> bool:
        """A write proposed in the last second extends `lease` further than it reaches now."""
        ext = self.extending.get(range_id)
        return ext is not None and ext[0] > lease.expiration and ext[1] > self.clock() - 1.0

    def _next_lease(self, range_id: int, now: tuple[int, int]) -> tuple[Lease | None, Lease] | None:
        """(the lease to follow, the lease to ask for) for this node as the range's ready leader
        now; None while another node's lease runs. None yet: seq 1. Its own, lapsed: extended.
        Its own handed over (or a previous process's): a new one above all it served. Another
        node's, expired: a new one from now."""
        rep = self.replicas[range_id]
        lease, me = rep.lease, self.cfg.node_id
        floor = max(now, next_ts(self._served(range_id)), self.start_low_water)
        if lease is None:
            return None, Lease(1, me, floor, (floor[0] + self.lease_ns, 0))
        if lease.holder == me and self.given_away.get(range_id) != lease.seq:
            return lease, Lease(lease.seq, me, lease.start, (max(now[0] + self.lease_ns, lease.expiration[0] + 1), 0))
        if lease.holder == me or lease.expired(now):
            return lease, Lease(lease.seq + 1, me, floor, (floor[0] + self.lease_ns, 0))
        return None

    def _lease_for_write(self, range_id: int, now: tuple[int, int]) -> Lease | None:
        """The lease a write is evaluated under: the one this node serves, else one it has asked
        for and may take now (a write on a range whose lease lapsed while idle need not wait a
        consensus round for the lease: it is proposed right behind the lease command and carries
        its seq, so apply takes it only if that lease was taken). None: not now."""
        lease = self.serving_lease(range_id, now)
        if lease is not None:
            return lease
        pending = self.pending_lease.get(range_id)
        if pending is not None:
            self.lease_stats["writes_behind_a_lease_command"] += 1
            return pending
        group, rep = self.groups.get(range_id), self.replicas.get(range_id)
        if (group is None or rep is None or rep.desc is None or not group.leader_ready() or self.shedding
                or self.paused.get(range_id, -1.0) > self.clock()):
            return None
        lease = rep.lease
        if self._own_unhanded(range_id, lease) and self.tscache_seq.get(range_id) == lease.seq:
            return lease   # its own lease, lapsed or in stasis: the write carries the extension (`lease_until`)
        if range_id in self.lease_asked:
            return None
        asked = self._next_lease(range_id, now)
        if asked is None:
            return None
        self._ask(range_id, *asked)
        self.pending_lease[range_id] = asked[1]
        self.lease_stats["writes_behind_a_lease_command"] += 1
        return asked[1]

    def _ask(self, range_id: int, prev: Lease | None, lease: Lease) -> None:
        """Propose a lease command (a new lease, or an extension of `prev`) in the range's log."""
        self.lease_asked.add(range_id)
        self.lease_stats["extended" if prev is not None and prev.seq == lease.seq else "acquired"] += 1

        def done(outcome: Outcome, result: Any) -> None:
            self.lease_asked.discard(range_id)
            self.pending_lease.pop(range_id, None)
            if outcome is not Outcome.COMMITTED:
                self.tick_soon.add(range_id)   # waiting requests see again (a deadline bounds them)
        self.propose(range_id, "lease", self._lease_args(prev, lease), done)

    @staticmethod
    def _lease_args(prev: Lease | None, lease: Lease) -> dict:
        return {"prev_seq": prev.seq if prev is not None else 0,
                "prev_expiration": list(prev.expiration) if prev is not None else None, "lease": lease.to_wire()}

    def _transfer(self, range_id: int, lease: Lease, target: int, now: tuple[int, int]) -> None:
        """Hand this node's lease to `target` (the range's new leader): stop serving under it now,
        and propose, at the leader, a lease for it that starts above everything served or
        proposed under this one. If the transfer fails, the new leader takes the lease over
        once this one expires."""
        self.given_away[range_id] = lease.seq
        self.paused.pop(range_id, None)
        self.lease_stats["transferred"] += 1
        self._drop_cache(range_id)
        start = max(now, next_ts(self._served(range_id)), self.start_low_water)
        new = Lease(lease.seq + 1, target, start, (max(now[0], start[0]) + self.lease_ns, 0))
        self.propose_at_leader(range_id, "lease", self._lease_args(lease, new), lambda outcome, result: None)

    def transfer_lease(self, range_id: int, to: int) -> str | None:
        """Move `range_id`'s lease to node `to`: the lead first (Raft's TimeoutNow: `to` stands
        for election at once), then the lease follows the new leader (`_lease_upkeep` here hands
        it over as soon as this replica sees it lead). None if under way, else why not."""
        group = self.groups.get(range_id)
        if group is None or self.serving_lease(range_id) is None:
            return "n%d does not hold the lease of r%d (ask its leaseholder)" % (self.cfg.node_id, range_id)
        if to == self.cfg.node_id:
            return None
        if not self._offer_lead(range_id, group, to):
            return ("n%d cannot hand r%d's lead to n%d now: it is not a caught-up, connected replica; retry"
                    % (self.cfg.node_id, range_id, to))
        self.tick_soon.add(range_id)
        return None

    def _offer_lead(self, range_id: int, group: RaftGroup, to: int | None) -> bool:
        """Offer the lead to `to` (None: pysyncobj's pick of a caught-up follower) by TimeoutNow
        and, if the offer went out, serve nothing for lease_transfer_wait_s: a write proposed now
        would leave the target's log behind ours, and our vote would then refuse it (Raft's
        "stop accepting requests during a transfer"). Once the target leads, the lease follows
        (`_transfer`); if it never does, this node serves on under the same lease."""
        if not group.transfer_leadership(str(to) if to is not None else None):
            return False
        self.paused[range_id] = self.clock() + constants.lease_transfer_wait_s
        return True

    @property
    def shedding(self) -> bool:
        """Hand every lease away and take none: a drain, or a clock unfit to judge leases by."""
        return self.draining or self.clock_unfit

    def set_clock_unfit(self, unfit: bool) -> None:
        """The node's clock left (or came back within) the max offset of a majority of its peers:
        while it is out, serve nothing under a lease and hand every lead, and with it every
        lease, to another replica (as a drain does)."""
        if unfit != self.clock_unfit:
            self.clock_unfit = unfit
            for rid in list(self.groups):
                self.tick_soon.add(rid)

    def drain(self) -> int:
        """Start (or continue) a drain: take no lease from now on and hand the lead, and with it
        the lease, of every range this node serves to a caught-up follower. Returns how many
        leases it still serves."""
        self.draining = True
        for rid in list(self.tscache):
            self.tick_soon.add(rid)
        now = tuple(self.now_ts())
        return sum(1 for rid in list(self.tscache) if self.serving_lease(rid, now) is not None
                   or self._holds_unhanded(rid))

    def _holds_unhanded(self, range_id: int) -> bool:
        rep = self.replicas.get(range_id)
        lease = rep.lease if rep is not None else None
        return self._own_unhanded(range_id, lease) and lease.usable(tuple(self.now_ts()), 0)

    def on_unknown_group(self, range_id: int) -> RaftGroup | None:
        """A peer talks about a range we do not host: create an uninitialized replica if meta
        says it exists and it overlaps nothing we hold (it will be filled by a snapshot)."""
        if range_id in self.groups:
            return self.groups[range_id]
        known = {d.range_id: d for d in meta_descriptors(self.mvcc)}
        desc = known.get(range_id)
        if desc is None or not self._can_install(desc):
            return None
        logger.info("creating an uninitialized replica of %s to receive a snapshot", desc)
        return self._start_group(range_id)  # its replica has no descriptor until a snapshot

    # --- the loop ---------------------------------------------------------------------------------
    def touch(self, range_id: int) -> None:
        """The group has traffic: tick it now and keep its timers fast for a while."""
        self.active_until[range_id] = self.clock() + constants.group_active_s
        self.tick_soon.add(range_id)
        self.dirty.add(range_id)

    def mark(self, range_id: int) -> None:
        """A message was delivered to the group: tick it now (a leader counts acks in its tick)."""
        self.tick_soon.add(range_id)
        self.dirty.add(range_id)

    def _schedule(self, rid: int, at: float) -> None:
        self.timer_at[rid] = at
        heapq.heappush(self.timers, (at, rid))

    def tick(self) -> None:
        """Tick the groups that have something to do: a proposal or message this iteration, or
        a periodic tick for their timers -- every active_tick_interval_s while busy, every
        idle_tick_interval_s while idle. A leader whose followers all hold its whole log and
        its commit index sends no heartbeats of its own (RaftGroup.hold_appends), busy or not:
        its followers do not time out because its node sends one heartbeat frame per peer
        naming the groups it leads (leader_claims, on_node_heartbeat, _follow). It sends appends again
        at its next tick once a proposal, a follower behind, a dropped link or a peer disputing
        its lead (a new leader, a restarted follower) makes it not caught up. An iteration
        costs what the busy groups cost, not what all the groups cost."""
        self.checksums.collect()
        now = self.clock()
        hlc_now = tuple(self.now_ts())
        active_period = (self.cfg.raft_conf or {}).get("appendEntriesPeriod", constants.append_entries_period_s)
        if not self.cfg.quiesce:
            due = set(self.groups)
        else:
            due, self.tick_soon = self.tick_soon, set()
            while self.woken:
                due.add(self.woken.popleft())   # a snapshot job finished: collect it now
            while self.timers and self.timers[0][0] <= now:
                at, rid = heapq.heappop(self.timers)
                if self.timer_at.get(rid) == at:
                    due.add(rid)
            if now >= self.next_silence_check:
                # A peer newly silent (dead, cut off): the groups it leads tick now, and from then
                # on when their election timers run out (below).
                self.next_silence_check = now + constants.silence_check_interval_s
                for peer, at in self.node_heard.items():
                    if peer not in self.silent_peers and now - at > constants.leader_silent_s:
                        self.silent_peers.add(peer)
                        for rid in self.led_by.get(str(peer), ()):
                            group = self.groups.get(rid)
                            if group is None:
                                continue
                            if not group.is_leader():
                                # Its election waits from the leader's last heartbeat, not from
                                # this follower's last tick (a resting one's was seconds ago, and
                                # a dropped link took the claims that tick would postpone by):
                                # followers whose stale timers all ran out would stand together.
                                group.postpone_election(at)
                            due.add(rid)
        for rid in sorted(due):
            group = self.groups.get(rid)
            if group is None:
                continue
            busy = self.active_until.get(rid, 0.0) > now
            if not busy and group.leader_id() is None:   # no leader: elect one promptly
                self.active_until[rid] = now + constants.group_active_s
                busy = True
            planned = now + (constants.active_tick_interval_s if busy else _idle_period(rid))
            self._schedule(rid, planned)
            group.set_append_entries_period(active_period if busy else constants.idle_heartbeat_interval_s)
            if self.cfg.quiesce:
                self._quiesce(rid, group) if group.is_leader() else self._follow(rid, group)
            self.dirty.add(rid)
            group.doTick(0.0)   # a FailStop or a bug ends the node (crash-only), never a log line
            self._note_leader(rid, group)
            self._lease_upkeep(rid, group, hlc_now)
            if busy and self.cfg.quiesce and group.leader_id() is not None and (
                    group.appends_held() if group.is_leader() else True):
                # Nothing of its own to do every active tick: a follower with a leader (messages
                # tick it; its election timer needs no finer grain) or a leader holding its
                # heartbeats (a proposal or an ack ticks it). Hundreds of ranges written in the
                # last group_active_s would otherwise tick 50 times a second each.
                self._schedule(rid, now + _idle_period(rid))
            if self.cfg.quiesce and not group.is_leader() and (self._leader_silent(group, now)
                                                                or not self._claimed(rid, group)):
                # A follower whose leader has gone silent, or is heard but does not claim the
                # group at its term (it stepped down, or its claims are not in yet), ticks when
                # its election timer runs out (its own random time), not at its next idle tick:
                # idle ticks run in step on every replica (the same period, begun by the same
                # append), so followers whose timers ran out between two ticks stood together
                # and split the vote (another 1-2 s to elect). While the leader is heard and
                # claims it, each tick moves the timer away, and idle followers rest (below).
                due_at = group.election_due() + constants.election_tick_slack_s
                if now < due_at < self.timer_at.get(rid, float("inf")):
                    self._schedule(rid, due_at)
            elif (not busy and self.cfg.quiesce and self.timer_at.get(rid) == planned and rid not in self.tick_soon
                    and self._may_rest(rid, group, hlc_now)):
                self._schedule(rid, now + _idle_period(rid) * constants.resting_tick_periods)
        if self.awaiting_lead:
            self._run_awaiting_lead(now)
        self.run_deferred_reads()
        if self.holds:
            self._expire_holds(now)
        if now >= self.next_zone_refresh:
            self.next_zone_refresh = now + constants.zone_refresh_interval_s
            self.refresh_zones()
        if now >= self.next_maintain:
            self.next_maintain = now + self.cfg.maintain_interval_s
            self.maintain()
        if now >= self.next_gc:
            self.next_gc = now + self.cfg.gc_interval_s
            self.gc_pass()
        while self.gc_planned:
            self._propose_gc(*self.gc_planned.popleft())

    # --- garbage collection (kvserver.gc) ---------------------------------------------------------
    def gc_pass(self) -> None:
        """For each data range this node serves: if now - gc_ttl (never above what it closed, nor
        above the oldest timestamp a running statement reads at: `gc_protected`) is past the
        range's threshold by gc_step_min_s, plan GC spans off the loop (a snapshot
        job), then propose one `gc` command per span (`_propose_gc`)."""
        self.gc_stats["passes"] += 1
        now = tuple(self.now_ts())
        protected = self.gc_protected()
        for rid in list(self.tscache):
            rep = self.replicas.get(rid)
            if rid < FIRST_DATA_RANGE_ID or rid in self.gc_planning or rep is None or rep.desc is None:
                continue
            if self.serving_lease(rid, now) is None:
                continue
            threshold = min((now[0] - int(self.cfg.gc_ttl_s * 1e9), 0), self.closed_floor(rid))
            if protected is not None:
                threshold = min(threshold, protected)   # a read at the threshold still sees what it saw
            if threshold[0] - rep.gc_threshold[0] < constants.gc_step_min_s * 1e9:
                continue
            self.gc_planning.add(rid)
            desc = rep.desc
            export = self.mvcc.export_span(desc.start, desc.end, constants.snapshot_chunk_rows)

            def job(rid=rid, export=export, threshold=threshold) -> None:
                try:
                    with export:
                        spans = plan_spans((row for chunk in export for row in chunk), threshold,
                                           constants.gc_batch_versions)
                except Exception:   # a failed plan only delays GC to the next pass
                    logger.exception("r%d: planning GC failed", rid)
                    spans = []
                self.gc_planned.append((rid, threshold, spans))
                self.woken.append(rid)
            self.snapshot_executor(job)

    def _propose_gc(self, rid: int, threshold: tuple[int, int], spans: list) -> None:
        self.gc_planning.discard(rid)
        rep = self.replicas.get(rid)
        if rep is None or rep.desc is None:
            return
        if not spans:
            spans = [(rep.desc.start, rep.desc.end, 0)]   # nothing to remove: the threshold still moves
        for start, end, _count in spans:
            def done(outcome: Outcome, result: Any) -> None:
                if outcome is Outcome.COMMITTED and isinstance(result, dict):
                    self.gc_stats["commands"] += 1
                    self.gc_stats["removed"] += result.get("removed", 0)
            self.propose(rid, "gc", {"threshold": list(threshold), "start": start, "end": end}, done)

    def refresh_zones(self) -> None:
        """Read the zones (kvserver/zones.py) from this store's replica of meta. When they
        changed, every range this node leads is looked at again: split at a boundary inside it
        (maintain), its lease moved to its home (_lease_upkeep)."""
        if META_RANGE_ID not in self.groups:
            return
        found = []
        for key, value, _ in self.mvcc.scan(ZONE_PREFIX, ZONE_END, LATEST, constants.zones_max):
            zone = decode_zone(key, value)
            if zone is not None:
                found.append(zone)
        zones = ZoneMap(found)
        if zones == self.zones:
            return
        self.zones = zones
        led = self.led_by.get(str(self.cfg.node_id), set())
        self.maintain_due.update(led)
        self.tick_soon.update(led)

    def _note_leader(self, rid: int, group: RaftGroup) -> None:
        """Record the group's leader as of its last tick. A leader changes only while its group
        handles a message or a timer, and both tick the group right after, so the record lags
        by at most one loop iteration; a lagging record only postpones an election once."""
        leader = group.leader_id()
        before = self.leader_of.get(rid)
        if leader == before:
            return
        self.leader_of[rid] = leader
        if leader is not None:
            self.leader_changes += 1   # a leader newly known (a loss of leader alone is no change)
        if before is not None:
            self.led_by.get(before, set()).discard(rid)
        if leader is not None:
            self.led_by.setdefault(leader, set()).add(rid)
            if leader == str(self.cfg.node_id):
                self.maintain_due.add(rid)   # a new leader checks its meta entry and its size
                self.lease_wanted.add(rid)   # and takes the lease once it is ready (_lease_upkeep)
            self.sizes.pop(rid, None)        # measured again by its next leader (a snapshot may have replaced it)

    def _may_rest(self, rid: int, group: RaftGroup, now: tuple[int, int]) -> bool:
        """Whether an idle group's next tick may wait resting_tick_periods idle periods: nothing
        it does on a timer can fall due sooner. A follower rests while its leader's node is
        heard and claims the group at its term (each tick postpones its election from that
        node's last heartbeat; the node falling silent, or its claim withdrawn, ticks it at once:
        the silence check, on_node_heartbeat). A leader rests while it holds its appends, holds
        no running lease of its own (one in use is extended on ticks), and the lease is neither
        wanted, asked for, nor due to move (drain, home region). A message, a proposal or a
        request ticks any group at once, resting or not."""
        if rid in self.lease_asked or rid in self.lease_wanted or self.shedding or group.queued():
            return False
        rep = self.replicas.get(rid)
        if rep is None or rep.desc is None:
            return False
        lease, me = rep.lease, self.cfg.node_id
        mine = self._own_unhanded(rid, lease)
        if group.is_leader():
            if not group.appends_held() or (mine and lease.expiration[0] >= now[0]):
                return False
            home = self._home(rep)
            return home is None or home == me
        return not mine and group.leader_id() is not None and int(group.leader_id()) not in self.silent_peers \
            and self._claimed(rid, group)

    def _claimed(self, rid: int, group: RaftGroup) -> bool:
        """Whether this follower's leader's node claims the group at the follower's term (in its
        last heartbeat)."""
        leader = group.leader_id()
        return leader is not None and self.claims_from.get(int(leader), {}).get(rid) == group.term

    def _leader_silent(self, group: RaftGroup, now: float) -> bool:
        """Whether the group's leader (as this replica knows it) has not been heard from for
        leader_silent_s, or there is none."""
        leader = group.leader_id()
        return leader is None or now - self.node_heard.get(int(leader), float("-inf")) > constants.leader_silent_s

    def _quiesce(self, rid: int, group: RaftGroup) -> None:
        """Before a leader's tick: hold its heartbeats if every follower is caught up and none
        disputes its lead; else send appends, at this tick if they were held, a peer disputes
        the lead or a follower lacks entries not sent again yet (each round of a catch-up at
        once, not a heartbeat period later). A held leader hears no replies, and a catching-up
        one few (its idle heartbeat period is longer than pysyncobj's leaderFallbackTimeout
        allows), so each follower whose node was heard and did not dispute the claim of this
        group in its last heartbeat counts as having replied then."""
        for peer, at in self.node_heard.items():
            if rid not in self.disputes_from.get(peer, ()):
                group.heard_from(str(peer), at)
        term = group.term
        rival = any(claims.get(rid, term) != term for claims in self.claims_from.values())   # the higher term deposes the other
        now = self.wake_now.pop(rid, False) or rival or group.unsent()
        if now or not group.caught_up():
            group.resume_appends(now=now)
        else:
            group.hold_appends()

    def on_message(self, range_id: int, message: dict) -> None:
        """A Raft message for the group arrived (before it is handed to the group)."""
        if message.get("entries") or message.get("type") in WAKING_MESSAGES:
            self.touch(range_id)   # heartbeats and their acks leave an idle group idle
        else:
            self.mark(range_id)

    def on_peer_down(self, peer_id: int) -> None:
        """The link to a peer dropped: its claims are no longer news (its next heartbeat, once
        the link is back, brings them again)."""
        self.claims_from.pop(peer_id, None)
        self.protected_by_peer.pop(peer_id, None)   # its statements' reads ended with the link (it tells again)
        self.disputes_from.pop(peer_id, None)
        self.disputes_for.pop(peer_id, None)

    def on_peer_up(self, peer_id: int) -> None:
        """A link to a peer came (back) up: the groups this node leads tick now, and each sends
        that follower an append (its link dropped, so the group is not caught up): a follower
        that restarted learns its leader before it times out, one left behind is caught up."""
        for rid in self.led_by.get(str(self.cfg.node_id), ()):
            self.mark(rid)

    def leader_claims(self) -> list[int]:
        """What this node's heartbeat carries to every peer: the groups it leads, as a flat list
        [range id, term, ...]."""
        claims: list[int] = []
        for rid in self.led_by.get(str(self.cfg.node_id), ()):
            group = self.groups.get(rid)
            if group is not None and group.is_leader():
                claims += (rid, group.term)
        return claims

    def disputes_to(self, peer_id: int) -> list[int]:
        """What this node's next heartbeat to peer_id carries besides: the range ids of its last
        claims that this node disputes (each said once)."""
        return sorted(self.disputes_for.pop(peer_id, ()))

    def on_node_heartbeat(self, peer_id: int, claims: list[int] | None = None, disputes: list[int] | None = None) -> None:
        """Node peer_id is alive and leads the groups it claims ([range id, term, ...]); it
        disputes `disputes` of this node's claims. Kept until its next heartbeat and used when
        each group next ticks (`_follow`, `_quiesce`), so a heartbeat costs a dict of its claims,
        not a walk of every group. Without claims (an older peer): the groups this node
        believes peer_id leads, at their terms."""
        self.node_heard[peer_id] = self.clock()
        self.silent_peers.discard(peer_id)
        if claims is None:
            self.claims_from[peer_id] = {rid: self.groups[rid].term for rid in self.led_by.get(str(peer_id), ())
                                         if rid in self.groups}
        else:
            it = iter(claims)
            before, self.claims_from[peer_id] = self.claims_from.get(peer_id), dict(zip(it, it))
            if before is not None and before != self.claims_from[peer_id]:
                # A claim withdrawn or at another term: its followers here wait one election
                # timeout from now, the leader's last word on it (as from a Raft heartbeat: a
                # resting follower's timer may have run out long ago, and every follower standing
                # at once would split the vote, or cut across a lead transfer's target), and tick
                # now to watch that timer (`Store.tick`) instead of at their next resting tick.
                after = self.claims_from[peer_id]
                for rid, term in before.items():
                    if after.get(rid) == term:
                        continue
                    group = self.groups.get(rid)
                    if group is not None and group.leader_id() == str(peer_id) and group.term == term:
                        group.postpone_election(self.node_heard[peer_id])
                    self.tick_soon.add(rid)
        if disputes is not None:
            self.disputes_from[peer_id] = set(disputes)
            for rid in disputes:
                group = self.groups.get(rid)
                if group is not None and group.is_leader():
                    self.wake_now[rid] = True
                    self.mark(rid)

    def _follow(self, rid: int, group: RaftGroup) -> None:
        """Before a follower's (or candidate's) tick: a peer whose node claims to lead the group
        at our term, and is our leader, was alive when last heard: the election waits from then
        (as if its heartbeat had come then). A peer claiming it otherwise -- we know a higher
        term, another leader, or none (restarted, or the group is new here) -- is told in our
        next heartbeat (disputes_to); it then sends the group's appends, which make it our
        leader, catch us up, or tell it nothing (a deposed leader steps down when pysyncobj's
        leaderFallbackTimeout passes without replies)."""
        leader, term = group.leader_id(), group.term
        for peer, claims in self.claims_from.items():
            claimed = claims.get(rid)
            if claimed is None:
                continue
            if claimed == term and leader == str(peer):
                group.postpone_election(self.node_heard[peer])
            else:
                self.disputes_for.setdefault(peer, set()).add(rid)

    def sync(self) -> None:
        """Sync every journal written since the last call (one fsync per written journal)."""
        for rid in self.dirty:
            group = self.groups.get(rid)
            if group is not None:
                group.journal.sync()
        self.dirty.clear()

    def maintain(self) -> None:
        """Leader chores: keep meta up to date, split ranges that grew too big. Looks only at
        the groups in maintain_due (written to, split, started, or newly led since the last
        pass, or with a chore still pending), so its cost follows the traffic."""
        meta = self.groups.get(META_RANGE_ID)
        due, self.maintain_due = self.maintain_due, set()
        for rid in sorted(due):
            group, rep = self.groups.get(rid), self.replicas.get(rid)
            if group is None or rep.desc is None or not group.is_leader():
                continue   # comes back when it writes, splits or becomes leader (_note_leader)
            if self.meta_synced.get(rid, -1) < rep.desc.generation and meta is not None:
                desc = rep.desc
                self.maintain_due.add(rid)   # until _meta_done
                self.propose_at_leader(META_RANGE_ID, "meta_put", {"desc": desc.to_wire()},
                             lambda o, r, rid=rid, gen=desc.generation: o is Outcome.COMMITTED and self._meta_done(rid, gen))
            boundary = None if rid == META_RANGE_ID else self.zones.boundary_inside(rep.desc.start, rep.desc.end)
            if boundary is not None:
                # A zone boundary inside the range (kvserver/zones.py): split there; a split that
                # fails is tried again at the next pass.
                if rid in self.splitting:
                    self.maintain_due.add(rid)   # look again once the split is over
                else:
                    self.split_range(rid, boundary, lambda o, r, rid=rid: o is Outcome.COMMITTED or self.maintain_due.add(rid))
                continue
            if rid != META_RANGE_ID and (self.written_bytes.get(rid, 0) > 0 or rid not in self.sizes):
                if rid in self.splitting:
                    self.maintain_due.add(rid)   # look again once the split is over
                    continue
                written, self.written_bytes[rid] = self.written_bytes.get(rid, 0), 0
                # Kept incrementally: measured by query only when not known (a range new to
                # this leader, or just split - measured at once, so a half still too big splits
                # again without waiting for a write), then grown by what its writes add
                # (versions stay until GC, so bytes written are bytes kept).
                size = self.sizes.get(rid)
                if size is None:
                    self.size_measurements += 1
                    size = self.mvcc.approximate_span_bytes(rep.desc.start, rep.desc.end)
                else:
                    size += written
                self.sizes[rid] = size
                if size > self.cfg.range_bytes_max:
                    self.split_range(rid)

    def _meta_done(self, rid: int, gen: int) -> None:
        self.meta_synced[rid] = max(self.meta_synced.get(rid, -1), gen)

    def split_range(self, rid: int, split_key: bytes | None = None,
                    callback: Callable[[Outcome, Any], None] | None = None) -> None:
        """Split range rid at split_key (or its middle key): allocate an id, then propose."""
        rep = self.replicas.get(rid)
        done = callback or (lambda o, r: None)
        if rep is None or rep.desc is None:
            done(Outcome.NOT_COMMITTED, "range r%d is not hosted here" % rid)
            return
        desc = rep.desc
        if split_key is None:
            keys = [k for k, _, _ in self.mvcc.scan(desc.start, desc.end, LATEST, constants.scan_rows_max)]
            split_key = split_key_for(keys)
            if split_key is None:
                done(Outcome.NOT_COMMITTED, "range too small to split")
                return
        self.splitting.add(rid)

        def allocated(outcome, result):
            if outcome is not Outcome.COMMITTED:
                self.splitting.discard(rid)
                done(outcome, result)
                return
            self.crash_point("split:allocated")

            def split_done(o, r):
                self.splitting.discard(rid)
                done(o, r)
            self.propose_at_leader(rid, "split", {"split_key": split_key, "new_range_id": result["range_id"],
                                        "generation": desc.generation}, split_done)
        self.propose_at_leader(META_RANGE_ID, "alloc_range_id", {}, allocated)

    # --- routing and proposals ----------------------------------------------------------------------
    def _replica_descs(self) -> tuple[list[bytes], list[RangeDescriptor]]:
        """This node's replicas' descriptors sorted by start key (and the starts), rebuilt only
        when a replica's descriptor changed or a replica was added: a lookup costs a bisection,
        not a pass over every range."""
        version = (RangeReplica.descs_changed, len(self.replicas))
        if self._desc_index[0] != version:
            descs = sorted((rep.desc for rep in self.replicas.values() if rep.desc is not None), key=lambda d: d.start)
            self._desc_index = (version, [d.start for d in descs], descs)
        return self._desc_index[1], self._desc_index[2]

    def descriptor_for(self, key: bytes) -> RangeDescriptor | None:
        """The range holding key as this node knows it (the router's lookup; possibly behind):
        its own replica's descriptor (of two that hold key, one not yet told of a split, the one
        starting later, which split off the other), else its copy of meta."""
        starts, descs = self._replica_descs()
        for i in range(bisect.bisect_right(starts, key) - 1, -1, -1):   # the latest start first
            if descs[i].contains(key):
                return descs[i]
        known = [d for d in meta_descriptors(self.mvcc) if d.contains(key)]
        return max(known, key=lambda d: (d.start, d.generation)) if known else None

    def descriptors_overlapping(self, start: bytes, end: bytes | None) -> list[RangeDescriptor]:
        """Every range this node knows of that overlaps `[start, end)`, in key order: its own
        replicas' descriptors, and those in its copy of meta that it holds no initialized replica
        of (for each range id the newest generation)."""
        descs = {d.range_id: d for d in meta_descriptors(self.mvcc)}
        for rid, rep in self.replicas.items():
            if rep.desc is not None and (rid not in descs or rep.desc.generation >= descs[rid].generation):
                descs[rid] = rep.desc
        return sorted((d for d in descs.values() if d.overlaps(start, end)), key=lambda d: (d.start, d.range_id))

    def mismatch(self, desc: RangeDescriptor, key: bytes) -> Rejection:
        """The answer of this node's replica of `desc`'s range to a key outside its span,
        decided before anything is proposed (a range's span only shrinks, so the key will never
        be its again): it carries the replica's descriptor and, when this node knows it, the
        descriptor of the range that holds the key, so the router goes there without a lookup."""
        found = self.descriptor_for(key)
        descs = [desc] + ([found] if found is not None and found.range_id != desc.range_id else [])
        return Rejection(RANGE_KEY_MISMATCH, "%s: key %s is outside %s" % (MISMATCH, pretty_key(key), desc),
                         {"descriptors": [d.to_wire() for d in descs]})

    def propose(self, range_id: int, op: str, args: dict, callback: Callable[[Outcome, Any], None],
                command_id: bytes | None = None, at: list | None = None) -> list:
        """Propose `op` with the node's clock's timestamp, or `at` (a gateway's proposed
        timestamp, or a floor the timestamp cache sets) when that is later: the leader only ever
        raises a proposed timestamp. Returns the timestamp proposed."""
        ts = list(self.now_ts())
        ts = max(ts, list(at)) if at is not None else ts
        closed = self.closed_floor(range_id)
        if closed > ZERO:
            ts = max(ts, list(next_ts(closed)))   # every command of the range: above what it closed
        group = self.groups.get(range_id)
        if group is None:
            callback(Outcome.NOT_COMMITTED, "%s: range r%d is not hosted here" % (MISMATCH, range_id))
            return ts
        self.touch(range_id)
        group.propose(op, dict(args, ts=ts), callback, command_id=command_id, essential=op == "lease")
        return ts

    def check_command_size(self, op: str, args: dict, command_id: bytes) -> None:
        """Raise ValueError if the command, as its leader will propose it (with a timestamp and
        the `evaluated` mark), is too large to replicate."""
        encode_command(op, dict(args, ts=self.now_ts(), evaluated=True), command_id)

    def evaluate_and_propose(self, range_id: int, op: str, args: dict, callback: Callable[[Outcome, Any], None],
                             command_id: bytes | None = None) -> None:
        """Propose a client's command as the range's leader. A batch (kvserver.batch) that
        writes - or a one-op write - is evaluated first under the latches of every key it writes
        (kvserver.latches), taken in key order and held until the outcome is known: it is marked
        `evaluated` when all its conditions hold against the state applied now, so apply finding
        one false (a changed state: another leader's write) is counted
        (RangeReplica.evaluation_misses); two batches writing a key never evaluate against the
        same state. One whose condition fails writes nothing and gives its latches back once
        proposed. Its timestamp is the gateway's (header `ts`) raised to this node's clock.
        Reads and writes alike still go through the log: a leader that may be deposed answers
        nothing from its own state. A key outside the range is refused before anything is
        proposed (Store.mismatch). Raises ValueError, before anything is proposed, for a
        command too large to replicate."""
        at = None
        if op == BATCH_OP:
            try:
                request = BatchRequest.from_wire(args)
            except CommandError as exc:
                callback(Outcome.NOT_COMMITTED, "refused before proposing: %s" % exc)
                return
            routed, write_keys, at = request.keys(), request.write_keys(), request.header.ts
        else:
            key = args.get("key")
            routed = [args.get("start") if op == "scan" else key]
            write_keys = [key] if op in EVALUATED_OPS and isinstance(key, bytes) else []
        here = self.replicas.get(range_id)
        if here is not None and here.desc is not None:
            for k in routed:
                if isinstance(k, bytes) and not here.desc.contains(k):
                    callback(Outcome.REJECTED, self.mismatch(here.desc, k))
                    return
        if op == ADMIN_SPLIT:
            key = args.get("key")
            if here is None or here.desc is None or not isinstance(key, bytes):
                callback(Outcome.NOT_COMMITTED, "r%d has no initialized replica on n%d to split; retry"
                         % (range_id, self.cfg.node_id))
            elif here.desc.start == key:
                callback(Outcome.COMMITTED, {"already": True, "range_id": range_id})
            else:
                self.split_range(range_id, key, callback)
            return
        if op == BATCH_OP and request.locking:
            self._locking_read(range_id, request, self._stamped(range_id, callback, rounds=0))
            return
        if op == BATCH_OP and request.header.consistency != STRONG:
            self._serve_stale_read(range_id, request, self._stamped(range_id, callback, rounds=0))
            return
        if op == BATCH_OP and not request.writes:
            self._serve_read(range_id, request, self._stamped(range_id, callback, rounds=0))
            return
        callback = self._stamped(range_id, callback, rounds=1)
        if not write_keys:
            self.propose(range_id, op, args, callback, command_id=command_id, at=at)
            return
        command_id = command_id if command_id is not None else new_command_id()
        self.check_command_size(op, args, command_id)   # too large: refuse now, not once the latches are ours
        if self.disk_low is not None:
            callback(Outcome.NOT_COMMITTED, self.disk_low)   # at once, not after waiting for a lease
            return
        group = self.groups.get(range_id)
        if group is not None and (not group.leader_ready() or self._lease_for_write(range_id, tuple(self.now_ts())) is None):
            # A new leader evaluates nothing before it has applied its term's first entry (its
            # applied state may lack writes its predecessor committed) and it holds the lease.
            self._await_lead(range_id, callback,
                             lambda: self.evaluate_and_propose(range_id, op, args, callback, command_id), lease=True)
            return
        waiting = self.in_flight.get(command_id)
        if waiting is not None:
            waiting.append(callback)                   # a retry of a command being evaluated or replicated:
            return                                     # it gets the first attempt's answer
        waiting = self.in_flight[command_id] = [callback]

        def answer(outcome: Outcome, result: Any) -> None:
            for cb in self.in_flight.pop(command_id, waiting):
                cb(outcome, result)

        def run(release) -> None:
            def done(outcome: Outcome, result: Any) -> None:
                release()
                answer(outcome, result)
            rep = self.replicas.get(range_id)
            group = self.groups.get(range_id)
            if group is not None and not group.is_leader():
                # The lead moved while this waited for its latches: proposing now would be a
                # follower's proposal (pysyncobj's forwarding); the router sends it again.
                done(Outcome.NOT_COMMITTED, self.not_leader(range_id, "stopped leading r%d while the command "
                                                                      "waited for its latches" % range_id))
                return
            lease = self._lease_for_write(range_id, tuple(self.now_ts()))
            if lease is None:
                done(Outcome.NOT_COMMITTED, self.not_leader(range_id, "stopped serving the lease of r%d while the "
                                                                      "command waited for its latches" % range_id))
                return
            found, saved = rep.result_of(command_id) if rep is not None and rep.desc is not None else (False, None)
            if found:
                # Applied already (a retry after a lost answer): its first answer, never a fresh
                # verdict, and no consensus round for it now.
                outcome, result = saved_outcome(saved)
                if outcome is Outcome.COMMITTED and isinstance(result, dict):
                    result = dict(result, rounds=0)
                done(outcome, result)
                return
            evaluated, holds = {k: v for k, v in args.items() if k != "evaluated"}, None   # only this leader marks it
            try:
                if rep is not None and rep.desc is not None:
                    holds = (rep.batch_holds(request) if op == BATCH_OP
                             else rep.condition_holds(op, args) if op in ("cas", "put_if") else None)
            except CommandError:
                pass                                   # malformed: apply rejects it, the same everywhere
            if holds:
                evaluated["evaluated"] = True
            writes = holds is not False
            # Under the lease: above every read it served of these keys (and its start). The
            # holder too: a lease this node asked for (seq n) may lose to another node's seq n.
            evaluated["lease_seq"] = lease.seq
            evaluated["lease_holder"] = lease.holder
            now = tuple(self.now_ts())
            if (lease.holder == self.cfg.node_id and lease.expiration[0] - now[0] < self.lease_ns // 2
                    and not self._extension_in_flight(range_id, lease)):
                # Past half its life (or lapsed): this write extends the lease, no command of its own.
                until = (now[0] + self.lease_ns, 0)
                evaluated["lease_until"] = list(until)
                self.extending[range_id] = (until, self.clock())
                self.lease_stats["extended_by_writes"] += 1
            cache = self.tscache.get(range_id) if self.tscache_seq.get(range_id) == lease.seq else None
            floor = next_ts(cache.max_for(write_keys) if cache is not None
                            else max(lease.start, self.start_low_water, self._served(range_id)))
            # This command closes the range further (its followers adopt it when it applies:
            # kvserver.closedts); `propose` puts it above what is closed.
            closed = self._close(range_id, lease, now)
            if closed > ZERO:
                evaluated["closed"] = list(closed)
            try:
                ts = self.propose(range_id, op, evaluated, done, command_id=command_id,
                                  at=max(list(at) if at is not None else [0, 0], list(floor)))
                self.high_water[range_id] = max(self.high_water.get(range_id, (0, 0)), tuple(ts))
                # Not `lease_used`: a write extends its own lease (`lease_until`), so a range only
                # written needs no lease command of its own; one for each range written once a
                # while would double the log entries (and fsyncs) of 1,000 ranges written
                # round-robin (bench.ranges_idle: 3.03 ms a write against 2.63 before leases).
            except ValueError as exc:
                done(Outcome.NOT_COMMITTED, "refused before proposing: %s" % exc)
            if not writes:
                # A condition fails against the applied state: it will write nothing (versions
                # only grow), so it need not hold its latches while it goes through the log to be
                # answered; the next writer of its keys is evaluated at once.
                release()
        latched = [(range_id, k) for k in sorted(set(write_keys))]
        hold = self._take_hold(request.header.lock_token if op == BATCH_OP else None, latched)
        if hold is not None:
            run(hold)      # the latches its locking read took and kept for it
        else:
            self.latches.acquire_all(latched, run)

    # --- closed timestamps (kvserver.closedts) ------------------------------------------------
    def closed_floor(self, range_id: int) -> tuple[int, int]:
        """What this node has closed for the range as its leaseholder: every write it evaluates
        goes above it."""
        closed = self.closed.get(range_id, ZERO)
        if range_id in self.closed_sender.members:
            closed = max(closed, self.closed_sender.ts)
        return closed

    def _close(self, range_id: int, lease: Lease, now: tuple[int, int]) -> tuple[int, int]:
        """Close the range at `now - closed_lag` (never past the lease's expiration, never
        backwards) for a write about to be proposed under `lease`; returns what is closed."""
        rep = self.replicas.get(range_id)
        target = min((now[0] - self.closed_lag_ns, 0), lease.expiration)
        self.closed[range_id] = max(self.closed.get(range_id, ZERO), target, rep.closed if rep is not None else ZERO)
        return self.closed_floor(range_id)

    def side_transport(self) -> tuple[int, tuple[int, int], list[int], list[int]]:
        """Close every range this node serves at `now - closed_lag` on the side transport:
        (frame seq, the group's timestamp, updates, removed) for a CLOSED frame. A range stays
        in the group while its lease is served here and expires no earlier, and nothing it
        proposed is still waiting for a log index; one that leaves keeps the group's timestamp
        as its own floor."""
        now = tuple(self.now_ts())
        sender = self.closed_sender
        target = max(sender.ts, (now[0] - self.closed_lag_ns, 0))
        current: dict[int, tuple[int, int] | None] = {}
        me = self.cfg.node_id
        for rid in set(sender.members) | self.closable:
            # The applied lease first (most idle ranges' leases have lapsed): only one of ours
            # reaching the target can pass, and only then is it worth serving_lease's checks.
            rep = self.replicas.get(rid)
            applied = rep.lease if rep is not None else None
            fits = applied is not None and applied.holder == me and applied.expiration >= target
            if not fits:
                self.closable.discard(rid)   # the target only rises: back when a lease applies
            lease, group = self.serving_lease(rid, now) if fits else None, self.groups.get(rid)
            if lease is not None and group is not None and lease.expiration >= target and not group.queued():
                current[rid] = (lease.seq, group.last_log_index())
            else:
                current[rid] = None
            if current[rid] is None and rid in sender.members:
                self.closed[rid] = max(self.closed.get(rid, ZERO), sender.ts)
        updates, removed = sender.frame(target, current)
        return sender.seq, sender.ts, updates, removed

    def on_closed_frame(self, peer: int, seq: int, full: bool, ts: list, updates: list[int], removed: list[int],
                        extra: dict | None = None) -> None:
        self.closed_receiver.on_frame(peer, seq, full, (ts[0], ts[1]), updates, removed, self._fold_closed)
        if extra is None:
            return
        for rid in extra.get("wanted", ()):
            self._followers_read(rid)
        protect = extra.get("protect")
        if protect is None:
            self.protected_by_peer.pop(peer, None)
        else:
            self.protected_by_peer[peer] = (protect[0], protect[1])

    def side_extra(self) -> dict:
        """What a CLOSED frame tells the other way (kvserver.closedts): the ranges follower reads
        asked of replicas here since the last frame, and the oldest timestamp a statement
        running here reads at (or None)."""
        wanted, self.demanded = sorted(self.demanded), set()
        protect = self.protected_here()
        return {"wanted": wanted, "protect": None if protect is None else list(protect)}

    def _followers_read(self, range_id: int) -> None:
        """A follower reported a read of `range_id`: if this node leads it, keep (or take) its
        lease for follower_demand_keep_s, so its closed timestamp keeps up with the clock."""
        group, rep = self.groups.get(range_id), self.replicas.get(range_id)
        if group is None or rep is None or rep.desc is None or not group.is_leader():
            return
        if self.lease_demand.get(range_id, -1e18) <= self.clock() - constants.follower_demand_keep_s:
            self.closed_stats["leases_kept_for_followers"] += 1
        self.lease_demand[range_id] = self.clock()
        if self.serving_lease(range_id) is None:
            self.lease_wanted.add(range_id)
        self.tick_soon.add(range_id)

    def gc_protected(self) -> tuple[int, int] | None:
        """The oldest timestamp a statement running here or at a peer reads at: GC stays below it."""
        found = [ts for ts in [self.protected_here()] + list(self.protected_by_peer.values()) if ts is not None]
        return min(found) if found else None

    def _fold_closed(self, range_id: int, lease_seq: int, index: int, ts: tuple[int, int]) -> None:
        """A side-transport entry is replaced: the replica keeps what it closed, if adopted."""
        rep = self.replicas.get(range_id)
        if rep is not None:
            self._adopt_closed(rep, lease_seq, index, ts)

    @staticmethod
    def _adopt_closed(rep: RangeReplica, lease_seq: int, index: int, ts: tuple[int, int]) -> None:
        """Adopt `ts`, closed under lease `lease_seq` after log index `index`, once the replica has
        applied through that index under that lease. Kept once adopted: a promise stays true,
        also after the lease or the stream moves on."""
        if (ts > rep.closed and rep.lease is not None and rep.lease.seq == lease_seq
                and rep.applied_index() >= index):
            rep.closed = ts

    def closed_ts(self, range_id: int) -> tuple[int, int]:
        """The timestamp at or below which this replica may serve any read of the range: the
        highest its leaseholder closed on a write applied here or on the side transport (once
        applied through the index it names, under the range's current lease)."""
        rep = self.replicas.get(range_id)
        if rep is None or rep.desc is None:
            return ZERO
        entry = self.closed_receiver.entry(rep.lease.holder, range_id, rep.lease.seq) if rep.lease is not None else None
        if entry is not None:
            self._adopt_closed(rep, rep.lease.seq, entry[1], entry[0])
        return rep.closed

    def negotiate_closed(self, spans: list[tuple[bytes, bytes | None]]) -> tuple[int, int] | None:
        """The newest timestamp this node's replicas have closed over every range covering
        `spans` (a bounded-staleness read's one timestamp), or None when a part of a span has
        no initialized replica here (its nearest replica is elsewhere)."""
        starts, descs = self._replica_descs()
        least: tuple[int, int] | None = None
        for start, end in spans:
            at = start
            i = bisect.bisect_right(starts, at) - 1
            while True:
                if i < 0 or i >= len(descs) or not descs[i].contains(at):
                    return None
                closed = self.closed_ts(descs[i].range_id)
                least = closed if least is None or closed < least else least
                nxt = descs[i].end
                if nxt is None or (end is not None and nxt >= end):
                    break
                at, i = nxt, i + 1
        return least

    def _serve_stale_read(self, range_id: int, request: BatchRequest, callback: Callable[[Outcome, Any], None]) -> None:
        """Serve an `exact` or `bounded_staleness` read (kvserver.batch) from this replica's own
        store when it has closed the read's timestamp (a bounded read with no negotiated
        timestamp reads at this replica's closed timestamp, if that is at least its `min_ts`);
        else as the leaseholder, if this node serves the lease (at `read_ts` for an exact read,
        at its clock for a bounded one: both within the reader's bound); else refuse with
        CLOSED_BEHIND and the replica's closed timestamp, and the router asks the leaseholder."""
        header = request.header
        closed = self.closed_ts(range_id)
        ts = header.read_ts if header.read_ts is not None else closed
        fresh_enough = header.read_ts is not None or (header.min_ts is not None and closed >= header.min_ts)
        rep = self.replicas.get(range_id)
        group = self.groups.get(range_id)
        if group is None or not group.is_leader():
            self.demanded.add(range_id)   # its leaseholder keeps the lease for the followers (side_extra)
        if fresh_enough and ts <= closed and rep is not None and rep.desc is not None:
            self.closed_stats["follower_reads"] += 1
            desc = rep.desc

            def run() -> None:
                def job(reader) -> Callable[[], None]:
                    try:
                        with reader.snapshot():
                            result = RangeReplica.read_checked(request, desc, reader, ts)
                    except CommandError as exc:
                        refused = exc.rejection()
                        return lambda: callback(Outcome.REJECTED, refused)
                    except Exception as exc:
                        why = "n%d could not read r%d: %s" % (self.cfg.node_id, range_id, exc)
                        return lambda: callback(Outcome.NOT_COMMITTED, why)
                    return lambda: callback(Outcome.COMMITTED, dict(result, read_ts=list(ts), closed_ts=list(closed)))
                scans = any(isinstance(op, Scan) for op in request.ops)
                self.read_executor(job, None if scans else len({op.key for op in request.ops}))
            self._when_committed(run)   # what it adopted is committed once the tick's applies are
            return
        if group is not None and group.is_leader():
            self.closed_stats["to_leaseholder"] += 1
            strong = replace(header, consistency=STRONG, min_ts=None,
                             read_ts=header.read_ts, uncertainty_limit=None)
            self._serve_read(range_id, BatchRequest(strong, request.ops), callback)
            return
        self.closed_stats["refused_behind"] += 1
        callback(Outcome.REJECTED, Rejection(
            CLOSED_BEHIND, "n%d's replica of r%d has closed only up to %s: %s" % (
                self.cfg.node_id, range_id, list(closed),
                "below the read's timestamp %s" % list(header.read_ts) if header.read_ts is not None
                else "the read's staleness bound (no older than %s) cannot be met here" % list(header.min_ts or ZERO)),
            {"closed": list(closed)}))

    # --- leaseholder reads -----------------------------------------------------------------------
    def _serve_read(self, range_id: int, request: BatchRequest, callback: Callable[[Outcome, Any], None]) -> None:
        """Serve a strong read batch as the range's leaseholder, from its own store, with no
        consensus round. Its timestamp T is the header's `read_ts` (the statement's, fixed by
        the gateway), else this node's clock raised to every write applied here (so it sees
        every write acknowledged before it arrived, an earlier holder's too). T goes into the
        timestamp cache first (every write evaluated from now on is above it), then the read
        waits out the writes in flight on its keys (their latches: evaluated before, possibly at
        or below T) and runs once their applies are committed, on a reader (off the node loop).
        A version above T and at or below the header's `uncertainty_limit` - capped at this
        node's clock, above which nothing acknowledged before the read can be - may have been
        written before the statement began by a node whose clock runs ahead: the answer is a
        `read_within_uncertainty` rejection carrying the timestamp to restart at."""
        group, rep = self.groups.get(range_id), self.replicas.get(range_id)
        if group is None or rep is None or rep.desc is None:
            callback(Outcome.NOT_COMMITTED, self.not_leader(range_id, "has no initialized replica of r%d" % range_id))
            return
        now = tuple(self.now_ts())
        lease = self.serving_lease(range_id, now)
        if lease is None:
            if group.is_leader():
                self.lease_stats["refused_not_usable"] += 1
                self._await_lead(range_id, callback, lambda: self._serve_read(range_id, request, callback), lease=True)
            else:
                callback(Outcome.NOT_COMMITTED, self.not_leader(range_id, "does not hold the lease of r%d" % range_id))
            return
        header = request.header
        seen = max(now, rep.max_write_ts, lease.start)
        ts = header.read_ts if header.read_ts is not None else seen
        if ts[0] > now[0] + self.max_offset_ns:
            callback(Outcome.REJECTED, Rejection(READ_TOO_NEW, "n%d: read timestamp %s is more than the max clock "
                                                 "offset ahead of this node's clock" % (self.cfg.node_id, list(ts)),
                                                 {}))
            return
        limit = None
        if header.read_ts is not None and header.uncertainty_limit is not None:
            limit = min(header.uncertainty_limit, seen)
            if limit <= ts:
                limit = None
        cache = self.tscache[range_id]
        spans = []
        for op in request.ops:
            if isinstance(op, Scan):
                cache.record_span(op.key, op.end, ts)
                spans.append((op.key, op.end))
            else:
                cache.record_key(op.key, ts)
        self.lease_used[range_id] = self.clock()
        if lease.expiration[0] - now[0] < self.lease_ns // 2:
            self.tick_soon.add(range_id)   # extend it (_lease_upkeep) before it runs out
        points = {op.key for op in request.ops if not isinstance(op, Scan)}

        def on_keys(latch) -> bool:
            rid, key = latch
            return rid == range_id and (key in points or any(
                key >= a and (b is None or key < b) for a, b in spans))
        desc = rep.desc
        self.lease_stats["reads_local"] += 1

        def run() -> None:
            def job(reader) -> Callable[[], None]:   # on a reader thread: returns the answer to give on the loop
                try:
                    with reader.snapshot():
                        result = RangeReplica.read_checked(request, desc, reader, ts, limit)
                except ReadUncertain as exc:
                    rejection = Rejection(READ_UNCERTAIN, "n%d read r%d at %s and found a version at %s within its "
                                          "uncertainty interval; restart the read there"
                                          % (self.cfg.node_id, range_id, list(ts), list(exc.ts)), {"ts": list(exc.ts)})

                    def restart() -> None:
                        self.lease_stats["read_restarts"] += 1
                        callback(Outcome.REJECTED, rejection)
                    return restart
                except CommandError as exc:
                    refused = exc.rejection()
                    return lambda: callback(Outcome.REJECTED, refused)
                except Exception as exc:   # the reader's file (a StoreError): this read fails, the node goes on
                    why = "n%d could not read r%d: %s" % (self.cfg.node_id, range_id, exc)
                    return lambda: callback(Outcome.NOT_COMMITTED, why)
                return lambda: callback(Outcome.COMMITTED, dict(result, read_ts=list(ts), lease_seq=lease.seq))
            self.read_executor(job, None if spans else len(points))
        held = self.latches.held(on_keys)
        if not held:
            self._when_committed(run)
            return

        def waited(release) -> None:
            release()
            self._when_committed(run)
        self.latches.acquire_all(held, waited)

    def _when_committed(self, run: Callable[[], None]) -> None:
        """Run `run` now if no apply transaction is open on the store, else once the tick's
        applies are committed (a read on another connection sees only committed state)."""
        if self.mvcc.in_batch:
            self.deferred_reads.append(run)
        else:
            run()

    def run_deferred_reads(self) -> None:
        reads, self.deferred_reads = self.deferred_reads, []
        for run in reads:
            run()

    # --- locking reads (kvserver.batch.GetForUpdate) ------------------------------------------------
    def _locking_read(self, range_id: int, request: BatchRequest, callback: Callable[[Outcome, Any], None]) -> None:
        """Answer a locking read as the range's ready leader, from the applied state, with no
        consensus round: under the latches of its keys, which are then held (up to
        locking_read_hold_s) for the write batch that names the answer's `lock_token`."""
        group = self.groups.get(range_id)
        if group is not None and not group.leader_ready():
            self._await_lead(range_id, callback, lambda: self._locking_read(range_id, request, callback))
            return
        latched = [(range_id, k) for k in sorted(set(request.keys()))]

        def run(release) -> None:
            rep, group = self.replicas.get(range_id), self.groups.get(range_id)
            if group is None or rep is None or rep.desc is None or not group.is_leader():
                release()
                callback(Outcome.NOT_COMMITTED, self.not_leader(range_id, "stopped leading r%d before the locking "
                                                                          "read" % range_id))
                return
            token = new_command_id()
            self.holds[token] = (self.clock() + constants.locking_read_hold_s, latched, release)
            responses = [rep.read_latest(op.key) for op in request.ops]
            callback(Outcome.COMMITTED, {"ts": max((r["ts"] for r in responses), default=[0, 0]),
                                         "responses": responses, "lock_token": token})
        self.latches.acquire_all(latched, run)

    def _take_hold(self, token: bytes | None, latched: list) -> Callable[[], None] | None:
        """The release of the latches a locking read holds under `token` for a write batch that
        latches exactly `latched` or fewer of them (they are then the batch's); None if the
        token is unknown (expired, another leader's) or the batch needs latches it does not
        hold - those are given back, and the batch takes its own in key order."""
        if token is None or token not in self.holds:
            return None
        _, held, release = self.holds.pop(token)
        if set(latched) <= set(held):
            return release
        release()
        return None

    def _expire_holds(self, now: float) -> None:
        """Give back the latches of locking reads whose write did not come in locking_read_hold_s."""
        for token in [t for t, (until, _, _) in self.holds.items() if until <= now]:
            self.holds.pop(token)[2]()

    def _stamped(self, range_id: int, callback: Callable[[Outcome, Any], None],
                 rounds: int) -> Callable[[Outcome, Any], None]:
        """`callback` with a committed answer (a map) marked with who served it, the consensus
        rounds it took here and the least round trip one such round can take from here (the
        slowest of the nearest followers that make a majority with this replica)
        (`served_by`, `rounds`, `quorum_rtt_ms`: what EXPLAIN ANALYZE shows). An answer
        already marked keeps its marks."""
        node_id = self.cfg.node_id

        def stamped(outcome: Outcome, result: Any) -> None:
            if outcome is Outcome.COMMITTED and isinstance(result, dict) and "served_by" not in result:
                result = dict(result, served_by=node_id, rounds=result.get("rounds", rounds),
                              quorum_rtt_ms=self.quorum_rtt_ms(range_id))
            callback(outcome, result)
        return stamped

    def quorum_rtt_ms(self, range_id: int) -> float | None:
        """The round trip a consensus round of `range_id` needs at least from this replica: to the
        farthest of the nearest followers that, with this one, make a majority (None: a round
        trip not measured yet; 0 for a range of one replica)."""
        rep = self.replicas.get(range_id)
        if rep is None or rep.desc is None:
            return None
        others = [p for p in rep.desc.replicas if p != self.cfg.node_id]
        needed = (len(others) + 1) // 2             # followers a majority needs besides this one
        if needed <= 0:
            return 0.0
        rtts = sorted(r for r in (self.peer_rtt_s(p) for p in others) if r is not None)
        return round(rtts[needed - 1] * 1000, 3) if len(rtts) >= needed else None

    def not_leader(self, range_id: int, why: str) -> Rejection:
        """The not-leader answer of this node for `range_id` (nothing was proposed): `why`, and
        the leader this node knows of as the hint the router follows."""
        group = self.groups.get(range_id)
        leader = group.leader_id() if group is not None else None
        return not_leader("n%d %s (its leader: %s); retry" % (self.cfg.node_id, why,
                                                               "n%s" % leader if leader else "none known"),
                          int(leader) if leader else None)

    def _await_lead(self, range_id: int, callback: Callable[[Outcome, Any], None], retry: Callable[[], None],
                    *, lease: bool = False) -> None:
        """Run `retry` once this replica is the range's ready leader (and, with `lease`, serves
        its lease), or answer not-leader after leader_wait_s."""
        if lease:
            self.lease_wanted.add(range_id)
        self.awaiting_lead.setdefault(range_id, []).append((self.clock() + constants.leader_wait_s, callback, retry,
                                                             lease))
        self.tick_soon.add(range_id)

    def _run_awaiting_lead(self, now: float) -> None:
        """After a tick: evaluate what waited for its range's new leader to apply its term's first
        entry; answer not-leader (the router sends again) for a range this replica stopped
        leading, or that did not become ready in leader_wait_s."""
        hlc_now = tuple(self.now_ts())
        for rid in list(self.awaiting_lead):
            group = self.groups.get(rid)
            waiting = self.awaiting_lead[rid]
            if group is not None and group.leader_ready():
                served = self.serving_lease(rid, hlc_now) is not None
                ready = [w for w in waiting if served or not w[3]]
                expired = [w for w in waiting if w not in ready and w[0] <= now]
                remaining = [w for w in waiting if w not in ready and w[0] > now]
                if remaining:
                    self.awaiting_lead[rid] = remaining
                    self.tick_soon.add(rid)   # its upkeep looks again next iteration (a lease to take over)
                else:
                    del self.awaiting_lead[rid]
                for w in ready:
                    w[2]()   # may wait again (appends to awaiting_lead)
                if expired:
                    rejection = self.not_leader(rid, "leads r%d but could not take its lease in %.0f s"
                                                % (rid, constants.leader_wait_s))
                    for w in expired:
                        w[1](Outcome.NOT_COMMITTED, rejection)
                continue
            if group is not None and group.is_leader():
                expired = [w for w in waiting if w[0] <= now]
                self.awaiting_lead[rid] = [w for w in waiting if w[0] > now]
                why = "leads r%d but has not applied its term's first entry in %.0f s" % (rid, constants.leader_wait_s)
            else:
                expired, self.awaiting_lead[rid] = waiting, []
                why = "stopped leading r%d before it could evaluate" % rid
            if not self.awaiting_lead[rid]:
                del self.awaiting_lead[rid]
            rejection = self.not_leader(rid, why) if expired else None
            for w in expired:
                w[1](Outcome.NOT_COMMITTED, rejection)

    def status(self) -> list[dict]:
        out = []
        now = tuple(self.now_ts())
        for rid in sorted(self.groups):
            group, rep = self.groups[rid], self.replicas[rid]
            d = rep.desc
            out.append({"range_id": rid, "start": d.start if d else None, "end": d.end if d else None,
                        "generation": d.generation if d else None, "replicas": list(d.replicas) if d else [],
                        "leader": int(group.leader_id()) if group.leader_id() else None,
                        "applied_index": group.raftLastApplied, "bytes": self.sizes.get(rid),
                        "snapshots_installed": group.snapshots_installed,
                        "snapshots_created": group.snapshots_created,
                        "evaluation_misses": rep.evaluation_misses,
                        "lease": rep.lease.to_wire() if rep.lease is not None else None,
                        "lease_serving": self.serving_lease(rid, now) is not None,
                        "closed_ts": list(self.closed_ts(rid)),
                        "gc_threshold": list(rep.gc_threshold),
                        "home": self.zones.region_for(d.start) if d else None,   # its zone's region (zones.py)
                        "quiet": group.is_leader() and group.appends_held()})   # a leader sending no heartbeats
        return out

    def close(self, *, sync: bool = True) -> None:
        """Close every group (RaftGroup.close: pysyncobj's pipe, snapshot files, the journal);
        idempotent. A clean stop syncs the journals first; a crashed store's (`sync=False`) are
        closed as they are. Every group is closed even if one fails; the first failure is
        raised after."""
        failure: BaseException | None = None
        for group in self.groups.values():
            try:
                group.close(sync=sync)
            except BaseException as exc:   # FailStop (a failed sync) is a BaseException
                failure = failure or exc
        if failure is not None:
            raise failure
