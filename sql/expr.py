"""Scalar and aggregate expressions: type-checked at plan time, compiled to Python closures.

Why compile: a plan is cached per statement text and run many times, so each expression is
turned once into a closure ``fn(row, ctx) -> value`` (``row`` a sequence of column values,
``ctx`` an `EvalContext` carrying the bound parameters and the statement's clock reading) plus
a static SQL type. Type errors (``INT = TEXT``, ``SUM(text)``) are found while planning, with the
position of the offending node, before any row is read or written.

Semantics follow PostgreSQL unless sql/DIFFERENCES.md says otherwise:

* Three-valued logic: comparisons with NULL are NULL; ``NULL AND FALSE`` is FALSE, ``NULL OR
  TRUE`` is TRUE; WHERE keeps a row only when its condition is TRUE.
* INT arithmetic is 64-bit and checked; ``/`` on two INTs truncates toward zero, ``%`` takes
  the dividend's sign; division (also FLOAT) by zero is a division_by_zero error.
* Quoted literals and parameters take the type their context needs (sql/types.py).
* ``||`` on TEXT converts a non-text side to text; LIKE is case-sensitive, ILIKE not, ``\\`` is
  the default escape.
* A subquery compiles to a closure that runs its own plan through ``EvalContext.run_query``; a
  column of an enclosing query reads ``EvalContext.outer`` (see `Scope.resolve_ref`).

Pure: no I/O. The clock and random source reach expressions only through `EvalContext`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sqlglot import exp

from sql import types as T
from sql.dialect import PG_FUNCTION_NODES, ArrayUpper, identifier_name, node_position
from sql.errors import SQLError

Row = Sequence[object]


class EvalContext:
    """What an expression may read besides its row: parameters, the statement time, rowids.

    `now` is fixed for the whole statement (PostgreSQL's now() is fixed per transaction; here a
    statement is its own transaction). `new_rowid` returns a fresh random 63-bit int.
    `run_query(plan, row, ctx) -> list[list]` runs a subquery's plan (sql/plan.py) for the
    current `row` (the session sets it; None: subqueries cannot run, e.g. in a DEFAULT);
    `outer` holds the rows of the enclosing queries, innermost first, that a correlated
    subquery's outer column references read; `cache` keeps the rows of uncorrelated subqueries
    for the rest of the statement (they read at the statement's one timestamp, so once is enough).
    """

    __slots__ = ("params", "now", "new_rowid", "run_query", "outer", "cache", "catalog")

    def __init__(self, params: Sequence[object], now, new_rowid: Callable[[], int],
                 run_query: Callable | None = None, outer: tuple = (), cache: dict | None = None):
        self.params = params
        self.now = now
        self.new_rowid = new_rowid
        self.run_query = run_query
        self.outer = outer
        self.cache = {} if cache is None else cache
        self.catalog = None   # the session's sql.pg_functions.CatalogView, set by the session running it

    def inner(self, row: Row) -> EvalContext:
        """The context of a subquery run for the outer `row`."""
        ctx = EvalContext(self.params, self.now, self.new_rowid, self.run_query, (row, *self.outer), self.cache)
        ctx.catalog = self.catalog
        return ctx


Fn = Callable[[Row, EvalContext], object]


class _Unbound:
    """A parameter value EXPLAIN stands in for when it was given none."""

    def __repr__(self) -> str:
        return "<unbound parameter>"


UNBOUND = _Unbound()


@dataclass
class Compiled:
    """A compiled expression. `const`: reads no row (only parameters / literals / the clock);
    `literal`: its value is known now and held in `value`."""

    fn: Fn
    type: str
    const: bool
    name: str = "?column?"
    literal: bool = False
    value: object = None
    param: int | None = None  # 1-based number when the expression is a bare parameter


def _literal(value: object, kind: str, name: str = "?column?") -> Compiled:
    return Compiled(lambda row, ctx: value, kind, True, name, True, value)


# --- scopes -------------------------------------------------------------------------------------


@dataclass
class Source:
    """One named row source of a scope: a table (or ``excluded``) laid out at `offset`."""

    alias: str
    columns: list[tuple[str, str]]  # (name, type) in row order
    offset: int
    hidden: frozenset[str] = frozenset()
    table: str | None = None  # the table name, when it differs from the alias


@dataclass
class Scope:
    """The FROM items a query's expressions may name. A subquery's scope has the enclosing
    query's scope as `parent`: a name not found here is looked up there (a correlated
    reference; `correlated` is then set on every scope between). `planner(select, scope)`
    plans a subquery met while compiling (sql/plan.py sets it; None: no subqueries here)."""

    sources: list[Source] = field(default_factory=list)
    parent: Scope | None = None
    planner: Callable | None = None
    correlated: bool = False

    @property
    def width(self) -> int:
        return sum(len(s.columns) for s in self.sources)

    def add(self, alias: str, columns: list[tuple[str, str]], hidden=frozenset(), table=None):
        for source in self.sources:
            if source.alias == alias:
                raise SQLError(
                    "syntax",
                    f'table name "{alias}" specified more than once; give one of them an alias',
                )
        source = Source(alias, columns, self.width, frozenset(hidden), table)
        self.sources.append(source)
        return source

    def resolve(self, column: exp.Column) -> tuple[int, str, str, int]:
        """(row index, type, name, source number) of a column reference; the source number is
        OUTER (-1) for a column of an enclosing query (see `resolve_ref`)."""
        index, kind, name, number, depth = self.resolve_ref(column)
        return (index, kind, name, number if depth == 0 else OUTER)

    def resolve_ref(self, column: exp.Column) -> tuple[int, str, str, int, int]:
        """(row index, type, name, source number, depth) of a column reference: depth 0 for
        this query's own FROM items, d > 0 for the query d levels out (its row is
        `EvalContext.outer[d - 1]` when the expression runs)."""
        try:
            return (*self._resolve_here(column), 0)
        except SQLError as error:
            if self.parent is None or error.code not in ("undefined_column", "undefined_table"):
                raise
            try:
                found = self.parent.resolve_ref(column)
            except SQLError:
                raise error from None
            self.correlated = True
            return (*found[:4], found[4] + 1)

    def _resolve_here(self, column: exp.Column) -> tuple[int, str, str, int]:
        name = identifier_name(column.args.get("this"))
        qualifier = column.args.get("table")
        position = node_position(column)
        if column.args.get("catalog"):
            raise SQLError(
                "unsupported", "not supported: database-qualified column names", position
            )
        if column.args.get("db"):
            # schema.table.column names an unaliased table by its full name.
            full = f"{identifier_name(column.args['db'])}.{identifier_name(qualifier)}"
            for number, source in enumerate(self.sources):
                if source.alias == identifier_name(qualifier) and (source.table or source.alias) in (
                        full, full.removeprefix("public.")):   # public.t is t
                    for i, (column_name, kind) in enumerate(source.columns):
                        if column_name == name:
                            return source.offset + i, kind, name, number
            raise SQLError("undefined_column", f"column {full}.{name} does not exist", position)
        if qualifier is not None:
            alias = identifier_name(qualifier)
            for number, source in enumerate(self.sources):
                if source.alias == alias:
                    for i, (column_name, kind) in enumerate(source.columns):
                        if column_name == name:
                            return source.offset + i, kind, name, number
                    raise SQLError(
                        "undefined_column",
                        f'column {alias}.{name} does not exist; {alias} has columns '
                        f"{_column_list(source)}",
                        position,
                    )
            known = ", ".join(s.alias for s in self.sources) or "none"
            hint = ""
            if any(s.table == alias for s in self.sources):
                hint = " (the table has an alias here: use the alias)"
            raise SQLError(
                "undefined_table",
                f'missing FROM-clause entry for table "{alias}"{hint}; tables in scope: {known}',
                position,
            )
        found = []
        for number, source in enumerate(self.sources):
            for i, (column_name, kind) in enumerate(source.columns):
                if column_name == name:
                    found.append((source.offset + i, kind, name, number))
        if len(found) == 1:
            return found[0]
        if not found:
            if not self.sources:
                raise SQLError(
                    "undefined_column",
                    f'column "{name}" does not exist (there is no FROM clause here)', position,
                )
            columns = "; ".join(f"{s.alias}: {_column_list(s)}" for s in self.sources)
            raise SQLError(
                "undefined_column", f'column "{name}" does not exist; columns are {columns}',
                position,
            )
        raise SQLError(
            "undefined_column",
            f'column reference "{name}" is ambiguous; qualify it (e.g. '
            f"{self.sources[found[0][3]].alias}.{name})",
            position,
        )


OUTER = -1   # Scope.resolve's source number for a column of an enclosing query


def _column_list(source: Source) -> str:
    return ", ".join(n for n, _ in source.columns if n not in source.hidden) or "(none)"


# --- aggregates ---------------------------------------------------------------------------------

AGGREGATES = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg,
              exp.GroupConcat, exp.ArrayAgg, exp.LogicalAnd, exp.LogicalOr)
# The aggregates whose PostgreSQL name is not sqlglot's class name.
_AGGREGATE_NAMES = {exp.GroupConcat: "string_agg", exp.ArrayAgg: "array_agg",
                    exp.LogicalAnd: "bool_and", exp.LogicalOr: "bool_or"}
# A value of ARRAY(subquery), array_agg or a cast to an array type: a Python list. It is no
# column type: arrays are served only as far as the catalog queries of clients use them.
ARRAY = "ARRAY"


@dataclass
class AggSpec:
    kind: str  # count_star, count, sum, min, max, avg, string_agg, array_agg, bool_and, bool_or
    arg: Compiled | None
    distinct: bool
    node: exp.Expr
    separator: Compiled | None = None          # string_agg's
    order: list[tuple[Compiled, bool]] = field(default_factory=list)   # array_agg(x ORDER BY k [DESC])


@dataclass
class Grouping:
    """Post-aggregation compile state: rows there are ``(*group_keys, *aggregate_results)``."""

    keys: list[exp.Expr]
    key_columns: list[int | None]  # resolved row index when a key is a plain column
    key_compiled: list[Compiled]
    aggs: list[AggSpec] = field(default_factory=list)


def new_accumulator(spec: AggSpec) -> list:
    """Mutable state of one aggregate in one group: [count, value, distinct-set-or-None]."""
    return [0, None, set() if spec.distinct else None]


def accumulate(spec: AggSpec, state: list, row: Row, ctx: EvalContext) -> None:
    if spec.kind == "count_star":
        state[0] += 1
        return
    assert spec.arg is not None
    value = spec.arg.fn(row, ctx)
    if spec.kind in ("string_agg", "array_agg"):
        if value is None and spec.kind == "string_agg":
            return
        if state[1] is None:
            state[1] = []
        separator = spec.separator.fn(row, ctx) if spec.separator is not None else None
        state[1].append((value, [k.fn(row, ctx) for k, _ in spec.order], separator))
        state[0] += 1
        return
    if value is None:
        return
    seen = state[2]
    if seen is not None:
        marker = (type(value), value)
        if marker in seen:
            return
        seen.add(marker)
    state[0] += 1
    current = state[1]
    if spec.kind in ("sum", "avg"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SQLError(
                "datatype_mismatch",
                f"{spec.kind.upper()} needs INT or FLOAT values, got {T.value_type(value)}",
            )
        state[1] = value if current is None else current + value
    elif spec.kind in ("bool_and", "bool_or"):
        if not isinstance(value, bool):
            raise SQLError("datatype_mismatch", f"{spec.kind} needs BOOL values, got {T.value_type(value)}")
        state[1] = value if current is None else (current and value if spec.kind == "bool_and" else current or value)
    elif current is None:
        state[1] = value
    elif spec.kind == "min":
        if _compare(operator.lt, value, current):
            state[1] = value
    elif spec.kind == "max":
        if _compare(operator.gt, value, current):
            state[1] = value


def aggregate_result(spec: AggSpec, state: list) -> object:
    if spec.kind in ("count", "count_star"):
        return state[0]
    if spec.kind == "avg":
        return None if state[0] == 0 else state[1] / state[0]
    if spec.kind in ("string_agg", "array_agg"):
        items = state[1]
        if not items:
            return None
        for i, (_, desc) in reversed(list(enumerate(spec.order))):
            items = sorted(items, key=lambda item, i=i: (item[1][i] is None, item[1][i]), reverse=desc)
        if spec.kind == "array_agg":
            return [value for value, _, _ in items]
        out = items[0][0]
        for value, _, separator in items[1:]:
            out += (separator or "") + value
        return out
    return state[1]


# --- the compiler -------------------------------------------------------------------------------


def _mismatch(message: str, node: exp.Expr | None) -> SQLError:
    return SQLError("datatype_mismatch", message, node_position(node))


class Compiler:
    """Compiles sqlglot expressions against a `Scope`.

    With `grouping` set, compiles post-aggregation expressions (select list, HAVING, ORDER BY
    of a grouped query): group keys and aggregates become slots of the grouped row, and a bare
    column that is not a group key is an error.
    """

    def __init__(self, scope: Scope, grouping: Grouping | None = None, clause: str = ""):
        self.scope = scope
        self.grouping = grouping
        self.clause = clause  # for messages: "WHERE", "UPDATE SET", ...
        self._in_aggregate = False

    # entry points

    def compile(self, node: exp.Expr) -> Compiled:
        if self.grouping is not None and not self._in_aggregate:
            slot = self._group_slot(node)
            if slot is not None:
                return slot
        method = _DISPATCH.get(type(node))
        if method is None:
            raise SQLError(
                "unsupported", f"not supported: {type(node).__name__} expressions",
                node_position(node),
            )
        return method(self, node)

    def compile_condition(self, node: exp.Expr, clause: str) -> Compiled:
        compiled = self.compile(node)
        if compiled.type == T.UNKNOWN and compiled.literal:
            compiled = self.coerce(compiled, T.BOOL, node)
        if compiled.type == T.PARAM:
            compiled = self.coerce(compiled, T.BOOL, node)
        if compiled.type not in (T.BOOL, T.NULL):
            raise _mismatch(
                f"argument of {clause} must be type BOOL, not type {compiled.type}", node
            )
        return compiled

    def coerce(
        self, c: Compiled, to_type: str, node: exp.Expr | None, what: str = "",
        comparing: bool = False,
    ) -> Compiled:
        """`c` as `to_type` under implicit rules (see sql/types.py), or datatype_mismatch.

        `comparing`: `c` is compared with a `to_type` value rather than stored as one, so a
        parameter holding the other numeric type is taken as it is (``int_col = $1`` with
        $1 = 2.5 compares numerically, as a FLOAT literal would)."""
        if c.type == to_type or to_type in T.UNTYPED:
            return c
        if comparing and c.type == T.PARAM and to_type in T.NUMERIC_TYPES:
            fn = c.fn
            label = f"parameter ${c.param}"

            def numeric(row, ctx, fn=fn, to_type=to_type, label=label):
                value = fn(row, ctx)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return value
                return T.coerce_implicit(value, to_type, label)

            return Compiled(numeric, to_type, c.const, c.name, param=c.param)
        if c.type == T.NULL:
            return _literal(None, to_type, c.name)
        if c.type == T.UNKNOWN and c.literal:
            try:
                value = T.parse_text(c.value, to_type)  # type: ignore[arg-type]
            except SQLError as error:
                raise SQLError(error.code, error.message, node_position(node)) from None
            return _literal(value, to_type, c.name)
        if c.type in (T.UNKNOWN, T.PARAM):
            fn = c.fn
            label = what or (f"parameter ${c.param}" if c.param else "value")

            def coerced(row, ctx, fn=fn, to_type=to_type, label=label):
                return T.coerce_implicit(fn(row, ctx), to_type, label)

            return Compiled(coerced, to_type, c.const, c.name, param=c.param)
        if c.type == T.INT and to_type == T.FLOAT:
            fn = c.fn

            def widened(row, ctx, fn=fn):
                value = fn(row, ctx)
                return None if value is None else float(value)

            if c.literal:
                value = None if c.value is None else float(c.value)  # type: ignore[arg-type]
                return _literal(value, T.FLOAT, c.name)
            return Compiled(widened, T.FLOAT, c.const, c.name)
        raise _mismatch(
            f"{what or 'expression'} is of type {c.type} but {to_type} is expected; "
            f"cast it explicitly, e.g. CAST(... AS {to_type})",
            node,
        )

    # grouping

    def _group_slot(self, node: exp.Expr) -> Compiled | None:
        grouping = self.grouping
        assert grouping is not None
        for i, key in enumerate(grouping.keys):
            if node == key:
                return self._slot(i, grouping.key_compiled[i], node)
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
            index, _, _, _, depth = self.scope.resolve_ref(node)
            if depth:
                return None   # an enclosing query's column: a constant of this grouped query
            for i, key_index in enumerate(grouping.key_columns):
                if key_index == index:
                    return self._slot(i, grouping.key_compiled[i], node)
            name = identifier_name(node)
            raise SQLError(
                "syntax",
                f'column "{name}" must appear in the GROUP BY clause or be used in an '
                "aggregate function",
                node_position(node),
            )
        return None

    def _slot(self, i: int, like: Compiled, node: exp.Expr) -> Compiled:
        name = _output_name(node, like.name)
        return Compiled(lambda row, ctx, i=i: row[i], like.type, False, name)

    # leaves

    def _column(self, node: exp.Column) -> Compiled:
        if isinstance(node.this, exp.Star):
            raise SQLError(
                "syntax", f"{identifier_name(node.args.get('table'))}.* is only allowed in a "
                "select list", node_position(node),
            )
        index, kind, name, _, depth = self.scope.resolve_ref(node)
        if depth:
            # A correlated reference: the enclosing query's row, constant for this subquery run.
            return Compiled(lambda row, ctx, i=index, d=depth - 1: ctx.outer[d][i], kind, False, name)
        return Compiled(lambda row, ctx, i=index: row[i], kind, False, name)

    def _literal(self, node: exp.Literal) -> Compiled:
        text = node.this
        if node.is_string:
            return _literal(text, T.UNKNOWN)
        if re.fullmatch(r"[0-9]+", text):
            value = int(text)
            if value > (1 << 63) - 1:
                return _literal(float(value), T.FLOAT)
            return _literal(value, T.INT)
        try:
            return _literal(float(text), T.FLOAT)
        except ValueError:
            raise SQLError("syntax", f"invalid number {text!r}", node_position(node)) from None

    def _hex_string(self, node: exp.HexString) -> Compiled:
        # x'00ff' is a BYTES literal, as in CockroachDB (PostgreSQL reads it as a bit string).
        try:
            return _literal(bytes.fromhex(node.this), T.BYTES)
        except ValueError:
            raise SQLError("syntax", f"invalid hexadecimal literal x'{node.this}'",
                           node_position(node)) from None

    def _escape_string(self, node: exp.ByteString) -> Compiled:
        return _literal(node.this, T.UNKNOWN)  # E'...': escapes already resolved

    def _boolean(self, node: exp.Boolean) -> Compiled:
        return _literal(bool(node.this), T.BOOL, "bool")

    def _null(self, node: exp.Null) -> Compiled:
        return _literal(None, T.NULL)

    def _parameter(self, node: exp.Parameter) -> Compiled:
        number = int(node.this.this if isinstance(node.this, exp.Literal) else node.name)
        index = number - 1
        return Compiled(lambda row, ctx, i=index: ctx.params[i], T.PARAM, True, param=number)

    def _paren(self, node: exp.Paren) -> Compiled:
        inner = self.compile(node.this)
        return Compiled(inner.fn, inner.type, inner.const, inner.name, inner.literal, inner.value,
                        inner.param)

    def _var(self, node: exp.Var) -> Compiled:
        if node.name.upper() == "DEFAULT":
            raise SQLError(
                "syntax", "DEFAULT is only allowed as a whole value in INSERT ... VALUES",
                node_position(node),
            )
        raise SQLError("syntax", f"unexpected word {node.name!r}", node_position(node))

    # operators

    def _unify(
        self, a: Compiled, b: Compiled, na: exp.Expr, nb: exp.Expr
    ) -> tuple[Compiled, Compiled]:
        """Coerce an untyped side to the typed side's type; then check they compare."""
        if a.type in T.UNTYPED and b.type not in T.UNTYPED:
            a = self.coerce(a, b.type, na, comparing=True)
        elif b.type in T.UNTYPED and a.type not in T.UNTYPED:
            b = self.coerce(b, a.type, nb, comparing=True)
        if not T.comparable(a.type, b.type):
            raise _mismatch(
                f"cannot compare {a.type} with {b.type}; cast one side, e.g. CAST(... AS "
                f"{a.type})",
                nb,
            )
        return a, b

    def _comparison(self, node: exp.Expr) -> Compiled:
        if isinstance(node.expression, (exp.Any, exp.All)):
            return self._quantified(node)
        a = self.compile(node.this)
        b = self.compile(node.expression)
        a, b = self._unify(a, b, node.this, node.expression)
        op = _COMPARATORS[type(node)]
        fa, fb = a.fn, b.fn

        def compare(row, ctx):
            x = fa(row, ctx)
            if x is None:
                return None
            y = fb(row, ctx)
            if y is None:
                return None
            return _compare(op, x, y)

        return Compiled(compare, T.BOOL, a.const and b.const)

    def _null_safe(self, node: exp.Expr) -> Compiled:
        a = self.compile(node.this)
        b = self.compile(node.expression)
        a, b = self._unify(a, b, node.this, node.expression)
        want_equal = isinstance(node, exp.NullSafeEQ)
        fa, fb = a.fn, b.fn

        def distinct(row, ctx):
            x = fa(row, ctx)
            y = fb(row, ctx)
            if x is None or y is None:
                same = x is None and y is None
            else:
                same = _compare(operator.eq, x, y)
            return same if want_equal else not same

        return Compiled(distinct, T.BOOL, a.const and b.const)

    def _and(self, node: exp.Expr) -> Compiled:
        a = self.compile_condition(node.this, "AND")
        b = self.compile_condition(node.expression, "AND")
        fa, fb = a.fn, b.fn

        def conj(row, ctx):
            x = fa(row, ctx)
            if x is False:
                return False
            y = fb(row, ctx)
            if y is False:
                return False
            if x is None or y is None:
                return None
            return True

        return Compiled(conj, T.BOOL, a.const and b.const)

    def _or(self, node: exp.Expr) -> Compiled:
        a = self.compile_condition(node.this, "OR")
        b = self.compile_condition(node.expression, "OR")
        fa, fb = a.fn, b.fn

        def disj(row, ctx):
            x = fa(row, ctx)
            if x is True:
                return True
            y = fb(row, ctx)
            if y is True:
                return True
            if x is None or y is None:
                return None
            return False

        return Compiled(disj, T.BOOL, a.const and b.const)

    def _not(self, node: exp.Not) -> Compiled:
        a = self.compile_condition(node.this, "NOT")
        return _negated(a)

    def _is(self, node: exp.Is) -> Compiled:
        a = self.compile(node.this)
        target = node.expression
        fa = a.fn
        if isinstance(target, exp.Null):
            result = Compiled(lambda row, ctx: fa(row, ctx) is None, T.BOOL, a.const)
        elif isinstance(target, exp.Boolean):
            a = self.coerce(a, T.BOOL, node.this) if a.type in T.UNTYPED else a
            if a.type != T.BOOL:
                raise _mismatch(f"IS TRUE/FALSE needs a BOOL, not {a.type}", node.this)
            want = bool(target.this)
            fa = a.fn
            result = Compiled(lambda row, ctx: fa(row, ctx) is want, T.BOOL, a.const)
        else:
            raise SQLError(
                "unsupported", "not supported: IS with this operand", node_position(node)
            )
        if node.args.get("negate"):
            fr = result.fn
            return Compiled(lambda row, ctx: not fr(row, ctx), T.BOOL, result.const)
        return result

    def _in(self, node: exp.In) -> Compiled:
        if node.args.get("query") is not None:
            a = self.compile(node.this)
            a, elements = self._subquery_elements(a, node.this, node.args["query"])
            result = _quantified_fn(a, elements, operator.eq, True)
            return _negated(result) if node.args.get("negate") else result
        a = self.compile(node.this)
        compiled = [(self.compile(n), n) for n in node.expressions]
        if a.type in T.UNTYPED:
            typed = next((c for c, _ in compiled if c.type not in T.UNTYPED), None)
            if typed is not None:
                a = self.coerce(a, typed.type, node.this, comparing=True)
        items = [self._unify(a, c, node.this, n)[1] for c, n in compiled]
        fa = a.fn
        fns = [it.fn for it in items]
        literal_values = None
        if all(it.literal for it in items):
            literal_values = [it.value for it in items]

        def member(row, ctx):
            x = fa(row, ctx)
            if x is None:
                return None
            saw_null = False
            values = literal_values if literal_values is not None else (f(row, ctx) for f in fns)
            for y in values:
                if y is None:
                    saw_null = True
                elif _compare(operator.eq, x, y):
                    return True
            return None if saw_null else False

        result = Compiled(member, T.BOOL, a.const and all(it.const for it in items))
        return _negated(result) if node.args.get("negate") else result

    def _between(self, node: exp.Between) -> Compiled:
        if node.args.get("symmetric"):
            raise SQLError("unsupported", "not supported: BETWEEN SYMMETRIC", node_position(node))
        a = self.compile(node.this)
        low = self.compile(node.args["low"])
        high = self.compile(node.args["high"])
        a1, low = self._unify(a, low, node.this, node.args["low"])
        a2, high = self._unify(a1, high, node.this, node.args["high"])
        a = a2
        fa, fl, fh = a.fn, low.fn, high.fn

        def between(row, ctx):
            x = fa(row, ctx)
            lo = fl(row, ctx)
            hi = fh(row, ctx)
            first = None if x is None or lo is None else _compare(operator.ge, x, lo)
            if first is False:
                return False
            second = None if x is None or hi is None else _compare(operator.le, x, hi)
            if second is False:
                return False
            if first is None or second is None:
                return None
            return True

        result = Compiled(between, T.BOOL, a.const and low.const and high.const)
        return _negated(result) if node.args.get("negate") else result

    def _like(self, node: exp.Expr, escape: exp.Expr | None = None) -> Compiled:
        a = self.coerce_text(self.compile(node.this), node.this, "LIKE")
        pattern = self.coerce_text(self.compile(node.expression), node.expression, "LIKE")
        escape_char = "\\"
        if escape is not None:
            esc = self.compile(escape)
            if not (esc.literal and isinstance(esc.value, str) and len(esc.value) <= 1):
                raise SQLError(
                    "unsupported", "ESCAPE must be a literal of at most one character",
                    node_position(escape),
                )
            escape_char = esc.value  # type: ignore[assignment]
        flags = re.IGNORECASE if isinstance(node, exp.ILike) else 0
        fa, fp = a.fn, pattern.fn
        if pattern.literal and pattern.value is not None:
            compiled = _like_regex(pattern.value, escape_char, flags)  # type: ignore[arg-type]

            def like(row, ctx):
                x = fa(row, ctx)
                return None if x is None else compiled.fullmatch(x) is not None
        else:

            def like(row, ctx):
                x = fa(row, ctx)
                p = fp(row, ctx)
                if x is None or p is None:
                    return None
                return _like_regex(p, escape_char, flags).fullmatch(x) is not None

        result = Compiled(like, T.BOOL, a.const and pattern.const)
        return _negated(result) if node.args.get("negate") else result

    def _escape(self, node: exp.Escape) -> Compiled:
        inner = node.this
        if not isinstance(inner, (exp.Like, exp.ILike)):
            raise SQLError("unsupported", "not supported: ESCAPE here", node_position(node))
        return self._like(inner, node.expression)

    def coerce_text(self, c: Compiled, node: exp.Expr, what: str) -> Compiled:
        if c.type in T.UNTYPED:
            return self.coerce(c, T.TEXT, node)
        if c.type != T.TEXT:
            raise _mismatch(f"{what} needs TEXT, not {c.type}", node)
        return c

    def _arithmetic(self, node: exp.Expr) -> Compiled:
        a = self.compile(node.this)
        b = self.compile(node.expression)
        symbol = _ARITH_SYMBOLS[type(node)]
        for side, side_node in ((a, node.this), (b, node.expression)):
            if side.type not in T.NUMERIC_TYPES and side.type not in T.UNTYPED:
                raise _mismatch(
                    f"operator does not exist: {a.type} {symbol} {b.type} (arithmetic needs "
                    "INT or FLOAT)",
                    side_node,
                )
        param_side = a.type == T.PARAM or b.type == T.PARAM
        if a.type in T.UNTYPED and b.type in T.NUMERIC_TYPES:
            a = self.coerce(a, b.type, node.this, comparing=True)
        elif b.type in T.UNTYPED and a.type in T.NUMERIC_TYPES:
            b = self.coerce(b, a.type, node.expression, comparing=True)
        if a.type == T.UNKNOWN and a.literal:
            a = self.coerce(a, T.FLOAT if "." in str(a.value) else T.INT, node.this)
        if b.type == T.UNKNOWN and b.literal:
            b = self.coerce(b, T.FLOAT if "." in str(b.value) else T.INT, node.expression)
        if T.FLOAT in (a.type, b.type):
            kind = T.FLOAT
        elif a.type == T.INT and b.type == T.INT:
            # A parameter next to an INT may still hold a FLOAT: typed when it runs.
            kind = T.PARAM if param_side else T.INT
        elif T.PARAM in (a.type, b.type) or T.UNKNOWN in (a.type, b.type):
            kind = T.PARAM
        elif a.type == T.NULL and b.type == T.NULL:
            kind = T.INT
        else:
            kind = a.type if a.type != T.NULL else b.type
        op = _ARITH_FUNCS[type(node)]
        fa, fb = a.fn, b.fn

        def arith(row, ctx):
            x = fa(row, ctx)
            if x is None:
                return None
            y = fb(row, ctx)
            if y is None:
                return None
            return op(x, y)

        result = Compiled(arith, kind, a.const and b.const)
        if result.const and a.literal and b.literal:
            return self._fold(result, node)
        return result

    def _fold(self, c: Compiled, node: exp.Expr) -> Compiled:
        try:
            value = c.fn((), _NO_CONTEXT)
        except SQLError as error:
            raise SQLError(error.code, error.message, node_position(node)) from None
        return _literal(value, c.type, c.name)

    def _numeric_operand(self, a: Compiled, node: exp.Expr, what: str) -> Compiled:
        """An operand of a numeric function: a quoted literal is read as a number; a
        parameter stays runtime-typed; anything else must be INT or FLOAT."""
        if a.type == T.UNKNOWN:
            return self.coerce(a, T.FLOAT if "." in str(a.value) else T.INT, node)
        if a.type not in T.NUMERIC_TYPES and a.type not in T.UNTYPED:
            raise _mismatch(f"{what} needs INT or FLOAT, not {a.type}", node)
        return a

    def _neg(self, node: exp.Neg) -> Compiled:
        a = self._numeric_operand(self.compile(node.this), node.this, "unary minus")
        fa = a.fn

        def neg(row, ctx):
            x = fa(row, ctx)
            if x is None:
                return None
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise SQLError("datatype_mismatch", f"cannot negate a {T.value_type(x)} value")
            return _int_checked(-x) if isinstance(x, int) else -x

        result = Compiled(neg, a.type if a.type != T.NULL else T.INT, a.const)
        if a.literal:
            return self._fold(result, node)
        return result

    def _dpipe(self, node: exp.DPipe) -> Compiled:
        a = self.compile(node.this)
        b = self.compile(node.expression)
        if a.type == T.BYTES and b.type in (T.BYTES, T.NULL):
            kind = T.BYTES
        elif b.type == T.BYTES and a.type in (T.BYTES, T.NULL):
            kind = T.BYTES
        else:
            kind = T.TEXT
        if kind == T.BYTES:
            fa, fb = a.fn, b.fn
        else:
            fa = _as_text(a)
            fb = _as_text(b)

        def concat(row, ctx):
            x = fa(row, ctx)
            if x is None:
                return None
            y = fb(row, ctx)
            if y is None:
                return None
            return x + y

        return Compiled(concat, kind, a.const and b.const)

    # conditionals and functions

    def _common_type(
        self, parts: list[tuple[Compiled, exp.Expr]], what: str
    ) -> tuple[list[Compiled], str | None]:
        """The parts coerced to one result type, and that type (None: all NULL)."""
        typed = [c.type for c, _ in parts if c.type not in T.UNTYPED]
        if not typed:
            target = T.TEXT if any(c.type == T.UNKNOWN for c, _ in parts) else None
            if target is None:
                untyped = T.PARAM if any(c.type == T.PARAM for c, _ in parts) else None
                return [c for c, _ in parts], untyped
        elif all(t in T.NUMERIC_TYPES for t in typed) and T.FLOAT in typed:
            target = T.FLOAT
        else:
            target = typed[0]
            for (c, n) in parts:
                if c.type not in T.UNTYPED and c.type != target:
                    raise _mismatch(
                        f"{what} types {target} and {c.type} cannot be matched", n
                    )
        if target == T.INT and any(c.type == T.PARAM for c, _ in parts):
            # A parameter beside INT branches may hold a FLOAT (typed by its value, as a
            # driver-typed parameter is in PostgreSQL): leave the result typed at run time.
            return [
                self.coerce(c, target, n, comparing=True) if c.type == T.PARAM
                else c if c.type == T.INT else self.coerce(c, target, n)
                for c, n in parts
            ], T.PARAM
        return [self.coerce(c, target, n) for c, n in parts], target

    def _case(self, node: exp.Case) -> Compiled:
        subject = node.args.get("this")
        conditions = []
        results = []
        for branch in node.args.get("ifs") or []:
            if subject is not None:
                s = self.compile(subject)
                w = self.compile(branch.this)
                s, w = self._unify(s, w, subject, branch.this)
                fs, fw = s.fn, w.fn

                def when(row, ctx, fs=fs, fw=fw):
                    x = fs(row, ctx)
                    y = fw(row, ctx)
                    return None if x is None or y is None else _compare(operator.eq, x, y)

                conditions.append(when)
            else:
                conditions.append(self.compile_condition(branch.this, "CASE WHEN").fn)
            results.append((self.compile(branch.args["true"]), branch.args["true"]))
        default = node.args.get("default")
        if default is not None:
            results.append((self.compile(default), default))
        unified, target = self._common_type(results, "CASE")
        values = [c.fn for c in unified[: len(conditions)]]
        default_fn = unified[-1].fn if default is not None else (lambda row, ctx: None)
        kind = target or T.NULL
        pairs = list(zip(conditions, values))

        def case(row, ctx):
            for cond, value in pairs:
                if cond(row, ctx) is True:
                    return value(row, ctx)
            return default_fn(row, ctx)

        return Compiled(case, kind if kind != T.UNKNOWN else T.TEXT,
                        all(c.const for c in unified), "case")

    def _coalesce(self, node: exp.Coalesce) -> Compiled:
        parts = [node.this, *(node.expressions or [])]
        unified, target = self._common_type([(self.compile(p), p) for p in parts], "COALESCE")
        fns = [c.fn for c in unified]
        kind = target or T.NULL

        def coalesce(row, ctx):
            for fn in fns:
                value = fn(row, ctx)
                if value is not None:
                    return value
            return None

        return Compiled(coalesce, kind, all(c.const for c in unified), "coalesce")

    def _nullif(self, node: exp.Nullif) -> Compiled:
        a = self.compile(node.this)
        b = self.compile(node.expression)
        a, b = self._unify(a, b, node.this, node.expression)
        fa, fb = a.fn, b.fn

        def nullif(row, ctx):
            x = fa(row, ctx)
            y = fb(row, ctx)
            if x is not None and y is not None and _compare(operator.eq, x, y):
                return None
            return x

        return Compiled(nullif, a.type, a.const and b.const, "nullif")

    def _text_function(self, node: exp.Expr) -> Compiled:
        a = self.coerce_text(self.compile(node.this), node.this, type(node).__name__.upper())
        convert = str.lower if isinstance(node, exp.Lower) else str.upper
        fa = a.fn

        def text_function(row, ctx):
            x = fa(row, ctx)
            return None if x is None else convert(x)

        return Compiled(text_function, T.TEXT, a.const, type(node).__name__.lower())

    def _length(self, node: exp.Length) -> Compiled:
        a = self.compile(node.this)
        if a.type in T.UNTYPED:
            a = self.coerce(a, T.TEXT, node.this)
        if a.type not in (T.TEXT, T.BYTES):
            raise _mismatch(f"LENGTH needs TEXT or BYTES, not {a.type}", node.this)
        fa = a.fn
        return Compiled(
            lambda row, ctx: None if (x := fa(row, ctx)) is None else len(x), T.INT, a.const,
            "length",
        )

    def _abs(self, node: exp.Abs) -> Compiled:
        a = self._numeric_operand(self.compile(node.this), node.this, "ABS")
        fa = a.fn

        def absolute(row, ctx):
            x = fa(row, ctx)
            if x is None:
                return None
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise SQLError("datatype_mismatch", f"ABS needs a number, not {T.value_type(x)}")
            return _int_checked(abs(x)) if isinstance(x, int) else abs(x)

        return Compiled(absolute, a.type if a.type != T.NULL else T.INT, a.const, "abs")

    def _cast(self, node: exp.Cast) -> Compiled:
        hook = CAST_HOOKS.get(cast_type_name(node.args["to"]))
        if hook is not None:
            return hook(self, self.compile(node.this), node)
        from sql.pg_functions import compile_pg_cast, handles_cast   # it imports this module

        if handles_cast(node):   # OID types (::regclass), name, "char", smallint
            return compile_pg_cast(self, node)
        to = node.args["to"]
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.ARRAY:
            return self._cast_to_array(node)
        if isinstance(node.args["to"], exp.ObjectIdentifier):
            raise SQLError("unsupported", f"not supported: type {cast_type_name(node.args['to'])}",
                           node_position(node))
        to_type = column_type(node.args["to"])
        a = self.compile(node.this)
        if not T.castable(a.type, to_type):
            raise _mismatch(f"cannot cast {a.type} to {to_type}", node)
        fa = a.fn

        def cast(row, ctx):
            return T.cast_value(fa(row, ctx), to_type)

        name = a.name if isinstance(node.this, exp.Column) else to_type.lower()
        result = Compiled(cast, to_type, a.const, name)
        if a.literal:
            return self._fold(result, node)
        return result

    # subqueries, ANY / ALL, regular expressions

    def _plan_subquery(self, node: exp.Expr):
        """The plan of a subquery (`node`: exp.Subquery or the SELECT / UNION inside one),
        planned by the scope's planner with this scope as its parent."""
        query = node.this if isinstance(node, exp.Subquery) else node
        planner = self.scope.planner
        if planner is None:
            raise SQLError("unsupported", f"not supported: subqueries in {self.clause or 'this clause'}",
                           node_position(node))
        plan = planner(query, self.scope)
        if plan.correlated and self.grouping is not None:
            raise SQLError("unsupported", "not supported: a subquery that reads the columns of a grouped "
                           f"query, in {self.clause or 'the select list'}; group in a derived table instead",
                           node_position(node))
        return plan

    def _subquery(self, node: exp.Subquery) -> Compiled:
        """A scalar subquery: its one row's one value, NULL with no row, 21000 with more."""
        plan = self._plan_subquery(node)
        if len(plan.outputs) != 1:
            raise SQLError("syntax", "subquery must return only one column", node_position(node))
        rows = _query_rows(plan)

        def scalar(row, ctx):
            found = rows(row, ctx)
            if len(found) > 1:
                raise SQLError("cardinality_violation",
                               "more than one row returned by a subquery used as an expression")
            return found[0][0] if found else None

        kind = plan.outputs[0].type
        return Compiled(scalar, T.TEXT if kind == T.UNKNOWN else kind, False, plan.columns[0])

    def _exists(self, node: exp.Exists) -> Compiled:
        rows = _query_rows(self._plan_subquery(node.this))
        return Compiled(lambda row, ctx: len(rows(row, ctx)) > 0, T.BOOL, False, "exists")

    def _subquery_elements(self, a: Compiled, a_node: exp.Expr, query: exp.Expr):
        """`a` typed against a one-column subquery, and fn(row, ctx) -> its values."""
        plan = self._plan_subquery(query)
        if len(plan.outputs) != 1:
            raise SQLError("syntax", "subquery has too many columns", node_position(query))
        kind = plan.outputs[0].type
        if a.type in T.UNTYPED and kind not in T.UNTYPED:
            a = self.coerce(a, kind, a_node, comparing=True)
        elif kind not in T.UNTYPED and not T.comparable(a.type, kind):
            raise _mismatch(f"cannot compare {a.type} with {kind} (the subquery's column); cast one side",
                            query)
        rows = _query_rows(plan)
        target = a.type

        def elements(row, ctx):
            return [_element_as(r[0], target) for r in rows(row, ctx)]

        return a, elements

    def _quantified(self, node: exp.Expr) -> Compiled:
        """``a op ANY (...)`` / ``a op ALL (...)`` over ``ARRAY[...]``, a subquery, or an array
        value (a parameter bound to a list, or PostgreSQL's array text ``'{a,b}'``)."""
        quantifier = node.expression
        op = _COMPARATORS[type(node)]
        inner = quantifier.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Array) and len(inner.expressions) == 1 and isinstance(
                inner.expressions[0], (exp.Select, exp.Union)):
            inner = inner.expressions[0]   # ANY (ARRAY(SELECT ...)) is ANY (SELECT ...)
        a = self.compile(node.this)
        if isinstance(inner, (exp.Subquery, exp.Select, exp.Union)):
            a, elements = self._subquery_elements(a, node.this, inner)
        elif isinstance(inner, exp.Array):
            compiled = [(self.compile(n), n) for n in inner.expressions]
            if a.type in T.UNTYPED:
                typed = next((c for c, _ in compiled if c.type not in T.UNTYPED), None)
                if typed is not None:
                    a = self.coerce(a, typed.type, node.this, comparing=True)
            fns = [self._unify(a, c, node.this, n)[1].fn for c, n in compiled]

            def elements(row, ctx, fns=fns):
                return [f(row, ctx) for f in fns]
        else:
            value = self.compile(inner)
            if value.type not in T.UNTYPED and value.type not in (T.TEXT, ARRAY):
                raise _mismatch(f"op ANY/ALL (array) needs an array, not {value.type}", inner)
            fv = value.fn
            target = a.type

            def elements(row, ctx, fv=fv, target=target):
                found = fv(row, ctx)
                if found is None:
                    return None
                if isinstance(found, str):
                    found = parse_array_text(found)
                if not isinstance(found, (list, tuple)):
                    raise SQLError("datatype_mismatch", f"ANY/ALL needs an array, got {T.value_type(found)}")
                return [_element_as(v, target) for v in found]
        return _quantified_fn(a, elements, op, isinstance(quantifier, exp.Any))

    def _array(self, node: exp.Array) -> Compiled:
        """``ARRAY(SELECT ...)``: the subquery's one column as a list (ARRAY[...] itself is
        served only as the list of ANY / ALL)."""
        if len(node.expressions) != 1 or not isinstance(node.expressions[0], (exp.Select, exp.Union)):
            raise SQLError("unsupported", "not supported: arrays other than ARRAY(SELECT ...) and the list of "
                           "x = ANY(ARRAY[...])", node_position(node))
        query = node.expressions[0]
        plan = self._plan_subquery(query)
        if len(plan.outputs) != 1:
            raise SQLError("syntax", "subquery must return only one column", node_position(query))
        rows = _query_rows(plan)
        return Compiled(lambda row, ctx: [r[0] for r in rows(row, ctx)], ARRAY, False, "array")

    def array_operand(self, node: exp.Expr) -> Compiled:
        """`node` compiled as an array: fn(row, ctx) -> list or None (sql/plan.py's
        set-returning functions)."""
        return self._array_value(node)

    def _array_value(self, node: exp.Expr) -> Compiled:
        """An array operand: ARRAY-typed, or text in PostgreSQL's array form ``{a,b}``."""
        a = self.compile(node)
        if a.type not in (ARRAY, T.TEXT) and a.type not in T.UNTYPED:
            raise _mismatch(f"an array is expected, not {a.type}", node)
        fa = a.fn

        def value(row, ctx):
            found = fa(row, ctx)
            return parse_array_text(found) if isinstance(found, str) else found

        return Compiled(value, ARRAY, a.const)

    def _array_to_string(self, node: exp.ArrayToString) -> Compiled:
        arr = self._array_value(node.this).fn
        separator = self.coerce_text(self.compile(node.expression), node.expression, "array_to_string").fn

        def joined(row, ctx):
            items, sep = arr(row, ctx), separator(row, ctx)
            if items is None or sep is None:
                return None
            return sep.join(v if isinstance(v, str) else T.format_text(v, T.value_type(v))
                            for v in items if v is not None)

        return Compiled(joined, T.TEXT, False, "array_to_string")

    def _array_upper(self, node: ArrayUpper) -> Compiled:
        arr = self._array_value(node.this).fn
        dim = self._numeric_operand(self.compile(node.expression), node.expression, "array_upper").fn

        def upper(row, ctx):
            items, d = arr(row, ctx), dim(row, ctx)
            return len(items) if items and d == 1 else None

        return Compiled(upper, T.INT, False, "array_upper")

    def _bracket(self, node: exp.Bracket) -> Compiled:
        """``arr[i]``: the i-th element (from 1), NULL outside the array."""
        if len(node.expressions) != 1:
            raise SQLError("unsupported", "not supported: slices and multi-dimensional subscripts",
                           node_position(node))
        arr = self._array_value(node.this).fn
        index_node = node.expressions[0]
        index = self._numeric_operand(self.compile(index_node), index_node, "subscript")
        fi = index.fn
        if isinstance(index_node, exp.Literal) and not index_node.is_string:
            # sqlglot stores a literal subscript 0-based (PostgreSQL's 1 is written 0), any
            # other expression as written.
            fi = (lambda f: lambda row, ctx: None if (i := f(row, ctx)) is None else i + 1)(index.fn)

        def element(row, ctx):
            items, i = arr(row, ctx), fi(row, ctx)
            if items is None or i is None or not 1 <= i <= len(items):
                return None
            return items[i - 1]

        return Compiled(element, T.PARAM, False)   # typed by its value, like a parameter

    def _regex(self, node: exp.Expr) -> Compiled:
        """``a ~ pattern`` (RegexpLike) and ``a ~* pattern`` (RegexpILike): a match anywhere in
        `a`, as PostgreSQL's POSIX regular expressions, with Python's re syntax."""
        a = self.coerce_text(self.compile(node.this), node.this, "~")
        pattern = self.coerce_text(self.compile(node.expression), node.expression, "~")
        flags = re.IGNORECASE if isinstance(node, exp.RegexpILike) else 0
        fa, fp = a.fn, pattern.fn
        if pattern.literal and pattern.value is not None:
            try:
                _regex_compiled(pattern.value, flags)
            except SQLError as error:
                raise SQLError(error.code, error.message, node_position(node.expression)) from None

        def matches(row, ctx):
            x = fa(row, ctx)
            p = fp(row, ctx)
            if x is None or p is None:
                return None
            return _regex_compiled(p, flags).search(x) is not None

        return Compiled(matches, T.BOOL, a.const and pattern.const)

    def _cast_to_array(self, node: exp.Cast) -> Compiled:
        """``x::int2[]``: an array (or its text form) with each element read as the element type."""
        element_type = column_type(node.args["to"].expressions[0])
        arr = self._array_value(node.this).fn

        def cast(row, ctx):
            items = arr(row, ctx)
            if items is None:
                return None
            return [v if v is None else T.cast_value(v, element_type) if not isinstance(v, str)
                    else T.parse_text(v, element_type) for v in items]

        return Compiled(cast, ARRAY, False, "array")

    def _current_timestamp(self, node: exp.Expr) -> Compiled:
        # Headed as written, as PostgreSQL does: "now" for now(), else "current_timestamp".
        name = node.meta.get("output_name", "current_timestamp")
        return Compiled(lambda row, ctx: ctx.now, T.TIMESTAMP, True, name)

    def _anonymous(self, node: exp.Anonymous) -> Compiled:
        name = str(node.this).lower()
        from sql.pg_functions import PG_FUNCTIONS   # it imports this module

        if name in PG_FUNCTIONS:
            return _pg_function(self, node)
        if node.expressions:
            raise SQLError("syntax", f"{name}() takes no arguments", node_position(node))
        if name == "now":
            return Compiled(self._current_timestamp(node).fn, T.TIMESTAMP, True, "now")
        if name == "unique_rowid":
            return Compiled(lambda row, ctx: ctx.new_rowid(), T.INT, True, "unique_rowid")
        raise SQLError("unsupported", f"not supported: function {name}()", node_position(node))

    def _aggregate(self, node: exp.Expr) -> Compiled:
        name = _AGGREGATE_NAMES.get(type(node), type(node).__name__.lower())
        if self._in_aggregate:
            raise SQLError(
                "syntax", "aggregate function calls cannot be nested", node_position(node)
            )
        if self.grouping is None:
            where = f" in {self.clause}" if self.clause else " here"
            raise SQLError(
                "syntax", f"aggregate functions are not allowed{where}", node_position(node)
            )
        arg_node = node.this
        distinct = False
        order_node = None
        if isinstance(arg_node, exp.Order):   # array_agg(x ORDER BY k): sqlglot wraps x
            order_node, arg_node = arg_node, arg_node.this
        if isinstance(arg_node, exp.Distinct):
            if len(arg_node.expressions) != 1:
                raise SQLError(
                    "unsupported", f"{name.upper()}(DISTINCT ...) takes one argument",
                    node_position(node),
                )
            distinct = True
            arg_node = arg_node.expressions[0]
        if isinstance(node, exp.Count) and (arg_node is None or isinstance(arg_node, exp.Star)):
            spec = AggSpec("count_star", None, False, node)
            kind = T.INT
        else:
            inner = Compiler(self.scope, None, f"{name.upper()}()")
            inner._in_aggregate = True
            arg = inner.compile(arg_node)
            if arg.type == T.UNKNOWN:
                arg = self.coerce(arg, T.TEXT, arg_node)
            if isinstance(node, exp.Count):
                kind = T.INT
            elif isinstance(node, (exp.Sum, exp.Avg)):
                if arg.type not in T.NUMERIC_TYPES and arg.type not in (T.PARAM, T.NULL):
                    raise _mismatch(f"{name.upper()} needs INT or FLOAT, not {arg.type}", arg_node)
                kind = T.FLOAT if isinstance(node, exp.Avg) else arg.type
            elif isinstance(node, exp.GroupConcat):
                arg = self.coerce_text(arg, arg_node, "string_agg")
                kind = T.TEXT
            elif isinstance(node, exp.ArrayAgg):
                kind = ARRAY
            elif isinstance(node, (exp.LogicalAnd, exp.LogicalOr)):
                if arg.type not in (T.BOOL, T.NULL, T.PARAM):
                    raise _mismatch(f"{name} needs BOOL, not {arg.type}", arg_node)
                kind = T.BOOL
            else:
                kind = arg.type
            spec = AggSpec(name, arg, distinct, node)
            if isinstance(node, exp.GroupConcat):
                separator = node.args.get("separator")
                if separator is None:
                    raise SQLError("syntax", "string_agg takes a separator: string_agg(x, ', ')",
                                   node_position(node))
                spec.separator = self.coerce_text(inner.compile(separator), separator, "string_agg")
            if order_node is not None:
                if not isinstance(node, (exp.ArrayAgg, exp.GroupConcat)):
                    raise SQLError("unsupported", f"not supported: ORDER BY inside {name}()",
                                   node_position(node))
                spec.order = [(inner.compile(o.this), bool(o.args.get("desc"))) for o in order_node.expressions]
        grouping = self.grouping
        assert grouping is not None
        for i, existing in enumerate(grouping.aggs):
            if existing.node == node:
                slot = len(grouping.keys) + i
                break
        else:
            grouping.aggs.append(spec)
            slot = len(grouping.keys) + len(grouping.aggs) - 1
        return Compiled(lambda row, ctx, i=slot: row[i], kind if kind != T.NULL else T.INT,
                        False, name)


