"""Statements against the in-memory KV (sql/memkv.py): types, constraints, writes, queries,
parameters, planning (counted KV calls), EXPLAIN and SHOW."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftstore.errors import UnavailableError
from raftstore.keys import encode_key
from sql import MemKV, Result, Session, SQLError
from sql.constants import ROW_KEY_PREFIX
from sql.errors import CODES
from sql.kv import write_each

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)


class CountingKV:
    """Wraps a KV and records (method, key or (start, end)) of every call; `get_many` and
    `write_if_many` go through `get` and `write_if`, so each key is logged (and a subclass
    that overrides `write_if` sees every write)."""

    def __init__(self, kv):
        self.kv = kv
        self.log: list[tuple[str, object]] = []

    def get(self, key):
        self.log.append(("get", key))
        return self.kv.get(key)

    def get_many(self, keys):
        return [self.get(key) for key in keys]

    def scan(self, start, end, limit):
        self.log.append(("scan", (start, end, limit)))
        return self.kv.scan(start, end, limit)

    def put(self, key, value):
        self.log.append(("put", key))
        return self.kv.put(key, value)

    def delete(self, key):
        self.log.append(("delete", key))
        return self.kv.delete(key)

    def cas(self, key, expected, new):
        self.log.append(("cas", key))
        return self.kv.cas(key, expected, new)

    def get_version(self, key):
        self.log.append(("get_version", key))
        return self.kv.get_version(key)

    def scan_versions(self, start, end, limit):
        self.log.append(("scan_versions", (start, end, limit)))
        return self.kv.scan_versions(start, end, limit)

    def write_if(self, key, if_version, value):
        self.log.append(("write_if", key))
        return self.kv.write_if(key, if_version, value)

    def write_if_many(self, writes, *, stop_after_failure=True, lock=None, all_or_nothing=False):
        return write_each(self.write_if, writes, stop_after_failure=stop_after_failure)

    def set_fields(self, key, width, fields):
        self.log.append(("set_fields", key))
        return self.kv.set_fields(key, width, fields)

    def get_for_update(self, key):
        self.log.append(("get_for_update", key))
        return self.kv.get_for_update(key)

    def confirm(self, key, if_version, *, lock=None):
        self.log.append(("confirm", key))
        return self.kv.confirm(key, if_version, lock=lock)

    def ranges_for(self, start, end):
        return self.kv.ranges_for(start, end)

    def regions(self):
        return self.kv.regions()

    def check_consistency(self, start, end):
        return self.kv.check_consistency(start, end)

    def now_ns(self):
        return self.kv.now_ns()

    def follower_read(self, spec, spans):
        self.log.append(("follower_read", (spec, spans)))
        return self.kv.follower_read(spec, spans)

    def data_calls(self) -> list[tuple[str, object]]:
        """Calls on row keys only (catalog reads are not the planner's choice)."""
        out = []
        for method, arg in self.log:
            key = arg[0] if isinstance(arg, tuple) else arg
            if key.startswith(ROW_KEY_PREFIX):
                out.append((method, arg))
        return out


@pytest.fixture
def kv() -> CountingKV:
    return CountingKV(MemKV())


@pytest.fixture
def db(kv) -> Session:
    return Session(kv, clock=lambda: NOW, rng=random.Random(7))


def rows(db: Session, sql: str, params=None) -> list[list]:
    return db.execute(sql, params).rows


def error(db: Session, sql: str, params=None) -> SQLError:
    with pytest.raises(SQLError) as caught:
        db.execute(sql, params)
    return caught.value


@pytest.fixture
def users(db) -> Session:
    db.execute(
        "CREATE TABLE users (id INT PRIMARY KEY, name TEXT NOT NULL, age INT, "
        "score FLOAT DEFAULT 1.5, active BOOL DEFAULT true)"
    )
    db.execute(
        "INSERT INTO users (id, name, age, score) VALUES "
        "(1, 'ann', 30, 2.5), (2, 'bob', NULL, NULL), (3, 'cy', 25, 9.0), (4, 'dee', 41, 1.0)"
    )
    return db


# --- results and types ----------------------------------------------------------------------------


def test_select_without_from_returns_one_row(db) -> None:
    result = db.execute("SELECT 1, 'a', 2.5, true, NULL")
    assert result.rows == [[1, "a", 2.5, True, None]]
    assert result.types == ["INT", "TEXT", "FLOAT", "BOOL", "TEXT"]
    assert result.columns == ["?column?"] * 3 + ["bool", "?column?"]
    assert result.status == "SELECT 1" and result.rowcount == 1


def test_every_column_type_round_trips(db) -> None:
    db.execute(
        "CREATE TABLE t (i INT PRIMARY KEY, b BIGINT, f FLOAT, s TEXT, v VARCHAR, st STRING, "
        "o BOOL, y BYTES, ya BYTEA, ts TIMESTAMP)"
    )
    db.execute(
        "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [1, -(2**63), 0.25, "x\x00y", "", "é", False, b"\x00\xff", bytearray(b"ab"), NOW],
    )
    db.execute("INSERT INTO t (i, ts, y) VALUES (2, '2024-02-29 23:59:59.5', '\\x0aff')")
    result = db.execute("SELECT * FROM t ORDER BY i")
    assert result.types == ["INT", "INT", "FLOAT", "TEXT", "TEXT", "TEXT", "BOOL", "BYTES",
                            "BYTES", "TIMESTAMP"]
    assert result.rows[0] == [1, -(2**63), 0.25, "x\x00y", "", "é", False, b"\x00\xff", b"ab", NOW]
    assert result.rows[1][9] == dt.datetime(2024, 2, 29, 23, 59, 59, 500000)
    assert result.rows[1][7] == b"\x0a\xff"


def test_timestamp_is_stored_as_microseconds_and_compares_with_literals(db) -> None:
    db.execute("CREATE TABLE ev (ts TIMESTAMP PRIMARY KEY, n INT)")
    db.execute("INSERT INTO ev VALUES ('2026-01-01 00:00:00', 1), ('2026-06-01', 2)")
    assert rows(db, "SELECT n FROM ev WHERE ts > '2026-03-01'") == [[2]]
    assert rows(db, "SELECT n FROM ev WHERE ts = $1", [dt.datetime(2026, 1, 1)]) == [[1]]


def test_hidden_rowid_fills_tables_without_primary_key(db) -> None:
    db.execute("CREATE TABLE log (msg TEXT, n INT)")
    db.execute("INSERT INTO log VALUES ('a', 1), ('a', 1)")
    result = db.execute("SELECT * FROM log")
    assert result.columns == ["msg", "n"]
    assert result.rows == [["a", 1], ["a", 1]]
    ids = rows(db, "SELECT rowid FROM log")
    assert len({r[0] for r in ids}) == 2 and all(0 <= r[0] < 2**63 for r in ids)


# --- constraints change nothing ------------------------------------------------------------------


def _snapshot(kv: CountingKV) -> list:
    return kv.kv.items()


def test_duplicate_primary_key_fails_and_writes_nothing(users, kv) -> None:
    before = _snapshot(kv)
    e = error(users, "INSERT INTO users (id, name) VALUES (10, 'new'), (2, 'dup')")
    assert e.code == "unique_violation" and "(id)=(2)" in e.message
    assert _snapshot(kv) == before
    e = error(users, "INSERT INTO users (id, name) VALUES (11, 'a'), (11, 'b')")
    assert e.code == "unique_violation"
    assert _snapshot(kv) == before


def test_null_in_not_null_column_fails_and_writes_nothing(users, kv) -> None:
    before = _snapshot(kv)
    e = error(users, "INSERT INTO users (id, name) VALUES (10, 'ok'), (11, NULL)")
    assert e.code == "not_null_violation" and '"name"' in e.message
    e = error(users, "INSERT INTO users (id, name) VALUES (NULL, 'x')")
    assert e.code == "not_null_violation"
    e = error(users, "UPDATE users SET name = NULL WHERE id = 1")
    assert e.code == "not_null_violation"
    assert _snapshot(kv) == before


def test_wrong_type_fails_and_writes_nothing(users, kv) -> None:
    before = _snapshot(kv)
    for sql, params in [
        ("INSERT INTO users (id, name) VALUES (10, 5)", None),
        ("INSERT INTO users (id, name) VALUES (1.5, 'x')", None),
        ("INSERT INTO users (id, name) VALUES ('ten', 'x')", None),
        ("INSERT INTO users (id, name) VALUES ($1, 'x')", [2.5]),
        ("INSERT INTO users (id, name) VALUES (10, 'a'), (11, $1)", [7]),
        ("INSERT INTO users (id, name) VALUES (9223372036854775808, 'big')", None),
        ("UPDATE users SET age = 'old'", None),
        ("UPDATE users SET age = age * 9223372036854775807", None),
    ]:
        assert error(users, sql, params).code == "datatype_mismatch", sql
    assert _snapshot(kv) == before


def test_int_widens_to_float_but_float_never_narrows_to_int(users) -> None:
    users.execute("INSERT INTO users (id, name, score) VALUES (10, 'w', 3)")
    assert rows(users, "SELECT score FROM users WHERE id = 10") == [[3.0]]
    assert isinstance(rows(users, "SELECT score FROM users WHERE id = 10")[0][0], float)


def test_defaults_fill_missing_columns_and_default_keyword(db) -> None:
    db.execute(
        "CREATE TABLE d (id INT PRIMARY KEY, a TEXT DEFAULT 'x' || 'y', b INT DEFAULT 1 + 2, "
        "c TIMESTAMP DEFAULT now(), e INT)"
    )
    db.execute("INSERT INTO d (id) VALUES (1)")
    db.execute("INSERT INTO d VALUES (2, DEFAULT, 7, DEFAULT, DEFAULT)")
    assert rows(db, "SELECT * FROM d ORDER BY id") == [
        [1, "xy", 3, NOW, None], [2, "xy", 7, NOW, None],
    ]


def test_bad_defaults_are_rejected_at_create(db) -> None:
    assert error(db, "CREATE TABLE x (a INT PRIMARY KEY, b INT DEFAULT 'abc')").code == (
        "datatype_mismatch"
    )
    assert error(db, "CREATE TABLE x (a INT PRIMARY KEY, b INT DEFAULT a + 1)").code == "syntax"


def test_create_table_if_not_exists_and_duplicates(db) -> None:
    db.execute("CREATE TABLE t (a INT PRIMARY KEY)")
    assert error(db, "CREATE TABLE t (b TEXT PRIMARY KEY)").code == "duplicate_table"
    assert db.execute("CREATE TABLE IF NOT EXISTS t (b TEXT PRIMARY KEY)").status == "CREATE TABLE"
    assert db.execute("SELECT * FROM t").columns == ["a"]


def test_create_table_validation(db) -> None:
    assert error(db, "CREATE TABLE x (a INT PRIMARY KEY, a TEXT)").code == "syntax"
    assert error(db, "CREATE TABLE x (a INT PRIMARY KEY, b INT PRIMARY KEY)").code == "syntax"
    assert error(db, "CREATE TABLE x (a INT, PRIMARY KEY (nope))").code == "undefined_column"
    assert error(db, "CREATE TABLE x (a CHAR(10) PRIMARY KEY)").code == "unsupported"
    assert error(db, "CREATE TABLE x (a NUMERIC(10, 2) PRIMARY KEY)").code == "unsupported"
    assert error(db, "CREATE TABLE x (a TIMESTAMPTZ PRIMARY KEY)").code == "unsupported"
    assert error(db, "CREATE TABLE x (a INT UNIQUE)").code == "unsupported"


def test_composite_primary_key_orders_rows_by_key(db) -> None:
    db.execute("CREATE TABLE o (u INT, n TEXT, v INT, PRIMARY KEY (u, n))")
    db.execute("INSERT INTO o VALUES (2, 'b', 1), (1, 'z', 2), (2, 'a', 3), (1, 'a', 4)")
    assert rows(db, "SELECT u, n FROM o") == [[1, "a"], [1, "z"], [2, "a"], [2, "b"]]
    assert error(db, "INSERT INTO o VALUES (2, 'a', 9)").code == "unique_violation"
    assert error(db, "INSERT INTO o (u, v) VALUES (3, 1)").code == "not_null_violation"


def test_drop_table_removes_schema_and_rows(users, kv) -> None:
    users.execute("DROP TABLE users")
    assert not [k for k, _ in kv.kv.items() if k.startswith(ROW_KEY_PREFIX)]
    assert error(users, "SELECT * FROM users").code == "undefined_table"
    assert error(users, "DROP TABLE users").code == "undefined_table"
    assert users.execute("DROP TABLE IF EXISTS users").status == "DROP TABLE"
    users.execute("CREATE TABLE users (id INT PRIMARY KEY)")
    assert rows(users, "SELECT * FROM users") == []


def test_drop_table_deletes_rows_in_batches(db, kv) -> None:
    db.execute("CREATE TABLE big (id INT PRIMARY KEY)")
    for start in range(0, 2500, 500):
        values = ", ".join(f"({i})" for i in range(start, start + 500))
        db.execute(f"INSERT INTO big VALUES {values}")
    kv.log.clear()
    db.execute("DROP TABLE big")
    scans = [a for m, a in kv.log if m == "scan"]
    assert len(scans) == 3 and all(limit <= 1000 for _, _, limit in scans)
    assert sum(1 for m, _ in kv.log if m == "delete") == 2500  # the name is freed by a CAS


# --- INSERT variants ------------------------------------------------------------------------------


def test_on_conflict_do_update_uses_excluded_and_existing_values(users) -> None:
    result = users.execute(
        "INSERT INTO users (id, name, age) VALUES (1, 'x', 5), (9, 'nine', 9) "
        "ON CONFLICT (id) DO UPDATE SET age = users.age + excluded.age, name = excluded.name"
    )
    assert result.rowcount == 2
    assert rows(users, "SELECT id, name, age FROM users WHERE id IN (1, 9) ORDER BY id") == [
        [1, "x", 35], [9, "nine", 9],
    ]


def test_on_conflict_do_update_where_and_do_nothing(users) -> None:
    users.execute(
        "INSERT INTO users (id, name) VALUES (1, 'no'), (3, 'yes') ON CONFLICT (id) "
        "DO UPDATE SET name = excluded.name WHERE users.age < 30"
    )
    assert rows(users, "SELECT name FROM users WHERE id IN (1, 3) ORDER BY id") == [
        ["ann"], ["yes"],
    ]
    result = users.execute(
        "INSERT INTO users (id, name) VALUES (1, 'x'), (5, 'e'), (5, 'f') ON CONFLICT DO NOTHING"
    )
    assert result.rowcount == 1
    assert rows(users, "SELECT name FROM users WHERE id IN (1, 5) ORDER BY id") == [["ann"], ["e"]]


def test_on_conflict_rejects_other_targets_and_double_updates(users) -> None:
    assert error(users, "INSERT INTO users (id, name) VALUES (1, 'x') ON CONFLICT (name) "
                        "DO NOTHING").code == "unsupported"
    e = error(users, "INSERT INTO users (id, name) VALUES (7, 'a'), (7, 'b') "
                     "ON CONFLICT (id) DO UPDATE SET name = excluded.name")
    assert e.code == "unique_violation" and "second time" in e.message


def test_upsert_updates_only_named_columns_or_all_with_defaults(users) -> None:
    users.execute("UPSERT INTO users (id, name) VALUES (1, 'ANN'), (8, 'eve')")
    assert rows(users, "SELECT id, name, age, score FROM users WHERE id IN (1, 8) ORDER BY id") == [
        [1, "ANN", 30, 2.5], [8, "eve", None, 1.5],
    ]
    users.execute("UPSERT INTO users VALUES (3, 'CY', 1)")  # no column list: the rest default
    assert rows(users, "SELECT * FROM users WHERE id = 3") == [[3, "CY", 1, 1.5, True]]
    assert users.execute("UPSERT INTO users VALUES (3, 'C', 2, 0.5, false)").status == "UPSERT 1"


def test_insert_select_copies_rows(users) -> None:
    users.execute("CREATE TABLE names (n TEXT PRIMARY KEY, a INT)")
    result = users.execute("INSERT INTO names SELECT name, age FROM users WHERE age > 26")
    assert result.rowcount == 2
    assert rows(users, "SELECT * FROM names") == [["ann", 30], ["dee", 41]]


def test_insert_cas_makes_a_concurrent_duplicate_fail(users, kv) -> None:
    other = Session(kv)
    other.execute("INSERT INTO users (id, name) VALUES (20, 'first')")
    assert error(users, "INSERT INTO users (id, name) VALUES (20, 'second')").code == (
        "unique_violation"
    )
    assert rows(users, "SELECT name FROM users WHERE id = 20") == [["first"]]


# --- UPDATE / DELETE ------------------------------------------------------------------------------


def test_update_and_delete_with_where(users) -> None:
    result = users.execute("UPDATE users SET age = age + 1, active = false WHERE age > 26")
    assert result.rowcount == 2
    assert rows(users, "SELECT id, age, active FROM users ORDER BY id") == [
        [1, 31, False], [2, None, True], [3, 25, True], [4, 42, False],
    ]
    assert users.execute("DELETE FROM users WHERE age IS NULL OR name LIKE 'd%'").rowcount == 2
    assert rows(users, "SELECT id FROM users") == [[1], [3]]
    assert users.execute("DELETE FROM users").status == "DELETE 2"


def test_update_can_move_primary_keys_checked_at_statement_end(users) -> None:
    users.execute("UPDATE users SET id = id + 1")  # 1->2 while 2 still exists: fine at the end
    assert rows(users, "SELECT id, name FROM users ORDER BY id") == [
        [2, "ann"], [3, "bob"], [4, "cy"], [5, "dee"],
    ]
    assert error(users, "UPDATE users SET id = 5 WHERE id = 2").code == "unique_violation"
    assert error(users, "UPDATE users SET id = 9 WHERE id > 2").code == "unique_violation"
    assert rows(users, "SELECT count(*) FROM users") == [[4]]


def test_update_set_reads_old_row_values(users) -> None:
    users.execute("UPDATE users SET age = id, id = id + 100 WHERE id = 1")
    assert rows(users, "SELECT id, age FROM users WHERE id = 101") == [[101, 1]]


# --- queries --------------------------------------------------------------------------------------


def test_three_valued_logic(db) -> None:
    assert rows(db, "SELECT NULL AND false, NULL AND true, NULL OR true, NULL OR false, "
                    "NOT NULL") == [[False, None, True, None, None]]
    assert rows(db, "SELECT 1 IN (2, NULL), 1 IN (1, NULL), NULL = NULL, NULL IS NULL, "
                    "1 NOT IN (2, NULL), 2 BETWEEN 1 AND NULL, 0 BETWEEN 1 AND NULL") == [
        [None, True, None, True, None, None, False]
    ]


def test_where_keeps_only_true_rows(users) -> None:
    assert rows(users, "SELECT id FROM users WHERE age > 26") == [[1], [4]]
    assert rows(users, "SELECT id FROM users WHERE NOT (age > 26)") == [[3]]
    assert rows(users, "SELECT id FROM users WHERE age IS NULL") == [[2]]
    assert rows(users, "SELECT id FROM users WHERE age IS NOT NULL "
                       "AND score IS DISTINCT FROM 1.0") == [[1], [3]]


def test_expressions(db) -> None:
    assert rows(db, "SELECT 7 / 2, -7 / 2, 7 % 3, -7 % 3, 7.0 / 2, 2 * 3 + 1, -(3)") == [
        [3, -3, 1, -1, 3.5, 7, -3]
    ]
    assert rows(db, "SELECT 'a' || 'b' || 1, NULL || 'x', lower('ÀbC'), upper('abc'), "
                    "length('héllo'), length(x'00ff'), abs(-4), abs(-2.5)") == [
        ["ab1", None, "àbc", "ABC", 5, 2, 4, 2.5]
    ]
    assert rows(db, "SELECT CASE WHEN 1 > 2 THEN 'a' WHEN 2 > 1 THEN 'b' END, "
                    "CASE 3 WHEN 1 THEN 'one' ELSE 'other' END, CASE WHEN false THEN 1 END, "
                    "coalesce(NULL, NULL, 3), coalesce(1, 2.5), nullif(1, 1), nullif(1, 2)") == [
        ["b", "other", None, 3, 1.0, None, 1]
    ]
    assert rows(db, "SELECT CAST('12' AS INT), CAST(12 AS TEXT), CAST(2.5 AS INT), "
                    "CAST(3 AS FLOAT), '5'::INT + 1, CAST(1.5 AS TEXT), CAST('t' AS BOOL), "
                    "CAST(TIMESTAMP '2026-01-02 03:04:05' AS TEXT)") == [
        [12, "12", 2, 3.0, 6, "1.5", True, "2026-01-02 03:04:05"]
    ]
    assert rows(db, "SELECT 'abc' LIKE 'a%', 'abc' LIKE 'A%', 'abc' ILIKE 'A%', "
                    "'a_c' LIKE 'a\\_c', 'abc' LIKE 'a\\_c', '100%' LIKE '100!%' ESCAPE '!', "
                    "'abc' NOT LIKE '_b_'") == [[True, False, True, True, False, True, False]]


def test_division_by_zero_is_an_error(users) -> None:
    for sql in ["SELECT 1 / 0", "SELECT 1 % 0", "SELECT 1.5 / 0",
                "SELECT age / (id - id) FROM users"]:
        assert error(users, sql).code == "division_by_zero", sql
    assert rows(users, "SELECT age / (id - id) FROM users WHERE age IS NULL") == [[None]]


def test_type_errors_are_found_before_running(users) -> None:
    for sql in [
        "SELECT * FROM users WHERE name = 1",
        "SELECT name + 1 FROM users",
        "SELECT * FROM users WHERE age",
        "SELECT sum(name) FROM users",
        "SELECT * FROM users WHERE active = 'maybe'",
    ]:
        assert error(users, sql).code == "datatype_mismatch", sql


def test_unknown_names_are_reported_with_position(users) -> None:
    e = error(users, "SELECT nope FROM users")
    assert e.code == "undefined_column" and e.position == 7 and (e.line, e.column) == (1, 8)
    e = error(users, "SELECT * FROM nothere")
    assert e.code == "undefined_table" and e.position == 14
    e = error(users, "SELECT x.id FROM users")
    assert e.code == "undefined_table"
    users.execute("CREATE TABLE pets (id INT PRIMARY KEY, owner INT)")
    assert error(users, "SELECT id FROM users, pets").code == "undefined_column"  # ambiguous


def test_order_by_nulls_default_like_postgresql(users) -> None:
    assert rows(users, "SELECT id FROM users ORDER BY age") == [[3], [1], [4], [2]]
    assert rows(users, "SELECT id FROM users ORDER BY age DESC") == [[2], [4], [1], [3]]
    assert rows(users, "SELECT id FROM users ORDER BY age NULLS FIRST") == [[2], [3], [1], [4]]
    assert rows(users, "SELECT id FROM users ORDER BY age DESC NULLS LAST") == [[4], [1], [3], [2]]
    assert rows(users, "SELECT id, age AS a FROM users ORDER BY a ASC NULLS FIRST, 1 DESC") == [
        [2, None], [3, 25], [1, 30], [4, 41],
    ]
    assert rows(users, "SELECT name FROM users ORDER BY score * -1, id") == [
        ["cy"], ["ann"], ["dee"], ["bob"],
    ]


def test_limit_and_offset(users) -> None:
    assert rows(users, "SELECT id FROM users ORDER BY id DESC LIMIT 2") == [[4], [3]]
    assert rows(users, "SELECT id FROM users ORDER BY id LIMIT 2 OFFSET 1") == [[2], [3]]
    assert rows(users, "SELECT id FROM users LIMIT $1 OFFSET $2", [1, 3]) == [[4]]
    assert rows(users, "SELECT id FROM users LIMIT ALL OFFSET 10") == []
    assert rows(users, "SELECT id FROM users LIMIT 0") == []
    assert error(users, "SELECT id FROM users LIMIT -1").code == "invalid_parameter"


def test_limit_stops_the_scan_early(db, kv) -> None:
    db.execute("CREATE TABLE n (id INT PRIMARY KEY)")
    db.execute("INSERT INTO n VALUES " + ", ".join(f"({i})" for i in range(3000)))
    kv.log.clear()
    assert rows(db, "SELECT id FROM n LIMIT 3") == [[0], [1], [2]]
    scans = [a for m, a in kv.data_calls() if m == "scan"]
    assert len(scans) == 1 and scans[0][2] < 100


def test_aggregates_group_by_having(users) -> None:
    users.execute("INSERT INTO users (id, name, age) VALUES (5, 'ann', 20), (6, 'bob', 50)")
    result = users.execute(
        "SELECT name, count(*), count(age), sum(age), min(age), max(age), avg(age) FROM users "
        "GROUP BY name HAVING count(*) > 1 ORDER BY name"
    )
    assert result.columns == ["name", "count", "count", "sum", "min", "max", "avg"]
    assert result.types == ["TEXT", "INT", "INT", "INT", "INT", "INT", "FLOAT"]
    assert result.rows == [["ann", 2, 2, 50, 20, 30, 25.0], ["bob", 2, 1, 50, 50, 50, 50.0]]
    assert rows(users, "SELECT count(*), sum(age), avg(score) FROM users WHERE id > 100") == [
        [0, None, None]
    ]
    assert rows(users, "SELECT count(DISTINCT name) FROM users") == [[4]]
    assert rows(users, "SELECT age > 26 AS old, count(*) FROM users GROUP BY 1 "
                       "ORDER BY old NULLS FIRST") == [[None, 1], [False, 2], [True, 3]]
    assert rows(users, "SELECT sum(age) * 2 + count(*) FROM users") == [[338]]


def test_grouping_errors(users) -> None:
    assert error(users, "SELECT name, count(*) FROM users").code == "syntax"
    assert error(users, "SELECT * FROM users WHERE count(*) > 1").code == "syntax"
    assert error(users, "SELECT sum(count(*)) FROM users").code == "syntax"


def test_distinct(users) -> None:
    users.execute("INSERT INTO users (id, name, age) VALUES (5, 'ann', 20)")
    assert rows(users, "SELECT DISTINCT name FROM users ORDER BY name") == [
        ["ann"], ["bob"], ["cy"], ["dee"],
    ]


def test_inner_joins_and_comma_joins(users) -> None:
    users.execute("CREATE TABLE pets (owner INT, name TEXT, PRIMARY KEY (owner, name))")
    users.execute("INSERT INTO pets VALUES (1, 'rex'), (1, 'tom'), (3, 'kit'), (7, 'lost')")
    expected = [["ann", "rex"], ["ann", "tom"], ["cy", "kit"]]
    assert rows(users, "SELECT u.name, p.name FROM users u JOIN pets p ON u.id = p.owner "
                       "ORDER BY 1, 2") == expected
    assert rows(users, "SELECT users.name, pets.name FROM users, pets "
                       "WHERE users.id = pets.owner ORDER BY 1, 2") == expected
    assert rows(users, "SELECT u.name, p.name FROM users AS u INNER JOIN pets AS p "
                       "ON u.id = p.owner AND p.name > 'rex' WHERE u.age > 0") == [["ann", "tom"]]
    assert rows(users, "SELECT count(*) FROM users CROSS JOIN pets") == [[16]]
    result = users.execute(
        "SELECT * FROM users u JOIN pets p ON u.id = p.owner WHERE p.name = 'kit'"
    )
    assert result.columns == ["id", "name", "age", "score", "active", "owner", "name"]
    assert result.rows == [[3, "cy", 25, 9.0, True, 3, "kit"]]
    assert rows(users, "SELECT p.* FROM users u JOIN pets p ON u.id = p.owner WHERE u.id = 3") == [
        [3, "kit"]
    ]


def test_join_with_three_tables_and_null_keys(db) -> None:
    db.execute("CREATE TABLE a (id INT PRIMARY KEY, b INT)")
    db.execute("CREATE TABLE b (id INT PRIMARY KEY, c INT)")
    db.execute("CREATE TABLE c (id INT PRIMARY KEY, v TEXT)")
    db.execute("INSERT INTO a VALUES (1, 10), (2, NULL), (3, 30)")
    db.execute("INSERT INTO b VALUES (10, 100), (30, NULL)")
    db.execute("INSERT INTO c VALUES (100, 'x')")
    assert rows(db, "SELECT a.id, c.v FROM a JOIN b ON a.b = b.id "
                    "JOIN c ON b.c = c.id") == [[1, "x"]]


def test_parameters_in_both_styles_are_values_not_text(users) -> None:
    hostile = "x'; DROP TABLE users; --"
    users.execute("INSERT INTO users (id, name) VALUES ($1, $2)", [50, hostile])
    users.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (51, hostile))
    found = rows(users, "SELECT id FROM users WHERE name = %s ORDER BY id", [hostile])
    assert found == [[50], [51]]
    assert rows(users, "SELECT $1::TEXT || $2", ["a", "b"]) == [["ab"]]
    assert rows(users, "SELECT count(*) FROM users WHERE age > $1", ["26"]) == [[2]]
    result = users.execute("SELECT $1, $2", [1.5, None])
    assert result.types == ["FLOAT", "TEXT"]


