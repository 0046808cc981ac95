"""What a statement reads at: ``AS OF SYSTEM TIME`` and the session's follower-read default,
turned into a `ReadSpec` the KV serves (raftstore.kvserver.closedts: any replica that has closed
the timestamp answers, the nearest first, else the leaseholder).

The forms (CockroachDB's):

* ``follower_read_timestamp()``: an exact read at now - FOLLOWER_READ_LAG_S, a timestamp every
  replica has closed unless it is far behind;
* ``with_max_staleness('10s')``: a bounded-staleness read at the newest timestamp every replica
  it touches has closed, provided it is no older than 10 s and not below the session's
  causality token (its own latest commit), else at the leaseholders;
* ``with_min_timestamp(ts)``: the same with `ts` as the bound;
* either with a second argument ``true`` (nearest_only): never read at the leaseholders; when
  the gateway's own replicas have not closed the bound, the statement fails instead;
* an exact timestamp: ``'-5s'`` (an interval before now), ``'2026-12-03 10:00:00'`` (UTC), or an
  HLC decimal ``'1764756000000000000.0000000002'`` (wall nanoseconds, then the logical part in
  ten digits, as CockroachDB prints cluster_logical_timestamp()). An exact read reads exactly
  there, also below the causality token (it asked for that time).

The session default (``SET default_transaction_use_follower_reads = on``) makes every SELECT
without AS OF SYSTEM TIME a bounded-staleness read no older than follower_read_timestamp() and
not below the causality token. Pure: no I/O.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from sqlglot import exp

from raftstore import constants
from raftstore.durations import parse_interval_s
from sql.errors import SQLError

Version = tuple[int, int]
EXACT, BOUNDED = "exact", "bounded"
# follower_read_timestamp(): the closed lag, two side-transport intervals and a margin for the
# clocks: old enough that every caught-up replica has closed it.
FOLLOWER_READ_LAG_S = constants.closed_lag_s + 2 * constants.closed_side_interval_s + 1.1
FOLLOWER_READS_VAR = "default_transaction_use_follower_reads"   # a session variable (sql.session_vars)
_HLC_DECIMAL = re.compile(r"\s*(\d+)(?:\.(\d{1,10}))?\s*")


@dataclass(frozen=True)
class ReadSpec:
    """`kind` EXACT: read at `ts`; BOUNDED: at the newest closed timestamp at or above `min_ts`
    (with `nearest_only`, never at the leaseholders: an error instead). `form` names the
    clause for EXPLAIN and errors."""

    kind: str
    ts: Version | None = None
    min_ts: Version | None = None
    form: str = ""
    nearest_only: bool = False   # a bounded read the gateway's own replicas serve, or an error


def _error(code: str, message: str, node: exp.Expr | None = None) -> SQLError:
    from sql.dialect import node_position

    return SQLError(code, message, node_position(node) if node is not None else None)


def _timestamp_text(text: str, node: exp.Expr, now_ns: int) -> Version:
    """An exact timestamp's text: an interval before now, a date-time (UTC) or an HLC decimal."""
    seconds = parse_interval_s(text)
    if seconds is not None and text.strip().startswith("-"):
        return (now_ns + int(seconds * 1e9), 0)
    decimal = _HLC_DECIMAL.fullmatch(text)
    if decimal is not None and len(decimal.group(1)) >= 16:
        return (int(decimal.group(1)), int((decimal.group(2) or "0").ljust(10, "0")))
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise _error("invalid_value", "AS OF SYSTEM TIME: %r is not a timestamp: use an interval before now "
                     "('-5s'), a date-time ('2026-12-03 10:00:00'), an HLC decimal, follower_read_timestamp(), "
                     "with_max_staleness('10s') or with_min_timestamp(ts)" % text, node) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return (int(when.timestamp() * 1e9), 0)


def _string_arg(node: exp.Expr, name: str) -> str:
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    if isinstance(node, exp.Literal):
        return str(node.this)
    raise _error("invalid_value", "%s takes a constant string, not %s" % (name, node.sql()), node)


