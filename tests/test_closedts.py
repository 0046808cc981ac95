"""Closed timestamps and follower reads (raftstore.kvserver.closedts, Store._serve_stale_read), each
rule alone, then all together under a property test: a leaseholder store and a follower store,
each on its own SQLite file, one log the test replicates to the follower at its own pace, side
transport frames delivered when the test says, a clock the test moves.

The property: a follower read at `ts` that is answered returns exactly what the whole log (every
write the leaseholder ever proposed, applied at the follower or not) holds at `ts`. Each rule is
shown to catch a build without it (the `broken` tests)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftstore.kvserver import closedts
from raftstore.kvserver.batch import BATCH_OP, BOUNDED_STALENESS, EXACT, BatchRequest, Get, Header, Put
from raftstore.kvserver.closedts import CLOSED_BEHIND, Receiver, Sender
from raftstore.kvserver.lease import Lease
from raftstore.kvserver.ranges import FIRST_DATA_RANGE_ID, bootstrap_descriptors, local_desc_key
from raftstore.kvserver.replica import RangeReplica, desc_ts
from raftstore.kvserver.store import Store, StoreConfig
from raftstore.raft.commands import Command, CommandError, Outcome
from raftstore.storage.mvcc import MVCCStore
from broken_builds import ignore_what_is_closed, trust_the_gateway
from fake_group import FakeGroup

R = FIRST_DATA_RANGE_ID
SEC = 1_000_000_000
MS = 1_000_000
T0 = 1_000 * SEC
LAG = 3 * SEC


# --- the side transport's two ends, alone --------------------------------------------------------

def test_a_frame_carries_only_what_changed_and_a_range_that_leaves():
    s = Sender()
    assert s.frame((5, 0), {2: (1, 10), 3: (1, 7)}) == ([2, 1, 10, 3, 1, 7], [])
    assert s.frame((6, 0), {2: (1, 10), 3: (1, 7)}) == ([], [])          # idle: nothing per range
    assert s.frame((4, 0), {2: (1, 12), 3: None}) == ([2, 1, 12], [3])  # written; left the group
    assert s.ts == (6, 0) and s.members == {2: (1, 12)} and s.seq == 3  # never backwards
    assert s.full() == [2, 1, 12]


def test_a_follower_adopts_a_stream_only_through_an_applied_index_under_the_named_lease():
    r, folded = Receiver(), []
    fold = lambda *entry: folded.append(entry)   # noqa: E731
    r.on_frame(1, 1, True, (100, 0), [2, 4, 10], [], fold)
    assert r.closed(1, 2, 4, 9) == closedts.ZERO          # not applied through index 10 yet
    assert r.closed(1, 2, 5, 10) == closedts.ZERO         # another lease
    assert r.closed(1, 2, 4, 10) == (100, 0) and r.closed(2, 2, 4, 10) == closedts.ZERO
    r.on_frame(1, 2, False, (150, 0), [2, 4, 12], [], fold)
    assert folded == [(2, 4, 10, (100, 0))]               # the replica keeps what it had
    assert r.closed(1, 2, 4, 11) == closedts.ZERO and r.closed(1, 2, 4, 12) == (150, 0)
    r.on_frame(1, 4, False, (200, 0), [], [], fold)       # frame 3 went missing
    assert r.gaps == 1 and r.closed(1, 2, 4, 12) == (150, 0)
    r.on_frame(1, 5, False, (250, 0), [], [], fold)       # nothing adopted until a full frame
    assert r.closed(1, 2, 4, 12) == (150, 0)
    r.on_frame(1, 5, True, (260, 0), [2, 4, 12], [], fold)
    assert r.closed(1, 2, 4, 12) == (260, 0)


def test_a_malformed_closed_frame_is_named():
    assert closedts.frame_problem([8, 1, True, [1, 0], [], []]) is None
    assert "expected 6 or 7" in closedts.frame_problem([8, 1, True])
    assert "full a bool" in closedts.frame_problem([8, 1, 1, [1, 0], [], []])
    assert "ts must be" in closedts.frame_problem([8, 1, True, [1], [], []])
    assert "triples" in closedts.frame_problem([8, 1, True, [1, 0], [1, 2], []])
    assert "triples" in closedts.frame_problem([8, 1, True, [1, 0], [], ["x"]])


# --- a leaseholder and a follower ----------------------------------------------------------------

class LogGroup(FakeGroup):
    """The leaseholder's group: a proposal is appended to the shared log and applied at once."""

    def __init__(self, pair: "Pair") -> None:
        super().__init__()
        self.pair = pair
        self.queued_ = 0

    def propose(self, op, args, callback, command_id=None, essential=False):
        self.pair.commit(op, args, callback, command_id or os.urandom(16))
        return command_id

    def last_log_index(self) -> int:
        return self.pair.base + len(self.pair.log)

    def queued(self) -> int:
        return self.queued_


