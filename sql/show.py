"""What the SHOW statements about the schema answer: a table's columns, the CREATE TABLE that
makes it again, and the databases.

Why its own stage: these answers are the catalog made readable - the shell's ``\\d`` and ``\\l``
and CockroachDB's ``SHOW COLUMNS FROM``, ``SHOW CREATE TABLE`` and ``SHOW DATABASES`` all read
them - and one of them, the CREATE TABLE text, must parse back into the same table (columns,
types, nullability, defaults, key), which tests/test_sql_exec.py checks by running it.

Each function returns (column names, column types, rows). Pure: the caller reads the schema.
"""

from __future__ import annotations

from sql import types as T
from sql.catalog import ColumnSchema, TableSchema
from sql.dialect import locality_sql, quote_identifier

DATABASE_NAME = "defaultdb"   # the one database: every table lives in it, as in a fresh CockroachDB

Answer = tuple[list[str], list[str], list[list]]


def show_columns(schema: TableSchema) -> Answer:
    """One row per column, in table order, as CockroachDB's SHOW COLUMNS names them (the
    hidden rowid key of a table without a PRIMARY KEY too, with is_hidden true)."""
    hidden = schema.hidden
    rows = [[c.name, c.type, not c.not_null, c.default_sql or "", c.name in schema.pk, c.name in hidden]
            for c in schema.columns]
    return (["column_name", "data_type", "is_nullable", "column_default", "primary_key", "is_hidden"],
            [T.TEXT, T.TEXT, T.BOOL, T.TEXT, T.BOOL, T.BOOL], rows)


def create_table_sql(schema: TableSchema, home: str | None = None) -> str:
    """A CREATE TABLE statement (one line) that makes a table with this schema's columns,
    types, nullability, defaults and primary key, and its home region `home` (None: the
    primary region, said by no clause). The hidden rowid key is left out: the statement
    without a PRIMARY KEY makes it again."""
    hidden = schema.hidden
    parts = [_column_sql(c) for c in schema.columns if c.name not in hidden]
    if not hidden:
        parts.append("PRIMARY KEY (" + ", ".join(quote_identifier(name) for name in schema.pk) + ")")
    locality = "" if home is None else " " + locality_sql(home)
    return f"CREATE TABLE {quote_identifier(schema.name)} ({', '.join(parts)}){locality}"


def _column_sql(column: ColumnSchema) -> str:
    text = f"{quote_identifier(column.name)} {column.type}"
    if column.not_null:
        text += " NOT NULL"
    if column.default_sql is not None:
        text += f" DEFAULT {column.default_sql}"
    return text


def show_create(schema: TableSchema, home: str | None = None) -> Answer:
    return ["table_name", "create_statement"], [T.TEXT, T.TEXT], [[schema.name, create_table_sql(schema, home)]]


def show_databases() -> Answer:
    return ["database_name"], [T.TEXT], [[DATABASE_NAME]]
