"""The PostgreSQL catalog as clients read it: pg_catalog and information_schema virtual tables,
the catalog functions and casts, the settings clients SET and SHOW on connect, SERIAL - each
checked against its PostgreSQL meaning for a catalog made here, over the in-memory KV.

The checks are plain functions (`check_*`) run once against this build and once against a
deliberately broken one each (`BROKEN_BUILDS`), which must fail them: a checker that cannot
fail checks nothing. SQLAlchemy's own reflection queries are compiled offline with its
PostgreSQL dialect and run through the engine with their bound parameters, each checked for
its answer.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from sql import expr as expr_module
from sql import pg_catalog, pg_functions
from sql.errors import SQLError
from sql.execute import Session
from sql.memkv import MemKV

USERS_DDL = ("CREATE TABLE users (id INT PRIMARY KEY, name TEXT NOT NULL, score FLOAT DEFAULT 1.5, "
             "born TIMESTAMP, photo BYTES, active BOOL DEFAULT true)")
PAIRS_DDL = "CREATE TABLE pairs (b TEXT, a INT, v INT, PRIMARY KEY (a, b))"
NOKEY_DDL = "CREATE TABLE nokey (x INT)"


@pytest.fixture
def db() -> Session:
    session = Session(MemKV())
    for ddl in (USERS_DDL, PAIRS_DDL, NOKEY_DDL):
        session.execute(ddl)
    return session


def rows(db: Session, sql: str, params=None) -> list[list]:
    return db.execute(sql, params).rows


def one(db: Session, sql: str, params=None):
    found = rows(db, sql, params)
    assert len(found) == 1 and len(found[0]) == 1, found
    return found[0][0]


def error(db: Session, sql: str, params=None) -> SQLError:
    with pytest.raises(SQLError) as caught:
        db.execute(sql, params)
    return caught.value


def oid_of(db: Session, table: str) -> int:
    return one(db, "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname = $1 AND c.relkind = 'r'", [table])


# --- checkers: each states PostgreSQL's meaning of a catalog table or function ---------------------


def check_every_catalog_row_fits_its_columns(db: Session) -> None:
    for name, table in pg_catalog.CATALOG_TABLES.items():
        result = db.execute(f"SELECT * FROM {name}")
        assert result.columns == [c.name for c in table.schema.columns], name
        assert all(len(row) == len(result.columns) for row in result.rows), name


def check_pg_class_has_each_table_and_its_primary_key_index(db: Session) -> None:
    found = rows(db, "SELECT c.relname, c.relkind, n.nspname, c.relnatts, c.relhasindex, c.relpersistence, "
                     "am.amname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "JOIN pg_am am ON am.oid = c.relam ORDER BY c.relname")
    assert found == [["nokey", "r", "public", 2, True, "p", "heap"], ["nokey_pkey", "i", "public", 1, False, "p", "btree"],
                     ["pairs", "r", "public", 3, True, "p", "heap"], ["pairs_pkey", "i", "public", 2, False, "p", "btree"],
                     ["users", "r", "public", 6, True, "p", "heap"], ["users_pkey", "i", "public", 1, False, "p", "btree"]]


def check_oids_are_stable_and_never_reused(db: Session) -> None:
    first = oid_of(db, "users")
    assert oid_of(db, "users") == first == one(db, "SELECT 'users'::regclass")
    db.execute("DROP TABLE nokey")
    db.execute(NOKEY_DDL)
    assert oid_of(db, "users") == first
    assert oid_of(db, "nokey") not in (first, oid_of(db, "pairs"))
    every = [r[0] for r in rows(db, "SELECT oid FROM pg_class")] + [r[0] for r in rows(db, "SELECT oid FROM pg_constraint")]
    assert len(every) == len(set(every))


def check_pg_attribute_numbers_columns_from_one_with_postgres_types(db: Session) -> None:
    found = rows(db, "SELECT a.attname, a.attnum, a.atttypid, t.typname, a.attnotnull, a.atthasdef, a.attlen, "
                     "a.atttypmod, a.attisdropped, a.attidentity, a.attgenerated FROM pg_attribute a "
                     "JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = 'users'::regclass AND a.attnum > 0 "
                     "ORDER BY a.attnum")
    assert found == [["id", 1, 20, "int8", True, False, 8, -1, False, "", ""],
                     ["name", 2, 25, "text", True, False, -1, -1, False, "", ""],
                     ["score", 3, 701, "float8", False, True, 8, -1, False, "", ""],
                     ["born", 4, 1114, "timestamp", False, False, 8, -1, False, "", ""],
                     ["photo", 5, 17, "bytea", False, False, -1, -1, False, "", ""],
                     ["active", 6, 16, "bool", False, True, 1, -1, False, "", ""]]
    index = rows(db, "SELECT attname, attnum FROM pg_attribute WHERE attrelid = 'pairs_pkey'::regclass ORDER BY attnum")
    assert index == [["a", 1], ["b", 2]]


def check_pg_type_has_postgres_oids(db: Session) -> None:
    expected = {"int8": 20, "float8": 701, "text": 25, "bool": 16, "bytea": 17, "timestamp": 1114,
                "timestamptz": 1184, "int4": 23, "int2": 21, "oid": 26, "name": 19, "regclass": 2205,
                "varchar": 1043, "char": 18}
    found = dict((r[0], r[1]) for r in rows(db, "SELECT typname, oid FROM pg_type WHERE typtype = 'b'"))
    assert {name: found.get(name) for name in expected} == expected
    assert rows(db, "SELECT e.typname FROM pg_type t JOIN pg_type e ON e.oid = t.typarray WHERE t.typname = 'int8'") \
        == [["_int8"]]


def check_keys_in_pg_index_and_pg_constraint(db: Session) -> None:
    index = rows(db, "SELECT i.indkey, i.indisprimary, i.indisunique, i.indnatts, pg_get_indexdef(i.indexrelid), "
                     "pg_get_indexdef(i.indexrelid, 1, true), c.relname FROM pg_index i "
                     "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'pairs'::regclass")
    assert index == [["2 1", True, True, 2, "CREATE UNIQUE INDEX pairs_pkey ON public.pairs USING btree (a, b)",
                      "a", "pairs_pkey"]]
    constraint = rows(db, "SELECT conname, contype, conkey, pg_get_constraintdef(oid), conindid = 'pairs_pkey'::regclass "
                          "FROM pg_constraint WHERE conrelid = 'pairs'::regclass")
    assert constraint == [["pairs_pkey", "p", "{2,1}", "PRIMARY KEY (a, b)", True]]


def check_defaults_in_pg_attrdef(db: Session) -> None:
    found = rows(db, "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
                     "ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = 'users'::regclass "
                     "ORDER BY d.adnum")
    assert found == [["score", "1.5"], ["active", "TRUE"]]


def check_information_schema_columns(db: Session) -> None:
    found = rows(db, "SELECT column_name, ordinal_position, column_default, is_nullable, data_type, udt_name "
                     "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'users' "
                     "ORDER BY ordinal_position")
    assert found == [["id", 1, None, "NO", "bigint", "int8"], ["name", 2, None, "NO", "text", "text"],
                     ["score", 3, "1.5", "YES", "double precision", "float8"],
                     ["born", 4, None, "YES", "timestamp without time zone", "timestamp"],
                     ["photo", 5, None, "YES", "bytea", "bytea"], ["active", 6, "TRUE", "YES", "boolean", "bool"]]
    tables = rows(db, "SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables "
                      "ORDER BY table_name")
    assert tables == [["defaultdb", "public", name, "BASE TABLE"] for name in ("nokey", "pairs", "users")]
    assert sorted(r[0] for r in rows(db, "SELECT schema_name FROM information_schema.schemata")) \
        == ["crdb_internal", "information_schema", "pg_catalog", "public"]


def check_format_type_names_types_as_postgres(db: Session) -> None:
    found = rows(db, "SELECT format_type(20, -1), format_type(701, NULL), pg_catalog.format_type(25, -1), "
                     "format_type(16, -1), format_type(17, -1), format_type(1114, -1), format_type(1184, -1), "
                     "format_type(1043, -1), format_type(99999, -1), format_type(NULL, -1)")
    assert found == [["bigint", "double precision", "text", "boolean", "bytea", "timestamp without time zone",
                      "timestamp with time zone", "character varying", "???", None]]


def check_regclass_resolves_as_postgres(db: Session) -> None:
    users = oid_of(db, "users")
    assert rows(db, "SELECT 'users'::regclass, 'public.users'::regclass, '\"users\"'::regclass, "
                    "'USERS'::regclass, $1::regclass", ["users"]) == [[users] * 5]
    assert one(db, "SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = 'users'::regclass") == "users"
    assert one(db, "SELECT 'pg_catalog.pg_class'::regclass") == 1259
    assert one(db, "SELECT 'pg_class'::regclass::text") == "pg_class"
    assert one(db, "SELECT 123::regclass::text") == "123"
    for name in ("nope", '"Users"', "other.users"):
        assert error(db, f"SELECT '{name}'::regclass").code == "undefined_table"


def check_visibility_and_constant_functions(db: Session) -> None:
    users = oid_of(db, "users")
    found = rows(db, f"SELECT pg_table_is_visible({users}), pg_table_is_visible(1), pg_get_userbyid(10), "
                     "pg_encoding_to_char(6), has_table_privilege('users', 'SELECT'), "
                     f"has_table_privilege('root', 'users', 'SELECT'), obj_description({users}, 'pg_class'), "
                     f"col_description({users}, 1), current_schema(), current_database(), current_user, "
                     "session_user, pg_catalog.current_schema()")
    assert found == [[True, None, "root", "UTF8", True, True, None, None, "public", "defaultdb", "root", "root",
                      "public"]]
    match = re.match(r".*(?:PostgreSQL|EnterpriseDB) (\d+)\.?(\d+)?(?:\.(\d+))?", one(db, "SELECT pg_catalog.version()"))
    assert match and match.group(1, 2) == ("13", "0")   # SQLAlchemy's regex
    assert one(db, "SELECT pg_backend_pid()") == one(db, "SELECT pg_backend_pid()")


def check_settings_clients_show(db: Session) -> None:
    expected = {"server_version": "13.0.0", "standard_conforming_strings": "on", "client_encoding": "UTF8",
                "DateStyle": "ISO, MDY", "TimeZone": "UTC", "transaction_isolation": "serializable",
                "TRANSACTION ISOLATION LEVEL": "serializable", "search_path": '"$user", public',
                "application_name": "", "extra_float_digits": "1", "integer_datetimes": "on"}
    assert {name: one(db, f"SHOW {name}") for name in expected} == expected
    assert one(db, "SHOW TIME ZONE") == "UTC"


def check_set_and_set_config(db: Session) -> None:
    for sql in ("SET extra_float_digits = 3", "SET DateStyle TO 'ISO'", "SET client_encoding TO 'utf8'",
                "SET application_name = 'psql'", "SET TimeZone = 'UTC'", "SET standard_conforming_strings = on",
                "SET transaction_isolation = 'read committed'"):
        assert db.execute(sql).status == "SET"
    assert [one(db, f"SHOW {n}") for n in ("extra_float_digits", "datestyle", "application_name",
                                          "transaction_isolation")] == ["3", "ISO, MDY", "psql", "serializable"]
    assert one(db, "SELECT set_config('application_name', 'app', false)") == "app"
    assert one(db, "SHOW application_name") == "app" == one(db, "SELECT current_setting('application_name')")
    assert one(db, "SELECT set_config('application_name', 'tx', true)") == "tx"
    assert one(db, "SHOW application_name") == "app"   # is_local: the statement's transaction only
    for sql in ("SET TimeZone = 'Europe/Paris'", "SET DateStyle = 'German'", "SET client_encoding = 'LATIN1'",
                "SET server_version = '9'", "SET extra_float_digits = 9"):
        assert error(db, sql).code == "invalid_value", sql
    assert error(db, "SELECT set_config('work_mem', '1MB', false)").code == "undefined_object"


def check_unqualified_catalog_names_mean_pg_catalog_and_information_schema_is_qualified(db: Session) -> None:
    assert rows(db, "SELECT count(*) FROM pg_class") == rows(db, "SELECT count(*) FROM pg_catalog.pg_class")
    db.execute("CREATE TABLE tables (x INT PRIMARY KEY)")
    assert db.execute("SELECT * FROM tables").columns == ["x"]   # a user table: information_schema is not on the path
    assert len(rows(db, "SELECT * FROM information_schema.tables")) == 4
    assert rows(db, "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class WHERE "
                    "pg_catalog.pg_class.relname = 'users'") == [["users"]]
    assert db.execute("SELECT * FROM public.users").columns[:2] == ["id", "name"]


def check_serial_columns_are_ints_filled_by_unique_rowid(db: Session) -> None:
    db.execute("CREATE TABLE s (id SERIAL PRIMARY KEY, b BIGSERIAL, c SMALLSERIAL, "
               "d INT GENERATED BY DEFAULT AS IDENTITY, v TEXT)")
    db.execute("INSERT INTO s (v) VALUES ('x'), ('y')")
    found = rows(db, "SELECT id, b, c, d FROM s")
    assert len({r[0] for r in found}) == 2 and all(isinstance(x, int) for r in found for x in r)
    db.execute("INSERT INTO s (id, v) VALUES (7, 'z')")   # a SERIAL takes an explicit value
    assert one(db, "SELECT v FROM s WHERE id = 7") == "z"
    create = db.execute("SHOW CREATE TABLE s").rows[0][1]
    assert "id INT NOT NULL DEFAULT unique_rowid()" in create and "d INT NOT NULL DEFAULT unique_rowid()" in create
    assert rows(db, "SELECT column_default, is_nullable FROM information_schema.columns WHERE table_name = 's' "
                    "AND column_name = 'id'") == [["unique_rowid()", "NO"]]
    value = one(db, "SELECT nextval('s_id_seq')")   # SQLAlchemy's fetch of a SERIAL key without RETURNING
    assert isinstance(value, int) and value != one(db, "SELECT nextval('public.s_id_seq')")
    assert error(db, "SELECT nextval('s_v_seq')").code == "undefined_table"
    assert error(db, "CREATE TABLE t (id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY)").code \
        == "feature_not_supported"
    assert error(db, "CREATE TABLE t (id SERIAL DEFAULT 5 PRIMARY KEY)").code == "syntax"


def check_the_catalog_is_read_once_per_catalog_table_a_statement_names(db: Session) -> None:
    scans = []
    real = db.kv.scan

    def counted(*args, **kwargs):
        scans.append(args[0])
        return real(*args, **kwargs)

    db.kv.scan = counted
    try:
        found = rows(db, "SELECT c.relname, c2.relname FROM pg_class c, pg_class c2, pg_index i "
                         "WHERE i.indrelid = c.oid AND i.indexrelid = c2.oid ORDER BY 1")
    finally:
        del db.kv.scan
    assert found == [["nokey", "nokey_pkey"], ["pairs", "pairs_pkey"], ["users", "users_pkey"]]
    assert len(scans) == 2   # pg_class once for both of its uses, pg_index once


CHECKS = [check_every_catalog_row_fits_its_columns, check_pg_class_has_each_table_and_its_primary_key_index,
          check_oids_are_stable_and_never_reused, check_pg_attribute_numbers_columns_from_one_with_postgres_types,
          check_pg_type_has_postgres_oids, check_keys_in_pg_index_and_pg_constraint, check_defaults_in_pg_attrdef,
          check_information_schema_columns, check_format_type_names_types_as_postgres,
          check_regclass_resolves_as_postgres, check_visibility_and_constant_functions,
          check_settings_clients_show, check_set_and_set_config,
          check_unqualified_catalog_names_mean_pg_catalog_and_information_schema_is_qualified,
          check_serial_columns_are_ints_filled_by_unique_rowid,
          check_the_catalog_is_read_once_per_catalog_table_a_statement_names]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_catalog_answers_as_postgres_does(db, check) -> None:
    check(db)


# --- broken builds: each checker must catch one --------------------------------------------------


def _attnum_from_zero(monkeypatch) -> None:
    real = pg_catalog.CATALOG_TABLES["pg_catalog.pg_attribute"]
    shifted = lambda kv: [row[:5] + [row[5] - 1] + row[6:] for row in real.rows(kv)]  # noqa: E731
    monkeypatch.setitem(pg_catalog.CATALOG_TABLES, "pg_catalog.pg_attribute",
                        pg_catalog.CatalogTable(real.schema, shifted))


def _oid_by_position(monkeypatch) -> None:
    """OIDs numbered by a table's place in the list, not by its id: they move when a table goes."""
    monkeypatch.setattr(pg_catalog, "_user_tables", lambda kv: sorted(
        [type(s)(i, s.name, s.columns, s.pk, s.raw) for i, s in enumerate(sorted(pg_catalog.list_tables(kv),
                                                                             key=lambda s: s.name), 1)],
        key=lambda s: s.id))