def test_parameter_count_and_types_are_checked(users) -> None:
    assert error(users, "SELECT $1 + 1", []).code == "invalid_parameter"
    assert error(users, "SELECT 1", [1]).code == "invalid_parameter"
    assert error(users, "SELECT $1", [object()]).code == "invalid_parameter"
    assert error(users, "SELECT * FROM users WHERE id = $1", ["one"]).code == "datatype_mismatch"
    assert error(users, "SELECT * FROM users WHERE id = $1", [True]).code == "datatype_mismatch"


def test_one_statement_per_call(db) -> None:
    assert db.execute("SELECT 1;").rows == [[1]]
    assert error(db, "SELECT 1; SELECT 2").code == "unsupported"
    assert error(db, "  ").code == "syntax"


def test_as_of_system_time_makes_the_statement_a_follower_read_of_its_tables(users, kv) -> None:
    from sql.asof import BOUNDED, EXACT
    from sql.catalog import table_span
    assert len(rows(users, "SELECT * FROM users AS OF SYSTEM TIME with_max_staleness('10s')")) == 4
    [(_, (spec, spans))] = [c for c in kv.log if c[0] == "follower_read"]
    assert spec.kind == BOUNDED and spans == [table_span(users._schema("users").id)]
    e = error(users, "SELECT * FROM users AS OF SYSTEM TIME '-5s'")   # MemKV keeps no history
    assert e.code == "feature_not_supported" and "no old versions" in e.message
    assert [c[1][0].kind for c in kv.log if c[0] == "follower_read"][-1] == EXACT


