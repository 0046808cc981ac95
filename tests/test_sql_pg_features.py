"""The SQL that psql's \\dt / \\d and SQLAlchemy's reflection queries need (sql/DIFFERENCES.md):
LEFT JOIN, subqueries (scalar, correlated, EXISTS, IN, ANY/ALL), derived tables, UNION ALL,
checked against sqlite3 where SQLite means the same; ``= ANY(ARRAY[...])``, regular expressions,
``OPERATOR(pg_catalog.op)``, ``COLLATE`` and ``pg_catalog.`` names checked against their
PostgreSQL meaning. The broken builds at the end show the checks catch a wrong engine."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import pytest

from sql import MemKV, Session, SQLError
from sql import dialect as sql_dialect
from sql import execute as sql_execute
from sql import expr as sql_expr

SCHEMA = [
    ("CREATE TABLE t (a INT PRIMARY KEY, b TEXT, c INT, f FLOAT)",
     "CREATE TABLE t (a INT PRIMARY KEY, b TEXT, c INT, f REAL) STRICT"),
    ("CREATE TABLE u (x INT PRIMARY KEY, a INT, v TEXT)",
     "CREATE TABLE u (x INT PRIMARY KEY, a INT, v TEXT) STRICT"),
    ("CREATE TABLE w (k TEXT PRIMARY KEY, a INT, n INT)",
     "CREATE TABLE w (k TEXT PRIMARY KEY, a INT, n INT) STRICT"),
]
ROWS = [
    "INSERT INTO t VALUES (1, 'one', 10, 1.5), (2, 'two', NULL, 2.25), (3, NULL, 30, NULL), "
    "(4, 'four', 10, -0.5), (5, 'five', 50, 0.0)",
    "INSERT INTO u VALUES (1, 1, 'p'), (2, 1, 'q'), (3, 3, NULL), (4, NULL, 'z'), (5, 9, 'p')",
    "INSERT INTO w VALUES ('a', 1, 2), ('b', 3, NULL), ('c', NULL, 5), ('d', 4, 4)",
]

# One SQL text for both engines; every query orders fully (NULLS placed explicitly) or is
# compared as a multiset (`ordered` False).
DIFFERENTIAL = [
    # LEFT JOIN: unmatched rows NULL-extended, ON conditions on both sides, chains with inner joins
    ("SELECT t.a, u.x FROM t LEFT JOIN u ON u.a = t.a", False),
    ("SELECT t.a, u.x, u.v FROM t LEFT OUTER JOIN u ON u.a = t.a AND u.v = 'q'", False),
    ("SELECT t.a, u.x FROM t LEFT JOIN u ON t.c > 15", False),
    ("SELECT t.a, u.x FROM t LEFT JOIN u ON u.a = t.a WHERE u.x IS NULL", False),
    ("SELECT t.a, u.x FROM t LEFT JOIN u ON u.a = t.a WHERE u.x IS NULL OR u.x > 1", False),
    ("SELECT t.a, u.x, w.k FROM t LEFT JOIN u ON u.a = t.a LEFT JOIN w ON w.a = u.a", False),
    ("SELECT t.a, u.x, w.k FROM t LEFT JOIN u ON u.a = t.a JOIN w ON w.a = t.a", False),
    ("SELECT t.a, u.x, w.k FROM t JOIN w ON w.a = t.a LEFT JOIN u ON u.a = w.a AND u.x > t.a", False),
    ("SELECT t.a, w.k FROM t, w LEFT JOIN u ON u.a = w.n WHERE t.a = w.a", False),
    ("SELECT t.a, count(u.x) FROM t LEFT JOIN u ON u.a = t.a GROUP BY t.a", False),
    ("SELECT t.a, coalesce(u.v, 'none') FROM t LEFT JOIN u ON u.a = t.a AND u.x = 2", False),
    ("SELECT t.a, u.x FROM t LEFT JOIN u ON u.a = t.a WHERE t.a = 1", False),
    ("SELECT t.a, u.x FROM t LEFT JOIN u ON 1 = 0", False),
    # scalar subqueries: select list, WHERE, ORDER BY; correlated and not
    ("SELECT a, (SELECT count(*) FROM u WHERE u.a = t.a) FROM t", False),
    ("SELECT a, (SELECT u.v FROM u WHERE u.a = t.a AND u.x = 3) FROM t", False),
    ("SELECT a, (SELECT max(x) FROM u) FROM t WHERE a < 3", False),
    ("SELECT a FROM t WHERE c = (SELECT max(c) FROM t)", False),
    ("SELECT a FROM t WHERE (SELECT count(*) FROM u WHERE u.a = t.a) >= 1", False),
    ("SELECT a FROM t ORDER BY (SELECT count(*) FROM u WHERE u.a = t.a) DESC, a ASC", True),
    ("SELECT a, (SELECT k FROM w WHERE w.a = t.a) FROM t", False),
    ("SELECT t.a, (SELECT count(*) FROM w WHERE w.a = u.a) FROM t LEFT JOIN u ON u.a = t.a", False),
    # EXISTS, IN, NOT IN (NULLs in the subquery)
    ("SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a)", False),
    ("SELECT a FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.a = t.a)", False),
    ("SELECT a FROM t WHERE a IN (SELECT a FROM u)", False),
    ("SELECT a FROM t WHERE a NOT IN (SELECT a FROM u)", False),
    ("SELECT a FROM t WHERE a NOT IN (SELECT a FROM u WHERE a IS NOT NULL)", False),
    ("SELECT a, a IN (SELECT a FROM u) FROM t", False),
    ("SELECT a FROM t WHERE b IN (SELECT v FROM u WHERE u.x > t.a)", False),
    ("SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a AND "
     "EXISTS (SELECT 1 FROM w WHERE w.a = u.a AND t.c > 5))", False),
    # outer columns of two levels out sit at the same index of different rows: no key span
    # may be derived through them (u.x = t.a AND m.a = 2 says nothing of u.x = 2)
    ("SELECT t.a FROM t WHERE EXISTS (SELECT 1 FROM t AS m WHERE EXISTS "
     "(SELECT 1 FROM u WHERE u.x = t.a AND m.a = 2))", False),
    # derived tables
    ("SELECT d.a, d.m FROM (SELECT a, c * 2 AS m FROM t WHERE c IS NOT NULL) AS d WHERE d.m > 20", False),
    ("SELECT d.a, u.x FROM (SELECT a FROM t WHERE a > 1) AS d LEFT JOIN u ON u.a = d.a", False),
    ("SELECT g.c, g.n FROM (SELECT c, count(*) AS n FROM t GROUP BY c) AS g ORDER BY g.c NULLS FIRST", True),
    ("SELECT a FROM (SELECT a FROM t ORDER BY a DESC LIMIT 2) AS top ORDER BY a", True),
    ("SELECT a FROM t WHERE EXISTS (SELECT 1 FROM (SELECT x FROM u WHERE u.a = t.a) AS d WHERE d.x > 1)", False),
    # UNION ALL
    ("SELECT a FROM t UNION ALL SELECT x FROM u", False),
    ("SELECT a, b FROM t UNION ALL SELECT x, v FROM u ORDER BY 1 DESC, 2 ASC NULLS FIRST LIMIT 4", True),
    ("SELECT q.b FROM (SELECT a, b FROM t UNION ALL SELECT x, v FROM u) AS q WHERE q.a > 2", False),
    ("SELECT a FROM t WHERE a IN (SELECT x FROM u WHERE v = 'p' UNION ALL SELECT n FROM w)", False),
    ("SELECT c FROM t UNION SELECT a FROM u", False),
    ("SELECT c FROM t UNION SELECT a FROM u UNION ALL SELECT n FROM w", False),
    ("SELECT c FROM t UNION ALL SELECT a FROM u UNION SELECT n FROM w ORDER BY 1 NULLS LAST", True),
    ("SELECT q.v, count(*) FROM (SELECT v FROM u UNION SELECT b FROM t) AS q GROUP BY q.v", False),
    # CASE, COALESCE, NULLIF, || beside them
    ("SELECT a, CASE WHEN c > 20 THEN 'big' WHEN c IS NULL THEN 'none' ELSE 'small' END FROM t", False),
    ("SELECT a, CASE c WHEN 10 THEN 'ten' ELSE b || '!' END FROM t", False),
    ("SELECT a, coalesce(b, 'x') || '-' || coalesce(nullif(c, 10), 0) FROM t", False),
]


def _pair() -> tuple[Session, sqlite3.Connection]:
    ours = Session(MemKV())
    theirs = sqlite3.connect(":memory:")
    for mine, sqlite_ddl in SCHEMA:
        ours.execute(mine)
        theirs.execute(sqlite_ddl)
    for insert in ROWS:
        ours.execute(insert)
        theirs.execute(insert)
    return ours, theirs


def _norm(value):
    return int(value) if isinstance(value, bool) else value


def _same(ours: list, theirs: list, ordered: bool) -> bool:
    def key(row):
        return tuple((0, 0) if v is None else (1, str(type(_norm(v)) is str), str(_norm(v))) for v in row)

    if not ordered:
        ours, theirs = sorted(ours, key=key), sorted(theirs, key=key)
    if len(ours) != len(theirs):
        return False
    for r1, r2 in zip(ours, theirs):
        for a, b in zip(map(_norm, r1), map(_norm, r2)):
            if a is None or b is None:
                if a is not b:
                    return False
            elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
                if not math.isclose(a, b, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def differential_mismatches() -> list[str]:
    """Every query of DIFFERENTIAL whose rows differ from sqlite3's (or that fails on ours)."""
    ours, theirs = _pair()
    found = []
    for sql, ordered in DIFFERENTIAL:
        expected = [list(r) for r in theirs.execute(sql).fetchall()]
        try:
            got = ours.execute(sql).rows
        except SQLError as error:
            found.append(f"{sql}\n    ours failed: {error}")
            continue
        if not _same(got, expected, ordered):
            found.append(f"{sql}\n    ours:   {got}\n    sqlite: {expected}")
    return found