def _row_one_short(monkeypatch) -> None:
    real = pg_catalog.CATALOG_TABLES["pg_catalog.pg_index"]
    monkeypatch.setitem(pg_catalog.CATALOG_TABLES, "pg_catalog.pg_index",
                        pg_catalog.CatalogTable(real.schema, lambda kv: [r[:-1] for r in real.rows(kv)]))


def _int8_is_int4(monkeypatch) -> None:
    """pg_type lists int8 under int4's OID."""
    monkeypatch.setattr(pg_catalog, "PG_TYPES", tuple(
        dataclasses.replace(t, oid=23) if t.name == "int8" else t for t in pg_catalog.PG_TYPES if t.name != "int4"))


def _keys_in_table_order(monkeypatch) -> None:
    """conkey in column order rather than key order."""
    table = pg_catalog.CATALOG_TABLES["pg_catalog.pg_constraint"]
    monkeypatch.setitem(pg_catalog.CATALOG_TABLES, "pg_catalog.pg_constraint", pg_catalog.CatalogTable(
        table.schema, lambda kv: [r[:18] + ["{" + ",".join(sorted(r[18][1:-1].split(","))) + "}"] + r[19:]
                                  for r in table.rows(kv)]))


def _no_defaults(monkeypatch) -> None:
    for name in ("pg_catalog.pg_attrdef", "information_schema.columns"):
        table = pg_catalog.CATALOG_TABLES[name]
        column = 3 if name.endswith("attrdef") else 5
        monkeypatch.setitem(pg_catalog.CATALOG_TABLES, name, pg_catalog.CatalogTable(
            table.schema, lambda kv, t=table, c=column: [r[:c] + [None] + r[c + 1:] for r in t.rows(kv)]))