def test_explain_of_a_follower_read_says_the_nearest_replica_serves_it_if_it_has_closed_the_timestamp(users):
    rows_ = rows(users, "EXPLAIN SELECT * FROM users AS OF SYSTEM TIME with_max_staleness('10s') WHERE id = 1")
    assert rows_ and all(r[5].startswith("nearest replica if it has closed a timestamp within the bound, else ")
                         for r in rows_ if r[4]), rows_
    strong = rows(users, "EXPLAIN SELECT * FROM users WHERE id = 1")
    assert not any("nearest replica" in r[5] for r in strong), strong
    nearest = rows(users, "EXPLAIN SELECT * FROM users AS OF SYSTEM TIME with_max_staleness('10s', true) WHERE id = 1")
    assert nearest and all(r[5].endswith("else an error (nearest_only)") for r in nearest if r[4]), nearest


@pytest.mark.parametrize("clause, named", [
    ("'yesterday'", "is not a timestamp"),
    ("with_max_staleness('soon')", "positive interval"),
    ("with_max_staleness('-5s')", "positive interval"),
    ("with_max_staleness('10s', 'yes')", "nearest_only is true or false"),
    ("follower_read_timestamp(1)", "takes no arguments"),
    ("now()", "does not take current_timestamp()"),
    ("'2999-01-01 00:00:00'", "in the future"),
    ("id", "constant timestamp"),
])
def test_a_bad_as_of_system_time_is_named(users, clause, named) -> None:
    e = error(users, "SELECT * FROM users AS OF SYSTEM TIME %s" % clause)
    assert e.code == "invalid_value" and named in e.message, e.message


