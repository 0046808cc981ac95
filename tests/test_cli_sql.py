"""``raftstore sql``: splitting input into statements, the table and error layout, and the
command's -e / stdin / interactive modes against a fake server (see test_sqlclient)."""

from __future__ import annotations

import argparse
import datetime
import io
import os
import subprocess
import sys
import time

import pytest

from raftstore import sqlclient
from raftstore.cli import sql_shell as cli_sql
from raftstore.cli.sql_shell import (
    ScannedInput,
    completions_for,
    format_error,
    format_table,
    format_value,
    split_statements,
)
from test_kv_client import err
from test_sqlclient import result, sql_err, sql_server  # noqa: F401 - sql_server is a fixture

T_ROWS = result(["a", "b"], ["INT", "TEXT"], [[1, "one"], [22, None]])
T_TABLE = [
    " a  |  b",
    "----+------",
    "  1 | one",
    " 22 | NULL",
    "(2 rows)",
]
SCRIPT = {
    "SHOW TABLES": result(["table_name"], ["TEXT"], [["t"], ["users"]]),
    "SELECT a, b FROM t": T_ROWS,
    "INSERT INTO t VALUES (3, 'three')": result(rowcount=1, status="INSERT 1"),
    "CREATE TABLE u (x INT PRIMARY KEY)": result(status="CREATE TABLE"),
    "SELECT a FORM t": sql_err("syntax", 'syntax error at or near "FORM"', 9),
    "SELECT nope FROM t": sql_err("undefined_column", 'column "nope" does not exist', 7),
}
USERS_COLUMNS = result(
    ["column_name", "data_type", "is_nullable", "column_default", "primary_key", "is_hidden"],
    ["TEXT", "TEXT", "BOOL", "TEXT", "BOOL", "BOOL"],
    [["id", "INT", False, "", True, False], ["name", "TEXT", True, "'x'", False, False]],
)
DESCRIBE_SCRIPT = {
    **SCRIPT,
    "SHOW COLUMNS FROM users": USERS_COLUMNS,
    'SHOW COLUMNS FROM "users"': USERS_COLUMNS,
    'SHOW COLUMNS FROM "t"': result(["column_name"], ["TEXT"], [["a"], ["b"]]),
    "SHOW COLUMNS FROM nope": sql_err(
        "undefined_table", 'relation "nope" does not exist; SHOW TABLES (\\dt in the shell) lists the tables', 18),
    "SHOW DATABASES": result(["database_name"], ["TEXT"], [["defaultdb"]]),
}


# --- splitting input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, statements",
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1;", ["SELECT 1"]),
        ("  SELECT 1 ;  SELECT 2;\n", ["SELECT 1", "SELECT 2"]),
        ("SELECT a,\n b FROM t;", ["SELECT a,\n b FROM t"]),
        (";;  ;", []),
        ("SELECT 'a;b' ; SELECT 'it''s;'", ["SELECT 'a;b'", "SELECT 'it''s;'"]),
        ("SELECT E'it\\'s;'; SELECT 2", ["SELECT E'it\\'s;'", "SELECT 2"]),
        ("SELECT 'a\\'; SELECT 2", ["SELECT 'a\\'", "SELECT 2"]),  # no E: backslash is literal
        ('SELECT "a;b" FROM t; SELECT 2', ['SELECT "a;b" FROM t', "SELECT 2"]),
        ("SELECT $$a;b$$; SELECT $x$;$$;$x$", ["SELECT $$a;b$$", "SELECT $x$;$$;$x$"]),
        ("SELECT $1; SELECT $2", ["SELECT $1", "SELECT $2"]),
        ("SELECT 1 -- not; here\n; SELECT 2", ["SELECT 1 -- not; here", "SELECT 2"]),
        ("SELECT /* a; /* b; */ c; */ 1; SELECT 2", ["SELECT /* a; /* b; */ c; */ 1", "SELECT 2"]),
        ("-- only a comment;\n", []),
        ("\\timing on\nSELECT 1;\n\\q", ["\\timing on", "SELECT 1", "\\q"]),
        ("SELECT 1 \\g", ["SELECT 1 \\g"]),  # a backslash inside a statement is just text
        ("SELECT 'unterminated", ["SELECT 'unterminated"]),
    ],
)
def test_statements_end_at_semicolons_outside_quotes_and_comments(text, statements):
    assert split_statements(text) == statements


