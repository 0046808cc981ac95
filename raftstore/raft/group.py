"""RaftGroup: pysyncobj's SyncObj made safe enough to hold acknowledged writes.

pysyncobj 0.3.17 loses acknowledged writes (PYSYNCOBJ.md item 1), never fsyncs (item 2),
destroys state when a journal has no dump file (item 3), wedges when apply raises (item 5) and
lets proposals vanish without an answer (item 8). This subclass keeps pysyncobj's election and
replication machinery and fixes each of those, by overriding a handful of private methods that
SyncObj calls through `self`:

Raft's log-matching rules (the four rules of item 1):
  1. a success reply never moves the leader's nextIndex backwards;
  2. a follower truncates only at the first entry whose term differs from the message's;
  3. its acknowledgement is the last index the message proved (prevLogIdx + len(entries));
  4. it advances its commit index to at most that proved index.
Durability: the journal (journal.DurableJournal, installed through pysyncobj.syncobj.createJournal)
is synced before any message leaves this group and at the start of every tick, before the leader
counts itself in a quorum: no reply, vote or self-count is ever ahead of the disk.
Snapshots: always configured beside the journal, written by our serializer (never by fork); the
state machine supplies the data, so a snapshot is the range's own state.
Apply: commands are msgpack payloads with ids (commands.py); a command the state machine rejects
(CommandError: deterministic, the same on every replica) is recorded as failed and the replica goes
on; a repeated id returns its first result. Anything else that goes wrong in apply or in the
commit of a tick's applies -- a storage error, or a bug -- stops the replica (failstop.py): never
an answer built on a state the disk may not hold.
Continuity: every log index advances the state machine's stored applied index by exactly one,
pysyncobj's no-op and membership entries included (they are recorded as "applied, nothing
written"), so the stored index always equals pysyncobj's lastApplied once a tick's batch has
committed, and a snapshot is taken exactly at it.
Proposals: every proposal gets exactly one answer (COMMITTED, NOT_COMMITTED or AMBIGUOUS) by its
timeout at the latest.

Everything here depends on pysyncobj's private names, so the version is pinned exactly and the
names are checked when this module is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import logging
import math
import os
import struct
import threading
from typing import Any, Callable, Protocol

import msgpack
import pysyncobj.syncobj as _so
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import Node
from pysyncobj.serializer import Serializer

from raftstore import constants
from raftstore.loglimit import LogLimiter
from raftstore.raft.commands import (Command, CommandError, Outcome, decode_command, encode_command, not_leader,
                                     saved_outcome)
from raftstore.raft.failstop import FailStop
from raftstore.raft.journal import DurableJournal, LogFile, fsync_dir

logger = logging.getLogger(__name__)

PYSYNCOBJ_VERSION = "0.3.17"

_OVERRIDDEN = (
    "_SyncObj__onMessageReceived",
    "_SyncObj__deleteEntriesFrom",
    "_SyncObj__deleteEntriesTo",
    "_SyncObj__loadDumpFile",
    "_SyncObj__sendNextNodeIdx",
    "_SyncObj__tryLogCompaction",
    "_SyncObj__generateRaftTimeout",
    "_SyncObj__applyLogEntries",
    "_SyncObj__sendAppendEntries",
    "_SyncObj__getCurrentLogIndex",
    "_checkCommandsToApply",
    "_SyncObj__doApplyCommand",
    "_onTick",
    "_SyncObj__onNodeDisconnected",
)


def _drop_false_truncation_warning(record: logging.LogRecord) -> bool:
    """pysyncobj logs "truncating already-applied log entries ... may have diverged" just before
    its append handler calls __deleteEntriesFrom, which we override to do nothing (_prepare_append
    truncates only at a real conflict, and never an applied entry): the line is false, and it
    alarms whoever reads the log. Drop it."""
    return not str(record.msg).startswith("truncating already-applied log entries")


logging.getLogger(_so.__name__).addFilter(_drop_false_truncation_warning)


_INSTANCE_ATTRS = (
    "_SyncObj__raftLog", "_SyncObj__raftNextIndex", "_SyncObj__raftMatchIndex",
    "_SyncObj__raftLastApplied", "_SyncObj__raftCommitIndex", "_SyncObj__transport",
    "_SyncObj__raftCurrentTerm", "_SyncObj__raftElectionDeadline", "_SyncObj__conf",
    "_SyncObj__serializer", "_poller", "_SyncObj__newAppendEntriesTime", "_SyncObj__lastResponseTime",
    "_SyncObj__connectedNodes", "_SyncObj__otherNodes", "_SyncObj__transferInProgress",
)
_PIPE_ATTRS = ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW")   # its pipe's two ends (RaftGroup.close)


def _check_pysyncobj() -> None:
    from pysyncobj.version import VERSION
    if VERSION != PYSYNCOBJ_VERSION:
        raise ImportError("raftstore needs pysyncobj==%s exactly (found %s): RaftGroup overrides its "
                          "private methods" % (PYSYNCOBJ_VERSION, VERSION))
    missing = [n for n in _OVERRIDDEN if not callable(getattr(SyncObj, n, None))]
    if missing or not callable(getattr(_so, "createJournal", None)):
        raise ImportError("pysyncobj lacks private names RaftGroup overrides: %s" % (missing or ["createJournal"]))


_check_pysyncobj()

# pysyncobj calls createJournal(journalFile) once per SyncObj, with only the file name. The patch
# is process-wide, so the name is a key into this registry, filled just before SyncObj.__init__.
_journal_registry: dict[str, DurableJournal] = {}
_journal_registry_lock = threading.Lock()
_original_create_journal = _so.createJournal


def _create_journal(journalFile=None):
    with _journal_registry_lock:
        journal = _journal_registry.pop(journalFile, None) if journalFile else None
    if journal is None:
        return _original_create_journal(journalFile)
    return journal


_so.createJournal = _create_journal


class StateMachine(Protocol):
    """What a RaftGroup applies committed commands to.

    Contract: `apply` and `record_failed` are called on the tick thread, once per index in
    increasing order; each must make its effect, the new applied index and the command's
    outcome (`(True, value)` or `(False, error)`, kept under the command id for `result_of`)
    durable together (one SQLite transaction), so replay after a crash applies each index at
    most once and a retried command id gets its first outcome. `record_failed` with command
    None only advances the applied index.
    `apply` raises CommandError for a command it rejects (deterministically, on every replica);
    any other exception stops the replica (FailStop): a storage error, or a bug.
    `apply` and `record_failed` must refuse an index that does not follow the stored
    applied index by one (a replay at or below it changes nothing); the group feeds every index.
    A snapshot install raises SnapshotRefused (or ValueError for a malformed snapshot) when it
    cannot take the snapshot; anything else it raises stops the replica.
    """

    def applied_index(self) -> int: ...
    def apply(self, index: int, command: Command) -> Any: ...
    def record_failed(self, index: int, command: Command | None, error: str | dict) -> None: ...
    def result_of(self, command_id: bytes) -> tuple[bool, Any]: ...
    def write_snapshot(self, f, index: int) -> None: ...
    def read_snapshot(self, f, index: int) -> None: ...
    # Optional, for snapshots that do not stall the tick thread (see _SnapshotSerializer):
    #   snapshot_writer(index) -> write(f): on the tick thread, pins the state at `index`;
    #     `write` may then run on another thread and writes exactly that state.
    #   stage_snapshot(f, index) -> staged: on another thread, prepares a received snapshot
    #     without changing anything served; check_staged(staged) raises if it cannot be taken
    #     now; install_staged(staged, index) switches it in (short, atomic, tick thread);
    #     discard_staged(staged) drops it.


Executor = Callable[[Callable[[], None]], None]


def run_inline(job: Callable[[], None]) -> None:
    """The default executor: snapshot work runs at once, on the calling (tick) thread."""
    job()


def run_in_thread(job: Callable[[], None]) -> None:
    """Snapshot work on a thread of its own, off the tick thread."""
    threading.Thread(target=job, name="raft-snapshot", daemon=True).start()


class _Job:
    """One piece of snapshot work handed to the executor; `done` is set when it has finished."""

    def __init__(self, index: int, node=None) -> None:
        self.index, self.node = index, node
        self.done = threading.Event()
        self.error: str | None = None
        self.result: Any = None


ProposalCallback = Callable[[Outcome, Any], None]


class SnapshotRefused(Exception):
    """The state machine cannot take this snapshot now (it would overlap a range this node still
    holds, or it is for another range); the leader is told and sends a fresh one later."""


# What a snapshot install may raise without stopping the replica: a refusal, or a malformed
# snapshot. Anything else (a failed write or commit) is a storage error.
_SNAPSHOT_REFUSALS = (SnapshotRefused, ValueError, TypeError, EOFError, struct.error, msgpack.UnpackException)

# pysyncobj failure reasons that prove the command was never appended (or was replaced).
_SURELY_NOT = {FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED,
               FAIL_REASON.NOT_LEADER, FAIL_REASON.REQUEST_DENIED}

# Of those, the ones a lead that moved explains (this replica stopped leading, and dropped the
# command, or never led): answered as a typed not-leader, which the router sends on to the new
# leader at once instead of failing the client's request.
_LEAD_MOVED = {FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED, FAIL_REASON.NOT_LEADER}

_REGULAR_ENTRY = b"\x00"   # pysyncobj's _COMMAND_TYPE.REGULAR; the others are its own entries
_SNAPSHOT_MAGIC = b"RSS1"
_LEN = struct.Struct("<I")


class _SyncingTransport:
    """Wraps the group's transport: the journal is synced before any message leaves.

    A transport whose class sets `flushes_after_sync = True` promises to hold every frame until
    its owner has synced all journals (group commit); it is not synced here, send by send.
    """

    def __init__(self, inner, journal: DurableJournal, sent_commit: dict[str, int]):
        self._inner = inner
        self._journal = journal
        self._sync_here = not getattr(inner, "flushes_after_sync", False)
        self._sent_commit = sent_commit

    def send(self, node, message):
        if self._sync_here and self._journal.dirty:
            self._journal.sync()
        if message.get("type") == "append_entries" and "prevLogIdx" in message and "transmission" not in message:
            # The commit index this follower can take from the message (rule 4): what it proved.
            proved = message["prevLogIdx"] + len(message.get("entries", ()))
            self._sent_commit[node.id] = min(message["commit_index"], proved)
        return self._inner.send(node, message)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def election_rank(group_key: str, term: int, member: str, members: tuple[str, ...]) -> int:
    """`member`'s place (0 first) in the order in which `members` stand for election in `term`:
    the same permutation on every replica, a different one for each group and term."""
    def key(m: str) -> bytes:
        return hashlib.blake2b(b"%s\0%d\0%s" % (group_key.encode(), term, m.encode()), digest_size=8).digest()
    return sorted(members, key=key).index(member)


class RaftGroup(SyncObj):
    """One Raft group (one range's replicas), durable and with the log-matching fix.

    `journal_file` is where the log lives (RealLogFile, or the simulator's disk); `dump_path`
    is a real path for the snapshot (written by our serializer through the state machine).
    """

    def __init__(self, self_id: str, peer_ids: list[str], *, journal_file: LogFile, dump_path: str,
                 state_machine: StateMachine, transport_class=None, transport=None,
                 conf: dict | None = None, name: str = "", snapshot_executor: Executor = run_inline,
                 on_snapshot_job_done: Callable[[], None] | None = None,
                 refuse_entries: Callable[[], str | None] = lambda: None, group_key: str = "") -> None:
        """`group_key` names the group alike on every replica (the Store passes its range, so each
        range has its own order); it orders the replicas' election timeouts
        (`_SyncObj__generateRaftTimeout`). Never a per-replica name: the order must be one
        permutation on all replicas.

        `refuse_entries()` returns why this replica must take no new log entries now (its
        disk is nearly full: raftstore.storage.diskspace), or None: proposals are then refused at once
        (NOT_COMMITTED with that reason), proposals forwarded by followers are denied, and as a
        follower it takes only the heartbeat of an append -- what it already holds stays
        appliable, and the leader sends the entries again later."""
        self.name = name or self_id
        # Lines a peer's messages, a proposal's callback or a retried snapshot can repeat: once
        # per condition per interval, with a count (raftstore.loglimit). Before SyncObj's
        # __init__, which may load a snapshot.
        self._log_limit = LogLimiter()
        self._patience: tuple[int, float] | None = None   # (term, this replica's election timeout in it)
        self._members = tuple(sorted({self_id, *peer_ids}))
        self._group_key = group_key
        self._rank: tuple[int, int] = (-1, 0)   # (term, this replica's place in its election order)
        self._refuse_entries = refuse_entries
        self._sm = state_machine
        self._executor = snapshot_executor
        self._on_job_done = on_snapshot_job_done
        self._export: _Job | None = None      # our own snapshot being written (log compaction)
        self._install: _Job | None = None     # a received snapshot being staged
        self._staged: Any = None              # handed to _read_snapshot during an install
        self._receiving_from = None
        self.snapshots_created = 0
        self._journal = DurableJournal(journal_file)
        self._dump_path = dump_path
        self._pending: dict[int, tuple[ProposalCallback, bytes]] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._proposal_ids = itertools.count(1)
        self._pending_lock = threading.Lock()
        self._snapshot_ack: int | None = None
        self._snapshot_refused: str | None = None
        self.apply_failures = 0
        self.proposals_as_follower = 0   # handed to pysyncobj's forwarding (the node hands them to the leader itself)
        self.snapshots_installed = 0   # received from a leader and installed
        self.snapshots_sent = 0        # handed whole to a follower (its last chunk went out)
        self.elections_started = 0     # terms this replica stood for
        self.entries_applied = 0       # log entries applied (a replay after restart not counted)
        self._fail_stop: FailStop | None = None   # raised inside pysyncobj's bare `except:`; re-raised
        self._closed = False
        self._appended_through = 0   # the last log index, and the commit index, of the last appends sent
        self._commit_told = 0
        self._sent_commit: dict[str, int] = {}   # follower -> the commit index our last append to it proved
        opts = dict(
            autoTick=False,
            appendEntriesUseBatch=True,
            appendEntriesPeriod=constants.append_entries_period_s,
            raftMinTimeout=constants.raft_min_timeout_s,
            raftMaxTimeout=constants.raft_max_timeout_s,
            appendEntriesBatchSizeBytes=constants.append_entries_batch_bytes,
            logCompactionMinEntries=constants.log_compaction_entries_min,
            logCompactionMinTime=constants.log_compaction_time_min_s,
            commandsQueueSize=constants.proposals_in_flight_max,
        )
        opts.update(conf or {})
        # Fixed: these keep the invariants above, whatever the caller asked for.
        opts.update(journalFile=journal_file.name, fullDumpFile=dump_path, useFork=False,
                    serializer=self._write_snapshot, deserializer=self._read_snapshot,
                    dynamicMembershipChange=False, password=None)
        assert opts["appendEntriesBatchSizeBytes"] > constants.command_bytes_max + 1024
        with _journal_registry_lock:
            _journal_registry[journal_file.name] = self._journal
        kwargs = {}
        if transport is not None:
            kwargs["transport"] = transport
        elif transport_class is not None:
            kwargs["transportClass"] = transport_class
        super().__init__(Node(self_id), [Node(p) for p in peer_ids], SyncObjConf(**opts), **kwargs)
        try:
            self._init_after_syncobj(dump_path)
        except BaseException:
            self.close(sync=False)   # a half-made group holds pysyncobj's pipe all the same
            raise

    def _init_after_syncobj(self, dump_path: str) -> None:
        for attr in _INSTANCE_ATTRS:
            assert hasattr(self, attr), "pysyncobj internals changed: %s" % attr
        assert self._SyncObj__raftLog is self._journal
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        assert notifier is None or all(hasattr(notifier, a) for a in _PIPE_ATTRS), "pysyncobj internals changed: PipeNotifier"
        self._SyncObj__transport = _SyncingTransport(self._SyncObj__transport, self._journal, self._sent_commit)
        self._SyncObj__serializer = _SnapshotSerializer(self, dump_path, self._SyncObj__conf.logCompactionBatchSize,
                                                        self._read_snapshot)
        # The state machine remembers what it applied (durably); resume after it.
        applied = self._sm.applied_index()
        if applied > self._SyncObj__raftLastApplied:
            self._SyncObj__raftLastApplied = applied
            self._SyncObj__raftCommitIndex = max(self._SyncObj__raftCommitIndex, applied)
        elif applied < self._SyncObj__raftLastApplied:
            # pysyncobj counts its first entry (a no-op at index 1) as applied from the start;
            # the state machine records it too (continuity). Anything else is a hole.
            if self._SyncObj__raftLastApplied != 1:
                raise FailStop("%s: the state machine holds index %d but the log resumes after %d"
                               % (self.name, applied, self._SyncObj__raftLastApplied))
            self._sm.record_failed(1, None, "pysyncobj's first entry")

    # --- closing ---------------------------------------------------------------------------
    def close(self, *, sync: bool = True) -> None:
        """Release everything this group holds open; idempotent.

        pysyncobj opens, per SyncObj: a wake-up pipe (PipeNotifier, two descriptors, whenever
        appendEntriesUseBatch is off; the node and the split simulator run with it on),
        registered with the group's poller (select.poll or select.select: no descriptor of its
        own); files of snapshots being sent; and the journal. Its destroy() closes only the
        transport and the journal, never the pipe. Here the pipe is unregistered and closed,
        the snapshot files (sent and received) closed, the transport destroyed, and the journal
        closed -- synced first if `sync` (a clean stop); a crashed replica's (`sync=False`) is
        closed as it is, so nothing it had not synced becomes durable.
        A closed group takes no more ticks or messages, and refuses proposals (NOT_COMMITTED);
        proposals still pending get no answer (the process, or simulated node, is going away)."""
        if self._closed:
            return
        self._closed = True
        try:
            notifier = getattr(self, "_SyncObj__pipeNotifier", None)
            if notifier is not None and not isinstance(notifier, _NoNotifier):
                # A late propose (pysyncobj's _applyCommand) must never write to the descriptor
                # number once the process has given it to another file.
                self._SyncObj__pipeNotifier = _NoNotifier()
                read_fd, write_fd = (getattr(notifier, a) for a in _PIPE_ATTRS)
                self._poller.unsubscribe(read_fd)
                os.close(read_fd)
                os.close(write_fd)
            serializer = getattr(self, "_SyncObj__serializer", None)
            if isinstance(serializer, _SnapshotSerializer):
                serializer.close()
            transport = getattr(self, "_SyncObj__transport", None)
            if transport is not None:
                transport.destroy()
        finally:
            self._journal.close(sync=sync)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- introspection for the node and the simulator ------------------------------------
    @property
    def journal(self) -> DurableJournal:
        return self._journal

    def is_leader(self) -> bool:
        return self._isLeader()

    def leader_ready(self) -> bool:
        """This replica leads and has applied its term's first entry (the no-op pysyncobj
        appends on election): everything committed before its term is in its applied state, so
        it may evaluate against that state."""
        noop = self._SyncObj__noopIDx
        return self._isLeader() and noop is not None and self._SyncObj__raftLastApplied >= noop

    def leader_id(self) -> str | None:
        leader = self._getLeader()
        return leader.id if leader is not None else None

    def last_log_index(self) -> int:
        return self._journal[-1][1]

    def queued(self) -> int:
        """Proposals pysyncobj has queued and not yet taken into its log (it does at its next
        tick): their log indexes are not known yet."""
        return len(self._SyncObj__commandsQueue._FastQueue__queue)

    def transfer_leadership(self, to: str | None = None) -> bool:
        """Hand the lead to peer `to` (None: the most caught-up connected follower) by Raft's
        TimeoutNow: it stands for election at once. False if this replica does not lead or the
        peer is not caught up (pysyncobj refuses then); True only means the request went out."""
        answer: list = []
        node = next((n for n in self._SyncObj__otherNodes if n.id == to), None) if to is not None else None
        if to is not None and node is None:
            return False
        self.transferLeadership(node, callback=lambda res, err: answer.append(err))
        return bool(answer) and answer[0] == FAIL_REASON.SUCCESS

    def campaign(self) -> None:
        """Start an election at the next tick instead of after a timeout."""
        self._SyncObj__raftElectionDeadline = 0

    def postpone_election(self, alive_at: float | None = None) -> None:
        """The leader is known to be alive (its node said so, at `alive_at`, default now):
        restart our election timer from then, with this replica's own random timeout for the
        term, drawn once per term. A fresh draw at every postponement, kept when later, is the
        greatest of many draws: every follower's timer would then end about raftMaxTimeout
        after the leader was last heard, all at once, and their votes split (the election took
        another 1-2 s: a failover measured 3.3 s to a new leader instead of 1-2)."""
        if self._SyncObj__transferInProgress:
            return   # the leader asked us to stand now (TimeoutNow): its liveness must not postpone that
        term = self._SyncObj__raftCurrentTerm
        if self._patience is None or self._patience[0] != term:
            self._patience = (term, self._SyncObj__generateRaftTimeout())
        deadline = (_so.monotonicTime() if alive_at is None else alive_at) + self._patience[1]
        if deadline > self._SyncObj__raftElectionDeadline:
            self._SyncObj__raftElectionDeadline = deadline

    def _SyncObj__generateRaftTimeout(self) -> float:
        """This replica's election timeout: a slot of [raftMinTimeout, raftMaxTimeout] by its place
        in the group's election order for the current term (`election_rank`), with a little
        randomness inside the slot. pysyncobj draws uniformly over the whole span: two followers
        of a dead leader whose draws fell within a message's flight of each other both stood
        and split the vote (one failover in ~16 under symmetric60, more over longer links), and
        the next term's draws could split again, each round 1-2 s. With slots, the first
        follower's request for votes arrives well before the next one's timer runs out. The
        order is a permutation every replica computes alike, different for each group and term,
        so no node is everyone's first choice. (pysyncobj draws a candidate's retry before it
        increments the term, and a vote's or an append's draw may be at the term before the one
        it adopts: those draws can share a slot with another replica's, costing at most a round,
        and the next postponement draws at the current term.) The earliest slot starts at
        raftMinTimeout, as before, but is now the first follower's in 2 of 3 terms: a leader
        silent for 1.07 s is stood against more often than with uniform draws (the lease still
        holds its range until it expires)."""
        conf = self._SyncObj__conf
        term = getattr(self, "_SyncObj__raftCurrentTerm", 0)
        if self._rank[0] != term:
            self._rank = (term, election_rank(self._group_key, term, self._SyncObj__selfNode.id, self._members))
        slot = (conf.raftMaxTimeout - conf.raftMinTimeout) / len(self._members)
        return conf.raftMinTimeout + slot * (self._rank[1] + constants.election_slot_jitter * _so.random.random())

    def election_due(self) -> float:
        """When this follower's election timer runs out (pysyncobj's monotonic time; 0: at the
        next tick) unless its leader is heard from first."""
        return self._SyncObj__raftElectionDeadline

    def set_append_entries_period(self, seconds: float) -> None:
        """How often the leader sends appends (heartbeats): short while the range is busy, long
        while it idles (the node's own heartbeat then keeps followers from electing)."""
        self._SyncObj__conf.appendEntriesPeriod = seconds

    # --- quiescence: a caught-up leader sends no heartbeats of its own ------------------------
    @property
    def term(self) -> int:
        return self._SyncObj__raftCurrentTerm

    def caught_up(self) -> bool:
        """This replica leads, has committed and applied its whole log, and every connected
        follower has acknowledged all of it and was last sent an append proving the commit
        index: an append now would carry nothing but a heartbeat. (A follower not connected
        gets nothing anyway; once its link drops, this is false until it is sent an append.)"""
        if not self._isLeader():
            return False
        last = self._journal[-1][1]
        if self._SyncObj__raftCommitIndex != last or self._SyncObj__raftLastApplied != last:
            return False
        match, nxt, connected = self._SyncObj__raftMatchIndex, self._SyncObj__raftNextIndex, self._SyncObj__connectedNodes
        for node in self._SyncObj__otherNodes:
            if node in connected and (match.get(node) != last or nxt.get(node) != last + 1
                                      or self._sent_commit.get(node.id) != last):
                return False
        return True

    def unsent(self) -> bool:
        """This replica leads and owes a connected follower entries it has not sent: the
        follower answered that it lacks them (nextIndex moved back), or a snapshot ended short
        of the log's end. pysyncobj would wait for its next heartbeat to send them."""
        if not self._isLeader():
            return False
        after = self._journal[-1][1]
        connected = self._SyncObj__connectedNodes
        return any(v <= after for n, v in self._SyncObj__raftNextIndex.items() if n in connected)

    def hold_appends(self) -> None:
        """Send no periodic appends (heartbeats) until `resume_appends`: the node heartbeat keeps
        the followers from electing. Appends that carry something still go out at the end of the
        tick (`_checkCommandsToApply`): new entries, and the commit index after an apply."""
        self._SyncObj__newAppendEntriesTime = math.inf

    def resume_appends(self, now: bool = False) -> None:
        """Periodic appends again, the first at this group's next tick if they were held (or
        `now` regardless: a peer disputes our lead and must hear our term)."""
        if now or self._SyncObj__newAppendEntriesTime == math.inf:
            self._SyncObj__newAppendEntriesTime = 0.0

    def appends_held(self) -> bool:
        return self._SyncObj__newAppendEntriesTime == math.inf

    def heard_from(self, peer_id: str, at: float) -> None:
        """The follower's node was heard at `at` and does not dispute our lead: count it as a
        response for pysyncobj's leaderFallbackTimeout, which would otherwise depose a leader
        that sends no heartbeats (and so gets no replies) after 30 s."""
        times = self._SyncObj__lastResponseTime
        for node in self._SyncObj__otherNodes:
            if node.id == peer_id and times.get(node, 0.0) < at:
                times[node] = at

    def _SyncObj__onNodeDisconnected(self, node):
        # The link to the follower dropped (frames queued to it may be lost): until it is sent
        # an append again, the group is not caught up.
        self._sent_commit.pop(node.id, None)
        return SyncObj._SyncObj__onNodeDisconnected(self, node)

    def match_index(self) -> dict[str, int]:
        return {n.id: v for n, v in self._SyncObj__raftMatchIndex.items()}

    # --- proposals -----------------------------------------------------------------------
    @replicated
    def _apply_payload(self, payload):
        return self._apply(payload)

    def propose(self, op: str, args: Any, callback: ProposalCallback, *, command_id: bytes | None = None,
                timeout_s: float = constants.proposal_timeout_s, now: float | None = None,
                essential: bool = False) -> bytes:
        """Propose a command; `callback(outcome, result)` is called exactly once, on the tick
        thread, by `timeout_s` at the latest (then AMBIGUOUS). Returns the command id; propose
        again with the same id to retry an ambiguous command: it applies at most once.
        Raises ValueError for a command too large to replicate (nothing is proposed). An
        `essential` command (a range lease: tiny, and without it the range serves nothing) is
        proposed even while `refuse_entries` refuses others (a disk below its reserve)."""
        payload = encode_command(op, args, command_id)
        cid = decode_command(payload).id
        refused = "%s is closed" % self.name if self._closed else None if essential else self._refuse_entries()
        if refused is not None:
            callback(Outcome.NOT_COMMITTED, refused)
            return cid
        if not self._isLeader():
            self.proposals_as_follower += 1
        token = next(self._proposal_ids)
        deadline = (now if now is not None else _so.monotonicTime()) + timeout_s
        with self._pending_lock:
            self._pending[token] = (callback, cid)
            heapq.heappush(self._deadlines, (deadline, token))
        self._apply_payload(payload, callback=lambda res, err, token=token: self._on_result(token, res, err))
        return cid

    def _finish(self, token: int, outcome: Outcome, result: Any) -> None:
        with self._pending_lock:
            entry = self._pending.pop(token, None)
        if entry is None:
            return  # already answered (timed out, then pysyncobj answered late)
        try:
            entry[0](outcome, result)
        except Exception as exc:
            self._log_limit.log(logger, logging.ERROR, ("proposal callback raised", type(exc).__qualname__),
                                "%s: proposal callback raised", self.name, exc_info=True)

    def _on_result(self, token: int, res: Any, err: int) -> None:
        if err == FAIL_REASON.SUCCESS:
            self._finish(token, *saved_outcome(res))
        elif err in _LEAD_MOVED:
            leader = self.leader_id()
            self._finish(token, Outcome.NOT_COMMITTED,
                         not_leader("%s dropped the command (pysyncobj: %s): it no longer leads; retry"
                                    % (self.name, _fail_name(err)), int(leader) if leader and leader.isdigit() else None))
        elif err in _SURELY_NOT:
            self._finish(token, Outcome.NOT_COMMITTED, "pysyncobj: %s" % _fail_name(err))
        else:
            self._finish(token, Outcome.AMBIGUOUS, "pysyncobj: %s" % _fail_name(err))

    def _expire_proposals(self) -> None:
        now = _so.monotonicTime()
        expired = []
        with self._pending_lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, token = heapq.heappop(self._deadlines)
                if token in self._pending:
                    expired.append(token)
        for token in expired:
            self._finish(token, Outcome.AMBIGUOUS, "proposal timed out; it may still commit")

    # --- apply: an answer for a rejected command, a stop for anything else --------------------
    def _apply(self, payload) -> tuple[bool, Any]:
        index = self._SyncObj__raftLastApplied + 1
        command = None
        try:
            replay = index <= self._sm.applied_index()  # pysyncobj restarted below our state (snapshot load)
            try:
                command = decode_command(payload)
                found, result = self._sm.result_of(command.id)
                if found or replay:  # a retried proposal or a replay: the first outcome, apply nothing
                    if not replay:
                        self._sm.record_failed(index, None, "duplicate of an applied command")
                    return result if found else (False, "index %d replayed without a recorded outcome" % index)
                self.entries_applied += 1
                return (True, self._sm.apply(index, command))
            except CommandError as exc:
                error = exc.rejection().to_wire()
            self.apply_failures += 1
            self.entries_applied += 1
            self._sm.record_failed(index, command, error)
            return (False, error)
        except FailStop:
            raise
        except Exception as exc:
            raise FailStop("%s: apply of index %d failed: %s: %s" % (self.name, index, type(exc).__name__, exc)) from exc

    def _SyncObj__doApplyCommand(self, command):
        # pysyncobj's no-op and membership entries never reach _apply; they advance the stored
        # applied index all the same (continuity), before pysyncobj handles them.
        if command[:1] != _REGULAR_ENTRY:
            index = self._SyncObj__raftLastApplied + 1
            try:
                self._sm.record_failed(index, None, "raft entry of pysyncobj's own")
            except FailStop:
                raise
            except Exception as exc:
                raise FailStop("%s: recording raft entry %d failed: %s: %s"
                               % (self.name, index, type(exc).__name__, exc)) from exc
        return SyncObj._SyncObj__doApplyCommand(self, command)

    def _SyncObj__applyLogEntries(self):
        # One state-machine transaction for everything this tick applies (one SQLite commit
        # instead of one per command). Answers to proposers may leave before that commit: the
        # entries are committed in the Raft log, which replays them after a crash -- and a
        # commit that fails stops this replica (FailStop) before it does anything else, so a
        # later batch can never commit later indexes over the hole.
        batch = getattr(self._sm, "batch", None)
        if batch is None or self._SyncObj__raftCommitIndex <= self._SyncObj__raftLastApplied:
            return SyncObj._SyncObj__applyLogEntries(self)   # nothing to apply: no transaction
        try:
            with batch():
                return SyncObj._SyncObj__applyLogEntries(self)
        except FailStop:
            raise
        except Exception as exc:
            raise FailStop("%s: committing the applies up to index %d failed: %s: %s"
                           % (self.name, self._SyncObj__raftLastApplied, type(exc).__name__, exc)) from exc

    # --- tick: sync before the leader counts itself ----------------------------------------
    def _onTick(self, timeToWait=0.0):
        if self._closed:
            return None
        self._journal.sync()
        self._expire_proposals()
        if self._install is not None:
            self._poll_install()
        term = self._SyncObj__raftCurrentTerm
        result = SyncObj._onTick(self, timeToWait)
        if self._SyncObj__raftCurrentTerm > term:   # a tick raises the term only to stand for it
            self.elections_started += 1
        return result

    # --- appends: once per tick, all of the tick's entries ---------------------------------------
    def _checkCommandsToApply(self):
        """pysyncobj takes the proposals queued since the last tick into its log here. With
        appendEntriesUseBatch off it sends every follower an append after each one (n messages
        per follower for n proposals, and n answers back); on, it sends none until its
        appendEntriesPeriod runs out (pysyncobj's 50-100 ms batching latency). Here, batched:
        one append per follower at the end of the tick, carrying every new entry and the
        commit index, whenever the tick added entries or advanced the commit index past what
        the followers were last told (what the per-command mode sends on each apply)."""
        SyncObj._checkCommandsToApply(self)
        if not self._SyncObj__conf.appendEntriesUseBatch or not self._isLeader():
            return
        last = self._SyncObj__getCurrentLogIndex()
        commit = self._SyncObj__raftCommitIndex
        if last > self._appended_through or commit > self._commit_told:
            self._SyncObj__sendAppendEntries()

    def _SyncObj__sendAppendEntries(self):
        self._appended_through = self._SyncObj__getCurrentLogIndex()
        self._commit_told = self._SyncObj__raftCommitIndex
        return SyncObj._SyncObj__sendAppendEntries(self)

    # --- the four log-matching rules ---------------------------------------------------------
    def _SyncObj__onMessageReceived(self, node, message):
        if self._closed:
            return
        try:
            mtype = message.get("type") if isinstance(message, dict) else None
            if mtype == "append_entries":
                if "transmission" in message:
                    # Pickled chunks: our entries are always smaller than the batch size, so a
                    # peer sending these is not one of ours. Never unpickle them.
                    self._log_limit.log(logger, logging.WARNING, ("pickled transmission", str(node)),
                                        "%s: dropping pickled transmission from %s", self.name, node)
                    return
                if message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
                    self._receiving_from = node
                    if self._install is not None or (message.get("entries") and self._refuse_entries() is not None):
                        # A received snapshot is being staged and will replace our log, or our
                        # disk is nearly full: take only the heartbeat (leader, term, election
                        # timer); no entries, no new snapshot chunks, no reply. The leader learns
                        # where we are from the acknowledgement that follows the install, or from
                        # our answer to a later append.
                        message = {"type": "append_entries", "term": message["term"],
                                   "commit_index": min(message.get("commit_index", 0), self._SyncObj__raftCommitIndex)}
                    elif "prevLogIdx" in message:
                        message = self._prepare_append(message)
                    elif "commit_index" in message:
                        # A snapshot chunk proves nothing about our log: pysyncobj would commit
                        # our own unproved tail up to the leader's commit index (rule 4).
                        message = dict(message, commit_index=min(message["commit_index"], self._SyncObj__raftCommitIndex))
            elif mtype == "apply_command" and self._refuse_entries() is not None:
                if "request_id" in message:   # a follower forwarded a proposal: surely not appended
                    self._SyncObj__transport.send(node, {"type": "apply_command_response",
                                                         "request_id": message["request_id"],
                                                         "error": FAIL_REASON.REQUEST_DENIED})
                return
            elif mtype == "next_node_idx" and self._isLeader():
                before = self._SyncObj__raftNextIndex.get(node)
                SyncObj._SyncObj__onMessageReceived(self, node, message)
                after = self._SyncObj__raftNextIndex.get(node)
                if message.get("success") and before is not None and after is not None and after < before:
                    self._SyncObj__raftNextIndex[node] = before  # rule 1
                if message.get("snapshot_refused") and self._SyncObj__raftLastApplied - 1 > self._journal[0][1]:
                    # The follower cannot take our dump (e.g. a split-time dump whose descriptor
                    # still spans ranges the follower holds): make a fresh one, of what we have
                    # applied since, rather than send the same one forever.
                    self._log_limit.log(logger, logging.INFO, ("snapshot refused by", str(node)),
                                        "%s: %s refused our snapshot; making a fresh one", self.name, node)
                    self.forceLogCompaction()
                return
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            if self._install is not None and self._install.done.is_set():
                self._poll_install()  # staged at once (inline executor): install and acknowledge now
        except Exception:
            mtype = message.get("type") if isinstance(message, dict) else type(message)
            self._log_limit.log(logger, logging.ERROR, ("dropping message", str(node), str(mtype)),
                                "%s: dropping message %r from %s", self.name, mtype, node, exc_info=True)

    def _prepare_append(self, message: dict) -> dict:
        """Rewrite an append so pysyncobj's handler keeps rules 2-4.

        Entries we already hold with the same term are dropped from the message (so nothing we
        acknowledged is deleted); at the first conflict we truncate ourselves; the commit index
        is capped at the last index the message proves.
        """
        log = self._journal
        prev, prev_term = message["prevLogIdx"], message["prevLogTerm"]
        entries = message.get("entries", [])
        first, last = log[0][1], log[-1][1]
        if prev is None or prev < first or prev > last or log[prev - first][2] != prev_term:
            return message  # pysyncobj answers with a failure; it deletes nothing on that path
        k = 0
        while k < len(entries):
            idx, term = entries[k][1], entries[k][2]
            if idx > last:
                break
            if log[idx - first][2] != term:  # rule 2: truncate only at the first conflict
                if idx <= self._SyncObj__raftLastApplied:
                    self._log_limit.log(logger, logging.CRITICAL, "conflicts with applied",   # at every append
                                        "%s: leader conflicts with applied entry %d; refusing to truncate", self.name, idx)
                    return {"type": "ignored"}
                SyncObj._SyncObj__deleteEntriesFrom(self, idx)
                break
            k += 1
        proved = prev + len(entries)
        new = dict(message)
        if k:
            new["prevLogIdx"], new["prevLogTerm"] = entries[k - 1][1], entries[k - 1][2]
            new["entries"] = entries[k:]
        new["commit_index"] = min(message["commit_index"], proved)  # rule 4
        # rule 3: pysyncobj acknowledges the last new entry, or prevLogIdx: both equal `proved`.
        return new

    def _SyncObj__deleteEntriesFrom(self, fromIDx):
        # pysyncobj's append handler deletes everything after prevLogIdx whenever we hold more
        # than the message; _prepare_append has already truncated where Raft says to.
        return None

    def _SyncObj__tryLogCompaction(self):
        SyncObj._SyncObj__tryLogCompaction(self)
        # With the inline executor the dump is written by the call above, but pysyncobj collects
        # the result only at its next check; pysyncobj's own serializer then has no snapshot to
        # send and __sendAppendEntries spins for a whole appendEntriesPeriod sending empty
        # snapshot frames. Collect it now. (_SnapshotSerializer also keeps serving the previous
        # dump while a new one is being written, so a threaded export never causes that spin.)
        SyncObj._SyncObj__tryLogCompaction(self)

    def _SyncObj__deleteEntriesTo(self, toIDx):
        try:
            fsync_dir(os.path.dirname(os.path.abspath(self._dump_path)))  # the dump's rename is durable first
        except OSError as exc:
            raise FailStop("%s: syncing the directory of %s failed: %s" % (self.name, self._dump_path, exc)) from exc
        return SyncObj._SyncObj__deleteEntriesTo(self, toIDx)

    def _SyncObj__sendNextNodeIdx(self, node, reset=False, nextNodeIdx=None, success=False):
        # After a snapshot install pysyncobj acknowledges the end of our log; only the
        # snapshot's last index is proved by that message (rule 3).
        if success and nextNodeIdx is None and self._snapshot_refused is not None:
            # pysyncobj acknowledges a snapshot it failed to load; say it failed instead, and
            # the leader sends it again later.
            self._log_limit.log(logger, logging.INFO, "snapshot not installed",
                                "%s: snapshot not installed: %s", self.name, self._snapshot_refused)
            self._snapshot_refused, self._snapshot_ack = None, None
            return self._send_refusal(node)
        elif success and nextNodeIdx is None and self._snapshot_ack is not None:
            nextNodeIdx, self._snapshot_ack = self._snapshot_ack, None
        return SyncObj._SyncObj__sendNextNodeIdx(self, node, reset, nextNodeIdx, success)

    def _send_refusal(self, node):
        """Tell the leader its snapshot was not installed (a failure, as pysyncobj sends, plus a
        flag our leaders read: see the next_node_idx branch of _SyncObj__onMessageReceived)."""
        return self._SyncObj__transport.send(node, {
            "type": "next_node_idx", "next_node_idx": self._journal[-1][1] + 1, "reset": True,
            "success": False, "snapshot_refused": True})

    def _SyncObj__loadDumpFile(self, clearJournal):
        if clearJournal:
            # pysyncobj loads a received snapshot this way; _SnapshotSerializer never lets it
            # (received snapshots go through _poll_install), but keep the rules if it ever does.
            return self._install_received(_read_snapshot_header(self._dump_path), None, None)
        # Restart: if we crashed after writing a dump but before compacting the journal,
        # pysyncobj would see journal[0] != dump and clear the whole journal, acknowledged
        # entries after the dump included. Compact up to the dump first.
        try:
            e1, e0 = _read_snapshot_header(self._dump_path)[:2]
            first = self._journal[0][1]
            pos = e0[1] - first
            if 0 < pos < len(self._journal) and self._journal[pos][2] == e0[2]:
                self._journal.deleteEntriesTo(pos)
                self._journal.sync()
        except Exception:
            logger.exception("%s: reading dump header %s", self.name, self._dump_path)
        result = SyncObj._SyncObj__loadDumpFile(self, clearJournal)
        self._check_fail_stop()
        return result

    def _install_received(self, header, staged, recv_path: str | None):
        """A leader sent us its snapshot (`header`; its data staged in `staged`, or read from the
        file). Raft (section 7): if our log holds the snapshot's last entry, keep the entries
        after it -- we may have acknowledged them; if we are already past the snapshot, ignore
        it; only otherwise replace the log. The received file becomes our dump (durably) before
        the journal changes."""
        e1, e0, _ = header
        self._snapshot_ack = e1[1] + 1
        self._snapshot_refused = None
        log = self._journal
        first, last = log[0][1], log[-1][1]
        if first >= e1[1]:
            return None  # we compacted past it: our state already includes it
        if recv_path is not None:
            try:
                os.replace(recv_path, self._dump_path)
                fsync_dir(os.path.dirname(os.path.abspath(self._dump_path)))
            except OSError as exc:
                raise FailStop("%s: keeping the received snapshot as %s failed: %s" % (self.name, self._dump_path, exc)) from exc
        self._staged = staged
        try:
            if e1[1] <= last and log[e1[1] - first][2] == e1[2]:
                if e0[1] > first:
                    log.deleteEntriesTo(e0[1] - first)
                result = SyncObj._SyncObj__loadDumpFile(self, False)
            else:
                result = SyncObj._SyncObj__loadDumpFile(self, True)
        finally:
            self._staged = None
        self._check_fail_stop()
        if self._snapshot_refused is None:
            self.snapshots_installed += 1
            logger.info("%s: installed a snapshot at index %d", self.name, e1[1])
        return result

    # --- snapshots off the tick thread -------------------------------------------------------
    def snapshot_busy(self) -> bool:
        """A snapshot is being written or a received one staged (for tests and status)."""
        return self._export is not None or self._install is not None

    def _job_finished(self, job: _Job) -> None:
        job.done.set()
        if self._on_job_done is not None:
            try:
                self._on_job_done()
            except Exception:
                logger.exception("%s: snapshot job notification raised", self.name)

    def _start_export(self, header, index_id: int) -> None:
        """pysyncobj asks for a snapshot at header's e1 (on the tick thread, every apply up to
        it committed): pin the state now, write it with the executor."""
        if self._export is not None or self._install is not None:
            return  # checkSerializing says NOT_SERIALIZING; pysyncobj asks again next tick
        if self._refuse_entries() is not None:
            return  # below the disk reserve a dump (as large as the range) would fail; ask again later
        e1 = header[0]
        job = _Job(index_id)
        self._export = job
        try:
            writer_of = getattr(self._sm, "snapshot_writer", None)
            if writer_of is not None:
                write, executor = writer_of(e1[1]), self._executor
            else:  # a state machine that can only write its current state: write it now
                write, executor = (lambda f: self._sm.write_snapshot(f, e1[1])), run_inline
        except Exception as exc:
            self._log_limit.log(logger, logging.ERROR, "snapshot pinning failed",
                                "%s: pinning a snapshot at %d failed", self.name, e1[1], exc_info=True)
            job.error = str(exc) or type(exc).__name__
            job.done.set()
            return
        executor(lambda: self._export_job(job, header, write))

    def _export_job(self, job: _Job, header, write) -> None:
        try:
            self._write_snapshot(self._dump_path + ".tmp", header, write)
        except Exception as exc:
            self._log_limit.log(logger, logging.ERROR, "snapshot writing failed",
                                "%s: writing a snapshot failed", self.name, exc_info=True)
            job.error = str(exc) or type(exc).__name__
        finally:
            self._job_finished(job)

    def _export_state(self):
        """For _SnapshotSerializer.checkSerializing, on the tick thread. The finished dump
        replaces the old one here, on the tick thread, at the moment pysyncobj compacts the log
        to it: the dump being sent always matches the log's first entries."""
        job = self._export
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if not job.done.is_set():
            return SERIALIZER_STATE.SERIALIZING, job.index
        self._export = None
        if job.error is None:
            try:
                os.replace(self._dump_path + ".tmp", self._dump_path)
            except OSError as exc:
                job.error = str(exc)
        if job.error is not None:
            self._log_limit.log(logger, logging.WARNING, "snapshot failed",   # pysyncobj tries again
                                "%s: snapshot at %d failed: %s", self.name, job.index, job.error)
            return SERIALIZER_STATE.FAILED, job.index
        self.snapshots_created += 1
        return SERIALIZER_STATE.SUCCESS, job.index

    def _received_snapshot(self, recv_path: str) -> None:
        """The last chunk of a snapshot arrived (tick thread): stage it with the executor."""
        job = _Job(0, self._receiving_from)
        self._install = job
        stage = getattr(self._sm, "stage_snapshot", None)
        self._executor(lambda: self._stage_job(job, recv_path, stage)) if stage is not None \
            else self._stage_job(job, recv_path, None)

    def _stage_job(self, job: _Job, recv_path: str, stage) -> None:
        try:
            header = _read_snapshot_header(recv_path)
            job.index = header[0][1]
            staged = None
            with open(recv_path, "rb") as f:
                os.fsync(f.fileno())  # received without fsync; it becomes our dump
                if stage is not None:
                    _skip_snapshot_header(f)
                    staged = stage(f, job.index)
            job.result = (header, staged)
        except Exception as exc:
            job.error = str(exc) or type(exc).__name__
        finally:
            self._job_finished(job)

    def _poll_install(self) -> None:
        """On the tick thread: install a staged snapshot and acknowledge it, once our own
        export (if any) is collected -- the two never touch the dump at the same time."""
        job = self._install
        if job is None or not job.done.is_set() or self._export is not None:
            return
        self._install = None
        recv_path = self._SyncObj__serializer.recv_path
        header, staged = job.result if job.result is not None else (None, None)
        refused = job.error
        if refused is None and self._isLeader():
            refused = "this replica became leader while staging it"
        check = getattr(self._sm, "check_staged", None)
        if refused is None and staged is not None and check is not None:
            try:
                check(staged)
            except Exception as exc:
                refused = str(exc) or type(exc).__name__
        node = self._getLeader() or job.node
        if refused is not None:
            self._log_limit.log(logger, logging.INFO, "snapshot not installed",   # the leader sends it again
                                "%s: snapshot not installed: %s", self.name, refused)
            self._discard_staged(staged)
            with contextlib.suppress(OSError):
                os.unlink(recv_path)
            if node is not None:
                self._send_refusal(node)
            return
        try:
            self._install_received(header, staged, recv_path)
        except Exception:
            self._log_limit.log(logger, logging.ERROR, "snapshot install failed",
                                "%s: installing a snapshot failed", self.name, exc_info=True)
            self._snapshot_refused = "install failed"
        finally:
            self._discard_staged(staged)
            with contextlib.suppress(OSError):
                os.unlink(recv_path)   # still there if it was not needed (we were past it)
        if node is not None:
            self._SyncObj__sendNextNodeIdx(node, success=True)

    def _discard_staged(self, staged) -> None:
        discard = getattr(self._sm, "discard_staged", None)
        if staged is not None and discard is not None:
            try:
                discard(staged)
            except Exception:
                self._log_limit.log(logger, logging.ERROR, "staged snapshot discard failed",
                                    "%s: discarding a staged snapshot", self.name, exc_info=True)

    # --- snapshots: our serializer, never fork -----------------------------------------------
    def _write_snapshot(self, path: str, data, write) -> None:
        e1, e0, cluster = data
        header = msgpack.packb([list(e1), list(e0), sorted(n.id for n in cluster)], use_bin_type=True)
        with open(path, "wb") as f:
            f.write(_SNAPSHOT_MAGIC + _LEN.pack(len(header)) + header)
            write(f)
            f.flush()
            os.fsync(f.fileno())

    def _read_snapshot(self, path: str):
        # pysyncobj calls this inside a bare `except:` that swallows everything: remember a
        # refusal so the ack says "failed", and a storage error so _check_fail_stop re-raises it.
        try:
            e1, e0, cluster = _read_snapshot_header(path)
            staged, self._staged = self._staged, None
            if self._sm.applied_index() < e1[1]:
                if staged is not None:
                    self._sm.install_staged(staged, e1[1])
                else:
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())  # a received snapshot was written without fsync
                        _skip_snapshot_header(f)
                        self._sm.read_snapshot(f, e1[1])
            return (e1, e0, cluster)
        except _SNAPSHOT_REFUSALS as exc:
            self._snapshot_refused = str(exc) or type(exc).__name__
            raise
        except FailStop as exc:
            self._fail_stop = exc
            raise
        except Exception as exc:
            self._fail_stop = FailStop("%s: installing the snapshot %s failed: %s: %s"
                                       % (self.name, path, type(exc).__name__, exc))
            raise self._fail_stop from exc

    def _check_fail_stop(self) -> None:
        """Re-raise a FailStop that pysyncobj's bare `except:` swallowed."""
        if self._fail_stop is not None:
            raise self._fail_stop


