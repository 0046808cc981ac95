"""The session variables a client may SET and SHOW, and the text each is kept in.

Why a module of its own: a variable's value lives in the connection's session map as text (the
gateway hands it back with every answer and takes it with the next statement, so a statement
the DB-API resends to another node runs with the same variables: raftstore.wire), and every
place that reads one - SET, SHOW, a session map from the client, the statement's deadline -
must agree on that text. Invariant: a value in a session's `settings` is always the canonical
text `set_value` returned (SHOW prints it as it is; `statement_timeout_ms` reads it back).

The variables (PostgreSQL's and CockroachDB's names and forms):

* ``default_transaction_use_follower_reads``: on / off (sql.asof: the follower-read default);
* ``statement_timeout``: how long a statement may run before the gateway cancels it
  (SQLSTATE 57014); a duration ``'5s'``, ``'500ms'``, ``'1min'``, ``'1.5h'`` or a number of
  milliseconds (``5000``, ``'5000'``), ``0`` for none; shown as PostgreSQL shows it (``5s``,
  ``500ms``, ``1min``, ``0``). A session that sets none runs under its node's default
  (``raftstore start --statement-timeout``, none unless given).

and the PostgreSQL settings of sql/pg_settings.py (``DateStyle``, ``TimeZone``,
``standard_conforming_strings``, ...), most of them fixed.

``SET name = DEFAULT`` (or ``TO DEFAULT``) drops the session's value: the variable is its
default again, on whichever node runs the next statement. Pure: no I/O.
"""

from __future__ import annotations

import re

from sql.asof import FOLLOWER_READS_VAR, parse_interval_s
from sql.constants import STATEMENT_TIMEOUT_MS_MAX
from sql.errors import SQLError
from sql.pg_settings import PG_SETTINGS, set_pg_value

STATEMENT_TIMEOUT_VAR = "statement_timeout"
SESSION_VARS = {FOLLOWER_READS_VAR: "off", STATEMENT_TIMEOUT_VAR: "0"}   # name -> built-in default, as SHOW prints it
SESSION_VARS.update(PG_SETTINGS)   # the PostgreSQL settings clients read and set on connect (sql/pg_settings.py)
_SHOWN_UNITS_MS = ((86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1000, "s"))
_NUMBER = re.compile(r"\d+(?:\.\d*)?")


def set_value(name: str, value: str) -> str | None:
    """The text a session keeps for `name`, one of SESSION_VARS (the parser admits no other:
    sql.dialect), set to `value` (a SET's one word or literal, or a session map's text); None for
    DEFAULT (the caller drops the session's value). SQLError invalid_value for a value the
    variable does not take."""
    word = value.strip().lower()
    if word == "default":
        return None
    if name == STATEMENT_TIMEOUT_VAR:
        return show_duration_ms(parse_timeout_ms(value))
    if name in PG_SETTINGS:
        return set_pg_value(name, value)
    if word in ("on", "true", "yes", "1"):
        return "on"
    if word in ("off", "false", "no", "0"):
        return "off"
    raise SQLError("invalid_value", "%s takes on or off, not %r" % (name, value))


def statement_timeout_ms(settings: dict, default_ms: int = 0) -> int:
    """The statement timeout of a session with `settings`, in ms (0: none); `default_ms` (the
    node's) when the session set none."""
    text = settings.get(STATEMENT_TIMEOUT_VAR)
    return default_ms if text is None else parse_timeout_ms(text)


def show_duration_ms(ms: int) -> str:
    """A duration in ms as PostgreSQL shows it: in the largest unit that holds it whole
    (``1min``, ``90s``, ``1500ms``); ``0`` for none."""
    if ms == 0:
        return "0"
    for unit_ms, unit in _SHOWN_UNITS_MS:
        if ms % unit_ms == 0:
            return "%d%s" % (ms // unit_ms, unit)
    return "%dms" % ms


def parse_timeout_ms(value: str) -> int:
    """A statement timeout's text, as SET (and the node's --statement-timeout) take it, in ms (0:
    none); SQLError invalid_value if it is no duration."""
    text = value.strip()
    if _NUMBER.fullmatch(text):         # a number without a unit is milliseconds, as PostgreSQL reads it
        exact_ms = float(text)
    else:
        seconds = parse_interval_s(text) if text[:1].isdigit() else None   # no sign: never negative
        if seconds is None:
            raise SQLError("invalid_value", "%s takes a duration such as '5s', '500ms' or '1min', or a number of "
                           "milliseconds (0: no timeout), not %r" % (STATEMENT_TIMEOUT_VAR, value))
        exact_ms = seconds * 1000
    if exact_ms > STATEMENT_TIMEOUT_MS_MAX:
        raise SQLError("invalid_value", "%s is at most %d ms (about 24 days), not %r; 0 means no timeout"
                       % (STATEMENT_TIMEOUT_VAR, STATEMENT_TIMEOUT_MS_MAX, value))
    return max(1, round(exact_ms)) if exact_ms > 0 else 0   # a positive timeout never rounds to none
