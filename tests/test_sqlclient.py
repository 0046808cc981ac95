"""The DB-API client (raftstore.sqlclient) and the ``sql`` op of the wire schema.

The server is `test_kv_client.FakeServer`: a thread on 127.0.0.1 that validates every request
with `wire.validate_request` (so the client is pinned to the schema the real node checks) and
answers ``sql`` requests from a script of canned results and errors.
"""

from __future__ import annotations

import datetime
import re
import socket
import time
from typing import Any

import pytest

import raftstore
from hlc import Timestamp
from raftstore import constants, errors, kv, sqlclient, wire
from test_kv_client import CLOSE, SILENT, FakeServer, err, ok, raised_with_every_attempt_answered

TS = [1_700_000_000_000_000_002, 3]


# --- canned answers ----------------------------------------------------------------------------


def result(
    columns: list[str] = (),
    types: list[str] = (),
    rows: list[list[Any]] = (),
    *,
    rowcount: int | None = None,
    status: str = "",
    ts: list[int] = TS,
) -> dict:
    rows = [list(row) for row in rows]
    return ok(
        {
            "columns": list(columns),
            "types": list(types),
            "rows": rows,
            "rowcount": len(rows) if rowcount is None else rowcount,
            "status": status or (f"SELECT {len(rows)}" if columns else ""),
            "ts": ts,
        }
    )


def sql_err(sql_code: str, message: str, position: int | None = None, ambiguous: bool = False):
    return {
        "ok": False,
        "error": {
            "code": "sql_error",
            "message": message,
            "ambiguous": ambiguous,
            "sql_code": sql_code,
            "position": position,
        },
    }


def normalize(sql: str) -> str:
    """The statement without -- comments, its whitespace collapsed."""
    return " ".join(re.sub(r"--[^\n]*", "", sql).split())


class SqlScript:
    """A FakeServer handler: answers each statement (whitespace-normalised) from `answers`;
    a callable answer is called with the args; a list answer is consumed one per request."""

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers
        self.statements: list[str] = []

    def __call__(self, op: str, args: dict) -> Any:
        assert op == "sql", op
        self.statements.append(args["sql"])
        answer = self.answers.get(normalize(args["sql"]))
        if answer is None:
            return sql_err("syntax", f"no canned answer for {args['sql']!r}", 0)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return answer(args) if callable(answer) else answer


@pytest.fixture
def sql_server(request):
    """sql_server({statement: answer}) -> a running FakeServer (its handler is `.script`)."""

    def start(answers: dict[str, Any]) -> FakeServer:
        script = SqlScript(answers)
        server = FakeServer(script)
        server.script = script
        request.addfinalizer(server.stop)
        return server

    return start


@pytest.fixture
def connect(request):
    """connect(address, **kw) -> a Connection closed at teardown."""

    def make(address: str, **kwargs: Any) -> sqlclient.Connection:
        connection = sqlclient.connect(address, **kwargs)
        request.addfinalizer(connection.close)
        return connection

    return make


PEOPLE = result(
    ["id", "name", "born", "photo", "score", "ok"],
    ["INT", "TEXT", "TIMESTAMP", "BYTES", "FLOAT", "BOOL"],
    [
        [1, "ada", "1815-12-10 00:00:00", b"\x89PNG", 1.5, True],
        [2, None, "2024-02-29 23:59:59.000001", None, None, False],
        [3, "bo", None, b"", -0.0, None],
    ],
)


# --- the module and its connection -------------------------------------------------------------


def test_module_declares_the_db_api_globals():
    assert sqlclient.apilevel == "2.0"
    assert sqlclient.threadsafety == 1
    assert sqlclient.paramstyle == "numeric"
    assert raftstore.connect is sqlclient.connect


def test_exception_hierarchy_is_pep_249s_and_is_on_the_connection_too():
    s = sqlclient
    assert issubclass(s.Error, Exception) and issubclass(s.Warning, Exception)
    assert issubclass(s.InterfaceError, s.Error) and issubclass(s.DatabaseError, s.Error)
    for name in (
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    ):
        cls = getattr(s, name)
        assert issubclass(cls, s.DatabaseError)
        assert getattr(s.Connection, name) is cls
    assert s.Connection.Error is s.Error and s.Connection.Warning is s.Warning


