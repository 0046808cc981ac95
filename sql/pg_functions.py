"""The PostgreSQL functions and casts that clients' catalog queries call: ``version()``,
``current_schema()``, ``format_type``, ``pg_get_expr``, ``pg_table_is_visible``,
``set_config``, ``'users'::regclass``, ``oid::regclass::text`` and their neighbours.

Why: drivers and ORMs learn the server and its tables through these functions (SQLAlchemy
regexes ``select pg_catalog.version()``, psql's ``\\d`` calls ``format_type`` and
``pg_get_expr``). Each keeps its PostgreSQL meaning over our catalog (sql/pg_catalog.py's OIDs
and names); ``pg_catalog.f(...)`` is the same function as ``f(...)``.

OID types: ``regclass``, ``regtype`` and ``oid`` are INT here (the engine has no OID types).
``'users'::regclass`` is the table's OID (undefined_table 42P01 for no such table), and a
regclass or regtype cast directly cast on to text (``c.oid::regclass::text``) gives the
name, as PostgreSQL prints those types.

Functions that read the catalog or the session (``'t'::regclass``, ``pg_get_indexdef``,
``current_setting``, ``set_config``) do so when the statement runs, through ``ctx.catalog``,
a `CatalogView` of the running session that sql/execute.py puts in the EvalContext: reads go
through the statement's KV (same snapshot as the catalog tables), at most one catalog scan per
statement. Pure otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from sql import types as T
from sql.catalog import ROWID_DEFAULT_SQL, TableSchema, list_tables, read_table
from sql.dialect import identifier_name, node_position, quote_identifier
from sql.errors import SQLError
from sql.expr import Compiled, Compiler, EvalContext
from sql.pg_catalog import (
    CATALOG_TABLE_BY_OID,
    CATALOG_TABLE_OIDS,
    NAMESPACE_OIDS,
    DATABASE_NAME,
    PG_TYPE_BY_NAME,
    PG_TYPE_BY_OID,
    PUBLIC_SCHEMA,
    ROLE_OID,
    USER_NAME,
    UTF8_ENCODING,
    catalog_rows,
    constraint_oid,
    format_type,
    index_name,
    index_oid,
    relation_name,
    table_oid,
)
from sql.pg_settings import VERSION_TEXT

# --- the session's catalog, as functions see it ----------------------------------------------------


class CatalogView:
    """What catalog functions read while one statement runs: tables by name and by OID (read
    through the session's KV, cached for the statement) and the session's settings. Made per
    statement by the session (sql/execute.py); `session` is a sql.execute.Session."""

    def __init__(self, session) -> None:
        self._session = session
        self._by_name: dict[str, TableSchema | None] = {}
        self._by_oid: dict[int, tuple[str, TableSchema]] | None = None
        self._rows: dict[str, list[list]] = {}
        self._sequences: set[str] | None = None

    def catalog_rows(self, name: str) -> list[list]:
        """The rows of catalog table `name` (sql/pg_catalog.py), built once per statement."""
        if name not in self._rows:
            self._rows[name] = catalog_rows(self._session.kv, name)
        return self._rows[name]

    def table(self, name: str) -> TableSchema | None:
        if name not in self._by_name:
            self._by_name[name] = read_table(self._session.kv, name)
        return self._by_name[name]

    def relation(self, oid: int) -> tuple[str, TableSchema] | None:
        """(kind 'table' | 'index' | 'constraint', schema) of a relation or constraint OID."""
        if self._by_oid is None:
            self._by_oid = {}
            for schema in list_tables(self._session.kv):
                self._by_oid[table_oid(schema.id)] = ("table", schema)
                self._by_oid[index_oid(schema.id)] = ("index", schema)
                self._by_oid[constraint_oid(schema.id)] = ("constraint", schema)
        return self._by_oid.get(oid)

    def is_serial_sequence(self, name: str) -> bool:
        """True if `name` is ``<table>_<column>_seq`` of a column filled by unique_rowid() (a
        SERIAL): the sequence PostgreSQL would have made for it."""
        if self._sequences is None:
            self._sequences = {f"{schema.name}_{column.name}_seq" for schema in list_tables(self._session.kv)
                               for column in schema.columns if column.default_sql == ROWID_DEFAULT_SQL}
        return name in self._sequences

    def setting(self, name: str) -> str | None:
        from sql.session_vars import SESSION_VARS

        if name not in SESSION_VARS:
            return None
        session = self._session
        return session.settings.get(name, session.defaults.get(name, SESSION_VARS[name]))

    def set_setting(self, name: str, value: str) -> str:
        from sql.session_vars import set_value

        kept = set_value(name, value)
        if kept is None:
            self._session.settings.pop(name, None)
            return self.setting(name) or ""
        self._session.settings[name] = kept
        return kept

    @property
    def backend_pid(self) -> int:
        """The pgwire server's process id for this connection (``session.backend_pid``, sent
        in BackendKeyData), else a number stable for the session."""
        pid = getattr(self._session, "backend_pid", None)
        return pid if pid is not None else id(self._session) % 2_147_483_647


def _catalog(ctx: EvalContext, what: str) -> CatalogView:
    view = getattr(ctx, "catalog", None)
    if view is None:
        raise SQLError("feature_not_supported", f"{what} reads the catalog and can only run in a statement, "
                       "not while planning or in EXPLAIN")
    return view


# --- functions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgFunction:
    arg_types: tuple[str, ...]    # every argument it takes
    required: int                 # how many of them must be given
    result: str
    impl: Callable[[EvalContext, list], object]
    strict: bool = True           # a NULL argument gives NULL without calling impl


def _regclass_text(ctx: EvalContext, oid: int) -> str:
    if oid in CATALOG_TABLE_BY_OID:   # pg_catalog is on the search path: its names print bare
        return CATALOG_TABLE_BY_OID[oid].removeprefix("pg_catalog.")
    found = _catalog(ctx, "regclass").relation(oid)
    if found is None:
        return str(oid)               # PostgreSQL prints an unknown OID as its number
    kind, schema = found
    return schema.name if kind == "table" else index_name(schema)


def _constraintdef(ctx: EvalContext, args: list) -> str | None:
    found = _catalog(ctx, "pg_get_constraintdef").relation(args[0])
    if found is None or found[0] != "constraint":
        return None
    return "PRIMARY KEY (" + ", ".join(quote_identifier(n) for n in found[1].pk) + ")"


def _indexdef(ctx: EvalContext, args: list) -> str | None:
    found = _catalog(ctx, "pg_get_indexdef").relation(args[0])
    if found is None or found[0] != "index":
        return None
    schema = found[1]
    column = args[1] if len(args) > 1 else 0
    if column:
        return quote_identifier(schema.pk[column - 1]) if 0 < column <= len(schema.pk) else ""
    return (f"CREATE UNIQUE INDEX {quote_identifier(index_name(schema))} ON {PUBLIC_SCHEMA}."
            f"{quote_identifier(schema.name)} USING btree ({', '.join(quote_identifier(n) for n in schema.pk)})")


def _table_is_visible(ctx: EvalContext, args: list) -> bool | None:
    found = _catalog(ctx, "pg_table_is_visible").relation(args[0])
    return None if found is None or found[0] == "constraint" else True


def _set_config(ctx: EvalContext, args: list) -> str:
    name, value, is_local = args
    if name is None:
        raise SQLError("invalid_value", "set_config: the setting name must not be NULL")
    view = _catalog(ctx, "set_config")
    name = name.lower()
    if view.setting(name) is None:
        raise SQLError("undefined_object", f'unrecognized configuration parameter "{name}"')
    if is_local:
        # SET LOCAL lasts for the transaction, and a statement is its own transaction here.
        from sql.session_vars import set_value

        return set_value(name, value or "") or ""
    return view.set_setting(name, "default" if value is None else value)


def _current_setting(ctx: EvalContext, args: list) -> str | None:
    value = _catalog(ctx, "current_setting").setting(args[0].lower())
    if value is None and not (len(args) > 1 and args[1]):
        raise SQLError("undefined_object", f'unrecognized configuration parameter "{args[0]}"')
    return value


def _nextval(ctx: EvalContext, args: list) -> int:
    """nextval('t_c_seq') of a SERIAL column t.c: a fresh unique_rowid() value, what the column's
    default would give (there are no sequences: SQLAlchemy asks for this one before an INSERT
    when it cannot use RETURNING)."""
    schema_name, name = _split_qualified(args[0])
    if schema_name not in (None, PUBLIC_SCHEMA) or not _catalog(ctx, "nextval").is_serial_sequence(name):
        raise SQLError("undefined_table", f'relation "{args[0]}" does not exist; sequences exist here only as '
                       "the SERIAL column's <table>_<column>_seq, whose nextval is unique_rowid()")
    return ctx.new_rowid()


def _constant(value: object) -> Callable[[EvalContext, list], object]:
    return lambda ctx, args: value


_OID = T.INT
PG_FUNCTIONS: dict[str, PgFunction] = {
    "version": PgFunction((), 0, T.TEXT, _constant(VERSION_TEXT)),
    "current_schema": PgFunction((), 0, T.TEXT, _constant(PUBLIC_SCHEMA)),
    "current_schemas": PgFunction((T.BOOL,), 1, T.TEXT,
                                  lambda ctx, a: "{pg_catalog,public}" if a[0] else "{public}"),
    "current_database": PgFunction((), 0, T.TEXT, _constant(DATABASE_NAME)),
    "current_catalog": PgFunction((), 0, T.TEXT, _constant(DATABASE_NAME)),
    "current_user": PgFunction((), 0, T.TEXT, _constant(USER_NAME)),
    "session_user": PgFunction((), 0, T.TEXT, _constant(USER_NAME)),
    "pg_backend_pid": PgFunction((), 0, T.INT, lambda ctx, a: _catalog(ctx, "pg_backend_pid").backend_pid),
    "pg_is_in_recovery": PgFunction((), 0, T.BOOL, _constant(False)),
    "format_type": PgFunction((_OID, T.INT), 2, T.TEXT, lambda ctx, a: format_type(a[0], a[1]), strict=False),
    "pg_get_expr": PgFunction((T.TEXT, _OID, T.BOOL), 2, T.TEXT, lambda ctx, a: a[0]),
    "pg_get_constraintdef": PgFunction((_OID, T.BOOL), 1, T.TEXT, _constraintdef),
    "pg_get_indexdef": PgFunction((_OID, T.INT, T.BOOL), 1, T.TEXT, _indexdef),
    "pg_table_is_visible": PgFunction((_OID,), 1, T.BOOL, _table_is_visible),
    "pg_type_is_visible": PgFunction((_OID,), 1, T.BOOL, lambda ctx, a: True if a[0] in PG_TYPE_BY_OID else None),
    "obj_description": PgFunction((_OID, T.TEXT), 1, T.TEXT, _constant(None)),
    "col_description": PgFunction((_OID, T.INT), 2, T.TEXT, _constant(None)),
    "shobj_description": PgFunction((_OID, T.TEXT), 2, T.TEXT, _constant(None)),
    "pg_get_userbyid": PgFunction((_OID,), 1, T.TEXT,
                                  lambda ctx, a: USER_NAME if a[0] == ROLE_OID else f"unknown (OID={a[0]})"),
    "pg_encoding_to_char": PgFunction((T.INT,), 1, T.TEXT, lambda ctx, a: "UTF8" if a[0] == UTF8_ENCODING else ""),
    "pg_get_serial_sequence": PgFunction((T.TEXT, T.TEXT), 2, T.TEXT, _constant(None)),
    "has_table_privilege": PgFunction((T.TEXT, T.TEXT, T.TEXT), 2, T.BOOL, _constant(True)),
    "has_schema_privilege": PgFunction((T.TEXT, T.TEXT, T.TEXT), 2, T.BOOL, _constant(True)),
    "has_database_privilege": PgFunction((T.TEXT, T.TEXT, T.TEXT), 2, T.BOOL, _constant(True)),
    "set_config": PgFunction((T.TEXT, T.TEXT, T.BOOL), 3, T.TEXT, _set_config, strict=False),
    "current_setting": PgFunction((T.TEXT, T.BOOL), 1, T.TEXT, _current_setting),
}

def _json_build_object(ctx: EvalContext, args: list) -> str:
    if len(args) % 2:
        raise SQLError("invalid_parameter", "json_build_object() takes an even number of arguments (key, value, ...)")
    pairs = {}
    for key, value in zip(args[::2], args[1::2]):
        if key is None:
            raise SQLError("invalid_value", "json_build_object(): a key must not be NULL")
        pairs[str(key)] = value.isoformat() if hasattr(value, "isoformat") else \
            value.hex() if isinstance(value, bytes) else value
    return json.dumps(pairs, separators=(", ", " : "))


VARIADIC = ()   # arg_types of a function taking any number of arguments of any type
PG_FUNCTIONS.update({
    "json_build_object": PgFunction(VARIADIC, 0, T.TEXT, _json_build_object, strict=False),
    "pg_collation_is_visible": PgFunction((_OID,), 1, T.BOOL, lambda ctx, a: True),
    "pg_relation_is_publishable": PgFunction((_OID,), 1, T.BOOL, lambda ctx, a: False),
    "quote_ident": PgFunction((T.TEXT,), 1, T.TEXT, lambda ctx, a: quote_identifier(a[0])),
    # to_regclass / to_regtype: the cast's OID, or NULL where the cast is an error (psycopg's TypeInfo)
    "to_regclass": PgFunction((T.TEXT,), 1, T.INT, lambda ctx, a: _or_null(_regclass, ctx, a[0])),
    "to_regtype": PgFunction((T.TEXT,), 1, T.INT, lambda ctx, a: _or_null(lambda c, v: _regtype(v), ctx, a[0])),
    "pg_get_statisticsobjdef_columns": PgFunction((_OID,), 1, T.TEXT, _constant(None)),
    "nextval": PgFunction((T.TEXT,), 1, T.INT, _nextval),
})


def _or_null(cast: Callable[[EvalContext, object], int | None], ctx: EvalContext, value: object) -> int | None:
    try:
        return cast(ctx, value)
    except SQLError as error:
        if error.code in ("undefined_table", "undefined_object"):
            return None
        raise

# sqlglot's own nodes for some of them
_NODE_FUNCTIONS = {exp.CurrentVersion: "version", exp.CurrentSchema: "current_schema",
                   exp.CurrentSchemas: "current_schemas", exp.CurrentDatabase: "current_database",
                   exp.CurrentCatalog: "current_catalog", exp.CurrentUser: "current_user",
                   exp.SessionUser: "session_user"}
_PRIVILEGE_FUNCTIONS = frozenset({"has_table_privilege", "has_schema_privilege", "has_database_privilege"})


def compile_pg_function(compiler: Compiler, node: exp.Expr) -> Compiled:
    """A catalog function call (an ``exp.Anonymous``, one of sqlglot's nodes for them, or
    ``pg_catalog.f(...)``) compiled. SQLError for a wrong number or type of arguments."""
    if isinstance(node, exp.Dot):
        inner = node.expression
        if not (isinstance(node.this, exp.Identifier) and identifier_name(node.this) == "pg_catalog"
                and isinstance(inner, exp.Func)):
            raise SQLError("unsupported", f"not supported: {node.sql()}", node_position(node))
        return compiler.compile(inner)
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        arg_nodes = list(node.expressions)
    else:
        name = _NODE_FUNCTIONS[type(node)]
        arg_nodes = [node.this] if node.args.get("this") is not None else []
    spec = PG_FUNCTIONS[name]
    if spec.arg_types is not VARIADIC and not spec.required <= len(arg_nodes) <= len(spec.arg_types):
        wanted = str(spec.required) if spec.required == len(spec.arg_types) else \
            f"{spec.required} to {len(spec.arg_types)}"
        raise SQLError("syntax", f"{name}() takes {wanted} arguments, got {len(arg_nodes)}", node_position(node))
    arg_types = spec.arg_types
    if name in _PRIVILEGE_FUNCTIONS and len(arg_nodes) == 2:
        arg_types = arg_types[1:]     # has_table_privilege(table, privilege): no user
    if spec.arg_types is VARIADIC or name in _PRIVILEGE_FUNCTIONS:   # any type (a table by name or OID)
        args = [compiler.compile(a) for a in arg_nodes]
        args = [compiler.coerce(c, T.TEXT, a) if c.type in (T.UNKNOWN, T.NULL) else c
                for c, a in zip(args, arg_nodes)]
    else:
        args = [compiler.coerce(compiler.compile(a), kind, a, what=f"argument {i + 1} of {name}()")
                for i, (a, kind) in enumerate(zip(arg_nodes, arg_types))]
    fns = [a.fn for a in args]
    impl, strict = spec.impl, spec.strict

    def call(row, ctx):
        values = [f(row, ctx) for f in fns]
        if strict and any(v is None for v in values):
            return None
        return impl(ctx, values)

    return Compiled(call, spec.result, all(a.const for a in args), name)


# --- casts ---------------------------------------------------------------------------------------

_OID_TYPES = frozenset({"REGCLASS", "REGTYPE", "OID", "REGNAMESPACE"})
_TEXT_TYPES = frozenset({"TEXT", "VARCHAR", "NAME"})
_TYPE_ALIASES = {"bigint": "int8", "integer": "int4", "int": "int4", "smallint": "int2", "boolean": "bool",
                 "double precision": "float8", "real": "float4", "character varying": "varchar",
                 "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
                 '"char"': "char", "string": "text", "bytes": "bytea", "float": "float8"}


def _qualified_type(to: exp.Expr) -> str | None:
    """``text`` for the target of ``x::pg_catalog.text``, else None."""
    if isinstance(to, exp.DataType) and to.this == exp.DType.USERDEFINED:
        kind = to.args.get("kind")
        if (isinstance(kind, exp.Dot) and isinstance(kind.this, exp.Identifier)
                and identifier_name(kind.this) == "pg_catalog" and isinstance(kind.expression, exp.Identifier)):
            return identifier_name(kind.expression)
    return None


def _unqualified(to: exp.Expr) -> exp.Expr:
    """A cast's target without its ``pg_catalog.`` qualifier (a new node; the cached tree is
    never changed)."""
    name = _qualified_type(to)
    if name is None:
        return to
    if name.upper() in _OID_TYPES:
        return exp.ObjectIdentifier(this=name.upper())
    if name == "char":
        return exp.DataType(this=exp.DType.USERDEFINED, kind='"char"')
    try:
        return exp.DataType.build(name, dialect="postgres")
    except Exception:   # sqlglot's parse errors are of several kinds; the name is then unknown
        raise SQLError("undefined_object", f'type "pg_catalog.{name}" does not exist') from None


def _pg_type_name(to: exp.Expr) -> str | None:
    """The upper-case name of a cast's target type when it is one only the catalog has."""
    to = _unqualified(to)
    if isinstance(to, exp.ObjectIdentifier):
        return str(to.this).upper()
    if isinstance(to, exp.DataType):
        kind = to.this.name if hasattr(to.this, "name") else str(to.this)
        if kind == "USERDEFINED":
            custom = str(to.args.get("kind") or "").strip('"').lower()
            return "CHAR" if custom == "char" else None
        return kind if kind in ("NAME", "SMALLINT") else None
    return None


