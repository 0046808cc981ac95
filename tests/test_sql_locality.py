"""Home regions in SQL: LOCALITY REGIONAL BY TABLE on CREATE and ALTER, the zones they write
for the stores (raftstore/kvserver/zones.py), and what SHOW says; ZoneMap's lookups.

The stores' side (leases moving to the home, splits at a table boundary, a restart of every
node) runs on real processes in tests/test_leases_cluster.py."""

from __future__ import annotations

import pytest

from raftstore.keyspace import ZONE_PREFIX, Zone, decode_zone, encode_zone, zone_key
from raftstore.kvserver.zones import ZoneMap
from sql import MemKV, Session, SQLError
from sql.catalog import read_table, table_span


@pytest.fixture
def kv():
    return MemKV()


@pytest.fixture
def db(kv):
    return Session(kv)


def zones(kv) -> dict[bytes, Zone]:
    found = {}
    for key, value in kv.scan(ZONE_PREFIX, ZONE_PREFIX + b"\xff", 100):
        zone = decode_zone(key, value)
        assert zone is not None, key
        found[zone.start] = zone
    return found


def home_of(kv, name: str) -> str | None:
    start, end = table_span(read_table(kv, name).id)
    zone = zones(kv).get(start)
    if zone is not None:
        assert zone.end == end   # the zone covers the table's whole span, nothing more
    return None if zone is None else zone.region


def fails(db, sql: str) -> SQLError:
    with pytest.raises(SQLError) as caught:
        db.execute(sql)
    return caught.value


def test_create_table_with_a_home_region_writes_its_zone_and_shows_it(db, kv):
    db.execute('CREATE TABLE eu (id INT PRIMARY KEY, v TEXT) LOCALITY REGIONAL BY TABLE IN "europe-west1"')
    db.execute("CREATE TABLE plain (id INT PRIMARY KEY)")
    assert home_of(kv, "eu") == "europe-west1" and home_of(kv, "plain") is None
    create = db.execute("SHOW CREATE TABLE eu").rows[0][1]
    assert create.endswith('LOCALITY REGIONAL BY TABLE IN "europe-west1"')
    assert db.execute("SHOW CREATE TABLE plain").rows[0][1].endswith("PRIMARY KEY (id))")
    # What SHOW CREATE prints makes the same table again.
    db.execute("DROP TABLE eu")
    db.execute(create)
    assert home_of(kv, "eu") == "europe-west1"
    shown = {row[0]: row[-1] for row in db.execute("SHOW TABLES").rows}
    assert shown == {"eu": 'REGIONAL BY TABLE IN "europe-west1"', "plain": "REGIONAL BY TABLE IN PRIMARY REGION"}


def test_show_ranges_names_each_ranges_home(db, kv):
    db.execute('CREATE TABLE eu (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE IN "europe-west1"')
    start, end = table_span(read_table(kv, "eu").id)
    kv.split(start)
    kv.split(end)
    result = db.execute("SHOW RANGES")
    home = result.columns.index("home_region")
    by_start = {row[1]: row[home] for row in result.rows}
    assert by_start["/eu"] == "europe-west1"
    assert [row[home] for row in result.rows].count("europe-west1") == 1
    assert "lease_seq" in result.columns
    only = db.execute("SHOW RANGES FROM TABLE eu").rows
    assert [row[home] for row in only] == ["europe-west1"]


def test_alter_table_set_locality_moves_the_home_and_primary_region_removes_it(db, kv):
    db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    assert db.execute('ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN "us-west1"').status == "ALTER TABLE"
    assert home_of(kv, "t") == "us-west1"
    db.execute('ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN "europe-west1"')
    assert home_of(kv, "t") == "europe-west1"
    db.execute("ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN PRIMARY REGION")
    assert home_of(kv, "t") is None and zones(kv) == {}
    db.execute('ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN "us-east1"')
    db.execute("ALTER TABLE t SET LOCALITY REGIONAL BY TABLE")   # no IN: the primary region
    assert zones(kv) == {}


def test_drop_table_removes_its_zone(db, kv):
    db.execute('CREATE TABLE t (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE IN "us-west1"')
    db.execute("INSERT INTO t VALUES (1), (2)")
    assert len(zones(kv)) == 1
    db.execute("DROP TABLE t")
    assert zones(kv) == {}


def test_a_region_no_node_is_in_is_refused_and_nothing_is_written(db, kv):
    error = fails(db, 'CREATE TABLE t (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE IN "mars-1"')
    assert error.code == "undefined_object"
    assert 'region "mars-1" is not a region of this cluster' in error.message
    assert "europe-west1, us-east1, us-west1" in error.message and error.column == 37
    assert read_table(kv, "t") is None and zones(kv) == {}
    db.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    assert fails(db, 'ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN "US-EAST1"').code == "undefined_object"
    assert zones(kv) == {}
    missing = fails(db, 'ALTER TABLE nope SET LOCALITY REGIONAL BY TABLE IN "us-east1"')
    assert missing.code == "undefined_table" and '"nope"' in missing.message


