"""Properties of the hybrid logical clock (hlc/): the sentences of its spec, checked by hypothesis."""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hlc import (
    HLC,
    LOGICAL_MAX,
    WALL_NS_MAX,
    ClockOffsetError,
    CorruptCeilingError,
    FileCeilingStore,
    ManualClock,
    MemoryCeilingStore,
    SystemClock,
    Timestamp,
)

START_NS = 1_732_600_000 * 1_000_000_000
MAX_OFFSET_NS = 500_000_000
WINDOW_NS = 1_000_000_000

timestamps = st.builds(
    Timestamp,
    st.integers(0, WALL_NS_MAX),
    st.one_of(st.integers(0, 3), st.integers(0, LOGICAL_MAX)),
)

# A physical clock move: mostly small steps (so walls repeat and the logical counter works),
# sometimes large jumps in either direction (NTP steps, a VM resumed, a bad RTC after reboot).
physical_moves = st.one_of(
    st.integers(-3, 3),
    st.integers(-2 * MAX_OFFSET_NS, 2 * MAX_OFFSET_NS),
    st.integers(-20 * WINDOW_NS, 20 * WINDOW_NS),
)


def new_hlc(physical: ManualClock, store: MemoryCeilingStore | None = None) -> HLC:
    return HLC(
        physical, max_offset_ns=MAX_OFFSET_NS, ceiling_store=store, ceiling_window_ns=WINDOW_NS
    )


def move(physical: ManualClock, delta_ns: int) -> None:
    physical.set(max(0, physical.now_ns() + delta_ns))


# --- the clock, as a state machine --------------------------------------------------------------