def handles_cast(node: exp.Cast) -> bool:
    """True for a cast the catalog compiles (`compile_pg_cast`): to an OID type, ``name``,
    ``"char"``, ``smallint``, or a regclass / regtype cast cast on to text."""
    to = node.args["to"]
    if _pg_type_name(to) is not None or _qualified_type(to) is not None:
        return True
    inner = node.this
    return (isinstance(to, exp.DataType) and to.this.name in _TEXT_TYPES and isinstance(inner, exp.Cast)
            and _pg_type_name(inner.args["to"]) in ("REGCLASS", "REGTYPE", "REGNAMESPACE"))


def compile_pg_cast(compiler: Compiler, node: exp.Cast) -> Compiled:
    to = _unqualified(node.args["to"])
    target = _pg_type_name(to)
    if target is None and to is not node.args["to"]:   # x::pg_catalog.text: as x::text
        plain = exp.Cast(this=node.this, to=to)
        plain.meta.update(node.meta)
        plain.parent = node.parent
        return compiler.compile(plain)
    if target is None:   # ::regclass::text or ::regtype::text: the name
        inner = compiler.compile(node.this)
        fn = inner.fn
        inner_type = _pg_type_name(node.this.args["to"])
        if inner_type == "REGCLASS":
            return Compiled(lambda row, ctx: None if (v := fn(row, ctx)) is None else _regclass_text(ctx, v),
                            T.TEXT, inner.const, "text")
        if inner_type == "REGNAMESPACE":
            return Compiled(lambda row, ctx: None if (v := fn(row, ctx)) is None else _NAMESPACE_BY_OID.get(v, str(v)),
                            T.TEXT, inner.const, "text")
        return Compiled(lambda row, ctx: None if (v := fn(row, ctx)) is None else _regtype_text(v), T.TEXT,
                        inner.const, "text")
    if isinstance(to, exp.ObjectIdentifier) and target not in _OID_TYPES:
        raise SQLError("unsupported", f"not supported: type {target.lower()}; the OID types here are "
                       "oid, regclass, regtype and regnamespace", node_position(node))
    a = compiler.compile(node.this)
    name = a.name if isinstance(node.this, exp.Column) else target.lower()
    if target in ("NAME", "CHAR"):
        if a.type not in (T.TEXT, *T.UNTYPED):
            raise SQLError("datatype_mismatch", f"cannot cast {a.type} to {target.lower()}", node_position(node))
        return Compiled(a.fn, T.TEXT, a.const, name)
    if a.type not in (T.INT, T.TEXT, *T.UNTYPED):
        raise SQLError("datatype_mismatch", f"cannot cast {a.type} to {target.lower()}", node_position(node))
    fa = a.fn
    if target == "SMALLINT":
        def int2(row, ctx):
            value = T.cast_value(fa(row, ctx), T.INT)
            if value is not None and not -32768 <= value <= 32767:
                raise SQLError("datatype_mismatch", "smallint out of range")
            return value

        return Compiled(int2, T.INT, a.const, name)
    if target == "REGCLASS":
        return Compiled(lambda row, ctx: _regclass(ctx, fa(row, ctx)), T.INT, a.const, name)
    if target == "REGTYPE":
        return Compiled(lambda row, ctx: _regtype(fa(row, ctx)), T.INT, a.const, name)
    if target == "REGNAMESPACE":
        return Compiled(lambda row, ctx: _regnamespace(fa(row, ctx)), T.INT, a.const, name)
    return Compiled(lambda row, ctx: _oid(fa(row, ctx)), T.INT, a.const, name)


