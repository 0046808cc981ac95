"""Planning: a checked statement plus the schemas it names become range operations and the
evaluation to run on top of them.

Why a separate stage: the expensive, error-prone decisions - which columns a name means, what
type each expression has, which key span a WHERE clause allows - are made once per statement
text and schema, and cached (sql/execute.py). A plan holds no values: parameters, the clock
and rowids are read from the `EvalContext` each time the plan runs.

Access paths (per table, from the conjuncts of WHERE / ON that mention only that table and
constants; `Column op constant` with op in = < <= > >=, BETWEEN, IN):

* equality on every primary-key column             -> point get(s) (IN lists multiply out)
* equality on a leading pk prefix and/or a range on
  the next pk column                               -> span scan(s) over exactly that span
* anything else                                    -> a scan of the whole table span
* a virtual table (sql/virtual.py)                 -> its rows, computed whole by the store

The whole WHERE is always evaluated again on the rows an access path returns, so an access
path only has to return a superset: bounds of another numeric type are widened to the
column's type rather than trusted (an INT key compared with 2.5, a FLOAT key with a huge int).

Pure: no I/O. `plan_statement` takes the schemas as arguments.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

from sql import types as T
from sql.catalog import ROWID_COLUMN, ROWID_DEFAULT_SQL, ColumnSchema, TableSchema
from sql.constants import IDENTIFIER_LENGTH_MAX, KEY_POINTS_MAX, STATEMENT_ROWS_MAX
from sql.dialect import (
    DIALECT,
    GenerateSubscripts,
    alter_locality,
    Explain,
    ExplainAnalyze,
    Statement,
    Upsert,
    identifier_name,
    node_position,
    parse,
)
from sql.errors import SQLError
from sql.expr import (
    AGGREGATES,
    Compiled,
    Compiler,
    EvalContext,
    Grouping,
    OUTER,
    Scope,
    column_type,
    output_name,
)
from sql.rowcodec import key_for_stored_prefix
from sql.virtual import VIRTUAL_TABLES, compile_args

# --- access paths -------------------------------------------------------------------------------

_FLIP = {exp.LT: exp.GT, exp.LTE: exp.GTE, exp.GT: exp.LT, exp.GTE: exp.LTE, exp.EQ: exp.EQ}
_OPS = {exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">=", exp.EQ: "="}


@dataclass
class Bound:
    value: Compiled
    inclusive: bool
    text: str


@dataclass
class AccessPath:
    """How to fetch one table's candidate rows. `eq[i]` lists the alternatives for pk column i
    (one value, or an IN list); `lower`/`upper` bound pk column len(eq)."""

    schema: TableSchema
    eq: list[list[Compiled]] = field(default_factory=list)
    eq_text: list[str] = field(default_factory=list)
    lower: list[Bound] = field(default_factory=list)
    upper: list[Bound] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if len(self.eq) == len(self.schema.pk):
            return "point get"
        if self.eq or self.lower or self.upper:
            return "span scan"
        return "full scan"

    def describe(self) -> str:
        """The logical key span, e.g. ``/orders/7/(line > 3)`` or ``/users/*``."""
        parts = [f"/{self.schema.name}"]
        parts.extend(f"/{text}" for text in self.eq_text)
        if self.lower or self.upper:
            column = self.schema.pk[len(self.eq)]
            conditions = [b.text for b in self.lower + self.upper]
            parts.append(f"/({' AND '.join(conditions) or column})")
        elif len(self.eq) < len(self.schema.pk):
            parts.append("/*")
        return "".join(parts)

    def key_ranges(self, ctx: EvalContext) -> list[tuple[bytes, bytes | None]]:
        """The key ranges to read, in key order: ``(key, None)`` for a point get,
        ``(start, end)`` for a span ``[start, end)``. Empty when nothing can match."""
        schema = self.schema
        types = [schema.columns[i].type for i in schema.pk_indexes]
        choices = []
        for i, alternatives in enumerate(self.eq):
            values = set()
            for compiled in alternatives:
                value = _key_value(compiled.fn((), ctx), types[i])
                if value is not _NO_MATCH:
                    values.add(value)
            if not values:
                return []
            choices.append(sorted(values, key=_sortable))
        prefixes = list(itertools.product(*choices))
        if len(self.eq) == len(schema.pk):
            keys = sorted(key_for_stored_prefix(schema.id, p) for p in prefixes)
            return [(k, None) for k in keys]
        ranges = []
        column_type_ = types[len(self.eq)] if len(self.eq) < len(types) else None
        lower = upper = None
        for bound in self.lower:
            value = _key_bound(bound.value.fn((), ctx), column_type_, bound.inclusive, "lower")
            if value is _NO_MATCH:
                return []
            if value is not None and (lower is None or _tighter(value, lower, "lower")):
                lower = value
        for bound in self.upper:
            value = _key_bound(bound.value.fn((), ctx), column_type_, bound.inclusive, "upper")
            if value is _NO_MATCH:
                return []
            if value is not None and (upper is None or _tighter(value, upper, "upper")):
                upper = value
        for prefix in sorted(prefixes, key=lambda p: key_for_stored_prefix(schema.id, p)):
            base = key_for_stored_prefix(schema.id, prefix)
            start = base
            end = _prefix_end(base)
            if lower is not None:
                key = key_for_stored_prefix(schema.id, (*prefix, lower[0]))
                start = key if lower[1] else _prefix_end(key)
            if upper is not None:
                key = key_for_stored_prefix(schema.id, (*prefix, upper[0]))
                end = _prefix_end(key) if upper[1] else key
            if start < end:
                ranges.append((start, end))
        return ranges


@dataclass
class VirtualAccess(AccessPath):
    """A virtual table's rows (sql/virtual.py): computed by the store for the call's `args`,
    all of them, whatever the WHERE (which is evaluated on them as on any table's rows)."""

    args: list[Compiled] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "virtual table"

    def describe(self) -> str:
        return f"{self.schema.name}(...)"


@dataclass
class DerivedAccess(AccessPath):
    """A derived table's rows, ``FROM (SELECT ...) AS alias``: its `plan` (a SelectPlan or
    UnionPlan) run in full when the statement runs, at the statement's timestamp."""

    plan: object = None

    @property
    def kind(self) -> str:
        return "subquery"

    def describe(self) -> str:
        return f"({self.schema.name}: subquery)"


@dataclass
class UnnestAccess(AccessPath):
    """``FROM unnest(array) AS s(x)``: one row per element, computed when the statement runs
    (the array may read an enclosing query's row, never a FROM sibling)."""

    array: Compiled | None = None

    @property
    def kind(self) -> str:
        return "unnest"

    def describe(self) -> str:
        return f"unnest(...) AS {self.schema.name}"


@dataclass
class SeriesAccess(AccessPath):
    """``FROM generate_series(start, stop [, step]) AS s``: one INT column, computed when the
    statement runs (its arguments may read an enclosing query's row, never a FROM sibling)."""

    start: Compiled | None = None
    stop: Compiled | None = None
    step: Compiled | None = None

    @property
    def kind(self) -> str:
        return "generate_series"

    def describe(self) -> str:
        return f"generate_series(...) AS {self.schema.name}"


def _prefix_end(key: bytes) -> bytes:
    from raftstore.keys import prefix_end

    end = prefix_end(key)
    assert end is not None
    return end


class _NoMatch:
    def __repr__(self) -> str:
        return "NO_MATCH"


_NO_MATCH = _NoMatch()


def _sortable(value: object) -> tuple:
    return (type(value).__name__, value)


def _tighter(candidate: tuple, current: tuple, side: str) -> bool:
    value, inclusive = candidate
    old, old_inclusive = current
    if value == old:
        return old_inclusive and not inclusive
    return value > old if side == "lower" else value < old


def _key_value(value: object, column_type_: str) -> object:
    """A pk equality constant as the stored key element of the column's type, or _NO_MATCH
    when no row can equal it (NULL, a non-integral number for an INT key, NaN, ...)."""
    if value is None:
        return _NO_MATCH
    if column_type_ == T.INT:
        if isinstance(value, float):
            return int(value) if math.isfinite(value) and value.is_integer() else _NO_MATCH
        return value
    if column_type_ == T.FLOAT:
        if isinstance(value, int) and not isinstance(value, bool):
            as_float = float(value) if abs(value) < 1 << 1000 else math.inf
            return as_float if as_float == value else _NO_MATCH
        if isinstance(value, float) and value != value:
            return _NO_MATCH
        return value
    return T.to_storage(value, column_type_)


def _key_bound(value: object, column_type_: str | None, inclusive: bool, side: str):
    """A range bound as (stored value, inclusive), None for "no bound", or _NO_MATCH.
    Values of the other numeric type are widened so the span stays a superset."""
    if value is None:
        return _NO_MATCH  # x < NULL is never true
    if column_type_ == T.INT and isinstance(value, float):
        if value != value:
            return None
        if math.isinf(value):
            if (value > 0) == (side == "lower"):
                return _NO_MATCH
            return None
        if value.is_integer():
            return (int(value), inclusive)
        return (math.ceil(value), True) if side == "lower" else (math.floor(value), True)
    if column_type_ == T.FLOAT and isinstance(value, int) and not isinstance(value, bool):
        as_float = float(value) if abs(value) < 1 << 1000 else math.copysign(math.inf, value)
        if as_float == value:
            return (as_float, inclusive)
        if side == "lower":
            return (as_float if as_float < value else math.nextafter(as_float, -math.inf), True)
        return (as_float if as_float > value else math.nextafter(as_float, math.inf), True)
    if column_type_ == T.FLOAT and isinstance(value, float) and value != value:
        return None
    return (T.to_storage(value, column_type_ or T.TEXT), inclusive)


def conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    """The AND-ed parts of a condition (parentheses looked through)."""
    if node is None:
        return []
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


def _has_column(node: exp.Expr) -> bool:
    """Whether `node` may differ from row to row (a column, an aggregate, a subquery, or
    ANY / ALL, which is no key value)."""
    return any(isinstance(n, (exp.Column, *AGGREGATES, exp.Subquery, exp.Exists, exp.Any, exp.All))
               for n in node.walk())


def _only_outer_columns(node: exp.Expr, scope: Scope) -> bool:
    """Whether every column `node` reads is an enclosing query's (and it reads no aggregate,
    subquery or ANY / ALL): then it is constant while a subquery runs once."""
    for n in node.walk():
        if isinstance(n, (*AGGREGATES, exp.Subquery, exp.Exists, exp.Any, exp.All)):
            return False
        if isinstance(n, exp.Column) and (isinstance(n.this, exp.Star) or scope.resolve(n)[3] != OUTER):
            return False
    return True


def _pk_column(node: exp.Expr, schema: TableSchema, source_number: int, scope: Scope) -> str | None:
    """The primary-key column of source `source_number` that `node` names, or None."""
    if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
        return None
    _, _, name, number = scope.resolve(node)
    return name if number == source_number and name in schema.pk else None


def plan_access(
    schema: TableSchema, source_number: int, parts: list[exp.Expr], scope: Scope
) -> AccessPath:
    """The narrowest access path the conjuncts `parts` allow for `schema` (source
    `source_number` of `scope`)."""
    compiler = Compiler(scope, clause="WHERE")
    pk = list(schema.pk)
    eq: dict[str, list[tuple[list[Compiled], str]]] = {name: [] for name in pk}
    lower: dict[str, list[Bound]] = {name: [] for name in pk}
    upper: dict[str, list[Bound]] = {name: [] for name in pk}

    def pk_column(node: exp.Expr) -> str | None:
        return _pk_column(node, schema, source_number, scope)

    def constant(node: exp.Expr, column: str) -> Compiled | None:
        # An enclosing query's column is a constant here: a correlated subquery's
        # `pk = outer.col` is a point get per outer row.
        if _has_column(node) and not _only_outer_columns(node, scope):
            return None
        compiled = compiler.compile(node)
        kind = schema.column(column).type  # type: ignore[union-attr]
        if compiled.type in T.UNTYPED:
            compiled = compiler.coerce(compiled, kind, node, comparing=True)
        return compiled

    for part in parts:
        if isinstance(part, tuple(_OPS)):
            for column_node, value_node, op in (
                (part.this, part.expression, type(part)),
                (part.expression, part.this, _FLIP[type(part)]),
            ):
                column = pk_column(column_node)
                if column is None:
                    continue
                value = constant(value_node, column)
                if value is None:
                    continue
                text = f"{column} {_OPS[op]} {value_node.sql(dialect=DIALECT)}"
                if op is exp.EQ:
                    eq[column].append(([value], value_node.sql(dialect=DIALECT)))
                elif op in (exp.GT, exp.GTE):
                    lower[column].append(Bound(value, op is exp.GTE, text))
                else:
                    upper[column].append(Bound(value, op is exp.LTE, text))
                break
        elif isinstance(part, exp.Between) and not part.args.get("negate"):
            column = pk_column(part.this)
            if column is None:
                continue
            low = constant(part.args["low"], column)
            high = constant(part.args["high"], column)
            if low is None or high is None:
                continue
            low_text = part.args["low"].sql(dialect=DIALECT)
            high_text = part.args["high"].sql(dialect=DIALECT)
            lower[column].append(Bound(low, True, f"{column} >= {low_text}"))
            upper[column].append(Bound(high, True, f"{column} <= {high_text}"))
        elif isinstance(part, exp.In) and not part.args.get("negate"):
            column = pk_column(part.this)
            if column is None:
                continue
            values = [constant(n, column) for n in part.expressions]
            if any(v is None for v in values) or not values:
                continue
            text = "{" + ", ".join(n.sql(dialect=DIALECT) for n in part.expressions) + "}"
            eq[column].append((values, text))  # type: ignore[arg-type]

    access = AccessPath(schema)
    points = 1
    for name in pk:
        if not eq[name]:
            break
        # Several equalities on one column: any one of them narrows enough (the filter
        # checks the rest); prefer the one with the fewest alternatives.
        values, text = min(eq[name], key=lambda item: len(item[0]))
        if points * len(values) > KEY_POINTS_MAX:
            break
        points *= len(values)
        access.eq.append(values)
        access.eq_text.append(text)
    if len(access.eq) < len(pk):
        name = pk[len(access.eq)]
        access.lower = lower[name]
        access.upper = upper[name]
    return access


# --- plans --------------------------------------------------------------------------------------


@dataclass
class SourcePlan:
    schema: TableSchema
    alias: str
    access: AccessPath
    offset: int
    width: int
    filters: list[Compiled]  # conjuncts on this source alone (and constants), for pre-filtering


@dataclass
class JoinStep:
    """Join source k onto the rows built so far: hash on `left_keys`/`right_keys` when there
    are equality conjuncts across, otherwise a nested loop; then `filters`."""

    source: int
    left_keys: list[Compiled]
    right_keys: list[Compiled]
    filters: list[Compiled]
    describe: str
    # LEFT JOIN: a left row that no right row matches (`match`: the ON conjuncts, all TRUE)
    # is kept once with NULLs for the right source; `filters` (WHERE) apply after that.
    outer: bool = False
    match: list[Compiled] = field(default_factory=list)


@dataclass
class SortKey:
    fn: Callable
    desc: bool
    nulls_first: bool
    on_output: bool  # fn reads the output row (else the input / grouped row)


@dataclass
class SelectPlan:
    sources: list[SourcePlan]
    joins: list[JoinStep]
    where: Compiled | None  # single source: the whole WHERE; joins: see filters per step
    grouping: Grouping | None
    having: Compiled | None
    outputs: list[Compiled]
    columns: list[str]
    distinct: bool
    order: list[SortKey]
    limit: Compiled | None
    offset: Compiled | None
    ordered_by_key: bool  # the first source's key order already satisfies ORDER BY
    tables: dict[str, TableSchema]
    notes: list[str] = field(default_factory=list)  # evaluation steps, for EXPLAIN
    correlated: bool = False   # a subquery that reads an enclosing query's columns
    # unnest() / generate_subscripts() in the select list: (kind, array operand); each row is
    # expanded per element after the joins and WHERE, its values appended (see _plan_srfs)
    srfs: list[tuple[str, Compiled]] = field(default_factory=list)

    @property
    def streamable(self) -> bool:
        """Rows can flow from the scan lazily and stop at LIMIT."""
        return (
            len(self.sources) == 1
            and self.grouping is None
            and not self.distinct
            and (not self.order or self.ordered_by_key)
        )


@dataclass
class UnionPlan:
    """``q1 UNION ALL q2 ...``: the rows of each part in turn, as the first part's columns
    (``UNION``: each distinct row once, in the order first met);
    `convert[i][j]` widens part i's column j (INT to FLOAT) or is None."""

    parts: list[SelectPlan]
    outputs: list[Compiled]
    columns: list[str]
    convert: list[list[Callable | None]]
    tables: dict[str, TableSchema]
    correlated: bool = False
    distinct: bool = False   # UNION (each row once) rather than UNION ALL


@dataclass
class InsertPlan:
    schema: TableSchema
    mode: str  # insert | upsert | do_nothing | do_update
    targets: list[int]  # column index per provided value
    rows: list[list[Compiled | None]]  # None = DEFAULT
    select: SelectPlan | None
    defaults: list[Compiled | None]  # per column
    updates: list[tuple[int, Compiled]]  # DO UPDATE SET / UPSERT: over (existing + excluded)
    update_where: Compiled | None
    tables: dict[str, TableSchema]
    replaces_row: bool  # UPSERT giving every column: a blind put, no read needed

    def provided_values(self, ctx: EvalContext) -> list[list[tuple[int, object]]]:
        """(column index, value) pairs of each VALUES row (DEFAULT items left out)."""
        return [self.provided_row(i, ctx) for i in range(len(self.rows))]

    def provided_row(self, i: int, ctx: EvalContext) -> list[tuple[int, object]]:
        return [
            (index, compiled.fn((), ctx))
            for index, compiled in zip(self.targets, self.rows[i])
            if compiled is not None
        ]

    def complete_row(
        self, provided: list[tuple[int, object]], ctx: EvalContext
    ) -> tuple[list, bool]:
        """The full, checked row (defaults filled in), and whether its key came from
        unique_rowid() (so a collision may retry with a fresh one)."""
        schema = self.schema
        row: list[object] = [None] * len(schema.columns)
        given = set()
        for index, value in provided:
            row[index] = value
            given.add(index)
        for index, default in enumerate(self.defaults):
            if index not in given and default is not None:
                row[index] = default.fn((), ctx)
        check_row(schema, row)
        return row, bool(schema.hidden) and schema.pk_indexes[0] not in given

    def complete_rows(
        self, provided_rows: list[list[tuple[int, object]]], ctx: EvalContext
    ) -> tuple[list[list], list[bool]]:
        pairs = [self.complete_row(provided, ctx) for provided in provided_rows]
        return [row for row, _ in pairs], [gen for _, gen in pairs]


@dataclass
class UpdatePlan:
    """`blind`: a write with no read before it (one `set_fields` of the row's key): the WHERE
    names exactly one key (`key_only_where`), and every SET value is a constant outside the
    primary key, so the new row is the old one with those fields replaced."""
    schema: TableSchema
    access: AccessPath
    where: Compiled | None
    sets: list[tuple[int, Compiled]]
    tables: dict[str, TableSchema]
    where_text: str = ""
    blind: bool = False


@dataclass
class DeletePlan:
    """`blind`: the WHERE names exactly one key (`key_only_where`): one delete of that key,
    with no read before it; whether a row was there comes back with it."""
    schema: TableSchema
    access: AccessPath
    where: Compiled | None
    tables: dict[str, TableSchema]
    where_text: str = ""
    blind: bool = False


@dataclass
class CreateTablePlan:
    name: str
    columns: tuple[ColumnSchema, ...]
    pk: tuple[str, ...]
    if_not_exists: bool
    tables: dict[str, TableSchema] = field(default_factory=dict)
    home: str | None = None     # LOCALITY REGIONAL BY TABLE IN home (None: the primary region)


@dataclass
class AlterLocalityPlan:
    """``ALTER TABLE name SET LOCALITY REGIONAL BY TABLE IN home`` (None: the primary region)."""

    name: str
    home: str | None
    position: int | None = None


@dataclass
class DropTablePlan:
    names: list[str]
    if_exists: bool
    tables: dict[str, TableSchema] = field(default_factory=dict)


@dataclass
class ExplainPlan:
    """EXPLAIN of `inner`; with `analyze` (EXPLAIN ANALYZE), `inner` runs and its trace is shown."""

    inner: object
    tables: dict[str, TableSchema]
    analyze: bool = False


# --- entry points -------------------------------------------------------------------------------


def tables_named(statement: Statement) -> list[str]:
    """The table names a statement's plan depends on (to load and re-check their schemas)."""
    node = statement.ast.this if isinstance(statement.ast, (Explain,)) else statement.ast
    if isinstance(node, Upsert):
        node = node.this
    if isinstance(node, (exp.Create, exp.Drop, exp.Alter)):
        return []
    names = []
    for table in node.find_all(exp.Table):
        name = identifier_name(table)
        if name and name not in names:
            names.append(name)
    return names


def plan_statement(statement: Statement, tables: dict[str, TableSchema | None]):
    """The plan of a SELECT / INSERT / UPSERT / UPDATE / DELETE / CREATE / DROP / EXPLAIN.

    `tables` maps every name of `tables_named(statement)` to its schema (None: no such
    table). Raises SQLError for statements that name unknown tables or columns, mistype
    expressions, or break constraints checkable before running."""
    node = statement.ast
    try:
        if isinstance(node, Explain):
            return ExplainPlan(_plan_node(node.this, tables), _known(tables), isinstance(node, ExplainAnalyze))
        return _plan_node(node, tables)
    except SQLError as error:
        raise error.with_sql(statement.text) from None


def _known(tables: dict[str, TableSchema | None]) -> dict[str, TableSchema]:
    return {name: schema for name, schema in tables.items() if schema is not None}


def _plan_node(node: exp.Expr, tables: dict[str, TableSchema | None]):
    if isinstance(node, exp.Select):
        return plan_select(node, tables)
    if isinstance(node, exp.Union):
        return _plan_union_select(node, tables)
    if isinstance(node, Upsert):
        return plan_insert(node.this, tables, upsert=True)
    if isinstance(node, exp.Insert):
        return plan_insert(node, tables, upsert=False)
    if isinstance(node, exp.Update):
        return plan_update(node, tables)
    if isinstance(node, exp.Delete):
        return plan_delete(node, tables)
    if isinstance(node, exp.Create):
        return plan_create_table(node)
    if isinstance(node, exp.Alter):
        locality = alter_locality(node)
        assert locality is not None   # the whitelist passes no other ALTER (sql/dialect.py)
        return AlterLocalityPlan(_table_name(node.this), locality.args.get("region"), node_position(node.this))
    if isinstance(node, exp.Drop):
        return DropTablePlan(
            [_table_name(t) for t in node.args.get("tables") or []], bool(node.args.get("exists"))
        )
    raise SQLError("unsupported", f"not supported: EXPLAIN of {type(node).__name__.upper()}")


def _table_name(table: exp.Expr) -> str:
    name = identifier_name(table)
    if len(name) > IDENTIFIER_LENGTH_MAX:
        raise SQLError(
            "syntax", f"table name is longer than {IDENTIFIER_LENGTH_MAX} characters",
            node_position(table),
        )
    return name


def _schema(tables: dict[str, TableSchema | None], table: exp.Expr) -> TableSchema:
    name = _table_name(table)
    schema = tables.get(name)
    if schema is None:
        raise SQLError(
            "undefined_table",
            f'relation "{name}" does not exist; SHOW TABLES lists the tables, CREATE TABLE '
            "makes one",
            node_position(table),
        )
    return schema


def _add_source(scope: Scope, schema: TableSchema, table: exp.Expr):
    alias_node = table.args.get("alias")
    # A virtual table is called by its function name, as in CockroachDB.
    default = schema.name.rpartition(".")[2] if schema.name in VIRTUAL_TABLES else schema.name
    alias = identifier_name(alias_node) if alias_node is not None else default
    columns = [(c.name, c.type) for c in schema.columns]
    return scope.add(alias, columns, schema.hidden, schema.name if alias != schema.name else None)


# --- SELECT -------------------------------------------------------------------------------------


def plan_query(node: exp.Expr, tables: dict[str, TableSchema | None], parent: Scope | None = None):
    """The plan of a query that is a part of a statement - a subquery (`parent`: the scope of
    the query it is in, whose columns it may read) or a derived table: a SelectPlan or a
    UnionPlan, each with `outputs`, `columns` and `correlated`."""
    if isinstance(node, exp.Union):
        if any(node.args.get(k) is not None for k in ("order", "limit", "offset")):
            return _plan_union_select(node, tables, parent)
        return plan_union(node, tables, parent)
    if not isinstance(node, exp.Select):
        raise SQLError("unsupported", "not supported: this subquery (a SELECT is expected)",
                       node_position(node))
    return plan_select(node, tables, parent)


def _union_as_select(node: exp.Union) -> exp.Select:
    """``q1 UNION ALL q2 ORDER BY ... LIMIT n`` as ``SELECT * FROM (q1 UNION ALL q2) ORDER BY
    ... LIMIT n``: the ORDER BY names the union's output columns, as a SELECT's does."""
    inner = node.copy()
    select = exp.Select(expressions=[exp.Star()])
    for key in ("order", "limit", "offset"):
        value = inner.args.get(key)
        if value is not None:
            inner.set(key, None)
            select.set(key, value)
    wrapped = exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.Identifier(this="union", quoted=True)))
    wrapped.meta["union_wrapper"] = True   # its columns may repeat a name (`_derived_schema`)
    select.set("from_", exp.From(this=wrapped))
    return select


def _plan_union_select(node: exp.Union, tables, parent: Scope | None = None) -> SelectPlan:
    """A UNION with ORDER BY / LIMIT / OFFSET: a SELECT over it (`_union_as_select`) whose
    output columns are named as the union's, repeated names included (psql's `SELECT pubname,
    NULL, NULL ... UNION ... ORDER BY 1`)."""
    plan = plan_select(_union_as_select(node), tables, parent)
    plan.columns = [name.split(_DUPLICATE_MARK)[0] for name in plan.columns]
    return plan


def plan_union(node: exp.Union, tables, parent: Scope | None = None) -> UnionPlan:
    distinct = bool(node.args.get("distinct"))
    parts_nodes: list[exp.Expr] = []
    stack: list[exp.Expr] = [node]
    while stack:   # a chain of one kind (UNION or UNION ALL) is left-deep: walk it without recursion
        current = stack.pop()
        if isinstance(current, exp.Union) and bool(current.args.get("distinct")) == distinct and not any(
                current.args.get(k) is not None for k in ("order", "limit", "offset")):
            stack.append(current.expression)
            stack.append(current.this)
        else:
            parts_nodes.append(current.this if isinstance(current, exp.Subquery) else current)
    parts = [plan_query(p, tables, parent) for p in parts_nodes]
    width = len(parts[0].outputs)
    types = []
    for j in range(width):
        kinds = []
        for part, part_node in zip(parts, parts_nodes):
            if len(part.outputs) != width:
                raise SQLError("syntax", "each UNION query must have the same number of columns",
                               node_position(part_node))
            kinds.append(part.outputs[j].type)
        typed = [k for k in kinds if k not in T.UNTYPED]
        target = typed[0] if typed else (T.TEXT if T.UNKNOWN in kinds else kinds[0])
        if typed and all(k in T.NUMERIC_TYPES for k in typed) and T.FLOAT in typed:
            target = T.FLOAT
        for kind, part_node in zip(kinds, parts_nodes):
            if kind not in T.UNTYPED and kind != target and not (kind == T.INT and target == T.FLOAT):
                raise SQLError("datatype_mismatch", f"UNION types {target} and {kind} cannot be matched",
                               node_position(part_node))
        types.append(target)
    convert = [[(lambda v: None if v is None else float(v))
                if types[j] == T.FLOAT and part.outputs[j].type == T.INT else None
                for j in range(width)] for part in parts]
    first = parts[0]
    outputs = [Compiled(c.fn, types[j], False, c.name) for j, c in enumerate(first.outputs)]
    merged: dict[str, TableSchema] = {}
    for part in parts:
        merged.update(part.tables)
    return UnionPlan(parts, outputs, list(first.columns), convert, merged,
                     any(part.correlated for part in parts), distinct)


def _plan_series(item: exp.Table, parent: Scope | None) -> tuple[SeriesAccess, TableSchema]:
    """A generate_series FROM item: its arguments compiled where the enclosing query's columns
    are visible (a correlated series), and its one column named as its alias (PostgreSQL)."""
    alias_node = item.args.get("alias")
    alias = identifier_name(alias_node) if alias_node is not None else "generate_series"
    if alias_node is not None and alias_node.args.get("columns"):
        raise SQLError("unsupported", "not supported: column aliases on generate_series", node_position(item))
    scope = Scope(parent=parent)
    compiler = Compiler(scope, clause="generate_series()")
    call = item.this
    args = []
    for key in ("start", "end", "step"):
        node = call.args.get(key)
        if node is None:
            args.append(None)
            continue
        compiled = compiler.compile(node)
        if compiled.type in T.UNTYPED:
            compiled = compiler.coerce(compiled, T.INT, node, "generate_series argument")
        if compiled.type != T.INT:
            raise SQLError("unsupported", f"not supported: generate_series over {compiled.type} (INT only)",
                           node_position(node))
        args.append(compiled)
    schema = TableSchema(0, alias, (ColumnSchema(alias, T.INT, False, None),), (alias,))
    access = SeriesAccess(schema, start=args[0], stop=args[1], step=args[2])
    access.correlated = scope.correlated   # type: ignore[attr-defined]
    return access, schema


_DUPLICATE_MARK = "#repeat"   # a UNION wrapper's repeated column name, made distinct: name + mark + position


def _plan_unnest(item: exp.Table, parent: Scope | None) -> tuple[UnnestAccess, TableSchema]:
    """An unnest FROM item: its array compiled where the enclosing query's columns are visible,
    its one column named by the alias's column list, else by the alias, else ``unnest``
    (PostgreSQL)."""
    alias_node = item.args.get("alias")
    alias = identifier_name(alias_node) if alias_node is not None else "unnest"
    columns = alias_node.args.get("columns") if alias_node is not None else None
    if columns and len(columns) > 1:
        raise SQLError("unsupported", "not supported: unnest of one array gives one column", node_position(item))
    column = identifier_name(columns[0]) if columns else alias
    scope = Scope(parent=parent)
    array = Compiler(scope, clause="unnest()").array_operand(item.this.this)
    schema = TableSchema(0, alias, (ColumnSchema(column, T.TEXT, False, None),), (column,))
    access = UnnestAccess(schema, array=array)
    access.correlated = scope.correlated   # type: ignore[attr-defined]
    return access, schema


def _derived_schema(plan, alias: str, item: exp.Expr) -> TableSchema:
    """The shape of a derived table (never stored): its columns as the subquery names them. The
    table `_union_as_select` wraps a UNION in may repeat a name: the repeats get hidden distinct
    names (an ORDER BY names the first), given back by `_plan_union_select`."""
    names = list(plan.columns)
    if len(set(names)) != len(names):
        if not item.meta.get("union_wrapper"):
            raise SQLError("unsupported", f'not supported: a derived table with two columns of one name ("{alias}"); '
                           "give them distinct aliases", node_position(item))
        names = [name if name not in names[:j] else "%s%s%d" % (name, _DUPLICATE_MARK, j) for j, name in enumerate(names)]
    columns = tuple(ColumnSchema(name, c.type if c.type in T.COLUMN_TYPES else T.TEXT, False, None)
                    for name, c in zip(names, plan.outputs))
    return TableSchema(0, alias, columns, (columns[0].name,))


def plan_select(node: exp.Select, tables: dict[str, TableSchema | None],
                parent: Scope | None = None) -> SelectPlan:
    scope = Scope(parent=parent)
    scope.planner = lambda query, outer: plan_query(query, tables, outer)
    schemas: list[tuple[TableSchema, exp.Expr]] = []
    derived: dict[int, object] = {}   # source number -> the plan of a derived table
    from_ = node.args.get("from_")
    join_conditions: list[exp.Expr] = []
    left_on: dict[int, list[exp.Expr]] = {}   # LEFT JOINed source number -> its ON conjuncts
    if from_ is not None:
        items = [from_.this] + [j.this for j in node.args.get("joins") or []]
        for number, join in enumerate(node.args.get("joins") or [], start=1):
            if (join.args.get("side") or "").upper() == "LEFT":
                left_on[number] = conjuncts(join.args.get("on"))
            elif join.args.get("on") is not None:
                join_conditions.append(join.args["on"])
        for item in items:
            if isinstance(item, exp.Subquery):
                alias_node = item.args.get("alias")
                if alias_node is None:
                    raise SQLError("syntax", "subquery in FROM must have an alias, e.g. (SELECT ...) AS t",
                                   node_position(item))
                alias = identifier_name(alias_node)
                # A derived table sees the enclosing query's columns, not its FROM siblings.
                inner = plan_query(item.this, tables, parent)
                scope.correlated = scope.correlated or inner.correlated
                schema = _derived_schema(inner, alias, item)
                derived[len(schemas)] = inner
                schemas.append((schema, item))
                scope.add(alias, [(column.name, c.type if c.type != T.UNKNOWN else T.TEXT)
                                  for column, c in zip(schema.columns, inner.outputs)])
                continue
            if isinstance(item, exp.Table) and isinstance(item.this, exp.Explode):
                unnest, schema = _plan_unnest(item, parent)
                scope.correlated = scope.correlated or unnest.correlated
                derived[len(schemas)] = unnest
                schemas.append((schema, item))
                scope.add(schema.name, [(schema.columns[0].name, T.PARAM)])
                continue
            if isinstance(item, exp.Table) and isinstance(item.this, exp.GenerateSeries):
                series, schema = _plan_series(item, parent)
                scope.correlated = scope.correlated or series.correlated
                derived[len(schemas)] = series
                schemas.append((schema, item))
                scope.add(schema.name, [(schema.columns[0].name, T.INT)])
                continue
            if not isinstance(item, exp.Table):
                raise SQLError(
                    "unsupported", "not supported: this FROM item (only tables and subqueries)",
                    node_position(item),
                )
            schema = _schema(tables, item)
            schemas.append((schema, item))
            _add_source(scope, schema, item)

    compiler = Compiler(scope, clause="WHERE")
    where_node = node.args.get("where")
    where_parts = conjuncts(where_node.this) if where_node is not None else []
    for condition in join_conditions:
        where_parts.extend(conjuncts(condition))
    compiled_parts = []
    where_count = len(where_parts) - sum(len(conjuncts(c)) for c in join_conditions)
    for i, part in enumerate(where_parts):
        clause = "WHERE" if i < where_count else "JOIN ON"
        compiled = compiler.compile_condition(part, clause)
        compiled_parts.append((part, compiled, _sources_of(part, scope)))

    # A LEFT JOINed source's ON conjuncts decide which of its rows match; only those on that
    # source alone (or constants) may narrow its reads. WHERE never narrows such a source.
    left_parts: dict[int, list[tuple[exp.Expr, Compiled, set[int]]]] = {
        number: [(part, compiler.compile_condition(part, "JOIN ON"), _sources_of(part, scope))
                 for part in parts]
        for number, parts in left_on.items()
    }
    sources: list[SourcePlan] = []
    implied = _implied_conjuncts([p for p, _, _ in compiled_parts], scope)
    for number, (schema, item) in enumerate(schemas):
        pool = left_parts[number] if number in left_parts else compiled_parts
        own = [part for part, _, used in pool if used <= {number}]
        if number not in left_parts:
            own += [part for part, used in implied if used == {number}]
        if isinstance(derived.get(number), (SeriesAccess, UnnestAccess)):
            access: AccessPath = derived[number]   # type: ignore[assignment]
        elif number in derived:
            access = DerivedAccess(schema, plan=derived[number])
        elif schema.name in VIRTUAL_TABLES:
            access = VirtualAccess(schema, args=compile_args(
                schema.name, list(item.this.expressions), node_position(item)))
        else:
            access = plan_access(schema, number, own, scope)
        source = scope.sources[number]
        sources.append(
            SourcePlan(
                schema, source.alias, access, source.offset, len(source.columns),
                [c for part, c, used in pool if used <= {number} and used],
            )
        )

    joins: list[JoinStep] = []
    where: Compiled | None = None
    if len(sources) <= 1:
        where = _conjunction([c for _, c, _ in compiled_parts])
    else:
        applied: set[int] = set()
        first_filters = [c for i, (_, c, used) in enumerate(compiled_parts) if used <= {0}]
        applied.update(i for i, (_, _, used) in enumerate(compiled_parts) if used <= {0})
        where = _conjunction(first_filters)
        for k in range(1, len(sources)):
            left_keys, right_keys, texts = [], [], []
            on_parts = left_parts.get(k, compiled_parts)
            for i, (part, c, used) in enumerate(on_parts):
                if k in used and used - {k} and max(used - {k}) < k and isinstance(part, exp.EQ):
                    left_side, right_side = part.this, part.expression
                    l_used, r_used = _sources_of(left_side, scope), _sources_of(right_side, scope)
                    if r_used == {k} and l_used and max(l_used) < k:
                        pass
                    elif l_used == {k} and r_used and max(r_used) < k:
                        left_side, right_side = right_side, left_side
                    else:
                        continue
                    lc = compiler.compile(left_side)
                    rc = compiler.compile(right_side)
                    lc, rc = compiler._unify(lc, rc, left_side, right_side)
                    left_keys.append(lc)
                    right_keys.append(rc)
                    texts.append(part.sql(dialect=DIALECT))
            filters = []
            for i, (_, c, used) in enumerate(compiled_parts):
                if i not in applied and (max(used) if used else 0) <= k:
                    filters.append(c)
                    applied.add(i)
            if k in left_parts:
                describe = (f"left hash join on {' AND '.join(texts)}" if texts
                            else "left nested loop join")
                joins.append(JoinStep(k, left_keys, right_keys, filters, describe, True,
                                      [c for _, c, _ in left_parts[k]]))
                continue
            describe = (
                f"hash join on {' AND '.join(texts)}" if texts else "nested loop (cross) join"
            )
            joins.append(JoinStep(k, left_keys, right_keys, filters, describe))

    # select list, grouping, having, order
    select_items = node.expressions
    group_node = node.args.get("group")
    having_node = node.args.get("having")
    srfs: list[tuple[str, Compiled]] = []
    if any(_srf_call(item) is not None for item in select_items):
        select_items, srfs = _plan_srfs(select_items, scope, group_node is not None or having_node is not None)
    has_aggregates = any(_has_aggregate(item) for item in select_items) or (having_node is not None)
    order_node = node.args.get("order")
    if order_node is not None and not has_aggregates:
        has_aggregates = any(_has_aggregate(o) for o in order_node.expressions)
    grouping = None
    if group_node is not None or has_aggregates:
        keys = []
        for key in (group_node.expressions if group_node is not None else []):
            keys.append(_resolve_group_key(key, select_items, scope))
        key_columns = []
        key_compiled = []
        group_compiler = Compiler(scope, clause="GROUP BY")
        for key in keys:
            compiled = group_compiler.compile(key)
            key_compiled.append(compiled)
            if isinstance(key, exp.Column):
                key_columns.append(scope.resolve(key)[0])
            else:
                key_columns.append(None)
        grouping = Grouping(keys, key_columns, key_compiled)

    out_compiler = Compiler(scope, grouping, clause="the select list")
    outputs: list[Compiled] = []
    columns: list[str] = []
    output_nodes: list[exp.Expr] = []
    for item in select_items:
        for expanded, name in _expand_star(item, scope):
            compiled = out_compiler.compile(expanded)
            outputs.append(compiled)
            columns.append(name if name is not None else output_name(expanded, compiled))
            output_nodes.append(expanded)

    having = None
    if having_node is not None:
        having_compiler = Compiler(scope, grouping, clause="HAVING")
        having = having_compiler.compile_condition(having_node.this, "HAVING")

    distinct = node.args.get("distinct") is not None
    order: list[SortKey] = []
    ordered_by_key = False
    if order_node is not None:
        order_compiler = Compiler(scope, grouping, clause="ORDER BY")
        key_names = []
        for ordered in order_node.expressions:
            target = ordered.this
            desc = bool(ordered.args.get("desc"))
            nulls_first = bool(ordered.args.get("nulls_first"))
            index = _output_reference(target, columns, output_nodes, scope)
            if index is not None:
                order.append(SortKey(lambda row, ctx, i=index: row[i], desc, nulls_first, True))
                ref = output_nodes[index]
            else:
                if distinct:
                    raise SQLError(
                        "syntax",
                        "for SELECT DISTINCT, ORDER BY expressions must appear in the select list",
                        node_position(target),
                    )
                compiled = order_compiler.compile(target)
                order.append(SortKey(compiled.fn, desc, nulls_first, False))
                ref = target
            key_names.append((ref, desc))
        ordered_by_key = _matches_key_order(key_names, sources, scope)

    limit = _limit_expr(node.args.get("limit"), "LIMIT")
    offset = _limit_expr(node.args.get("offset"), "OFFSET")
    notes = []
    if where_parts:
        notes.append("filter: " + " AND ".join(p.sql(dialect=DIALECT) for p in where_parts))
    if grouping is not None:
        keys = ", ".join(k.sql(dialect=DIALECT) for k in grouping.keys)
        notes.append(f"group by {keys}" if keys else "aggregate all rows")
    if having_node is not None:
        notes.append("having: " + having_node.this.sql(dialect=DIALECT))
    if distinct:
        notes.append("distinct")
    if order_node is not None:
        how = "already in key order" if ordered_by_key else "sort"
        notes.append(f"{how}: " + ", ".join(o.sql(dialect=DIALECT) for o in order_node.expressions))
    if node.args.get("offset") is not None:
        notes.append("offset: " + node.args["offset"].args["expression"].sql(dialect=DIALECT))
    if node.args.get("limit") is not None and limit is not None:
        notes.append("limit: " + node.args["limit"].args["expression"].sql(dialect=DIALECT))
    used_tables: dict[str, TableSchema] = {}
    for number, source_plan in enumerate(sources):
        if isinstance(derived.get(number), (SeriesAccess, UnnestAccess)):
            continue
        if number in derived:
            used_tables.update(derived[number].tables)   # type: ignore[attr-defined]
        else:
            used_tables[source_plan.schema.name] = source_plan.schema
    if srfs:
        notes.insert(0, "one row per element of " + ", ".join(f"{kind}()" for kind, _ in srfs))
    return SelectPlan(
        sources, joins, where, grouping, having, outputs, columns, distinct, order, limit,
        offset, ordered_by_key, used_tables, notes, scope.correlated, srfs,
    )


_SRF_SOURCE = "\x00srf"   # the pseudo source of set-returning functions' values (no SQL name)


def _srf_call(item: exp.Expr) -> exp.Expr | None:
    """The set-returning call a select item is (``unnest(a)``, ``generate_subscripts(a, 1)``,
    aliased or not), else None."""
    node = item.this if isinstance(item, exp.Alias) else item
    return node if isinstance(node, (exp.Explode, GenerateSubscripts)) else None


def _plan_srfs(select_items: list[exp.Expr], scope: Scope, grouped: bool):
    """Set-returning functions in the select list, as PostgreSQL 10+ runs them: each input row
    becomes as many rows as the longest of its arrays, the functions side by side (a shorter
    one gives NULLs). Their values are appended to the row as a hidden source; each item is
    rewritten (new nodes: the parsed tree is shared) to read its slot."""
    if grouped:
        raise SQLError("unsupported", "not supported: set-returning functions in a grouped query; "
                       "group in an outer query over a derived table", node_position(select_items[0]))
    compiler = Compiler(scope, clause="the select list")
    srfs: list[tuple[str, Compiled]] = []
    items: list[exp.Expr] = []
    for item in select_items:
        call = _srf_call(item)
        if call is None:
            items.append(item)
            continue
        if isinstance(call, exp.Explode):
            kind, args = "unnest", [call.this]
        else:
            kind, args = "generate_subscripts", [call.this, call.expression]
            dimension = compiler.compile(args[1])
            if dimension.type in T.UNTYPED:
                dimension = compiler.coerce(dimension, T.INT, args[1], "dimension")
            array = compiler.array_operand(args[0])
            fa, fd = array.fn, dimension.fn
            # Arrays here have one dimension: any other has no subscripts.
            array = Compiled(lambda row, ctx, fa=fa, fd=fd: fa(row, ctx) if fd(row, ctx) == 1 else None,
                             array.type, False)
            srfs.append((kind, array))
        if kind == "unnest":
            srfs.append((kind, compiler.array_operand(args[0])))
        slot = exp.Column(this=exp.Identifier(this=f"{_SRF_SOURCE}{len(srfs) - 1}", quoted=True),
                          table=exp.Identifier(this=_SRF_SOURCE, quoted=True))
        alias = item.args.get("alias") if isinstance(item, exp.Alias) else exp.Identifier(this=kind, quoted=True)
        items.append(exp.Alias(this=slot, alias=alias))
    names = [(f"{_SRF_SOURCE}{i}", T.INT if kind == "generate_subscripts" else T.PARAM)
             for i, (kind, _) in enumerate(srfs)]
    scope.add(_SRF_SOURCE, names, frozenset(name for name, _ in names))
    return items, srfs


def _has_aggregate(node: exp.Expr) -> bool:
    """Whether `node` calls an aggregate of this query (a subquery's own aggregates are its own)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, AGGREGATES):
            return True
        if not isinstance(current, (exp.Subquery, exp.Exists, exp.Select, exp.Union)):
            stack.extend(current.iter_expressions())
    return False


def _implied_conjuncts(parts: list[exp.Expr], scope: Scope) -> list[tuple[exp.Expr, set[int]]]:
    """Key predicates implied through join equalities, for access paths only: from
    ``o.cust = c.id AND c.id = 3`` follows ``o.cust = 3``, so orders is read by span, not
    scanned. (The derived predicates are never evaluated: the originals still are.)"""
    def column_id(node: exp.Expr):
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            index, _, _, number = scope.resolve(node)
            # An enclosing query's column is no column of this row (its index is another row's).
            return (index, number) if number != OUTER else None
        return None

    links: dict[tuple, list[exp.Column]] = {}
    for part in parts:
        if isinstance(part, exp.EQ):
            left, right = column_id(part.this), column_id(part.expression)
            if left and right and left[1] != right[1]:
                links.setdefault(left, []).append(part.expression)
                links.setdefault(right, []).append(part.this)
    if not links:
        return []
    out = []
    for part in parts:
        subject = _key_subject(part)
        if subject is None or _has_column_besides(part, subject):
            continue
        for other in links.get(column_id(subject) or (), []):
            copy = part.copy()
            target = _key_subject(copy)
            assert target is not None
            target.replace(other.copy())
            out.append((copy, {column_id(other)[1]}))  # type: ignore[index]
    return out


def _key_subject(part: exp.Expr) -> exp.Column | None:
    """The column a key-shaped predicate constrains (`col op const`, BETWEEN, IN), if any."""
    if isinstance(part, tuple(_OPS)):
        for side in (part.this, part.expression):
            if isinstance(side, exp.Column):
                return side
        return None
    if isinstance(part, (exp.Between, exp.In)) and not part.args.get("negate"):
        return part.this if isinstance(part.this, exp.Column) else None
    return None


def _has_column_besides(part: exp.Expr, subject: exp.Column) -> bool:
    return any(c is not subject for c in part.find_all(exp.Column))


def _scope_for_select(node: exp.Select, tables) -> Scope:
    scope = Scope()
    from_ = node.args.get("from_")
    if from_ is not None:
        for item in [from_.this] + [j.this for j in node.args.get("joins") or []]:
            if isinstance(item, exp.Table):
                _add_source(scope, _schema(tables, item), item)
    return scope


def _sources_of(node: exp.Expr, scope: Scope) -> set[int]:
    """The source numbers of `scope` that `node` reads (an enclosing query's columns are not
    among them). A subquery inside counts as reading every source: it is evaluated once all
    of them are joined."""
    used = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (exp.Subquery, exp.Exists, exp.Select, exp.Union)):
            used.update(range(len(scope.sources)))
            continue
        if isinstance(current, exp.Column):
            if not isinstance(current.this, exp.Star):
                number = scope.resolve(current)[3]
                if number != OUTER:
                    used.add(number)
            continue
        stack.extend(current.iter_expressions())
    return used


def _conjunction(parts: list[Compiled]) -> Compiled | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    fns = [p.fn for p in parts]

    def all_true(row, ctx):
        result = True
        for fn in fns:
            value = fn(row, ctx)
            if value is False:
                return False
            if value is None:
                result = None
        return result

    return Compiled(all_true, T.BOOL, all(p.const for p in parts))


def _expand_star(item: exp.Expr, scope: Scope):
    """(expression, forced name or None) pairs for one select item, `*` and `t.*` expanded."""
    if isinstance(item, exp.Star) or (
        isinstance(item, exp.Column) and isinstance(item.this, exp.Star)
    ):
        qualifier = item.args.get("table") if isinstance(item, exp.Column) else None
        wanted = identifier_name(qualifier) if qualifier is not None else None
        if not scope.sources:
            raise SQLError("syntax", "SELECT * with no tables specified is not valid",
                           node_position(item))
        found = False
        for source in scope.sources:
            if wanted is not None and source.alias != wanted:
                continue
            found = True
            for name, _ in source.columns:
                if name in source.hidden:
                    continue
                column = exp.Column(
                    this=exp.Identifier(this=name, quoted=True),
                    table=exp.Identifier(this=source.alias, quoted=True),
                )
                yield column, name
        if not found:
            raise SQLError(
                "undefined_table", f'missing FROM-clause entry for table "{wanted}"',
                node_position(item),
            )
        return
    if isinstance(item, exp.Alias):
        yield item.this, identifier_name(item.args.get("alias"))
        return
    yield item, None


def _resolve_group_key(key: exp.Expr, select_items: list[exp.Expr], scope: Scope) -> exp.Expr:
    """GROUP BY 2 / GROUP BY alias -> the select expression (PostgreSQL rules: an input
    column name wins over an output alias)."""
    if isinstance(key, exp.Literal) and not key.is_string:
        position = int(key.this)
        if not 1 <= position <= len(select_items):
            raise SQLError(
                "syntax", f"GROUP BY position {position} is not in select list",
                node_position(key),
            )
        item = select_items[position - 1]
        return item.this if isinstance(item, exp.Alias) else item
    if isinstance(key, exp.Column) and key.args.get("table") is None:
        name = identifier_name(key)
        if not any(name == c for s in scope.sources for c, _ in s.columns):
            for item in select_items:
                if isinstance(item, exp.Alias) and identifier_name(item.args.get("alias")) == name:
                    return item.this
    return key


def _output_reference(
    target: exp.Expr, columns: list[str], nodes: list[exp.Expr], scope: Scope
) -> int | None:
    """ORDER BY 2 / ORDER BY output_name / ORDER BY <a select expression> -> output index."""
    if isinstance(target, exp.Literal) and not target.is_string:
        position = int(target.this)
        if not 1 <= position <= len(columns):
            raise SQLError(
                "syntax", f"ORDER BY position {position} is not in select list",
                node_position(target),
            )
        return position - 1
    if isinstance(target, exp.Column) and target.args.get("table") is None:
        name = identifier_name(target)
        matches = [i for i, c in enumerate(columns) if c == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            first = nodes[matches[0]]
            if all(nodes[i] == first for i in matches):
                return matches[0]
            raise SQLError(
                "undefined_column", f'ORDER BY "{name}" is ambiguous', node_position(target)
            )
    for i, node in enumerate(nodes):
        if node == target:
            return i
    return None


def _matches_key_order(keys: list[tuple[exp.Expr, bool]], sources: list[SourcePlan],
                       scope: Scope) -> bool:
    if len(sources) != 1 or isinstance(sources[0].access, (DerivedAccess, SeriesAccess, UnnestAccess)):
        return False
    pk = sources[0].schema.pk
    if len(keys) > len(pk):
        return False
    for (node, desc), column in zip(keys, pk):
        if desc or not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            return False
        _, _, name, number = scope.resolve(node)
        if name != column or number != 0:
            return False
    return True


def _limit_expr(node: exp.Expr | None, what: str) -> Compiled | None:
    if node is None:
        return None
    value = node.args.get("expression")
    if value is None or (isinstance(value, exp.Var) and value.name.upper() == "ALL"):
        return None
    compiler = Compiler(Scope(), clause=what)
    compiled = compiler.compile(value)
    if compiled.type in T.UNTYPED:
        compiled = compiler.coerce(compiled, T.INT, value, what)
    if compiled.type != T.INT:
        raise SQLError(
            "datatype_mismatch", f"argument of {what} must be type INT, not {compiled.type}",
            node_position(value),
        )
    return compiled


# --- INSERT / UPSERT ----------------------------------------------------------------------------


def plan_insert(
    node: exp.Insert, tables: dict[str, TableSchema | None], upsert: bool
) -> InsertPlan:
    target = node.this
    column_nodes = None
    if isinstance(target, exp.Schema):
        column_nodes = target.expressions
        target = target.this
    schema = _schema(tables, target)
    alias_node = target.args.get("alias")
    alias = identifier_name(alias_node) if alias_node is not None else schema.name
    if column_nodes is None:
        targets = list(schema.visible_indexes)
    else:
        targets = []
        for column_node in column_nodes:
            name = identifier_name(column_node)
            index = schema.index.get(name)
            if index is None:
                raise SQLError(
                    "undefined_column",
                    f'column "{name}" of relation "{schema.name}" does not exist',
                    node_position(column_node),
                )
            if index in targets:
                raise SQLError(
                    "syntax", f'column "{name}" specified more than once',
                    node_position(column_node),
                )
            targets.append(index)

    defaults = compile_defaults(schema)
    rows: list[list[Compiled | None]] = []
    select_plan = None
    source = node.expression
    empty = Compiler(Scope(), clause="VALUES")
    if column_nodes is None:
        # No column list: the values fill the first visible columns in order (PostgreSQL);
        # the rest take their defaults.
        if isinstance(source, exp.Values) and source.expressions:
            first = source.expressions[0]
            width = len(first.expressions) if isinstance(first, exp.Tuple) else 1
        elif isinstance(source, exp.Select):
            width = sum(len(list(_expand_star(i, _scope_for_select(source, tables))))
                        for i in source.expressions)
        else:
            width = len(targets)
        if width > len(targets):
            raise SQLError(
                "syntax",
                f"INSERT has more expressions than target columns ({width} values for "
                f"{len(targets)} columns)",
                node_position(source),
            )
        targets = targets[:width]
    if isinstance(source, exp.Values):
        tuples = source.expressions
        if len(tuples) > STATEMENT_ROWS_MAX:
            raise SQLError(
                "invalid_parameter",
                f"INSERT carries {len(tuples)} rows; the limit is {STATEMENT_ROWS_MAX} per "
                "statement - split it",
            )
        for row_node in tuples:
            values = row_node.expressions if isinstance(row_node, exp.Tuple) else [row_node]
            if len(values) != len(targets):
                if column_nodes is None:
                    raise SQLError("syntax", "VALUES lists must all be the same length",
                                   node_position(row_node))
                more = "more" if len(values) > len(targets) else "fewer"
                raise SQLError(
                    "syntax",
                    f"INSERT has {more} expressions than target columns "
                    f"({len(values)} values for {len(targets)} columns)",
                    node_position(row_node),
                )
            compiled_row: list[Compiled | None] = []
            for value_node, index in zip(values, targets):
                if isinstance(value_node, exp.Var) and value_node.name.upper() == "DEFAULT":
                    compiled_row.append(None)
                    continue
                column = schema.columns[index]
                compiled = empty.compile(value_node)
                compiled_row.append(
                    assign(empty, compiled, column, value_node)
                )
            rows.append(compiled_row)
    else:
        assert isinstance(source, exp.Select)
        select_plan = plan_select(source, tables)
        if len(select_plan.outputs) != len(targets):
            raise SQLError(
                "syntax",
                f"INSERT has {len(select_plan.outputs)} select columns for {len(targets)} "
                "target columns",
                node_position(source),
            )
        for compiled, index in zip(select_plan.outputs, targets):
            column = schema.columns[index]
            if not T.assignable(compiled.type, column.type):
                raise SQLError(
                    "datatype_mismatch",
                    f'column "{column.name}" is of type {column.type} but the SELECT gives '
                    f"{compiled.type}",
                    node_position(source),
                )

    mode = "upsert" if upsert else "insert"
    updates: list[tuple[int, Compiled]] = []
    update_where = None
    conflict = node.args.get("conflict")
    if conflict is not None:
        keys = conflict.args.get("conflict_keys")
        if conflict.args.get("constraint") is not None:
            raise SQLError("unsupported", "not supported: ON CONFLICT ON CONSTRAINT",
                           node_position(conflict))
        if keys:
            names = [identifier_name(k.this if isinstance(k, exp.Ordered) else k) for k in keys]
            if sorted(names) != sorted(schema.pk):
                raise SQLError(
                    "unsupported",
                    f"there is no unique constraint matching ON CONFLICT ({', '.join(names)}); "
                    f"the only one is the primary key ({', '.join(schema.pk)})",
                    node_position(conflict),
                )
        action = str(conflict.args.get("action") or "").upper()
        if action == "DO NOTHING":
            mode = "do_nothing"
        elif action == "DO UPDATE":
            if not keys:
                raise SQLError(
                    "syntax", "ON CONFLICT DO UPDATE requires a conflict target, e.g. "
                    f"ON CONFLICT ({', '.join(schema.pk)})",
                    node_position(conflict),
                )
            mode = "do_update"
            scope = Scope()
            scope.add(alias, [(c.name, c.type) for c in schema.columns], schema.hidden)
            scope.add("excluded", [(c.name, c.type) for c in schema.columns], schema.hidden)
            compiler = Compiler(scope, clause="ON CONFLICT DO UPDATE")
            updates = _compile_sets(conflict.expressions, schema, compiler, allow_pk=False)
            where = conflict.args.get("where")
            if where is not None:
                update_where = compiler.compile_condition(where.this, "WHERE")
        else:
            raise SQLError("unsupported", f"not supported: ON CONFLICT {action}",
                           node_position(conflict))
    if mode == "upsert":
        # UPSERT = INSERT ... ON CONFLICT (pk) DO UPDATE SET c = excluded.c for every column
        # the statement names (all columns when it names none), as CockroachDB defines it.
        # The update reads the row (existing + excluded): excluded.c is at width + c.
        width = len(schema.columns)
        named = targets if column_nodes is not None else range(width)
        updates = [
            (i, Compiled(lambda row, ctx, j=width + i: row[j], schema.columns[i].type, False))
            for i in named if i not in schema.pk_indexes
        ]
    replaces_row = mode == "upsert" and (
        column_nodes is None or set(targets) == set(range(len(schema.columns)))
    )
    return InsertPlan(schema, mode, targets, rows, select_plan, defaults, updates,
                      update_where, {**(select_plan.tables if select_plan else {}),
                                     schema.name: schema}, replaces_row)


def check_row(schema: TableSchema, row: list) -> None:
    """NOT NULL, INT range and type of every value of a row about to be written."""
    for column, value in zip(schema.columns, row):
        check_column_value(schema, column, value)


def check_column_value(schema: TableSchema, column, value) -> None:
    """NOT NULL, INT range and type of one value about to be written to `column`."""
    if value is None:
        if column.not_null:
            raise SQLError(
                "not_null_violation",
                f'null value in column "{column.name}" of relation "{schema.name}" violates '
                "not-null constraint; give it a value",
            )
        return
    if column.type == T.INT and isinstance(value, int) and not isinstance(value, bool):
        T.check_int_range(value, f'value for column "{column.name}"')
    elif T.value_type(value) != column.type:
        raise SQLError(
            "datatype_mismatch",
            f'column "{column.name}" is of type {column.type} but the value is of type '
            f"{T.value_type(value)}",
        )


def assign(
    compiler: Compiler, compiled: Compiled, column: ColumnSchema, node: exp.Expr
) -> Compiled:
    """`compiled` made storable in `column` (static check now, runtime coercion if untyped)."""
    if not T.assignable(compiled.type, column.type):
        raise SQLError(
            "datatype_mismatch",
            f'column "{column.name}" is of type {column.type} but the expression is of type '
            f"{compiled.type}; cast it, e.g. CAST(... AS {column.type})",
            node_position(node),
        )
    return compiler.coerce(compiled, column.type, node, f'value for column "{column.name}"')


def compile_defaults(schema: TableSchema) -> list[Compiled | None]:
    compiler = Compiler(Scope(), clause="DEFAULT")
    defaults: list[Compiled | None] = []
    for column in schema.columns:
        if column.default_sql is None:
            defaults.append(None)
            continue
        (statement,) = parse(f"SELECT {column.default_sql}")
        expression = statement.ast.expressions[0]
        defaults.append(assign(compiler, compiler.compile(expression), column, expression))
    return defaults


def _compile_sets(
    assignments: list[exp.Expr], schema: TableSchema, compiler: Compiler, allow_pk: bool
) -> list[tuple[int, Compiled]]:
    sets: list[tuple[int, Compiled]] = []
    seen: set[int] = set()
    for assignment in assignments:
        if not isinstance(assignment, exp.EQ) or not isinstance(assignment.this, exp.Column):
            raise SQLError("syntax", "SET needs column = expression", node_position(assignment))
        target = assignment.this
        name = identifier_name(target)
        index = schema.index.get(name)
        if index is None:
            raise SQLError(
                "undefined_column", f'column "{name}" of relation "{schema.name}" does not exist',
                node_position(target),
            )
        if index in seen:
            raise SQLError(
                "syntax", f'multiple assignments to the same column "{name}"',
                node_position(target),
            )
        if not allow_pk and index in schema.pk_indexes:
            raise SQLError(
                "feature_not_supported",
                f'ON CONFLICT DO UPDATE cannot change primary key column "{name}"; use '
                "UPDATE for that",
                node_position(target),
            )
        seen.add(index)
        value_node = assignment.expression
        if isinstance(value_node, exp.Var) and value_node.name.upper() == "DEFAULT":
            raise SQLError("unsupported", "not supported: SET col = DEFAULT",
                           node_position(value_node))
        compiled = compiler.compile(value_node)
        sets.append((index, assign(compiler, compiled, schema.columns[index], value_node)))
    return sets


# --- UPDATE / DELETE ----------------------------------------------------------------------------


def _single_table(node: exp.Expr, tables) -> tuple[TableSchema, Scope, exp.Expr]:
    table = node.this
    schema = _schema(tables, table)
    scope = Scope()
    _add_source(scope, schema, table)
    return schema, scope, table


def plan_update(node: exp.Update, tables) -> UpdatePlan:
    schema, scope, _ = _single_table(node, tables)
    compiler = Compiler(scope, clause="UPDATE")
    sets = _compile_sets(node.expressions, schema, compiler, allow_pk=True)
    where_node = node.args.get("where")
    where = None
    parts: list[exp.Expr] = []
    if where_node is not None:
        where = Compiler(scope, clause="WHERE").compile_condition(where_node.this, "WHERE")
        parts = conjuncts(where_node.this)
    access = plan_access(schema, 0, parts, scope)
    blind = (key_only_where(schema, parts, scope) and all(compiled.const for _, compiled in sets)
             and not any(index in schema.pk_indexes for index, _ in sets))
    return UpdatePlan(schema, access, where, sets, {schema.name: schema}, _where_text(where_node), blind)


def plan_delete(node: exp.Delete, tables) -> DeletePlan:
    schema, scope, _ = _single_table(node, tables)
    where_node = node.args.get("where")
    where = None
    parts: list[exp.Expr] = []
    if where_node is not None:
        where = Compiler(scope, clause="WHERE").compile_condition(where_node.this, "WHERE")
        parts = conjuncts(where_node.this)
    return DeletePlan(schema, plan_access(schema, 0, parts, scope), where, {schema.name: schema},
                      _where_text(where_node), key_only_where(schema, parts, scope))


def key_only_where(schema: TableSchema, parts: list[exp.Expr], scope: Scope) -> bool:
    """Whether the WHERE conjuncts `parts` are all `pk column = constant`, one for each
    primary-key column: then the row at the key they name matches, and no other row does, so
    a write to that key needs no read to decide which rows match. (Two equalities on one
    column may disagree - `k = 1 AND k = 2` - and the key names only one of them.) Not for a
    FLOAT key column, whose equality and key encoding disagree on -0.0 and NaN."""
    named: set[str] = set()
    for part in parts:
        if not isinstance(part, exp.EQ):
            return False
        column = next((name for side, other in ((part.this, part.expression), (part.expression, part.this))
                       if not _has_column(other) and (name := _pk_column(side, schema, 0, scope)) is not None), None)
        if column is None or schema.column(column).type == T.FLOAT:  # type: ignore[union-attr]
            return False
        named.add(column)
    return named == set(schema.pk) and len(parts) == len(schema.pk)


def _where_text(where_node: exp.Expr | None) -> str:
    return "" if where_node is None else "filter: " + where_node.this.sql(dialect=DIALECT)


# --- CREATE TABLE -------------------------------------------------------------------------------


def plan_create_table(node: exp.Create) -> CreateTablePlan:
    schema_node = node.this
    if not isinstance(schema_node, exp.Schema):
        raise SQLError("unsupported", "not supported: CREATE TABLE without a column list "
                       "(or CREATE TABLE AS)", node_position(node))
    name = _table_name(schema_node.this)
    columns: list[ColumnSchema] = []
    pk: list[str] | None = None
    for element in schema_node.expressions:
        if isinstance(element, exp.PrimaryKey):
            if pk is not None:
                raise _multiple_keys(name, element)
            pk = [identifier_name(e.this if isinstance(e, exp.Ordered) else e)
                  for e in element.expressions]
            continue
        if not isinstance(element, exp.ColumnDef):
            raise SQLError(
                "unsupported",
                f"not supported: table element {element.sql(dialect=DIALECT)}",
                node_position(element),
            )
        column_name = identifier_name(element.this)
        if len(column_name) > IDENTIFIER_LENGTH_MAX:
            raise SQLError(
                "syntax", f"column name is longer than {IDENTIFIER_LENGTH_MAX} characters",
                node_position(element),
            )
        if element.args.get("kind") is None:
            raise SQLError("syntax", f'column "{column_name}" needs a type', node_position(element))
        serial = element.args["kind"].this in _SERIAL_TYPES
        kind = T.INT if serial else column_type(element.args["kind"])
        not_null = False
        default_sql = None
        if serial:   # SERIAL: an INT filled by unique_rowid(), as CockroachDB makes it
            not_null, default_sql = True, ROWID_DEFAULT_SQL
        for constraint in element.args.get("constraints") or []:
            inner = constraint.args.get("kind")
            if isinstance(inner, exp.PrimaryKeyColumnConstraint):
                if pk is not None:
                    raise _multiple_keys(name, element)
                pk = [column_name]
            elif isinstance(inner, exp.NotNullColumnConstraint):
                if inner.args.get("allow_null"):
                    continue  # an explicit NULL
                not_null = True
            elif isinstance(inner, exp.DefaultColumnConstraint):
                if serial:
                    raise SQLError("syntax", f'multiple default values specified for column "{column_name}"',
                                   node_position(element))
                default_sql = _check_default(inner.this, column_name, kind)
            elif isinstance(inner, exp.GeneratedAsIdentityColumnConstraint):
                not_null, default_sql = True, _identity_default(inner, column_name, kind, element)
            else:
                raise SQLError(
                    "unsupported",
                    f"not supported: column constraint {constraint.sql(dialect=DIALECT)}",
                    node_position(element),
                )
        if any(c.name == column_name for c in columns):
            raise SQLError("syntax", f'column "{column_name}" specified more than once',
                           node_position(element))
        columns.append(ColumnSchema(column_name, kind, not_null, default_sql))
    if not columns:
        raise SQLError("syntax", "a table needs at least one column", node_position(node))
    if pk is None:
        if any(c.name == ROWID_COLUMN for c in columns):
            raise SQLError(
                "unsupported",
                f'a table without PRIMARY KEY gets a hidden "{ROWID_COLUMN}" key column; '
                f'rename your "{ROWID_COLUMN}" column or declare a primary key',
                node_position(node),
            )
        columns.append(ColumnSchema(ROWID_COLUMN, T.INT, True, ROWID_DEFAULT_SQL))
        pk = [ROWID_COLUMN]
    names = [c.name for c in columns]
    for key in pk:
        if key not in names:
            raise SQLError("undefined_column", f'column "{key}" named in key does not exist',
                           node_position(node))
    if len(set(pk)) != len(pk):
        raise SQLError("syntax", "a column appears twice in the primary key", node_position(node))
    columns = [
        ColumnSchema(c.name, c.type, True, c.default_sql) if c.name in pk else c for c in columns
    ]
    properties = node.args.get("properties")
    home = properties.expressions[0].args.get("region") if properties is not None else None
    return CreateTablePlan(name, tuple(columns), tuple(pk), bool(node.args.get("exists")), home=home)


_SERIAL_TYPES = frozenset({exp.DType.SERIAL, exp.DType.BIGSERIAL, exp.DType.SMALLSERIAL})


def _identity_default(inner: exp.Expr, column: str, kind: str, element: exp.Expr) -> str:
    """GENERATED BY DEFAULT AS IDENTITY: a default of unique_rowid(), like SERIAL (no sequence:
    values are unique, not consecutive). GENERATED ALWAYS would refuse explicit values: not yet."""
    if inner.this:
        raise SQLError("feature_not_supported", f'not supported: GENERATED ALWAYS AS IDENTITY (column "{column}"); '
                       "use GENERATED BY DEFAULT AS IDENTITY or SERIAL", node_position(element))
    if kind != T.INT:
        raise SQLError("syntax", f'identity column "{column}" must be an integer type', node_position(element))
    return ROWID_DEFAULT_SQL


def _multiple_keys(table: str, node: exp.Expr) -> SQLError:
    return SQLError(
        "syntax", f'multiple primary keys for table "{table}" are not allowed',
        node_position(node),
    )


def _check_default(node: exp.Expr, column: str, kind: str) -> str:
    if _has_column(node) or any(isinstance(n, exp.Parameter) for n in node.walk()):
        raise SQLError(
            "syntax",
            f'DEFAULT of column "{column}" must be a constant or an expression of constants '
            "and functions such as now() (no columns, parameters or aggregates)",
            node_position(node),
        )
    compiler = Compiler(Scope(), clause="DEFAULT")
    assign(compiler, compiler.compile(node), ColumnSchema(column, kind, False, None), node)
    return node.sql(dialect=DIALECT)
