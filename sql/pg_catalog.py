"""The PostgreSQL system catalog as virtual tables: ``pg_catalog.*`` and ``information_schema.*``
built from our catalog when a statement reads them.

Why: psql, psycopg, pg8000 and SQLAlchemy learn what a database holds by querying
``pg_class``, ``pg_attribute``, ``pg_type``, ``pg_index``, ``information_schema.columns`` and
their neighbours. CockroachDB answers those queries with virtual tables computed from its own
descriptors, and so do we: each table here is a read-only `TableSchema` plus a function from
the KV to rows, served by sql/virtual.py like ``crdb_internal.check_consistency``, so the
clients' queries run through the ordinary planner (WHERE, joins, ORDER BY) and are never
recognised by their text.

Invariants:

* **Stable OIDs.** A user table's OID is ``TABLE_OID_BASE + 3 * id``, its primary-key index's
  one more, its primary-key constraint's two more (`table_oid`, `index_oid`, `constraint_oid`):
  table ids are never reused (sql/catalog.py), so an OID names one table forever. Types carry
  PostgreSQL's own OIDs (`PG_TYPES`), namespaces the ones PostgreSQL gives ``pg_catalog`` (11)
  and ``public`` (2200).
* **One snapshot.** Every row comes from `sql.catalog.list_tables(kv)`, read through the
  statement's KV, so all catalog tables of one statement agree with each other and with the
  statement's timestamp.
* **Arrays as text.** The engine has no array type yet: array columns (``conkey``,
  ``indkey``, ...) hold PostgreSQL's text form of the array (``{1,2}``; ``1 2`` for the
  ``int2vector`` ``indkey``). sql/DIFFERENCES.md says so.

User tables live in schema ``public`` of database ``defaultdb``; unqualified ``pg_class``
means ``pg_catalog.pg_class`` (PostgreSQL puts pg_catalog first on every search path), while
``information_schema`` tables must be qualified. Pure apart from the catalog read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sql import types as T
from sql.catalog import ColumnSchema, TableSchema, list_tables
from sql.kv import KV

PG_CATALOG = "pg_catalog"
INFORMATION_SCHEMA = "information_schema"
PUBLIC_SCHEMA = "public"
CRDB_INTERNAL_SCHEMA = "crdb_internal"
DATABASE_NAME = "defaultdb"           # sql/show.py's one database
USER_NAME = "root"                    # the only role until users exist (insecure mode)

NAMESPACE_OIDS = {PG_CATALOG: 11, PUBLIC_SCHEMA: 2200, INFORMATION_SCHEMA: 13_000, CRDB_INTERNAL_SCHEMA: 13_001}
DATABASE_OID = 100
ROLE_OID = 10                          # PostgreSQL's bootstrap superuser
HEAP_AM_OID, BTREE_AM_OID = 2, 403
DEFAULT_COLLATION_OID, C_COLLATION_OID = 100, 950
DEFAULT_TABLESPACE_OID, GLOBAL_TABLESPACE_OID = 1663, 1664
UTF8_ENCODING = 6                      # pg_encoding_to_char(6) = 'UTF8'
TABLE_OID_BASE = 100_000
ATTRDEF_OID_BASE = 1_000_000_000       # + table id * ATTRDEF_COLUMNS_MAX + attnum
ATTRDEF_COLUMNS_MAX = 4096


def table_oid(table_id: int) -> int:
    return TABLE_OID_BASE + 3 * table_id


def index_oid(table_id: int) -> int:
    return TABLE_OID_BASE + 3 * table_id + 1


def constraint_oid(table_id: int) -> int:
    return TABLE_OID_BASE + 3 * table_id + 2


def index_name(schema: TableSchema) -> str:
    """The primary key index's (and constraint's) name, as PostgreSQL names it."""
    return f"{schema.name}_pkey"


# --- types ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgType:
    oid: int
    name: str            # typname
    sql_name: str        # format_type's answer, information_schema's data_type
    length: int          # typlen (-1: variable)
    category: str        # typcategory
    array_oid: int       # typarray
    collatable: bool = False


PG_TYPES: tuple[PgType, ...] = (
    PgType(16, "bool", "boolean", 1, "B", 1000),
    PgType(17, "bytea", "bytea", -1, "U", 1001),
    PgType(18, "char", '"char"', 1, "Z", 1002, True),
    PgType(19, "name", "name", 64, "S", 1003, True),
    PgType(20, "int8", "bigint", 8, "N", 1016),
    PgType(21, "int2", "smallint", 2, "N", 1005),
    PgType(23, "int4", "integer", 4, "N", 1007),
    PgType(25, "text", "text", -1, "S", 1009, True),
    PgType(26, "oid", "oid", 4, "N", 1028),
    PgType(700, "float4", "real", 4, "N", 1021),
    PgType(701, "float8", "double precision", 8, "N", 1022),
    PgType(1043, "varchar", "character varying", -1, "S", 1015, True),
    PgType(1114, "timestamp", "timestamp without time zone", 8, "D", 1115),
    PgType(1184, "timestamptz", "timestamp with time zone", 8, "D", 1185),
    PgType(1700, "numeric", "numeric", -1, "N", 1231),
    PgType(2205, "regclass", "regclass", 4, "N", 2210),
    PgType(2206, "regtype", "regtype", 4, "N", 2211),
)
PG_TYPE_BY_OID = {t.oid: t for t in PG_TYPES}
PG_TYPE_BY_NAME = {t.name: t for t in PG_TYPES}

# Our column types as PostgreSQL types: what RowDescription says and pg_attribute.atttypid holds.
PG_TYPE_OIDS: dict[str, int] = {T.INT: 20, T.FLOAT: 701, T.TEXT: 25, T.BOOL: 16, T.BYTES: 17, T.TIMESTAMP: 1114}


def format_type(oid: int | None, typmod: int | None = None) -> str | None:
    """PostgreSQL's format_type: the SQL name of type `oid` (``???`` for an unknown one)."""
    if oid is None:
        return None
    found = PG_TYPE_BY_OID.get(oid)
    return found.sql_name if found is not None else "???"