def _query_rows(plan) -> Callable[[Row, EvalContext], list]:
    """fn(row, ctx) -> the rows of a subquery's `plan` (correlated: run for each outer row;
    else run once per statement and kept in `ctx.cache`)."""
    key = id(plan)
    correlated = plan.correlated

    def rows(row, ctx):
        if ctx.run_query is None:
            raise SQLError("unsupported", "not supported: a subquery here")
        if correlated:
            return ctx.run_query(plan, row, ctx)
        found = ctx.cache.get(key)
        if found is None:
            found = ctx.cache[key] = ctx.run_query(plan, row, ctx)
        return found

    return rows


def _element_as(value: object, kind: str) -> object:
    """An element of an ANY/ALL list or IN subquery compared with a `kind` value: text (an
    array's text form, an untyped subquery column) is read as `kind`; anything else as it is."""
    if isinstance(value, str) and kind not in T.UNTYPED and kind != T.TEXT:
        return T.parse_text(value, kind)
    return value


def _quantified_fn(a: Compiled, elements, op, any_: bool) -> Compiled:
    """``a op ANY(elements)`` (`any_`) or ``a op ALL(elements)``, three-valued: ANY is TRUE if
    one comparison is, else NULL if one is NULL, else FALSE (FALSE for no elements); ALL is
    FALSE if one is, else NULL if one is NULL, else TRUE (TRUE for no elements)."""
    fa = a.fn

    def quantified(row, ctx):
        values = elements(row, ctx)
        if values is None:
            return None
        x = fa(row, ctx)
        saw_null = False
        for y in values:
            if x is None or y is None:
                saw_null = True
                continue
            if _compare(op, x, y) is any_:
                return any_
        return None if saw_null else not any_

    return Compiled(quantified, T.BOOL, False)