def test_set_and_show_the_follower_read_default_of_a_session(users, kv) -> None:
    assert rows(users, "SHOW default_transaction_use_follower_reads") == [["off"]]
    assert users.execute("SET default_transaction_use_follower_reads = on").status == "SET"
    assert rows(users, "SHOW default_transaction_use_follower_reads") == [["on"]]
    assert len(rows(users, "SELECT * FROM users")) == 4
    assert [c[1][0].form for c in kv.log if c[0] == "follower_read"] == ["default_transaction_use_follower_reads = on"]
    users.execute("SET default_transaction_use_follower_reads TO default")
    assert rows(users, "SHOW default_transaction_use_follower_reads") == [["off"]]
    e = error(users, "SET default_transaction_use_follower_reads = maybe")
    assert e.code == "invalid_value" and "on or off" in e.message
    assert error(users, "SET work_mem = 64").code == "undefined_object"


def test_kv_errors_propagate_unwrapped(users, kv) -> None:
    def broken(*args):
        raise UnavailableError("no quorum for range 2")

    kv.kv.scan = broken
    with pytest.raises(UnavailableError):
        users.execute("SELECT * FROM users")
    kv.kv.get = broken
    with pytest.raises(UnavailableError):
        users.execute("SELECT * FROM users WHERE id = 1")


# --- planning: which range operations a statement becomes -----------------------------------------


@pytest.fixture
def orders(db, kv) -> Session:
    db.execute("CREATE TABLE orders (cust INT, seq INT, total FLOAT, PRIMARY KEY (cust, seq))")
    values = ", ".join(f"({c}, {s}, {c * 10 + s}.5)" for c in range(1, 21) for s in range(1, 11))
    db.execute(f"INSERT INTO orders VALUES {values}")
    kv.log.clear()
    return db


def test_pk_equality_is_point_gets(orders, kv) -> None:
    assert rows(orders, "SELECT total FROM orders WHERE cust = 3 AND seq = 4") == [[34.5]]
    assert [m for m, _ in kv.data_calls()] == ["get"]
    kv.log.clear()
    assert rows(orders, "SELECT seq FROM orders WHERE cust = $1 AND seq IN (1, 2, 99)", [5]) == [
        [1], [2]
    ]
    assert [m for m, _ in kv.data_calls()] == ["get", "get", "get"]