class Pair:
    """Node 1 leads range R and holds its lease; node 2's replica applies the log when told."""

    def __init__(self, tmp_path) -> None:
        self.wall = T0
        self.log: list[Command] = []
        self.base = 1                      # index 1: the lease, applied on both
        self.commits: list[tuple[bytes, tuple[int, int], bytes]] = []   # (key, commit ts, value): every write
        self.lease = Lease(1, 1, (T0, 0), (T0 + 3600 * SEC, 0))
        self.leader = self._store(tmp_path, 1, LogGroup(self))
        self.follower = self._store(tmp_path, 2, FakeGroup(leader=False, leader_id="1"))
        self.answers: list = []

    def _store(self, tmp_path, node_id: int, group) -> Store:
        mvcc = MVCCStore(os.path.join(tmp_path, "n%d.sqlite" % node_id))
        descs = bootstrap_descriptors([1, 2, 3])
        mvcc.write_local([(local_desc_key(d.range_id), desc_ts(d), d.encode()) for d in descs])
        store = Store(StoreConfig(node_id=node_id, replicas=[1, 2, 3], raft_dir=str(tmp_path)), mvcc,
                      open_journal=None, transport_class=None, clock=lambda: 100.0, now_ts=lambda: [self.wall, 0],
                      lease_ns=3600 * SEC)
        for d in descs:
            store.replicas[d.range_id] = RangeReplica(mvcc, d.range_id, on_lease=store._on_lease)
            store.groups[d.range_id] = FakeGroup(leader=node_id == 1, leader_id="1")
        store.groups[R] = group
        rep = store.replicas[R]
        with rep.batch():
            rep.apply(1, Command(b"L" * 16, "lease", dict(Store._lease_args(None, self.lease), ts=[T0, 0])))
        return store

    def commit(self, op: str, args: dict, callback, cid: bytes) -> None:
        command = Command(cid, op, args)
        self.log.append(command)
        rep = self.leader.replicas[R]
        with rep.batch():
            try:
                result = rep.apply(self.base + len(self.log), command)
            except CommandError as exc:
                rep.record_failed(self.base + len(self.log), command, exc.rejection().to_wire())
                callback(Outcome.REJECTED, exc.rejection())
                return
        if op == BATCH_OP and result.get("ok", True):
            request = BatchRequest.from_wire(args)
            for put in request.ops:
                self.commits.append((put.key, tuple(result["ts"]), getattr(put, "value", None)))
        callback(Outcome.COMMITTED, result)

    def write(self, key: bytes, value: bytes, at: tuple[int, int] | None = None) -> tuple[int, int]:
        got = []
        self.leader.evaluate_and_propose(R, BATCH_OP, BatchRequest(Header(ts=at), (Put(key, value),)).to_wire(),
                                         lambda o, r: got.append((o, r)))
        [(outcome, result)] = got
        assert outcome is Outcome.COMMITTED, result
        return tuple(result["ts"])

    def replicate(self, through: int | None = None) -> None:
        """The follower applies the log through index `through` (None: all of it)."""
        rep = self.follower.replicas[R]
        last = self.base + len(self.log) if through is None else through
        with rep.batch():
            for index in range(rep.applied_index() + 1, last + 1):
                command = self.log[index - self.base - 1]
                try:
                    rep.apply(index, command)
                except CommandError as exc:
                    rep.record_failed(index, command, exc.rejection().to_wire())
        self.follower.run_deferred_reads()

    def side_transport(self, full: bool = False) -> None:
        seq, ts, updates, removed = self.leader.side_transport()
        if full:
            updates, removed = self.leader.closed_sender.full(), []
        self.follower.on_closed_frame(1, seq, full, list(ts), updates, removed)

    def read(self, key: bytes, ts: tuple[int, int] | None = None, *, min_ts=None, store: Store | None = None):
        header = (Header(consistency=EXACT, read_ts=ts) if ts is not None
                  else Header(consistency=BOUNDED_STALENESS, min_ts=min_ts))
        got = []
        (store or self.follower).evaluate_and_propose(R, BATCH_OP, BatchRequest(header, (Get(key),)).to_wire(),
                                                      lambda o, r: got.append((o, r)))
        [answer] = got
        return answer

    def expected(self, key: bytes, ts: tuple[int, int]) -> bytes | None:
        """What the whole log holds for key at ts."""
        found = [(t, v) for k, t, v in self.commits if k == key and t <= ts]
        return max(found)[1] if found else None

    def close(self) -> None:
        self.leader.mvcc.close()
        self.follower.mvcc.close()


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    yield p
    p.close()