_VECTOR_TEXT = re.compile(r"-?\d+(?: +-?\d+)*")


def parse_array_text(text: str) -> list:
    """PostgreSQL's text form of a one-dimensional array, ``{a,"b c",NULL}``, as a list of
    str (None for an unquoted NULL); also the form of the catalog's ``int2vector`` and
    ``oidvector`` columns (``indkey``: ``1 2``), numbers separated by spaces."""
    body = text.strip()
    if _VECTOR_TEXT.fullmatch(body):
        return body.split()
    if not (body.startswith("{") and body.endswith("}")):
        raise SQLError("datatype_mismatch", f'malformed array literal: "{text}" (expected {{a,b,...}})')
    body = body[1:-1]
    items: list = []
    if not body.strip():
        return items
    i, n = 0, len(body)
    while i <= n:
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] == '"':
            i += 1
            out = []
            while i < n and body[i] != '"':
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(body[i])
                i += 1
            i += 1
            items.append("".join(out))
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            word = body[i:j].strip()
            if "{" in word:
                raise SQLError("unsupported", "not supported: arrays of arrays")
            items.append(None if word.upper() == "NULL" else word)
            i = j
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] != ",":
            raise SQLError("datatype_mismatch", f'malformed array literal: "{text}"')
        i += 1
    return items