def test_pk_prefix_and_ranges_are_bounded_span_scans(orders, kv) -> None:
    assert len(rows(orders, "SELECT * FROM orders WHERE cust = 7")) == 10
    ((method, (start, end, _)),) = kv.data_calls()
    assert method == "scan"
    in_span = [k for k, _ in kv.kv.items() if start <= k < end]
    assert len(in_span) == 10
    kv.log.clear()
    assert len(rows(orders, "SELECT * FROM orders WHERE cust BETWEEN 3 AND 4")) == 20
    ((_, (start, end, _)),) = kv.data_calls()
    assert len([k for k, _ in kv.kv.items() if start <= k < end]) == 20
    kv.log.clear()
    assert len(rows(orders, "SELECT * FROM orders WHERE cust = 2 AND seq > 8")) == 2
    ((_, (start, end, _)),) = kv.data_calls()
    assert len([k for k, _ in kv.kv.items() if start <= k < end]) == 2
    kv.log.clear()
    assert len(rows(orders, "SELECT * FROM orders WHERE cust > 2.5 AND cust <= 3")) == 10
    ((_, (start, end, _)),) = kv.data_calls()
    assert len([k for k, _ in kv.kv.items() if start <= k < end]) == 10


def test_other_predicates_scan_the_whole_table(orders, kv) -> None:
    assert len(rows(orders, "SELECT * FROM orders WHERE seq = 3")) == 20
    ((_, (start, end, _)),) = kv.data_calls()
    assert len([k for k, _ in kv.kv.items() if start <= k < end]) == 200
    kv.log.clear()
    assert len(rows(orders, "SELECT * FROM orders WHERE cust = 1 OR cust = 2")) == 20
    assert len([1 for m, _ in kv.data_calls() if m == "scan"]) == 1


def test_update_and_delete_use_the_same_access_paths(orders, kv) -> None:
    orders.execute("UPDATE orders SET total = total + 1 WHERE cust = 1 AND seq = 1")
    assert [m for m, _ in kv.data_calls()] == ["get_for_update", "write_if"]   # a locking read, one write
    kv.log.clear()
    orders.execute("UPDATE orders SET total = 0 WHERE cust = 1 AND seq = 1 AND total > 5")
    assert [m for m, _ in kv.data_calls()] == ["get_for_update", "write_if"]   # the filter reads the row
    kv.log.clear()
    assert orders.execute("UPDATE orders SET total = $1 WHERE cust = 1 AND seq = 1", [7]).rowcount == 1
    assert [m for m, _ in kv.data_calls()] == ["set_fields"]                    # blind: one write, no read
    assert rows(orders, "SELECT total FROM orders WHERE cust = 1 AND seq = 1") == [[7]]
    kv.log.clear()
    assert orders.execute("DELETE FROM orders WHERE seq = 1 AND cust = 1").rowcount == 1
    assert orders.execute("DELETE FROM orders WHERE seq = 1 AND cust = 1").rowcount == 0
    assert [m for m, _ in kv.data_calls()] == ["delete", "delete"]
    kv.log.clear()
    assert orders.execute("DELETE FROM orders WHERE cust = 2").rowcount == 10
    assert [m for m, _ in kv.data_calls()] == ["scan_versions"] + ["write_if"] * 10


def test_plans_are_cached_per_text_and_refreshed_on_schema_change(db, kv) -> None:
    db.execute("CREATE TABLE c (id INT PRIMARY KEY, v TEXT)")
    db.execute("INSERT INTO c VALUES (1, 'a')")
    sql = "SELECT * FROM c WHERE id = $1"
    db.execute(sql, [1])
    plan = db._cache[sql].plan
    db.execute(sql, [1])
    assert db._cache[sql].plan is plan
    other = Session(kv)
    other.execute("DROP TABLE c")
    other.execute("CREATE TABLE c (id INT PRIMARY KEY, v TEXT, w INT)")
    other.execute("INSERT INTO c VALUES (1, 'b', 2)")
    assert db.execute(sql, [1]).rows == [[1, "b", 2]]


def test_explain_shows_point_get_span_scan_and_full_scan(orders) -> None:
    def ops(sql, params=None):
        result = orders.execute("EXPLAIN " + sql, params)
        assert result.columns[:4] == ["step", "operation", "table", "span"]
        return [(r[1], r[3], int(r[4]), r[5]) for r in result.rows if r[4]]

    assert ops("SELECT * FROM orders WHERE cust = 1 AND seq = 2") == [
        ("point get", "/orders/1/2", 2, "n2 (us-west1)")
    ]
    assert ops("SELECT * FROM orders WHERE cust = 1 AND seq >= 5") == [
        ("span scan", "/orders/1/(seq >= 5)", 2, "n2 (us-west1)")
    ]
    ((kind, span, _, _),) = ops("SELECT * FROM orders WHERE total > 3")
    assert (kind, span) == ("span scan", "/orders/*")
    result = orders.execute("EXPLAIN SELECT * FROM orders WHERE total > 3")
    assert "full table scan" in result.rows[0][7]
    assert ops("SELECT * FROM orders WHERE cust = $1 AND seq = $2", [4, 4]) == [
        ("point get", "/orders/4/4", 2, "n2 (us-west1)")
    ]
    assert ops("INSERT INTO orders VALUES (99, 1, 0)") == [
        ("put", "/orders/99/1", 2, "n2 (us-west1)")
    ]
    assert [k for k, *_ in ops("DELETE FROM orders WHERE cust = 3")] == ["span scan", "delete"]
    assert [k for k, *_ in ops("CREATE TABLE x (a INT PRIMARY KEY)")] == ["point get", "put", "put"]
    assert {r for _, _, r, _ in ops("CREATE TABLE x (a INT PRIMARY KEY)")} == {1}


def test_explain_lists_every_range_a_span_touches() -> None:
    inside = ROW_KEY_PREFIX + encode_key((1, 50))  # a split inside table 1's rows
    kv = MemKV(split_keys=(b"t", inside))
    db = Session(kv)
    db.execute("CREATE TABLE s (id INT PRIMARY KEY)")
    result = db.execute("EXPLAIN SELECT * FROM s")
    assert [r[4] for r in result.rows if r[4]] == ["2", "3"]
    assert {r[5] for r in result.rows if r[4]} == {"n2 (us-west1)", "n3 (europe-west1)"}


def test_show_tables_ranges_regions(users, kv) -> None:
    users.execute("CREATE TABLE pets (id INT PRIMARY KEY)")
    tables = users.execute("SHOW TABLES")
    assert [r[0] for r in tables.rows] == ["pets", "users"]
    assert tables.rows[1][2] == "id"
    ranges = users.execute("SHOW RANGES")
    assert ranges.columns[:3] == ["range_id", "start_key", "end_key"]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in ranges.rows] == [
        (1, "-inf", "/t", 1, "us-east1"), (2, "/t", "+inf", 2, "us-west1"),
    ]
    assert "n3=europe-west1" in ranges.rows[0][ranges.columns.index("replica_regions")]
    assert [r[ranges.columns.index("lease_seq")] for r in ranges.rows] == [1, 1]
    assert [r[0] for r in users.execute("SHOW RANGES FROM TABLE users").rows] == [2]
    assert error(users, "SHOW RANGES FROM TABLE nope").code == "undefined_table"
    kv.kv.mark_down(3)
    regions = users.execute("SHOW REGIONS")
    assert regions.rows == [
        ["us-east1", 1, True], ["us-west1", 2, True], ["europe-west1", 3, False],
    ]


def test_show_columns_describes_type_nullability_default_and_key(users) -> None:
    result = users.execute("SHOW COLUMNS FROM users")
    assert result.columns == ["column_name", "data_type", "is_nullable", "column_default",
                              "primary_key", "is_hidden"]
    assert result.rows == [
        ["id", "INT", False, "", True, False],
        ["name", "TEXT", False, "", False, False],
        ["age", "INT", True, "", False, False],
        ["score", "FLOAT", True, "1.5", False, False],
        ["active", "BOOL", True, "TRUE", False, False],
    ]
    users.execute("CREATE TABLE notes (body TEXT)")
    assert users.execute("SHOW COLUMNS FROM notes").rows[-1] == [
        "rowid", "INT", False, "unique_rowid()", True, True]


@pytest.mark.parametrize("table, ddl", [
    ("t", "CREATE TABLE t (id INT PRIMARY KEY, name TEXT NOT NULL, score FLOAT DEFAULT 1.5, "
          "at TIMESTAMP DEFAULT now(), b BYTES)"),
    ('"Odd Name"', 'CREATE TABLE "Odd Name" ("select" INT, "Mixed" TEXT DEFAULT \'a\'\'b\', '
                   'k BOOL, PRIMARY KEY (k, "select"))'),
    ("nokey", "CREATE TABLE nokey (a INT, b TEXT NOT NULL)"),
])
def test_show_create_table_makes_the_same_table_again(db, table, ddl) -> None:
    db.execute(ddl)
    ((name, create),) = db.execute(f"SHOW CREATE TABLE {table}").rows
    before = db.execute(f"SHOW COLUMNS FROM {table}").rows
    db.execute(f"DROP TABLE {table}")
    db.execute(create)
    assert db.execute(f"SHOW COLUMNS FROM {table}").rows == before
    assert db.execute(f"SHOW CREATE {table}").rows == [[name, create]]


