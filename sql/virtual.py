"""Virtual tables: rows the store computes when a query reads them, never stored.

Why: some answers come from the cluster itself rather than from a table - CockroachDB serves
them as ``crdb_internal`` tables and table functions, and users read them with a plain SELECT
so WHERE, ORDER BY, aggregates and joins work on them unchanged. A virtual table here is a
read-only `TableSchema` (never in the catalog: its name, ``crdb_internal.<function>``, cannot
be a user table's) plus a function from the KV and the call's arguments to rows. The planner
reads it through a `sql.plan.VirtualAccess`; the dialect admits it only as a FROM item of a
SELECT, so nothing can write to it.

The PostgreSQL system catalog's tables (``pg_catalog.pg_class``, ``information_schema.columns``,
...: sql/pg_catalog.py) are virtual tables too, read by name rather than called.

One table function exists so far:

``crdb_internal.check_consistency(stats_only BOOL, start_key BYTES, end_key BYTES)`` (or with
no arguments: every range) runs a consistency check of every range overlapping
``[start_key, end_key)`` now (raftstore.kvserver.consistency; an empty end_key is the end of the
keyspace) and returns one row per range in key order: ``range_id INT, start_key BYTES,
start_key_pretty TEXT, status TEXT ('consistent' | 'inconsistent' | 'incomplete'), detail
TEXT`` - the detail names the replicas that differ, or those that did not report and why.
``stats_only`` is accepted for CockroachDB compatibility and changes nothing: a check always
compares full checksums (there are no separate MVCC statistics to compare).

Pure apart from the KV call: the rows are computed by `kv.check_consistency(start, end)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sql import types as T
from sql.catalog import ColumnSchema, TableSchema
from sql.dialect import CHECK_CONSISTENCY
from sql.errors import SQLError
from sql.expr import Compiled, Compiler, EvalContext, Scope
from sql.kv import KV
from sql.pg_catalog import CATALOG_TABLES, catalog_rows

__all__ = ["VIRTUAL_TABLES", "VirtualTable", "compile_args", "virtual_rows"]


@dataclass(frozen=True)
class VirtualTable:
    schema: TableSchema
    signature: str                      # for messages: how to call it
    arg_types: tuple[str, ...]          # the arguments, all or none
    rows: Callable[..., list[list]]     # (kv, args, names) -> rows in the schema's column order


def _column(name: str, kind: str) -> ColumnSchema:
    return ColumnSchema(name, kind, False, None)


def _check_consistency_rows(kv: KV, args: list, names: dict[int, str]) -> list[list]:
    from sql.explain import pretty_key   # explain imports the planner, which imports us

    start, end = b"", None
    if args:
        stats_only, start, end = args
        if stats_only is None or start is None or end is None:
            raise SQLError("invalid_parameter", f"{CHECK_CONSISTENCY}: arguments must not be NULL")
        end = end or None               # '' is the end of the keyspace, as in CockroachDB
    return [[r["range_id"], r["start"], pretty_key(r["start"], names), r["status"], r["detail"]]
            for r in kv.check_consistency(start, end)]


VIRTUAL_TABLES: dict[str, VirtualTable] = {
    CHECK_CONSISTENCY: VirtualTable(
        TableSchema(0, CHECK_CONSISTENCY,
                    (_column("range_id", T.INT), _column("start_key", T.BYTES),
                     _column("start_key_pretty", T.TEXT), _column("status", T.TEXT), _column("detail", T.TEXT)),
                    ("start_key",)),   # rows come in start-key order, so ORDER BY start_key is free
        f"{CHECK_CONSISTENCY}(stats_only BOOL, start_key BYTES, end_key BYTES) or {CHECK_CONSISTENCY}()",
        (T.BOOL, T.BYTES, T.BYTES),
        _check_consistency_rows,
    ),
}


# The PostgreSQL system catalog (sql/pg_catalog.py): pg_catalog.* and information_schema.*, read by
# name, without arguments; their rows are built from our catalog when the statement runs.
def _catalog_table(name: str) -> VirtualTable:
    return VirtualTable(CATALOG_TABLES[name].schema, name, (), lambda kv, args, names: catalog_rows(kv, name))


VIRTUAL_TABLES.update({name: _catalog_table(name) for name in CATALOG_TABLES})


def compile_args(name: str, nodes: list, position: int | None) -> list[Compiled]:
    """The call's arguments compiled to the table's types (constants only: no column is in
    scope). SQLError for a wrong number of arguments or a type that does not fit."""
    table = VIRTUAL_TABLES[name]
    if nodes and len(nodes) != len(table.arg_types):
        raise SQLError("syntax", f"{name} takes {len(table.arg_types)} arguments or none, got {len(nodes)}: "
                       f"{table.signature}", position)
    compiler = Compiler(Scope(), clause=f"the arguments of {name}")
    return [compiler.coerce(compiler.compile(node), kind, node, what=f"argument {i + 1} of {name}")
            for i, (node, kind) in enumerate(zip(nodes, table.arg_types))]


def virtual_rows(kv: KV, name: str, args: list[Compiled], ctx: EvalContext,
                 table_names: Callable[[], dict[int, str]]) -> list[list]:
    """The rows of virtual table `name` for this call (arguments evaluated now). `table_names`
    (table names by id) is called only by a table that shows them. A catalog table's rows are
    built once per statement (the session's CatalogView keeps them), however often its
    subqueries read it."""
    if name in CATALOG_TABLES and ctx.catalog is not None:
        return ctx.catalog.catalog_rows(name)
    return VIRTUAL_TABLES[name].rows(kv, [arg.fn((), ctx) for arg in args], table_names())