@lru_cache(maxsize=256)
def _regex_compiled(pattern: str, flags: int) -> re.Pattern:
    try:
        return re.compile(pattern, flags)
    except re.error as error:
        raise SQLError("invalid_regular_expression", f"invalid regular expression: {error}") from None


# CAST(x AS name) for type names outside our column types (regclass, oid, regtype, name, ...):
# a module that serves such a type registers `CAST_HOOKS["regclass"] = fn`, where
# fn(compiler, compiled_operand, cast_node) -> Compiled. The key is `cast_type_name` of the
# target: the lower-case bare name, without a pg_catalog. schema.
CAST_HOOKS: dict[str, Callable[["Compiler", Compiled, exp.Cast], Compiled]] = {}


def cast_type_name(target: exp.Expr) -> str:
    """The lower-case name of a CAST target: ``regclass``, ``oid``, ``text``, ``int``..."""
    if isinstance(target, exp.ObjectIdentifier):
        return str(target.name).lower()
    if isinstance(target, exp.DataType):
        if target.this == exp.DataType.Type.USERDEFINED:
            kind = target.args.get("kind")
            return (identifier_name(kind) if isinstance(kind, exp.Expr) else str(kind or "")).lower()
        return str(target.this.name if hasattr(target.this, "name") else target.this).lower()
    return str(target.name).lower()


