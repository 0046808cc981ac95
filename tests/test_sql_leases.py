"""Schema leases and the DROP TABLE protocol on the in-memory KV with a fake clock: each
"node" is a Session with its own SchemaLeases; they share one KV and one simulated time."""

from __future__ import annotations

import pytest

from sql import MemKV, Session, SQLError
from sql.catalog import FREED, DropMarker, catalog_key, decode_entry, encode_drop_marker, read_table
from sql.constants import DROP_MARKER_STALE_S, ROW_KEY_PREFIX
from sql.schema_leases import SchemaLeases

LEASE_S = 2.0
MARGIN_S = 0.25


class FakeTimer:
    """Simulated time: `sleep` advances it (and runs `on_sleep`, to act in the middle of a wait)."""

    def __init__(self, wall_ns: int = 1_800_000_000 * 10**9) -> None:
        self.now = 100.0
        self.wall0 = wall_ns
        self.slept: list[float] = []
        self.on_sleep = None

    def monotonic(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return self.wall0 + int(self.now * 1e9)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(seconds)


class CatalogReads:
    """A KV that counts catalog gets."""

    def __init__(self, kv: MemKV) -> None:
        self.kv = kv
        self.catalog_gets = 0

    def __getattr__(self, name):
        return getattr(self.kv, name)

    def get(self, key):
        if key.startswith(b"\x01c"):
            self.catalog_gets += 1
        return self.kv.get(key)


@pytest.fixture
def world():
    kv, timer = MemKV(), FakeTimer()

    def node():
        reads = CatalogReads(kv)
        return Session(reads, leases=SchemaLeases(LEASE_S, MARGIN_S), timer=timer), reads
    return kv, timer, node


def _row_keys(kv: MemKV) -> list[bytes]:
    return [k for k, _ in kv.items() if k.startswith(ROW_KEY_PREFIX)]


# --- the cache ----------------------------------------------------------------------------------


def test_a_lease_runs_from_before_the_read_was_sent_minus_the_margin() -> None:
    kv, timer = MemKV(), FakeTimer()
    Session(kv).execute("CREATE TABLE t (k INT PRIMARY KEY)")
    schema = read_table(kv, "t")
    leases = SchemaLeases(LEASE_S, MARGIN_S)
    leases.put("t", schema, sent_at=10.0)
    assert leases.get("t", 10.0 + LEASE_S - MARGIN_S - 0.001) is schema
    assert leases.get("t", 10.0 + LEASE_S - MARGIN_S) is None
    assert len(leases) == 0
    assert leases.drop_wait_s == LEASE_S + MARGIN_S


def test_an_older_read_arriving_late_does_not_shorten_a_newer_lease() -> None:
    kv = MemKV()
    Session(kv).execute("CREATE TABLE t (k INT PRIMARY KEY)")
    schema = read_table(kv, "t")
    leases = SchemaLeases(LEASE_S, MARGIN_S)
    leases.put("t", schema, sent_at=20.0)
    leases.put("t", schema, sent_at=5.0)
    assert leases.get("t", 21.0) is schema


def test_a_disabled_lease_cache_caches_nothing_and_waits_nothing() -> None:
    kv = MemKV()
    Session(kv).execute("CREATE TABLE t (k INT PRIMARY KEY)")
    leases = SchemaLeases(lease_s=0)
    leases.put("t", read_table(kv, "t"), sent_at=0.0)
    assert leases.get("t", 0.0) is None and leases.drop_wait_s == 0.0


def test_a_leased_schema_is_used_without_reading_the_catalog_until_it_expires(world) -> None:
    kv, timer, node = world
    a, reads = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, 'x')")
    before = reads.catalog_gets
    for i in range(2, 10):
        a.execute("INSERT INTO t VALUES ($1, 'x')", [i])
        a.execute("SELECT v FROM t WHERE k = $1", [i])
    assert reads.catalog_gets == before
    timer.now += LEASE_S
    a.execute("SELECT count(*) FROM t")
    assert reads.catalog_gets == before + 1


def test_a_missing_table_is_not_cached_so_a_create_elsewhere_is_seen_at_once(world) -> None:
    kv, timer, node = world
    a, _ = node()
    b, _ = node()
    with pytest.raises(SQLError) as caught:
        b.execute("SELECT * FROM later")
    assert caught.value.code == "undefined_table"
    a.execute("CREATE TABLE later (k INT PRIMARY KEY)")
    assert b.execute("INSERT INTO later VALUES (1)").rowcount == 1


# --- DROP TABLE ------------------------------------------------------------------------------------


def test_drop_marks_the_name_waits_out_the_leases_then_frees_it_and_deletes_the_rows(world) -> None:
    kv, timer, node = world
    a, _ = node()
    b, _ = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    a.execute("INSERT INTO t VALUES (1), (2)")
    b.execute("SELECT * FROM t")                      # b leases t at time 100
    seen = []

    def during_wait(_):
        entry = decode_entry(kv.get(catalog_key("t")))
        seen.append(type(entry).__name__)
        with pytest.raises(SQLError):                 # b's lease has run out by now...
            b.execute("SELECT * FROM t")              # ...and the catalog says "dropping"
    timer.on_sleep = during_wait
    start = timer.now
    a.execute("DROP TABLE t")
    assert seen == ["DropMarker"]
    assert timer.now - start >= LEASE_S + MARGIN_S
    assert kv.get(catalog_key("t")) == FREED and _row_keys(kv) == []
    timer.on_sleep = None
    with pytest.raises(SQLError) as caught:
        b.execute("INSERT INTO t VALUES (3)")
    assert caught.value.code == "undefined_table"