def test_left_joins_subqueries_derived_tables_and_union_all_agree_with_sqlite() -> None:
    mismatches = differential_mismatches()
    assert not mismatches, "\n".join(mismatches)


# --- PostgreSQL meaning ------------------------------------------------------------------------


@pytest.fixture
def db() -> Session:
    return _pair()[0]


def _rows(db: Session, sql: str, params=None) -> list:
    return db.execute(sql, params).rows


PG_CASES = [
    # unnest as a FROM item (psql's extended-statistics query: FROM pg_catalog.unnest(stxkeys) s(attnum)),
    # joined, correlated inside a subquery; and an aggregate's ORDER BY under its pg_catalog. name
    ("SELECT s.n, t.b FROM pg_catalog.unnest('{1,2,7}'::int[]) s(n) LEFT JOIN t ON t.a = s.n ORDER BY 1",
     [[1, "one"], [2, "two"], [7, None]]),
    ("SELECT u FROM unnest('{b,NULL,a}'::text[]) AS u ORDER BY 1 NULLS LAST", [["a"], ["b"], [None]]),
    ("SELECT a, (SELECT count(*) FROM unnest('{1,2,3}'::int[]) AS u WHERE u <= t.a) FROM t WHERE a < 5 ORDER BY a",
     [[1, 1], [2, 2], [3, 3], [4, 3]]),
    ("SELECT pg_catalog.string_agg(b, ', ' ORDER BY a DESC) FROM t WHERE a < 3", [["two, one"]]),
    # a UNION with ORDER BY whose columns repeat a name (psql's publications query: pubname, NULL, NULL)
    ("SELECT 1, NULL, NULL UNION SELECT 2, NULL, 'x' UNION SELECT 1, NULL, NULL ORDER BY 1",
     [[1, None, None], [2, None, "x"]]),
    ("SELECT a, NULL AS a FROM t WHERE a < 2 UNION ALL SELECT 9, 'z' ORDER BY 1 DESC", [[9, "z"], [1, None]]),
    # x op ANY / ALL over ARRAY[...], a subquery, array text; three-valued like IN
    ("SELECT a FROM t WHERE b = ANY (ARRAY['one', 'five']) ORDER BY a", [[1], [5]]),
    ("SELECT a FROM t WHERE c <> ALL (ARRAY[10, 30]) ORDER BY a", [[5]]),
    ("SELECT 3 = ANY (ARRAY[1, NULL]), 1 = ANY (ARRAY[1, NULL]), 3 <> ALL (ARRAY[1, NULL]), "
     "1 <> ALL (ARRAY[1, NULL])", [[None, True, None, False]]),
    ("SELECT NULL::INT = ANY (ARRAY[1]), 1 = ANY ('{}'), 1 <> ALL ('{}')", [[None, False, True]]),
    ("SELECT 2 = ANY ('{1,2}'), 'a b' = ANY ('{x,\"a b\"}'), 'NULL' = ANY ('{NULL}')", [[True, True, None]]),
    ("SELECT a FROM t WHERE a > ALL (SELECT a FROM u WHERE a < 9) ORDER BY a", [[4], [5]]),
    ("SELECT a FROM t WHERE a > ALL (SELECT a FROM u WHERE x <> 5) ORDER BY a", []),
    ("SELECT a FROM t WHERE a = ANY (SELECT a FROM u) ORDER BY a", [[1], [3]]),
    ("SELECT a FROM t WHERE a < ANY (ARRAY[2.5]) ORDER BY a", [[1], [2]]),
    # regular expressions: a match anywhere; ~* ignores case; !~ / !~* negate; NULL stays NULL
    ("SELECT a FROM t WHERE b ~ 'o' ORDER BY a", [[1], [2], [4]]),
    ("SELECT a FROM t WHERE b ~ '^f' AND b !~ 'v' ORDER BY a", [[4]]),
    ("SELECT 'Users' ~* '^users$', 'Users' !~* 'USERS', 'abc' ~ 'B', NULL ~ 'a'", [[True, False, False, None]]),
    # psql's spelling: OPERATOR(pg_catalog.~) and COLLATE pg_catalog.default
    ("SELECT a FROM t WHERE b OPERATOR(pg_catalog.~) '^(two)$' COLLATE pg_catalog.default", [[2]]),
    ("SELECT a FROM t WHERE b OPERATOR(pg_catalog.!~) 'o' COLLATE \"C\" ORDER BY 1", [[5]]),
    ("SELECT a FROM t WHERE a OPERATOR(pg_catalog.=) 3", [[3]]),
    ("SELECT b FROM t WHERE b IS NOT NULL ORDER BY b COLLATE \"C\" DESC LIMIT 2", [["two"], ["one"]]),
    # pg_catalog.-qualified built-in functions and types
    ("SELECT pg_catalog.lower('AbC'), pg_catalog.length('abc'), pg_catalog.coalesce(NULL, 2)", [["abc", 3, 2]]),
    ("SELECT CAST(a AS pg_catalog.text) || 'x', a::pg_catalog.int8 + 1, a::smallint FROM t WHERE a = 1", [["1x", 2, 1]]),
    # arrays as the catalog queries use them: ARRAY(subquery), array_to_string, a[i], casts to t[]
    ("SELECT array_to_string(ARRAY(SELECT b FROM t WHERE a < 4 ORDER BY a DESC), ',')", [["two,one"]]),
    ("SELECT ARRAY(SELECT a FROM t WHERE a > 3)", [[[4, 5]]]),
    ("SELECT ('{7,8,9}'::INT[])[2], ('{7,8,9}'::INT[])[4], array_upper('{7,8}'::INT[], 1), "
     "array_upper('{}'::INT[], 1)", [[8, None, 2, None]]),
    ("SELECT a FROM t WHERE a = ANY (ARRAY(SELECT x FROM u WHERE v = 'p')) ORDER BY a", [[1], [5]]),
    # aggregates: string_agg, array_agg (ORDER BY inside), bool_and / bool_or
    ("SELECT string_agg(b, ', ') FROM t", [["one, two, four, five"]]),
    ("SELECT string_agg(b, '|' ORDER BY b), array_agg(a ORDER BY a DESC) FROM t WHERE a < 4",
     [["one|two", [3, 2, 1]]]),
    ("SELECT c, bool_and(a > 1), bool_or(a > 3), array_agg(b) FROM t GROUP BY c HAVING count(*) > 1",
     [[10, False, True, ["one", "four"]]]),
    ("SELECT string_agg(b, ','), array_agg(a), bool_and(a > 0) FROM t WHERE a > 99", [[None, None, None]]),
    # generate_series in FROM, correlated to the enclosing query too
    ("SELECT s FROM generate_series(1, 7, 3) AS s", [[1], [4], [7]]),
    ("SELECT s FROM pg_catalog.generate_series(3, 1, -1) s", [[3], [2], [1]]),
    ("SELECT s FROM generate_series(1, NULL) AS s", []),
    ("SELECT a, (SELECT count(*) FROM generate_series(1, t.a) AS s) FROM t WHERE a < 3 ORDER BY a", [[1, 1], [2, 2]]),
    ("SELECT (SELECT string_agg(b, ',') FROM generate_series(1, 3) AS s, t WHERE t.a = ('{3,1}'::INT[])[s])",
     [["one"]]),
    # set-returning functions in the select list, side by side (PostgreSQL 10+)
    ("SELECT a, unnest('{x,y}'::TEXT[]) AS e, generate_subscripts('{x,y}'::TEXT[], 1) AS i FROM t WHERE a = 1",
     [[1, "x", 1], [1, "y", 2]]),
    ("SELECT unnest(ARRAY(SELECT a FROM t WHERE a < 3)), unnest('{p}'::TEXT[])", [[1, "p"], [2, None]]),
    # IS [NOT] TRUE, positional ORDER BY, LIMIT / OFFSET in a subquery
    ("SELECT a FROM t WHERE (c > 20) IS NOT TRUE ORDER BY 1", [[1], [2], [4]]),
    ("SELECT (SELECT x FROM u ORDER BY x DESC LIMIT 1 OFFSET 1)", [[4]]),
]