def _bool_arg(node: exp.Expr, name: str) -> bool:
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    raise _error("invalid_value", "%s's nearest_only is true or false, not %s" % (name, node.sql()), node)


def read_spec(clause: exp.Expr, now_ns: int) -> ReadSpec:
    """The ReadSpec of an AS OF SYSTEM TIME clause, evaluated at `now_ns` (the gateway's HLC)."""
    text = clause.sql()
    if isinstance(clause, exp.Anonymous) or isinstance(clause, exp.Func):
        name = (clause.name if isinstance(clause, exp.Anonymous) else clause.sql_name()).lower()
        args = list(clause.expressions) if isinstance(clause, exp.Anonymous) else list(clause.args.values())
        args = [a for a in args if isinstance(a, exp.Expr)]
        if name == "follower_read_timestamp":
            if args:
                raise _error("invalid_value", "follower_read_timestamp() takes no arguments", clause)
            return ReadSpec(EXACT, ts=(now_ns - int(FOLLOWER_READ_LAG_S * 1e9), 0), form=text)
        if name in ("with_max_staleness", "with_min_timestamp"):
            if len(args) not in (1, 2):
                raise _error("invalid_value", "%s takes a bound and, optionally, nearest_only (true or false)"
                             % name, clause)
            nearest_only = _bool_arg(args[1], name) if len(args) == 2 else False
            arg = _string_arg(args[0], name)
            if name == "with_max_staleness":
                seconds = parse_interval_s(arg)
                if seconds is None or seconds <= 0:
                    raise _error("invalid_value", "with_max_staleness takes a positive interval like '10s', "
                                 "not %r" % arg, args[0])
                return ReadSpec(BOUNDED, min_ts=(now_ns - int(seconds * 1e9), 0), form=text, nearest_only=nearest_only)
            return ReadSpec(BOUNDED, min_ts=_checked(_timestamp_text(arg, args[0], now_ns), now_ns, args[0]), form=text,
                            nearest_only=nearest_only)
        raise _error("invalid_value", "AS OF SYSTEM TIME does not take %s(): use follower_read_timestamp(), "
                     "with_max_staleness(...), with_min_timestamp(...) or a timestamp" % name, clause)
    if isinstance(clause, exp.Literal):
        return ReadSpec(EXACT, ts=_checked(_timestamp_text(str(clause.this), clause, now_ns), now_ns, clause), form=text)
    if isinstance(clause, exp.Neg) and isinstance(clause.this, exp.Literal):
        raise _error("invalid_value", "AS OF SYSTEM TIME takes a quoted interval ('-5s'), not %s" % text, clause)
    raise _error("invalid_value", "AS OF SYSTEM TIME takes a constant timestamp, not %s" % text, clause)


def _checked(ts: Version, now_ns: int, node: exp.Expr) -> Version:
    if ts[0] > now_ns:
        raise _error("invalid_value", "AS OF SYSTEM TIME: %s is in the future (now is %s)"
                     % (_show(ts), _show((now_ns, 0))), node)
    return ts


def _show(ts: Version) -> str:
    return "%d.%010d" % ts


def session_default(settings: dict, now_ns: int) -> ReadSpec | None:
    """The follower-read default of a session with `settings`, for a SELECT without AS OF."""
    if settings.get(FOLLOWER_READS_VAR) != "on":
        return None
    return ReadSpec(BOUNDED, min_ts=(now_ns - int(FOLLOWER_READ_LAG_S * 1e9), 0),
                    form="%s = on" % FOLLOWER_READS_VAR)


def with_causality(spec: ReadSpec, token: Version | None) -> ReadSpec:
    """A bounded read never reads below the session's causality token (its own latest
    commit); an exact read reads where it asked."""
    if spec.kind != BOUNDED or token is None or spec.min_ts is None or tuple(token) <= spec.min_ts:
        return spec
    return ReadSpec(BOUNDED, min_ts=tuple(token), form=spec.form, nearest_only=spec.nearest_only)
