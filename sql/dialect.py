"""The SQL dialect: PostgreSQL as sqlglot reads it, plus the CockroachDB statements we serve.

Why a dialect of our own: users type CockroachDB SQL (``UPSERT``, ``SHOW RANGES``,
``AS OF SYSTEM TIME``), and sqlglot's PostgreSQL parser either rejects those or returns them as
an opaque ``exp.Command``. This module extends the parser just enough to produce real syntax
trees for them, then checks every tree against a whitelist, so that anything the engine does
not implement is rejected *here*, with the construct named and its position, rather than
half-run later.

What it adds to sqlglot's PostgreSQL dialect:

* ``UPSERT INTO ...``                       -> `Upsert` wrapping an ``exp.Insert``
* ``SHOW TABLES | SHOW REGIONS``             -> `ShowTables`, `ShowRegions`
* ``SHOW RANGES [FROM TABLE t]``             -> `ShowRanges`
* ``SHOW COLUMNS FROM t | SHOW CREATE [TABLE] t | SHOW DATABASES``
                                             -> `ShowColumns`, `ShowCreate`, `ShowDatabases`
* ``CREATE TABLE ... LOCALITY REGIONAL BY TABLE [IN "r" | IN PRIMARY REGION]``
                                             -> a `Locality` in the Create's properties
* ``ALTER TABLE t SET LOCALITY REGIONAL BY TABLE [IN "r" | IN PRIMARY REGION]``
                                             -> ``exp.Alter`` whose one action sets a `Locality`
                                                (no other ALTER is served)
* ``EXPLAIN <statement>``                    -> `Explain`
* ``EXPLAIN ANALYZE <statement>`` (or ANALYSE) -> `ExplainAnalyze` (an `Explain` that runs it;
  sqlglot's PostgreSQL parser reads any EXPLAIN as an opaque ``exp.Command``)
* ``... FROM <from list> AS OF SYSTEM TIME e`` -> the SELECT's ``as_of`` argument. Accepted
  after the whole FROM list, as CockroachDB writes it (after aliases and joins too).
* ``SELECT ... FROM crdb_internal.check_consistency(...)`` -> sqlglot parses a table function
  natively (an ``exp.Table`` whose ``this`` is the call and ``db`` is ``crdb_internal``); the
  whitelist admits it as a FROM / JOIN item of a SELECT only, and `identifier_name` names it
  ``crdb_internal.check_consistency`` so the planner finds its virtual table (sql/virtual.py).
* PostgreSQL clients' spellings - ``OPERATOR(pg_catalog.~)``, ``pg_catalog.f(...)``, ``COLLATE "C"``
  / ``pg_catalog.default``, ``x op ALL (...)``, ``pg_catalog.``-qualified cast types and table
  functions - are read as the plain forms after the parse (`normalize_postgres_forms`).
* Parameters: ``$1, $2, ...`` and ``%s`` (DB-API "format" style, numbered left to right; ``%%``
  is a literal ``%``) both become ``exp.Parameter`` with a 1-based number. A statement uses
  one style only.

The parser hooks override private sqlglot methods (``_parse_statement``,
``_parse_table_alias``, ``raise_error``, and ``reset``, ``_parse_range``, ``_parse_unary`` to count
nesting), which is why sqlglot is pinned exactly
(pyproject.toml); tests/test_sql_parse.py pins the behaviour.

Before and during the parse, the statement limits of sql/limits.py apply (text bytes, tokens,
nesting depth counted in ``_parse_range`` / ``_parse_unary``, then the tree's depth).

Pure: no I/O. Parsing is cached per statement text (`parse`), so the cost (~150 us) is paid
once per distinct text; parameters are values bound later, never spliced into the text.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.parsers.postgres import PostgresParser
from sqlglot.tokens import Token, TokenType

from sql import constants, limits
from sql.constants import PARAMS_MAX, PARSE_CACHE_ENTRIES_MAX
from sql.errors import SQLError

# sqlglot logs a warning for every statement it falls back to exp.Command for; we reject those
# ourselves with a precise error, so the warning is noise on the gateway's log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_AS_OF = ("AS", "OF", "SYSTEM", "TIME")
CRDB_INTERNAL = "crdb_internal"
CHECK_CONSISTENCY = "crdb_internal.check_consistency"
VIRTUAL_TABLE_NAMES = frozenset({CHECK_CONSISTENCY})   # sql/virtual.py defines each
_STATEMENT_START_TOKENS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN,
                                     TokenType.VALUES})


# --- syntax tree nodes of our extensions --------------------------------------------------------


class ShowTables(exp.Expression):
    arg_types = {}


class ShowRegions(exp.Expression):
    arg_types = {}


class ShowRanges(exp.Expression):
    """``SHOW RANGES`` (``this`` is None) or ``SHOW RANGES FROM TABLE t`` (``this``: exp.Table)."""

    arg_types = {"this": False}


class ShowColumns(exp.Expression):
    """``SHOW COLUMNS FROM t`` (``this``: exp.Table)."""

    arg_types = {"this": True}


class ShowCreate(exp.Expression):
    """``SHOW CREATE [TABLE] t`` (``this``: exp.Table)."""

    arg_types = {"this": True}


class ShowDatabases(exp.Expression):
    arg_types = {}


class ShowVar(exp.Expression):
    """``SHOW <session variable>`` (``this``: its name, lower case)."""

    arg_types = {"this": True}


class SetVar(exp.Expression):
    """``SET <session variable> = | TO <value>`` (``this``: the name, lower case; ``value``: the
    value's text)."""

    arg_types = {"this": True, "value": True}


SHOW_NODES = (ShowTables, ShowRegions, ShowRanges, ShowColumns, ShowCreate, ShowDatabases, ShowVar)


class Explain(exp.Expression):
    arg_types = {"this": True}


class ExplainAnalyze(Explain):
    """``EXPLAIN ANALYZE <statement>``: runs the statement (sql/explain.py)."""


class Locality(exp.Expression):
    """``LOCALITY REGIONAL BY TABLE IN "r"``: the table's home region ``region`` (a str);
    without it (``IN PRIMARY REGION`` or no IN), the cluster's primary region."""

    arg_types = {"region": False}


class ArrayUpper(exp.Expression):
    """``array_upper(a, d)`` (read from the call sqlglot leaves anonymous)."""

    arg_types = {"this": True, "expression": True}


class GenerateSubscripts(exp.Expression):
    """``generate_subscripts(a, d)``, a set-returning function of the select list."""

    arg_types = {"this": True, "expression": True}


_ARRAY_FUNCTIONS = {"array_upper": ArrayUpper, "generate_subscripts": GenerateSubscripts}


class Upsert(exp.Expression):
    """``UPSERT INTO ...``: ``this`` is the exp.Insert it would be without the word UPSERT."""

    arg_types = {"this": True}


# --- the dialect --------------------------------------------------------------------------------


class RaftstoreParser(PostgresParser):
    # AS OF SYSTEM TIME after the FROM list (after an alias or a join): a query modifier keyed
    # on the AS token. QUERY_MODIFIER_TOKENS stays as it was, so AS still ends a SELECT list.
    QUERY_MODIFIER_PARSERS = {
        **PostgresParser.QUERY_MODIFIER_PARSERS,
        TokenType.ALIAS: lambda self: ("as_of", self._parse_as_of_system_time()),
    }
    QUERY_MODIFIER_TOKENS = PostgresParser.QUERY_MODIFIER_TOKENS
    # now() and current_timestamp are one function, but PostgreSQL heads the result column with
    # the name that was written: "now" for now(), "current_timestamp" otherwise.
    FUNCTIONS = {
        **PostgresParser.FUNCTIONS,
        "NOW": lambda args: _meta(exp.CurrentTimestamp.from_arg_list(args), output_name="now"),
    }

    PROPERTY_PARSERS = {
        **PostgresParser.PROPERTY_PARSERS,
        "LOCALITY": lambda self: self._parse_locality(),
    }

    # Nesting depth (sql/limits.py). sqlglot's parser is a recursive descent: each level of
    # nesting - a parenthesis, a call's argument, CASE, an IN list, a subquery, NOT, unary minus
    # - costs up to 24 frames. Every such cycle passes through _parse_range (the binary levels)
    # or _parse_unary (prefix operators) or both; each counts its active calls, and the parse
    # stops when either is more than SQL_NESTING_DEPTH_MAX levels below the outermost
    # expression, long before Python's recursion limit. (Nesting in FROM - derived tables,
    # parenthesized joins - costs 8 frames a level and is bounded by the tree's depth, or
    # at worst by the RecursionError that _parse_uncached turns into the same error code.)

    def reset(self) -> None:
        super().reset()
        self._range_depth = self._unary_depth = 0

    def _parse_range(self, this: exp.Expr | None = None, parse_is: bool = False) -> exp.Expr | None:
        self._range_depth += 1
        try:
            self._check_nesting(self._range_depth)
            return super()._parse_range(this, parse_is)
        finally:
            self._range_depth -= 1

    def _parse_unary(self) -> exp.Expr | None:
        self._unary_depth += 1
        try:
            self._check_nesting(self._unary_depth)
            return super()._parse_unary()
        finally:
            self._unary_depth -= 1

    def _check_nesting(self, active: int) -> None:
        if active > constants.SQL_NESTING_DEPTH_MAX + 1:   # the outermost expression is level 0
            raise limits.nesting_exceeded(active - 1, self._curr, self.sql)

    def _parse_locality(self) -> exp.Expr:
        at = self._prev
        if self._match_text_seq("REGIONAL", "BY", "ROW"):
            raise _unsupported_at("LOCALITY REGIONAL BY ROW", at.start,
                                  'use LOCALITY REGIONAL BY TABLE IN "region"')
        if self._match_text_seq("GLOBAL"):
            raise _unsupported_at("LOCALITY GLOBAL", at.start,
                                  'global tables need non-blocking transactions; use LOCALITY REGIONAL BY TABLE IN "region"')
        if not self._match_text_seq("REGIONAL", "BY", "TABLE"):
            self.raise_error('Expected REGIONAL BY TABLE after LOCALITY (LOCALITY REGIONAL BY TABLE IN "region")')
        region = None
        if self._match(TokenType.IN) and not self._match_text_seq("PRIMARY", "REGION"):
            token = self._curr
            if token is None or token.token_type not in (TokenType.VAR, TokenType.STRING, TokenType.IDENTIFIER):
                self.raise_error('Expected a region name after IN ("region" or PRIMARY REGION)')
            self._advance()
            region = token.text if token.token_type != TokenType.VAR else token.text.lower()
        locality = self.expression(Locality(region=region))
        locality.meta["start"] = at.start
        return locality

    def _parse_as_of_system_time(self) -> exp.Expr | None:
        if not self._match_text_seq(*_AS_OF):
            return None
        start = self._prev
        value = self._parse_bitwise()
        if value is None:
            self.raise_error("Expected an expression after AS OF SYSTEM TIME")
        assert value is not None
        value.meta.setdefault("start", start.start)
        return value

    def _parse_table_alias(self, alias_tokens=None):  # noqa: ANN001 - sqlglot's signature
        # `FROM t AS OF SYSTEM TIME x`: AS here starts the time clause, not an alias.
        if self._is_as_of_ahead():
            return None
        return super()._parse_table_alias(alias_tokens=alias_tokens)

    def _is_as_of_ahead(self) -> bool:
        index = self._index
        words = []
        for offset in range(len(_AS_OF)):
            if index + offset >= len(self._tokens):
                return False
            words.append(self._tokens[index + offset].text.upper())
        return tuple(words) == _AS_OF

    def _parse_statement(self) -> exp.Expr | None:
        if not self._curr:
            return None
        first = self._curr
        word = first.text.upper() if first.token_type in (TokenType.VAR, TokenType.SHOW) else ""
        if word == "EXPLAIN":
            self._advance()
            analyze = bool(self._curr and self._curr.text.upper() in ("ANALYZE", "ANALYSE"))
            if analyze:
                self._advance()
            if self._curr and self._curr.text.upper() in ("ANALYZE", "ANALYSE", "VERBOSE", "("):
                raise _unsupported_at(f"EXPLAIN {'ANALYZE ' if analyze else ''}{self._curr.text.upper()}",
                                      self._curr.start)
            inner = self._parse_statement()
            if inner is None:
                self.raise_error(f"Expected a statement after EXPLAIN{' ANALYZE' if analyze else ''}")
            stmt: exp.Expr | None = self.expression((ExplainAnalyze if analyze else Explain)(this=inner))
        elif word == "UPSERT":
            self._advance()
            if not (self._curr and self._curr.token_type == TokenType.INTO):
                self.raise_error("Expected INTO after UPSERT")
            insert = self._parse_insert()
            stmt = self.expression(Upsert(this=insert))
        elif word == "SHOW":
            self._advance()
            stmt = self._parse_show_statement(first)
        elif first.token_type == TokenType.SET:
            self._advance()
            stmt = self._parse_set_var()
        elif (
            first.token_type not in self.STATEMENT_PARSERS
            and first.token_type not in self.dialect.tokenizer_class.COMMANDS
            and first.token_type not in _STATEMENT_START_TOKENS
        ):
            self.raise_error(
                "Expected a statement (SELECT, INSERT, UPSERT, UPDATE, DELETE, CREATE TABLE, "
                "DROP TABLE, SHOW, EXPLAIN)",
                first,
            )
            stmt = None
        else:
            stmt = super()._parse_statement()
        if stmt is not None:
            stmt.meta["stmt_start"] = first.start
            last = self._tokens[self._index - 1] if self._index > 0 else first
            stmt.meta["stmt_end"] = last.end
        return stmt

    def _parse_show_statement(self, show: Token) -> exp.Expr:
        if self._match_text_seq("TABLES"):
            return self.expression(ShowTables())
        if self._match_text_seq("REGIONS"):
            return self.expression(ShowRegions())
        if self._match_text_seq("RANGES"):
            table = None
            if self._match_text_seq("FROM"):
                if not self._match_text_seq("TABLE"):
                    what = self._curr.text.upper() if self._curr else "nothing"
                    raise _unsupported_at(
                        f"SHOW RANGES FROM {what}",
                        self._curr.start if self._curr else show.start,
                        "only SHOW RANGES and SHOW RANGES FROM TABLE <name> are supported",
                    )
                table = self._parse_table_parts()
            return self.expression(ShowRanges(this=table))
        if self._match_text_seq("DATABASES"):
            return self.expression(ShowDatabases())
        if self._match_text_seq("COLUMNS"):
            if not self._match_set((TokenType.FROM, TokenType.IN)):
                self.raise_error("Expected FROM and a table name after SHOW COLUMNS")
            return self.expression(ShowColumns(this=self._parse_show_table()))
        if self._match_text_seq("CREATE"):
            self._match_text_seq("TABLE")
            return self.expression(ShowCreate(this=self._parse_show_table()))
        from sql.session_vars import SESSION_VARS

        if self._match_text_seq("TRANSACTION", "ISOLATION", "LEVEL"):   # PostgreSQL's spelling of one variable
            return self.expression(ShowVar(this="transaction_isolation"))
        if self._match_text_seq("TIME", "ZONE"):
            return self.expression(ShowVar(this="timezone"))
        if self._curr and self._curr.text.lower() in SESSION_VARS:
            name = self._curr.text.lower()
            self._advance()
            return self.expression(ShowVar(this=name))
        what = self._curr.text if self._curr else ""
        raise _unsupported_at(
            f"SHOW {what}".strip(),
            self._curr.start if self._curr else show.start,
            "supported: SHOW TABLES, SHOW COLUMNS FROM t, SHOW CREATE TABLE t, SHOW DATABASES, "
            "SHOW RANGES [FROM TABLE t], SHOW REGIONS, SHOW <session variable>",
        )

    def _parse_set_var(self) -> exp.Expr:
        """``SET name = value`` / ``SET name TO value``: one session variable, one word or literal."""
        from sql.session_vars import SESSION_VARS

        name = self._curr
        if not name or name.token_type not in (TokenType.VAR, TokenType.STRING) and not name.text.isidentifier():
            self.raise_error("Expected a session variable after SET")
        self._advance()
        if not (self._match(TokenType.EQ) or self._match_text_seq("TO")):
            self.raise_error("Expected = or TO after SET %s" % name.text)
        value = self._curr
        if not value:
            self.raise_error("Expected a value after SET %s =" % name.text)
        self._advance()
        if self._curr and self._curr.token_type != TokenType.SEMICOLON:
            self.raise_error("Expected one value after SET %s =" % name.text)
        if name.text.lower() not in SESSION_VARS:
            raise SQLError("undefined_object", "unrecognized configuration parameter %r (settable: %s)"
                           % (name.text, ", ".join(sorted(SESSION_VARS))), name.start)
        return self.expression(SetVar(this=name.text.lower(), value=value.text))

    def _parse_show_table(self) -> exp.Expr:
        if self._curr is None:
            self.raise_error("Expected a table name")
        return self._parse_table_parts()

    def _warn_unsupported(self) -> None:
        return None  # commands are rejected with a precise SQLError instead

    def raise_error(  # type: ignore[override]
        self, message: str, token: Token | None = None
    ) -> None:
        token = token or self._curr or self._prev or Token.string("")
        try:
            super().raise_error(message, token)
        except ParseError as error:
            for detail in error.errors:
                detail["start_offset"] = token.start
            raise


class RaftstoreTokenizer(Postgres.Tokenizer):
    KEYWORDS = {k: v for k, v in Postgres.Tokenizer.KEYWORDS.items() if k != "EXPLAIN"}
    COMMANDS = Postgres.Tokenizer.COMMANDS - {TokenType.SHOW}
    # `$` is only a parameter sign: sqlglot 30.30's dollar-quote ($tag$...$tag$) scanning
    # mis-tokenizes `$1 ... ''` ("Missing $"), and dollar-quoted strings are not supported.
    HEREDOC_STRINGS: list = []
    SINGLE_TOKENS = {**Postgres.Tokenizer.SINGLE_TOKENS, "$": TokenType.PARAMETER}


def locality_text(region: str | None) -> str:
    """A table's locality as SHOW TABLES says it: ``REGIONAL BY TABLE IN "r"`` (None: the
    primary region)."""
    where = "PRIMARY REGION" if region is None else '"' + region.replace('"', '""') + '"'
    return f"REGIONAL BY TABLE IN {where}"


def locality_sql(region: str | None) -> str:
    """The LOCALITY clause that gives a table the home `region` (None: the primary region)."""
    return "LOCALITY " + locality_text(region)


class RaftstoreGenerator(Postgres.Generator):
    TRANSFORMS = {**Postgres.Generator.TRANSFORMS,
                  Locality: lambda self, e: locality_sql(e.args.get("region")),
                  ArrayUpper: lambda self, e: self.func("array_upper", e.this, e.expression),
                  GenerateSubscripts: lambda self, e: self.func("generate_subscripts", e.this, e.expression)}
    PROPERTIES_LOCATION = {**Postgres.Generator.PROPERTIES_LOCATION,
                           Locality: exp.Properties.Location.POST_SCHEMA}


class Raftstore(Postgres):
    Tokenizer = RaftstoreTokenizer
    Parser = RaftstoreParser
    Generator = RaftstoreGenerator


DIALECT = Raftstore()


# --- statements ---------------------------------------------------------------------------------

KIND_BY_NODE = {
    exp.Select: "select",
    exp.Insert: "insert",
    Upsert: "upsert",
    exp.Update: "update",
    exp.Delete: "delete",
    exp.Create: "create_table",
    exp.Drop: "drop_table",
    exp.Alter: "alter_table",
    ShowTables: "show_tables",
    ShowRanges: "show_ranges",
    ShowRegions: "show_regions",
    ShowColumns: "show_columns",
    ShowCreate: "show_create",
    ShowDatabases: "show_databases",
    ShowVar: "show_var",
    SetVar: "set_var",
    Explain: "explain",
    ExplainAnalyze: "explain_analyze",
    exp.Union: "select",      # UNION ALL (sql/plan.py plans it as a SELECT over a derived table)
}


@dataclass(frozen=True, eq=False)
class Statement:
    """One parsed, whitelisted statement. Shared through the parse cache: never mutate `ast`.

    `kind` is one of KIND_BY_NODE's values; `param_count` the highest parameter number used;
    `text` the whole text that was parsed (positions in errors refer to it).
    """

    kind: str
    ast: exp.Expr
    text: str
    param_count: int

    @property
    def as_of(self) -> exp.Expr | None:
        node = self.ast.this if isinstance(self.ast, Explain) else self.ast
        return node.args.get("as_of") if isinstance(node, exp.Select) else None


def parse(sql: str) -> list[Statement]:
    """Parse `sql` into statements (empty ones between semicolons dropped).

    Raises SQLError: code "syntax" for text that is not SQL, "unsupported" /
    "feature_not_supported" for SQL this engine does not run, each with a position. The
    result is cached per text (never mutate it).
    """
    if not isinstance(sql, str):
        raise SQLError("syntax", f"SQL must be text (str), got {type(sql).__name__}")
    return list(_parse_cached(sql))


@functools.lru_cache(maxsize=PARSE_CACHE_ENTRIES_MAX)
def _parse_cached(sql: str) -> tuple[Statement, ...]:
    try:
        return _parse_uncached(sql)
    except SQLError as error:
        raise error.with_sql(sql) from None


def _parse_uncached(sql: str) -> tuple[Statement, ...]:
    # The statement limits (sql/limits.py), each before the stage whose cost it bounds: the
    # text's size before the tokenizer, the token count before the parser, the nesting depth
    # during the parse (RaftstoreParser._check_nesting), the tree's depth before the whitelist
    # and the planner.
    limits.check_text(sql)
    tokens, param_count = _tokenize(sql)
    limits.check_tokens(tokens, sql)
    parser = RaftstoreParser(dialect=DIALECT, error_level=ErrorLevel.IMMEDIATE)
    try:
        trees = parser.parse(tokens, sql)
    except ParseError as error:
        raise _syntax_error(sql, error) from None
    except RecursionError:   # a nesting the parser's count does not see, or a caller deep in its stack
        raise limits.recursion_error("the parser") from None
    statements = []
    for tree in trees:
        if tree is None or isinstance(tree, exp.Semicolon):
            continue
        limits.check_tree(tree, sql)
        tree = normalize_postgres_forms(tree)
        _check_supported(tree, sql, tokens)
        node = tree.this if isinstance(tree, Explain) else tree
        statements.append(Statement(KIND_BY_NODE[type(tree)], tree, sql, param_count))
        assert node is not None
    return tuple(statements)


# --- PostgreSQL spellings read as the plain forms --------------------------------------------

PG_CATALOG = "pg_catalog"
# The operators OPERATOR(pg_catalog.op) may name, as the node the bare operator parses to.
_OPERATOR_NODES: dict[str, tuple[type, bool]] = {
    "=": (exp.EQ, False), "<>": (exp.NEQ, False), "!=": (exp.NEQ, False), "<": (exp.LT, False),
    "<=": (exp.LTE, False), ">": (exp.GT, False), ">=": (exp.GTE, False),
    "~": (exp.RegexpLike, False), "!~": (exp.RegexpLike, True),
    "~*": (exp.RegexpILike, False), "!~*": (exp.RegexpILike, True),
    "~~": (exp.Like, False), "!~~": (exp.Like, True), "~~*": (exp.ILike, False), "!~~*": (exp.ILike, True),
}
# Collations that mean code point order, the only text order here (sql/DIFFERENCES.md).
_IGNORED_COLLATIONS = frozenset({"default", "c", "posix", "pg_catalog.default", 'pg_catalog."c"',
                                 "pg_catalog.c", "ucs_basic"})


def normalize_postgres_forms(tree: exp.Expr) -> exp.Expr:
    """The tree with the spellings PostgreSQL clients (psql, SQLAlchemy) write replaced by the
    plain forms the planner knows; anything else is left for the whitelist to judge:

    * ``pg_catalog.f(...)``                -> ``f(...)`` (a built-in function's schema)
    * ``a OPERATOR(pg_catalog.~) b``       -> ``a ~ b`` (any operator of `_OPERATOR_NODES`)
    * ``x COLLATE "C"`` / ``COLLATE pg_catalog.default`` -> ``x`` (code point order is the
      only order; another collation stays and is refused)
    * ``x op ALL (...)``                   -> ``exp.All`` (sqlglot reads ALL(...) as a call)
    * ``CAST(x AS pg_catalog.t)``          -> ``CAST(x AS t)``
    * ``FROM pg_catalog.generate_series(...)`` -> ``FROM generate_series(...)``
    * ``array_upper(a, d)``, ``generate_subscripts(a, d)`` -> `ArrayUpper`, `GenerateSubscripts`

    Iterative (the tree's depth is bounded by sql/limits.py, but the walk does not recurse);
    a replaced node keeps its source position."""
    replacements = []
    for node in tree.walk():
        _strip_function_schema(node)
        new = _normalized(node)
        if new is not None:
            replacements.append((node, new))
    for node, new in replacements:
        if node._meta and "start" in node._meta:
            new.meta.setdefault("start", node.meta["start"])
        if node is tree:
            tree = new
        else:
            node.replace(new)
    return tree


def _normalized(node: exp.Expr) -> exp.Expr | None:
    if isinstance(node, exp.Unnest) and isinstance(node.parent, (exp.From, exp.Join)) and node.arg_key == "this" \
            and len(node.expressions) == 1 and not node.args.get("offset"):
        # ``FROM unnest(a) AS s(x)`` as sqlglot reads ``FROM pg_catalog.unnest(a) AS s(x)``
        return exp.Table(this=exp.Explode(this=node.expressions[0]), alias=node.args.get("alias"))
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in _ARRAY_FUNCTIONS and len(node.expressions) == 2:
        this, expression = node.expressions
        return _ARRAY_FUNCTIONS[str(node.this).lower()](this=this, expression=expression)
    if isinstance(node, exp.Dot) and _is_pg_catalog(node.this):
        inner = node.expression
        if isinstance(inner, exp.Anonymous):
            builder = RaftstoreParser.FUNCTIONS.get(str(inner.this).upper())
            if str(inner.this).upper() in RaftstoreParser.FUNCTION_PARSERS or any(
                    isinstance(a, exp.Order) for a in inner.expressions):
                # an aggregate's own ORDER BY (``pg_catalog.string_agg(x, ', ' ORDER BY y)``) is
                # parsed by the dialect's parser for the plain name: read the call again as that
                return sqlglot.parse_one("SELECT " + inner.sql(dialect=DIALECT), dialect=DIALECT).expressions[0]
            if builder is not None:
                args = list(inner.expressions)
                try:
                    return builder(args)
                except TypeError:
                    return builder(args, dialect=DIALECT)
            return _normalized(inner) or inner
        if isinstance(inner, exp.Func):
            return inner
        return None
    if isinstance(node, exp.Operator):
        name = str(node.args.get("operator") or "").strip()
        if name.lower().startswith(PG_CATALOG + "."):
            name = name[len(PG_CATALOG) + 1:]
        found = _OPERATOR_NODES.get(name)
        if found is None:
            return None
        kind, negate = found
        built = kind(this=node.this, expression=node.expression)
        return exp.Not(this=built) if negate else built
    if isinstance(node, exp.Collate):
        collation = node.expression
        if isinstance(collation, exp.Column):
            text = ".".join(identifier_name(p) for p in collation.parts)
        elif isinstance(collation, exp.Identifier):
            text = identifier_name(collation)
        else:
            text = str(collation.name).lower()
        if text.lower() in _IGNORED_COLLATIONS:
            return node.this
        return None
    if isinstance(node, exp.Anonymous) and str(node.this).upper() == "ALL" and len(node.expressions) == 1 \
            and isinstance(node.parent, (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)) \
            and node.arg_key == "expression":
        return exp.All(this=node.expressions[0])
    if isinstance(node, exp.DataType) and isinstance(node.args.get("kind"), exp.Dot) \
            and _is_pg_catalog(node.args["kind"].this):
        name = identifier_name(node.args["kind"].expression)
        try:
            return exp.DataType.build(name, dialect=DIALECT)
        except Exception:   # noqa: BLE001 - sqlglot raises several kinds for a name it does not know
            return exp.DataType(this=exp.DataType.Type.USERDEFINED, kind=name)
    return None


def _strip_function_schema(node: exp.Expr) -> None:
    """``FROM pg_catalog.generate_series(...)`` / ``unnest(...)``: the table function without its schema."""
    if isinstance(node, exp.Table) and isinstance(node.this, (exp.GenerateSeries, exp.Explode)) \
            and _is_pg_catalog(node.args.get("db")):
        node.set("db", None)


def _is_pg_catalog(node: exp.Expr | None) -> bool:
    return isinstance(node, (exp.Identifier, exp.Column, exp.Var)) and identifier_name(node) == PG_CATALOG


def _syntax_error(sql: str, error: ParseError) -> SQLError:
    detail = error.errors[0] if error.errors else {}
    position = detail.get("start_offset")
    description = detail.get("description") or str(error)
    description = re.sub(r"<Token token_type: [^,]+, text: ([^,]*), .*?>", r"'\1'", description)
    highlight = detail.get("highlight")
    near = f" at or near {highlight!r}" if highlight else " at end of input"
    return SQLError("syntax", f"syntax error{near}: {description}", position, sql)


# --- tokens and parameters ----------------------------------------------------------------------


def _tokenize(sql: str) -> tuple[list[Token], int]:
    """Tokens for the parser with %s placeholders rewritten to numbered $n parameters; also
    the highest parameter number."""
    tokenizer = DIALECT.tokenizer_class(dialect=DIALECT)
    try:
        raw = tokenizer.tokenize(sql)
    except TokenError as error:
        position = _token_error_position(error, tokenizer)
        raise SQLError(
            "syntax", "syntax error: unterminated string, identifier or comment", position, sql
        ) from None
    tokens: list[Token] = []
    dollar = False
    percent = 0
    highest = 0
    array_brackets = 0   # depth of [ ] inside an ARRAY[ (0: outside any)
    i = 0
    n = len(raw)
    while i < n:
        token = raw[i]
        nxt = raw[i + 1] if i + 1 < n else None
        if (
            token.token_type == TokenType.MOD
            and nxt is not None
            and nxt.start == token.end + 1
            and nxt.token_type == TokenType.VAR
            and nxt.text == "s"
        ):
            percent += 1
            highest = max(highest, percent)
            tokens.append(_token(TokenType.PARAMETER, "$", token, token.start, token.start))
            tokens.append(_token(TokenType.NUMBER, str(percent), nxt, nxt.start, nxt.end))
            i += 2
            continue
        if (
            token.token_type == TokenType.MOD
            and nxt is not None
            and nxt.token_type == TokenType.MOD
            and nxt.start == token.end + 1
        ):
            tokens.append(_token(TokenType.MOD, "%", token, token.start, nxt.end))
            i += 2
            continue
        if token.token_type == TokenType.PARAMETER:
            if nxt is None or nxt.token_type != TokenType.NUMBER or nxt.start != token.end + 1:
                raise SQLError(
                    "syntax", "syntax error: expected a parameter number after '$' (e.g. $1)",
                    token.start, sql,
                )
            try:
                number = int(nxt.text)
            except ValueError:
                number = 0
            if not 1 <= number <= PARAMS_MAX:
                raise SQLError(
                    "invalid_parameter",
                    f"parameter ${nxt.text} is out of range; parameters are numbered $1 to "
                    f"${PARAMS_MAX}",
                    token.start, sql,
                )
            dollar = True
            highest = max(highest, number)
        if token.token_type == TokenType.ARRAY and nxt is not None and nxt.token_type == TokenType.L_BRACKET:
            # ARRAY[...] is served as the list of x = ANY(ARRAY[...]) / x <> ALL(ARRAY[...]), but
            # sqlglot's parser backtracks on nested ARRAY[...]: its time doubles per level (20
            # levels of a 200-byte text: ~30 s). An ARRAY[ inside another is refused here,
            # before the parse (arrays of arrays are not supported anyway).
            if array_brackets:
                raise _unsupported_at("ARRAY[...] inside ARRAY[...] (arrays of arrays)", token.start, None, sql)
            array_brackets = 1
            tokens.append(token)
            tokens.append(nxt)
            i += 2
            continue
        if array_brackets and token.token_type == TokenType.L_BRACKET:
            array_brackets += 1
        elif array_brackets and token.token_type == TokenType.R_BRACKET:
            array_brackets -= 1
        if token.token_type == TokenType.PLACEHOLDER:
            raise SQLError(
                "syntax",
                f"syntax error at or near {token.text!r}: use $1, $2, ... or %s for parameters",
                token.start, sql,
            )
        tokens.append(token)
        i += 1
    if dollar and percent:
        raise SQLError(
            "syntax",
            "a statement mixes $n and %s parameters; use one style",
            _first_percent(raw),
            sql,
        )
    return tokens, highest


def _first_percent(raw: list[Token]) -> int | None:
    for token in raw:
        if token.token_type == TokenType.MOD:
            return token.start
    return None


def _token(kind: TokenType, text: str, like: Token, start: int, end: int) -> Token:
    return Token(kind, text, like.line, like.col, start, end, like.comments)


def _token_error_position(error: TokenError, tokenizer: object) -> int | None:
    cause = str(error.__cause__ or "")
    match = re.search(r"from \d+:(\d+)", cause)
    if match:
        return int(match.group(1))
    core = getattr(tokenizer, "_core", None)
    start = getattr(core, "_start", None)
    return start if isinstance(start, int) else None


# --- the whitelist ------------------------------------------------------------------------------

# Statement and clause nodes: the arguments each may carry (others must be empty / False).
_ALLOWED_ARGS: dict[type, frozenset[str]] = {
    exp.Select: frozenset(
        {"expressions", "from_", "joins", "where", "group", "having", "order", "limit",
         "offset", "distinct", "as_of", "kind"}
    ),
    exp.Insert: frozenset({"this", "expression", "conflict"}),
    exp.Update: frozenset({"this", "expressions", "where"}),
    exp.Delete: frozenset({"this", "where"}),
    exp.Create: frozenset({"this", "kind", "exists", "properties"}),
    exp.Properties: frozenset({"expressions"}),
    exp.Drop: frozenset({"this", "tables", "kind", "exists"}),
    exp.From: frozenset({"this"}),
    exp.Join: frozenset({"this", "on", "kind", "side"}),
    exp.Table: frozenset({"this", "alias"}),
    exp.TableAlias: frozenset({"this"}),
    exp.Group: frozenset({"expressions"}),
    exp.Distinct: frozenset({"expressions"}),
    exp.OnConflict: frozenset({"expressions", "action", "conflict_keys", "where"}),
    exp.In: frozenset({"this", "expressions", "query"}),
    exp.Subquery: frozenset({"this", "alias"}),
    exp.Union: frozenset({"this", "expression", "distinct", "order", "limit", "offset"}),
    exp.Limit: frozenset({"expression"}),
    exp.Offset: frozenset({"expression"}),
    exp.Schema: frozenset({"this", "expressions"}),
    exp.ColumnDef: frozenset({"this", "kind", "constraints"}),
    exp.Order: frozenset({"expressions", "this"}),   # this: the value of array_agg(x ORDER BY k)
    exp.Ordered: frozenset({"this", "desc", "nulls_first"}),
    exp.Values: frozenset({"expressions"}),
    exp.Column: frozenset({"this", "table", "db"}),   # db: schema.table.column (expr.Scope)
    exp.DataType: frozenset({"this", "nested", "kind", "expressions"}),
}

_ALLOWED_NODES: frozenset[type] = frozenset(
    {
        *_ALLOWED_ARGS,
        *SHOW_NODES, SetVar, Explain, ExplainAnalyze, Upsert, Locality,
        exp.Where, exp.Having, exp.Identifier, exp.Star, exp.Alias, exp.Tuple, exp.Var,
        exp.Literal, exp.Boolean, exp.Null, exp.Parameter, exp.Paren,
        exp.Neg, exp.Not, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.DPipe,
        exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE, exp.Is, exp.NullSafeEQ,
        exp.NullSafeNEQ, exp.And, exp.Or, exp.Between, exp.Like, exp.ILike, exp.Escape,
        exp.Case, exp.If, exp.Coalesce, exp.Nullif, exp.Lower, exp.Upper, exp.Length, exp.Abs,
        exp.Cast, exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg, exp.CurrentTimestamp,
        exp.Anonymous, exp.ColumnConstraint, exp.PrimaryKeyColumnConstraint,
        exp.NotNullColumnConstraint, exp.DefaultColumnConstraint, exp.PrimaryKey,
        exp.IndexParameters, exp.DataTypeParam, exp.Ordered, exp.HexString, exp.ByteString,
        exp.Exists, exp.Any, exp.All, exp.Array, exp.RegexpLike, exp.RegexpILike,
        exp.ObjectIdentifier, exp.ArrayToString, exp.Bracket, exp.GroupConcat, exp.ArrayAgg,
        exp.LogicalAnd, exp.LogicalOr, exp.GenerateSeries, exp.ExplodingGenerateSeries,
        exp.Explode, ArrayUpper, GenerateSubscripts,
    }
)

ANONYMOUS_FUNCTIONS = frozenset({"now", "unique_rowid"})

# (construct name, keyword to point at, error code)
_CONSTRUCT_NAMES: dict[type, tuple[str, str | None, str]] = {
    exp.Window: ("window functions (OVER ...)", "OVER", "unsupported"),
    exp.With: ("WITH (common table expressions)", "WITH", "unsupported"),
    exp.CTE: ("WITH (common table expressions)", "WITH", "unsupported"),
    exp.Collate: ('COLLATE other than "C", "POSIX" or default (text is in code point order)', "COLLATE", "unsupported"),
    exp.Intersect: ("INTERSECT", "INTERSECT", "unsupported"),
    exp.Except: ("EXCEPT", "EXCEPT", "unsupported"),
    exp.Returning: ("RETURNING", "RETURNING", "unsupported"),
    exp.Lock: ("FOR UPDATE / FOR SHARE locking", "FOR", "unsupported"),
    exp.Lateral: ("LATERAL", "LATERAL", "unsupported"),
    exp.Transaction: ("transactions (BEGIN)", None, "feature_not_supported"),
    exp.Commit: ("transactions (COMMIT)", None, "feature_not_supported"),
    exp.Rollback: ("transactions (ROLLBACK)", None, "feature_not_supported"),
    exp.Alter: ("ALTER", "ALTER", "unsupported"),
    exp.TruncateTable: ("TRUNCATE", "TRUNCATE", "unsupported"),
    exp.Set: ("SET", "SET", "unsupported"),
    exp.Merge: ("MERGE", "MERGE", "unsupported"),
    exp.Describe: ("DESCRIBE", None, "unsupported"),
    exp.Grant: ("GRANT", "GRANT", "unsupported"),
    exp.Use: ("USE", "USE", "unsupported"),
}

_ARG_NAMES: dict[str, tuple[str, str | None]] = {
    "with_": ("WITH (common table expressions)", "WITH"),
    "windows": ("WINDOW clause", "WINDOW"),
    "returning": ("RETURNING", "RETURNING"),
    "locks": ("FOR UPDATE / FOR SHARE locking", "FOR"),
    "qualify": ("QUALIFY", "QUALIFY"),
    "laterals": ("LATERAL", "LATERAL"),
    "using": ("USING", "USING"),
    "from_": ("FROM in UPDATE/DELETE", "FROM"),
    "side": ("RIGHT / FULL outer joins; write it as a LEFT JOIN", "JOIN"),
    "method": ("NATURAL / special joins", "JOIN"),
    "replace": ("CREATE OR REPLACE", "REPLACE"),
    "properties": ("table properties / options", None),
    "overwrite": ("INSERT OVERWRITE", None),
    "alternative": ("INSERT OR ...", "OR"),
    "columns": ("column aliases on a table alias", None),
    "only": ("ONLY", "ONLY"),
    "cascade": ("CASCADE", "CASCADE"),
    "temporary": ("TEMPORARY tables", None),
    "unique": ("UNIQUE indexes", "UNIQUE"),
    "query": ("subqueries here", "SELECT"),
    "db": ("schema-qualified names (use the bare table name)", None),
    "catalog": ("database-qualified names (use the bare table name)", None),
    "on": ("DISTINCT ON", "ON"),
    "sample": ("TABLESAMPLE", "TABLESAMPLE"),
    "version": ("time travel clause (use AS OF SYSTEM TIME after the FROM list)", None),
    "limit": ("LIMIT in this position", "LIMIT"),
}


def _check_supported(tree: exp.Expr, sql: str, tokens: list[Token]) -> None:
    """Raise SQLError for the first node (in text order, roughly) outside the whitelist."""
    stmt_start = tree.meta.get("stmt_start", 0)
    root = tree
    if isinstance(tree, Explain):
        inner = tree.this
        if isinstance(inner, (Explain, *SHOW_NODES)):
            name = "EXPLAIN of EXPLAIN" if isinstance(inner, Explain) else "EXPLAIN of SHOW"
            name = name.replace("EXPLAIN", "EXPLAIN ANALYZE", 1) if isinstance(tree, ExplainAnalyze) else name
            raise _unsupported_at(name, stmt_start, None, sql)
        root = inner
    if isinstance(root, Upsert):
        insert = root.this
        if insert.args.get("conflict") is not None:
            raise _unsupported_at(
                "UPSERT ... ON CONFLICT", _keyword_position(tokens, "ON", stmt_start), 
                "UPSERT always resolves conflicts on the primary key; use INSERT ... ON "
                "CONFLICT for anything else", sql,
            )
    if type(root) not in KIND_BY_NODE:
        name, keyword, code = _construct(root)
        position = _keyword_position(tokens, keyword, stmt_start) if keyword else stmt_start
        raise SQLError(code, f"not supported: {name}", position, sql)
    if isinstance(root, exp.Create) and root.args.get("kind") != "TABLE":
        kind = root.args.get("kind") or "this object"
        raise _unsupported_at(f"CREATE {kind}", stmt_start, "only CREATE TABLE is supported", sql)
    if isinstance(root, exp.Alter):
        _check_alter(root, sql, stmt_start)
        return
    if isinstance(root, exp.Create) and root.args.get("properties") is not None:
        found = root.args["properties"].expressions
        localities = all(isinstance(p, Locality) for p in found)
        if len(found) != 1 or not localities:
            position = _keyword_position(tokens, "LOCALITY", stmt_start) if len(found) > 1 else stmt_start
            raise _unsupported_at("LOCALITY given twice" if localities else "table properties / options", position,
                                  'a table takes one option: LOCALITY REGIONAL BY TABLE IN "region"', sql)
    if isinstance(root, exp.Drop) and root.args.get("kind") != "TABLE":
        kind = root.args.get("kind") or "this object"
        raise _unsupported_at(f"DROP {kind}", stmt_start, "only DROP TABLE is supported", sql)
    if isinstance(root, exp.Insert):
        _check_insert_source(root, sql, tokens, stmt_start)
    if isinstance(root, Upsert):
        _check_insert_source(root.this, sql, tokens, stmt_start)

    for node in _walk_checked(tree):
        kind = type(node)
        if _admit_pg_node(node, sql):   # the PostgreSQL catalog's names, functions and casts
            continue
        if kind is exp.Table and virtual_table_name(node) is not None:
            _check_virtual_table(node, sql)
            continue
        if kind not in _ALLOWED_NODES:
            name, keyword, code = _construct(node)
            position = _position(node, tokens, keyword, stmt_start)
            raise SQLError(code, f"not supported: {name}", position, sql)
        allowed = _ALLOWED_ARGS.get(kind)
        if allowed is not None:
            for key, value in node.args.items():
                if key in allowed or value is None or value is False or value == []:
                    continue
                if key == "columns" and kind is exp.TableAlias and isinstance(node.parent, exp.Table) \
                        and isinstance(node.parent.this, exp.Explode):
                    continue   # unnest(a) AS s(x): its one column's name (sql.plan._plan_unnest)
                name, keyword = _ARG_NAMES.get(key, (f"{key.rstrip('_').upper()}", None))
                if isinstance(value, str) and value.strip():
                    keyword = value.split()[0].upper()  # e.g. LEFT for a join side
                child = value if isinstance(value, exp.Expr) else node
                position = _position(child, tokens, keyword, stmt_start)
                raise SQLError("unsupported", f"not supported: {name}", position, sql)
        if kind is exp.Join:
            join_kind = (node.args.get("kind") or "").upper()
            side = (node.args.get("side") or "").upper()
            if side not in ("", "LEFT") or (side == "LEFT" and join_kind not in ("", "OUTER")):
                position = _position(node, tokens, side or "JOIN", stmt_start)
                raise SQLError(
                    "feature_not_supported", f"not supported: {side} {join_kind} JOIN".replace("  ", " ")
                    + "; write it as a LEFT JOIN (or an inner JOIN)", position, sql,
                )
            if join_kind not in ("", "INNER", "CROSS", "OUTER"):
                position = _position(node, tokens, "JOIN", stmt_start)
                raise SQLError(
                    "unsupported", f"not supported: {join_kind} JOIN; use an inner JOIN",
                    position, sql,
                )
            if side == "LEFT" and node.args.get("on") is None:
                raise SQLError("syntax", "LEFT JOIN needs an ON condition",
                               _position(node, tokens, "JOIN", stmt_start), sql)
        if kind is exp.Union and not isinstance(node.parent, (exp.Subquery, exp.Union, type(None))):
            raise SQLError("unsupported", "not supported: UNION here; UNION [ALL] is served at the top of a "
                           "statement, in a derived table and in a subquery", _position(node, tokens, "UNION", stmt_start), sql)
        if kind is exp.Subquery and not isinstance(node.this, (exp.Select, exp.Union)):
            raise SQLError("unsupported", "not supported: this subquery (a SELECT or UNION ALL is expected)",
                           _position(node, tokens, None, stmt_start), sql)
        if kind is exp.Array and not isinstance(node.parent, (exp.Any, exp.All, exp.Paren)) and not (
                len(node.expressions) == 1 and isinstance(node.expressions[0], (exp.Select, exp.Union))):
            raise SQLError("unsupported", "not supported: arrays other than ARRAY(SELECT ...) and the list of "
                           "x = ANY(ARRAY[...]) or x <> ALL(ARRAY[...])", _position(node, tokens, "ARRAY", stmt_start), sql)
        if isinstance(node, exp.GenerateSeries) and not (node.arg_key == "this" and isinstance(node.parent, exp.Table)):
            raise SQLError("unsupported", "not supported: generate_series() other than as a FROM item",
                           _position(node, tokens, None, stmt_start), sql)
        if kind is exp.Select and node.args.get("kind"):
            raise _unsupported_at(f"SELECT {node.args['kind']}", stmt_start, None, sql)
        if kind is exp.Anonymous and str(node.this).lower() not in ANONYMOUS_FUNCTIONS:
            position = _position(node, tokens, None, stmt_start)
            raise SQLError(
                "unsupported", f"not supported: function {str(node.this).lower()}()",
                position, sql,
            )


def alter_locality(root: exp.Alter) -> Locality | None:
    """The Locality an ``ALTER TABLE t SET LOCALITY ...`` sets, or None for any other ALTER."""
    actions = root.args.get("actions") or []
    if root.args.get("kind") != "TABLE" or len(actions) != 1 or not isinstance(actions[0], exp.AlterSet):
        return None
    inner = actions[0].expressions
    if len(inner) != 1 or not isinstance(inner[0], exp.Properties) or len(inner[0].expressions) != 1:
        return None
    found = inner[0].expressions[0]
    return found if isinstance(found, Locality) else None


def _check_alter(root: exp.Alter, sql: str, stmt_start: int) -> None:
    """The one ALTER served: ``ALTER TABLE t SET LOCALITY ...`` on a plain table name."""
    hint = 'the only ALTER is ALTER TABLE t SET LOCALITY REGIONAL BY TABLE IN "region"'
    kind = root.args.get("kind") or ""
    if kind != "TABLE":
        raise _unsupported_at(f"ALTER {kind}".strip(), stmt_start, hint, sql)
    extra = [k for k, v in root.args.items() if k not in ("this", "kind", "actions") and v not in (None, False, [])]
    table = root.this
    if alter_locality(root) is None or extra or not isinstance(table, exp.Table) or set(
            k for k, v in table.args.items() if v not in (None, False, [])) != {"this"}:
        raise _unsupported_at("this ALTER TABLE", stmt_start, hint, sql)


def _walk_checked(tree: exp.Expr):
    """Pre-order walk that skips the AS OF SYSTEM TIME expression (it is never evaluated
    here: follower reads will interpret it). Of a virtual table's call it visits the arguments
    and the alias, not the call and its ``crdb_internal`` qualifier."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, exp.Table) and virtual_table_name(node) is not None:
            alias = node.args.get("alias")
            stack.extend(reversed(list(node.this.expressions) + ([alias] if alias is not None else [])))
            continue
        children = []
        for key, value in node.args.items():
            if key == "as_of":
                continue
            if isinstance(value, exp.Expr):
                children.append(value)
            elif isinstance(value, list):
                children.extend(v for v in value if isinstance(v, exp.Expr))
        stack.extend(reversed(children))


def virtual_table_name(table: exp.Expr) -> str | None:
    """``crdb_internal.<function>`` for a FROM item that calls a crdb_internal table function
    (known or not), else None."""
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Anonymous):
        return None
    db = table.args.get("db")
    if not isinstance(db, exp.Identifier) or db.this.lower() != CRDB_INTERNAL or table.args.get("catalog"):
        return None
    return f"{CRDB_INTERNAL}.{str(table.this.this).lower()}"


def _check_virtual_table(table: exp.Table, sql: str) -> None:
    name = virtual_table_name(table)
    position = node_position(table)
    if name not in VIRTUAL_TABLE_NAMES:
        raise SQLError("unsupported", f"not supported: function {name}(); supported: "
                       + ", ".join(sorted(VIRTUAL_TABLE_NAMES)), position, sql)
    parent = table.parent
    if not (table.arg_key == "this" and isinstance(parent, (exp.From, exp.Join))
            and isinstance(parent.parent, exp.Select)):
        raise SQLError("unsupported", f"not supported: {name} here; it can only be read, as a FROM item: "
                       f"SELECT * FROM {name}(...)", position, sql)


def _check_insert_source(
    insert: exp.Insert, sql: str, tokens: list[Token], stmt_start: int
) -> None:
    source = insert.expression
    if not isinstance(source, (exp.Values, exp.Select)):
        name = "INSERT ... DEFAULT VALUES" if source is None else "this INSERT source"
        raise _unsupported_at(name, stmt_start, "use INSERT ... VALUES or INSERT ... SELECT", sql)


def _construct(node: exp.Expr) -> tuple[str, str | None, str]:
    for kind in type(node).__mro__:
        if kind in _CONSTRUCT_NAMES:
            return _CONSTRUCT_NAMES[kind]
    if isinstance(node, exp.Command):
        word = str(node.this).upper()
        return (word, word.split()[0] if word else None, "unsupported")
    if isinstance(node, exp.Func):
        return (f"function {node.sql_name().lower()}()", None, "unsupported")
    if isinstance(node, exp.Create):
        return (f"CREATE {node.args.get('kind') or ''}".strip(), None, "unsupported")
    name = re.sub(r"(?<!^)(?=[A-Z])", " ", type(node).__name__).upper()
    return (name, None, "unsupported")


def _position(node: exp.Expr, tokens: list[Token], keyword: str | None, floor: int) -> int:
    """Best offset of `node` in the text: its (or a descendant's) token start, or the first
    `keyword` token at or after that; else the statement start."""
    starts = [n.meta["start"] for n in node.walk() if n._meta and "start" in n._meta]
    node_start = min(starts) if starts else None
    if keyword:
        found = _keyword_position(tokens, keyword, floor, before=node_start)
        if found is not None:
            return found
    return node_start if node_start is not None else floor


def _keyword_position(
    tokens: list[Token], keyword: str | None, floor: int, before: int | None = None
) -> int:
    """Offset of the last `keyword` token in [floor, before] (first one if `before` is None)."""
    if keyword is None:
        return floor
    best = None
    for token in tokens:
        if token.start < floor:
            continue
        if before is not None and token.start > before:
            break
        if token.text.upper() == keyword:
            best = token.start
            if before is None:
                break
    if best is None and before is not None:
        return _keyword_position(tokens, keyword, floor)
    return best if best is not None else floor


def _meta(node: exp.Expr, **values: object) -> exp.Expr:
    node.meta.update(values)
    return node


def _unsupported_at(
    name: str, position: int | None, hint: str | None = None, sql: str | None = None
) -> SQLError:
    message = f"not supported: {name}"
    if hint:
        message += f"; {hint}"
    return SQLError("unsupported", message, position, sql)


_PLAIN_IDENTIFIER_RE = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_identifier(name: str) -> str:
    """`name` as SQL text that `identifier_name` reads back as `name`: bare when it is a plain
    lower-case word that is not a keyword, else double-quoted (``"`` doubled inside)."""
    if _PLAIN_IDENTIFIER_RE.fullmatch(name):
        tokens = DIALECT.tokenizer_class(dialect=DIALECT).tokenize(name)
        if len(tokens) == 1 and tokens[0].token_type == TokenType.VAR:
            return name
    return '"' + name.replace('"', '""') + '"'


def identifier_name(node: exp.Expr | str | None) -> str:
    """The SQL name an identifier denotes: unquoted names fold to lower case (PostgreSQL)."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.lower()
    if isinstance(node, exp.Identifier):
        return node.this if node.args.get("quoted") else node.this.lower()
    if isinstance(node, exp.Table) and virtual_table_name(node) is not None:
        return virtual_table_name(node)  # type: ignore[return-value]
    if isinstance(node, exp.Table) and (relation := catalog_relation_name(node)) is not None:
        return relation
    if isinstance(node, (exp.Column, exp.Table, exp.TableAlias)):
        return identifier_name(node.args.get("this"))
    return str(node.name).lower()


def node_position(node: exp.Expr | None) -> int | None:
    """The smallest source offset recorded in `node`'s subtree, or None."""
    if node is None:
        return None
    starts = [n.meta["start"] for n in node.walk() if n._meta and "start" in n._meta]
    return min(starts) if starts else None


# --- the PostgreSQL catalog: names, functions and casts (sql/pg_catalog.py, sql/pg_functions.py) --

SCHEMA_QUALIFIERS = frozenset({"pg_catalog", "information_schema", "public"})   # what may qualify a name
PG_FUNCTION_NODES = (exp.CurrentVersion, exp.CurrentSchema, exp.CurrentSchemas, exp.CurrentDatabase,
                     exp.CurrentCatalog, exp.CurrentUser, exp.SessionUser)


def catalog_relation_name(table: exp.Expr) -> str | None:
    """``pg_catalog.pg_class`` for a FROM item naming a virtual catalog table (``pg_class``,
    ``pg_catalog.pg_class``, ``information_schema.tables``), else None. An unqualified name
    means pg_catalog's table first, as in PostgreSQL, whose search path starts there."""
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier) or table.args.get("catalog"):
        return None
    from sql.pg_catalog import relation_name   # pg_catalog's tables are defined there

    db = table.args.get("db")
    return relation_name(identifier_name(db) if db is not None else None, identifier_name(table.this))


def _admit_pg_node(node: exp.Expr, sql: str) -> bool:
    """True for a node of the PostgreSQL catalog's vocabulary that the whitelist admits as it is
    (its children are still checked): a catalog table read in a FROM, a ``public.``-qualified
    table, a column qualified by its schema, ``pg_catalog.f(...)``, the catalog functions and the
    OID casts (``::regclass``). SQLError for a catalog table used other than as a FROM item, or
    an unknown name in pg_catalog / information_schema."""
    kind = type(node)
    if kind is exp.Table:
        db = node.args.get("db")
        if catalog_relation_name(node) is not None:
            parent = node.parent
            if not (node.arg_key == "this" and isinstance(parent, (exp.From, exp.Join))
                    and isinstance(parent.parent, exp.Select)):
                raise SQLError("unsupported", f"not supported: {identifier_name(node)} here; a system catalog "
                               "table can only be read, as a FROM item of a SELECT", node_position(node), sql)
            return _only_args(node, {"this", "db", "alias"})
        if db is None or node.args.get("catalog") or not isinstance(node.this, exp.Identifier):
            return False
        schema_name = identifier_name(db)
        if schema_name in ("pg_catalog", "information_schema"):
            raise SQLError("undefined_table", f'relation "{schema_name}.{identifier_name(node.this)}" does not exist',
                           node_position(node), sql)
        return schema_name == "public" and _only_args(node, {"this", "db", "alias"})
    if kind is exp.Column:
        db = node.args.get("db")
        return (db is not None and identifier_name(db) in SCHEMA_QUALIFIERS and node.args.get("table") is not None
                and _only_args(node, {"this", "table", "db"}))
    if kind is exp.Dot:   # pg_catalog.f(...), or the type name of x::pg_catalog.text
        return (isinstance(node.this, exp.Identifier) and identifier_name(node.this) == "pg_catalog"
                and (isinstance(node.expression, exp.Func)
                     or isinstance(node.expression, exp.Identifier) and isinstance(node.parent, exp.DataType)))
    if kind is exp.Anonymous:
        from sql.pg_functions import PG_FUNCTIONS

        return str(node.this).lower() in PG_FUNCTIONS
    if kind in PG_FUNCTION_NODES or kind is exp.ObjectIdentifier:
        return True
    if kind is exp.GeneratedAsIdentityColumnConstraint:
        return _only_args(node, {"this", "on_null"})
    return False


def _only_args(node: exp.Expr, allowed: set[str]) -> bool:
    return all(key in allowed or value in (None, False, []) for key, value in node.args.items())
