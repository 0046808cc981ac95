"""EXPLAIN: the range operations a plan becomes, in the order it would issue them; EXPLAIN
ANALYZE: the range operations a statement did issue, what each cost, and what the network
alone forces on the statement.

Why its own stage: the rows EXPLAIN prints are the planner's decisions made visible - point
get vs span scan vs full scan, and the exact key span - so a user (and the tests) can check
that a primary-key lookup really is one get on one range. The session adds, for each
operation, which ranges hold the span and which replica serves them (kv.ranges_for).

Keys are computed with the statement's bound parameters; with none bound, an operation
whose keys depend on parameters is shown over its whole table span.

EXPLAIN ANALYZE runs the statement - its writes apply - with the KV recording a trace
(`sql.kv.TraceOp`, `KV.begin_trace`), and shows (`analyze_rows`) one row per range operation
the KV actually sent: its step (operations of one step were sent together and ran
concurrently), kind (get, scan, write), keys or span, range, the leader that served it, the
consensus rounds that leader made for it (counted from its proposals, not from the plan) and
its time from send to answer; then a `total` row (the statement's time at this gateway, every
round of every operation) and a `bound` row: the statement's physical bound from this
gateway, beside its time as a ratio. The bound (`physical_bound`) is

    bound = sum over the statement's steps of
            max over the step's operations of (leader_rtt + quorum_rtt * rounds)

where `leader_rtt` is the round trip from this gateway to the leader that served the operation
(0 when the gateway is that leader), `quorum_rtt` the least round trip one consensus round
takes from that leader (the farthest of the nearest followers that make a majority with it),
and `rounds` the rounds it made. Every round trip is one the nodes measured on their peer
links (clock probes), not a configured figure. Time near the bound: the statement is slow
because of distance; far above it: because of us. A round trip not measured yet makes the
bound unknown rather than too low to trust. The bound leaves out CPU, disk and queueing, as
bench/bounds.py (the same model over a latency matrix) does.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftstore.keyspace import render_key
from sql.catalog import TableSchema, catalog_key, table_span
from sql.constants import CATALOG_KEY_PREFIX, TABLE_ID_COUNTER_KEY
from sql.errors import SQLError
from sql.expr import UNBOUND, EvalContext
from sql.kv import TraceOp
from sql.plan import (
    AccessPath,
    CreateTablePlan,
    DeletePlan,
    DerivedAccess,
    DropTablePlan,
    InsertPlan,
    SelectPlan,
    SeriesAccess,
    UnnestAccess,
    UnionPlan,
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
        if plan.blind:
            return _write_ops(reads, "put", "set_fields: the SET columns of the row, if there is one "
                                            "(one write, no read)")
        return reads + _write_ops(reads, "put", "cas(old row, new row) per matching row")
    if isinstance(plan, DeletePlan):
        reads = _read_ops(plan.access, ctx, plan.where_text)
        if plan.blind:
            return _write_ops(reads, "delete", "delete the row, if there is one (one write, no read)")
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
    if isinstance(access, SeriesAccess):
        return [Op("evaluate", name, access.describe(), None, None, _join("a series of INTs", note))]
    if isinstance(access, UnnestAccess):
        return [Op("evaluate", name, access.describe(), None, None, _join("an array's elements", note))]
    if isinstance(access, DerivedAccess):
        inner = access.plan.parts if isinstance(access.plan, UnionPlan) else [access.plan]
        ops = [op for part in inner for op in _select_ops(part, ctx)]
        return ops + [Op("evaluate", name, access.describe(), None, None,
                         _join("the derived table's rows, computed by the steps above", note))]
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


# --- EXPLAIN ANALYZE --------------------------------------------------------------------------------

ANALYZE_COLUMNS = ["step", "operation", "span", "range_id", "served_by", "rounds", "time_ms", "detail"]
ANALYZE_TYPES = ["TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "INT", "FLOAT", "TEXT"]


@dataclass(frozen=True)
class PhysicalBound:
    """What the network alone forces on a traced statement from its gateway (module docstring).
    `ms` None: a round trip it needs is not measured yet (`missing` says which); `rounds`: the
    consensus rounds on the path the bound follows (one operation per step)."""

    ms: float | None
    rounds: int
    missing: str = ""


def operation_bound_ms(op: TraceOp) -> float | None:
    """leader_rtt + quorum_rtt * rounds of one operation; None when a needed round trip is unknown."""
    if op["leader_rtt_ms"] is None:
        return None
    if op["rounds"] == 0:
        return op["leader_rtt_ms"]
    if op["quorum_rtt_ms"] is None:
        return None
    return op["leader_rtt_ms"] + op["quorum_rtt_ms"] * op["rounds"]


def physical_bound(trace: Sequence[TraceOp]) -> PhysicalBound:
    """The statement's bound: per step the costliest of its concurrent operations, summed."""
    worst: dict[int, tuple[float, int]] = {}
    for op in trace:
        cost = operation_bound_ms(op)
        if cost is None:
            what = ("the round trip to n%s" if op["leader_rtt_ms"] is None else "n%s's consensus round trip")
            return PhysicalBound(None, 0, (what + " (r%s) is not measured yet") % (op["served_by"], op["range_id"]))
        if op["step"] not in worst or cost > worst[op["step"]][0]:
            worst[op["step"]] = (cost, op["rounds"])
    return PhysicalBound(round(sum(c for c, _ in worst.values()), 3), sum(r for _, r in worst.values()))