def test_a_write_closes_its_range_behind_the_clock_and_is_above_what_is_closed(pair):
    pair.wall = T0 + 10 * SEC
    ts = pair.write(b"a", b"1")
    [command] = pair.log
    assert command.args["closed"] == [T0 + 10 * SEC - LAG, 0] and ts > (T0 + 10 * SEC - LAG, 0)
    pair.replicate()
    assert pair.follower.closed_ts(R) == (T0 + 7 * SEC, 0)


def _old_write_after_a_follower_read(pair) -> tuple:
    """A follower serves a read at T0+15 s (closed through T0+17 s); then a write arrives with
    a gateway timestamp of T0+12 s. Returns (what the read answered, what the log holds there)."""
    pair.wall = T0 + 10 * SEC
    pair.write(b"a", b"1")
    pair.side_transport(full=True)
    pair.wall = T0 + 20 * SEC
    pair.side_transport()
    pair.replicate()
    outcome, result = pair.read(b"a", (T0 + 15 * SEC, 0))
    assert outcome is Outcome.COMMITTED
    pair.write(b"a", b"2", at=(T0 + 12 * SEC, 0))
    return result["responses"][0]["value"], pair.expected(b"a", (T0 + 15 * SEC, 0))


def test_a_write_proposed_below_what_is_closed_is_pushed_above_it(pair, monkeypatch):
    trust_the_gateway(monkeypatch)   # even then: the closed timestamp is the write's floor
    served, logged = _old_write_after_a_follower_read(pair)
    assert served == logged == b"1"


def test_broken_a_leaseholder_that_writes_below_what_it_closed_is_caught(pair, monkeypatch):
    trust_the_gateway(monkeypatch)
    ignore_what_is_closed(monkeypatch)
    served, logged = _old_write_after_a_follower_read(pair)
    assert served == b"1" and logged == b"2"   # the read above answered what the log no longer holds


def test_the_side_transport_closes_an_idle_range_once_the_follower_applied_through_its_index(pair):
    pair.wall = T0 + 10 * SEC
    pair.write(b"a", b"1")
    pair.side_transport(full=True)
    pair.wall = T0 + 20 * SEC
    pair.side_transport()                               # idle since: one frame closes it further
    assert pair.follower.closed_ts(R) == (0, 0)         # nothing applied yet
    pair.replicate()
    assert pair.follower.closed_ts(R) == (T0 + 17 * SEC, 0)
    pair.write(b"a", b"2")                              # its index moves: the next frame says so
    pair.wall = T0 + 21 * SEC
    pair.side_transport()
    assert pair.follower.closed_ts(R) == (T0 + 17 * SEC, 0)   # kept (folded), not past the new write
    pair.replicate()
    assert pair.follower.closed_ts(R) == (T0 + 18 * SEC, 0)


def test_broken_a_follower_that_adopts_before_applying_through_the_index_misses_a_write(pair, monkeypatch):
    real_entry = Receiver.entry
    monkeypatch.setattr(Receiver, "entry", lambda self, holder, rid, seq:   # any index will do
                        (lambda e: None if e is None else (e[0], 0))(real_entry(self, holder, rid, seq)))
    pair.wall = T0 + 10 * SEC
    pair.side_transport(full=True)
    ts = pair.write(b"a", b"1")
    pair.wall = T0 + 20 * SEC
    pair.side_transport()
    outcome, result = pair.read(b"a", ts)               # the follower has not applied the write
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] is None   # missed