def test_show_databases_answers_the_one_database(db) -> None:
    result = db.execute("SHOW DATABASES")
    assert (result.columns, result.rows) == (["database_name"], [["defaultdb"]])


@pytest.mark.parametrize("sql", ["SHOW COLUMNS FROM nope", "SHOW CREATE TABLE nope",
                                 "SHOW RANGES FROM TABLE nope"])
def test_show_of_an_unknown_table_names_it_and_says_how_to_list_tables(db, sql) -> None:
    caught = error(db, sql)
    assert caught.code == "undefined_table"
    assert '"nope" does not exist' in caught.message and "SHOW TABLES" in caught.message


def test_show_ranges_shows_keys_as_raftstore_status_does() -> None:
    from raftstore.cli.status import render_span

    inside = ROW_KEY_PREFIX + encode_key((1, 50))  # a split inside table 1's rows
    db = Session(MemKV(split_keys=(b"t", inside)))
    db.execute("CREATE TABLE users (id INT PRIMARY KEY)")
    rows = db.execute("SHOW RANGES").rows
    assert [(r[1], r[2]) for r in rows] == [("-inf", "/t"), ("/t", "/users/50"), ("/users/50", "+inf")]
    assert render_span(b"t", inside) == "[/t, /table1/50)"   # status has no table names
    assert db.execute("EXPLAIN SELECT * FROM users WHERE id = 9").rows[0][3] == "/users/9"


def test_explain_leaves_cells_that_do_not_apply_empty(users) -> None:
    result = users.execute("EXPLAIN SELECT count(*) FROM users WHERE id = 1")
    evaluate = [r for r in result.rows if r[1] == "evaluate"]
    assert evaluate and all(r[2] == r[4] == r[5] == r[6] == "" for r in evaluate)
    assert all(value is not None for r in result.rows for value in r)
    assert result.types[4] == "TEXT" and result.rows[0][4] == "2"


def test_current_timestamp_and_now_are_headed_as_written(db) -> None:
    result = db.execute("SELECT current_timestamp, now(), CURRENT_TIMESTAMP(), NOW() AS t")
    assert result.columns == ["current_timestamp", "now", "current_timestamp", "t"]
    assert result.rows == [[NOW] * 4]


def test_result_shape_for_writes_and_ddl(db) -> None:
    result = db.execute("CREATE TABLE r (id INT PRIMARY KEY)")
    assert (result.rowcount, result.status) == (-1, "CREATE TABLE")
    assert (result.columns, result.rows) == ([], [])
    assert db.execute("INSERT INTO r VALUES (1), (2), (3)").status == "INSERT 3"
    assert db.execute("UPDATE r SET id = id + 10 WHERE id > 1").status == "UPDATE 2"
    assert db.execute("DELETE FROM r WHERE id > 100").status == "DELETE 0"
    assert isinstance(db.execute("SELECT 1"), Result)


# --- concurrency: optimistic writes ---------------------------------------------------------------


class InterferingKV(CountingKV):
    """Runs `interfere(kv)` once, just before the `nth` row write reaches the store."""

    def __init__(self, kv, nth: int, interfere):
        super().__init__(kv)
        self.writes_seen = 0
        self.nth = nth
        self.interfere = interfere

    def write_if(self, key, if_version, value):
        self.writes_seen += 1
        if self.writes_seen == self.nth:
            self.interfere(self.kv)
        return super().write_if(key, if_version, value)


def test_update_retries_on_a_concurrent_change_and_applies_to_the_new_value() -> None:
    base = MemKV()
    setup = Session(base)
    setup.execute("CREATE TABLE c (id INT PRIMARY KEY, n INT)")
    setup.execute("INSERT INTO c VALUES (1, 0)")
    racer = InterferingKV(base, 1, lambda kv: Session(kv).execute("UPDATE c SET n = 10"))
    Session(racer).execute("UPDATE c SET n = n + 1 WHERE id = 1")
    assert Session(base).execute("SELECT n FROM c").rows == [[11]]


def test_insert_that_loses_a_race_mid_statement_takes_back_its_rows() -> None:
    base = MemKV()
    setup = Session(base)
    setup.execute("CREATE TABLE c (id INT PRIMARY KEY, who TEXT)")
    racer = InterferingKV(
        base, 2, lambda kv: Session(kv).execute("INSERT INTO c VALUES (2, 'racer')")
    )
    with pytest.raises(SQLError) as caught:
        Session(racer).execute("INSERT INTO c VALUES (1, 'me'), (2, 'me')")
    assert caught.value.code == "unique_violation"
    assert Session(base).execute("SELECT * FROM c").rows == [[2, "racer"]]


def test_on_conflict_do_update_retries_when_the_row_appears_concurrently() -> None:
    base = MemKV()
    Session(base).execute("CREATE TABLE c (id INT PRIMARY KEY, n INT)")
    racer = InterferingKV(base, 1, lambda kv: Session(kv).execute("INSERT INTO c VALUES (1, 5)"))
    Session(racer).execute(
        "INSERT INTO c VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = c.n + excluded.n"
    )
    assert Session(base).execute("SELECT n FROM c").rows == [[6]]


# --- more key types and names ---------------------------------------------------------------------


def test_float_and_timestamp_keys_plan_exact_spans(db, kv) -> None:
    db.execute("CREATE TABLE f (k FLOAT PRIMARY KEY)")
    db.execute("INSERT INTO f VALUES (1.5), (2), (2.5), (-0.0)")
    assert rows(db, "SELECT k FROM f WHERE k = 2") == [[2.0]]
    assert rows(db, "SELECT k FROM f WHERE k <= 2") == [[0.0], [1.5], [2.0]]
    assert rows(db, "SELECT k FROM f WHERE k > 2 AND k < 3") == [[2.5]]
    db.execute("CREATE TABLE ts (t TIMESTAMP PRIMARY KEY)")
    db.execute("INSERT INTO ts VALUES ('2026-01-01'), ('2026-02-01'), ('2026-03-01')")
    kv.log.clear()
    assert rows(db, "SELECT t FROM ts WHERE t >= '2026-02-01'") == [
        [dt.datetime(2026, 2, 1)], [dt.datetime(2026, 3, 1)],
    ]
    ((method, (start, end, _)),) = kv.data_calls()
    assert method == "scan" and len([k for k, _ in kv.kv.items() if start <= k < end]) == 2


def test_int_key_compared_with_fractions_and_nulls(db) -> None:
    db.execute("CREATE TABLE i (k INT PRIMARY KEY)")
    db.execute("INSERT INTO i VALUES (1), (2), (3)")
    assert rows(db, "SELECT k FROM i WHERE k = 2.0") == [[2]]
    assert rows(db, "SELECT k FROM i WHERE k = 2.5") == []
    assert rows(db, "SELECT k FROM i WHERE k > 1.5 AND k <= 2.9") == [[2]]
    assert rows(db, "SELECT k FROM i WHERE k >= 2.0") == [[2], [3]]
    assert rows(db, "SELECT k FROM i WHERE k = NULL") == []
    assert rows(db, "SELECT k FROM i WHERE k < $1", [2.5]) == [[1], [2]]


def test_quoted_identifiers_keep_their_case(db) -> None:
    db.execute('CREATE TABLE "Mixed" ("Col" INT PRIMARY KEY, lower_col TEXT)')
    db.execute('INSERT INTO "Mixed" VALUES (1, \'x\')')
    assert rows(db, 'SELECT "Col", LOWER_COL FROM "Mixed"') == [[1, "x"]]
    assert error(db, "SELECT Col FROM \"Mixed\"").code == "undefined_column"
    assert error(db, "SELECT * FROM mixed").code == "undefined_table"


def test_self_join_needs_aliases(users) -> None:
    assert error(users, "SELECT * FROM users, users").code == "syntax"
    assert rows(users, "SELECT a.id, b.id FROM users a JOIN users b ON a.age < b.age "
                       "WHERE a.id = 3 ORDER BY b.id") == [[3, 1], [3, 4]]


def test_scans_page_through_large_tables(db, kv) -> None:
    db.execute("CREATE TABLE p (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO p VALUES " + ", ".join(f"({i}, {i % 7})" for i in range(2500)))
    kv.log.clear()
    assert rows(db, "SELECT count(*), sum(v) FROM p") == [[2500, sum(i % 7 for i in range(2500))]]
    scans = [a for m, a in kv.data_calls() if m == "scan"]
    assert len(scans) == 3 and all(limit <= 1000 for _, _, limit in scans)