def time_bound_ratio(time_ms: float, bound_ms: float | None) -> float | None:
    """time / bound; None when the bound is unknown or 0 (nothing to divide by)."""
    if bound_ms is None or bound_ms <= 0:
        return None
    return time_ms / bound_ms


def analyze_rows(trace: Sequence[TraceOp], statement_ms: float, names: dict[int, str],
                 regions: dict[int, str]) -> list[list]:
    """EXPLAIN ANALYZE's rows (ANALYZE_COLUMNS): one per traced operation, then `total` and
    `bound`. `names` maps table ids to names (for keys), `regions` node ids to regions."""
    rows: list[list] = []
    for op in trace:
        served = "" if op["served_by"] is None else "n%d (%s)" % (op["served_by"], regions.get(op["served_by"], "?"))
        rows.append([str(op["step"]), op["kind"], _op_span(op, names),
                     "" if op["range_id"] is None else str(op["range_id"]), served, op["rounds"],
                     round(op["ms"], 3), _op_detail(op)])
    steps = len({op["step"] for op in trace})
    rows.append(["total", "", "", "", "", sum(op["rounds"] for op in trace), round(statement_ms, 3),
                 "statement time at this gateway; %d range operation%s in %d step%s"
                 % (len(trace), "" if len(trace) == 1 else "s", steps, "" if steps == 1 else "s")])
    bound = physical_bound(trace)
    ratio = time_bound_ratio(statement_ms, bound.ms)
    if bound.ms is None:
        verdict = "unknown: " + bound.missing
    elif ratio is None:
        verdict = "time / bound undefined: the bound is 0 ms (no round trip between nodes)"
    else:
        verdict = "time / bound = %.2fx" % ratio
    rows.append(["bound", "", "", "", "", bound.rounds, bound.ms,
                 verdict + "; bound = sum over steps of (leader rtt + rounds x quorum rtt)"])
    return rows


def _op_span(op: TraceOp, names: dict[int, str]) -> str:
    if op["kind"] == "scan":
        return _span_text(op["keys"][0], op["end"], names)
    keys = sorted(op["keys"])
    if len(keys) == 1:
        return pretty_key(keys[0], names)
    return "%s .. %s (%d keys)" % (pretty_key(keys[0], names), pretty_key(keys[-1], names), len(keys))


def _span_text(start: bytes, end: bytes | None, names: dict[int, str]) -> str:
    """[start, end) as a person reads it: a whole table as /<table>/*, a table's end as
    /<table>/+inf."""
    end_text = None
    for table_id, name in names.items():
        table_start, table_end = table_span(table_id)
        if end == table_end:
            if start == table_start:
                return f"/{name}/*"
            end_text = f"/{name}/+inf"
    return "%s - %s" % (pretty_key(start, names), end_text or pretty_key(end, names, is_end=True))


def _op_detail(op: TraceOp) -> str:
    """Where the operation's bound comes from: the round trip to its leader, one consensus round's."""
    if op["served_by"] is None:
        to_leader = "in memory"
    elif op["leader_rtt_ms"] is None:
        to_leader = "leader rtt not measured yet"
    elif op["leader_rtt_ms"] == 0:
        to_leader = "the leader is this gateway"
    else:
        to_leader = "leader rtt %.1f ms" % op["leader_rtt_ms"]
    if op.get("follower"):
        # A follower read: the replica had closed the read's timestamp, so no leaseholder, no round.
        return "follower read: its replica had closed the timestamp; " + to_leader.replace("leader", "replica")
    quorum = "not measured yet" if op["quorum_rtt_ms"] is None else "%.1f ms" % op["quorum_rtt_ms"]
    return "%s, quorum rtt %s" % (to_leader, quorum)
