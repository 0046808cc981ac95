"""Operating errors of the client protocol: what went wrong, whether a write may have landed,
and what to do about it.

Why a module of its own: the same few outcomes (no leader, maybe committed, bad request, too
large, node draining) are produced by the server, carried on the wire as
``{"code", "message", "ambiguous"}``, and re-raised by the client, so the code table lives in
one place that both sides import. The distinction that matters most to a caller is
`ambiguous`: False means the write surely did not commit and may be retried freely (even as a
new write); True means it may or may not have committed, and only a retry with the same
command id (which `raftstore.kv.Client` does itself) or a read can tell.

Programmer errors (wrong argument types, using a closed client) are not here: they are
TypeError / ValueError / RuntimeError at the call site.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any


class RaftstoreError(Exception):
    """Base of every operating error a raftstore client can see.

    `code` is the wire error code (``unavailable``, ``ambiguous``, ...); `ambiguous` is True when
    a write may or may not have committed. `str(err)` is one line: what happened, then what to do.
    """

    code: str = "internal"
    ambiguous: bool = False
    hint: str = "this is a bug or an unexpected server state; see the node's log"

    def __init__(self, message: str, *, code: str | None = None, ambiguous: bool | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if ambiguous is not None:
            self.ambiguous = ambiguous

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` map of a response: ``{"code", "message", "ambiguous"}`` (a new dict)."""
        return {"code": self.code, "message": self.message, "ambiguous": bool(self.ambiguous)}


class UnavailableError(RaftstoreError):
    """No leader right now, or the node cannot reach a quorum. The write surely did not commit."""

    code = "unavailable"
    hint = "nothing was applied; retry later or against another node"


class DrainingError(UnavailableError):
    """The node is shutting down and refused the request. The write surely did not commit."""

    code = "draining"
    hint = "the node is shutting down and the write did not commit; retry against another node"


class AmbiguousCommitError(RaftstoreError):
    """The write may or may not have committed (a leader change or a broken connection hid the
    outcome). Read the key to find out; a retry with a *new* write may apply twice."""

    code = "ambiguous"
    ambiguous = True
    hint = "the write may have committed; read the key to find out before writing again"


class BadRequestError(RaftstoreError):
    """The request is malformed (wrong fields or types, unknown op). Retrying cannot help."""

    code = "bad_request"
    hint = "the request was rejected and not applied; fix the request (client/server mismatch?)"


class TooLargeError(RaftstoreError):
    """A key, value, request or result exceeds a limit. Retrying cannot help. The message says
    what was applied: nothing for a key-value call; for a SQL statement, its earlier writes may
    have been, and were rolled back (otherwise the answer is SQLSTATE 40003)."""

    code = "too_large"
    hint = "use smaller keys or values, or a smaller scan limit"


class InternalError(RaftstoreError):
    """The server failed in a way it did not expect."""

    code = "internal"


class ConnectionFailedError(UnavailableError):
    """Could not reach any of the given addresses (or every connection broke before an answer)
    within the client's timeout. Raised for reads and for writes that surely never reached a
    server; a write that may have reached one raises AmbiguousCommitError instead."""

    code = "connection_failed"
    hint = "check that the nodes are running and that the addresses match their --sql-addr"


class SqlError(RaftstoreError):
    """A SQL statement was refused or failed while running: bad syntax, an unknown table, a
    constraint violation, a division by zero. `ambiguous` is True when some of the statement's
    writes applied or may have and the message says which rows may remain (sql_code
    ``statement_completion_unknown``, SQLSTATE 40003); otherwise nothing of it remains applied.

    `sql_code` names the kind of failure (one of `SQL_CODES`; a newer server may send others),
    `position` is the 0-based character offset into the statement text of the construct at
    fault, or None. `str(err)` is the server's message as is, with no hint appended: the
    message itself says what to fix.
    """

    code = "sql_error"
    hint = "the statement was rejected; fix it and run it again"

    def __init__(
        self,
        message: str,
        *,
        sql_code: str,
        position: int | None = None,
        ambiguous: bool = False,
    ):
        super().__init__(message, ambiguous=ambiguous)
        self.sql_code = sql_code
        self.position = position

    def to_wire(self) -> dict[str, Any]:
        """``{"code": "sql_error", "message", "ambiguous", "sql_code", "position"}``."""
        wire = super().to_wire()
        wire["sql_code"] = self.sql_code
        wire["position"] = self.position
        return wire