# --- the virtual tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogTable:
    schema: TableSchema
    rows: Callable[[KV], list[list]]   # rows in the schema's column order


def _columns(spec: str) -> tuple[ColumnSchema, ...]:
    """``"oid:i relname:t ..."`` -> columns (i INT, f FLOAT, t TEXT, b BOOL)."""
    kinds = {"i": T.INT, "f": T.FLOAT, "t": T.TEXT, "b": T.BOOL}
    return tuple(ColumnSchema(name, kinds[kind], False, None)
                 for name, kind in (item.split(":") for item in spec.split()))


CATALOG_TABLES: dict[str, CatalogTable] = {}


def _table(schema_name: str, name: str, spec: str):
    """Register the function below it as the rows of virtual table ``schema_name.name``."""
    full = f"{schema_name}.{name}"

    def register(rows: Callable[[KV], list[list]]):
        columns = _columns(spec)
        CATALOG_TABLES[full] = CatalogTable(TableSchema(0, full, columns, (columns[0].name,)), rows)
        return rows

    return register


def _empty(schema_name: str, name: str, spec: str) -> None:
    _table(schema_name, name, spec)(lambda kv: [])


def _user_tables(kv: KV) -> list[TableSchema]:
    return sorted(list_tables(kv), key=lambda s: s.id)


@_table(PG_CATALOG, "pg_namespace", "oid:i nspname:t nspowner:i nspacl:t")
def _pg_namespace(kv: KV) -> list[list]:
    return [[oid, name, ROLE_OID, None] for name, oid in NAMESPACE_OIDS.items()]


@_table(PG_CATALOG, "pg_class",
        "oid:i relname:t relnamespace:i reltype:i reloftype:i relowner:i relam:i relfilenode:i "
        "reltablespace:i relpages:i reltuples:f relallvisible:i reltoastrelid:i relhasindex:b "
        "relisshared:b relpersistence:t relkind:t relnatts:i relchecks:i relhasoids:b relhasrules:b "
        "relhastriggers:b relhassubclass:b relrowsecurity:b relforcerowsecurity:b relispopulated:b "
        "relreplident:t relispartition:b relrewrite:i relfrozenxid:i relminmxid:i relacl:t "
        "reloptions:t relpartbound:t")
def _pg_class(kv: KV) -> list[list]:
    rows = []
    public = NAMESPACE_OIDS[PUBLIC_SCHEMA]
    for s in _user_tables(kv):
        common = [public, 0, 0, ROLE_OID]
        tail = [0, False, False, False, False, False, False, True, "d", False, 0, 0, 0, None, None, None]
        rows.append([table_oid(s.id), s.name, *common, HEAP_AM_OID, table_oid(s.id), 0, 0, -1.0, 0, 0, True,
                     False, "p", "r", len(s.columns), *tail])
        rows.append([index_oid(s.id), index_name(s), *common, BTREE_AM_OID, index_oid(s.id), 0, 0, 0.0, 0, 0,
                     False, False, "p", "i", len(s.pk), *tail])
    return rows