@pytest.mark.parametrize(
    "text, complete",
    [
        ("", True),
        ("   \n", True),
        ("SELECT 1;", True),
        ("SELECT 1;  -- done", True),
        ("SELECT 1", False),
        ("SELECT a,\n b FROM t", False),
        ("SELECT ';'", False),
        ("SELECT ';", False),
        ("SELECT 1; /* open", False),
        ('SELECT "a;', False),
        ("SELECT $$;", False),
        ("SELECT 1; SELECT", False),
        ("\\q", True),
        ("\\timing", True),
    ],
)
def test_input_is_complete_only_when_nothing_is_pending(text, complete):
    assert ScannedInput(text).complete is complete


# --- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "NULL"),
        (True, "true"),
        (False, "false"),
        (-7, "-7"),
        (1.0, "1"),
        (0.1, "0.1"),
        (1e20, "1e+20"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
        (b"\x00\xab", "\\x00ab"),
        ("", ""),
        ("a\tb\nc\x01", "a\\tb\\nc\\x01"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 600), "2024-01-02 03:04:05.000600"),
    ],
)
def test_values_print_as_postgresql_prints_them(value, text):
    assert format_value(value) == text


def test_tables_align_numbers_right_text_left_and_center_headers():
    assert format_table(["a", "b"], ["INT", "TEXT"], [(1, "one"), (22, None)]) == T_TABLE[:-1]


def test_wide_characters_take_two_columns_in_the_layout():
    lines = format_table(["name"], ["TEXT"], [("東京",), ("ab",)])
    assert lines == [" name", "------", " 東京", " ab"]


def test_a_table_without_rows_still_has_its_header():
    assert format_table(["id", "name"], ["BIGINT", "TEXT"], []) == [" id | name", "----+------"]


class Positioned(Exception):
    def __init__(self, message: str, position: int | None):
        super().__init__(message)
        self.position = position


@pytest.mark.parametrize(
    "sql, position, lines",
    [
        ("SELECT a FORM t", 9, ["LINE 1: SELECT a FORM t", "                 ^"]),
        ("SELECT a,\n b FORM t", 13, ["LINE 2:  b FORM t", "           ^"]),
        ("SELECT\ta FORM t", 9, ["LINE 1: SELECT a FORM t", "                 ^"]),
        ("SELECT 1 +", 10, ["LINE 1: SELECT 1 +", "                  ^"]),  # at the very end
        ("SELECT '東京' FORM t", 12, ["LINE 1: SELECT '東京' FORM t", " " * 22 + "^"]),
        ("SELECT 1", None, []),
        ("SELECT 1", 99, []),
    ],
)
def test_errors_show_a_caret_under_the_position_when_known(sql, position, lines):
    error = Positioned("syntax error", position)
    assert format_error(error, sql) == ["ERROR: syntax error"] + lines


def test_the_caret_line_of_a_very_long_statement_is_a_window_around_the_position():
    sql = "SELECT " + ", ".join(f"c{i}" for i in range(200)) + " FORM t"
    position = sql.index("FORM")
    _, line, caret = format_error(Positioned("bad", position), sql)
    assert len(line) < 130
    assert line[caret.index("^") :].startswith("FORM")
    assert "..." in line


def test_error_messages_stay_on_one_line():
    assert format_error(RuntimeError("two\nlines")) == ["ERROR: two lines"]


@pytest.mark.parametrize(
    "before, expected",
    [
        ("sel", ["select"]),
        ("SEL", ["SELECT"]),
        ("SELECT * FROM ", ["t", "users"]),
        ("SELECT * FROM u", ["users"]),
        ("INSERT INTO u", ["users"]),
        ("SELECT * FROM t WHERE u", ["users", "update", "upsert"]),
        ("SELECT * FROM t WHERE U", ["users", "UPDATE", "UPSERT"]),
        ("SELECT ", []),
        ("SELECT", []),  # a whole keyword offers nothing more
    ],
)
def test_completion_offers_tables_after_from_and_keywords_elsewhere(before, expected):
    assert completions_for(before, ["t", "users"]) == expected