# The sql_code values of SqlError and the SQLSTATE each stands for (PostgreSQL's code of the
# kind; sql/DIFFERENCES.md lists the finer codes a kind covers). raftstore.sqlclient maps them
# onto the PEP 249 exception classes.
SQLSTATE_BY_SQL_CODE = {
    "syntax": "42601",
    "unsupported": "0A000",
    "undefined_table": "42P01",
    "undefined_column": "42703",
    "duplicate_table": "42P07",
    "undefined_object": "42704",
    "unique_violation": "23505",
    "not_null_violation": "23502",
    "datatype_mismatch": "42804",
    "division_by_zero": "22012",
    "invalid_parameter": "08P01",
    "invalid_value": "22023",
    "feature_not_supported": "0A000",
    # CockroachDB's code: a bounded-staleness read with nearest_only that the gateway's own
    # replicas cannot serve within its bound (it is never sent to the leaseholders).
    "unsatisfiable_bounded_staleness": "XCUBS",
    # A write conflict met before any write of the statement applied: nothing of it applied,
    # so it may run again (the gateway does so itself, a bounded number of times).
    "serialization_failure": "40001",
    # The statement failed after some of its writes applied (or may have): what remains is in
    # the message; the error is `ambiguous` and the statement must not simply be sent again.
    "statement_completion_unknown": "40003",
    # The statement ran past its statement_timeout and the gateway canceled it before any write
    # of it applied (after one, the answer is 40003). A definite answer: never resent.
    "query_canceled": "57014",
    # A statement over one of the SQL layer's limits (sql/limits.py: text bytes, tokens, nesting,
    # expression depth) or a result over --max-result-bytes; the message names the limit.
    # PostgreSQL's class 54 (54001 for depth).
    "program_limit_exceeded": "54000",
    # A scalar subquery that returned more than one row.
    "cardinality_violation": "21000",
    # A pattern of ~, ~*, !~, !~* that is not a regular expression.
    "invalid_regular_expression": "2201B",
}
SQL_CODES = frozenset(SQLSTATE_BY_SQL_CODE)


class ProtocolError(RaftstoreError):
    """The server's answer does not follow the client protocol (client/server version mismatch
    or a bug). For a write whose answer said ok it is raised with ``ambiguous=True``."""

    code = "protocol"
    hint = "the client and server disagree on the protocol; check that their versions match"


_BY_CODE: dict[str, type[RaftstoreError]] = {
    cls.code: cls
    for cls in (
        UnavailableError,
        DrainingError,
        AmbiguousCommitError,
        BadRequestError,
        TooLargeError,
        InternalError,
    )
}

# Codes after which the request surely did not apply and another node may serve it.
RETRY_ELSEWHERE_CODES = frozenset({"unavailable", "draining"})


def error_from_wire(obj: Any) -> RaftstoreError:
    """Turn the ``error`` map of a response into a typed error (returned, not raised).

    Known codes map to their class, an unknown code to a plain `RaftstoreError` carrying that
    code; ``sql_error`` also needs ``sql_code: str`` and ``position: int >= 0 | nil`` (see
    `SqlError`). The input is untrusted: a map that is not ``{"code": str, "message": str,
    "ambiguous": bool}`` gives a `ProtocolError`. ``ambiguous`` from the wire is kept (an
    ``internal`` error may be ambiguous); the ``ambiguous`` code is always ambiguous.
    """
    if not isinstance(obj, dict):
        return ProtocolError(
            f"malformed error in response: expected a map, got {type(obj).__name__}"
        )
    code, message, ambiguous = obj.get("code"), obj.get("message"), obj.get("ambiguous")
    if not isinstance(code, str) or not isinstance(message, str) or not isinstance(ambiguous, bool):
        return ProtocolError(
            "malformed error in response: expected {code: str, message: str, ambiguous: bool}, "
            f"got code={type(code).__name__}, message={type(message).__name__}, "
            f"ambiguous={type(ambiguous).__name__}"
        )
    if code == SqlError.code:
        return _sql_error_from_wire(obj, message, ambiguous)
    cls = _BY_CODE.get(code)
    if cls is None:
        return RaftstoreError(
            f"server error {code!r}: {message}", code=code, ambiguous=ambiguous
        )
    text = f"{code}: {message} ({cls.hint})"
    return cls(text, ambiguous=ambiguous or cls.ambiguous)


def _sql_error_from_wire(obj: dict, message: str, ambiguous: bool) -> RaftstoreError:
    sql_code, position = obj.get("sql_code"), obj.get("position")
    if not isinstance(sql_code, str):
        return ProtocolError(
            "malformed sql_error in response: sql_code must be a str, got "
            f"{type(sql_code).__name__}"
        )
    position_ok = position is None or (
        isinstance(position, int) and not isinstance(position, bool) and position >= 0
    )
    if not position_ok:
        shown = repr(position) if isinstance(position, int) else type(position).__name__
        return ProtocolError(
            f"malformed sql_error in response: position must be an int >= 0 or nil, got {shown}"
        )
    return SqlError(message, sql_code=sql_code, position=position, ambiguous=ambiguous)