def _negated(c: Compiled) -> Compiled:
    fa = c.fn

    def negate(row, ctx):
        x = fa(row, ctx)
        return None if x is None else not x

    return Compiled(negate, T.BOOL, c.const)


def _as_text(c: Compiled) -> Fn:
    fn = c.fn
    if c.type in (T.TEXT, T.UNKNOWN, T.NULL):
        return fn

    def to_text(row, ctx):
        value = fn(row, ctx)
        return None if value is None else T.format_text(value, T.value_type(value))

    return to_text


def _compare(op, x, y) -> bool:
    if isinstance(x, bool) != isinstance(y, bool):
        raise SQLError(
            "datatype_mismatch",
            f"cannot compare {T.value_type(x)} with {T.value_type(y)}; cast one side",
        )
    try:
        return op(x, y)
    except TypeError:
        raise SQLError(
            "datatype_mismatch",
            f"cannot compare {T.value_type(x)} with {T.value_type(y)}; cast one side",
        ) from None


def _int_checked(value: int) -> int:
    if -(1 << 63) <= value <= (1 << 63) - 1:
        return value
    raise SQLError("datatype_mismatch", "INT out of range (64-bit overflow); use FLOAT")


def _numbers(x, y, symbol: str) -> None:
    for v in (x, y):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SQLError(
                "datatype_mismatch",
                f"operator does not exist: {T.value_type(x)} {symbol} {T.value_type(y)}",
            )