def _skip_snapshot_header(f) -> None:
    f.seek(len(_SNAPSHOT_MAGIC))
    (hlen,) = _LEN.unpack(f.read(_LEN.size))
    f.seek(hlen, os.SEEK_CUR)


def _read_snapshot_header(path: str):
    with open(path, "rb") as f:
        if f.read(len(_SNAPSHOT_MAGIC)) != _SNAPSHOT_MAGIC:
            raise ValueError("%s is not a raftstore snapshot" % path)
        (hlen,) = _LEN.unpack(f.read(_LEN.size))
        e1, e0, cluster = msgpack.unpackb(f.read(hlen), raw=False)
    return (bytes(e1[0]), int(e1[1]), int(e1[2])), (bytes(e0[0]), int(e0[1]), int(e0[2])), list(cluster)


class _NoNotifier:
    """Stands in for pysyncobj's PipeNotifier once its pipe is closed (RaftGroup.close)."""

    def notify(self) -> None:
        pass


class _SnapshotSerializer(Serializer):
    """pysyncobj's Serializer with the snapshot work moved off the tick thread (no fork, ever).

    pysyncobj calls serialize() from __tryLogCompaction and, given a custom serializer, runs it
    to the end before returning -- the whole range exported on the tick thread. Here serialize()
    only pins the state (RaftGroup._start_export) and hands the writing to the group's executor;
    checkSerializing() says SERIALIZING until the dump is written and synced, so pysyncobj
    compacts the log only after that. Meanwhile getTransmissionData keeps serving the previous
    dump, which still matches the log's first entries (pysyncobj's own would send nothing and
    make __sendAppendEntries spin). When the new dump replaces it, transmissions in flight start
    over from the new file, as pysyncobj's own do.
    A received snapshot is written to a file of its own (`recv_path`, not the dump); on its last
    chunk the group stages it with the executor and installs it later on the tick thread
    (RaftGroup._poll_install). pysyncobj is told nothing completed, so it neither loads nor
    acknowledges it itself.
    """

    def __init__(self, group: RaftGroup, file_name: str, batch_bytes: int, deserializer) -> None:
        super().__init__(file_name, batch_bytes, False, None, deserializer, None)
        self._group = group
        self.recv_path = file_name + ".recv"
        self._incoming = None
        self._sending: set = set()
        assert isinstance(self._Serializer__transmissions, dict), "pysyncobj internals changed: Serializer"

    def serialize(self, data, id):
        self._group._start_export(data[1:], id)

    def checkSerializing(self):
        state, index = self._group._export_state()
        if state == SERIALIZER_STATE.SUCCESS:
            for tid in list(self._sending):
                self.cancelTransmisstion(tid)
        return state, index

    def getTransmissionData(self, transmissionID):
        self._sending.add(transmissionID)
        data = super().getTransmissionData(transmissionID)
        if data and data[2]:
            self._group.snapshots_sent += 1
        if not data or data[2]:
            self._sending.discard(transmissionID)
        return data

    def cancelTransmisstion(self, id):
        self._sending.discard(id)
        transmission = self._Serializer__transmissions.get(id)
        if transmission is not None and transmission.get("file") is not None:
            transmission["file"].close()
        super().cancelTransmisstion(id)

    def close(self) -> None:
        """Close the files of snapshots being sent and of one being received."""
        for tid in list(self._Serializer__transmissions):
            self.cancelTransmisstion(tid)
        if self._incoming is not None:
            self._incoming.close()
            self._incoming = None

    def setTransmissionData(self, data):
        if data is None:
            return False
        chunk, first, last = data
        tmp = self.recv_path + ".tmp"
        try:
            if first:
                if self._incoming is not None:
                    self._incoming.close()
                self._incoming = open(tmp, "wb")
            elif self._incoming is None:
                return False
            self._incoming.write(chunk)
            if last:
                self._incoming.close()
                self._incoming = None
                os.replace(tmp, self.recv_path)
                self._group._received_snapshot(self.recv_path)
        except OSError:
            self._group._log_limit.log(logger, logging.ERROR, "received snapshot writing failed",   # at every chunk
                                       "%s: writing a received snapshot", self._group.name, exc_info=True)
            if self._incoming is not None:
                self._incoming.close()
            self._incoming = None
        return False


def _fail_name(err: int) -> str:
    for name in dir(FAIL_REASON):
        if not name.startswith("_") and getattr(FAIL_REASON, name) == err:
            return name
    return str(err)