@pytest.mark.parametrize(("sql", "expected"), PG_CASES, ids=[c[0][:60] for c in PG_CASES])
def test_postgresql_meaning(db: Session, sql: str, expected: list) -> None:
    assert _rows(db, sql) == expected


def test_any_takes_a_list_parameter_as_an_array(db: Session) -> None:
    """psycopg sends a Python list for ``= ANY(%s)``; the DB-API styles both bind it."""
    assert _rows(db, "SELECT a FROM t WHERE b = ANY ($1) ORDER BY a", [["one", "two"]]) == [[1], [2]]
    assert _rows(db, "SELECT a FROM t WHERE a <> ALL (%s) ORDER BY a", [[1, 2, 3]]) == [[4], [5]]
    assert _rows(db, "SELECT a FROM t WHERE a = ANY ($1)", [[]]) == []


def test_a_scalar_subquery_with_two_rows_is_error_21000(db: Session) -> None:
    with pytest.raises(SQLError) as caught:
        db.execute("SELECT a, (SELECT x FROM u WHERE u.a = t.a) FROM t")
    assert caught.value.code == "cardinality_violation"
    assert "more than one row returned by a subquery used as an expression" in caught.value.message
    from raftstore.errors import SQLSTATE_BY_SQL_CODE
    assert SQLSTATE_BY_SQL_CODE["cardinality_violation"] == "21000"


