"""EXPLAIN: the range operations a plan becomes, in the order it would issue them.

Why its own stage: the rows EXPLAIN prints are the planner's decisions made visible - point
get vs span scan vs full scan, and the exact key span - so a user (and the tests) can check
that a primary-key lookup really is one get on one range. The session adds, for each
operation, which ranges hold the span and which replica serves them (kv.ranges_for).

Keys are computed with the statement's bound parameters; with none bound, an operation
whose keys depend on parameters is shown over its whole table span.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftstore.keyspace import render_key
from sql.catalog import TableSchema, catalog_key, table_span
from sql.constants import CATALOG_KEY_PREFIX, TABLE_ID_COUNTER_KEY
from sql.errors import SQLError
from sql.expr import UNBOUND, EvalContext
from sql.plan import (
    AccessPath,
    CreateTablePlan,
    DeletePlan,
    DropTablePlan,
    InsertPlan,
    SelectPlan,
    UpdatePlan,
    VirtualAccess,
)
from sql.rowcodec import key_for_row

OPS_PER_STEP_MAX = 20  # point keys listed one by one before the rest are summarized


@dataclass
class Op:
    """One step. `start`/`end` is the key span (`end` None: the single key `start`);
    `start` None for an evaluation step that touches no range."""

    kind: str
    table: str | None
    span: str
    start: bytes | None
    end: bytes | None
    detail: str


def explain_ops(plan, ctx: EvalContext, schemas: dict[str, TableSchema | None]) -> list[Op]:
    """The operations of `plan`. `schemas` supplies tables a DROP TABLE names."""
    if isinstance(plan, SelectPlan):
        return _select_ops(plan, ctx)
    if isinstance(plan, InsertPlan):
        return _insert_ops(plan, ctx)
    if isinstance(plan, UpdatePlan):
        reads = _read_ops(plan.access, ctx, plan.where_text)
        return reads + _write_ops(reads, "put", "cas(old row, new row) per matching row")
    if isinstance(plan, DeletePlan):
        reads = _read_ops(plan.access, ctx, plan.where_text)
        return reads + _write_ops(reads, "delete", "delete per matching row")
    if isinstance(plan, CreateTablePlan):
        key = catalog_key(plan.name)
        meta = f"/meta/catalog/{plan.name}"
        return [
            Op("point get", None, meta, key, None, "does the table exist?"),
            Op("put", None, "/meta/table_id", TABLE_ID_COUNTER_KEY, None,
               "cas: allocate the next table id"),
            Op("put", None, meta, key, None, "cas: create the schema only if absent"),
        ]
    if isinstance(plan, DropTablePlan):
        ops = []
        for name in plan.names:
            schema = schemas.get(name)
            key = catalog_key(name)
            ops.append(Op("put", None, f"/meta/catalog/{name}", key, None,
                          "cas: replace the schema by a drop marker, wait out schema leases, "
                          "then cas: free the name"))
            if schema is not None:
                start, end = table_span(schema.id)
                ops.append(Op("delete", name, f"/{name}/*", start, end,
                              "scan + delete every row, in batches"))
        return ops
    raise SQLError("unsupported", f"not supported: EXPLAIN of {type(plan).__name__}")


def _unbound(ctx: EvalContext) -> bool:
    return any(p is UNBOUND for p in ctx.params)


def _read_ops(access: AccessPath, ctx: EvalContext, note: str = "") -> list[Op]:
    schema = access.schema
    name = schema.name
    if isinstance(access, VirtualAccess):
        return [Op("virtual table", name, access.describe(), None, None,
                   _join("rows computed by the cluster when the statement runs", note))]
    kind = access.kind
    table_start, table_end = table_span(schema.id)
    if kind == "full scan":
        return [Op("span scan", name, access.describe(), table_start, table_end,
                   _join("full table scan", note))]
    if _unbound(ctx):
        return [Op(kind, name, access.describe(), table_start, table_end,
                   _join("keys depend on parameters (bind them to see the exact keys)", note))]
    ranges = access.key_ranges(ctx)
    if not ranges:
        return [Op(kind, name, access.describe(), None, None,
                   _join("no key can match: nothing is read", note))]
    ops = []
    for start, end in ranges[:OPS_PER_STEP_MAX]:
        if end is None:
            ops.append(Op("point get", name, pretty_key(start, {schema.id: name}), start, None,
                          note))
        else:
            ops.append(Op("span scan", name, access.describe(), start, end, note))
    if len(ranges) > OPS_PER_STEP_MAX:
        rest = ranges[OPS_PER_STEP_MAX:]
        last = rest[-1][1] or rest[-1][0] + b"\x00"
        ops.append(Op(kind, name, access.describe(), rest[0][0], last,
                      f"... and {len(rest)} more {kind}s in this span"))
    return ops


def _write_ops(reads: list[Op], kind: str, detail: str) -> list[Op]:
    return [Op(kind, r.table, r.span, r.start, r.end, detail) for r in reads if r.start]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _select_ops(plan: SelectPlan, ctx: EvalContext) -> list[Op]:
    ops: list[Op] = []
    if not plan.sources:
        ops.append(Op("evaluate", None, "", None, None, "no table: one row of constants"))
    for number, source in enumerate(plan.sources):
        ops.extend(_read_ops(source.access, ctx))
        if number > 0:
            step = plan.joins[number - 1]
            ops.append(Op("join", None, "", None, None, step.describe))
    for note in plan.notes:
        ops.append(Op("evaluate", None, "", None, None, note))
    return ops


def _insert_ops(plan: InsertPlan, ctx: EvalContext) -> list[Op]:
    schema = plan.schema
    name = schema.name
    ops: list[Op] = []
    detail = {
        "insert": "cas(key, absent, row): a duplicate key is an error",
        "do_nothing": "cas(key, absent, row): skipped if the key exists",
        "do_update": "get, then cas(old, merged row)",
        "upsert": "get, then cas(old, merged row)",
    }[plan.mode]
    if plan.replaces_row:
        detail = "put: overwrite the whole row (no read needed)"
    if plan.select is not None:
        ops.extend(_select_ops(plan.select, ctx))
        start, end = table_span(schema.id)
        ops.append(Op("put", name, f"/{name}/*", start, end,
                      detail + "; keys come from the SELECT"))
        return ops
    if _unbound(ctx):
        start, end = table_span(schema.id)
        ops.append(Op("put", name, f"/{name}/*", start, end,
                      detail + "; keys depend on parameters"))
        return ops
    rows, generated = plan.complete_rows(plan.provided_values(ctx), ctx)
    reads = plan.mode in ("do_update", "upsert") and not plan.replaces_row
    for row, gen in list(zip(rows, generated))[:OPS_PER_STEP_MAX]:
        key = key_for_row(schema, row)
        pk = "/".join(str(row[i]) for i in schema.pk_indexes)
        span = f"/{name}/{'<unique_rowid()>' if gen else pk}"
        if reads:
            ops.append(Op("point get", name, span, key, None, "read the existing row"))
        ops.append(Op("put", name, span, key, None, detail))
    if len(rows) > OPS_PER_STEP_MAX:
        ops.append(Op("put", name, f"/{name}/...", None, None,
                      f"... and {len(rows) - OPS_PER_STEP_MAX} more rows"))
    return ops


def pretty_key(key: bytes | None, names: dict[int, str], *, is_end: bool = False) -> str:
    """A human form of a store key: /meta/catalog/<table>, /meta/table_id, and otherwise as
    `raftstore status` shows it (raftstore.keyspace.render_key: /<table>/<pk>..., -inf, +inf,
    a raw KV key as itself). `names` maps table ids to names."""
    if key is not None and key == TABLE_ID_COUNTER_KEY:
        return "/meta/table_id"
    if key is not None and key.startswith(CATALOG_KEY_PREFIX):
        return "/meta/catalog/" + key[len(CATALOG_KEY_PREFIX):].decode("utf-8", "replace")
    return render_key(key, is_end=is_end, table_names=names)