def test_the_package_carries_pep_249s_module_names_as_the_same_objects():
    # PEP 249's module globals and exception classes, and some of its type objects.
    names = ("apilevel threadsafety paramstyle Warning Error InterfaceError DatabaseError "
             "DataError OperationalError IntegrityError InternalError ProgrammingError "
             "NotSupportedError Binary STRING NUMBER DATETIME").split()
    for name in names:
        assert getattr(raftstore, name) is getattr(sqlclient, name), name
        assert name in dir(raftstore)
    try:
        raise sqlclient.OperationalError("x")
    except raftstore.Error:
        pass


def test_connect_to_a_dead_address_fails_at_connect_at_once():
    probe = socket.create_server(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    with pytest.raises(raftstore.OperationalError) as caught:
        raftstore.connect(address)   # the default timeout is 15 s
    assert time.monotonic() - started < 1.0
    assert f"connection refused by {address}" in str(caught.value)


def test_a_malformed_address_is_an_interface_error_and_nothing_connects():
    with pytest.raises(sqlclient.InterfaceError, match="bad address 'nowhere'"):
        sqlclient.connect("nowhere")
    with pytest.raises(sqlclient.InterfaceError, match="port 70000"):
        sqlclient.connect(["127.0.0.1:1", "127.0.0.1:70000"])
    with pytest.raises(sqlclient.InterfaceError, match="a http:// URL is not an address"):
        sqlclient.connect("http://127.0.0.1:26257")


def test_commit_does_nothing_and_rollback_is_not_supported(sql_server, connect):
    server = sql_server({})
    connection = connect(server.address)
    connection.commit()
    with pytest.raises(sqlclient.NotSupportedError, match="autocommit"):
        connection.rollback()
    assert server.requests == []


def test_a_closed_connection_or_cursor_refuses_work(sql_server):
    server = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    with sqlclient.connect(server.address) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        with pytest.raises(sqlclient.InterfaceError, match="cursor is closed"):
            cursor.fetchall()
        other = connection.cursor()
    assert connection.closed
    with pytest.raises(sqlclient.InterfaceError, match="connection is closed"):
        other.execute("SELECT 1")
    with pytest.raises(sqlclient.InterfaceError, match="connection is closed"):
        connection.cursor()


# --- results -----------------------------------------------------------------------------------


def test_description_names_each_column_and_its_sql_type(sql_server, connect):
    server = sql_server({"SELECT * FROM people": PEOPLE})
    cursor = connect(server.address).cursor()
    cursor.execute("SELECT * FROM people")
    assert [tuple(column) for column in cursor.description] == [
        ("id", "INT", None, None, None, None, None),
        ("name", "TEXT", None, None, None, None, None),
        ("born", "TIMESTAMP", None, None, None, None, None),
        ("photo", "BYTES", None, None, None, None, None),
        ("score", "FLOAT", None, None, None, None, None),
        ("ok", "BOOL", None, None, None, None, None),
    ]
    assert cursor.description[0].name == "id"
    types = [column.type_code for column in cursor.description]
    assert types[0] == sqlclient.NUMBER and types[1] == sqlclient.STRING
    assert types[2] == sqlclient.DATETIME and types[3] == sqlclient.BINARY
    assert cursor.rowcount == 3
    assert cursor.statusmessage == "SELECT 3"
    assert cursor.timestamp == Timestamp(*TS)


def test_timestamp_columns_become_datetimes_and_other_values_stay_as_sent(sql_server, connect):
    server = sql_server({"SELECT * FROM people": PEOPLE})
    rows = connect(server.address).cursor().execute("SELECT * FROM people").fetchall()
    assert rows == [
        (1, "ada", datetime.datetime(1815, 12, 10), b"\x89PNG", 1.5, True),
        (2, None, datetime.datetime(2024, 2, 29, 23, 59, 59, 1), None, None, False),
        (3, "bo", None, b"", -0.0, None),
    ]
    assert all(type(row) is tuple for row in rows)


def test_a_statement_without_columns_has_no_description_and_nothing_to_fetch(
    sql_server, connect
):
    server = sql_server(
        {"INSERT INTO t VALUES (1), (2), (3)": result(rowcount=3, status="INSERT 3")}
    )
    cursor = connect(server.address).cursor()
    cursor.execute("INSERT INTO t VALUES (1), (2), (3)")
    assert cursor.description is None
    assert cursor.rowcount == 3
    assert cursor.statusmessage == "INSERT 3"
    assert cursor.timestamp == Timestamp(*TS)
    with pytest.raises(sqlclient.ProgrammingError, match="no results to fetch"):
        cursor.fetchone()


def test_fetchone_fetchmany_fetchall_and_iteration_walk_the_rows_once(sql_server, connect):
    rows = [[i] for i in range(7)]
    server = sql_server({"SELECT i FROM t": result(["i"], ["INT"], rows)})
    cursor = connect(server.address).cursor()
    assert cursor.rowcount == -1 and cursor.description is None and cursor.arraysize == 1
    cursor.execute("SELECT i FROM t")
    assert cursor.fetchone() == (0,)
    assert cursor.fetchmany() == [(1,)]  # arraysize rows
    cursor.arraysize = 2
    assert cursor.fetchmany() == [(2,), (3,)]
    assert cursor.fetchmany(1) == [(4,)]
    assert next(iter(cursor)) == (5,)
    assert cursor.fetchall() == [(6,)]
    assert cursor.fetchone() is None
    assert cursor.fetchmany(5) == [] and cursor.fetchall() == []
    assert list(cursor.execute("SELECT i FROM t")) == [(i,) for i in range(7)]


def test_executemany_runs_once_per_params_and_sums_rowcount(sql_server, connect):
    server = sql_server({"INSERT INTO t VALUES ($1)": result(rowcount=1, status="INSERT 1")})
    cursor = connect(server.address).cursor()
    cursor.executemany("INSERT INTO t VALUES ($1)", [[1], [2], [3]])
    assert cursor.rowcount == 3
    assert [args["params"] for _, args in server.requests] == [[1], [2], [3]]


@pytest.mark.parametrize(
    "bad",
    [
        {"columns": ["a"], "types": [], "rows": [], "rowcount": 0, "status": "", "ts": TS},
        {"columns": ["a"], "types": ["INT"], "rows": [[1, 2]], "rowcount": 1, "status": "",
         "ts": TS},
        {"columns": ["a"], "types": ["INT"], "rows": [[{}]], "rowcount": 1, "status": "", "ts": TS},
        {"columns": ["a"], "types": ["TIMESTAMP"], "rows": [["yesterday"]], "rowcount": 1,
         "status": "", "ts": TS},
        {"columns": [], "types": [], "rows": [], "rowcount": 0, "status": "", "ts": "now"},
        {"columns": [], "types": [], "rows": [], "rowcount": True, "status": "", "ts": TS},
        [],
    ],
)
def test_a_malformed_result_of_a_read_is_an_interface_error(sql_server, connect, bad):
    server = sql_server({"SELECT a FROM t": ok(bad)})
    with pytest.raises(sqlclient.InterfaceError, match="malformed") as caught:
        connect(server.address, timeout_s=2).cursor().execute("SELECT a FROM t")
    assert caught.value.ambiguous is False


def test_a_malformed_result_of_a_write_leaves_it_ambiguous(sql_server, connect):
    server = sql_server({"DELETE FROM t": ok({"rowcount": "all"})})
    with pytest.raises(sqlclient.OperationalError, match="malformed.*may have committed") as caught:
        connect(server.address).cursor().execute("DELETE FROM t")
    assert caught.value.ambiguous is True


# --- parameters ----------------------------------------------------------------------------------


def test_text_and_params_reach_the_server_exactly_as_given_never_spliced(sql_server, connect):
    text = "SELECT * FROM t WHERE a = $1 AND b = %s AND c = '%s' -- 100%"
    server = sql_server({normalize(text): result(["a"], ["INT"], [])})
    params = [None, True, -(2**63), 2**64 - 1, 2.5, "x'); DROP TABLE t; --", b"\x00\xff"]
    connect(server.address).cursor().execute(text, params)
    [(op, args)] = server.requests
    assert op == "sql"
    assert args == {"sql": text, "params": params}
    assert type(args["params"][1]) is bool and type(args["params"][2]) is int


def test_no_params_sends_no_params_field_and_empty_params_an_empty_list(sql_server, connect):
    server = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    cursor = connect(server.address).cursor()
    cursor.execute("SELECT 1")
    cursor.execute("SELECT 1", ())
    assert [args for _, args in server.requests] == [
        {"sql": "SELECT 1"},
        {"sql": "SELECT 1", "params": []},
    ]


def test_datetimes_dates_and_byte_buffers_are_sent_in_wire_form(sql_server, connect):
    server = sql_server({"INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)": result(rowcount=1)})
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    params = (
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 60),
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=plus_two),
        datetime.date(1999, 12, 31),
        bytearray(b"ab"),
        memoryview(b"cd"),
    )
    connect(server.address).cursor().execute(
        "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)", params
    )
    [(_, args)] = server.requests
    assert args["params"] == [
        ["ts", "2024-01-02 03:04:05"],
        ["ts", "2024-01-02 03:04:05.000060"],
        ["ts", "2024-01-02 01:04:05"],  # aware: converted to UTC
        ["ts", "1999-12-31 00:00:00"],
        b"ab",
        b"cd",
    ]