def test_order_by_primary_key_streams_without_sorting(db, kv) -> None:
    db.execute("CREATE TABLE s (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO s VALUES " + ", ".join(f"({i}, {-i})" for i in range(2000)))
    kv.log.clear()
    assert rows(db, "SELECT id FROM s ORDER BY id LIMIT 2 OFFSET 1") == [[1], [2]]
    scans = [a for m, a in kv.data_calls() if m == "scan"]
    assert len(scans) == 1 and scans[0][2] < 100
    assert rows(db, "SELECT id FROM s ORDER BY v LIMIT 2") == [[1999], [1998]]


def test_explain_without_parameters_shows_the_table_span(orders, kv) -> None:
    result = orders.execute("EXPLAIN SELECT * FROM orders WHERE cust = $1 AND seq = $2")
    (row,) = [r for r in result.rows if r[4]]
    assert row[1] == "point get" and "depend on parameters" in row[7]
    kv.kv.mark_down(2)
    result = orders.execute("EXPLAIN SELECT * FROM orders WHERE cust = 1 AND seq = 1")
    assert [r[5] for r in result.rows if r[4]] == ["no leader"]


def test_explain_of_joins_and_writes_lists_every_step(orders) -> None:
    orders.execute("CREATE TABLE cust (id INT PRIMARY KEY, name TEXT)")
    result = orders.execute(
        "EXPLAIN SELECT c.name, count(*) FROM cust c JOIN orders o ON o.cust = c.id "
        "WHERE c.id = 3 GROUP BY c.name ORDER BY 2 DESC LIMIT 1"
    )
    steps = [(r[1], r[3] or r[7]) for r in result.rows]
    assert steps[0] == ("point get", "/cust/3")
    assert steps[1] == ("span scan", "/orders/3/*")
    assert ("join", "hash join on o.cust = c.id") in steps
    assert [kind for kind, _ in steps[3:]] == ["evaluate"] * 4
    result = orders.execute("EXPLAIN UPSERT INTO orders (cust, seq) VALUES (1, 1)")
    assert [r[1] for r in result.rows] == ["point get", "put"]
    result = orders.execute("EXPLAIN UPSERT INTO orders VALUES (1, 1, 2.5)")
    assert [r[1] for r in result.rows] == ["put"] and "overwrite" in result.rows[0][7]
    result = orders.execute("EXPLAIN DROP TABLE cust")
    assert [(r[1], r[3]) for r in result.rows] == [("put", "/meta/catalog/cust"),
                                                  ("delete", "/cust/*")]


# --- robustness: any text is a result or an SQLError, never a traceback -----------------------

_WORDS = [
    "SELECT", "FROM", "WHERE", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "UPSERT",
    "CREATE", "TABLE", "DROP", "EXPLAIN", "ANALYZE", "SHOW", "RANGES", "TABLES", "GROUP", "BY", "ORDER",
    "HAVING", "LIMIT", "OFFSET", "JOIN", "ON", "AND", "OR", "NOT", "NULL", "IS", "IN", "LIKE",
    "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "AS", "DISTINCT", "ASC", "DESC", "NULLS",
    "FIRST", "LAST", "count(*)", "sum(a)", "min(b)", "coalesce(a, b)", "CAST(a AS TEXT)",
    "PRIMARY KEY", "INT", "TEXT", "FLOAT", "t", "u", "a", "b", "t.a", "*", ",", "(", ")", "=",
    "<", ">=", "+", "-", "*", "/", "%", "||", "1", "0", "2.5", "'x'", "''", "TRUE", "$1", "%s",
    ";", "ON CONFLICT", "DO NOTHING", "DO UPDATE", "excluded.a",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=14), st.lists(
    st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2), st.floats(-2, 2)), max_size=2))
def test_any_statement_is_a_result_or_an_sqlerror(words, params) -> None:
    kv = MemKV()
    db = Session(kv, clock=lambda: NOW, rng=random.Random(1))
    db.execute("CREATE TABLE t (a INT PRIMARY KEY, b TEXT)")
    db.execute("CREATE TABLE u (a INT, b INT, PRIMARY KEY (a, b))")
    db.execute("INSERT INTO t VALUES (1, 'x'), (2, NULL)")
    db.execute("INSERT INTO u VALUES (1, 1), (2, 0)")
    try:
        db.execute(" ".join(words), params)
    except SQLError as e:
        assert e.code in CODES and e.message


_LEAVES = ["a", "b", "f", "o", "ts", "y", "t.a", "1", "-7", "0", "2.5", "'x'", "'12'", "''",
           "TRUE", "NULL", "$1", "$2", "x'00'", "now()", "9223372036854775807"]
_UNARY = ["NOT {}", "-{}", "({}) IS NULL", "lower({})", "upper({})", "length({})", "abs({})",
          "CAST({} AS INT)", "CAST({} AS TEXT)", "CAST({} AS FLOAT)", "CAST({} AS BOOL)",
          "CAST({} AS TIMESTAMP)", "CAST({} AS BYTES)", "count({})", "sum({})", "avg({})",
          "max({})", "coalesce({}, NULL)"]
_BINARY = ["{} + {}", "{} - {}", "{} * {}", "{} / {}", "{} % {}", "{} || {}", "{} = {}",
           "{} < {}", "{} >= {}", "{} AND {}", "{} OR {}", "{} IN ({}, 1)", "{} LIKE {}",
           "{} IS DISTINCT FROM {}", "coalesce({}, {})", "nullif({}, {})",
           "CASE WHEN {} THEN {} END", "{} BETWEEN 1 AND {}"]

_expressions = st.recursive(
    st.sampled_from(_LEAVES),
    lambda inner: st.one_of(
        st.builds(lambda f, x: "(" + f.format(x) + ")", st.sampled_from(_UNARY), inner),
        st.builds(lambda f, x, y: "(" + f.format(x, y) + ")", st.sampled_from(_BINARY), inner,
                  inner),
    ),
    max_leaves=6,
)
_param_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                          st.floats(allow_nan=True), st.text(max_size=3), st.binary(max_size=2),
                          st.just(NOW))


@settings(max_examples=300, deadline=None)
@given(_expressions, st.sampled_from(["SELECT {} FROM t", "SELECT * FROM t WHERE {}",
                                      "SELECT a FROM t GROUP BY a HAVING {}",
                                      "UPDATE t SET b = {} WHERE a = 1",
                                      "SELECT {} FROM t ORDER BY 1 LIMIT 1",
                                      "INSERT INTO t (a, b) VALUES (9, {})",
                                      "UPSERT INTO t (a, ts) VALUES ($1, {})",
                                      "INSERT INTO t (a, f) VALUES (1, 1.5) ON CONFLICT (a) "
                                      "DO UPDATE SET f = {}",
                                      "SELECT * FROM t WHERE a > {} AND a IN (1, $2)"]),
       st.lists(_param_values, min_size=2, max_size=2))
def test_any_expression_is_a_result_or_an_sqlerror(expression, template, params) -> None:
    db = Session(MemKV(), clock=lambda: NOW, rng=random.Random(1))
    db.execute("CREATE TABLE t (a INT PRIMARY KEY, b TEXT, f FLOAT, o BOOL, ts TIMESTAMP, "
               "y BYTES)")
    db.execute("INSERT INTO t VALUES (1, 'x', 0.5, true, '2026-01-01', x'01'), "
               "(2, NULL, NULL, NULL, NULL, NULL), (3, '7', -2.0, false, now(), x'')")
    sql = template.format(expression)
    try:
        db.execute(sql, params if "$" in sql else None)
    except SQLError as e:
        assert e.code in CODES and e.message


# --- multi-row INSERT on a KV that batches ---------------------------------------------------------


class BatchingKV(CountingKV):
    """A KV with get_many / write_if_many, as a node's NodeKV has (its calls sent together)."""

    def get_many(self, keys):
        self.log.append(("get_many", len(keys)))
        return [self.kv.get(key) for key in keys]

    def write_if_many(self, writes, stop_after_failure=True, lock=None, all_or_nothing=False):
        self.log.append(("write_if_many", len(writes)))
        if all_or_nothing:                               # one batch per range, as a node sends it
            return self.kv.write_if_many(writes, all_or_nothing=True)
        return [self.kv.write_if(key, version, value) for key, version, value in writes]


@pytest.fixture
def batched() -> tuple[Session, BatchingKV]:
    kv = BatchingKV(MemKV())
    db = Session(kv, clock=lambda: NOW, rng=random.Random(3))
    db.execute("CREATE TABLE m (id INT PRIMARY KEY, v TEXT NOT NULL)")
    db.execute("INSERT INTO m VALUES (5, 'five')")
    kv.log.clear()
    return db, kv


def test_a_multi_row_insert_writes_all_rows_in_one_batch_without_reading_them_first(batched) -> None:
    db, kv = batched
    assert db.execute("INSERT INTO m VALUES (1, 'a'), (2, 'b'), (3, 'c')").rowcount == 3
    assert [entry for entry in kv.log if entry[0] != "get"] == [("write_if_many", 3)]   # one round
    assert rows(db, "SELECT id FROM m") == [[1], [2], [3], [5]]