def _format_type_typname(monkeypatch) -> None:
    monkeypatch.setattr(pg_functions, "format_type", lambda oid, typmod=None: None if oid is None else
                        pg_catalog.PG_TYPE_BY_OID[oid].name if oid in pg_catalog.PG_TYPE_BY_OID else "???")


def _regclass_case_sensitive(monkeypatch) -> None:
    monkeypatch.setattr(pg_functions, "_split_qualified", lambda text: (None, text.replace('"', "")))


def _every_oid_visible(monkeypatch) -> None:
    monkeypatch.setitem(pg_functions.PG_FUNCTIONS, "pg_table_is_visible",
                        pg_functions.PgFunction((pg_functions._OID,), 1, "BOOL", lambda ctx, a: True))


def _standard_strings_off(monkeypatch) -> None:
    from sql import session_vars
    monkeypatch.setitem(session_vars.SESSION_VARS, "standard_conforming_strings", "off")


def _set_config_is_never_kept(monkeypatch) -> None:
    monkeypatch.setattr(pg_functions.CatalogView, "set_setting", lambda self, name, value: value)


def _information_schema_lists_keys_as_tables(monkeypatch) -> None:
    table = pg_catalog.CATALOG_TABLES["information_schema.tables"]
    monkeypatch.setitem(pg_catalog.CATALOG_TABLES, "information_schema.tables", pg_catalog.CatalogTable(
        table.schema, lambda kv: table.rows(kv) + [r[:2] + [r[2] + "_pkey"] + r[3:] for r in table.rows(kv)]))