@pytest.mark.parametrize(("sql", "code", "words"), [
    ("SELECT (SELECT 1, 2)", "syntax", "only one column"),
    ("SELECT a FROM t WHERE a IN (SELECT a, x FROM u)", "syntax", "too many columns"),
    ("SELECT a FROM t WHERE b IN (SELECT a FROM u)", "datatype_mismatch", "cannot compare TEXT with INT"),
    ("SELECT * FROM (SELECT 1)", "syntax", "must have an alias"),
    ("SELECT 'x' ~ '('", "invalid_regular_expression", "invalid regular expression"),
    ("SELECT * FROM t RIGHT JOIN u ON t.a = u.a", "feature_not_supported", "RIGHT JOIN"),
    ("SELECT * FROM t FULL JOIN u ON t.a = u.a", "feature_not_supported", "FULL JOIN"),
    ("SELECT a FROM t UNION ALL SELECT x, v FROM u", "syntax", "same number of columns"),
    ("SELECT a FROM t UNION ALL SELECT v FROM u", "datatype_mismatch", "UNION types"),
    ("SELECT ARRAY[1]", "unsupported", "arrays other than"),
    ("SELECT b FROM t WHERE b = 'x' COLLATE \"de_DE\"", "unsupported", "COLLATE other than"),
    ("SELECT CAST(a AS regproc) FROM t", "unsupported", "type regproc"),
    ("SELECT b, (SELECT count(*) FROM u WHERE u.a = t.c) FROM t GROUP BY b, c", "unsupported",
     "grouped query"),
])
def test_refused_with_a_reason(db: Session, sql: str, code: str, words: str) -> None:
    with pytest.raises(SQLError) as caught:
        db.execute(sql)
    assert caught.value.code == code, caught.value
    assert words in caught.value.message, caught.value


