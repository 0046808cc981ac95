"""A statement's writes (sql/writes.py) against the in-memory KV: every write conditioned on
the version read, a failure taken back exactly, and the error that says what happened.

Other clients act through `Racing`: a KV that runs a scripted action just before a given row
write of the statement under test reaches the store, as a concurrent client would.
"""

from __future__ import annotations

import pytest

from raftstore.errors import AmbiguousCommitError, RaftstoreError, UnavailableError
from sql import MemKV, Session, SQLError
from sql.constants import ROW_CAS_RETRY_COUNT_MAX, ROW_KEY_PREFIX
from sql.kv import WriteResult, write_each


class Racing:
    """The KV of the statement under test: `before[n](store)` runs just before its n-th row
    write (1-based; rollbacks and blind puts count too), `fail[n]` is its answer instead (raised
    by `put`, carried in the WriteResult of a conditioned write, as sql/kv.py says)."""

    def __init__(self, store: MemKV):
        self.store = store
        self.before: dict = {}
        self.fail: dict = {}
        self.row_writes = 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def _row_write(self, key) -> None:
        if key.startswith(ROW_KEY_PREFIX):
            self.row_writes += 1
            if self.row_writes in self.before:
                self.before[self.row_writes](self.store)
            if self.row_writes in self.fail:
                raise self.fail[self.row_writes]

    def write_if(self, key, if_version, value):
        try:
            self._row_write(key)
        except RaftstoreError as exc:
            return WriteResult(False, error=exc)
        return self.store.write_if(key, if_version, value)

    def write_if_many(self, writes, *, stop_after_failure=True, lock=None, all_or_nothing=False):
        return write_each(self.write_if, writes, stop_after_failure=stop_after_failure)

    def put(self, key, value):
        self._row_write(key)
        return self.store.put(key, value)


@pytest.fixture
def store() -> MemKV:
    kv = MemKV()
    Session(kv).execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    return kv


def other(store: MemKV, sql: str):
    return Session(store).execute(sql)


def table(store: MemKV) -> list[list]:
    return Session(store).execute("SELECT id, v FROM t ORDER BY id").rows


def failing(kv, sql: str) -> SQLError:
    with pytest.raises(SQLError) as caught:
        Session(kv).execute(sql)
    return caught.value