def _index_in_the_catalog_schema(monkeypatch) -> None:
    monkeypatch.setitem(pg_catalog.NAMESPACE_OIDS, "public", 11)


def _no_search_path(monkeypatch) -> None:
    """Unqualified names are user tables only (pg_catalog is not on the search path)."""
    monkeypatch.setattr(pg_catalog, "PG_CATALOG_NAMES", frozenset())


def _serial_without_its_default(monkeypatch) -> None:
    """SERIAL read as a plain INT: no unique_rowid() default, nullable."""
    from sql import plan
    monkeypatch.setattr(plan, "_SERIAL_TYPES", frozenset())
    monkeypatch.setitem(expr_module._TYPE_NAMES, "SERIAL", "INT")


def _catalog_rows_built_per_read(monkeypatch) -> None:
    """Each read of a catalog table scans the catalog again."""
    monkeypatch.setattr(pg_functions.CatalogView, "catalog_rows",
                        lambda self, name: pg_catalog.catalog_rows(self._session.kv, name))


BROKEN_BUILDS = [
    (check_every_catalog_row_fits_its_columns, _row_one_short),
    (check_pg_class_has_each_table_and_its_primary_key_index, _index_in_the_catalog_schema),
    (check_oids_are_stable_and_never_reused, _oid_by_position),
    (check_pg_attribute_numbers_columns_from_one_with_postgres_types, _attnum_from_zero),
    (check_pg_type_has_postgres_oids, _int8_is_int4),
    (check_keys_in_pg_index_and_pg_constraint, _keys_in_table_order),
    (check_defaults_in_pg_attrdef, _no_defaults),
    (check_information_schema_columns, _information_schema_lists_keys_as_tables),
    (check_format_type_names_types_as_postgres, _format_type_typname),
    (check_regclass_resolves_as_postgres, _regclass_case_sensitive),
    (check_visibility_and_constant_functions, _every_oid_visible),
    (check_settings_clients_show, _standard_strings_off),
    (check_set_and_set_config, _set_config_is_never_kept),
    (check_unqualified_catalog_names_mean_pg_catalog_and_information_schema_is_qualified, _no_search_path),
    (check_serial_columns_are_ints_filled_by_unique_rowid, _serial_without_its_default),
    (check_the_catalog_is_read_once_per_catalog_table_a_statement_names, _catalog_rows_built_per_read),
]