def test_a_follower_serves_at_or_below_its_closed_timestamp_and_refuses_above(pair):
    pair.wall = T0 + 10 * SEC
    ts = pair.write(b"a", b"1")
    pair.replicate()
    closed = pair.follower.closed_ts(R)
    outcome, result = pair.read(b"a", closed)
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] is None and result["read_ts"] == list(closed)
    outcome, result = pair.read(b"a", ts)
    assert outcome is Outcome.REJECTED and result.code == CLOSED_BEHIND and result.details["closed"] == list(closed)
    outcome, result = pair.read(b"a", ts, store=pair.leader)   # the leaseholder serves any
    assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == b"1"


def test_broken_a_follower_that_ignores_its_closed_timestamp_is_caught(pair, monkeypatch):
    monkeypatch.setattr(Store, "closed_ts", lambda self, rid: (1 << 62, 0))
    pair.wall = T0 + 10 * SEC
    ts = pair.write(b"a", b"1")
    outcome, result = pair.read(b"a", ts)
    assert outcome is Outcome.COMMITTED and pair.expected(b"a", ts) != result["responses"][0]["value"]


def test_a_bounded_read_reads_at_the_replicas_closed_timestamp_if_fresh_enough(pair):
    pair.wall = T0 + 10 * SEC
    pair.write(b"a", b"1")
    pair.wall = T0 + 20 * SEC
    pair.write(b"a", b"2")
    pair.replicate()
    closed = pair.follower.closed_ts(R)
    outcome, result = pair.read(b"a", min_ts=(closed[0] - SEC, 0))
    assert outcome is Outcome.COMMITTED and result["read_ts"] == list(closed)
    assert result["responses"][0]["value"] == pair.expected(b"a", closed) == b"1"
    outcome, result = pair.read(b"a", min_ts=(closed[0] + 1, 0))
    assert outcome is Outcome.REJECTED and result.code == CLOSED_BEHIND


def test_a_closed_timestamp_never_passes_the_lease_expiration(pair):
    pair.lease = None
    rep = pair.leader.replicas[R]
    short = Lease(1, 1, (T0, 0), (T0 + 5 * SEC, 0))
    pair.leader._on_lease(R, short)
    rep.lease = short
    pair.wall = T0 + 4 * SEC
    pair.side_transport(full=True)
    assert pair.leader.closed_sender.members                 # in the group while usable
    pair.wall = T0 + 9 * SEC                                 # past it: the range leaves the group
    pair.side_transport()
    assert not pair.leader.closed_sender.members
    assert max(pair.leader.closed_floor(R), pair.leader.closed_sender.ts if R in pair.leader.closed_sender.members
               else (0, 0)) <= short.expiration