@pytest.mark.parametrize(
    "params, cls, message",
    [
        ([object()], sqlclient.ProgrammingError, r"parameter \$1 has type object"),
        ([1, [2]], sqlclient.ProgrammingError, r"parameter \$2 has type list"),
        ([2**64], sqlclient.DataError, "does not fit in 64 bits"),
        ([-(2**63) - 1], sqlclient.DataError, "does not fit in 64 bits"),
        (["\ud800"], sqlclient.DataError, "not valid text"),
        ({"a": 1}, sqlclient.ProgrammingError, "named parameters are not supported"),
        ("ab", sqlclient.ProgrammingError, "must be a list or tuple"),
        (5, sqlclient.ProgrammingError, "must be a list or tuple"),
    ],
)
def test_parameters_that_cannot_be_sent_are_refused_before_anything_is_sent(
    sql_server, connect, params, cls, message
):
    server = sql_server({})
    with pytest.raises(cls, match=message):
        connect(server.address).cursor().execute("SELECT $1", params)
    assert server.requests == []


def test_an_oversized_or_non_text_statement_is_refused_before_anything_is_sent(
    sql_server, connect
):
    server = sql_server({})
    cursor = connect(server.address).cursor()
    with pytest.raises(sqlclient.ProgrammingError, match="more than the limit"):
        cursor.execute("SELECT '" + "x" * wire.sql_text_bytes_max + "'")
    with pytest.raises(sqlclient.ProgrammingError, match="must be a str"):
        cursor.execute(b"SELECT 1")
    assert server.requests == []


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql_code, cls",
    [
        ("syntax", sqlclient.ProgrammingError),
        ("unsupported", sqlclient.ProgrammingError),
        ("undefined_table", sqlclient.ProgrammingError),
        ("undefined_column", sqlclient.ProgrammingError),
        ("duplicate_table", sqlclient.ProgrammingError),
        ("invalid_parameter", sqlclient.ProgrammingError),
        ("unique_violation", sqlclient.IntegrityError),
        ("not_null_violation", sqlclient.IntegrityError),
        ("datatype_mismatch", sqlclient.DataError),
        ("division_by_zero", sqlclient.DataError),
        ("feature_not_supported", sqlclient.NotSupportedError),
        ("program_limit_exceeded", sqlclient.OperationalError),
        ("from_a_newer_server", sqlclient.DatabaseError),
    ],
)
def test_each_sql_code_raises_its_pep_249_class_with_code_and_position(
    sql_server, connect, sql_code, cls
):
    assert sql_code in errors.SQL_CODES or sql_code == "from_a_newer_server"
    server = sql_server({"INSERT INTO t VALUES (1)": sql_err(sql_code, "it went wrong here", 7)})
    with pytest.raises(sqlclient.Error) as caught:
        connect(server.address).cursor().execute("INSERT INTO t VALUES (1)")
    assert type(caught.value) is cls
    assert str(caught.value) == "it went wrong here"
    assert caught.value.sql_code == sql_code
    assert caught.value.position == 7
    assert caught.value.code == "sql_error"
    assert caught.value.ambiguous is False
    assert len(server.requests) == 1  # a definite answer is never retried