class HLCNode(RuleBasedStateMachine):
    """One node's HLC under arbitrary physical clock moves, messages and restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.physical = ManualClock(START_NS)
        self.store = MemoryCeilingStore()
        self.hlc = new_hlc(self.physical, self.store)
        self.issued_max = Timestamp.ZERO  # the largest timestamp any incarnation issued

    def issued(self, ts: Timestamp) -> None:
        assert ts > self.issued_max, f"{ts} is not above earlier {self.issued_max}"
        self.issued_max = ts

    @rule(delta_ns=physical_moves)
    def physical_clock_moves(self, delta_ns: int) -> None:
        move(self.physical, delta_ns)

    @rule()
    def now_is_above_everything_issued_before(self) -> None:
        self.issued(self.hlc.now())

    @rule(
        ahead_ns=st.one_of(st.integers(-3, 3), st.integers(-5 * WINDOW_NS, MAX_OFFSET_NS)),
        logical=st.one_of(st.integers(0, 3), st.just(LOGICAL_MAX)),
    )
    def receive_orders_after_send(self, ahead_ns: int, logical: int) -> None:
        remote = Timestamp(max(0, self.physical.now_ns() + ahead_ns), logical)
        ts = self.hlc.update(remote)
        assert ts > remote
        self.issued(ts)

    @rule(ahead_ns=st.integers(MAX_OFFSET_NS + 1, MAX_OFFSET_NS + 20 * WINDOW_NS))
    def remote_beyond_max_offset_is_rejected_and_changes_nothing(self, ahead_ns: int) -> None:
        remote = Timestamp(self.physical.now_ns() + ahead_ns, 0)
        last_before = self.hlc.last()
        ceiling_before, saves_before = self.store.load(), self.store.save_count
        with pytest.raises(ClockOffsetError) as caught:
            self.hlc.update(remote)
        assert caught.value.ahead_ns == ahead_ns
        assert self.hlc.last() == last_before
        assert (self.store.load(), self.store.save_count) == (ceiling_before, saves_before)

    @rule()
    def a_ceiling_saved_ahead_by_the_caller(self) -> None:
        ahead = self.hlc.ceiling_ahead()
        if ahead is not None and ahead > (self.store.load() or 0):
            self.store.save(ahead)
            self.hlc.ceiling_saved(ahead)

    @rule(back_ns=st.integers(0, 20 * WINDOW_NS))
    def restart_with_physical_clock_moved_back(self, back_ns: int) -> None:
        # The process dies (its HLC object is gone); the machine's clock may now read earlier.
        move(self.physical, -back_ns)
        self.hlc = new_hlc(self.physical, self.store)

    @invariant()
    def every_issued_wall_is_below_the_persisted_ceiling(self) -> None:
        if self.issued_max != Timestamp.ZERO:
            assert self.issued_max.wall_ns < self.store.load()

    @invariant()
    def last_is_at_least_everything_issued(self) -> None:
        assert self.hlc.last() >= self.issued_max


TestHLCNode = HLCNode.TestCase
TestHLCNode.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# --- the same promises as single-sentence properties --------------------------------------------

clock_ops = st.lists(
    st.one_of(
        st.tuples(st.just("move"), physical_moves),
        st.tuples(st.just("now"), st.just(0)),
        st.tuples(st.just("update"), st.integers(-5 * WINDOW_NS, MAX_OFFSET_NS)),
    ),
    max_size=30,
)


def run_ops(hlc: HLC, physical: ManualClock, ops: list[tuple[str, int]]) -> list[Timestamp]:
    results = []
    for op, arg in ops:
        if op == "move":
            move(physical, arg)
        elif op == "now":
            results.append(hlc.now())
        else:
            results.append(hlc.update(Timestamp(max(0, physical.now_ns() + arg), 0)))
    return results


@given(ops=clock_ops)
def test_now_and_update_never_go_backwards_without_a_ceiling_store(ops):
    physical = ManualClock(START_NS)
    results = run_ops(new_hlc(physical), physical, ops)
    assert all(a < b for a, b in zip(results, results[1:]))


@given(before=clock_ops, back_ns=st.integers(0, 100 * WINDOW_NS), after=clock_ops)
def test_restart_with_clock_moved_back_never_reissues_a_timestamp(before, back_ns, after):
    physical = ManualClock(START_NS)
    store = MemoryCeilingStore()
    old = run_ops(new_hlc(physical, store), physical, before + [("now", 0)])
    move(physical, -back_ns)
    restarted = new_hlc(physical, store)
    new = run_ops(restarted, physical, [("now", 0)] + after)
    assert min(new) > max(old)


@given(skew_ns=st.integers(-MAX_OFFSET_NS, MAX_OFFSET_NS), gap_ns=st.integers(0, 10**6))
def test_message_receive_orders_after_its_send_across_nodes(skew_ns, gap_ns):
    sender_physical = ManualClock(START_NS)
    receiver_physical = ManualClock(START_NS - skew_ns)
    sender, receiver = new_hlc(sender_physical), new_hlc(receiver_physical)
    sent = sender.now()
    receiver_physical.advance(gap_ns)
    received = receiver.update(sent)
    assert received > sent
    assert receiver.now() > received


def test_remote_just_within_max_offset_is_accepted_and_just_beyond_is_rejected():
    physical = ManualClock(START_NS)
    hlc = new_hlc(physical)
    assert hlc.update(Timestamp(START_NS + MAX_OFFSET_NS, 7)) == Timestamp(
        START_NS + MAX_OFFSET_NS, 8
    )
    with pytest.raises(ClockOffsetError) as caught:
        hlc.update(Timestamp(START_NS + MAX_OFFSET_NS + 1, 0))
    message = str(caught.value)
    assert "500.000001 ms ahead" in message and "max offset of 500 ms" in message


def test_stuck_physical_clock_advances_the_logical_counter():
    hlc = new_hlc(ManualClock(START_NS))
    assert [hlc.now() for _ in range(3)] == [Timestamp(START_NS, n) for n in range(3)]


def test_logical_counter_overflow_rolls_into_the_next_nanosecond():
    hlc = new_hlc(ManualClock(START_NS))
    assert hlc.update(Timestamp(START_NS, LOGICAL_MAX)) == Timestamp(START_NS + 1, 0)
    assert hlc.now() == Timestamp(START_NS + 1, 1)


# --- the persisted ceiling ----------------------------------------------------------------------


def test_restarted_clock_issues_only_above_the_loaded_ceiling():
    ceiling_ns = START_NS + 3 * WINDOW_NS
    store = MemoryCeilingStore(ceiling_ns)
    hlc = new_hlc(ManualClock(START_NS), store)
    assert hlc.last() == Timestamp(ceiling_ns, 0)
    first = hlc.now()
    assert first > Timestamp(ceiling_ns, 0)
    assert store.load() == first.wall_ns + WINDOW_NS  # saved before first was handed out


def test_ceiling_saves_are_rare_about_one_per_window():
    physical = ManualClock(START_NS)
    store = MemoryCeilingStore()
    hlc = new_hlc(physical, store)
    elapsed_ns = 10 * WINDOW_NS
    step_ns = 5_000_000
    for _ in range(elapsed_ns // step_ns):
        physical.advance(step_ns)
        hlc.now()
    assert store.save_count <= elapsed_ns // WINDOW_NS + 1


def _saves_inside_now(physical: ManualClock, store: MemoryCeilingStore, hlc: HLC, windows: int = 10) -> int:
    """Saves `now` made itself while a caller saved the ceiling ahead before each call, as the
    node does on a thread of its own (raftstore.node.loop: Node._save_ceiling_ahead)."""
    hlc.now()   # the first timestamp saves a ceiling: nothing is durable yet
    inside = 0
    for _ in range(windows * WINDOW_NS // 5_000_000):
        physical.advance(5_000_000)
        ahead = hlc.ceiling_ahead()
        if ahead is not None:
            store.save(ahead)
            hlc.ceiling_saved(ahead)
        before = store.save_count
        hlc.now()
        inside += store.save_count - before
    return inside


def test_a_ceiling_saved_ahead_keeps_every_save_out_of_now():
    physical, store = ManualClock(START_NS), MemoryCeilingStore()
    assert _saves_inside_now(physical, store, new_hlc(physical, store)) == 0
    assert store.save_count <= 2 * 10 + 2   # one every half window


def test_broken_a_clock_that_ignores_a_ceiling_saved_ahead_saves_inside_now(monkeypatch):
    monkeypatch.setattr(HLC, "ceiling_saved", lambda self, ns: None)
    physical, store = ManualClock(START_NS), MemoryCeilingStore()
    assert _saves_inside_now(physical, store, new_hlc(physical, store)) >= 9


class DiskThatFills(MemoryCeilingStore):
    full = False

    def save(self, ns: int) -> None:
        if self.full:
            raise OSError("disk full")
        super().save(ns)


def test_failed_ceiling_save_issues_nothing():
    physical = ManualClock(START_NS)
    store = DiskThatFills()
    hlc = new_hlc(physical, store)
    hlc.now()
    last = hlc.last()
    store.full = True
    physical.advance(2 * WINDOW_NS)
    with pytest.raises(OSError, match="disk full"):
        hlc.now()
    with pytest.raises(OSError, match="disk full"):
        hlc.update(Timestamp(physical.now_ns(), 0))
    assert hlc.last() == last
    assert store.load() == last.wall_ns + WINDOW_NS


def test_concurrent_now_calls_never_return_the_same_timestamp():
    hlc = new_hlc(ManualClock(START_NS), MemoryCeilingStore())
    per_thread: list[list[Timestamp]] = [[] for _ in range(4)]

    def worker(out: list[Timestamp]) -> None:
        for _ in range(2000):
            out.append(hlc.now())

    threads = [threading.Thread(target=worker, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [ts for out in per_thread for ts in out]
    assert len(set(everything)) == len(everything)
    assert all(out == sorted(out) for out in per_thread)


# --- FileCeilingStore ---------------------------------------------------------------------------


def test_file_ceiling_store_round_trips_and_starts_empty(tmp_path):
    store = FileCeilingStore(tmp_path / "hlc.ceiling")
    assert store.load() is None
    store.save(START_NS)
    assert store.load() == START_NS
    store.save(START_NS + WINDOW_NS)
    assert FileCeilingStore(tmp_path / "hlc.ceiling").load() == START_NS + WINDOW_NS
    assert os.listdir(tmp_path) == ["hlc.ceiling"]  # no temp files left behind


@pytest.mark.parametrize("content", [b"", b"abc", b"-5\n", b"12x", b"1 2", b"\xff\xfe", b"9" * 100])
def test_corrupt_ceiling_file_is_an_error_naming_the_path(tmp_path, content):
    path = tmp_path / "hlc.ceiling"
    path.write_bytes(content)
    with pytest.raises(CorruptCeilingError, match="is corrupt") as caught:
        FileCeilingStore(path).load()
    assert str(path) in str(caught.value)


def test_hlc_over_a_file_store_survives_restart_with_clock_moved_back(tmp_path):
    physical = ManualClock(START_NS)
    path = tmp_path / "hlc.ceiling"
    before = new_hlc(physical, FileCeilingStore(path)).now()
    physical.set(START_NS - 3600 * 1_000_000_000)
    after = new_hlc(physical, FileCeilingStore(path)).now()
    assert after > before


def test_system_clock_reads_nanoseconds_since_the_epoch():
    hlc = HLC(SystemClock())
    assert hlc.now().wall_ns > START_NS


# --- Timestamp ----------------------------------------------------------------------------------


@given(timestamps)
def test_wire_round_trip_through_msgpack(ts):
    assert Timestamp.from_wire(msgpack.unpackb(msgpack.packb(ts.to_wire()))) == ts
    assert Timestamp.from_wire(msgpack.unpackb(msgpack.packb(ts.to_wire()), use_list=False)) == ts


@pytest.mark.parametrize(
    "wire",
    [None, 5, "1,2", b"\x01", {"wall_ns": 1, "logical": 2}, [], [1], [1, 2, 3], [1.0, 2],
     [1, "2"], [True, 0], [0, False], [-1, 0], [0, -1], [2**63, 0], [0, 2**32], [None, None]],
)
def test_malformed_wire_timestamp_is_rejected_with_value_error(wire):
    with pytest.raises(ValueError, match="malformed wire timestamp"):
        Timestamp.from_wire(wire)


wire_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(),
              st.binary()),
    lambda children: st.lists(children, max_size=3),
    max_leaves=6,
)


@given(wire_junk)
def test_any_network_input_either_decodes_faithfully_or_raises_value_error(obj):
    try:
        ts = Timestamp.from_wire(obj)
    except ValueError:
        return
    assert ts.to_wire() == list(obj)


@given(timestamps)
def test_text_form_round_trips(ts):
    assert Timestamp.parse(str(ts)) == ts


def test_text_form_is_seconds_dot_nanos_comma_logical():
    assert str(Timestamp(1_732_600_000_000_000_123, 4)) == "1732600000.000000123,4"
    assert Timestamp.parse("1732600000.000000123,4") == Timestamp(1_732_600_000_000_000_123, 4)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "1.5,0", "1.000000000", "1,0", "-1.000000000,0", "1.000000000,-1",
     " 1.000000000,0", "1.000000000,0\n", "\u0661.000000000,0", "9223372037.000000000,0",
     "1.000000000,4294967296"],
)
def test_malformed_text_timestamp_is_rejected(text):
    with pytest.raises(ValueError):
        Timestamp.parse(text)


@given(timestamps)
def test_next_is_the_immediate_successor(ts):
    if ts == Timestamp.MAX:
        with pytest.raises(OverflowError):
            ts.next()
        return
    successor = ts.next()
    assert successor > ts
    if ts.logical < LOGICAL_MAX:
        assert successor == Timestamp(ts.wall_ns, ts.logical + 1)
    else:
        assert successor == Timestamp(ts.wall_ns + 1, 0)


@given(timestamps, timestamps)
def test_timestamps_order_as_wall_then_logical(a, b):
    assert (a < b) == ((a.wall_ns, a.logical) < (b.wall_ns, b.logical))


def test_zero_and_max_bound_every_timestamp():
    assert Timestamp.ZERO == Timestamp(0, 0)
    assert Timestamp.ZERO < Timestamp(0, 1) < Timestamp(1, 0) < Timestamp.MAX
    with pytest.raises(ValueError):
        Timestamp(-1, 0)
    with pytest.raises(ValueError):
        Timestamp(0, LOGICAL_MAX + 1)


# --- purity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["hlc/clock.py", "hlc/timestamp.py"])
def test_pure_modules_import_no_clock_socket_or_database(module):
    source = (Path(__file__).resolve().parent.parent / module).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "socket", "sqlite3", "asyncio"}