def test_a_clean_up_never_undoes_a_row_another_client_rewrote_with_the_same_bytes(store):
    kv = Racing(store)
    # Before our third row: another client rewrites our row 1 with the very bytes we wrote
    # (a blind UPSERT, acknowledged) and takes key 3, so our INSERT fails and cleans up.
    kv.before[3] = lambda s: (other(s, "UPSERT INTO t (id, v) VALUES (1, 'a')"),
                              other(s, "INSERT INTO t VALUES (3, 'theirs')"))
    err = failing(kv, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert table(store) == [[1, "a"], [3, "theirs"]]
    assert err.code == "statement_completion_unknown"
    assert "(id)=(3) already exists" in err.message and "1 of the 2 rows it wrote may remain: (id)=(1)" in err.message
    assert "(id)=(2)" not in err.message.split("may remain")[1]


def test_an_insert_that_loses_a_key_takes_back_all_it_wrote_and_says_so(store):
    kv = Racing(store)
    kv.before[3] = lambda s: other(s, "INSERT INTO t VALUES (3, 'theirs')")
    err = failing(kv, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert table(store) == [[3, "theirs"]]
    assert err.code == "unique_violation"
    assert "(id)=(3) already exists" in err.message and "the 2 rows this statement had written were rolled back" in err.message
    assert "nothing was written" not in err.message


def test_an_insert_that_loses_its_only_key_says_nothing_was_written(store):
    kv = Racing(store)
    kv.before[1] = lambda s: other(s, "INSERT INTO t VALUES (1, 'theirs')")
    err = failing(kv, "INSERT INTO t VALUES (1, 'a')")
    assert err.code == "unique_violation" and err.message.endswith("nothing of this statement was written")


def test_a_delete_leaves_a_row_that_stopped_matching_after_it_was_read(store):
    other(store, "INSERT INTO t VALUES (1, 'old'), (2, 'old'), (3, 'old')")
    kv = Racing(store)
    kv.before[2] = lambda s: other(s, "UPDATE t SET v = 'kept' WHERE id = 2")
    assert Session(kv).execute("DELETE FROM t WHERE v = 'old'").rowcount == 2
    assert table(store) == [[2, "kept"]]


def test_an_update_applies_to_a_row_changed_after_it_was_read(store):
    other(store, "INSERT INTO t VALUES (1, 'a')")
    kv = Racing(store)
    kv.before[1] = lambda s: other(s, "UPDATE t SET v = v || 'b' WHERE id = 1")
    assert Session(kv).execute("UPDATE t SET v = v || 'c'").rowcount == 1
    assert table(store) == [[1, "abc"]]


def test_an_update_moving_keys_that_loses_a_key_puts_every_old_row_back(store):
    # Rows 1, 2, 3 move to 2, 1, 0: the old rows are deleted (writes 1-3), then the new ones
    # written (4-6); key 0 is taken before write 6. Keys 1 and 2 were written twice by the
    # statement; each goes back to the row it held before the statement.
    other(store, "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    kv = Racing(store)
    kv.before[6] = lambda s: other(s, "INSERT INTO t VALUES (0, 'racer')")
    err = failing(kv, "UPDATE t SET id = 3 - id")
    assert table(store) == [[0, "racer"], [1, "one"], [2, "two"], [3, "three"]]
    assert err.code == "unique_violation" and "rolled back" in err.message


def test_a_write_conflict_before_any_write_is_40001_saying_nothing_was_written(store):
    other(store, "INSERT INTO t VALUES (1, 'a')")
    kv = Racing(store)
    for n in range(1, ROW_CAS_RETRY_COUNT_MAX + 1):   # row 1 changes before every attempt
        kv.before[n] = lambda s: other(s, "UPDATE t SET v = v || 'x' WHERE id = 1")
    err = failing(kv, "UPDATE t SET v = 'mine' WHERE id = 1 AND v <> ''")   # reads the row (not blind)
    assert err.code == "serialization_failure"
    assert "kept changing" in err.message and err.message.endswith("nothing of this statement was written")
    assert table(store)[0][1] == "a" + "x" * ROW_CAS_RETRY_COUNT_MAX


def test_a_write_conflict_after_a_write_applied_is_40003_never_40001(store):
    other(store, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    kv = Racing(store)
    for n in range(2, ROW_CAS_RETRY_COUNT_MAX + 2):   # row 1 is written, then row 2 keeps changing
        kv.before[n] = lambda s: other(s, "UPDATE t SET v = v || 'x' WHERE id = 2")
    err = failing(kv, "UPDATE t SET v = 'mine'")
    assert err.code == "statement_completion_unknown"
    assert "kept changing" in err.message and "the 1 row this statement had written was rolled back" in err.message
    assert table(store)[0] == [1, "a"]


def test_a_failed_write_after_others_applied_is_40003_even_when_all_were_rolled_back(store):
    other(store, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    kv = Racing(store)
    kv.fail[2] = UnavailableError("no leader reachable for this range right now")
    err = failing(kv, "UPDATE t SET v = 'mine'")
    assert err.code == "statement_completion_unknown" and "rolled back" in err.message
    assert table(store) == [[1, "a"], [2, "b"]]


def test_a_failure_whose_rollback_gets_no_answer_names_the_rows_that_may_remain(store):
    other(store, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    kv = Racing(store)
    kv.fail[3] = AmbiguousCommitError("leader changed")     # row 3: may have applied
    kv.fail[4] = UnavailableError("no leader")              # the rollback of row 1: did not apply
    kv.fail[5] = AmbiguousCommitError("leader changed")     # the rollback of row 2: may have
    err = failing(kv, "UPDATE t SET v = 'mine'")
    assert err.code == "statement_completion_unknown"
    assert err.message.startswith("statement completion unknown: leader changed; this statement is not "
                                  "atomic yet, and 3 of the 3 rows it wrote may remain: ")
    assert "(id)=(1), as this statement wrote it (rolling back failed: no leader)" in err.message
    assert "(id)=(3), (id)=(2), whose write or rollback got no definite answer" in err.message
    assert table(store) == [[1, "mine"], [2, "mine"], [3, "c"]]


def test_a_failed_write_before_anything_applied_passes_through_unchanged(store):
    kv = Racing(store)
    kv.fail[1] = UnavailableError("no leader")
    with pytest.raises(UnavailableError):
        Session(kv).execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    assert table(store) == []


def test_rows_an_upsert_overwrote_without_reading_are_named_as_remaining(store):
    kv = Racing(store)
    kv.fail[3] = UnavailableError("no leader")
    err = failing(kv, "UPSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert err.code == "statement_completion_unknown"
    assert "2 of the 2 rows it wrote may remain: (id)=(1), (id)=(2), written whole without reading" in err.message
    assert table(store) == [[1, "a"], [2, "b"]]