# --- everything together -------------------------------------------------------------------------

ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.sampled_from([b"a", b"b"]), st.integers(-8, 1)),   # gateway ts: now + n s
    st.tuples(st.just("tick"), st.sampled_from([5, 200, 1000, 2500, 4000])),          # ms
    st.tuples(st.just("replicate"), st.integers(0, 3)),                                # entries behind the end
    st.tuples(st.just("side"), st.sampled_from(["sent", "lost", "full"])),             # a frame (full: a reconnection)
    st.tuples(st.just("read"), st.sampled_from([b"a", b"b"]), st.integers(-12_000, 0)),  # ms from now
    st.tuples(st.just("bounded"), st.sampled_from([b"a", b"b"]), st.integers(1, 12_000)),
    st.tuples(st.just("near"), st.integers(1, 3), st.integers(-2, 2)),   # at a recent write's ts (ms off)
), min_size=20, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_a_follower_read_answers_exactly_what_the_whole_log_holds_at_its_timestamp(tmp_path_factory, actions):
    p = Pair(tmp_path_factory.mktemp("pair"))
    try:
        p.side_transport(full=True)
        promised = (0, 0)          # the most the leaseholder has closed so far
        for action in actions:
            kind = action[0]
            if kind == "write":
                before = p.leader.closed_floor(R)
                ts = p.write(action[1], b"v%d" % len(p.log), at=(p.wall + action[2] * SEC, 0))
                assert ts > before                      # no write at or below what is closed
            elif kind == "tick":
                p.wall += action[1] * MS
            elif kind == "replicate":
                p.replicate(max(p.follower.replicas[R].applied_index(), p.base + len(p.log) - action[1]))
            elif kind == "side":
                if action[1] == "full":
                    p.side_transport(full=True)
                else:
                    seq, ts, updates, removed = p.leader.side_transport()
                    if action[1] == "sent":
                        p.follower.on_closed_frame(1, seq, False, list(ts), updates, removed)
            else:
                if kind == "near":                      # at (or about) a recent write's timestamp
                    if len(p.commits) < action[1]:
                        continue
                    key, at, _ = p.commits[-action[1]]
                    outcome, result = p.read(key, (max(0, at[0] + action[2] * MS), 0))
                elif kind == "read":
                    key = action[1]
                    outcome, result = p.read(key, (p.wall + action[2] * MS, 0))
                else:
                    key = action[1]
                    outcome, result = p.read(key, min_ts=(p.wall - action[2] * MS, 0))
                if outcome is Outcome.COMMITTED:
                    at = tuple(result["read_ts"])
                    assert result["responses"][0]["value"] == p.expected(key, at), (at, p.commits)
                else:
                    assert result.code == CLOSED_BEHIND
            promised = max(promised, p.leader.closed_floor(R))
            assert p.follower.closed_ts(R) <= promised  # a follower adopts only what was promised
        # Caught up and told: the follower serves at what it closed.
        p.replicate()
        p.side_transport(full=True)
        closed = p.follower.closed_ts(R)
        outcome, result = p.read(b"a", closed)
        assert outcome is Outcome.COMMITTED and result["responses"][0]["value"] == p.expected(b"a", closed)
    finally:
        p.close()


# --- what followers tell the leaseholder: their reads (it keeps the lease), their running reads (GC) --

def _extensions(pair) -> list:
    return [c for c in pair.log if c.op == "lease"]


def _near_expiration(pair) -> tuple[int, int]:
    """The leader's clock with a quarter of the lease left: a lease in use is extended now."""
    pair.wall = pair.lease.expiration[0] - 900 * SEC
    return (pair.wall, 0)


def test_a_follower_read_keeps_the_leaseholders_lease_though_nothing_reads_there(pair):
    _lease_kept_for_followers(pair)


def test_broken_a_leaseholder_deaf_to_its_followers_reads_is_caught(pair, monkeypatch):
    monkeypatch.setattr(Store, "_followers_read", lambda self, rid: None)
    with pytest.raises(AssertionError):
        _lease_kept_for_followers(pair)


def _lease_kept_for_followers(pair) -> None:
    pair.wall = T0 + 10 * SEC
    pair.write(b"a", b"1")
    pair.replicate()
    assert pair.follower.side_extra() == {"wanted": [], "protect": None}
    assert pair.read(b"a", (T0 + 5 * SEC, 0))[0] is Outcome.COMMITTED       # served by the follower
    extra = pair.follower.side_extra()
    assert extra["wanted"] == [R] and pair.follower.side_extra()["wanted"] == []   # told once per read
    # Nothing reads at the leaseholder: near its expiration it lets the lease lapse...
    now = _near_expiration(pair)
    pair.leader._lease_upkeep(R, pair.leader.groups[R], now)
    assert _extensions(pair) == []
    # ...until a follower says it reads the range: then the lease is extended.
    pair.leader.on_closed_frame(2, 1, True, [0, 0], [], [], extra)
    pair.leader._lease_upkeep(R, pair.leader.groups[R], now)
    exts = _extensions(pair)
    assert len(exts) == 1
    ext = exts[0]
    assert ext.args["lease"]["seq"] == pair.lease.seq and ext.args["lease"]["expiration"][0] > pair.lease.expiration[0]
    assert pair.leader.closed_stats["leases_kept_for_followers"] == 1


def test_a_follower_that_does_not_lead_ignores_what_followers_read(pair):
    pair.follower.on_closed_frame(1, 1, True, [0, 0], [], [], {"wanted": [R], "protect": None})
    assert pair.follower.lease_demand == {} and R not in pair.follower.lease_wanted


def test_gc_stays_at_or_below_the_oldest_running_read_here_or_at_a_peer(pair):
    _gc_below_running_reads(pair)


def test_broken_gc_that_ignores_running_reads_is_caught(pair, monkeypatch):
    monkeypatch.setattr(Store, "gc_protected", lambda self: None)
    with pytest.raises(AssertionError):
        _gc_below_running_reads(pair)