def test_a_cast_hook_serves_a_type_name(db: Session, monkeypatch) -> None:
    """The catalog's types (regclass, oid, ...) plug in through expr.CAST_HOOKS."""
    def to_label(compiler, operand, node):
        fn = operand.fn
        return sql_expr.Compiled(lambda row, ctx: None if (v := fn(row, ctx)) is None else f"t{v}", "TEXT", False)

    monkeypatch.setitem(sql_expr.CAST_HOOKS, "regclass", to_label)
    assert _rows(db, "SELECT a::pg_catalog.regclass, CAST(a AS regclass) FROM t WHERE a = 2") == [["t2", "t2"]]


def test_uncorrelated_subquery_runs_once_per_statement(db: Session, monkeypatch) -> None:
    runs = []
    real = sql_execute.Session._run_subquery

    def counted(self, plan, row, ctx):
        runs.append(plan)
        return real(self, plan, row, ctx)

    monkeypatch.setattr(sql_execute.Session, "_run_subquery", counted)
    assert len(_rows(db, "SELECT a FROM t WHERE a IN (SELECT a FROM u)")) == 2
    assert len(runs) == 1
    runs.clear()
    _rows(db, "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a)")
    assert len(runs) == 5   # correlated: once per row of t


# --- the shapes of psql's and SQLAlchemy's catalog queries, over ordinary tables ----------------

CATALOG = [   # the virtual pg_catalog (sql/pg_catalog.py) describes these
    "CREATE TABLE users (id INT PRIMARY KEY, name TEXT DEFAULT 'anon')",
    "CREATE TABLE orders (id INT PRIMARY KEY)",
]