@pytest.mark.parametrize(
    "code, cls",
    [
        ("bad_request", sqlclient.InterfaceError),
        ("too_large", sqlclient.DataError),
        ("internal", sqlclient.InternalError),
        ("quota", sqlclient.DatabaseError),
    ],
)
def test_other_server_errors_map_to_pep_249_classes(sql_server, connect, code, cls):
    server = sql_server({"SELECT 1": err(code, "scripted")})
    with pytest.raises(sqlclient.Error) as caught:
        connect(server.address).cursor().execute("SELECT 1")
    assert type(caught.value) is cls
    assert caught.value.code == code and caught.value.sql_code is None


def test_no_node_answering_is_an_operational_error_naming_the_addresses(connect):
    import socket

    probe = socket.create_server(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    with pytest.raises(sqlclient.OperationalError, match=address) as caught:
        connect(address, timeout_s=0.3).cursor().execute("SELECT 1")
    assert time.monotonic() - started < 3
    assert caught.value.ambiguous is False


def test_unavailable_is_retried_for_reads_and_writes_since_nothing_applied(sql_server, connect):
    unavailable = err("unavailable", "no leader")
    server = sql_server(
        {
            "SELECT 1": [unavailable, result(["?column?"], ["INT"], [[1]])],
            "INSERT INTO t VALUES (1)": [unavailable, result(rowcount=1, status="INSERT 1")],
        }
    )
    cursor = connect(server.address).cursor()
    assert cursor.execute("SELECT 1").fetchall() == [(1,)]
    assert cursor.execute("INSERT INTO t VALUES (1)").statusmessage == "INSERT 1"
    assert len(server.requests) == 4


def test_unavailable_until_the_deadline_is_operational_and_not_ambiguous(sql_server, connect):
    server = sql_server({"INSERT INTO t VALUES (1)": err("unavailable", "no leader")})
    cursor = connect(server.address, timeout_s=0.3).cursor()
    error = raised_with_every_attempt_answered(
        lambda: cursor.execute("INSERT INTO t VALUES (1)"), sqlclient.OperationalError
    )
    assert "no leader" in str(error)
    assert error.ambiguous is False
    assert error.code == "unavailable"


def test_the_session_an_answer_returns_goes_with_the_next_statement_also_to_another_node(
    sql_server, connect
):
    session = {"causality": [5, 1], "settings": {"default_transaction_use_follower_reads": "on"}}
    answered = result(status="SET")
    answered["result"]["session"] = session
    first = sql_server({"SET default_transaction_use_follower_reads = on": answered})
    second = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    cursor = connect([first.address, second.address]).cursor()
    cursor.execute("SET default_transaction_use_follower_reads = on")
    assert "session" not in first.requests[0][1]
    first.stop()                                             # the first node is gone: the next is asked
    cursor.execute("SELECT 1")
    assert second.requests[-1][1]["session"] == session


def test_a_malformed_session_in_an_answer_is_an_interface_error(sql_server, connect):
    answered = result(["?column?"], ["INT"], [[1]])
    answered["result"]["session"] = {"causality": "soon"}
    server = sql_server({"SELECT 1": answered})
    with pytest.raises(sqlclient.InterfaceError, match="session causality must be"):
        connect(server.address).cursor().execute("SELECT 1")


def test_a_read_whose_connection_breaks_after_it_was_sent_is_not_run_again(sql_server, connect):
    """It may still be running on that node: it fails, plainly (a read applied nothing), and no
    other node is asked, though one is configured and would answer."""
    first = sql_server({"SELECT 1": [CLOSE, result(["?column?"], ["INT"], [[1]])]})
    second = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    with pytest.raises(sqlclient.OperationalError, match="not sent to another node") as caught:
        connect([first.address, second.address]).cursor().execute("SELECT 1")
    assert caught.value.ambiguous is False
    assert len(first.requests) == 1 and second.requests == []


def test_a_read_that_times_out_on_a_node_is_not_sent_to_another(sql_server, connect):
    """The DB-API's own timeout, not the server's: the statement may be running still."""
    first = sql_server({"SELECT 1": SILENT})
    second = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    conn = connect([first.address, second.address], timeout_s=0.5)
    with pytest.raises(sqlclient.OperationalError, match="timed out") as caught:
        conn.cursor().execute("SELECT 1")
    assert caught.value.ambiguous is False and "not sent to another node" in str(caught.value)
    assert len(first.requests) == 1 and second.requests == []


def test_a_read_that_could_not_reach_a_node_goes_to_the_next(sql_server, connect):
    """The first node went away between two statements: its connection is found closed before
    the next is sent, and nothing listens there any more, so the statement never reached it and
    the second node runs it."""
    first = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    second = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[2]])})
    cursor = connect([first.address, second.address]).cursor()
    assert cursor.execute("SELECT 1").fetchall() == [(1,)]
    first.stop()
    assert cursor.execute("SELECT 1").fetchall() == [(2,)]
    assert len(first.requests) == 1 and len(second.requests) == 1