@_table(PG_CATALOG, "pg_attribute",
        "attrelid:i attname:t atttypid:i attstattarget:i attlen:i attnum:i attndims:i attcacheoff:i "
        "atttypmod:i attbyval:b attstorage:t attalign:t attnotnull:b atthasdef:b atthasmissing:b "
        "attidentity:t attgenerated:t attisdropped:b attislocal:b attinhcount:i attcollation:i "
        "attacl:t attoptions:t attfdwoptions:t attmissingval:t")
def _pg_attribute(kv: KV) -> list[list]:
    rows = []
    for s in _user_tables(kv):
        def attribute(relid: int, number: int, column: ColumnSchema, has_default: bool) -> list:
            pg_type = PG_TYPE_BY_OID[PG_TYPE_OIDS[column.type]]
            collation = DEFAULT_COLLATION_OID if pg_type.collatable else 0
            return [relid, column.name, pg_type.oid, -1, pg_type.length, number, 0, -1, -1, pg_type.length > 0,
                    "p" if pg_type.length > 0 else "x", "d" if pg_type.length == 8 else "i", column.not_null,
                    has_default, False, "", "", False, True, 0, collation, None, None, None, None]

        for number, column in enumerate(s.columns, 1):
            rows.append(attribute(table_oid(s.id), number, column, column.default_sql is not None))
        for number, name in enumerate(s.pk, 1):
            rows.append(attribute(index_oid(s.id), number, s.columns[s.index[name]], False))
    return rows


@_table(PG_CATALOG, "pg_type",
        "oid:i typname:t typnamespace:i typowner:i typlen:i typbyval:b typtype:t typcategory:t "
        "typispreferred:b typisdefined:b typdelim:t typrelid:i typelem:i typarray:i typinput:t "
        "typoutput:t typreceive:t typsend:t typmodin:t typmodout:t typanalyze:t typalign:t "
        "typstorage:t typnotnull:b typbasetype:i typtypmod:i typndims:i typcollation:i "
        "typdefaultbin:t typdefault:t typacl:t")
def _pg_type(kv: KV) -> list[list]:
    rows = []
    for t in PG_TYPES:
        collation = DEFAULT_COLLATION_OID if t.collatable else 0
        for oid, name, elem, length, category in ((t.oid, t.name, 0, t.length, t.category),
                                                  (t.array_oid, "_" + t.name, t.oid, -1, "A")):
            rows.append([oid, name, NAMESPACE_OIDS[PG_CATALOG], ROLE_OID, length, 0 < length <= 8, "b",
                         category, False, True, ",", 0, elem, 0 if elem else t.array_oid, f"{name}in",
                         f"{name}out", f"{name}recv", f"{name}send", "-", "-", "-",
                         "d" if length == 8 else "i", "p" if length > 0 else "x", False, 0, -1, 0,
                         collation, None, None, None])
    return rows


@_table(PG_CATALOG, "pg_index",
        "indexrelid:i indrelid:i indnatts:i indnkeyatts:i indisunique:b indnullsnotdistinct:b "
        "indisprimary:b indisexclusion:b indimmediate:b indisclustered:b indisvalid:b "
        "indcheckxmin:b indisready:b indislive:b indisreplident:b indkey:t indcollation:t "
        "indclass:t indoption:t indexprs:t indpred:t")
def _pg_index(kv: KV) -> list[list]:
    rows = []
    for s in _user_tables(kv):
        numbers = [s.index[name] + 1 for name in s.pk]
        collations = [str(DEFAULT_COLLATION_OID if s.columns[n - 1].type == T.TEXT else 0) for n in numbers]
        rows.append([index_oid(s.id), table_oid(s.id), len(numbers), len(numbers), True, False, True, False,
                     True, False, True, False, True, True, False, " ".join(map(str, numbers)),
                     " ".join(collations), " ".join("0" for _ in numbers), " ".join("0" for _ in numbers),
                     None, None])
    return rows


@_table(PG_CATALOG, "pg_constraint",
        "oid:i conname:t connamespace:i contype:t condeferrable:b condeferred:b convalidated:b "
        "conrelid:i contypid:i conindid:i conparentid:i confrelid:i confupdtype:t confdeltype:t "
        "confmatchtype:t conislocal:b coninhcount:i connoinherit:b conkey:t confkey:t conpfeqop:t "
        "conppeqop:t conffeqop:t conexclop:t conbin:t")