def test_a_pgwire_server_reports_and_takes_these_settings() -> None:
    from sql.pg_settings import parameter_status, startup_settings

    kept = startup_settings({"user": "root", "database": "defaultdb", "client_encoding": "UTF8",
                             "application_name": "psql", "DateStyle": "ISO", "extra_float_digits": "2"})
    assert kept == {"application_name": "psql", "extra_float_digits": "2"}   # only what differs from the default
    reported = parameter_status(kept)
    assert reported["server_version"] == "13.0.0" and reported["application_name"] == "psql"
    assert reported["standard_conforming_strings"] == "on" and reported["integer_datetimes"] == "on"
    assert startup_settings({"client_encoding": "SQL_ASCII"}) == {"client_encoding": "SQL_ASCII"}
    with pytest.raises(SQLError) as caught:
        startup_settings({"TimeZone": "Europe/Paris"})
    assert caught.value.code == "invalid_value"
    with pytest.raises(SQLError) as caught:
        startup_settings({"work_mem": "1MB"})
    assert caught.value.code == "undefined_object"


def test_every_checker_has_a_broken_build() -> None:
    assert [check for check, _ in BROKEN_BUILDS] == CHECKS


@pytest.mark.parametrize("check,breaks", BROKEN_BUILDS, ids=lambda x: x.__name__)
def test_each_checker_fails_on_its_broken_build(monkeypatch, check, breaks) -> None:
    session = Session(MemKV())
    breaks(monkeypatch)
    for ddl in (USERS_DDL, PAIRS_DDL, NOKEY_DDL):
        session.execute(ddl)
    with pytest.raises((AssertionError, SQLError, IndexError)):   # IndexError: a row shorter than its columns
        check(session)