@pytest.fixture
def catalog() -> Session:
    session = Session(MemKV())
    for sql in CATALOG:
        session.execute(sql)
    return session


def test_psql_dt_shape(catalog: Session) -> None:
    """psql 15's \\dt (listTables), its functions left out."""
    sql = """SELECT n.nspname as "Schema", c.relname as "Name",
      CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'p' THEN 'partitioned table' END as "Type"
    FROM pg_class c
         LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_am am ON am.oid = c.relam
    WHERE c.relkind IN ('r','p','')
          AND n.nspname <> 'pg_catalog'
          AND n.nspname !~ '^pg_toast'
          AND n.nspname <> 'information_schema'
    ORDER BY 1,2"""
    result = catalog.execute(sql)
    assert result.columns == ["Schema", "Name", "Type"]
    assert result.rows == [["public", "orders", "table"], ["public", "users", "table"]]


def test_psql_d_table_shape(catalog: Session) -> None:
    """psql 15's \\d users: the table by regex, then its columns with a correlated default."""
    found = catalog.execute("""SELECT c.oid, n.nspname, c.relname
        FROM pg_class c LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default
        ORDER BY 2, 3""").rows
    users = catalog.execute("SELECT 'users'::regclass").rows[0][0]
    assert found == [[users, "public", "users"]]
    columns = catalog.execute("""SELECT a.attname,
          (SELECT d.adbin FROM pg_attrdef d
           WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
          a.attnotnull,
          (SELECT c.collname FROM pg_collation c, pg_type t
           WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation
        FROM pg_attribute a
        WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum""", [users]).rows
    assert columns == [["id", None, True, None], ["name", "'anon'", False, None]]


def test_sqlalchemy_columns_query_shape(catalog: Session) -> None:
    """SQLAlchemy 2's get_columns (PGDialect._columns_query): LEFT OUTER JOINs with ON conditions
    on the right side alone, an inner JOIN after them, CASE over correlated scalar subqueries,
    ``relkind = ANY (ARRAY[%s::VARCHAR, ...])``, and IN over expanded parameters."""
    sql = """SELECT pg_attribute.attname AS name,
      CASE WHEN pg_attribute.atthasdef THEN (SELECT pg_attrdef.adbin AS pg_get_expr_1
        FROM pg_attrdef
        WHERE pg_attribute.atthasdef AND pg_attrdef.adrelid = pg_attribute.attrelid
          AND pg_attrdef.adnum = pg_attribute.attnum) ELSE NULL END AS "default",
      pg_attribute.attnotnull AS not_null, pg_class.relname AS table_name,
      pg_description.description AS comment,
      CASE WHEN (pg_attribute.attcollation != %s::INTEGER AND (SELECT pg_type.typcollation
        FROM pg_type WHERE pg_type.oid = pg_attribute.atttypid) != pg_attribute.attcollation)
        THEN (SELECT pg_collation.collname FROM pg_collation
              WHERE pg_collation.oid = pg_attribute.attcollation) ELSE NULL END AS collation
    FROM pg_class LEFT OUTER JOIN pg_attribute ON pg_class.oid = pg_attribute.attrelid
        AND pg_attribute.attnum > %s::SMALLINT AND NOT pg_attribute.attisdropped
      LEFT OUTER JOIN pg_description ON pg_description.objoid = pg_attribute.attrelid
        AND pg_description.objsubid = pg_attribute.attnum
      JOIN pg_namespace ON pg_namespace.oid = pg_class.relnamespace
    WHERE pg_class.relkind = ANY (ARRAY[%s::VARCHAR, %s::VARCHAR, %s::VARCHAR])
      AND pg_class.relpersistence != %s::VARCHAR AND pg_namespace.nspname != %s::VARCHAR
      AND pg_class.relname IN (%s, %s)
    ORDER BY pg_class.relname, pg_attribute.attnum"""
    params = [0, 0, "r", "p", "f", "t", "pg_catalog", "users", "orders"]
    result = catalog.execute(sql, params)
    assert result.columns == ["name", "default", "not_null", "table_name", "comment", "collation"]
    assert result.rows == [["id", None, True, "orders", None, None],
                           ["id", None, True, "users", None, None],
                           ["name", "'anon'", False, "users", None, None]]