def _gc_below_running_reads(pair) -> None:
    pair.leader.cfg.gc_ttl_s = 1.0
    pair.wall = T0 + 10 * SEC
    pair.write(b"a", b"1")
    pair.wall = T0 + 100 * SEC
    pair.write(b"a", b"2")
    planned = []
    pair.leader.snapshot_executor = lambda job: planned.append(job)
    running = {"ts": (T0 + 20 * SEC, 0)}
    pair.leader.protected_here = lambda: running["ts"]
    pair.leader.gc_pass()
    for job in planned:
        job()
    [(rid, threshold, _spans)] = list(pair.leader.gc_planned)
    assert rid == R and threshold == (T0 + 20 * SEC, 0)          # not now - ttl: a statement here reads at T0+20 s
    # A peer's running read, older still, holds it lower; the peer's link dropping lets it go.
    running["ts"] = None
    pair.leader.on_closed_frame(2, 1, True, [0, 0], [], [], {"wanted": [], "protect": [T0 + 15 * SEC, 0]})
    assert pair.leader.gc_protected() == (T0 + 15 * SEC, 0)
    pair.leader.on_peer_down(2)
    assert pair.leader.gc_protected() is None
    pair.leader.on_closed_frame(2, 2, True, [0, 0], [], [], {"wanted": [], "protect": [T0 + 15 * SEC, 0]})
    pair.leader.on_closed_frame(2, 3, False, [0, 0], [], [], {"wanted": [], "protect": None})
    assert pair.leader.gc_protected() is None                  # its statement ended


def test_a_closed_frames_extra_is_checked():
    frame = [8, 1, True, [1, 0], [], []]
    assert closedts.frame_problem(frame + [{"wanted": [1, 2], "protect": [5, 0]}]) is None
    assert closedts.frame_problem(frame + [{"wanted": [], "protect": None}]) is None
    assert "extra must be" in closedts.frame_problem(frame + [[1]])
    assert "extra must be" in closedts.frame_problem(frame + [{"wanted": [], "other": 1}])
    assert "wanted must be" in closedts.frame_problem(frame + [{"wanted": ["x"]}])
    assert "protect must be" in closedts.frame_problem(frame + [{"protect": [1]}])


def _lapse_then_extend(pair) -> list[bool]:
    """Range R in the side transport's group after each frame: under its lease, once the lease
    lapsed below the target (the walk drops it), and after an extension of the same lease
    applies. The side transport walks only the ranges a lease of ours applied to since they
    last fell out (`Store.closable`), so a lease applied again must bring its range back."""
    seen = []
    pair.wall = T0 + 10 * SEC
    pair.side_transport(full=True)
    seen.append(R in pair.leader.closed_sender.members)
    pair.wall = pair.lease.expiration[0] + LAG + 5 * SEC          # the lease ended below the target
    pair.side_transport()
    seen.append(R in pair.leader.closed_sender.members)
    extended = Lease(pair.lease.seq, 1, pair.lease.start, (pair.wall + 3600 * SEC, 0))
    got = []
    pair.commit("lease", dict(Store._lease_args(pair.lease, extended), ts=[pair.wall, 0]),
                lambda o, r: got.append(o), os.urandom(16))
    assert got == [Outcome.COMMITTED] and pair.leader.replicas[R].lease == extended
    pair.wall += SEC
    pair.side_transport()
    seen.append(R in pair.leader.closed_sender.members)
    return seen


def test_a_range_whose_lease_lapsed_leaves_the_side_transport_and_returns_when_a_lease_applies(pair):
    assert _lapse_then_extend(pair) == [True, False, True]
    assert R in pair.leader.closable


def test_broken_a_side_transport_that_forgets_a_lapsed_range_for_good_is_caught(pair, monkeypatch):
    real = Store._on_lease

    def on_lease_forgetting(self, range_id, lease):
        real(self, range_id, lease)
        if self.closed_sender.ts > (0, 0):   # after the first frame: never walked again
            self.closable.discard(range_id)
    monkeypatch.setattr(Store, "_on_lease", on_lease_forgetting)
    pair.leader.replicas[R].on_lease = pair.leader._on_lease
    assert _lapse_then_extend(pair) == [True, False, False]
