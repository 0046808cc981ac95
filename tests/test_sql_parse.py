"""The SQL dialect (sql/dialect.py): CockroachDB extensions parse into real trees, unsupported
SQL is rejected naming the construct and where it is, garbage is a syntax error with a
position - never a traceback. Cases live in tests/sql_cases/parse.txt as SQL => expected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sql.dialect import DIALECT, parse
from sql.errors import CODES, SQLError

CASES_PATH = Path(__file__).parent / "sql_cases" / "parse.txt"


def _load_cases() -> list[tuple[str, str]]:
    cases = []
    sql_lines: list[str] = []
    for line in CASES_PATH.read_text().splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("=>"):
            assert sql_lines, f"expectation without SQL: {line}"
            cases.append(("\n".join(sql_lines), line[2:].strip()))
            sql_lines = []
        elif line.strip():
            sql_lines.append(line)
        else:
            assert not sql_lines, f"SQL without expectation: {sql_lines}"
    assert not sql_lines
    return cases


CASES = _load_cases()


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:50] for c in CASES])
def test_dialect_case(sql: str, expected: str) -> None:
    if expected.startswith("ok "):
        _check_ok(sql, expected[3:])
    else:
        match = re.fullmatch(r"error (\w+) at (\d+):(\d+) (.+)", expected)
        assert match, f"bad expectation {expected!r}"
        code, line, column, text = match.groups()
        with pytest.raises(SQLError) as caught:
            parse(sql)
        error = caught.value
        assert error.code == code, str(error)
        assert (error.line, error.column) == (int(line), int(column)), str(error)
        assert text in error.message, str(error)
        assert error.position is not None


def _check_ok(sql: str, expected: str) -> None:
    params = re.search(r"params=(\d+)", expected)
    as_of = re.search(r"as_of=(.+)$", expected)
    kinds = re.sub(r"(params|as_of)=.*$", "", expected).strip()
    statements = parse(sql)
    assert [s.kind for s in statements] == [k.strip() for k in kinds.split(",")]
    if params:
        assert statements[0].param_count == int(params.group(1))
    if as_of:
        assert statements[0].as_of is not None
        assert statements[0].as_of.sql(dialect=DIALECT) == as_of.group(1)
    else:
        assert all(s.as_of is None for s in statements)


def test_parse_is_cached_per_text() -> None:
    sql = "SELECT a FROM t WHERE a = $1 -- cache probe"
    assert parse(sql)[0] is parse(sql)[0]


def test_percent_s_parameters_are_numbered_left_to_right() -> None:
    (statement,) = parse("SELECT %s, a FROM t WHERE b = %s LIMIT %s")
    numbers = [int(p.this.this) for p in statement.ast.find_all(exp.Parameter)]
    assert sorted(numbers) == [1, 2, 3]
    assert statement.param_count == 3


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("SELECT FROM WHERE()*,;'\"$%s1=<>ab.-+\n")),
               max_size=40))
def test_any_text_parses_or_fails_with_sqlerror(text: str) -> None:
    """Arbitrary input never escapes as anything but SQLError (with a valid code)."""
    try:
        parse(text)
    except SQLError as error:
        assert error.code in CODES