def _pg_constraint(kv: KV) -> list[list]:
    rows = []
    for s in _user_tables(kv):
        key = "{" + ",".join(str(s.index[name] + 1) for name in s.pk) + "}"
        rows.append([constraint_oid(s.id), index_name(s), NAMESPACE_OIDS[PUBLIC_SCHEMA], "p", False, False, True,
                     table_oid(s.id), 0, index_oid(s.id), 0, 0, " ", " ", " ", True, 0, True, key, None, None,
                     None, None, None, None])
    return rows


@_table(PG_CATALOG, "pg_attrdef", "oid:i adrelid:i adnum:i adbin:t")
def _pg_attrdef(kv: KV) -> list[list]:
    # adbin is PostgreSQL's internal node tree; here it is the default's SQL text, which is
    # what pg_get_expr(adbin, adrelid) returns.
    return [[ATTRDEF_OID_BASE + s.id * ATTRDEF_COLUMNS_MAX + number, table_oid(s.id), number, c.default_sql]
            for s in _user_tables(kv) for number, c in enumerate(s.columns, 1) if c.default_sql is not None]


@_table(PG_CATALOG, "pg_am", "oid:i amname:t amhandler:t amtype:t")
def _pg_am(kv: KV) -> list[list]:
    return [[HEAP_AM_OID, "heap", "heap_tableam_handler", "t"], [BTREE_AM_OID, "btree", "bthandler", "i"]]


@_table(PG_CATALOG, "pg_collation",
        "oid:i collname:t collnamespace:i collowner:i collprovider:t collisdeterministic:b "
        "collencoding:i collcollate:t collctype:t collversion:t")
def _pg_collation(kv: KV) -> list[list]:
    catalog = NAMESPACE_OIDS[PG_CATALOG]
    return [[DEFAULT_COLLATION_OID, "default", catalog, ROLE_OID, "d", True, -1, None, None, None],
            [C_COLLATION_OID, "C", catalog, ROLE_OID, "c", True, -1, "C", "C", None]]


@_table(PG_CATALOG, "pg_database",
        "oid:i datname:t datdba:i encoding:i datcollate:t datctype:t datistemplate:b "
        "datallowconn:b datconnlimit:i datlastsysoid:i datfrozenxid:i datminmxid:i "
        "dattablespace:i datacl:t datlocprovider:t daticulocale:t datcollversion:t")
def _pg_database(kv: KV) -> list[list]:
    return [[DATABASE_OID, DATABASE_NAME, ROLE_OID, UTF8_ENCODING, "C.UTF-8", "C.UTF-8", False, True, -1, 0, 0, 0,
             DEFAULT_TABLESPACE_OID, None, "c", None, None]]


@_table(PG_CATALOG, "pg_roles",
        "oid:i rolname:t rolsuper:b rolinherit:b rolcreaterole:b rolcreatedb:b rolcanlogin:b "
        "rolreplication:b rolconnlimit:i rolpassword:t rolvaliduntil:t rolbypassrls:b rolconfig:t")
def _pg_roles(kv: KV) -> list[list]:
    return [[ROLE_OID, USER_NAME, True, True, True, True, True, False, -1, "********", None, False, None]]


@_table(PG_CATALOG, "pg_user",
        "usesysid:i usename:t usecreatedb:b usesuper:b userepl:b usebypassrls:b passwd:t "
        "valuntil:t useconfig:t")
def _pg_user(kv: KV) -> list[list]:
    return [[ROLE_OID, USER_NAME, True, True, False, False, "********", None, None]]


@_table(PG_CATALOG, "pg_tablespace", "oid:i spcname:t spcowner:i spcacl:t spcoptions:t")
def _pg_tablespace(kv: KV) -> list[list]:
    return [[DEFAULT_TABLESPACE_OID, "pg_default", ROLE_OID, None, None],
            [GLOBAL_TABLESPACE_OID, "pg_global", ROLE_OID, None, None]]


@_table(PG_CATALOG, "pg_settings",
        "name:t setting:t unit:t category:t short_desc:t extra_desc:t context:t vartype:t "
        "source:t min_val:t max_val:t enumvals:t boot_val:t reset_val:t sourcefile:t "
        "sourceline:i pending_restart:b")