def test_a_statement_canceled_by_its_timeout_is_57014_and_never_sent_to_another_node(sql_server, connect):
    canceled = sql_err("query_canceled", "canceling statement due to statement timeout (statement_timeout = 1s)")
    first = sql_server({"SELECT count(*) FROM t": canceled})
    second = sql_server({"SELECT count(*) FROM t": result(["count"], ["INT"], [[1]])})
    with pytest.raises(sqlclient.OperationalError) as caught:
        connect([first.address, second.address]).cursor().execute("SELECT count(*) FROM t")
    err = caught.value
    assert (err.sql_code, err.sqlstate, err.ambiguous) == ("query_canceled", "57014", False)
    assert str(err).startswith("canceling statement due to statement timeout")
    assert len(first.requests) == 1 and second.requests == []


def test_broken_a_client_that_resends_reads_is_caught(sql_server, connect, monkeypatch):
    """The policy before statement timeouts: a read was resent after any failure. The read
    that timed out on the first node then runs a second time, on the second."""
    real = kv.Client.request

    def resending_reads(self, op, args, check, *, write, resend=True, **kw):
        return real(self, op, args, check, write=write, resend=not write, **kw)
    monkeypatch.setattr(kv.Client, "request", resending_reads)
    first = sql_server({"SELECT 1": SILENT})
    second = sql_server({"SELECT 1": result(["?column?"], ["INT"], [[1]])})
    conn = connect([first.address, second.address], timeout_s=1.0)
    conn._client.attempt_timeout_s_max = 0.3     # room for the second attempt within the call
    assert conn.cursor().execute("SELECT 1").fetchall() == [(1,)]
    assert len(second.requests) == 1             # run again elsewhere: the test above fails


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 2",
        "EXPLAIN ANALYZE DELETE FROM t",
        "CREATE TABLE u (a INT PRIMARY KEY)",
    ],
)
def test_a_write_is_never_sent_twice_once_it_may_have_reached_a_server(
    sql_server, connect, statement
):
    server = sql_server({statement: [CLOSE, result(rowcount=1, status="INSERT 1")]})
    with pytest.raises(sqlclient.OperationalError, match="may or may not have committed") as caught:
        connect(server.address).cursor().execute(statement)
    assert caught.value.ambiguous is True
    assert "check with a SELECT" in str(caught.value)
    assert len(server.requests) == 1