@pytest.mark.parametrize(
    "before, expected",
    [
        ("SELECT na", ["name"]),
        ("SELECT id, n", ["name", "not", "nothing", "null", "nulls"]),
        ("SELECT * FROM users WHERE a", ["age", "all", "analyze", "and", "as", "asc", "avg"]),
        ("SELECT * FROM u", ["users"]),               # after FROM: tables only
        ("SELECT users.", ["id", "name", "age"]),      # after table.: that table's columns
        ("SELECT users.a", ["age"]),
        ("SELECT t.", ["a"]),
    ],
)
def test_completion_offers_column_names_of_the_tables(before, expected):
    columns = {"t": ["a"], "users": ["id", "name", "age"]}
    assert completions_for(before, ["t", "users"], columns) == expected


# --- meta commands -----------------------------------------------------------------------------


def test_expanded_output_is_one_record_block_per_row_as_psql_prints_it():
    assert cli_sql.format_expanded(["id", "name"], [[1, "ann"], [22, None]]) == [
        "-[ RECORD 1 ]",
        "id   | 1",
        "name | ann",
        "-[ RECORD 2 ]",
        "id   | 22",
        "name | NULL",
    ]
    assert cli_sql.format_expanded(["a_long_column_name", "b"], [["x" * 12, 1]]) == [
        "-[ RECORD 1 ]------+-------------",
        "a_long_column_name | xxxxxxxxxxxx",
        "b                  | 1",
    ]
    assert cli_sql.format_expanded(["a"], []) == ["(0 rows)"]


def run_items(server_address: str, text: str) -> tuple[int, str, str]:
    out, errors = io.StringIO(), io.StringIO()
    with sqlclient.connect(server_address) as connection:
        code = cli_sql.run_statements(connection, [text], out, err=errors)
    return code, out.getvalue(), errors.getvalue()


def test_d_describes_a_table_and_dt_d_l_list_tables_and_databases(sql_server):
    server = sql_server(DESCRIBE_SCRIPT)
    code, out, errors = run_items(server.address, "\\d users\n\\d\n\\dt\n\\l\n")
    assert (code, errors) == (0, "")
    assert server.script.statements == [
        "SHOW COLUMNS FROM users", "SHOW TABLES", "SHOW TABLES", "SHOW DATABASES"]
    lines = out.splitlines()
    assert lines[:4] == [
        " column_name | data_type | is_nullable | column_default | primary_key | is_hidden",
        "-------------+-----------+-------------+----------------+-------------+-----------",
        " id          | INT       | false       |                | true        | false",
        " name        | TEXT      | true        | 'x'            | false       | false",
    ]
    assert " defaultdb" in lines


def test_d_of_an_unknown_table_names_it_and_says_how_to_list_tables(sql_server):
    server = sql_server(DESCRIBE_SCRIPT)
    code, _, errors = run_items(server.address, "\\d nope\n")
    assert code == 1
    assert errors.splitlines()[0] == (
        'ERROR: relation "nope" does not exist; SHOW TABLES (\\dt in the shell) lists the tables')


@pytest.mark.parametrize("argument", ["users; DROP TABLE t", "a b", '"unterminated'])
def test_d_refuses_what_is_not_one_table_name_without_sending_it(sql_server, argument):
    server = sql_server(DESCRIBE_SCRIPT)
    code, _, errors = run_items(server.address, f"\\d {argument}\n")
    assert code == 1 and server.script.statements == []
    assert errors == f"ERROR: \\d takes one table name, got {argument}; \\dt lists the tables\n"


