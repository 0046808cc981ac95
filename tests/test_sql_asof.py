"""AS OF SYSTEM TIME and the session's follower-read default as read specs (sql/asof.py): each
form at a fixed clock, and the causality token."""

from __future__ import annotations

import pytest

from sql.asof import BOUNDED, EXACT, FOLLOWER_READ_LAG_S, ReadSpec, read_spec, session_default, with_causality
from sql.dialect import parse

SEC = 10**9
NOW = 1_764_756_000 * SEC      # 2025-12-03 10:00:00 UTC


def spec(clause: str) -> ReadSpec:
    return read_spec(parse("SELECT 1 FROM t AS OF SYSTEM TIME %s" % clause)[0].as_of, NOW)


@pytest.mark.parametrize("clause, kind, ts, min_ts", [
    ("follower_read_timestamp()", EXACT, (NOW - int(FOLLOWER_READ_LAG_S * SEC), 0), None),
    ("with_max_staleness('10s')", BOUNDED, None, (NOW - 10 * SEC, 0)),
    ("with_max_staleness('1m30s')", BOUNDED, None, (NOW - 90 * SEC, 0)),
    ("with_max_staleness('500 ms')", BOUNDED, None, (NOW - SEC // 2, 0)),
    ("with_min_timestamp('2025-12-03 09:59:50')", BOUNDED, None, (NOW - 10 * SEC, 0)),
    ("'-5s'", EXACT, (NOW - 5 * SEC, 0), None),
    ("'-2 minutes'", EXACT, (NOW - 120 * SEC, 0), None),
    ("'2025-12-03 09:59:00'", EXACT, (NOW - 60 * SEC, 0), None),
    ("'2025-12-03 11:59:00+02:00'", EXACT, (NOW - 60 * SEC, 0), None),
    ("'%d.0000000002'" % (NOW - SEC), EXACT, (NOW - SEC, 2), None),
    ("%d" % (NOW - SEC), EXACT, (NOW - SEC, 0), None),
])
def test_each_form_reads_where_it_says(clause, kind, ts, min_ts):
    got = spec(clause)
    assert (got.kind, got.ts, got.min_ts) == (kind, ts, min_ts)


def test_a_bounded_read_never_reads_below_the_sessions_causality_token_and_an_exact_one_does():
    token = (NOW - SEC, 3)
    assert with_causality(spec("with_max_staleness('10s')"), token).min_ts == token
    assert with_causality(spec("with_max_staleness('10s')"), (NOW - 20 * SEC, 0)).min_ts == (NOW - 10 * SEC, 0)
    assert with_causality(spec("'-5s'"), token).ts == (NOW - 5 * SEC, 0)
    default = session_default({"default_transaction_use_follower_reads": "on"}, NOW)
    assert default.kind == BOUNDED and with_causality(default, token).min_ts == token
    assert session_default({}, NOW) is None


@pytest.mark.parametrize("clause, nearest_only", [
    ("with_max_staleness('10s')", False),
    ("with_max_staleness('10s', true)", True),
    ("with_max_staleness('10s', false)", False),
    ("with_min_timestamp('2025-12-03 09:59:50', TRUE)", True),
])
def test_nearest_only_is_the_bounded_forms_second_argument(clause, nearest_only):
    got = spec(clause)
    assert got.kind == BOUNDED and got.nearest_only is nearest_only
    assert with_causality(got, (NOW - SEC, 0)).nearest_only is nearest_only   # kept when the token raises the bound


@pytest.mark.parametrize("clause, message", [
    ("with_max_staleness('10s', 'yes')", "nearest_only is true or false"),
    ("with_max_staleness('10s', true, true)", "takes a bound and, optionally, nearest_only"),
    ("with_min_timestamp()", "takes a bound and, optionally, nearest_only"),
])
def test_a_bad_nearest_only_is_refused_by_name(clause, message):
    from sql.errors import SQLError

    with pytest.raises(SQLError, match=message) as info:
        spec(clause)
    assert info.value.code == "invalid_value"