def _add(x, y):
    _numbers(x, y, "+")
    r = x + y
    return _int_checked(r) if isinstance(r, int) else r


def _sub(x, y):
    _numbers(x, y, "-")
    r = x - y
    return _int_checked(r) if isinstance(r, int) else r


def _mul(x, y):
    _numbers(x, y, "*")
    r = x * y
    return _int_checked(r) if isinstance(r, int) else r


def _div(x, y):
    _numbers(x, y, "/")
    if y == 0:
        raise SQLError("division_by_zero", "division by zero")
    if isinstance(x, int) and isinstance(y, int):
        q = abs(x) // abs(y)
        return _int_checked(q if (x >= 0) == (y > 0) else -q)
    return x / y


def _mod(x, y):
    _numbers(x, y, "%")
    if y == 0:
        raise SQLError("division_by_zero", "division by zero")
    if isinstance(x, int) and isinstance(y, int):
        r = abs(x) % abs(y)
        return r if x >= 0 else -r
    return math.fmod(x, y)


_ARITH_FUNCS = {exp.Add: _add, exp.Sub: _sub, exp.Mul: _mul, exp.Div: _div, exp.Mod: _mod}
_ARITH_SYMBOLS = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}
_COMPARATORS = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
}


@lru_cache(maxsize=256)
def _like_regex(pattern: str, escape: str, flags: int) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escape and ch == escape:
            i += 1
            if i >= len(pattern):
                raise SQLError(
                    "syntax", "LIKE pattern must not end with the escape character"
                )
            out.append(re.escape(pattern[i]))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), flags | re.DOTALL)