def test_a_batched_insert_that_hits_an_existing_key_writes_nothing_of_its_range(batched) -> None:
    db, kv = batched
    failed = error(db, "INSERT INTO m VALUES (1, 'a'), (5, 'again'), (6, 'c')")
    assert failed.code == "unique_violation" and "(id)=(5) already exists" in failed.message
    assert "nothing of this statement was written" in failed.message
    assert [entry for entry in kv.log if entry[0] != "get"] == [("write_if_many", 3)]   # one batch, applied not at all
    assert rows(db, "SELECT id FROM m") == [[5]]


def test_a_batched_insert_reports_the_first_error_in_statement_order(batched) -> None:
    db, _ = batched
    # an existing key before a bad row: the duplicate; a bad row before an existing key: the bad row
    assert error(db, "INSERT INTO m VALUES (5, 'x'), (7, NULL)").code == "unique_violation"
    assert error(db, "INSERT INTO m VALUES (7, NULL), (5, 'x')").code == "not_null_violation"
    assert error(db, "INSERT INTO m VALUES (1, 'x'), (1, 'y'), (5, 'z')").code == "unique_violation"
    assert rows(db, "SELECT id FROM m") == [[5]]


def test_a_batched_insert_losing_a_race_takes_back_its_rows(batched) -> None:
    db, kv = batched
    real = kv.write_if_many

    def racing(writes, stop_after_failure=True, **kwargs):
        kv.write_if_many = real
        kv.kv.put(writes[1][0], b"\x92\x09\xa1x")   # another writer takes the second key first
        return real(writes, **kwargs)
    kv.write_if_many = racing
    assert error(db, "INSERT INTO m VALUES (8, 'a'), (9, 'b'), (10, 'c')").code == "unique_violation"
    kv.write_if_many = real
    keys = [k for k, _ in kv.kv.items() if k.startswith(ROW_KEY_PREFIX)]
    assert len(keys) == 2   # the existing row 5 and the racer's row 9; 8 and 10 were never written


# --- one-key writes that read the row: a locking read, then one write or a confirm ----------------------


def test_a_one_key_update_or_delete_is_a_locking_read_then_one_write_or_a_confirm(db, kv) -> None:
    db.execute("CREATE TABLE p (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO p VALUES (1, 10)")
    cases = [
        ("UPDATE p SET v = v + 1 WHERE id = 1", 1, ["get_for_update", "write_if"]),
        ("UPDATE p SET v = v + 1 WHERE id = 2", 0, ["get_for_update", "confirm"]),        # no such row
        ("UPDATE p SET v = 0 WHERE id = 1 AND v = 99", 0, ["get_for_update", "confirm"]),   # WHERE is false
        ("UPDATE p SET v = v * 1 WHERE id = 1", 1, ["get_for_update", "confirm"]),          # nothing changes
        ("DELETE FROM p WHERE id = 2 AND v > 0", 0, ["get_for_update", "confirm"]),
        ("DELETE FROM p WHERE id = 1 AND v > 0", 1, ["get_for_update", "write_if"]),
    ]
    for sql, rowcount, calls in cases:
        kv.log.clear()
        assert db.execute(sql).rowcount == rowcount, sql
        assert [m for m, _ in kv.data_calls()] == calls, sql
    assert db.execute("SELECT * FROM p").rows == []


def test_an_update_that_moves_the_primary_key_takes_the_general_path(db, kv) -> None:
    db.execute("CREATE TABLE p (id INT PRIMARY KEY, v INT)")
    db.execute("INSERT INTO p VALUES (1, 10)")
    kv.log.clear()
    assert db.execute("UPDATE p SET id = 2 WHERE id = 1").rowcount == 1
    assert "get_for_update" not in [m for m, _ in kv.data_calls()]
    assert db.execute("SELECT * FROM p").rows == [[2, 10]]


class WritesBetween(CountingKV):
    """Another client writes the key between the locking read and the statement's confirm."""

    def __init__(self, kv, value: bytes) -> None:
        super().__init__(kv)
        self.value = value

    def confirm(self, key, if_version, *, lock=None):
        if self.value is not None:
            self.kv.put(key, self.value)
            self.value = None
        return super().confirm(key, if_version, lock=lock)


def test_a_confirm_that_finds_the_row_changed_decides_again_from_the_row_as_it_is() -> None:
    mem = MemKV()
    setup = Session(mem)
    setup.execute("CREATE TABLE p (id INT PRIMARY KEY, v INT)")
    setup.execute("INSERT INTO p VALUES (1, 99)")
    [key] = [k for k, _ in mem.items() if k.startswith(ROW_KEY_PREFIX)]
    raw99 = mem.get(key)
    setup.execute("UPDATE p SET v = 10 WHERE id = 1")
    # At the locking read v is 10, so the WHERE is false; before the confirm another client puts
    # v = 99 back. The statement must see that row and update it, not answer 0 rows from the
    # stale read.
    racing = WritesBetween(mem, raw99)
    assert Session(racing).execute("UPDATE p SET v = 0 WHERE id = 1 AND v = 99").rowcount == 1
    assert [m for m, _ in racing.data_calls()][:2] == ["get_for_update", "confirm"]
    assert setup.execute("SELECT v FROM p").rows == [[0]]


def test_a_blind_update_or_delete_by_primary_key_answers_as_if_it_had_read_the_row(db, kv) -> None:
    """One write and no read, with PostgreSQL's answers: the matched row count, nothing written
    where no row is, and a value its column refuses is an error only when a row matches."""
    db.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT NOT NULL, n INT, f FLOAT)")
    db.execute("INSERT INTO t VALUES (1, 'a', 10, 1.5)")
    kv.log.clear()
    assert db.execute("UPDATE t SET v = 'b', n = $1 WHERE k = 1", [11]).rowcount == 1
    assert db.execute("UPDATE t SET v = 'c' WHERE k = 2").rowcount == 0
    assert [m for m, _ in kv.data_calls()] == ["set_fields", "set_fields"]
    assert rows(db, "SELECT * FROM t") == [[1, "b", 11, 1.5]]                  # no row 2 appeared
    assert db.execute("UPDATE t SET f = 2 WHERE k = 1").rowcount == 1           # an INT into a FLOAT column
    assert rows(db, "SELECT f FROM t WHERE k = 1") == [[2.0]]
    assert db.execute("UPDATE t SET v = NULL WHERE k = 2").rowcount == 0        # no row: no error
    with pytest.raises(SQLError) as caught:
        db.execute("UPDATE t SET v = NULL WHERE k = 1")
    assert caught.value.code == "not_null_violation"
    with pytest.raises(SQLError) as caught:
        db.execute("UPDATE t SET n = 9223372036854775808 WHERE k = 1")
    assert caught.value.code in ("numeric_value_out_of_range", "datatype_mismatch")
    assert rows(db, "SELECT * FROM t") == [[1, "b", 11, 2.0]]
    kv.log.clear()
    assert db.execute("DELETE FROM t WHERE k = 2").rowcount == 0
    assert db.execute("DELETE FROM t WHERE k = 1").rowcount == 1
    assert [m for m, _ in kv.data_calls()] == ["delete", "delete"]
    assert rows(db, "SELECT count(*) FROM t") == [[0]]


@pytest.mark.parametrize("sql, blind", [
    ("UPDATE t SET v = 'x' WHERE k = 1", True),
    ("UPDATE t SET v = 'x', n = $1 WHERE 1 = k", True),
    ("UPDATE t SET v = 'x' WHERE k = 1 AND n = 2", False),         # a filter beyond the key
    ("UPDATE t SET n = n + 1 WHERE k = 1", False),                 # SET reads the row
    ("UPDATE t SET k = 2 WHERE k = 1", False),                     # moves the row
    ("UPDATE t SET v = 'x' WHERE k IN (1, 2)", False),             # more than one key
    ("UPDATE t SET v = 'x' WHERE k = 1 OR k = 2", False),
    ("UPDATE t SET v = 'x' WHERE k > 1", False),
    ("UPDATE t SET v = 'x' WHERE k = 1 AND k = 2", False),         # the key names only one of them
    ("DELETE FROM t WHERE k = $1 AND (nullif(NULL, NULL) = k)", False),
    ("DELETE FROM t WHERE k = 1", True),
    ("DELETE FROM t WHERE k = $1 AND n IS NULL", False),
    ("DELETE FROM t", False),
    ("DELETE FROM ft WHERE k = 1.0", False),                       # a FLOAT key: -0.0 and NaN
])
def test_which_updates_and_deletes_are_blind(db, sql, blind) -> None:
    from sql.dialect import parse
    from sql.plan import plan_statement
    db.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT, n INT)")
    db.execute("CREATE TABLE ft (k FLOAT PRIMARY KEY)")
    statement = parse(sql)[0]
    tables = {name: db._schema(name) for name in ("t", "ft")}
    assert plan_statement(statement, tables).blind is blind