def test_x_switches_expanded_output_on_and_off(sql_server):
    server = sql_server(DESCRIBE_SCRIPT)
    code, out, errors = run_items(
        server.address, "\\x\nSELECT a, b FROM t;\n\\x off\nSELECT a, b FROM t;\n\\x on\n")
    assert (code, errors) == (0, "")
    lines = out.splitlines()
    assert lines[:8] == ["Expanded display is on.", "-[ RECORD 1 ]", "a | 1", "b | one",
                         "-[ RECORD 2 ]", "a | 22", "b | NULL", ""]
    assert lines[8:9] == ["Expanded display is off."] and lines[9:14] == T_TABLE
    assert lines[-1] == "Expanded display is on."


@pytest.mark.parametrize("typed", ["\\foo", "\\d users extra", "\\x maybe", "\\dt\tx"])
def test_an_unknown_command_is_printed_as_typed(sql_server, typed):
    server = sql_server(DESCRIBE_SCRIPT)
    code, _, errors = run_items(server.address, typed + "\n")
    shown = typed.replace("\t", "\\t")
    if typed.startswith("\\d users"):
        assert errors.startswith("ERROR: \\d takes one table name, got users extra;")
    else:
        assert (code, errors) == (1, f"ERROR: unknown command {shown}; type \\? for help\n")


def test_help_lists_the_meta_commands():
    for command in ("\\d TABLE", "\\dt", "\\l", "\\x [on|off]", "\\timing [on|off]"):
        assert command in cli_sql.HELP_TEXT


# --- -e and stdin modes ------------------------------------------------------------------------