def test_a_node_that_leased_the_old_table_writes_into_the_new_one_after_drop_and_create(world) -> None:
    kv, timer, node = world
    a, _ = node()
    b, _ = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    b.execute("INSERT INTO t VALUES (1)")
    old_id = read_table(kv, "t").id
    a.execute("DROP TABLE t")
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    assert read_table(kv, "t").id != old_id
    b.execute("INSERT INTO t VALUES (2)")
    assert a.execute("SELECT k FROM t").rows == [[2]]


def test_drop_of_several_tables_waits_once(world) -> None:
    kv, timer, node = world
    a, _ = node()
    a.execute("CREATE TABLE x (k INT PRIMARY KEY)")
    a.execute("CREATE TABLE y (k INT PRIMARY KEY)")
    a.execute("DROP TABLE x, y")
    assert timer.slept == [LEASE_S + MARGIN_S]
    assert a.execute("SHOW TABLES").rows == []


def test_create_waits_for_a_drop_in_progress_on_its_name(world) -> None:
    kv, timer, node = world
    a, _ = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    schema = read_table(kv, "t")
    marker = encode_drop_marker(schema, timer.wall_ns())
    assert kv.cas(catalog_key("t"), schema.raw, marker)
    polls = []

    def dropper_finishes(_):
        polls.append(timer.now)
        if len(polls) == 3:
            assert kv.cas(catalog_key("t"), marker, FREED)
    timer.on_sleep = dropper_finishes
    a.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)")
    assert len(polls) == 3
    assert [c.name for c in read_table(kv, "t").columns] == ["k", "v"]


def test_a_marker_left_by_a_crashed_dropper_is_finished_by_the_next_create(world) -> None:
    kv, timer, node = world
    a, _ = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    a.execute("INSERT INTO t VALUES (1)")
    schema = read_table(kv, "t")
    crashed_at = timer.wall_ns() - int((DROP_MARKER_STALE_S + 1) * 1e9)
    assert kv.cas(catalog_key("t"), schema.raw, encode_drop_marker(schema, crashed_at))
    assert a.execute("SHOW TABLES").rows == []        # a marker hides the table at once
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    assert timer.slept == [LEASE_S + MARGIN_S]        # the taker waits out the leases itself
    assert read_table(kv, "t").id != schema.id
    assert a.execute("SELECT * FROM t").rows == [] and _row_keys(kv) == []


def test_a_young_marker_that_never_goes_away_is_taken_over_after_the_stale_age(world) -> None:
    kv, timer, node = world
    a, _ = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    schema = read_table(kv, "t")
    assert kv.cas(catalog_key("t"), schema.raw, encode_drop_marker(schema, timer.wall_ns()))
    start = timer.now
    a.execute("DROP TABLE IF EXISTS t")              # waits, takes over, then nothing to drop
    assert DROP_MARKER_STALE_S <= timer.now - start <= DROP_MARKER_STALE_S + LEASE_S + 1.0
    assert kv.get(catalog_key("t")) == FREED
    with pytest.raises(SQLError) as caught:
        a.execute("DROP TABLE t")
    assert caught.value.code == "undefined_table"
    assert not isinstance(decode_entry(kv.get(catalog_key("t"))), DropMarker)


# --- renewal ----------------------------------------------------------------------------------------


def test_a_lease_past_half_its_life_is_claimed_for_renewal_once_and_renewal_extends_it(world) -> None:
    kv, timer, node = world
    a, reads = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    a.execute("SELECT * FROM t")                       # leased at 100 until 101.75
    assert a.take_renewals() == []
    timer.now += (LEASE_S - MARGIN_S) / 2              # half the life gone: still used...
    before = reads.catalog_gets
    a.execute("SELECT * FROM t")
    a.execute("SELECT * FROM t")
    assert reads.catalog_gets == before
    due = a.take_renewals()
    assert due == ["t"]                                # ...and claimed once
    a.renew_leases(due)                                # what the gateway runs after answering
    assert reads.catalog_gets == before + 1
    timer.now += (LEASE_S - MARGIN_S) * 0.9            # past the first lease's expiry
    a.execute("SELECT * FROM t")
    assert reads.catalog_gets == before + 1


def test_a_renewal_that_finds_a_drop_marker_ends_the_lease(world) -> None:
    kv, timer, node = world
    a, reads = node()
    a.execute("CREATE TABLE t (k INT PRIMARY KEY)")
    a.execute("SELECT * FROM t")
    timer.now += LEASE_S / 2
    a.execute("SELECT * FROM t")
    schema = read_table(kv, "t")
    assert kv.cas(catalog_key("t"), schema.raw, encode_drop_marker(schema, timer.wall_ns()))
    a.renew_leases(a.take_renewals())
    with pytest.raises(SQLError) as caught:
        a.execute("SELECT * FROM t")
    assert caught.value.code == "undefined_table"