_NO_CONTEXT = EvalContext((), None, lambda: 0)

_DISPATCH: dict[type, Callable[[Compiler, exp.Expr], Compiled]] = {
    exp.Column: Compiler._column,
    exp.Literal: Compiler._literal,
    exp.Boolean: Compiler._boolean,
    exp.HexString: Compiler._hex_string,
    exp.ByteString: Compiler._escape_string,
    exp.Null: Compiler._null,
    exp.Parameter: Compiler._parameter,
    exp.Paren: Compiler._paren,
    exp.Var: Compiler._var,
    exp.EQ: Compiler._comparison,
    exp.NEQ: Compiler._comparison,
    exp.LT: Compiler._comparison,
    exp.LTE: Compiler._comparison,
    exp.GT: Compiler._comparison,
    exp.GTE: Compiler._comparison,
    exp.NullSafeEQ: Compiler._null_safe,
    exp.NullSafeNEQ: Compiler._null_safe,
    exp.And: Compiler._and,
    exp.Or: Compiler._or,
    exp.Not: Compiler._not,
    exp.Is: Compiler._is,
    exp.In: Compiler._in,
    exp.Between: Compiler._between,
    exp.Like: Compiler._like,
    exp.ILike: Compiler._like,
    exp.Escape: Compiler._escape,
    exp.Add: Compiler._arithmetic,
    exp.Sub: Compiler._arithmetic,
    exp.Mul: Compiler._arithmetic,
    exp.Div: Compiler._arithmetic,
    exp.Mod: Compiler._arithmetic,
    exp.Neg: Compiler._neg,
    exp.DPipe: Compiler._dpipe,
    exp.Case: Compiler._case,
    exp.Coalesce: Compiler._coalesce,
    exp.Nullif: Compiler._nullif,
    exp.Lower: Compiler._text_function,
    exp.Upper: Compiler._text_function,
    exp.Length: Compiler._length,
    exp.Abs: Compiler._abs,
    exp.Cast: Compiler._cast,
    exp.CurrentTimestamp: Compiler._current_timestamp,
    exp.Anonymous: Compiler._anonymous,
    exp.Count: Compiler._aggregate,
    exp.Sum: Compiler._aggregate,
    exp.Min: Compiler._aggregate,
    exp.Max: Compiler._aggregate,
    exp.Avg: Compiler._aggregate,
}