def test_sqlalchemy_has_table_shape(catalog: Session) -> None:
    sql = """SELECT pg_class.relname FROM pg_class
      JOIN pg_namespace ON pg_namespace.oid = pg_class.relnamespace
    WHERE pg_class.relname IN (%s) AND pg_class.relkind = ANY (ARRAY[%s::VARCHAR, %s::VARCHAR])
      AND pg_namespace.nspname != %s::VARCHAR"""
    assert catalog.execute(sql, ["users", "r", "p", "pg_catalog"]).rows == [["users"]]
    assert catalog.execute(sql, ["nope", "r", "p", "pg_catalog"]).rows == []


# The catalog queries clients send, recorded: psql 15.18's \dt and \d users (captured from psql
# itself) and SQLAlchemy 2.1's reflection (compiled by its PostgreSQL dialect). Their tables and
# functions come from the pg_catalog modules; their SQL is this engine's to parse.
CATALOG_FUNCTIONS = frozenset({
    "pg_get_userbyid", "pg_table_is_visible", "format_type", "pg_get_expr", "pg_get_indexdef",
    "pg_get_constraintdef", "pg_get_statisticsobjdef_columns", "pg_relation_is_publishable",
    "json_build_object", "pg_get_serial_sequence", "pg_collation_is_visible",
})


def _recorded(name: str) -> list[str]:
    text = (Path(__file__).parent / "sql_cases" / name).read_text()
    chunks = [q.strip() for q in text.split("\n=====\n")]
    return [q for q in chunks if any(line and not line.startswith("--") for line in q.splitlines())]


@pytest.mark.parametrize("sql", _recorded("psql15_describe.sql") + _recorded("sqlalchemy21_reflection.sql"))
def test_client_catalog_queries_parse(sql: str, monkeypatch) -> None:
    """With the catalog's functions admitted and its tables named bare, each recorded query is
    SQL this engine runs: nothing in it is refused."""
    monkeypatch.setattr(sql_dialect, "ANONYMOUS_FUNCTIONS", sql_dialect.ANONYMOUS_FUNCTIONS | CATALOG_FUNCTIONS)
    (statement,) = sql_dialect.parse(re.sub(r"pg_catalog\.(pg_\w+)", r"\1", sql))
    assert statement.kind == "select"


def test_psql_describe_queries_run_over_the_catalog() -> None:
    """psql 15's \\dt and \\d users, every query as recorded, over the virtual catalog (the
    recorded OID replaced by the table's): each runs, and those whose answers psql prints say
    what PostgreSQL would."""
    session = Session(MemKV())
    session.execute("CREATE TABLE users (id INT PRIMARY KEY, name TEXT NOT NULL, score FLOAT DEFAULT 1.5)")
    [[oid]] = session.execute("SELECT 'users'::regclass::oid").rows
    answers = [session.execute(q.replace("'16384'", "'%d'" % oid)).rows for q in _recorded("psql15_describe.sql")]
    assert answers[0] == [["public", "users", "table", "root"]]              # \dt
    assert answers[1] == [[oid, "public", "users"]]                          # \d users: which table
    assert [row[:4] for row in answers[3]] == [["id", "bigint", None, True], ["name", "text", None, True],
                                               ["score", "double precision", "1.5", False]]   # its columns
    assert answers[4][0][:2] == ["users_pkey", True] and "PRIMARY KEY (id)" in answers[4][0]   # its index
    assert all(a == [] for a in answers[5:])   # no policies, statistics, publications, inheritance


# --- broken builds: the checks above catch them -------------------------------------------------


def _left_join_drops_unmatched_rows(monkeypatch) -> None:
    real = sql_execute.Session._left_join

    def inner_only(self, left_rows, right, pad, width, step, filters, ctx):
        return (row for row in real(self, left_rows, right, pad, width, step, filters, ctx)
                if any(v is not None for v in row[len(row) - width:]))
    monkeypatch.setattr(sql_execute.Session, "_left_join", inner_only)


def _correlation_reads_a_stale_row(monkeypatch) -> None:
    """A correlated subquery that reads the first outer row it ever saw (a cache keyed wrongly)."""
    def inner(self, row):
        first = self.cache.setdefault("first outer row", row)
        return sql_expr.EvalContext(self.params, self.now, self.new_rowid, self.run_query,
                                    (first, *self.outer), self.cache)
    monkeypatch.setattr(sql_expr.EvalContext, "inner", inner)


def _not_in_ignores_nulls(monkeypatch) -> None:
    real = sql_expr._quantified_fn

    def two_valued(a, elements, op, any_):
        def no_nulls(row, ctx):
            values = elements(row, ctx)
            return None if values is None else [v for v in values if v is not None]
        return real(a, no_nulls, op, any_)
    monkeypatch.setattr(sql_expr, "_quantified_fn", two_valued)