def run_main(argv, capsys, stdin_text: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin_text is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
    code = cli_sql.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_execute_runs_each_statement_and_prints_tables_and_status(sql_server, capsys):
    server = sql_server(SCRIPT)
    code, out, errors = run_main(
        [
            "--url",
            server.address,
            "-e",
            "SELECT a, b FROM t",
            "-e",
            "INSERT INTO t VALUES (3, 'three'); CREATE TABLE u (x INT PRIMARY KEY);",
        ],
        capsys,
    )
    assert (code, errors) == (0, "")
    assert out == "\n".join(T_TABLE) + "\n\nINSERT 1\nCREATE TABLE\n"
    assert server.script.statements == [
        "SELECT a, b FROM t",
        "INSERT INTO t VALUES (3, 'three')",
        "CREATE TABLE u (x INT PRIMARY KEY)",
    ]


def test_execute_stops_at_the_first_error_with_exit_1_and_the_caret_on_stderr(
    sql_server, capsys
):
    server = sql_server(SCRIPT)
    code, out, errors = run_main(
        ["--url", server.address, "-e", "SELECT a FORM t", "-e", "SELECT a, b FROM t"], capsys
    )
    assert code == 1
    assert out == ""
    assert errors == (
        'ERROR: syntax error at or near "FORM"\n'
        "LINE 1: SELECT a FORM t\n"
        "                 ^\n"
    )
    assert server.script.statements == ["SELECT a FORM t"]


def test_piped_stdin_runs_every_statement_including_meta_commands(
    sql_server, capsys, monkeypatch
):
    server = sql_server(SCRIPT)
    script = "-- load\nINSERT INTO t VALUES (3, 'three');\n\\timing on\nSELECT a,\n b FROM t"
    code, out, errors = run_main(["--url", server.address], capsys, script, monkeypatch)
    assert (code, errors) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["INSERT 1", "Timing is on."]
    assert lines[2:7] == T_TABLE
    assert lines[8].startswith("Time: ") and lines[8].endswith(" ms")


def test_piped_stdin_stops_at_the_first_error_with_exit_1(sql_server, capsys, monkeypatch):
    server = sql_server(SCRIPT)
    script = "SELECT a, b FROM t;\nSELECT nope FROM t;\nINSERT INTO t VALUES (3, 'three');\n"
    code, out, errors = run_main(["--url", server.address], capsys, script, monkeypatch)
    assert code == 1
    assert out.splitlines()[:5] == T_TABLE
    assert errors.splitlines() == [
        'ERROR: column "nope" does not exist',
        "LINE 1: SELECT nope FROM t",
        "               ^",
    ]
    assert "INSERT INTO t VALUES (3, 'three')" not in server.script.statements


def test_operating_errors_print_one_line_and_exit_1(sql_server, capsys):
    server = sql_server({"SELECT 1": err("internal", "disk on fire")})
    code, out, errors = run_main(["--url", server.address, "-e", "SELECT 1"], capsys)
    assert code == 1 and out == ""
    assert errors.startswith("ERROR: internal: disk on fire") and errors.count("\n") == 1


@pytest.mark.parametrize("url", ["nowhere", "127.0.0.1:0", "127.0.0.1:1,:5", ""])
def test_a_bad_url_is_a_one_line_usage_error_with_exit_2(capsys, url):
    with pytest.raises(SystemExit) as caught:
        cli_sql.main(["--url", url, "-e", "SELECT 1"])
    assert caught.value.code == 2
    errors = capsys.readouterr().err
    assert errors.count("\n") == 1
    assert "--url" in errors and "HOST:PORT" in errors


def test_a_dead_url_is_one_line_at_once_with_exit_2(capsys):
    import socket

    probe = socket.create_server(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    code, out, errors = run_main(["--url", address, "-e", "SELECT 1"], capsys)
    assert time.monotonic() - started < 1.0   # not 15 s of retries (--timeout's default)
    assert code == 2 and out == ""
    assert errors.count("\n") == 1 and f"connection refused by {address}" in errors


def test_add_sql_parser_registers_the_sql_command_on_a_cli():
    parser = argparse.ArgumentParser(prog="raftstore")
    sub = parser.add_subparsers(dest="command")
    cli_sql.add_sql_parser(sub)
    args = parser.parse_args(["sql", "--url", "a:1,b:2", "-e", "SELECT 1", "-e", "SELECT 2"])
    assert args.func is cli_sql.run_sql
    assert args.url == ["a:1", "b:2"]
    assert args.execute == ["SELECT 1", "SELECT 2"]
    assert args.history == cli_sql.HISTORY_PATH_DEFAULT


def test_run_statements_is_reusable_with_any_streams(sql_server):
    server = sql_server(SCRIPT)
    out, errors = io.StringIO(), io.StringIO()
    with sqlclient.connect(server.address) as connection:
        code = cli_sql.run_statements(
            connection, ["SELECT a, b FROM t;", "SELECT nope FROM t"], out, err=errors
        )
    assert code == 1
    assert out.getvalue().splitlines()[:5] == T_TABLE
    assert errors.getvalue().startswith('ERROR: column "nope"')


def test_a_real_process_reads_piped_stdin_and_exits_non_zero_on_error(sql_server):
    server = sql_server(SCRIPT)
    command = [sys.executable, "-m", "raftstore.cli.sql_shell", "--url", server.address]
    done = subprocess.run(
        command, input="SELECT a, b FROM t;\n", capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:5] == T_TABLE
    done = subprocess.run(
        command, input="SELECT a FORM t;\n", capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert done.stderr.startswith('ERROR: syntax error at or near "FORM"\nLINE 1:')


# --- the interactive shell on a pipe (no terminal) ---------------------------------------------


def run_repl_with_keys(server_address: str, keys: str, tmp_path) -> tuple[int, str, str]:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    out, errors = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe, sqlclient.connect(server_address) as connection:
        pipe.send_text(keys)
        code = cli_sql.run_repl(
            connection,
            history_path=str(tmp_path / "history"),
            input=pipe,
            output=DummyOutput(),
            out=out,
            err=errors,
        )
    return code, out.getvalue(), errors.getvalue()


def test_the_shell_runs_a_multi_line_statement_survives_an_error_and_quits(
    sql_server, tmp_path
):
    server = sql_server(SCRIPT)
    keys = (
        "SELECT a,\r b FROM t;\rSELECT a FORM t;\r"
        "\\timing\rINSERT INTO t VALUES (3, 'three');\r\\q\r"
    )
    code, out, errors = run_repl_with_keys(server.address, keys, tmp_path)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("raftstore sql: connected to ")
    assert lines[1:6] == T_TABLE
    assert "Timing is on." in lines and "INSERT 1" in lines
    assert lines[-1].startswith("Time: ")
    assert errors.splitlines() == [
        'ERROR: syntax error at or near "FORM"',
        "LINE 1: SELECT a FORM t",
        "                 ^",
    ]
    history = (tmp_path / "history").read_text()
    assert "+SELECT a,\n+ b FROM t;\n" in history


def test_the_shell_leaves_on_quit_exit_and_end_of_input(sql_server, tmp_path):
    server = sql_server(SCRIPT)
    for keys in ("quit\r", "exit;\r", "\x04", "SELECT a, b FROM t;\rexit\rSELECT 1;\r"):
        code, out, _ = run_repl_with_keys(server.address, keys, tmp_path)
        assert code == 0
    assert "SELECT 1" not in server.script.statements


def test_a_ctrl_c_read_along_with_the_enter_cancels_the_statement_before_it_is_sent(
    sql_server, tmp_path
):
    # Keys typed right after Enter reach prompt_toolkit in the same read, and it keeps them for
    # the next prompt: the Ctrl-C among them is for the statement just submitted, not for the
    # next prompt. Keys typed after the Ctrl-C stay for the next prompt.
    server = sql_server(SCRIPT)
    keys = (
        "SELECT a, b FROM t;\r\x03"
        "INSERT INTO t VALUES (3, 'three');\r\x03SELECT a, b FROM t;\r\\q\r"
    )
    code, out, errors = run_repl_with_keys(server.address, keys, tmp_path)
    assert code == 0
    assert errors.splitlines() == [
        "ERROR: canceled",
        "ERROR: canceled; the statement was not sent",
    ]
    assert [s for s in server.script.statements if not s.startswith("SHOW")] == ["SELECT a, b FROM t"]
    assert out.splitlines()[1:6] == T_TABLE


def test_the_shell_refreshes_table_and_column_names_after_ddl(sql_server, tmp_path):
    server = sql_server(DESCRIBE_SCRIPT)
    run_repl_with_keys(server.address, "CREATE TABLE u (x INT PRIMARY KEY);\r\\q\r", tmp_path)
    names = ["SHOW TABLES", 'SHOW COLUMNS FROM "t"', 'SHOW COLUMNS FROM "users"']
    assert server.script.statements == names + ["CREATE TABLE u (x INT PRIMARY KEY)"] + names


def test_fetching_column_names_stops_at_an_operating_error(sql_server):
    server = sql_server({**DESCRIBE_SCRIPT, 'SHOW COLUMNS FROM "t"': sql_err("serialization_failure", "busy")})
    with sqlclient.connect(server.address) as connection:
        assert cli_sql.fetch_column_names(connection, ["t", "users"]) == {}
        assert cli_sql.fetch_column_names(connection, ["nope", "users"]) == {"users": ["id", "name"]}
    assert server.script.statements == ['SHOW COLUMNS FROM "t"', 'SHOW COLUMNS FROM "nope"',
                                        'SHOW COLUMNS FROM "users"']


def test_the_shells_completer_offers_the_column_names_it_fetched(sql_server):
    from prompt_toolkit.document import Document

    server = sql_server(DESCRIBE_SCRIPT)
    with sqlclient.connect(server.address) as connection:
        shell = cli_sql._Shell(connection, io.StringIO(), io.StringIO(), interactive=True)
        shell.refresh_tables()
    assert shell.columns == {"t": ["a", "b"], "users": ["id", "name"]}
    completer = cli_sql._make_completer(shell)
    offered = completer.get_completions(Document("SELECT nam"), None)
    assert [(c.text, c.start_position) for c in offered] == [("name", -3)]


def test_the_shell_exits_1_when_no_node_answers(sql_server, tmp_path):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    server = sql_server({})
    address = server.address
    errors = io.StringIO()
    with create_pipe_input() as pipe, sqlclient.connect(address, timeout_s=0.3) as connection:
        server.stop()   # the node goes away after the shell connected
        code = cli_sql.run_repl(
            connection, history_path=os.devnull, input=pipe, output=DummyOutput(), err=errors
        )
    assert code == 1
    assert errors.getvalue().startswith("ERROR: ") and address in errors.getvalue()