def test_an_ambiguous_answer_to_a_write_raises_at_once_and_keeps_the_sql_code(
    sql_server, connect
):
    server = sql_server(
        {
            "INSERT INTO t VALUES (1)": err("ambiguous", "leader changed", ambiguous=True),
            "UPDATE t SET a = 1": sql_err("unique_violation", "duplicate key", 3, ambiguous=True),
        }
    )
    cursor = connect(server.address).cursor()
    with pytest.raises(sqlclient.OperationalError, match="leader changed") as caught:
        cursor.execute("INSERT INTO t VALUES (1)")
    assert caught.value.ambiguous is True
    with pytest.raises(sqlclient.OperationalError, match="duplicate key") as caught:
        cursor.execute("UPDATE t SET a = 1")
    assert caught.value.ambiguous is True
    assert (caught.value.sql_code, caught.value.position) == ("unique_violation", 3)
    assert len(server.requests) == 2


def test_a_connection_closed_while_idle_does_not_make_the_next_write_ambiguous(
    sql_server, connect
):
    server = sql_server({"INSERT INTO t VALUES (1)": result(rowcount=1, status="INSERT 1")})
    cursor = connect(server.address).cursor()
    cursor.execute("INSERT INTO t VALUES (1)")
    server.drop_connections()  # as a node restart or an idle timeout would (returns once seen)
    assert cursor.execute("INSERT INTO t VALUES (1)").statusmessage == "INSERT 1"
    assert server.connections == 2 and len(server.requests) == 2


