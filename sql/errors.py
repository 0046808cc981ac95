"""Operating errors of the SQL layer: what went wrong in the statement, where, and what to do.

Why a module of its own: every stage (parse, plan, execute) reports bad SQL the same way, and
the gateway carries ``code``/``message``/``position`` to the client unchanged, so a REPL can
underline the spot and a driver can map ``code`` to a DB-API exception class.

Only *statement* problems are SQLError. Errors from the store (``raftstore.errors``:
unavailable, ambiguous commit, ...) pass through the SQL layer untouched, so a caller can tell
"your SQL is wrong" from "the cluster could not do it right now". Broken invariants inside this
package are ``assert``s, not SQLError.

Pure: no I/O.
"""

from __future__ import annotations

CODES = frozenset(
    {
        "syntax",  # the text is not SQL we can parse, or breaks a grammar/grouping rule
        "unsupported",  # valid SQL that this engine does not implement (yet)
        "undefined_table",
        "undefined_column",  # also: an ambiguous column reference
        "duplicate_table",
        "undefined_object",  # a name that is no object of the cluster: a region no node is in
        "unique_violation",  # a primary key that already exists (or twice in one statement)
        "not_null_violation",
        "datatype_mismatch",  # wrong type, unparsable literal, value out of range
        "division_by_zero",
        "invalid_parameter",  # wrong number or type of bound parameters, bad LIMIT value
        "invalid_value",  # 22023: a bad argument of AS OF SYSTEM TIME, a bad value for SET
        "feature_not_supported",  # a feature that is planned but comes later
        "unsatisfiable_bounded_staleness",  # XCUBS (CockroachDB's): a nearest_only read its replicas cannot serve
        "serialization_failure",  # 40001: a write conflict before any write applied; may be rerun
        "statement_completion_unknown",  # 40003: failed after some writes applied; never rerun blindly
        "query_canceled",  # 57014: its statement_timeout came before it finished; nothing of it was written
        "program_limit_exceeded",
        "cardinality_violation",  # 21000: more than one row from a subquery used as an expression
        "invalid_regular_expression",  # 2201B: a ~ pattern Python's re cannot compile  # 54000: a statement over a limit of sql/limits.py (size, tokens, depth)
    }
)


class SQLError(Exception):
    """A statement that cannot be run as written.

    `code` is one of CODES; `position` is the 0-based character offset in the statement text
    of the construct at fault, or None when the fault has no single place. `str(err)` is the
    message, ending in ``(line L, column C)`` when the position is known.
    """

    def __init__(
        self, code: str, message: str, position: int | None = None, sql: str | None = None
    ):
        assert code in CODES, code
        self.code = code
        self.message = message
        self.position = position
        self.line: int | None = None
        self.column: int | None = None
        if position is not None and sql is not None and 0 <= position <= len(sql):
            self.line = sql.count("\n", 0, position) + 1
            self.column = position - (sql.rfind("\n", 0, position) + 1) + 1
        super().__init__(self._render())

    def _render(self) -> str:
        if self.line is not None:
            return f"{self.message} (line {self.line}, column {self.column})"
        if self.position is not None:
            return f"{self.message} (at character {self.position})"
        return self.message

    def with_sql(self, sql: str) -> SQLError:
        """The same error with line and column computed against `sql` (a new object)."""
        if self.line is not None or self.position is None:
            return self
        return SQLError(self.code, self.message, self.position, sql)

    def __reduce__(self):
        return (SQLError, (self.code, self.message, self.position))