def _pg_settings(kv: KV) -> list[list]:
    from sql.session_vars import SESSION_VARS   # session_vars reads pg_settings' defaults

    return [[name, value, None, "", "", None, "user", "string", "default", None, None, None, value, value,
             None, None, False] for name, value in sorted(SESSION_VARS.items())]


# Catalogs the clients' queries join or probe but that are empty here (no comments, triggers,
# inheritance, policies, extended statistics, publications, rules, sequences, enums, non-default
# operator classes, dependencies).
_empty(PG_CATALOG, "pg_description", "objoid:i classoid:i objsubid:i description:t")
_empty(PG_CATALOG, "pg_shdescription", "objoid:i classoid:i description:t")
_empty(PG_CATALOG, "pg_inherits", "inhrelid:i inhparent:i inhseqno:i inhdetachpending:b")
_empty(PG_CATALOG, "pg_trigger", "oid:i tgrelid:i tgparentid:i tgname:t tgfoid:i tgtype:i tgenabled:t "
       "tgisinternal:b tgconstraint:i")
_empty(PG_CATALOG, "pg_policy", "oid:i polname:t polrelid:i polcmd:t polpermissive:b polroles:t "
       "polqual:t polwithcheck:t")
_empty(PG_CATALOG, "pg_statistic_ext", "oid:i stxrelid:i stxname:t stxnamespace:i stxowner:i "
       "stxstattarget:i stxkeys:t stxkind:t")
_empty(PG_CATALOG, "pg_publication", "oid:i pubname:t pubowner:i puballtables:b pubinsert:b "
       "pubupdate:b pubdelete:b pubtruncate:b pubviaroot:b")
_empty(PG_CATALOG, "pg_publication_rel", "oid:i prpubid:i prrelid:i prqual:t prattrs:t")
_empty(PG_CATALOG, "pg_publication_namespace", "oid:i pnpubid:i pnnspid:i")
_empty(PG_CATALOG, "pg_rewrite", "oid:i rulename:t ev_class:i ev_type:t ev_enabled:t is_instead:b "
       "ev_qual:t ev_action:t")
_empty(PG_CATALOG, "pg_sequence", "seqrelid:i seqtypid:i seqstart:i seqincrement:i seqmax:i seqmin:i "
       "seqcache:i seqcycle:b")
_empty(PG_CATALOG, "pg_enum", "oid:i enumtypid:i enumsortorder:f enumlabel:t")
_empty(PG_CATALOG, "pg_foreign_table", "ftrelid:i ftserver:i ftoptions:t")
_empty(PG_CATALOG, "pg_partitioned_table", "partrelid:i partstrat:t partnatts:i partdefid:i "
       "partattrs:t partclass:t partcollation:t partexprs:t")
_empty(PG_CATALOG, "pg_opclass", "oid:i opcmethod:i opcname:t opcnamespace:i opcowner:i opcfamily:i "
       "opcintype:i opcdefault:b opckeytype:i")   # every index uses its type's default operator class
_empty(PG_CATALOG, "pg_depend", "classid:i objid:i objsubid:i refclassid:i refobjid:i refobjsubid:i "
       "deptype:t")


# --- information_schema --------------------------------------------------------------------------


@_table(INFORMATION_SCHEMA, "schemata",
        "catalog_name:t schema_name:t schema_owner:t default_character_set_catalog:t "
        "default_character_set_schema:t default_character_set_name:t sql_path:t")
def _schemata(kv: KV) -> list[list]:
    return [[DATABASE_NAME, name, USER_NAME, None, None, None, None] for name in NAMESPACE_OIDS]


@_table(INFORMATION_SCHEMA, "tables",
        "table_catalog:t table_schema:t table_name:t table_type:t self_referencing_column_name:t "
        "reference_generation:t user_defined_type_catalog:t user_defined_type_schema:t "
        "user_defined_type_name:t is_insertable_into:t is_typed:t commit_action:t")
def _tables(kv: KV) -> list[list]:
    return [[DATABASE_NAME, PUBLIC_SCHEMA, s.name, "BASE TABLE", None, None, None, None, None, "YES", "NO", None]
            for s in _user_tables(kv)]


@_table(INFORMATION_SCHEMA, "columns",
        "table_catalog:t table_schema:t table_name:t column_name:t ordinal_position:i "
        "column_default:t is_nullable:t data_type:t character_maximum_length:i "
        "character_octet_length:i numeric_precision:i numeric_precision_radix:i numeric_scale:i "
        "datetime_precision:i collation_name:t udt_catalog:t udt_schema:t udt_name:t "
        "is_identity:t identity_generation:t is_generated:t generation_expression:t "
        "is_updatable:t is_hidden:t")