def test_create_if_not_exists_leaves_the_existing_tables_home(db, kv):
    db.execute('CREATE TABLE t (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE IN "us-west1"')
    db.execute('CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE IN "us-east1"')
    assert home_of(kv, "t") == "us-west1" and len(zones(kv)) == 1
    assert fails(db, 'CREATE TABLE t (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE IN "us-east1"').code == "duplicate_table"
    assert home_of(kv, "t") == "us-west1" and len(zones(kv)) == 1


@pytest.mark.parametrize("sql, words", [
    ("CREATE TABLE t (id INT PRIMARY KEY) LOCALITY REGIONAL BY ROW", "LOCALITY REGIONAL BY ROW"),
    ("CREATE TABLE t (id INT PRIMARY KEY) LOCALITY GLOBAL", "LOCALITY GLOBAL"),
    ("ALTER TABLE t SET LOCALITY GLOBAL", "LOCALITY GLOBAL"),
    ("ALTER TABLE t ADD COLUMN c INT", "this ALTER TABLE"),
    ("ALTER TABLE t RENAME TO u", "this ALTER TABLE"),
    ('ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN "us-east1", ADD COLUMN c INT', "this ALTER TABLE"),
    ("ALTER INDEX i RENAME TO j", "ALTER INDEX"),
    ("CREATE TABLE t (id INT PRIMARY KEY) WITH (fillfactor = 70)", "table properties"),
    ("CREATE TABLE t (id INT PRIMARY KEY) LOCALITY REGIONAL BY TABLE LOCALITY REGIONAL BY TABLE", "LOCALITY given twice"),
])
def test_localities_and_alters_not_served_are_named(db, sql, words):
    error = fails(db, sql)
    assert error.code == "unsupported" and words in error.message


@pytest.mark.parametrize("sql", [
    "ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN 5",
    "ALTER TABLE t SET LOCALITY REGIONAL",
    "CREATE TABLE t (id INT PRIMARY KEY) LOCALITY",
])
def test_a_malformed_locality_is_a_syntax_error(db, sql):
    assert fails(db, sql).code == "syntax"


# --- ZoneMap (pure) ----------------------------------------------------------------------------


def test_zone_map_finds_the_zone_of_a_key_and_the_boundaries_inside_a_span():
    zmap = ZoneMap([Zone(b"t2", b"t3", "eu"), Zone(b"t5", b"t6", "us")])
    assert [zmap.region_for(k) for k in (b"t1", b"t2", b"t2zz", b"t3", b"t5", b"t6")] == [
        None, "eu", "eu", None, "us", None]
    assert zmap.boundary_inside(b"\x02", None) == b"t2"
    assert zmap.boundary_inside(b"t2", None) == b"t3"      # its own start is no boundary inside it
    assert zmap.boundary_inside(b"t2", b"t3") is None      # exactly one zone: nothing to split
    assert zmap.boundary_inside(b"t3", b"t5") is None
    assert zmap.boundary_inside(b"t4", b"t7") == b"t5"
    assert zmap.boundary_inside(b"t6", None) is None


def test_zone_map_keeps_the_first_of_overlapping_zones_and_compares_by_content():
    zmap = ZoneMap([Zone(b"b", b"d", "two"), Zone(b"a", b"c", "one")])
    assert zmap.zones == (Zone(b"a", b"c", "one"),)
    assert zmap == ZoneMap([Zone(b"a", b"c", "one")]) and zmap != ZoneMap()


@pytest.mark.parametrize("key, value", [
    (b"\x01q" + b"t", encode_zone(b"u", "eu")),        # not a zone key
    (zone_key(b"t"), b"\xc1"),                         # not msgpack
    (zone_key(b"t"), encode_zone(b"s", "eu")),         # end before start
    (zone_key(b"t"), encode_zone(b"u", "")),           # no region
    (zone_key(b"t"), encode_zone(b"u", "r" * 65)),     # a region name too long
    (zone_key(b"t"), b"\x92\xa1u\xa2eu"),              # end is text, not bytes
])
def test_a_malformed_zone_record_is_skipped_not_trusted(key, value):
    assert decode_zone(key, value) is None


def test_a_zone_record_reads_back():
    assert decode_zone(zone_key(b"t1"), encode_zone(b"t2", "eu")) == Zone(b"t1", b"t2", "eu")