# --- names: where the catalog is, and what it is not ----------------------------------------------


@pytest.mark.parametrize("sql, code", [
    ("INSERT INTO pg_class (oid) VALUES (1)", "unsupported"),
    ("UPDATE pg_catalog.pg_type SET typname = 'x'", "unsupported"),
    ("DELETE FROM information_schema.tables", "unsupported"),
    ("CREATE TABLE pg_class (x INT)", "unsupported"),
    ("SELECT * FROM pg_catalog.pg_nope", "undefined_table"),
    ("SELECT * FROM information_schema.nope", "undefined_table"),
    ("SELECT * FROM other.users", "unsupported"),
])
def test_the_catalog_is_read_only_and_unknown_names_are_errors(db, sql, code) -> None:
    assert error(db, sql).code == code


def test_the_catalog_follows_ddl_at_once(db) -> None:
    before = len(rows(db, "SELECT * FROM pg_class"))
    db.execute("CREATE TABLE later (k TEXT PRIMARY KEY)")
    assert len(rows(db, "SELECT * FROM pg_class")) == before + 2
    db.execute("DROP TABLE later")
    assert len(rows(db, "SELECT * FROM pg_class")) == before
    assert error(db, "SELECT 'later'::regclass").code == "undefined_table"


# --- SERIAL and what SQLAlchemy's DDL asks for -----------------------------------------------------