@pytest.mark.parametrize(
    "sql, read",
    [
        ("SELECT 1", True),
        ("  select * from t", True),
        ("-- leading comment\n/* and /* nested */ one */ SELECT 1", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("SHOW TABLES", True),
        ("EXPLAIN SELECT * FROM t", True),
        ("explain analyze INSERT INTO t VALUES (1)", False),
        ("INSERT INTO t SELECT * FROM u", False),
        ("UPSERT INTO t VALUES (1)", False),
        ("WITH x AS (SELECT 1) SELECT * FROM x", False),  # unrecognised counts as a write
        ("", False),
        ("-- only a comment", False),
        ("SELECTED", False),
    ],
)
def test_only_select_show_and_explain_count_as_reads(sql, read):
    assert sqlclient.statement_is_read(sql) is read


# --- the wire schema of the sql op -------------------------------------------------------------


def round_trip(obj: Any) -> Any:
    return wire.FrameDecoder().feed(wire.encode_frame(obj))[0]


@pytest.mark.parametrize(
    "args",
    [
        {"sql": "SELECT 1"},
        {"sql": "", "params": []},
        {"sql": "SELECT $1", "params": [None, True, -1, 2**64 - 1, 1.5, "s", b"b"]},
        {"sql": "$1", "params": [["ts", "2024-02-29 12:00:00"], ["ts", "0001-01-01 00:00:00.5"]]},
        {"sql": "x" * wire.sql_text_bytes_max},
        {"sql": "x", "session": {"causality": [1, 2], "settings": {"a": "on"}}},
        {"sql": "x", "session": {"causality": None}},
        {"sql": "x", "session": {}},
    ],
)
def test_well_formed_sql_requests_pass_validation(args):
    request = {"id": 4, "op": "sql", "args": args}
    assert wire.validate_request(round_trip(request)) == (4, "sql", args)


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, "sql: args is missing 'sql'"),
        ({"params": []}, "sql: args is missing 'sql'"),
        ({"sql": b"SELECT 1"}, "sql: args.sql must be a str, got bytes"),
        ({"sql": "é" * (wire.sql_text_bytes_max // 2 + 1)}, "more than the limit of 1048576"),
        ({"sql": "x", "params": None}, "args.params must be an array, got nil"),
        ({"sql": "x", "params": {"a": 1}}, "args.params must be an array, got dict"),
        ({"sql": "x", "params": [1, {}]}, "args.params[1] must be nil, bool, int"),
        ({"sql": "x", "params": [[1, 2]]}, "args.params[0] must be nil"),
        ({"sql": "x", "params": [["ts", 5]]}, "timestamp whose text must be a str, got int"),
        ({"sql": "x", "params": [["ts", "2024-01-01T00:00:00"]]}, "malformed timestamp"),
        ({"sql": "x", "params": [["ts", "2023-02-29 00:00:00"]]}, "not a real date"),
        ({"sql": "x", "params": [["ts", "2023-01-01 00:00:00", 1]]}, "args.params[0] must be nil"),
        ({"sql": "x", "params": [0] * (wire.sql_params_count_max + 1)}, "more than the limit"),
        ({"sql": "x", "limit": 5}, "unknown field(s) 'limit'"),
        ({"sql": "x", "session": []}, "args.session must be a map of causality and settings"),
        ({"sql": "x", "session": {"user": "x"}}, "args.session must be a map of causality and settings"),
        ({"sql": "x", "session": {"causality": [1]}}, "causality must be [wall_ns, logical]"),
        ({"sql": "x", "session": {"causality": [-1, 0]}}, "causality must be [wall_ns, logical]"),
        ({"sql": "x", "session": {"settings": {"a": 1}}}, "settings must map names to values"),
        ({"sql": "x", "session": {"settings": {"a": "x" * 65}}}, "settings must map names to values"),
        ({"sql": "x", "session": {"settings": {str(i): "on" for i in range(17)}}}, "at most 16 variables"),
    ],
)
def test_malformed_sql_requests_are_bad_requests_naming_the_problem(args, message):
    with pytest.raises(wire.BadRequest) as caught:
        wire.validate_request(round_trip({"id": 9, "op": "sql", "args": args}))
    assert message in str(caught.value)
    assert caught.value.request_id == 9


def test_the_existing_ops_still_require_every_field():
    with pytest.raises(wire.BadRequest, match="get: args is missing 'key'"):
        wire.validate_request({"id": 1, "op": "get", "args": {}})
    assert "sql" not in wire.WRITE_OPS


@pytest.mark.parametrize(
    "text, value",
    [
        ("2024-02-29 23:59:59", datetime.datetime(2024, 2, 29, 23, 59, 59)),
        ("2024-02-29 23:59:59.5", datetime.datetime(2024, 2, 29, 23, 59, 59, 500000)),
        ("0001-01-01 00:00:00.000001", datetime.datetime(1, 1, 1, 0, 0, 0, 1)),
    ],
)
def test_timestamp_text_parses_and_formats_back(text, value):
    assert wire.parse_sql_timestamp(text) == value
    assert wire.parse_sql_timestamp(wire.format_sql_timestamp(value)) == value


def test_sql_errors_keep_their_code_and_position_across_the_wire():
    error = errors.SqlError("no such table: x", sql_code="undefined_table", position=14)
    wired = round_trip(error.to_wire())
    assert wired == {
        "code": "sql_error",
        "message": "no such table: x",
        "ambiguous": False,
        "sql_code": "undefined_table",
        "position": 14,
    }
    back = errors.error_from_wire(wired)
    assert type(back) is errors.SqlError
    assert (str(back), back.sql_code, back.position, back.ambiguous) == (
        "no such table: x",
        "undefined_table",
        14,
        False,
    )
    none = errors.error_from_wire({**wired, "position": None})
    assert none.position is None


@pytest.mark.parametrize(
    "extra",
    [{}, {"sql_code": 5, "position": None}, {"sql_code": "syntax", "position": -1},
     {"sql_code": "syntax", "position": True}, {"sql_code": "syntax", "position": "3"}],
)
def test_malformed_sql_errors_become_protocol_errors(extra):
    obj = {"code": "sql_error", "message": "m", "ambiguous": False, **extra}
    assert isinstance(errors.error_from_wire(obj), errors.ProtocolError)


def test_the_statement_limit_fits_in_a_frame():
    assert wire.sql_text_bytes_max < constants.client_frame_bytes_max


@pytest.mark.parametrize(
    "sql_code, sqlstate, ambiguous",
    [("serialization_failure", "40001", False), ("statement_completion_unknown", "40003", True)],
)
def test_a_conflict_or_an_unknown_completion_is_operational_with_its_sqlstate_and_not_sent_again(
    sql_server, connect, sql_code, sqlstate, ambiguous
):
    # A second address and a success waiting there: a client that sent the statement again
    # (after 40003 it could apply twice) would get it.
    statement = "UPDATE t SET n = n + 1"
    server = sql_server({statement: [sql_err(sql_code, "scripted outcome", ambiguous=ambiguous),
                                     result(rowcount=2, status="UPDATE 2")]})
    conn = connect(f"{server.address},{server.address}")
    with pytest.raises(sqlclient.OperationalError) as caught:
        conn.cursor().execute(statement)
    assert len(server.requests) == 1
    err = caught.value
    assert (err.sql_code, err.sqlstate, err.ambiguous) == (sql_code, sqlstate, ambiguous)
    assert str(err) == "scripted outcome"   # the server's account, as it is


def test_every_sql_code_has_its_sqlstate():
    for sql_code in errors.SQL_CODES:
        error = sqlclient.DatabaseError("x", sql_code=sql_code)
        assert re.fullmatch(r"[0-9A-Z]{5}", error.sqlstate), sql_code
    assert sqlclient.DatabaseError("x").sqlstate is None
