"""Differential test: our SQL engine against SQLite (stdlib sqlite3) as the oracle.

Hypothesis draws schemas (1-3 tables; INT/TEXT/FLOAT/BOOL columns; single or composite primary
keys; some NOT NULL), then a sequence of INSERTs (multi-row, some colliding), ON CONFLICT /
UPSERT, UPDATEs, DELETEs and SELECTs (filters, expressions, inner and LEFT joins, subqueries
(EXISTS, IN / NOT IN, correlated scalar counts), GROUP BY / HAVING,
DISTINCT, ORDER BY with explicit NULLS FIRST/LAST, LIMIT / OFFSET, parameters in both
styles), runs each statement on both engines, and requires the same outcome: the same rows
(in order when the query orders - it then orders by every output column, so the order is
total), the same affected-row counts, or an error on both sides. At the end every table must
hold the same rows.

Generation stays inside the SQL where PostgreSQL and SQLite agree (sql/DIFFERENCES.md): no
division, small integers (no overflow), dyadic floats (exact sums), ASCII text (LOWER/UPPER),
LIKE made case-sensitive in SQLite, SQLite STRICT tables (no type affinity), booleans compared
as 0/1, primary keys updated only to constants, ON CONFLICT DO UPDATE rows with distinct keys.

The backend under test is the `session_factory` fixture: a callable returning a fresh object
with ``execute(sql, params) -> Result`` (raising sql.SQLError for bad statements). The
in-memory variant is here; a cluster-backed variant can be added as another fixture param
(table names are unique per example and dropped afterwards, so a shared cluster works).
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sql import MemKV, Session, SQLError

INT, TEXT, FLOAT, BOOL = "INT", "TEXT", "FLOAT", "BOOL"
SQLITE_TYPES = {INT: "INT", TEXT: "TEXT", FLOAT: "REAL", BOOL: "INT"}
TEXT_ALPHABET = "abAB_% z"
FLOATS = [k / 4 for k in range(-24, 25)]

_example_numbers = itertools.count()


@pytest.fixture(params=["memkv"])
def session_factory(request):
    """A callable returning a fresh backend session (see the module docstring)."""
    if request.param == "memkv":
        return lambda: Session(MemKV())
    raise AssertionError(request.param)


class SqliteOracle:
    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.execute("PRAGMA case_sensitive_like = ON")

    def execute(self, sql: str, params: list) -> tuple[list[list], int]:
        cursor = self.conn.execute(sql, params)
        rows = [list(r) for r in cursor.fetchall()]
        return rows, cursor.rowcount


# --- schemas --------------------------------------------------------------------------------------


@dataclass
class Column:
    name: str
    type: str
    not_null: bool


@dataclass
class Table:
    name: str
    columns: list[Column]
    pk: list[str]
    seen: dict = field(default_factory=dict)  # column -> values inserted so far

    def col(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def ours_ddl(self) -> str:
        cols = [f"{c.name} {c.type}{' NOT NULL' if c.not_null else ''}" for c in self.columns]
        return f"CREATE TABLE {self.name} ({', '.join(cols)}, PRIMARY KEY ({', '.join(self.pk)}))"

    def sqlite_ddl(self) -> str:
        cols = []
        for c in self.columns:
            not_null = " NOT NULL" if c.not_null or c.name in self.pk else ""
            cols.append(f"{c.name} {SQLITE_TYPES[c.type]}{not_null}")
        return (f"CREATE TABLE {self.name} ({', '.join(cols)}, PRIMARY KEY "
                f"({', '.join(self.pk)})) STRICT")


@st.composite
def tables(draw, prefix: str) -> list[Table]:
    out = []
    for t in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 4))
        columns = []
        for i in range(n):
            kind = draw(st.sampled_from([INT, INT, TEXT, TEXT, FLOAT, BOOL]))
            columns.append(Column(f"c{i}", kind, draw(st.integers(0, 4)) == 0))
        key_candidates = [c.name for c in columns if c.type in (INT, TEXT, FLOAT)]
        if not key_candidates:
            columns.append(Column(f"c{n}", INT, False))
            key_candidates = [f"c{n}"]
        size = draw(st.integers(1, min(2, len(key_candidates))))
        pk = draw(st.permutations(key_candidates))[:size]
        out.append(Table(f"{prefix}_{t}", columns, list(pk)))
    return out


# --- statements: each has an "ours" and a "sqlite" spelling ---------------------------------------


@dataclass
class Stmt:
    """One statement in both spellings. `params` are numbered by generation ($n / ?n);
    with %s placeholders ours binds them in text order (`our_params`)."""

    ours: str
    sqlite: str
    params: list = field(default_factory=list)
    ordered: bool = False
    kind: str = "select"
    compare_count: bool = False

    @property
    def our_params(self) -> list:
        if "%s" not in self.ours:
            return list(self.params)
        return [self.params[int(n) - 1] for n in re.findall(r"\?(\d+)", self.sqlite)]


class Gen:
    """Draws typed SQL fragments as (ours, sqlite) text pairs."""

    def __init__(self, draw, style: str):
        self.draw = draw
        self.style = style  # "dollar" | "format"
        self.params: list = []

    def param(self, value) -> tuple[str, str]:
        self.params.append(value)
        n = len(self.params)
        return ("$%d" % n if self.style == "dollar" else "%s"), f"?{n}"

    def value(self, kind: str, null_ok: bool = True):
        d = self.draw
        if null_ok and d(st.integers(0, 7)) == 0:
            return None
        if kind == INT:
            return d(st.integers(-6, 12))
        if kind == FLOAT:
            return d(st.sampled_from(FLOATS))
        if kind == TEXT:
            return d(st.text(alphabet=TEXT_ALPHABET, max_size=3))
        return d(st.booleans())

    def literal(self, kind: str, value=None, allow_param: bool = True) -> tuple[str, str]:
        if value is None and kind != "NULL":
            value = self.value(kind)
        if value is None:
            return "NULL", "NULL"
        if allow_param and self.draw(st.integers(0, 5)) == 0:
            return self.param(value)
        return _sql_literal(value), _sql_literal(value)

    # expressions over a set of (qualified name, type) columns

    def expr(self, kind: str, cols: list[tuple[str, str]], depth: int = 2) -> tuple[str, str]:
        d = self.draw
        same = [name for name, k in cols if k == kind]
        choice = d(st.integers(0, 9))
        if depth <= 0 or choice < 4:
            if same and d(st.integers(0, 3)) > 0:
                name = d(st.sampled_from(same))
                return name, name
            return self.literal(kind)
        if kind == BOOL:
            return self.condition(cols, depth - 1)
        if kind == INT:
            op = d(st.sampled_from(["+", "-", "*", "abs", "mod", "length", "case", "coalesce"]))
            sub = depth - 1
            if op in "+-":
                return self._binary(op, self.expr(INT, cols, sub), self.expr(INT, cols, sub))
            if op == "*":
                factor = self.literal(INT, d(st.integers(-3, 3)))
                return self._binary("*", self.expr(INT, cols, sub), factor)
            if op == "abs":
                return self._call("abs", self.expr(INT, cols, sub))
            if op == "mod":
                divisor = self.literal(INT, d(st.integers(1, 5)), False)
                return self._binary("%", self.expr(INT, cols, sub), divisor)
            if op == "length":
                return self._call("length", self.expr(TEXT, cols, sub))
        if kind == FLOAT:
            op = d(st.sampled_from(["+", "-", "abs", "case", "coalesce", "cast"]))
            if op == "cast":
                a = self.expr(INT, cols, depth - 1)
                return f"CAST({a[0]} AS FLOAT)", f"CAST({a[1]} AS REAL)"
            if op in "+-":
                right = self.expr(d(st.sampled_from([FLOAT, INT])), cols, depth - 1)
                return self._binary(op, self.expr(FLOAT, cols, depth - 1), right)
            if op == "abs":
                return self._call("abs", self.expr(FLOAT, cols, depth - 1))
        if kind == TEXT:
            op = d(st.sampled_from(["lower", "upper", "||", "case", "coalesce", "cast"]))
            if op == "cast":
                a = self.expr(INT, cols, depth - 1)
                return f"CAST({a[0]} AS TEXT)", f"CAST({a[1]} AS TEXT)"
            if op in ("lower", "upper"):
                return self._call(op, self.expr(TEXT, cols, depth - 1))
            if op == "||":
                right = self.expr(d(st.sampled_from([TEXT, TEXT, INT])), cols, depth - 1)
                return self._binary("||", self.expr(TEXT, cols, depth - 1), right)
        if op == "case":
            cond = self.condition(cols, depth - 1)
            a = self.expr(kind, cols, depth - 1)
            b = self.expr(kind, cols, depth - 1)
            return (f"(CASE WHEN {cond[0]} THEN {a[0]} ELSE {b[0]} END)",
                    f"(CASE WHEN {cond[1]} THEN {a[1]} ELSE {b[1]} END)")
        a = self.expr(kind, cols, depth - 1)
        b = self.expr(kind, cols, depth - 1)
        return f"coalesce({a[0]}, {b[0]})", f"coalesce({a[1]}, {b[1]})"

    def condition(self, cols: list[tuple[str, str]], depth: int = 2) -> tuple[str, str]:
        d = self.draw
        choice = d(st.integers(0, 11))
        if depth > 0 and choice == 0:
            a, b = self.condition(cols, depth - 1), self.condition(cols, depth - 1)
            op = d(st.sampled_from(["AND", "OR"]))
            return f"({a[0]} {op} {b[0]})", f"({a[1]} {op} {b[1]})"
        if depth > 0 and choice == 1:
            a = self.condition(cols, depth - 1)
            return f"(NOT {a[0]})", f"(NOT {a[1]})"
        kind = d(st.sampled_from([k for _, k in cols] or [INT]))
        family = [INT, FLOAT] if kind in (INT, FLOAT) else [kind]
        left = self.expr(kind, cols, depth - 1)
        if choice in (2, 3):
            negate = " NOT" if d(st.booleans()) else ""
            return f"({left[0]} IS{negate} NULL)", f"({left[1]} IS{negate} NULL)"
        if choice == 4:
            items = [self.literal(d(st.sampled_from(family))) for _ in range(d(st.integers(1, 4)))]
            negate = " NOT" if d(st.booleans()) else ""
            return (f"({left[0]}{negate} IN ({', '.join(i[0] for i in items)}))",
                    f"({left[1]}{negate} IN ({', '.join(i[1] for i in items)}))")
        if choice == 5 and kind != BOOL:
            low = self.literal(d(st.sampled_from(family)))
            high = self.literal(d(st.sampled_from(family)))
            return (f"({left[0]} BETWEEN {low[0]} AND {high[0]})",
                    f"({left[1]} BETWEEN {low[1]} AND {high[1]})")
        if choice == 6 and kind == TEXT:
            pattern = d(st.text(alphabet="ab_%A", max_size=3))
            negate = " NOT" if d(st.booleans()) else ""
            return (f"({left[0]}{negate} LIKE '{pattern}')",
                    f"({left[1]}{negate} LIKE '{pattern}')")
        if kind == BOOL and choice == 7:
            return left
        if choice == 8:
            right = self.expr(d(st.sampled_from(family)), cols, depth - 1)
            if d(st.booleans()):
                return (f"({left[0]} IS DISTINCT FROM {right[0]})",
                        f"({left[1]} IS NOT {right[1]})")
            return (f"({left[0]} IS NOT DISTINCT FROM {right[0]})", f"({left[1]} IS {right[1]})")
        if choice == 9 and kind != BOOL:
            right = self.expr(kind, cols, depth - 1)
            other = self.expr(kind, cols, depth - 1)
            return (f"(nullif({left[0]}, {right[0]}) = {other[0]})",
                    f"(nullif({left[1]}, {right[1]}) = {other[1]})")
        op = d(st.sampled_from(["=", "<>", "<", "<=", ">", ">="]))
        right = self.expr(d(st.sampled_from(family)), cols, depth - 1)
        return f"({left[0]} {op} {right[0]})", f"({left[1]} {op} {right[1]})"

    def key_value(self, table: Table, column: str):
        seen = table.seen.get(column)
        if seen and self.draw(st.integers(0, 3)) > 0:
            return self.draw(st.sampled_from(seen))
        return self.value(table.col(column).type, null_ok=False)

    def key_predicate(self, table: Table, qualifier: str) -> tuple[str, str]:
        """Conditions on the primary key the planner turns into point gets / span scans."""
        d = self.draw
        parts = []
        for i, name in enumerate(table.pk):
            column = qualifier + name
            kind = table.col(name).type
            shape = d(st.sampled_from(["=", "=", "in", "range", "between", "stop"]))
            if shape == "stop" and i > 0:
                break
            if shape in ("=", "stop"):
                value = self.literal(kind, self.key_value(table, name))
                parts.append((f"{column} = {value[0]}", f"{column} = {value[1]}"))
                continue
            if shape == "in":
                items = [self.literal(kind, self.key_value(table, name))
                         for _ in range(d(st.integers(1, 3)))]
                parts.append((f"{column} IN ({', '.join(x[0] for x in items)})",
                              f"{column} IN ({', '.join(x[1] for x in items)})"))
                continue
            if shape == "between":
                low = self.literal(kind, self.key_value(table, name))
                high = self.literal(kind, self.key_value(table, name))
                parts.append((f"{column} BETWEEN {low[0]} AND {high[0]}",
                              f"{column} BETWEEN {low[1]} AND {high[1]}"))
                break
            for _ in range(d(st.integers(1, 2))):
                op = d(st.sampled_from(["<", "<=", ">", ">="]))
                value = self.literal(kind, self.key_value(table, name))
                parts.append((f"{column} {op} {value[0]}", f"{column} {op} {value[1]}"))
            break
        return " AND ".join(p[0] for p in parts), " AND ".join(p[1] for p in parts)

    @staticmethod
    def _binary(op: str, a: tuple[str, str], b: tuple[str, str]) -> tuple[str, str]:
        return f"({a[0]} {op} {b[0]})", f"({a[1]} {op} {b[1]})"

    @staticmethod
    def _call(name: str, a: tuple[str, str]) -> tuple[str, str]:
        return f"{name}({a[0]})", f"{name}({a[1]})"


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else f"{value:.1f}"
    return "'" + value.replace("'", "''") + "'"


# --- statement generators -------------------------------------------------------------------------


def gen_insert(draw, table: Table) -> Stmt:
    g = Gen(draw, draw(st.sampled_from(["dollar", "format"])))
    cols = table.columns
    if draw(st.integers(0, 3)) == 0:  # a column subset (must name the pk to have a chance)
        named = [c for c in cols if c.name in table.pk or draw(st.booleans())]
    else:
        named = cols
    rows = []
    keys = []
    for _ in range(draw(st.integers(1, 4))):
        values = []
        key = []
        for c in named:
            value = g.value(c.type, null_ok=not c.not_null or draw(st.integers(0, 30)) == 0)
            if c.name in table.pk and value is None and draw(st.integers(0, 10)) > 0:
                value = g.value(c.type, null_ok=False)
            if c.name in table.pk:
                key.append((type(value), value))
            if value is not None:
                table.seen.setdefault(c.name, []).append(value)
            values.append(g.literal(c.type, value) if value is not None else ("NULL", "NULL"))
        rows.append(values)
        keys.append(tuple(key))
    names = ", ".join(c.name for c in named)
    ours_rows = ", ".join("(" + ", ".join(v[0] for v in r) + ")" for r in rows)
    sqlite_rows = ", ".join("(" + ", ".join(v[1] for v in r) + ")" for r in rows)
    mode = draw(st.sampled_from(["plain", "plain", "nothing", "update", "upsert"]))
    head = f"INSERT INTO {table.name} ({names}) VALUES "
    ours, sqlite = head + ours_rows, head + sqlite_rows
    non_pk = [c for c in named if c.name not in table.pk]
    if mode == "nothing":
        ours += " ON CONFLICT DO NOTHING"
        sqlite += " ON CONFLICT DO NOTHING"
    elif mode in ("update", "upsert"):
        # Distinct keys only: SQLite applies a second row for one key, PostgreSQL rejects it.
        if len(set(keys)) != len(keys):
            mode = "plain"
    if mode == "update" and non_pk:
        sets_ours, sets_sqlite = [], []
        for c in non_pk:
            if c.type in (INT, FLOAT) and draw(st.booleans()):
                sets_ours.append(f"{c.name} = {table.name}.{c.name} + excluded.{c.name}")
            else:
                sets_ours.append(f"{c.name} = excluded.{c.name}")
            sets_sqlite.append(sets_ours[-1])
        pk = ", ".join(table.pk)
        ours += f" ON CONFLICT ({pk}) DO UPDATE SET {', '.join(sets_ours)}"
        sqlite += f" ON CONFLICT ({pk}) DO UPDATE SET {', '.join(sets_sqlite)}"
    elif mode == "upsert":
        ours = f"UPSERT INTO {table.name} ({names}) VALUES " + ours_rows
        pk = ", ".join(table.pk)
        if non_pk:
            sets = ", ".join(f"{c.name} = excluded.{c.name}" for c in non_pk)
            sqlite += f" ON CONFLICT ({pk}) DO UPDATE SET {sets}"
        else:
            sqlite += f" ON CONFLICT ({pk}) DO NOTHING"
    return Stmt(ours, sqlite, g.params, kind="insert", compare_count=mode in ("plain", "nothing"))


def gen_update(draw, table: Table) -> Stmt:
    g = Gen(draw, draw(st.sampled_from(["dollar", "format"])))
    cols = [(c.name, c.type) for c in table.columns]
    if draw(st.integers(0, 9)) == 0:
        target = table.col(draw(st.sampled_from(table.pk)))
        value = g.literal(target.type, g.value(target.type, null_ok=False), allow_param=False)
        sets = [(target.name, value)]
    else:
        candidates = [c for c in table.columns if c.name not in table.pk] or table.columns[:0]
        if not candidates:
            return gen_delete(draw, table)
        chosen = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=2,
                               unique_by=lambda c: c.name))
        sets = [(c.name, g.expr(c.type, cols, 1)) for c in chosen]
    where = _where(draw, g, table, "", cols)
    ours = (f"UPDATE {table.name} SET {', '.join(f'{n} = {v[0]}' for n, v in sets)} "
            f"WHERE {where[0]}")
    sqlite = (f"UPDATE {table.name} SET {', '.join(f'{n} = {v[1]}' for n, v in sets)} "
              f"WHERE {where[1]}")
    return Stmt(ours, sqlite, g.params, kind="update", compare_count=True)


def gen_delete(draw, table: Table) -> Stmt:
    g = Gen(draw, draw(st.sampled_from(["dollar", "format"])))
    cols = [(c.name, c.type) for c in table.columns]
    if draw(st.integers(0, 9)) == 0:
        return Stmt(f"DELETE FROM {table.name}", f"DELETE FROM {table.name}", kind="delete",
                    compare_count=True)
    where = _where(draw, g, table, "", cols)
    return Stmt(f"DELETE FROM {table.name} WHERE {where[0]}",
                f"DELETE FROM {table.name} WHERE {where[1]}", g.params, kind="delete",
                compare_count=True)


def gen_select(draw, all_tables: list[Table]) -> Stmt:
    g = Gen(draw, draw(st.sampled_from(["dollar", "format"])))
    table = draw(st.sampled_from(all_tables))
    sources = [(table, "a")]
    join_on = None
    sqlite_from = None   # the FROM clause in SQLite's spelling, where it differs (parameters)
    if len(all_tables) > 1 and draw(st.integers(0, 2)) == 0:
        other = draw(st.sampled_from([t for t in all_tables if t is not table] or [table]))
        pairs = [
            (c1, c2) for c1 in table.columns for c2 in other.columns
            if c1.type == c2.type or {c1.type, c2.type} == {INT, FLOAT}
        ]
        if pairs and other is not table:
            c1, c2 = draw(st.sampled_from(pairs))
            sources.append((other, "b"))
            join_on = f"a.{c1.name} = b.{c2.name}"
    cols = [(f"{alias}.{c.name}", c.type) for t, alias in sources for c in t.columns]
    if len(sources) == 1 and draw(st.booleans()):  # unqualified names too
        cols = [(c.name, c.type) for c in table.columns]
        from_ = f"{table.name} AS a" if draw(st.booleans()) else table.name
    else:
        from_ = f"{table.name} AS a"
    if join_on is not None:
        other = sources[1][0]
        how = draw(st.sampled_from(["join", "comma", "left", "left"]))
        if how == "join":
            from_ += f" JOIN {other.name} AS b ON {join_on}"
        elif how == "left":   # ON may also test the right side alone: it narrows what matches
            if draw(st.booleans()):
                extra = g.condition([(f"b.{c.name}", c.type) for c in other.columns], 1)
                from_ += f" LEFT JOIN {other.name} AS b ON {join_on} AND {extra[0]}"
                sqlite_from = from_.replace(extra[0], extra[1])
            else:
                from_ += f" LEFT JOIN {other.name} AS b ON {join_on}"
        else:
            from_ += f", {other.name} AS b"
            join_on = "WHERE"  # the join condition goes into WHERE below
    where = None
    if draw(st.integers(0, 9)) < 7:
        qualifier = "" if cols[0][0].count(".") == 0 else "a."
        where = _where(draw, g, table, qualifier, cols)
    if join_on == "WHERE":
        cond = f"({sources[0][1]}.{c1.name} = {sources[1][1]}.{c2.name})"
        where = (f"{cond} AND {where[0]}", f"{cond} AND {where[1]}") if where else (cond, cond)
    # The subquery names the outer column qualified: bare, it could mean a column of its own.
    outer = "a" if " AS a" in from_ else table.name
    subquery = _subquery_condition(draw, g, all_tables,
                                   [(n if "." in n else f"{outer}.{n}", k) for n, k in cols])
    if subquery is not None:
        where = (f"{where[0]} AND {subquery[0]}", f"{where[1]} AND {subquery[1]}") if where else subquery

    aggregate = draw(st.integers(0, 9)) < 3
    outputs: list[tuple[str, str]] = []
    group = []
    having = None
    if aggregate:
        group = draw(st.lists(st.sampled_from(cols), max_size=2, unique=True))
        for name, kind in group:
            outputs.append((name, name))
        for _ in range(draw(st.integers(1, 3))):
            outputs.append(_aggregate(draw, cols))
        if draw(st.integers(0, 3)) == 0:
            agg = _aggregate(draw, [c for c in cols if c[1] in (INT,)] or cols, count_only=True)
            lit = draw(st.integers(0, 3))
            having = (f"{agg[0]} >= {lit}", f"{agg[1]} >= {lit}")
    else:
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from([INT, FLOAT, TEXT, BOOL]))
            outputs.append(g.expr(kind, cols, draw(st.integers(0, 2))))
    distinct = not aggregate and draw(st.integers(0, 6)) == 0
    ordered = draw(st.integers(0, 9)) < 6
    order = ""
    if ordered:
        keys = []
        for i in draw(st.permutations(range(1, len(outputs) + 1))):
            direction = draw(st.sampled_from(["ASC", "DESC"]))
            nulls = draw(st.sampled_from(["NULLS FIRST", "NULLS LAST"]))
            keys.append(f"{i} {direction} {nulls}")
        order = " ORDER BY " + ", ".join(keys)
        if draw(st.integers(0, 2)) == 0:
            order += f" LIMIT {draw(st.integers(0, 5))}"
            if draw(st.booleans()):
                order += f" OFFSET {draw(st.integers(0, 3))}"

    def render(side: int) -> str:
        sql = "SELECT " + ("DISTINCT " if distinct else "")
        sql += ", ".join(o[side] for o in outputs) + f" FROM {sqlite_from if side and sqlite_from else from_}"
        if where:
            sql += f" WHERE {where[side]}"
        if group:
            sql += " GROUP BY " + ", ".join(n for n, _ in group)
        if having:
            sql += f" HAVING {having[side]}"
        return sql + order

    return Stmt(render(0), render(1), g.params, ordered=ordered)


def _subquery_condition(draw, g: Gen, all_tables: list[Table], cols) -> tuple[str, str] | None:
    """Sometimes a condition with a subquery over some table `s`: EXISTS correlated on a column
    pair, IN / NOT IN over a column, or a correlated scalar count compared with a constant."""
    if draw(st.integers(0, 4)) != 0:
        return None
    other = draw(st.sampled_from(all_tables))
    name, kind = draw(st.sampled_from(cols))
    family = [INT, FLOAT] if kind in (INT, FLOAT) else [kind]
    matching = [c for c in other.columns if c.type in family]
    if not matching:
        return None
    inner = draw(st.sampled_from(matching)).name
    shape = draw(st.sampled_from(["exists", "not exists", "in", "not in", "count"]))
    inner_where = ""
    if draw(st.booleans()):
        cond = g.condition([(f"s.{c.name}", c.type) for c in other.columns], 1)
        inner_where = cond
    def where(side: int, correlated: bool) -> str:
        parts = [f"s.{inner} = {name}"] if correlated else []
        if inner_where:
            parts.append(inner_where[side])
        return (" WHERE " + " AND ".join(parts)) if parts else ""
    if shape in ("exists", "not exists"):
        word = "EXISTS" if shape == "exists" else "NOT EXISTS"
        return tuple(f"({word} (SELECT 1 FROM {other.name} AS s{where(side, True)}))"
                     for side in (0, 1))  # type: ignore[return-value]
    if shape in ("in", "not in"):
        word = "IN" if shape == "in" else "NOT IN"
        return tuple(f"({name} {word} (SELECT s.{inner} FROM {other.name} AS s{where(side, False)}))"
                     for side in (0, 1))  # type: ignore[return-value]
    k = draw(st.integers(0, 2))
    return tuple(f"((SELECT count(*) FROM {other.name} AS s{where(side, True)}) >= {k})"
                 for side in (0, 1))  # type: ignore[return-value]


def _where(draw, g: Gen, table: Table, qualifier: str, cols) -> tuple[str, str]:
    """A WHERE condition: often a primary-key predicate (so the planner's point gets and
    spans are exercised), sometimes AND-ed with an arbitrary condition."""
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return g.condition(cols, 2)
    key = g.key_predicate(table, qualifier)
    if shape == 1:
        return key
    other = g.condition(cols, 1)
    return f"{key[0]} AND {other[0]}", f"{key[1]} AND {other[1]}"


def _aggregate(draw, cols, count_only: bool = False) -> tuple[str, str]:
    numeric = [n for n, k in cols if k in (INT, FLOAT)]
    choices = ["count_star", "count"]
    if not count_only:
        choices += ["min", "max"]
        if numeric:
            choices += ["sum", "avg"]
    kind = draw(st.sampled_from(choices))
    if kind == "count_star":
        return "count(*)", "count(*)"
    if kind in ("sum", "avg"):
        name = draw(st.sampled_from(numeric))
    else:
        name = draw(st.sampled_from([n for n, _ in cols]))
    distinct = "DISTINCT " if kind == "count" and draw(st.integers(0, 3)) == 0 else ""
    text = f"{kind}({distinct}{name})"
    return text, text


# --- comparing outcomes ---------------------------------------------------------------------------


def _norm(value):
    if isinstance(value, bool):
        return int(value)
    return value


def _same_value(a, b) -> bool:
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return type(a) is type(b) and a == b


def _same_rows(ours: list[list], theirs: list[list], ordered: bool) -> bool:
    if len(ours) != len(theirs):
        return False
    if not ordered:
        ours = sorted(ours, key=_row_key)
        theirs = sorted(theirs, key=_row_key)
    return all(
        len(r1) == len(r2) and all(_same_value(a, b) for a, b in zip(r1, r2))
        for r1, r2 in zip(ours, theirs)
    )


def _row_key(row: list) -> tuple:
    out = []
    for v in row:
        v = _norm(v)
        if v is None:
            out.append((0, 0))
        elif isinstance(v, (int, float)):
            out.append((1, v))
        else:
            out.append((2, str(v)))
    return tuple(out)


_ERROR_MATCH = {
    "unique_violation": "UNIQUE constraint failed",
    "not_null_violation": "NOT NULL constraint failed",
}


def run_both(ours, oracle: SqliteOracle, stmt: Stmt, trace: list[str]) -> None:
    our_error = their_error = None
    our_rows = their_rows = None
    our_count = their_count = None
    try:
        result = ours.execute(stmt.ours, stmt.our_params)
        our_rows, our_count = result.rows, result.rowcount
    except SQLError as error:
        our_error = error
    try:
        their_rows, their_count = oracle.execute(stmt.sqlite, list(stmt.params))
    except sqlite3.Error as error:
        their_error = error
    trace.append(
        f"{stmt.ours!r} params={stmt.our_params!r}\n    ours: {our_error or our_rows}"
        f"\n    sqlite ({stmt.sqlite!r}): {their_error or their_rows}"
    )
    context = "\n".join(trace)
    if (our_error is None) != (their_error is None):
        raise AssertionError(f"one side failed:\n{context}")
    if our_error is not None:
        expected = _ERROR_MATCH.get(our_error.code)
        if expected is not None:
            assert expected in str(their_error), f"different errors:\n{context}"
        return
    if stmt.kind == "select":
        assert _same_rows(our_rows, their_rows, stmt.ordered), f"different rows:\n{context}"
    elif stmt.compare_count:
        assert our_count == their_count, f"different row counts:\n{context}"


# --- the test -------------------------------------------------------------------------------------


@settings(
    max_examples=250,
    deadline=None,
    report_multiple_bugs=False,  # shrink one failure, fast, rather than every distinct one
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_same_results_as_sqlite(session_factory, data) -> None:
    prefix = f"d{next(_example_numbers)}"
    schema = data.draw(tables(prefix), label="schema")
    ours = session_factory()
    oracle = SqliteOracle()
    trace: list[str] = []
    for table in schema:
        ours.execute(table.ours_ddl())
        oracle.execute(table.sqlite_ddl(), [])
        trace.append(table.ours_ddl())
    try:
        steps = data.draw(st.integers(3, 14), label="steps")
        for _ in range(steps):
            kind = data.draw(st.sampled_from(
                ["insert", "insert", "insert", "select", "select", "select", "update", "delete"]
            ))
            table = data.draw(st.sampled_from(schema))
            if kind == "insert":
                stmt = data.draw(st.composite(lambda draw: gen_insert(draw, table))())
            elif kind == "update":
                stmt = data.draw(st.composite(lambda draw: gen_update(draw, table))())
            elif kind == "delete":
                stmt = data.draw(st.composite(lambda draw: gen_delete(draw, table))())
            else:
                stmt = data.draw(st.composite(lambda draw: gen_select(draw, schema))())
            run_both(ours, oracle, stmt, trace)
        for table in schema:  # every table ends with the same rows
            order = ", ".join(table.pk)
            sql = f"SELECT * FROM {table.name} ORDER BY {order}"
            run_both(ours, oracle, Stmt(sql, sql, ordered=True), trace)
    finally:
        # Names are unique per example, so dropping is only tidiness; a session that says
        # keep_tables (a cluster, where DROP waits out the schema leases) skips it.
        if not getattr(ours, "keep_tables", False):
            for table in schema:
                ours.execute(f"DROP TABLE IF EXISTS {table.name}")