def _oid(value: object) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SQLError("datatype_mismatch", f'invalid input syntax for type oid: "{value}"') from None
    if not 0 <= number <= 4_294_967_295:
        raise SQLError("datatype_mismatch", f'value "{value}" is out of range for type oid')
    return number


def _regclass(ctx: EvalContext, value: object) -> int | None:
    """``'users'::regclass``: the OID of the table (or primary-key index) named, as
    PostgreSQL resolves a relation name: ``public.`` or no schema, quoted or folded."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    schema_name, name = _split_qualified(text)
    view = _catalog(ctx, "regclass")
    relation = relation_name(schema_name, name)
    if relation is not None:
        return CATALOG_TABLE_OIDS[relation]
    if schema_name in (None, PUBLIC_SCHEMA):
        schema = view.table(name)
        if schema is not None:
            return table_oid(schema.id)
        if name.endswith("_pkey"):
            schema = view.table(name[: -len("_pkey")])
            if schema is not None:
                return index_oid(schema.id)
    raise SQLError("undefined_table", f'relation "{text}" does not exist')


def _split_qualified(text: str) -> tuple[str | None, str]:
    """``'public."Users"'`` -> ('public', 'Users'): dots split, quotes keep case, else lower."""
    parts, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and text[i + 1: i + 2] == '"':
                current.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch if quoted else ch.lower())
        i += 1
    parts.append("".join(current))
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


_NAMESPACE_BY_OID = {oid: name for name, oid in NAMESPACE_OIDS.items()}


def _regnamespace(value: object) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    name = _split_qualified(text)[1]
    if name not in NAMESPACE_OIDS:
        raise SQLError("undefined_object", f'schema "{text}" does not exist')
    return NAMESPACE_OIDS[name]


def _regtype_text(oid: int) -> str:
    """A regtype as PostgreSQL prints it: the type's SQL name, or the number of an unknown OID."""
    return PG_TYPE_BY_OID[oid].sql_name if oid in PG_TYPE_BY_OID else str(oid)


def _regtype(value: object) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = " ".join(str(value).strip().lower().split())
    if text.isdigit():
        return int(text)
    name = _TYPE_ALIASES.get(text, text.removeprefix("pg_catalog."))
    found = PG_TYPE_BY_NAME.get(name)
    if found is None:
        raise SQLError("undefined_object", f'type "{value}" does not exist')
    return found.oid
