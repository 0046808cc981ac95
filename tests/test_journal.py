"""The durable journal: what replays after a crash is exactly what was synced."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from raftstore.raft.failstop import FailStop
from raftstore.raft.journal import MAGIC, DurableJournal, JournalError, RealLogFile
from raftstore.sim.disk import SimDisk


def _entries(j):
    return [j[i] for i in range(len(j))]


def test_synced_entries_and_vote_survive_a_crash_unsynced_ones_do_not():
    disk = SimDisk()
    f = disk.open("j")
    j = DurableJournal(f)
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 1)
    j.setCurrentTerm(3, "n2")
    j.sync()
    j.add(b"c", 3, 3)            # never synced
    disk.crash(random.Random(0))
    again = DurableJournal(disk.open("j"))
    assert _entries(again) == [(b"a", 1, 1), (b"b", 2, 1)]
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "n2")


def test_a_disk_that_ignores_fsync_loses_synced_entries():
    disk = SimDisk(fsync_works=False)
    j = DurableJournal(disk.open("j"))
    j.add(b"a", 1, 1)
    j.sync()
    disk.crash(random.Random(1))
    assert len(DurableJournal(disk.open("j"))) == 0


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "add", "add", "from", "to", "term", "sync", "clear"]),
                              st.integers(0, 5)), max_size=40),
       seed=st.integers(0, 2**32))
def test_replay_is_a_state_the_journal_passed_through_at_or_after_the_last_sync(ops, seed):
    disk = SimDisk()
    j = DurableJournal(disk.open("j"))
    states = [(_entries(j), j.getCurrentTerm(), j.getVotedForNodeId())]
    synced_at = 0
    next_idx, term = 1, 1
    for op, n in ops:
        if op == "add":
            j.add(b"x%d" % next_idx, next_idx, term)
            next_idx += 1
        elif op == "from" and len(j):
            j.deleteEntriesFrom(n % len(j))
            next_idx = j[-1][1] + 1 if len(j) else next_idx
        elif op == "to" and len(j):
            j.deleteEntriesTo(n % len(j))
        elif op == "term":
            term += 1
            j.setCurrentTerm(term, "n%d" % n)
        elif op == "clear":
            j.clear()
        elif op == "sync":
            j.sync()
            synced_at = len(states) - 1
        states.append((_entries(j), j.getCurrentTerm(), j.getVotedForNodeId()))
    disk.crash(random.Random(seed))
    again = DurableJournal(disk.open("j"))
    # A torn tail may keep a prefix of the unsynced records: what comes back is a state the
    # journal really passed through, and never one from before the last sync.
    got = (_entries(again), again.getCurrentTerm(), again.getVotedForNodeId())
    assert got in states[synced_at:], (got, states[synced_at])


def test_real_file_round_trip_and_torn_tail(tmp_path):
    path = str(tmp_path / "raft.journal")
    j = DurableJournal(RealLogFile(path))
    for i in range(1, 6):
        j.add(b"cmd%d" % i, i, 1)
    j.deleteEntriesFrom(3)        # drops 4 and 5
    j.setCurrentTerm(2, "n1")
    j._destroy()
    with open(path, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")   # a torn record
    again = DurableJournal(RealLogFile(path))
    assert _entries(again) == [(b"cmd1", 1, 1), (b"cmd2", 2, 1), (b"cmd3", 3, 1)]
    assert again.getVotedForNodeId() == "n1"
    again.add(b"cmd4", 4, 2)
    again._destroy()
    assert _entries(DurableJournal(RealLogFile(path)))[-1] == (b"cmd4", 4, 2)


def test_compaction_rewrites_the_file_and_keeps_the_tail(tmp_path, monkeypatch):
    from raftstore import constants
    monkeypatch.setattr(constants, "journal_rewrite_bytes_min", 1000)
    path = str(tmp_path / "j")
    j = DurableJournal(RealLogFile(path))
    for i in range(1, 201):
        j.add(b"v" * 100, i, 1)
    j.sync()
    j.deleteEntriesTo(190)
    assert (tmp_path / "j").stat().st_size < 3000
    j.add(b"w", 201, 2)
    j._destroy()
    again = DurableJournal(RealLogFile(path))
    assert [e[1] for e in _entries(again)] == list(range(191, 202))


def test_a_foreign_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b"not a journal at all")
    with pytest.raises(JournalError, match=str(path)):
        DurableJournal(RealLogFile(str(path)))
    assert MAGIC == b"RSJ1"


def test_an_entry_the_file_refused_is_not_in_the_log_and_the_journal_stops():
    disk = SimDisk()
    j = DurableJournal(disk.open("j"))
    j.add(b"a", 1, 1)
    j.sync()
    disk.append_failures = 1
    with pytest.raises(FailStop, match="journal j: writing the entry record at index 2 failed"):
        j.add(b"b", 2, 1)
    assert _entries(j) == [(b"a", 1, 1)]          # nothing can be acknowledged for b
    disk.sync_failures = 1
    j.setCurrentTerm(2, "n1")
    with pytest.raises(FailStop, match="fsync failed"):
        j.sync()


def test_a_real_file_on_a_full_disk_raises_at_the_write(tmp_path):
    # /dev/full refuses every write with ENOSPC, as a full disk does: unbuffered, the journal
    # learns it at the append, not at some later flush.
    f = RealLogFile(str(tmp_path / "j"))
    f._f.close()
    f._f = open("/dev/full", "ab", buffering=0)
    with pytest.raises(OSError) as info:
        f.append(b"x" * 100)
    assert info.value.errno == 28