def _pg_function(compiler: Compiler, node: exp.Expr) -> Compiled:
    """The PostgreSQL catalog functions (sql/pg_functions.py), also as ``pg_catalog.f(...)``."""
    from sql.pg_functions import compile_pg_function

    return compile_pg_function(compiler, node)


for _kind in (exp.Dot, *PG_FUNCTION_NODES):
    _DISPATCH[_kind] = _pg_function


# Subqueries, arrays, regular expressions and the aggregates the catalog queries of clients use.
_DISPATCH.update({
    exp.Subquery: Compiler._subquery,
    exp.Exists: Compiler._exists,
    exp.Array: Compiler._array,
    exp.ArrayToString: Compiler._array_to_string,
    ArrayUpper: Compiler._array_upper,
    exp.Bracket: Compiler._bracket,
    exp.RegexpLike: Compiler._regex,
    exp.RegexpILike: Compiler._regex,
    exp.GroupConcat: Compiler._aggregate,
    exp.ArrayAgg: Compiler._aggregate,
    exp.LogicalAnd: Compiler._aggregate,
    exp.LogicalOr: Compiler._aggregate,
})


# --- names and types of the syntax --------------------------------------------------------------

_TYPE_NAMES = {
    "INT": T.INT,
    "BIGINT": T.INT,
    "SMALLINT": T.INT,
    "FLOAT": T.FLOAT,
    "DOUBLE": T.FLOAT,
    "TEXT": T.TEXT,
    "VARCHAR": T.TEXT,
    "BOOLEAN": T.BOOL,
    "VARBINARY": T.BYTES,
    "TIMESTAMP": T.TIMESTAMP,
}


def column_type(datatype: exp.Expr) -> str:
    """Our type for a type name in CREATE TABLE or CAST; unsupported names are errors."""
    if isinstance(datatype, exp.ObjectIdentifier):
        raise SQLError("unsupported", f"not supported: type {str(datatype.name).lower()}",
                       node_position(datatype))
    assert isinstance(datatype, exp.DataType), datatype
    kind = datatype.this.name if hasattr(datatype.this, "name") else str(datatype.this)
    kind = kind.upper()
    if kind == "USERDEFINED":
        custom = str(datatype.args.get("kind") or "").upper()
        if custom in ("BYTES",):
            return T.BYTES
        if custom in ("STRING",):
            return T.TEXT
        kind = custom or kind
    elif datatype.expressions and kind not in ("VARCHAR",):   # VARCHAR(n) is TEXT: no length check
        raise SQLError(
            "unsupported",
            f"not supported: type parameters ({datatype.sql(dialect='postgres')}); use "
            f"{_TYPE_NAMES.get(kind, kind)} without a length or precision",
            node_position(datatype),
        )
    if kind in _TYPE_NAMES:
        return _TYPE_NAMES[kind]
    raise SQLError(
        "unsupported",
        f"not supported: type {datatype.sql(dialect='postgres')}; supported types are INT, "
        "BIGINT, FLOAT, TEXT (VARCHAR, STRING), BOOL, BYTES (BYTEA), TIMESTAMP",
        node_position(datatype),
    )


def _output_name(node: exp.Expr, fallback: str) -> str:
    if isinstance(node, exp.Column):
        return identifier_name(node)
    return fallback


def output_name(node: exp.Expr, compiled: Compiled) -> str:
    """The result column name PostgreSQL would give an unaliased select item."""
    if isinstance(node, exp.Alias):
        return identifier_name(node.args.get("alias"))
    if isinstance(node, exp.Column):
        return identifier_name(node)
    if isinstance(node, exp.Paren):
        return output_name(node.this, compiled)
    return compiled.name
