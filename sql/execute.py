"""Running statements: a `Session` turns SQL text into KV calls and a `Result`.

Why here and not in the node: the session is the only stateful piece of the SQL layer (its
plan cache, its clock and random source), and it talks to the store only through the small
blocking KV interface, the `sql.kv.KV` Protocol, so the same code runs on a gateway node,
in a test against sql/memkv.py, or in a differential harness.

Flow per `execute`: parse (cached per text) -> look up the plan cached for this text and check
that every table it uses still has the same schema bytes, taken from the process's schema
leases (sql/schema_leases.py) or, on a miss, read from the catalog (one get per table, then leased
for the lease period) -> bind parameters -> run the plan's range operations -> evaluate on
top -> Result. DDL reads the catalog itself, never through the leases.

Writes and their limits (until the transactions issue): a statement is not atomic across
keys. What we guarantee instead: every row of a statement is computed and checked (types,
NOT NULL, duplicate keys within it) before the first write, and a multi-row INSERT's rows are
written all or nothing within each range (an existing key writes nothing of its range); every write is
conditioned on the exact version the statement read - an insert on "no live value" - so two
concurrent INSERTs of one key cannot both succeed and no read-then-write (UPDATE, DELETE,
ON CONFLICT) overwrites a version it did not read: a lost race re-decides the row from its
current version. If a write fails after others applied, what the statement wrote is taken
back, each key only if it still holds the statement's own version, and the error says what
remains (sql/writes.py). A multi-row statement sends its writes together (`write_if_many`),
one batch per range, which a node runs concurrently; the error reported is still the first in
statement order.

Errors: SQLError for the statement's own faults, for a write conflict before anything was
written (serialization_failure, 40001) and for a failure after some writes applied
(statement_completion_unknown, 40003); other raftstore errors from the KV propagate
unchanged (not wrapped), so "unavailable" stays distinguishable from bad SQL. So does
raftstore.coop.DeadlineExceeded, which a statement the gateway runs with a deadline
(statement_timeout) meets at a row loop's `coop.checkpoint()` or a KV wait; the gateway
answers it 57014 (sql/gateway.py). A write statement takes back what it wrote first.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlglot import exp

from raftstore import coop
from sql import types as T
from sql.catalog import (
    TableSchema,
    catalog_key,
    create_table,
    decode_entry,
    drop_tables,
    list_tables,
    read_table,
    set_home,
    table_home,
    table_span,
    zone_regions,
)
from sql.constants import (
    PLAN_CACHE_ENTRIES_MAX,
    ROWID_BITS,
    ROWID_RETRY_COUNT_MAX,
    SCAN_PAGE_ROWS_MAX,
    SCAN_PAGE_ROWS_MIN,
    SQL_INLINE_PARSE_CHARS_MAX,
)
from sql.asof import FOLLOWER_READS_VAR, read_spec, session_default, with_causality
from sql.pg_functions import CatalogView
from sql.session_vars import SESSION_VARS, set_value
from sql.dialect import Locality, Statement, identifier_name, locality_text, node_position, parse
from sql.errors import SQLError
from sql.limits import recursion_error
from sql.explain import ANALYZE_COLUMNS, ANALYZE_TYPES, analyze_rows, explain_ops, pretty_key
from sql.expr import UNBOUND, EvalContext, accumulate, aggregate_result, new_accumulator
from sql.schema_leases import SchemaLeases
from sql.show import show_columns, show_create, show_databases
from sql.plan import (
    AccessPath,
    AlterLocalityPlan,
    CreateTablePlan,
    DeletePlan,
    DerivedAccess,
    DropTablePlan,
    ExplainPlan,
    InsertPlan,
    SelectPlan,
    SeriesAccess,
    UnionPlan,
    UnnestAccess,
    check_column_value,
    check_row,
    UpdatePlan,
    VirtualAccess,
    plan_statement,
    tables_named,
)
from sql.kv import KV, Version
from sql.rowcodec import decode_row, encode_row, key_for_row, pk_text
from sql.virtual import VIRTUAL_TABLES, virtual_rows
from sql.writes import RowWrite, StatementWrites, duplicate_key_found, duplicate_key_raced, write_conflict

__all__ = ["Result", "Session", "SystemTimer"]


@dataclass
class Result:
    """The outcome of one statement.

    `columns`/`types` name and type the result columns (upper-case SQL type names);
    `rows` holds plain Python values (int, float, str, bool, bytes, None, datetime); the
    caller owns them. `rowcount` is the rows returned (queries) or affected (DML), -1 for DDL.
    `status` is the command tag: "SELECT 2", "INSERT 3", "CREATE TABLE", ...
    """

    columns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    rowcount: int = -1
    status: str = ""


@dataclass
class _CacheEntry:
    names: list[str]
    schema_bytes: dict[str, bytes | None]
    plan: object


def _wall_clock() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


_READS_LATEST = frozenset({"insert", "upsert", "update", "delete", "create_table", "drop_table", "alter_table"})


class SystemTimer:
    """The real time source of schema leases and DDL waits (sql.catalog.Timer)."""

    monotonic = staticmethod(time.monotonic)
    wall_ns = staticmethod(time.time_ns)
    sleep = staticmethod(coop.sleep)   # inside a statement on a node's loop only the statement sleeps


class Session:
    """A SQL session over a KV (`sql.kv.KV`: the contract of every call it makes).

    `clock` returns the statement time as a naive UTC datetime (now(), DEFAULT now()); `rng`
    draws hidden rowids. Both default to the real thing; tests pass fakes. Not thread-safe:
    one statement at a time per session.

    `leases` is the process's schema lease cache, shared by all its sessions (thread-safe);
    every node of a cluster must run with the same lease period, since DROP waits for the
    leases the other nodes hold. None: no caching and no waiting (`SchemaLeases(0)`), right
    only when no other process reaches the KV. `timer` gives leases and DDL their time
    (monotonic, wall, sleep); default SystemTimer.
    """

    def __init__(
        self,
        kv: KV,
        *,
        clock: Callable[[], _dt.datetime] | None = None,
        rng: random.Random | None = None,
        plan_cache_entries: int = PLAN_CACHE_ENTRIES_MAX,
        leases: SchemaLeases | None = None,
        timer=None,
    ):
        self.kv = kv
        self._leases = leases if leases is not None else SchemaLeases(lease_s=0)
        self._timer = timer or SystemTimer()
        self.renewals_due: list[str] = []
        self._clock = clock or _wall_clock
        self._rng = rng or random.SystemRandom()
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._cache_entries_max = plan_cache_entries
        # The client's session (a connection's, set by the gateway before each statement): its
        # variables (SET / SHOW) and causality token, the newest commit timestamp it was told.
        self.settings: dict[str, str] = {}
        self.causality: Version | None = None
        # What SHOW prints for a variable the session did not SET, where it is not the built-in
        # default (sql.session_vars): the node's statement_timeout (the gateway sets it).
        self.defaults: dict[str, str] = {}
        self.follower_spec = None   # the current statement's follower read (sql.asof.ReadSpec), if any

    # --- public ---------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[object] | None = None) -> Result:
        """Run one statement (a trailing ``;`` is fine). Raises SQLError; KV errors pass
        through unchanged."""
        # A long text's parse cannot be cut into slices: it runs off the loop (raftstore.coop).
        statements = coop.offload(parse, sql) if len(sql) > SQL_INLINE_PARSE_CHARS_MAX else parse(sql)
        if not statements:
            raise SQLError("syntax", "empty statement: there is no SQL to run")
        if len(statements) > 1:
            raise SQLError(
                "unsupported",
                f"not supported: {len(statements)} statements in one call; send one "
                "statement per execute()",
                statements[1].ast.meta.get("stmt_start"), sql,
            )
        statement = statements[0]
        kind = statement.kind
        if kind == "set_var":
            name = statement.ast.this
            try:
                value = set_value(name, statement.ast.args["value"])
            except SQLError as error:
                raise error.with_sql(sql) from None
            if value is None:
                self.settings.pop(name, None)     # DEFAULT: the default of the node that runs the statement
            else:
                self.settings[name] = value
            return Result([], [], [], 0, "SET")
        if kind == "show_var":
            name = statement.ast.this
            shown = self.settings.get(name, self.defaults.get(name, SESSION_VARS[name]))
            return Result([name], [T.TEXT], [[shown]], 1, "SHOW 1")
        self.follower_spec = None
        try:
            self._follower_read(statement)
        except SQLError as error:
            raise error.with_sql(sql) from None
        bound = self._bind(statement, params)
        ctx = EvalContext(bound, self._clock(), self._new_rowid, self._run_subquery)
        ctx.catalog = CatalogView(self)   # what catalog functions (::regclass, set_config) read
        if kind in _READS_LATEST:
            # Writes decide at apply, on the versions they read; DDL polls the catalog and waits:
            # their reads see the latest state, each on its own (a query's reads share one
            # timestamp: the KV's statement snapshot, raftstore.server.nodekv).
            read_latest = getattr(self.kv, "read_latest", None)
            if read_latest is not None:
                read_latest()
        if kind == "show_tables":
            return self._show_tables()
        if kind == "show_regions":
            return self._show_regions()
        if kind == "show_ranges":
            return self._show_ranges(statement)
        if kind == "show_databases":
            return _show_result(show_databases())
        if kind in ("show_columns", "show_create"):
            schema = self._named_table(statement)
            if kind == "show_columns":
                return _show_result(show_columns(schema))
            return _show_result(show_create(schema, table_home(self.kv, schema.id)))
        plan = self._plan(statement)
        try:
            return self._run(plan, ctx, statement)
        except SQLError as error:
            raise error.with_sql(sql) from None

    def describe(self, sql: str) -> tuple[int, list[str] | None, list[str] | None]:
        """(parameter count, columns, types) of `sql` without running it: the columns and types
        of a SELECT as planned; None, None for other statements (sql.gateway.Gateway.describe)."""
        statements = parse(sql)
        if len(statements) != 1 or statements[0].kind != "select":
            return (statements[0].param_count if len(statements) == 1 else 0), None, None
        plan = self._plan(statements[0])
        if not isinstance(plan, SelectPlan):
            return statements[0].param_count, None, None
        return statements[0].param_count, list(plan.columns), [o.type for o in plan.outputs]

    def _follower_read(self, statement: Statement) -> None:
        """A SELECT with AS OF SYSTEM TIME, or any SELECT of a session that made follower reads
        its default, reads as sql.asof says: the KV serves it from the nearest replica that has
        closed its timestamp (a bounded read never below the session's causality token)."""
        node = statement.ast.this if statement.kind in ("explain", "explain_analyze") else statement.ast
        if statement.as_of is None and not (statement.kind in ("select", "explain", "explain_analyze")
                                            and isinstance(node, (exp.Select, exp.Union))):
            return
        if statement.as_of is None and self.settings.get(FOLLOWER_READS_VAR) != "on":
            return
        now_ns = self.kv.now_ns() if hasattr(self.kv, "now_ns") else time.time_ns()
        spec = read_spec(statement.as_of, now_ns) if statement.as_of is not None else session_default(self.settings, now_ns)
        if spec is None:
            return
        spec = with_causality(spec, self.causality)
        self.follower_spec = spec
        spans = []
        for name in tables_named(statement):
            schema = self._schema(name) if name not in VIRTUAL_TABLES else None
            if schema is not None:
                spans.append(table_span(schema.id))
        self.kv.follower_read(spec, spans)

    # --- parameters and plans -----------------------------------------------------------------

    def _bind(self, statement: Statement, params: Sequence[object] | None) -> list[object]:
        if params is None:
            params = ()
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
            raise SQLError(
                "invalid_parameter",
                f"parameters must be a list or tuple, got {type(params).__name__}",
            )
        wanted = statement.param_count
        if len(params) != wanted:
            if statement.kind == "explain" and not params:
                return [UNBOUND] * wanted
            raise SQLError(
                "invalid_parameter",
                f"the statement uses {wanted} parameter(s) but {len(params)} were given",
            )
        # A list or tuple is an array (x = ANY($1)): psycopg sends a Python list so.
        return [[T.normalize_param(v) for v in value] if isinstance(value, (list, tuple))
                else T.normalize_param(value) for value in params]

    def _plan(self, statement: Statement):
        entry = self._cache.get(statement.text)
        names = entry.names if entry is not None else tables_named(statement)
        schemas = {name: self._schema(name) for name in names}
        current = {name: (s.raw if s is not None else None) for name, s in schemas.items()}
        if entry is not None and entry.schema_bytes == current:
            self._cache.move_to_end(statement.text)
            return entry.plan
        try:
            plan = plan_statement(statement, schemas)
        except RecursionError:   # expr.py compiles recursively; sql/limits.py keeps it far from this
            raise recursion_error("the planner") from None
        self._cache[statement.text] = _CacheEntry(names, current, plan)
        self._cache.move_to_end(statement.text)
        while len(self._cache) > self._cache_entries_max:
            self._cache.popitem(last=False)
        return plan

    def _schema(self, name: str) -> TableSchema | None:
        """The live schema of `name`: leased, or read from the catalog (and then leased).
        Misses and tables being dropped are never cached (sql/schema_leases.py, rule 2). A virtual
        table's schema is fixed (sql/virtual.py)."""
        if name in VIRTUAL_TABLES:
            return VIRTUAL_TABLES[name].schema
        now = self._timer.monotonic()
        leased = self._leases.get(name, now)
        if leased is not None:
            if self._leases.claim_renewal(name, now):
                self.renewals_due.append(name)
            return leased
        return self._read_schema(name)

    def _read_schema(self, name: str) -> TableSchema | None:
        sent_at = self._timer.monotonic()  # before the read: the lease counts from here
        entry = decode_entry(self.kv.get(catalog_key(name)))
        if isinstance(entry, TableSchema):
            self._leases.put(name, entry, sent_at)
            return entry
        self._leases.forget(name)
        return None

    def take_renewals(self) -> list[str]:
        """Names whose leases this session's statements found past half their life (and
        claimed); the caller renews them with `renew_leases`, off the statement's path."""
        names, self.renewals_due = self.renewals_due, []
        return names

    def renew_leases(self, names: list[str]) -> None:
        """Read the catalog for each claimed name and lease what it finds. KV errors pass
        through; the claims are released either way."""
        try:
            for name in names:
                self._read_schema(name)
        finally:
            for name in names:
                self._leases.renewed(name)

    def _new_rowid(self) -> int:
        return self._rng.getrandbits(ROWID_BITS)

    def _run(self, plan, ctx: EvalContext, statement: Statement) -> Result:
        if isinstance(plan, SelectPlan):
            return self._select(plan, ctx)
        if isinstance(plan, (InsertPlan, UpdatePlan, DeletePlan)):
            return self._write(plan, ctx)
        if isinstance(plan, CreateTablePlan):
            if plan.home is not None:
                self._check_region(plan.home, statement)
            create_table(self.kv, plan.name, plan.columns, plan.pk, plan.if_not_exists,
                         self._timer, self._leases.drop_wait_s, home=plan.home)
            self._cache.clear()
            return Result(status="CREATE TABLE", rowcount=-1)
        if isinstance(plan, AlterLocalityPlan):
            return self._alter_locality(plan, statement)
        if isinstance(plan, DropTablePlan):
            return self._drop(plan)
        if isinstance(plan, ExplainPlan):
            return self._explain(plan, ctx, statement)
        raise AssertionError(plan)

    # --- reading ---------------------------------------------------------------------------------

    def _fetch(self, access: AccessPath, ctx: EvalContext, first_page: int | None = None,
               versions: bool = False) -> Iterator[tuple[bytes, bytes, Version | None]]:
        """(key, raw row, version) of an access path, in key order, fetched lazily; the
        version (sql/kv.py) only with `versions` (a write reads it to write on it), else None."""
        schema = access.schema
        if access.kind == "full scan":
            ranges: list[tuple[bytes, bytes | None]] = [table_span(schema.id)]
        else:
            ranges = access.key_ranges(ctx)
        page = max(SCAN_PAGE_ROWS_MIN, min(first_page or SCAN_PAGE_ROWS_MAX, SCAN_PAGE_ROWS_MAX))
        for start, end in ranges:
            if end is None:
                if versions:
                    found = self.kv.get_version(start)
                    if found is not None:
                        yield start, found[0], found[1]
                else:
                    raw = self.kv.get(start)
                    if raw is not None:
                        yield start, raw, None
                continue
            while True:
                if versions:
                    batch = self.kv.scan_versions(start, end, page)
                else:
                    batch = [(key, raw, None) for key, raw in self.kv.scan(start, end, page)]
                for row in batch:
                    coop.checkpoint()   # a long scan's row loop lets other statements run
                    yield row
                if len(batch) < page:
                    break
                start = batch[-1][0] + b"\x00"
                page = min(page * 2, SCAN_PAGE_ROWS_MAX)

    def _run_subquery(self, plan, row, ctx: EvalContext) -> list[list]:
        """A subquery's rows for the outer `row` (EvalContext.run_query): read through the
        same KV, so at the statement's one timestamp."""
        return self._query_rows(plan, ctx.inner(row))

    def _query_rows(self, plan, ctx: EvalContext) -> list[list]:
        """The rows of a SelectPlan or UnionPlan (a subquery, a derived table)."""
        if isinstance(plan, UnionPlan):
            rows = []
            for part, convert in zip(plan.parts, plan.convert):
                for row in self._query_rows(part, ctx):
                    coop.checkpoint()
                    rows.append([v if f is None else f(v) for f, v in zip(convert, row)])
            if plan.distinct:
                seen: set[tuple] = set()
                unique = []
                for row in rows:
                    marker = tuple((type(v), v) for v in row)
                    if marker not in seen:
                        seen.add(marker)
                        unique.append(row)
                rows = unique
            return rows
        return self._select_rows(plan, ctx)

    def _source_rows(self, access: AccessPath, ctx: EvalContext, first_page=None) -> Iterator[list]:
        if isinstance(access, SeriesAccess):
            yield from _series(access, ctx)
            return
        if isinstance(access, UnnestAccess):
            for value in access.array.fn((), ctx) or []:
                coop.checkpoint()
                yield [value]
            return
        if isinstance(access, DerivedAccess):
            # Not ctx.inner(): a derived table reads the enclosing query's row, as this query does.
            yield from self._query_rows(access.plan, ctx)
            return
        if isinstance(access, VirtualAccess):
            for row in virtual_rows(self.kv, access.schema.name, access.args, ctx, self._table_names):
                coop.checkpoint()
                yield row
            return
        schema = access.schema
        for _, raw, _ in self._fetch(access, ctx, first_page):
            yield decode_row(schema, raw)

    def _select(self, plan: SelectPlan, ctx: EvalContext) -> Result:
        results = self._select_rows(plan, ctx)
        types = _result_types(plan.outputs, results)
        return Result(list(plan.columns), types, results, len(results), f"SELECT {len(results)}")

    def _select_rows(self, plan: SelectPlan, ctx: EvalContext) -> list[list]:
        limit = _limit_value(plan.limit, ctx, "LIMIT")
        offset = _limit_value(plan.offset, ctx, "OFFSET") or 0
        if plan.sources:
            first_page = None
            if plan.streamable and limit is not None:
                first_page = offset + limit
            rows: Iterator[list] = self._source_rows(plan.sources[0].access, ctx, first_page)
        else:
            rows = iter([[]])
        if plan.where is not None:
            where = plan.where.fn
            rows = (row for row in rows if where(row, ctx) is True)
        for step in plan.joins:
            rows = self._join(rows, plan, step, ctx)
        if plan.srfs:
            rows = _expand_srfs(rows, plan.srfs, ctx)

        if plan.grouping is not None:
            rows = iter(_group(plan, rows, ctx))
            if plan.having is not None:
                having = plan.having.fn
                rows = (row for row in rows if having(row, ctx) is True)

        outputs = [c.fn for c in plan.outputs]
        if plan.streamable:
            results = []
            wanted = None if limit is None else offset + limit
            if wanted != 0:
                for row in rows:
                    results.append([fn(row, ctx) for fn in outputs])
                    if wanted is not None and len(results) >= wanted:
                        break
            results = results[offset:]
        else:
            pairs = []
            input_keys = [k for k in plan.order if not k.on_output]
            for row in rows:
                out = [fn(row, ctx) for fn in outputs]
                extra = [k.fn(row, ctx) for k in input_keys]
                pairs.append((out, extra))
            if plan.distinct:
                seen = set()
                unique = []
                for out, extra in pairs:
                    marker = tuple((type(v), v) for v in out)
                    if marker not in seen:
                        seen.add(marker)
                        unique.append((out, extra))
                pairs = unique
            if plan.order and not plan.ordered_by_key:
                _sort(pairs, plan.order, ctx)
            end = None if limit is None else offset + limit
            results = [out for out, _ in pairs[offset:end]]
        return results

    def _join(self, left_rows: Iterator[list], plan: SelectPlan, step, ctx) -> Iterator[list]:
        source = plan.sources[step.source]
        pad = [None] * source.offset
        right = []
        for row in self._source_rows(source.access, ctx):
            padded = pad + row
            if all(f.fn(padded, ctx) is True for f in source.filters):
                right.append(row)
        filters = [f.fn for f in step.filters]
        if step.outer:
            yield from self._left_join(left_rows, right, pad, source.width, step, filters, ctx)
            return
        if step.left_keys:
            table: dict[tuple, list[list]] = {}
            for row in right:
                coop.checkpoint()
                padded = pad + row
                key = tuple(k.fn(padded, ctx) for k in step.right_keys)
                if any(v is None for v in key):
                    continue
                table.setdefault(key, []).append(row)
            for left in left_rows:
                key = tuple(k.fn(left, ctx) for k in step.left_keys)
                if any(v is None for v in key):
                    continue
                for row in table.get(key, ()):
                    coop.checkpoint()
                    joined = left + row
                    if all(f(joined, ctx) is True for f in filters):
                        yield joined
        else:
            for left in left_rows:
                for row in right:
                    coop.checkpoint()   # a cross product's inner loop may be long
                    joined = left + row
                    if all(f(joined, ctx) is True for f in filters):
                        yield joined

    def _left_join(self, left_rows, right: list[list], pad: list, width: int, step, filters, ctx) -> Iterator[list]:
        """LEFT JOIN: each left row with every right row its ON conjuncts (`step.match`) hold
        for, or once with NULLs when none does; then the WHERE conjuncts placed here."""
        match = [m.fn for m in step.match]
        nulls = [None] * width
        table: dict[tuple, list[list]] | None = None
        if step.left_keys:
            table = {}
            for row in right:
                coop.checkpoint()
                key = tuple(k.fn(pad + row, ctx) for k in step.right_keys)
                if not any(v is None for v in key):
                    table.setdefault(key, []).append(row)
        for left in left_rows:
            if table is not None:
                key = tuple(k.fn(left, ctx) for k in step.left_keys)
                candidates = () if any(v is None for v in key) else table.get(key, ())
            else:
                candidates = right
            matched = False
            for row in candidates:
                coop.checkpoint()
                joined = left + row
                if all(m(joined, ctx) is True for m in match):
                    matched = True
                    if all(f(joined, ctx) is True for f in filters):
                        yield joined
            if not matched:
                joined = left + nulls
                if all(f(joined, ctx) is True for f in filters):
                    yield joined

    # --- writing ---------------------------------------------------------------------------------

    def _write(self, plan, ctx: EvalContext) -> Result:
        """INSERT, UPDATE or DELETE, with what they write kept in a StatementWrites so a failure
        after the first write takes exactly that back and says what remains (sql/writes.py)."""
        writes = StatementWrites(self.kv, plan.schema)
        try:
            if isinstance(plan, InsertPlan):
                return self._insert(plan, ctx, writes)
            if isinstance(plan, UpdatePlan):
                return self._update(plan, ctx, writes)
            return self._delete(plan, ctx, writes)
        except Exception as exc:
            if writes:
                raise writes.failure(exc) from exc
            if writes.started and isinstance(exc, SQLError):
                raise SQLError(exc.code, exc.message + "; nothing of this statement was written",
                               exc.position) from None
            raise

    def _insert(self, plan: InsertPlan, ctx: EvalContext, writes: StatementWrites) -> Result:
        schema = plan.schema
        verb = "UPSERT" if plan.mode == "upsert" else "INSERT"
        # Rows are computed and checked one by one, in statement order, so the error reported
        # is the one PostgreSQL would report first - and all before the first write.
        if plan.select is not None:
            provided_rows = self._select_provided(plan, ctx)
            count = len(provided_rows)
        else:
            provided_rows = None
            count = len(plan.rows)
        multi_row = plan.mode == "insert" and count > 1
        seen: set[bytes] = set()
        unique: list[tuple[bytes, list, bool]] = []
        first_error: SQLError | None = None
        for i in range(count):
            coop.checkpoint()
            try:
                provided = provided_rows[i] if provided_rows is not None else plan.provided_row(i, ctx)
                row, generated = plan.complete_row(provided, ctx)
                key = key_for_row(schema, row)
                if key in seen:
                    if plan.mode == "do_nothing":
                        continue
                    if plan.mode == "insert":
                        raise _duplicate_key(schema, row)
                    raise SQLError(
                        "unique_violation",
                        f"{'UPSERT' if plan.mode == 'upsert' else 'ON CONFLICT DO UPDATE'} cannot "
                        f"affect row {pk_text(schema, row)} a second time in one statement; "
                        "remove the duplicate",
                    )
            except SQLError as error:
                if not multi_row:
                    raise
                first_error = error  # reported unless an earlier row's key already exists
                break
            seen.add(key)
            unique.append((key, row, generated))
        if first_error is not None:
            # A bad row: the error reported is still the first in statement order, as if
            # checked row by row - so the keys before it are looked up first (at once).
            given = [(key, row) for key, row, generated in unique if not generated]
            for (key, row), raw in zip(given, self._get_many([key for key, _ in given])):
                if raw is not None:
                    raise _duplicate_key(schema, row)
            raise first_error
        if plan.mode in ("insert", "do_nothing"):
            # A multi-row INSERT writes without reading first: one batch per range, all or
            # nothing within it (sql/kv.py), so a taken key writes nothing of its range's batch
            # and is reported first in statement order; rows applied in other ranges are taken
            # back by the statement's failure (sql/writes.py).
            written = self._insert_new(plan, unique, writes, all_or_nothing=multi_row)
        else:
            written = self._upsert(plan, unique, ctx, writes)
        return Result(rowcount=written, status=f"{verb} {written}")

    def _select_provided(
        self, plan: InsertPlan, ctx: EvalContext
    ) -> list[list[tuple[int, object]]]:
        schema = plan.schema
        assert plan.select is not None
        return [
            [
                (index, T.coerce_implicit(value, schema.columns[index].type,
                                          f'value for column "{schema.columns[index].name}"'))
                for index, value in zip(plan.targets, values)
            ]
            for values in self._select(plan.select, ctx).rows
        ]

    def _insert_new(self, plan: InsertPlan, rows: list[tuple[bytes, list, bool]],
                    writes: StatementWrites, all_or_nothing: bool = False) -> int:
        """Every row written at once, each only where its key has no live value. A drawn rowid
        that is taken is drawn again; a given key taken meanwhile is skipped (DO NOTHING) or a
        duplicate key, the first such row in statement order."""
        schema = plan.schema
        items = [RowWrite(key, None, None, encode_row(schema, row), row, generated)
                 for key, row, generated in rows]

        def taken(item: RowWrite, current) -> RowWrite | None:
            if plan.mode == "do_nothing":
                return None
            if not item.generated:
                raise (duplicate_key_found if all_or_nothing else duplicate_key_raced)(schema, item.row)
            row = list(item.row)
            row[schema.pk_indexes[0]] = self._new_rowid()
            return RowWrite(key_for_row(schema, row), None, None, encode_row(schema, row), row, True)
        return writes.write(items, taken, rounds=ROWID_RETRY_COUNT_MAX, all_or_nothing=all_or_nothing)

    def _get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """``get`` of every key, sent together (a node runs them concurrently)."""
        return self.kv.get_many(keys)

    def _upsert(self, plan: InsertPlan, rows: list[tuple[bytes, list, bool]], ctx,
                writes: StatementWrites) -> int:
        schema = plan.schema
        if plan.replaces_row:
            for key, row, _ in rows:  # every column given: the new row replaces the old
                writes.put_blind(key, encode_row(schema, row), row)
            return len(rows)
        # Phase 1: read and compute every row, so a failing SET changes nothing.
        items = []
        for key, row, _ in rows:
            item = self._merged_write(plan, key, row, self.kv.get_version(key), ctx)
            if item is not None:
                items.append(item)

        def redo(item: RowWrite, current) -> RowWrite | None:
            return self._merged_write(plan, item.key, item.row, current, ctx)
        return writes.write(items, redo)

    def _merged_write(self, plan: InsertPlan, key: bytes, row: list, found, ctx) -> RowWrite | None:
        """The write for an ON CONFLICT / UPSERT candidate `row` over what the key holds
        (`found`: (raw, version) or None): `row` if absent, else the existing row with the
        update applied; None if DO UPDATE ... WHERE is not true."""
        if found is None:
            return RowWrite(key, None, None, encode_row(plan.schema, row), row)
        old_raw, version = found
        schema = plan.schema
        existing = decode_row(schema, old_raw)
        env = existing + row
        if plan.update_where is not None and plan.update_where.fn(env, ctx) is not True:
            return None
        new_row = list(existing)
        for index, compiled in plan.updates:
            new_row[index] = compiled.fn(env, ctx)
        check_row(schema, new_row)
        return RowWrite(key, version, old_raw, encode_row(schema, new_row), row)

    def _point_key(self, access: AccessPath, ctx: EvalContext) -> bytes | None:
        """The one key a write's access path names, when it names exactly one (WHERE pk = ...)."""
        if isinstance(access, VirtualAccess) or access.kind != "point get":
            return None
        ranges = access.key_ranges(ctx)
        return ranges[0][0] if len(ranges) == 1 and ranges[0][1] is None else None

    def _write_point(self, key: bytes, decide: Callable[[tuple[bytes, Version] | None], RowWrite | None],
                     writes: StatementWrites, redo) -> int | None:
        """A one-key UPDATE or DELETE in one consensus round: a locking read (`get_for_update`,
        at the range's leader, no round), `decide` on what it found, then one write conditioned
        on the version read, using the read's latch - or, when there is nothing to write (no
        row matched, or nothing changed), a `confirm` of that version, so the answer holds in
        log order. Returns the rows written or matched; None when the confirm found the key
        changed since (the caller runs its general path)."""
        locked = self.kv.get_for_update(key)
        try:
            item = decide(locked.found)
        except Exception:
            with contextlib.suppress(Exception):
                self.kv.confirm(key, locked.version, lock=locked.lock)   # gives the latch back now
            raise
        if item is not None and not item.unchanged():
            try:
                return writes.write([item], redo, lock=locked.lock)
            except coop.DeadlineExceeded:
                # Canceled before the write left (raftstore.coop: the deadline has fired, so this
                # confirm runs): the latch goes back now, not after locking_read_hold_s.
                with contextlib.suppress(Exception):
                    self.kv.confirm(key, locked.version, lock=locked.lock)
                raise
        confirmed = self.kv.confirm(key, locked.version, lock=locked.lock)
        if confirmed.error is not None:
            raise confirmed.error
        return (0 if item is None else 1) if confirmed.swapped else None

    def _update(self, plan: UpdatePlan, ctx: EvalContext, writes: StatementWrites) -> Result:
        schema = plan.schema
        where = plan.where.fn if plan.where is not None else None
        key = self._point_key(plan.access, ctx)
        if key is not None and plan.blind:
            fields = self._constant_fields(plan, ctx)
            if fields is not None:
                # One write and no read, from any gateway: the row's replicas replace its SET
                # fields as they apply it (sql/kv.py `set_fields`); whether a row was there is
                # the row count.
                count = 1 if self.kv.set_fields(key, len(schema.columns), fields) else 0
                return Result(rowcount=count, status=f"UPDATE {count}")
        if key is not None and not any(index in schema.pk_indexes for index, _ in plan.sets):
            def decide(found) -> RowWrite | None:
                if found is None:
                    return None
                row = decode_row(schema, found[0])
                if where is not None and where(row, ctx) is not True:
                    return None
                new_row = self._apply_sets(plan, row, ctx)
                return RowWrite(key, found[1], found[0], encode_row(schema, new_row), new_row)
            count = self._write_point(key, decide, writes, lambda item, current: decide(current))
            if count is not None:
                return Result(rowcount=count, status=f"UPDATE {count}")
        changes = []  # (old key, version, old raw, new row, new key)
        for key, raw, version in list(self._fetch(plan.access, ctx, versions=True)):
            row = decode_row(schema, raw)
            if where is not None and where(row, ctx) is not True:
                continue
            new_row = self._apply_sets(plan, row, ctx)
            changes.append((key, version, raw, new_row, key_for_row(schema, new_row)))
        moved = [c for c in changes if c[4] != c[0]]
        if moved:
            old_keys = {c[0] for c in changes}
            new_keys: set[bytes] = set()
            for _, _, _, new_row, new_key in changes:
                if new_key in new_keys:
                    raise _duplicate_key(schema, new_row)
                new_keys.add(new_key)
            fresh = [(new_key, new_row) for _, _, _, new_row, new_key in moved if new_key not in old_keys]
            for (new_key, new_row), raw in zip(fresh, self._get_many([k for k, _ in fresh])):
                if raw is not None:
                    raise _duplicate_key(schema, new_row)
        count = 0
        if moved:
            # The old rows go first, each only if still the version read (a row changed since
            # is a conflict: its new key may differ); then the new rows, each only where no
            # row is, so a key taken meanwhile is a duplicate and the old rows are put back.
            def changed(item: RowWrite, current) -> RowWrite | None:
                raise write_conflict(schema, decode_row(schema, item.old_raw))
            writes.write([RowWrite(key, version, raw, None) for key, version, raw, _, _ in moved], changed)

            def taken(item: RowWrite, current) -> RowWrite | None:
                raise duplicate_key_raced(schema, item.row)
            count += writes.write([RowWrite(new_key, None, None, encode_row(schema, new_row), new_row)
                                   for _, _, _, new_row, new_key in moved], taken)

        def redo(item: RowWrite, current) -> RowWrite | None:
            if current is None:
                return None  # deleted concurrently: nothing to update
            raw, version = current
            row = decode_row(schema, raw)
            if where is not None and where(row, ctx) is not True:
                return None
            new_row = self._apply_sets(plan, row, ctx)
            if key_for_row(schema, new_row) != item.key:
                raise write_conflict(schema, row)
            return RowWrite(item.key, version, raw, encode_row(schema, new_row), new_row)
        count += writes.write([RowWrite(key, version, raw, encode_row(schema, new_row), new_row)
                               for key, version, raw, new_row, new_key in changes if new_key == key], redo)
        return Result(rowcount=count, status=f"UPDATE {count}")

    def _constant_fields(self, plan: UpdatePlan, ctx: EvalContext) -> list[tuple[int, object]] | None:
        """A blind UPDATE's new values, stored form, by column position; None when one of them
        breaks its column's rules (NOT NULL, type, INT range): PostgreSQL reports that only for
        a row that matches, so the general path, which reads the row first, decides."""
        schema = plan.schema
        no_row = [None] * len(schema.columns)
        fields = []
        for index, compiled in plan.sets:
            column = schema.columns[index]
            value = compiled.fn(no_row, ctx)
            try:
                check_column_value(schema, column, value)
            except SQLError:
                return None
            fields.append((index, T.to_storage(value, column.type)))
        return fields

    def _apply_sets(self, plan: UpdatePlan, row: list, ctx) -> list:
        new_row = list(row)
        for index, compiled in plan.sets:
            new_row[index] = compiled.fn(row, ctx)
        check_row(plan.schema, new_row)
        return new_row

    def _delete(self, plan: DeletePlan, ctx: EvalContext, writes: StatementWrites) -> Result:
        schema = plan.schema
        where = plan.where.fn if plan.where is not None else None
        key = self._point_key(plan.access, ctx)
        if key is not None and plan.blind:
            # One delete and no read, from any gateway; it says whether a row was there.
            count = 1 if self.kv.delete(key) else 0
            return Result(rowcount=count, status=f"DELETE {count}")
        if key is not None:
            def decide(found) -> RowWrite | None:
                if found is None or (where is not None and where(decode_row(schema, found[0]), ctx) is not True):
                    return None
                return RowWrite(key, found[1], found[0], None)
            count = self._write_point(key, decide, writes, lambda item, current: decide(current))
            if count is not None:
                return Result(rowcount=count, status=f"DELETE {count}")
        doomed = []
        for key, raw, version in list(self._fetch(plan.access, ctx, versions=True)):
            if where is not None and where(decode_row(schema, raw), ctx) is not True:
                continue
            doomed.append(RowWrite(key, version, raw, None))

        def redo(item: RowWrite, current) -> RowWrite | None:
            if current is None:
                return None  # deleted concurrently
            raw, version = current
            if where is not None and where(decode_row(schema, raw), ctx) is not True:
                return None  # changed concurrently and no longer matches
            return RowWrite(item.key, version, raw, None)
        count = writes.write(doomed, redo)
        return Result(rowcount=count, status=f"DELETE {count}")

    def _check_region(self, region: str, statement: Statement) -> None:
        regions = sorted({r["region"] for r in self.kv.regions()})
        if region not in regions:
            raise SQLError("undefined_object",
                           f'region "{region}" is not a region of this cluster (its regions: '
                           f'{", ".join(regions) or "none"}; SHOW REGIONS lists them)',
                           _locality_position(statement), statement.text)

    def _alter_locality(self, plan: AlterLocalityPlan, statement: Statement) -> Result:
        """ALTER TABLE ... SET LOCALITY: the table's zone (sql/catalog.py); the stores move its
        ranges' leases within about a second of the change (raftstore/kvserver/zones.py)."""
        schema = read_table(self.kv, plan.name)
        if schema is None:
            raise SQLError("undefined_table", f'relation "{plan.name}" does not exist; SHOW TABLES lists the tables',
                           plan.position, statement.text)
        if plan.home is not None:
            self._check_region(plan.home, statement)
        set_home(self.kv, schema.id, plan.home)
        return Result(status="ALTER TABLE", rowcount=-1)

    def _drop(self, plan: DropTablePlan) -> Result:
        # Acknowledged only once no node can still use the schemas (sql/catalog.py).
        try:
            drop_tables(self.kv, plan.names, plan.if_exists, self._timer, self._leases.drop_wait_s)
        finally:
            for name in plan.names:
                self._leases.forget(name)
            self._cache.clear()
        return Result(status="DROP TABLE", rowcount=-1)

    # --- SHOW and EXPLAIN ------------------------------------------------------------------------

    def _show_tables(self) -> Result:
        rows = []
        homes = zone_regions(self.kv)
        for schema in list_tables(self.kv):
            hidden = schema.hidden
            columns = ", ".join(
                f"{c.name} {c.type}{' NOT NULL' if c.not_null else ''}"
                + (f" DEFAULT {c.default_sql}" if c.default_sql else "")
                for c in schema.columns if c.name not in hidden
            )
            home = homes.get(table_span(schema.id)[0])
            rows.append([schema.name, schema.id, ", ".join(schema.pk), columns, locality_text(home)])
        return Result(
            ["table_name", "table_id", "primary_key", "columns", "locality"], ["TEXT", "INT", "TEXT", "TEXT", "TEXT"],
            rows, len(rows), f"SHOW {len(rows)}",
        )

    def _show_regions(self) -> Result:
        rows = [[r["region"], r["node_id"], bool(r["up"])] for r in self.kv.regions()]
        return Result(["region", "node_id", "up"], ["TEXT", "INT", "BOOL"], rows, len(rows),
                      f"SHOW {len(rows)}")

    def _named_table(self, statement: Statement) -> TableSchema:
        """The schema of the table a SHOW statement names, read from the catalog now."""
        table = statement.ast.this
        name = identifier_name(table)
        schema = read_table(self.kv, name)
        if schema is None:
            raise SQLError(
                "undefined_table",
                f'relation "{name}" does not exist; SHOW TABLES (\\dt in the shell) lists the tables',
                node_position(table), statement.text,
            )
        return schema

    def _show_ranges(self, statement: Statement) -> Result:
        names = self._table_names()
        if statement.ast.this is None:
            ranges = self.kv.ranges_for(b"", None)
        else:
            start, end = table_span(self._named_table(statement).id)
            ranges = self.kv.ranges_for(start, end)
        rows = []
        for info in ranges:
            leader = info.get("leader")
            replicas = info.get("replicas") or []
            rows.append([
                info["range_id"],
                pretty_key(info["start"], names),
                pretty_key(info["end"], names, is_end=True),
                None if leader is None else leader["node_id"],
                None if leader is None else leader["region"],
                ", ".join(f"n{r['node_id']}" for r in replicas),
                ", ".join(f"n{r['node_id']}={r['region']}" for r in replicas),
                info.get("lease_seq"),
                info.get("home"),
            ])
        return Result(
            ["range_id", "start_key", "end_key", "lease_holder", "lease_holder_region",
             "replicas", "replica_regions", "lease_seq", "home_region"],
            ["INT", "TEXT", "TEXT", "INT", "TEXT", "TEXT", "TEXT", "INT", "TEXT"], rows, len(rows),
            f"SHOW {len(rows)}",
        )

    def _table_names(self) -> dict[int, str]:
        return {schema.id: schema.name for schema in list_tables(self.kv)}

    def _explain(self, plan: ExplainPlan, ctx: EvalContext, statement: Statement) -> Result:
        if plan.analyze:
            return self._explain_analyze(plan, ctx, statement)
        inner = plan.inner
        schemas: dict[str, TableSchema | None] = dict(plan.tables)
        if isinstance(inner, DropTablePlan):
            schemas = {name: read_table(self.kv, name) for name in inner.names}
        # A cell that does not apply to a step (no table, no range) is empty text, not NULL:
        # EXPLAIN is read by people, so range_id is text too.
        rows = []
        for step, op in enumerate(explain_ops(inner, ctx, schemas), start=1):
            table = op.table or ""
            if op.start is None:
                rows.append([step, op.kind, table, op.span, "", "", "", op.detail])
                continue
            end = op.end if op.end is not None else op.start + b"\x00"
            for info in self.kv.ranges_for(op.start, end):
                leader = info.get("leader")
                served = ("no leader" if leader is None
                          else f"n{leader['node_id']} ({leader['region']})")
                if self.follower_spec is not None and not op.kind.startswith(("put", "delete")):
                    # A follower read: the gateway's nearest replica, if it has closed the timestamp.
                    served = "nearest replica if it has closed %s, else %s" % (
                        "the read's timestamp" if self.follower_spec.kind == "exact"
                        else "a timestamp within the bound",
                        "an error (nearest_only)" if self.follower_spec.nearest_only else served)
                replicas = ", ".join(
                    f"n{r['node_id']} ({r['region']})" for r in info.get("replicas") or []
                )
                rows.append([step, op.kind, table, op.span, str(info["range_id"]), served,
                             replicas, op.detail])
        return Result(
            ["step", "operation", "table", "span", "range_id", "served_by", "replicas", "detail"],
            ["INT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT"],
            rows, len(rows), "EXPLAIN",
        )

    def _explain_analyze(self, plan: ExplainPlan, ctx: EvalContext, statement: Statement) -> Result:
        """Run the statement for real with the KV tracing its range operations; show the trace,
        the statement's time and its physical bound (sql/explain.py). Planning (and a catalog
        read it may need) happened before: only the statement's own operations are shown."""
        self.kv.begin_trace()
        started = self._timer.monotonic()
        try:
            self._run(plan.inner, ctx, statement)
        finally:
            statement_ms = (self._timer.monotonic() - started) * 1000
            trace = self.kv.end_trace()
        names = {schema.id: name for name, schema in plan.tables.items()}
        regions = ({r["node_id"]: r["region"] for r in self.kv.regions()}
                   if any(op["served_by"] is not None for op in trace) else {})
        rows = analyze_rows(trace, statement_ms, names, regions)
        return Result(list(ANALYZE_COLUMNS), list(ANALYZE_TYPES), rows, len(rows), "EXPLAIN ANALYZE")


# --- helpers ------------------------------------------------------------------------------------


def _locality_position(statement: Statement) -> int | None:
    found = statement.ast.find(Locality)
    return node_position(found) if found is not None else None


def _show_result(answer: tuple[list[str], list[str], list[list]]) -> Result:
    columns, types, rows = answer
    return Result(columns, types, rows, len(rows), f"SHOW {len(rows)}")


def _limit_value(compiled, ctx: EvalContext, what: str) -> int | None:
    if compiled is None:
        return None
    value = compiled.fn((), ctx)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SQLError("invalid_parameter", f"{what} must be an INT, got {T.value_type(value)}")
    if value < 0:
        raise SQLError("invalid_parameter", f"{what} must not be negative (got {value})")
    return value


def _expand_srfs(rows: Iterator[list], srfs, ctx: EvalContext) -> Iterator[list]:
    """Each row once per element of the longest array of its set-returning functions, with
    their values appended: unnest's element, generate_subscripts' index (from 1); a function
    whose array is shorter (or NULL) gives NULL there. A row whose arrays are all empty goes."""
    for row in rows:
        arrays = [fn.fn(row, ctx) or [] for _, fn in srfs]
        for j in range(max(len(a) for a in arrays)):
            coop.checkpoint()
            extra = [(a[j] if kind == "unnest" else j + 1) if j < len(a) else None
                     for (kind, _), a in zip(srfs, arrays)]
            yield row + extra


def _series(access: SeriesAccess, ctx: EvalContext) -> Iterator[list]:
    """generate_series(start, stop, step): start, start + step, ... while not past stop;
    nothing when an argument is NULL; a zero step is an error (PostgreSQL)."""
    values = [None if c is None else c.fn((), ctx) for c in (access.start, access.stop, access.step)]
    start, stop, step = values[0], values[1], 1 if access.step is None else values[2]
    if start is None or stop is None or step is None:
        return
    if step == 0:
        raise SQLError("invalid_parameter", "step size cannot equal zero")
    value = start
    while (value <= stop) if step > 0 else (value >= stop):
        coop.checkpoint()
        yield [value]
        value += step


def _group(plan: SelectPlan, rows: Iterator[list], ctx: EvalContext) -> list[list]:
    grouping = plan.grouping
    assert grouping is not None
    key_fns = [k.fn for k in grouping.key_compiled]
    specs = grouping.aggs
    groups: dict[tuple, list] = {}
    for row in rows:
        coop.checkpoint()
        key = tuple(fn(row, ctx) for fn in key_fns)
        marker = tuple((type(v), v) for v in key)
        entry = groups.get(marker)
        if entry is None:
            entry = groups[marker] = [key, [new_accumulator(s) for s in specs]]
        for spec, state in zip(specs, entry[1]):
            accumulate(spec, state, row, ctx)
    if not groups and not grouping.keys:
        groups[()] = [(), [new_accumulator(s) for s in specs]]
    return [
        list(key) + [aggregate_result(spec, state) for spec, state in zip(specs, states)]
        for key, states in groups.values()
    ]


def _sort(pairs: list[tuple[list, list]], order, ctx) -> None:
    """Sort (output, input-keys) pairs by ORDER BY, NULL placement as given per key."""
    input_index = 0
    positions = []
    for key in order:
        if key.on_output:
            positions.append((key, None))
        else:
            positions.append((key, input_index))
            input_index += 1
    for key, index in reversed(positions):
        null_rank = 0 if key.nulls_first != key.desc else 1
        value_rank = 1 - null_rank

        if index is None:
            def extract(pair, fn=key.fn):
                return fn(pair[0], ctx)
        else:
            def extract(pair, i=index):
                return pair[1][i]

        def sort_key(pair, extract=extract, null_rank=null_rank, value_rank=value_rank):
            value = extract(pair)
            return (null_rank,) if value is None else (value_rank, value)

        try:
            pairs.sort(key=sort_key, reverse=key.desc)
        except TypeError:
            raise SQLError("datatype_mismatch", "ORDER BY values of different types cannot be "
                           "compared; cast them to one type") from None


def _result_types(outputs, rows: list[list]) -> list[str]:
    types = []
    for i, compiled in enumerate(outputs):
        kind = compiled.type
        if kind == T.PARAM:
            kind = next((T.value_type(r[i]) for r in rows if r[i] is not None), T.TEXT)
        if kind in (T.UNKNOWN, T.NULL, T.PARAM):
            kind = T.TEXT
        types.append(kind)
    return types


def _duplicate_key(schema: TableSchema, row: list) -> SQLError:
    return SQLError(
        "unique_violation",
        f'duplicate key value violates the primary key of "{schema.name}": '
        f"{pk_text(schema, row)} already exists; nothing was written (use UPSERT or INSERT ... "
        "ON CONFLICT to overwrite)",
    )
