"""Statement limits (sql/limits.py): a statement too large or too deep is refused with
program_limit_exceeded (SQLSTATE 54000) naming the limit, its value and what the statement has,
before the stage whose cost the limit bounds; one just under every limit runs; and no stage
ever raises RecursionError."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftstore import sqlclient
from raftstore.errors import SQLSTATE_BY_SQL_CODE
from sql import MemKV, Session, SQLError, constants, dialect, limits
from sql.dialect import DIALECT, parse
from sql.plan import plan_statement
from test_sql_parse import CASES

BYTES_MAX = constants.SQL_STATEMENT_BYTES_MAX
TOKENS_MAX = constants.SQL_STATEMENT_TOKENS_MAX
NESTING_MAX = constants.SQL_NESTING_DEPTH_MAX
DEPTH_MAX = constants.SQL_EXPRESSION_DEPTH_MAX


@pytest.fixture(autouse=True)
def _fresh_parse_cache():
    """Limits are checked when a text is first parsed: start and end every test uncached."""
    dialect._parse_cached.cache_clear()
    yield
    dialect._parse_cached.cache_clear()


@pytest.fixture
def session() -> Session:
    s = Session(MemKV())
    s.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT)")
    s.execute("INSERT INTO t VALUES (1, 2), (2, 3)")
    return s


def _refused(session: Session, sql: str, limit: str) -> SQLError:
    with pytest.raises(SQLError) as caught:
        session.execute(sql)
    error = caught.value
    assert error.code == "program_limit_exceeded", str(error)
    assert limit in error.message, str(error)
    return error


def _no_tokenizer(monkeypatch) -> None:
    def tokenize(sql):
        raise AssertionError("the tokenizer ran")
    monkeypatch.setattr(dialect, "_tokenize", tokenize)


def _chain(op: str, term: str, count: int) -> str:
    return f" {op} ".join([term] * count)


# --- size ---------------------------------------------------------------------------------------


def test_a_1_mb_flat_plus_chain_is_refused_by_its_size_before_the_tokenizer_runs(session, monkeypatch):
    sql = "SELECT " + "+".join(["1"] * 500_000)
    _no_tokenizer(monkeypatch)
    error = _refused(session, sql, "SQL_STATEMENT_BYTES_MAX")
    assert f"{len(sql)} bytes" in error.message and f"limit of {BYTES_MAX}" in error.message


def test_the_byte_limit_counts_utf8_bytes_not_characters(session):
    text = "é" * ((BYTES_MAX - 20) // 2 + 10)        # under the limit in characters, over it in bytes
    sql = f"SELECT '{text}'"
    assert len(sql) < BYTES_MAX < len(sql.encode())
    _refused(session, sql, "SQL_STATEMENT_BYTES_MAX")


def test_a_chain_under_the_byte_limit_with_too_many_tokens_is_refused_before_the_tokenizer_runs(
    session, monkeypatch
):
    sql = "SELECT " + "+".join(["1"] * (BYTES_MAX // 2 - 10))   # one token per byte
    assert len(sql) <= BYTES_MAX
    _no_tokenizer(monkeypatch)
    error = _refused(session, sql, "SQL_STATEMENT_TOKENS_MAX")
    assert re.search(r"at least \d+ tokens, more than the limit of %d" % TOKENS_MAX, error.message)


def test_the_tokenizers_count_refuses_what_the_quick_estimate_lets_through(session, monkeypatch):
    monkeypatch.setattr(constants, "SQL_STATEMENT_TOKENS_MAX", 1000)
    sql = "SELECT 1" + "*-1" * 400     # *- is one lexeme of the estimate, two tokens
    assert limits.token_estimate(sql) <= 1000 < len(DIALECT.tokenizer_class(dialect=DIALECT).tokenize(sql))
    error = _refused(session, sql, "SQL_STATEMENT_TOKENS_MAX")
    assert "1202 tokens, more than the limit of 1000" in error.message
    assert error.position is not None


def test_a_huge_in_list_is_refused_and_a_large_one_runs(session):
    _refused(session, "SELECT a FROM t WHERE a IN (" + ",".join(["7"] * TOKENS_MAX) + ")",
             "SQL_STATEMENT_TOKENS_MAX")
    values = ",".join(str(i) for i in range(10_000))
    assert session.execute(f"SELECT a FROM t WHERE a IN ({values}) ORDER BY a").rows == [[1], [2]]


def test_a_multi_row_insert_of_thousands_of_rows_is_within_the_limits(session):
    rows = ", ".join(f"({i}, {i % 97})" for i in range(10, 3010))
    assert session.execute(f"INSERT INTO t VALUES {rows}").rowcount == 3000
    assert session.execute("SELECT count(*) FROM t").rows == [[3002]]


# --- nesting (the parser's recursion) -----------------------------------------------------------


def test_parentheses_nested_to_the_limit_run_and_one_more_is_refused_where_it_goes_too_deep(session):
    assert session.execute("SELECT " + "(" * NESTING_MAX + "1" + ")" * NESTING_MAX).rows == [[1]]
    sql = "SELECT " + "(" * (NESTING_MAX + 1) + "1" + ")" * (NESTING_MAX + 1)
    error = _refused(session, sql, "SQL_NESTING_DEPTH_MAX")
    assert f"level {NESTING_MAX + 1}" in error.message and f"limit of {NESTING_MAX}" in error.message
    assert error.position == len("SELECT ") + NESTING_MAX + 1    # at the 1 inside the 25th parenthesis


@pytest.mark.parametrize("open_, close_", [
    ("(", ")"), ("abs(", ")"), ("coalesce(1, ", ")"), ("CASE WHEN true THEN ", " END"),
    ("NOT ", ""), ("- ", ""), ("1 IN (", ")"), ("CAST(", " AS INT)"), ("(SELECT ", ")"),
])
def test_a_deeply_nested_expression_is_refused_not_a_recursion_error(session, open_, close_):
    inner = "true" if open_ == "NOT " else "1"
    _refused(session, "SELECT " + open_ * 10_000 + inner + close_ * 10_000, "SQL_NESTING_DEPTH_MAX")


def test_nested_array_constructors_are_refused_before_the_parser_backtracks_on_them(session):
    with pytest.raises(SQLError) as caught:   # sqlglot's time doubles per level of ARRAY[...]
        session.execute("SELECT " + "ARRAY[" * 40 + "1" + "]" * 40)
    assert caught.value.code == "unsupported" and "ARRAY[...]" in caught.value.message


# --- expression depth (the planner's and evaluator's recursion) ---------------------------------


def test_a_flat_chain_just_under_the_depth_limit_runs_and_one_term_more_is_refused(session):
    terms = DEPTH_MAX - 1                     # SELECT, then one level per +, then the last 1
    assert session.execute("SELECT " + _chain("+", "1", terms)).rows == [[terms]]
    error = _refused(session, "SELECT " + _chain("+", "1", terms + 1), "SQL_EXPRESSION_DEPTH_MAX")
    assert f"{DEPTH_MAX + 1} levels deep, more than the limit of {DEPTH_MAX}" in error.message
    assert "IN (...)" in error.message


def test_a_long_or_chain_under_the_depth_limit_runs_in_every_clause(session):
    ors = _chain("OR", "b = 3", DEPTH_MAX - 10)
    assert session.execute(f"SELECT a FROM t WHERE {ors}").rows == [[2]]
    assert session.execute(f"SELECT b, count(*) FROM t GROUP BY b HAVING {ors}").rows == [[3, 1]]
    assert session.execute(f"UPDATE t SET b = 4 WHERE {ors}").rowcount == 1
    assert session.execute(f"EXPLAIN SELECT a FROM t WHERE {ors}").rows


def test_an_or_chain_of_thousands_is_refused_with_the_advice_to_use_in(session):
    error = _refused(session, f"SELECT a FROM t WHERE {_chain('OR', 'a = 1', 5000)}", "SQL_EXPRESSION_DEPTH_MAX")
    assert "use IN (...)" in error.message


def _deepen(frames: int, fn):
    """fn() called with `frames` more frames of the caller on the stack."""
    return fn() if frames == 0 else _deepen(frames - 1, fn)


AT_THE_LIMITS = [
    "SELECT " + "abs(" * (NESTING_MAX + 1) + "1" + ")" * (NESTING_MAX + 1),   # the costliest level
    "SELECT " + "coalesce(1, " * (NESTING_MAX + 1) + "1" + ")" * (NESTING_MAX + 1),
    "SELECT " + "CAST(" * NESTING_MAX + "1" + " AS INT)" * NESTING_MAX,
    "SELECT " + "1 + (" * NESTING_MAX + "1" + ")" * NESTING_MAX,
    "SELECT " + "CASE WHEN true THEN " * NESTING_MAX + "1" + " END" * NESTING_MAX,
    "SELECT " + "NOT " * NESTING_MAX + "true",
    "SELECT " + _chain("+", "1", DEPTH_MAX - 1),
    "SELECT " + _chain("||", "'x'", DEPTH_MAX - 1),
    "SELECT a FROM t WHERE " + _chain("OR", "b = 3", DEPTH_MAX - 4),
    "SELECT b, count(*) FROM t GROUP BY b HAVING " + _chain("OR", "b = 3", DEPTH_MAX - 4),
]


@pytest.mark.parametrize("sql", AT_THE_LIMITS, ids=[s[:30] for s in AT_THE_LIMITS])
def test_a_statement_at_the_limits_runs_with_300_frames_of_the_caller_on_the_stack(session, sql):
    assert sys.getrecursionlimit() == 1000   # the limits are sized for Python's default
    assert _deepen(300, lambda: session.execute(sql)).rows


def test_without_the_limits_a_long_chain_reaches_pythons_recursion_limit(monkeypatch):
    """The broken build: limits disabled, a 2,000-term chain parses (sqlglot's loop) and the
    planner's recursive compile fails - what a 1 MB chain did before, after 11 s of CPU."""
    sql = "SELECT " + _chain("+", "1", 2000)
    for name in ("SQL_STATEMENT_TOKENS_MAX", "SQL_NESTING_DEPTH_MAX", "SQL_EXPRESSION_DEPTH_MAX"):
        monkeypatch.setattr(constants, name, 10**9)
    (statement,) = parse(sql)
    with pytest.raises(RecursionError):
        plan_statement(statement, {})
    monkeypatch.undo()
    dialect._parse_cached.cache_clear()
    with pytest.raises(SQLError) as caught:
        parse(sql)
    assert caught.value.code == "program_limit_exceeded"


def test_a_recursion_error_that_slips_past_the_limits_is_still_program_limit_exceeded(session):
    sql = "SELECT " + _chain("+", "1", 150)
    with pytest.raises(SQLError) as caught:
        _deepen(sys.getrecursionlimit() - 200, lambda: session.execute(sql))
    assert caught.value.code == "program_limit_exceeded" and "ran out of stack" in caught.value.message


# --- the error's identity -----------------------------------------------------------------------


def test_program_limit_exceeded_is_sqlstate_54000_and_an_operational_error_for_the_client():
    assert SQLSTATE_BY_SQL_CODE["program_limit_exceeded"] == "54000"
    error = sqlclient.DatabaseError("x", sql_code="program_limit_exceeded")
    assert error.sqlstate == "54000"
    assert sqlclient._CLASS_BY_SQL_CODE["program_limit_exceeded"] is sqlclient.OperationalError


# --- the token estimate -------------------------------------------------------------------------


def _exact(sql: str) -> int | None:
    try:
        return len(DIALECT.tokenizer_class(dialect=DIALECT).tokenize(sql))
    except Exception:   # noqa: BLE001 - text the tokenizer refuses has no count to compare
        return None


def test_the_token_estimate_never_exceeds_the_tokenizers_count_on_the_parse_cases():
    assert len(CASES) > 50
    for text, _ in CASES:
        exact = _exact(text)
        estimate = limits.token_estimate(text)
        if exact is not None and estimate is not None:
            assert estimate <= exact, text


PIECES = ["'", '"', "-", "/", "*", "e", "E", "x", "n", "U&", "1", ".", "$", "@", "#", ":", "<", "=",
          ">", "!", " ", "\n", "\\", "(", ")", "[", "]", "{", "}", "%", "?", "|", "~", "&", ",", ";",
          "a", "_", "+", "é", "ORDER BY", "order\n by", "double precision", "SIMILAR TO", "--", "/*",
          "*/", "''", "1e-3", "E'\\''", "$1", "%s", "SELECT", "IN", "NOT"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=20))
def test_the_token_estimate_is_a_lower_bound_on_any_text(pieces):
    text = "".join(pieces)
    exact, estimate = _exact(text), limits.token_estimate(text)
    if exact is not None and estimate is not None:
        assert estimate <= exact, text