def _subquery_takes_first_row(monkeypatch) -> None:
    def first_only(plan):
        def rows(row, ctx):
            return ctx.run_query(plan, row, ctx)[:1]
        return rows
    monkeypatch.setattr(sql_expr, "_query_rows", first_only)


def _regex_anchored_at_start(monkeypatch) -> None:
    real = sql_expr._regex_compiled.__wrapped__

    class Anchored:
        def __init__(self, pattern):
            self.pattern = pattern

        def search(self, text):
            return self.pattern.match(text)

    monkeypatch.setattr(sql_expr, "_regex_compiled", lambda p, flags: Anchored(real(p, flags)))


def _pg_meaning_failures(session: Session) -> int:
    failures = 0
    for sql, expected in PG_CASES:
        try:
            failures += session.execute(sql).rows != expected
        except SQLError:
            failures += 1
    return failures


@pytest.mark.parametrize("breakage", [
    _left_join_drops_unmatched_rows, _correlation_reads_a_stale_row, _not_in_ignores_nulls,
    _subquery_takes_first_row, _regex_anchored_at_start,
])
def test_a_broken_engine_is_caught(monkeypatch, breakage) -> None:
    breakage(monkeypatch)
    caught = len(differential_mismatches()) + _pg_meaning_failures(_pair()[0])
    if breakage is _subquery_takes_first_row:
        with pytest.raises((AssertionError, pytest.fail.Exception)):   # the 21000 check catches it
            test_a_scalar_subquery_with_two_rows_is_error_21000(_pair()[0])
        caught += 1
    assert caught > 0


def test_schema_qualified_column_names_an_unaliased_catalog_table() -> None:
    """SQLAlchemy writes ``pg_catalog.pg_class.relname``: schema.table.column resolves to the
    source whose full name is schema.table and that has no alias of its own."""
    scope = sql_expr.Scope()
    scope.add("pg_class", [("oid", "INT"), ("relname", "TEXT")], table="pg_catalog.pg_class")
    scope.add("c", [("relname", "TEXT")], table="pg_catalog.pg_class")
    (statement,) = sql_dialect.parse("SELECT pg_catalog.pg_class.relname, c.relname")
    full, aliased = statement.ast.expressions
    assert scope.resolve(full) == (1, "TEXT", "relname", 0)
    assert scope.resolve(aliased) == (2, "TEXT", "relname", 1)
    with pytest.raises(SQLError) as caught:
        scope.resolve(sql_dialect.parse("SELECT pg_catalog.c.relname")[0].ast.expressions[0])
    assert caught.value.code == "undefined_column"


def test_sqlalchemy_pk_constraint_query_runs_over_the_catalog() -> None:
    """SQLAlchemy 2's get_pk_constraint, as recorded (derived tables two deep, joined; unnest and
    generate_subscripts side by side over the int2vector indkey; array_agg(... ORDER BY ...);
    bool_and; a regclass cast), over the virtual catalog: the key's columns in key order, not
    table order."""
    session = Session(MemKV())
    session.execute("CREATE TABLE users (name TEXT, id INT, PRIMARY KEY (id, name))")
    session.execute("CREATE TABLE other (k INT PRIMARY KEY)")
    [[oid]] = session.execute("SELECT 'users'::regclass::oid").rows
    sql = next(q for q in _recorded("sqlalchemy21_reflection.sql") if q.startswith("-- get_pk_constraint"))
    # the recorded text has one %s per expanded IN list: bind one oid to each
    result = session.execute(sql, [1, "pg_catalog.pg_constraint", "p", oid, oid])
    assert result.columns == ["conrelid", "cols", "conname", "description", "indnkeyatts", "indnullsnotdistinct"]
    assert result.rows == [[oid, ["id", "name"], "users_pkey", None, 2, False]]


def test_a_correlated_key_lookup_is_a_point_get_per_outer_row() -> None:
    """``u.x = t.a`` inside a subquery: the outer column is a constant while the subquery runs,
    so u is read by point get (one per row of t), never scanned."""
    calls = []

    class Counting(MemKV):
        def scan(self, start, end, limit):
            calls.append("scan")
            return super().scan(start, end, limit)

        def get(self, key):
            calls.append("get")
            return super().get(key)

    session = Session(Counting())
    for sql, _ in SCHEMA:
        session.execute(sql)
    for sql in ROWS:
        session.execute(sql)
    calls.clear()
    rows = session.execute("SELECT a, (SELECT v FROM u WHERE u.x = t.a) FROM t ORDER BY a").rows
    assert rows == [[1, "p"], [2, "q"], [3, None], [4, "z"], [5, "p"]]
    assert calls.count("scan") == 1 and calls.count("get") >= 5   # t scanned once; u by key