def test_sqlalchemy_core_ddl_runs() -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    metadata = sqlalchemy.MetaData()
    table = sqlalchemy.Table(
        "accounts", metadata,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("name", sqlalchemy.String(50), nullable=False),
        sqlalchemy.Column("score", sqlalchemy.Float),
        sqlalchemy.Column("created", sqlalchemy.DateTime),
        sqlalchemy.Column("big", sqlalchemy.BigInteger),
        sqlalchemy.Column("flag", sqlalchemy.Boolean, server_default=sqlalchemy.text("false")),
        sqlalchemy.Column("data", sqlalchemy.LargeBinary),
        sqlalchemy.Column("note", sqlalchemy.Text),
    )
    db = Session(MemKV())
    db.execute(str(CreateTable(table).compile(dialect=postgresql.dialect())))
    found = rows(db, "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                     "WHERE table_name = 'accounts' ORDER BY ordinal_position")
    assert found == [["id", "bigint", "NO", "unique_rowid()"], ["name", "text", "NO", None],
                     ["score", "double precision", "YES", None], ["created", "timestamp without time zone", "YES", None],
                     ["big", "bigint", "YES", None], ["flag", "boolean", "YES", "FALSE"], ["data", "bytea", "YES", None],
                     ["note", "text", "YES", None]]


# --- SQLAlchemy's reflection queries, compiled by its PostgreSQL dialect ---------------------------

def _reflect(db: Session, method: str, *args):
    """Run `dialect.<method>(connection, *args)` with a connection that compiles each query with
    SQLAlchemy's PostgreSQL dialect and runs its text and bound parameters here."""
    pytest.importorskip("sqlalchemy")
    from sqlalchemy.dialects.postgresql import psycopg as pg
    from sqlalchemy.engine.base import Connection

    dialect = pg.dialect()
    dialect.server_version_info = (13, 0)
    dialect.supports_identity_columns = True

    class Result:
        def __init__(self, result):
            self.result = result

        def mappings(self):
            return [dict(zip(self.result.columns, row)) for row in self.result.rows]

        def all(self):
            return [tuple(row) for row in self.result.rows]

        def __iter__(self):
            return iter(self.all())

        def scalar(self):
            return self.result.rows[0][0] if self.result.rows else None

    class Recording(Connection):
        def __init__(self):   # no engine: only execute() is used
            pass

        def execute(self, query, params=None):
            state = query.compile(dialect=dialect).construct_expanded_state(params or {})
            names: list[str] = []
            text = re.sub(r"%\((\w+)\)s", lambda m: names.append(m.group(1)) or f"${len(names)}", state.statement)
            return Result(db.execute(text, [state.parameters[n] for n in names]))

        def scalar(self, query, params=None):
            return self.execute(query, params).scalar()

        def scalars(self, query, params=None):
            result = self.execute(query, params)
            return type("Scalars", (), {"all": lambda _: [row[0] for row in result.all()]})()

    return getattr(dialect, method)(Recording(), *args)


@pytest.mark.parametrize("method, args, expected", [
    ("has_schema", ("public",), True),
    ("get_schema_names", (), ["crdb_internal", "information_schema", "public"]),
    ("has_table", ("users",), True),
    ("has_table", ("nope",), False),
    ("get_table_names", (), ["nokey", "pairs", "users"]),
    ("get_pk_constraint", ("pairs",), {"constrained_columns": ["a", "b"], "name": "pairs_pkey", "comment": None,
                                              "dialect_options": {"postgresql_include": []}}),
    ("get_foreign_keys", ("users",), []),
    ("get_indexes", ("users",), []),
    ("get_unique_constraints", ("users",), []),
    ("get_table_comment", ("users",), {"text": None}),
])
def test_sqlalchemy_reflection_queries(db, method, args, expected) -> None:
    found = _reflect(db, method, *args)
    if method == "get_table_names":   # its query has no ORDER BY
        found = sorted(found)
    assert found == expected


def test_sqlalchemy_get_columns(db) -> None:
    columns = _reflect(db, "get_columns", "users")
    assert [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in columns] == [
        ("id", "BIGINT", False, None), ("name", "TEXT", False, None), ("score", "DOUBLE PRECISION", True, "1.5"),
        ("born", "TIMESTAMP", True, None), ("photo", "BYTEA", True, None),
        ("active", "BOOLEAN", True, "TRUE")]


def test_psql_describe_queries_with_inner_joins(db) -> None:
    """The questions psql's \\dt and \\d users ask, with the LEFT JOINs and regex matches of its
    real queries (which need the planner branch) written as inner joins and equality."""
    dt = rows(db, "SELECT n.nspname, c.relname, CASE c.relkind WHEN 'r' THEN 'table' WHEN 'i' THEN 'index' END, "
                  "pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                  "ON n.oid = c.relnamespace JOIN pg_catalog.pg_am am ON am.oid = c.relam WHERE c.relkind IN "
                  "('r', 'p', '') AND n.nspname <> 'pg_catalog' AND n.nspname <> 'information_schema' AND "
                  "pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1, 2")
    assert dt == [["public", "nokey", "table", "root"], ["public", "pairs", "table", "root"],
                  ["public", "users", "table", "root"]]
    oid = one(db, "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE c.relname = 'users' AND pg_catalog.pg_table_is_visible(c.oid)")
    info = rows(db, "SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, "
                    "c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, "
                    "c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE "
                    "c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, "
                    "am.amname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_am am ON (c.relam = am.oid) "
                    "WHERE c.oid = $1", [str(oid)])
    assert info == [[0, "r", True, False, False, False, False, False, False, 0, "", "p", "d", "heap"]]
    columns = rows(db, "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                       "a.attidentity, a.attgenerated FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 "
                       "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", [str(oid)])
    assert [r[:3] for r in columns][:3] == [["id", "bigint", True], ["name", "text", True],
                                            ["score", "double precision", False]]
    indexes = rows(db, "SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, "
                       "pg_catalog.pg_get_indexdef(i.indexrelid, 0, true), pg_catalog.pg_get_constraintdef(con.oid, "
                       "true), contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace "
                       "FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i "
                       "JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid "
                       "AND contype IN ('p','u','x')) WHERE c.oid = $1 AND c.oid = i.indrelid AND "
                       "i.indexrelid = c2.oid ORDER BY i.indisprimary DESC, c2.relname", [str(oid)])
    assert indexes == [["users_pkey", True, True, False, True,
                        "CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)", "PRIMARY KEY (id)", "p",
                        False, False, False, 0]]


def test_psycopg_type_info_and_psql_inheritance_queries(db) -> None:
    """Verbatim queries: psycopg's TypeInfo.fetch (SQLAlchemy runs it for hstore on connect) and
    the inheritance footers of psql 15's \\d."""
    type_info = ("SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, "
                 "typdelim AS delimiter FROM pg_type t WHERE t.oid = to_regtype($1) ORDER BY t.oid")
    assert rows(db, type_info, ["hstore"]) == []
    assert rows(db, type_info, ["int8"]) == [["int8", 20, 1016, "bigint", ","]]
    assert rows(db, type_info, ["timestamp without time zone"]) == [["timestamp", 1114, 1115,
                                                                     "timestamp without time zone", ","]]
    oid = str(oid_of(db, "users"))
    assert rows(db, "SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i "
                    "WHERE c.oid = i.inhparent AND i.inhrelid = $1 AND c.relkind != 'p' AND c.relkind != 'I' "
                    "ORDER BY inhseqno", [oid]) == []
    assert rows(db, "SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending, "
                    "pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_class c, "
                    "pg_catalog.pg_inherits i WHERE c.oid = i.inhrelid AND i.inhparent = $1 ORDER BY "
                    "pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', "
                    "c.oid::pg_catalog.regclass::pg_catalog.text", [oid]) == []
    assert rows(db, "SELECT to_regclass('users'), to_regclass('nope'), to_regtype('nope')") \
        == [[int(oid), None, None]]