def _info_columns(kv: KV) -> list[list]:
    precision = {T.INT: (64, 2, 0), T.FLOAT: (53, 2, None)}
    rows = []
    for s in _user_tables(kv):
        hidden = s.hidden
        for number, c in enumerate(s.columns, 1):
            pg_type = PG_TYPE_BY_OID[PG_TYPE_OIDS[c.type]]
            numeric = precision.get(c.type, (None, None, None))
            rows.append([DATABASE_NAME, PUBLIC_SCHEMA, s.name, c.name, number, c.default_sql,
                         "NO" if c.not_null else "YES", pg_type.sql_name, None,
                         1_073_741_824 if c.type == T.TEXT else None, *numeric,
                         6 if c.type == T.TIMESTAMP else None, None, DATABASE_NAME, PG_CATALOG, pg_type.name,
                         "NO", None, "NEVER", None, "YES", "YES" if c.name in hidden else "NO"])
    return rows


@_table(INFORMATION_SCHEMA, "table_constraints",
        "constraint_catalog:t constraint_schema:t constraint_name:t table_catalog:t table_schema:t "
        "table_name:t constraint_type:t is_deferrable:t initially_deferred:t enforced:t")
def _table_constraints(kv: KV) -> list[list]:
    return [[DATABASE_NAME, PUBLIC_SCHEMA, index_name(s), DATABASE_NAME, PUBLIC_SCHEMA, s.name, "PRIMARY KEY",
             "NO", "NO", "YES"] for s in _user_tables(kv)]


@_table(INFORMATION_SCHEMA, "key_column_usage",
        "constraint_catalog:t constraint_schema:t constraint_name:t table_catalog:t table_schema:t "
        "table_name:t column_name:t ordinal_position:i position_in_unique_constraint:i")
def _key_column_usage(kv: KV) -> list[list]:
    return [[DATABASE_NAME, PUBLIC_SCHEMA, index_name(s), DATABASE_NAME, PUBLIC_SCHEMA, s.name, name, position, None]
            for s in _user_tables(kv) for position, name in enumerate(s.pk, 1)]


# The catalog tables' own OIDs ('pg_catalog.pg_class'::regclass, pg_description.classoid): PostgreSQL's
# for the ones clients name, the rest numbered from CATALOG_TABLE_OID_BASE in name order.
_POSTGRES_CATALOG_OIDS = {"pg_type": 1247, "pg_attribute": 1249, "pg_class": 1259, "pg_database": 1262,
                          "pg_am": 2601, "pg_attrdef": 2604, "pg_constraint": 2606, "pg_description": 2609,
                          "pg_index": 2610, "pg_inherits": 2611, "pg_namespace": 2615, "pg_trigger": 2620,
                          "pg_collation": 3456}
CATALOG_TABLE_OID_BASE = 12_000
CATALOG_TABLE_OIDS: dict[str, int] = {
    name: _POSTGRES_CATALOG_OIDS.get(name.partition(".")[2] if name.startswith(PG_CATALOG + ".") else "",
                                     CATALOG_TABLE_OID_BASE + i)
    for i, name in enumerate(sorted(CATALOG_TABLES))
}
CATALOG_TABLE_BY_OID = {oid: name for name, oid in CATALOG_TABLE_OIDS.items()}
CATALOG_SCHEMAS = frozenset({PG_CATALOG, INFORMATION_SCHEMA})
# Unqualified names that mean a pg_catalog table (pg_catalog is first on every search path).
PG_CATALOG_NAMES = frozenset(name.partition(".")[2] for name in CATALOG_TABLES if name.startswith(PG_CATALOG + "."))


def relation_name(schema_name: str | None, name: str) -> str | None:
    """The virtual catalog table `schema_name`.`name` means (``pg_catalog.pg_class``), or None
    when it is no catalog table: an unqualified name is looked up in pg_catalog only."""
    if schema_name is None:
        return f"{PG_CATALOG}.{name}" if name in PG_CATALOG_NAMES else None
    full = f"{schema_name}.{name}"
    return full if full in CATALOG_TABLES else None


def catalog_rows(kv: KV, name: str) -> list[list]:
    return CATALOG_TABLES[name].rows(kv)
