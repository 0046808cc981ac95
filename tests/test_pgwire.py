"""The PostgreSQL port (raftstore.server.pg_port) as real clients see it: psycopg 3, pg8000's
native API and psql connect unchanged; the protocol's codec; and its limits (message lengths,
floods of Parse, results past their cap, hostile bytes). Fast tests run the port on a loopback
socket in this process over the real SQL gateway on an in-memory node (test_sql_gateway's
MemNode); the slow ones run real node processes (raftstore.localcluster)."""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pg8000.native
import psycopg
import pytest

from raftstore import constants
from raftstore.localcluster import free_ports
from raftstore.node.metrics import NodeMetrics
from raftstore.raft.commands import Outcome
from raftstore.server import pg_port
from raftstore.server.client_port import ClientLimits, MemoryBudget
from raftstore.server.nodekv import NodeKV
from sql.gateway import Gateway
from cluster import wait_until
from test_overload import rss_bytes
from test_sql_gateway import MemNode

PSQL = shutil.which("psql")


# --- the codec -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [(1.5, "1.5"), (3.0, "3"), (-0.25, "-0.25"), (1e20, "1e+20"),
                                         (1e-05, "1e-05"), (0.1 + 0.2, "0.30000000000000004"),
                                         (math.inf, "Infinity"), (-math.inf, "-Infinity"), (math.nan, "NaN")])
def test_floats_print_as_postgresql_prints_them(value, text):
    assert pg_port.format_float(value) == text


@pytest.mark.parametrize("status, tag", [("INSERT 3", "INSERT 0 3"), ("UPSERT 2", "INSERT 0 2"), ("SELECT 7", "SELECT 7"),
                                         ("CREATE TABLE", "CREATE TABLE"), ("DELETE 0", "DELETE 0")])
def test_insert_tags_carry_postgresqls_oid_field(status, tag):
    assert pg_port.command_tag(status) == tag


@pytest.mark.parametrize("value, oid", [(-(2**63), 20), (2**63 - 1, 20), (-1.25, 701), (True, 16), (False, 16),
                                        (b"\x00\xffz", 17), ("h\u00e9llo", 25),
                                        (datetime.datetime(1999, 12, 31, 23, 59, 59, 999999), 1114),
                                        (datetime.datetime(2024, 2, 29, 12, 0, 0, 1), 1114)])
def test_a_value_comes_back_from_its_binary_and_text_forms(value, oid):
    for binary in (True, False):
        encoded = pg_port.encode_value(value, oid, binary)
        assert pg_port.decode_param(encoded, oid, binary) == value or (
            not binary and oid == 1114 and datetime.datetime.fromisoformat(encoded.decode()) == value)


def test_text_forms_are_postgresqls():
    assert pg_port.encode_value(b"\x00\xff", 17, False) == b"\\x00ff"
    assert pg_port.encode_value(True, 16, False) == b"t"
    assert pg_port.encode_value("2024-01-02 03:04:05.500000", 1114, False) == b"2024-01-02 03:04:05.5"
    assert pg_port.encode_value(datetime.datetime(2024, 1, 2), 1114, False) == b"2024-01-02 00:00:00"


def test_a_text_parameter_of_no_declared_type_stays_a_string_for_the_engine_to_type():
    assert pg_port.decode_param(b"42", 0, False) == "42"
    assert pg_port.decode_param(b"42", 23, False) == 42
    assert pg_port.decode_param(b"Infinity", 701, False) == math.inf
    with pytest.raises(pg_port.ProtocolViolation) as caught:
        pg_port.decode_param(b"\x00\x01", 20, True)
    assert caught.value.sqlstate == "22P03"


# --- a port in this process ------------------------------------------------------------------------

class StubNode:
    node_id = 1
    metrics = NodeMetrics()


class PgMemNode(MemNode):
    """test_sql_gateway's MemNode, with the blind one-row writes a node answers too: a delete
    and a set_fields say whether the row was there (a blind DELETE or UPDATE by primary key
    counts its row by it)."""

    async def propose_key(self, op, key, args, command_id):
        if op == "delete":
            found = self.kv.get(key) is not None
            self.kv.delete(key)
            return Outcome.COMMITTED, {"ts": [2, 0], "found": found}
        if op == "set_fields":
            found = self.kv.set_fields(key, args["width"], [tuple(f) for f in args["fields"]])
            return Outcome.COMMITTED, {"ts": [2, 0], "found": found}
        return await super().propose_key(op, key, args, command_id)


class Port:
    """A PgServer over the real SQL gateway on a MemNode, on its own loop thread."""

    def __init__(self, limits: ClientLimits, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self.sock = socket.create_server(("127.0.0.1", free_ports(1)[0]))
        self.port = self.sock.getsockname()[1]
        self.url = "postgresql://root@127.0.0.1:%d/defaultdb?sslmode=disable" % self.port
        self.loop = asyncio.new_event_loop()
        self.budget = MemoryBudget(budget_bytes)
        started = threading.Event()

        async def setup() -> None:
            loop = asyncio.get_running_loop()
            node = PgMemNode()
            self.server = pg_port.PgServer(StubNode(), Gateway(lambda: NodeKV(node, loop), loop), limits,
                                           self.budget, self.sock)
            await self.server.start()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(setup())
            started.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def status(self) -> dict:
        async def read() -> dict:
            return dict(self.server.limits_status(), memory_used=self.budget.used, memory_peak=self.budget.peak)
        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.drain(2.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def port():
    made = []

    def make(**limits) -> Port:
        budget = limits.pop("budget_bytes", 64 * 1024 * 1024)
        p = Port(ClientLimits(**limits), budget)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


ROWS = [(i, "r%d" % i, i / 4, i % 2 == 0, bytes([i, 255 - i]), datetime.datetime(2024, 1, 1, 0, 0, i, i * 1000))
        for i in range(1, 41)]


def _fill(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b TEXT, c FLOAT, d BOOL, e BYTES, f TIMESTAMP)")
    conn.cursor().executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s)", ROWS)


def test_psycopg_runs_prepared_statements_with_text_and_binary_results(port):
    p = port()
    with p.connect() as conn:
        _fill(conn)
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            for _ in range(3):   # the third run uses the server-side prepared statement
                cur.execute("SELECT * FROM t WHERE a <= %s ORDER BY a", (5,), prepare=True)
                assert cur.fetchall() == ROWS[:5]
            assert [d.type_code for d in cur.description] == [20, 25, 701, 16, 17, 1114]
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (40,)
        cur = conn.execute("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s)", (100, "x", 101, None))
        assert cur.rowcount == 2 and cur.statusmessage == "INSERT 0 2"
        assert conn.execute("SELECT b FROM t WHERE a = %s", (101,)).fetchone() == (None,)
        assert conn.execute("SELECT %s::FLOAT, %s", (float("inf"), "text")).fetchone() == (float("inf"), "text")
        assert conn.execute("SELECT %s + 1, %s", (41, "x")).fetchone() == (42, "x")   # typed by its parameters
        aware = datetime.datetime(2024, 6, 1, 14, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
        for binary in (False, True):   # a timestamptz parameter is an instant: stored as its UTC time
            conn.execute("INSERT INTO t (a, f) VALUES (%s, %s)", (200 + binary, aware), binary=binary)
            assert conn.execute("SELECT f FROM t WHERE a = %s", (200 + binary,)).fetchone() == (
                datetime.datetime(2024, 6, 1, 12, 0),)


def test_psycopg_errors_carry_sqlstate_message_and_position(port):
    with port().connect() as conn:
        _fill(conn)
        with pytest.raises(psycopg.errors.UndefinedColumn) as caught:
            conn.execute("SELECT nosuch FROM t")
        assert caught.value.diag.statement_position == "8"
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0", prepare=True)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO t (a) VALUES (%s)", (1,))
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            conn.execute("BEGIN")
        assert "autocommit" in caught.value.diag.message_hint
        assert conn.execute("SELECT 1").fetchone() == (1,)   # the connection goes on


def test_a_simple_query_runs_its_statements_in_order_and_stops_at_the_first_error(port):
    with port().connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero) as caught:
            conn.execute("CREATE TABLE s (k INT PRIMARY KEY); INSERT INTO s VALUES (1); SELECT 1/0; "
                         "INSERT INTO s VALUES (2)")
        assert caught.value.diag.statement_position == "70"   # counted in the whole text (its "1/0")
        assert conn.execute("SELECT k FROM s").fetchall() == [(1,)]
        cur = conn.cursor()
        cur.execute("-- only a comment")
        assert cur.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY


def cancel_a_long_statement(run, error: type, running, cancel, canceled) -> None:
    """With `run(sql)` (a client's way to run a statement and get its rows), run a statement of
    10^8 rows in a thread; once `running()`, `cancel()`: the statement fails with an `error`
    that is `canceled(...)`, and the connection goes on."""
    run("CREATE TABLE hundred (k INT PRIMARY KEY)")
    run("INSERT INTO hundred VALUES " + ", ".join("(%d)" % k for k in range(100)))
    errors = []

    def long_statement() -> None:
        try:
            run("SELECT count(*) FROM hundred a, hundred b, hundred c, hundred d")
        except error as exc:
            errors.append(exc)
    runner = threading.Thread(target=long_statement)
    runner.start()
    wait_until(running, 30, "the statement runs")
    cancel()
    runner.join(60)
    assert not runner.is_alive()
    assert len(errors) == 1 and canceled(errors[0]), errors
    assert [list(row) for row in run("SELECT count(*) FROM hundred")] == [[100]]


def _psycopg_run(conn: psycopg.Connection):
    def run(sql: str):
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None
    return run


def _psycopg_canceled(exc: Exception) -> bool:
    return isinstance(exc, psycopg.errors.QueryCanceled) and "user request" in str(exc)


def test_psycopg_cancels_a_long_statement_and_the_connection_goes_on(port):
    p = port()
    with p.connect() as conn:
        # cancel_safe: psycopg's cancel() holds the GIL while it waits for the server, which
        # here runs in this process (the cluster test uses cancel() against a node process).
        cancel_a_long_statement(_psycopg_run(conn), psycopg.Error, lambda: p.status()["running"] == 1,
                                conn.cancel_safe, _psycopg_canceled)
    assert p.status()["cancels"] == 1


def test_a_cancel_with_the_wrong_secret_cancels_nothing(port):
    p = port()
    with p.connect() as conn:
        pid = conn.info.backend_pid
        with socket.create_connection(("127.0.0.1", p.port)) as s:
            s.sendall(struct.pack(">iiii", 16, pg_port.CANCEL_REQUEST, pid, 12345))
            assert s.recv(10) == b""
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert p.status()["cancels"] == 0


def test_pg8000_native_runs_parameterised_and_prepared_statements(port):
    p = port()
    conn = pg8000.native.Connection("anyone", host="127.0.0.1", port=p.port, database="defaultdb")
    try:
        conn.run("CREATE TABLE u (id INT PRIMARY KEY, name TEXT, at TIMESTAMP)")
        for i in range(5):
            conn.run("INSERT INTO u VALUES (:id, :name, :at)", id=i, name="n%d" % i,
                     at=datetime.datetime(2024, 5, 1, 12, 0, i))
        assert conn.row_count == 1
        assert conn.run("SELECT id, name, at FROM u WHERE id >= :low ORDER BY id", low=3) == [
            [3, "n3", datetime.datetime(2024, 5, 1, 12, 0, 3)], [4, "n4", datetime.datetime(2024, 5, 1, 12, 0, 4)]]
        statement = conn.prepare("SELECT name FROM u WHERE id = :id")
        assert statement.run(id=2) == [["n2"]] and statement.run(id=4) == [["n4"]]
        statement.close()
        assert conn.run("SHOW TABLES")[0][0] == "u"
        with pytest.raises(pg8000.native.DatabaseError) as caught:
            conn.run("SELECT name FROM nosuch")
        assert caught.value.args[0]["C"] == "42P01"
        assert conn.run("SELECT count(*) FROM u") == [[5]]
    finally:
        conn.close()


def test_a_pg8000_statement_is_cancelled_by_its_backend_key(port):
    """pg8000 has no cancel call of its own: a CancelRequest carrying the BackendKeyData its
    connection received (what any client's cancel sends) stops its running statement."""
    p = port()
    conn = pg8000.native.Connection("root", host="127.0.0.1", port=p.port, database="defaultdb")

    def cancel() -> None:
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            s.sendall(struct.pack(">ii", 16, 80877102) + conn._backend_key_data)
    try:
        cancel_a_long_statement(conn.run, pg8000.native.DatabaseError, lambda: p.status()["running"] == 1, cancel,
                                lambda exc: exc.args[0]["C"] == "57014")
    finally:
        conn.close()


@pytest.mark.skipif(PSQL is None, reason="psql is not installed (apt-get install postgresql-client)")
def test_psql_runs_statements_and_files_and_reports_errors(port, tmp_path):
    p = port()
    script = tmp_path / "setup.sql"
    script.write_text("CREATE TABLE users (id INT PRIMARY KEY, name TEXT);\n"
                      "INSERT INTO users VALUES (1, 'ada'), (2, 'grace');\n")
    ran = subprocess.run([PSQL, p.url, "-v", "ON_ERROR_STOP=1", "-f", str(script)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["CREATE", "TABLE", "INSERT", "0", "2"]
    ran = subprocess.run([PSQL, p.url, "-At", "-c", "SELECT name FROM users ORDER BY id"], capture_output=True,
                         text=True, timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "ada\ngrace\n"), ran.stderr
    ran = subprocess.run([PSQL, p.url, "-v", "VERBOSITY=verbose", "-c", "SELECT nosuch FROM users"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and "ERROR:  42703:" in ran.stderr, ran.stderr


def test_psql_lists_and_describes_tables_through_the_catalog(port):
    """psql's \\dt and \\d users: its own catalog queries (for the server version we report),
    answered by the engine over the virtual pg_catalog."""
    p = port()
    setup = subprocess.run([PSQL, p.url, "-c", "CREATE TABLE users (id INT PRIMARY KEY, name TEXT NOT NULL, "
                            "score FLOAT DEFAULT 1.5)"], capture_output=True, text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    listed = subprocess.run([PSQL, p.url, "-c", "\\dt"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [line.split("|") for line in listed.stdout.splitlines() if "users" in line] == [
        [" public ", " users ", " table ", " root"]]
    described = subprocess.run([PSQL, p.url, "-c", "\\d users"], capture_output=True, text=True, timeout=60)
    assert described.returncode == 0 and not described.stderr, described.stderr
    lines = [" ".join(line.replace("|", " ").split()) for line in described.stdout.splitlines()]
    assert 'Table "public.users"' in lines
    assert ["id bigint not null", "name text not null", "score double precision 1.5"] == [
        line for line in lines if line.split(" ")[0] in ("id", "name", "score")]
    assert '"users_pkey" PRIMARY KEY, btree (id)' in lines


def test_sqlalchemy_core_creates_inserts_selects_and_reflects(port):
    """SQLAlchemy 2 through its PostgreSQL dialect (psycopg 3 driver) in autocommit: CREATE TABLE
    as the dialect spells it, inserts and a select with bound parameters, and reflection."""
    sa = pytest.importorskip("sqlalchemy")
    p = port()
    # AUTOCOMMIT: there are no transactions yet; use_native_hstore=False: the psycopg dialect
    # otherwise looks the hstore type up inside a transaction (BEGIN) when it first connects.
    engine = sa.create_engine(p.url.replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT", use_native_hstore=False)
    try:
        metadata = sa.MetaData()
        things = sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                          sa.Column("name", sa.String(50), nullable=False), sa.Column("score", sa.Float),
                          sa.Column("seen", sa.DateTime))
        metadata.create_all(engine)
        seen = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000)
        with engine.connect() as conn:
            conn.execute(things.insert(), [{"id": 1, "name": "a", "score": 1.5, "seen": seen},
                                           {"id": 2, "name": "b", "score": 2.5, "seen": None}])
            found = conn.execute(sa.select(things.c.id, things.c.name, things.c.seen)
                                 .where(things.c.score > sa.bindparam("least")).order_by(things.c.id),
                                 {"least": 1.0}).all()
        assert [tuple(row) for row in found] == [(1, "a", seen), (2, "b", None)]
        inspector = sa.inspect(engine)
        assert inspector.has_table("things") and not inspector.has_table("nope")
        assert [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("things")] == [
            ("id", "BIGINT", False), ("name", "TEXT", False), ("score", "DOUBLE PRECISION", True),
            ("seen", "TIMESTAMP", True)]
        assert inspector.get_pk_constraint("things")["constrained_columns"] == ["id"]
        reflected = sa.Table("things", sa.MetaData(), autoload_with=engine)
        assert [c.name for c in reflected.primary_key] == ["id"]
    finally:
        engine.dispose()


def test_startup_settings_are_the_sessions_and_the_backend_pid_is_the_key_datas(port):
    p = port()
    with psycopg.connect(p.url, autocommit=True, application_name="myapp") as conn:
        assert conn.info.parameter_status("application_name") == "myapp"
        assert conn.info.parameter_status("server_version") == "13.0.0"
        assert conn.execute("SELECT pg_backend_pid(), current_setting('application_name')").fetchall() == [
            (conn.info.backend_pid, "myapp")]


def test_arrays_go_out_as_text_arrays_in_both_formats(port):
    p = port()
    with p.connect() as conn:
        conn.execute("CREATE TABLE k (a INT PRIMARY KEY, b TEXT)")
        conn.execute("INSERT INTO k VALUES (1, 'x y'), (2, NULL), (3, 'q\"r')")
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute("SELECT array_agg(b ORDER BY a) FROM k")
            assert cur.fetchall() == [(["x y", None, 'q"r'],)]
            assert cur.description[0].type_code == 1009


# --- the extended protocol, byte by byte ---------------------------------------------------------

def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack(">i", len(body) + 4) + body


def _startup(user: str = "root") -> bytes:
    body = struct.pack(">i", pg_port.PROTOCOL_3_0) + b"user\0" + user.encode() + b"\0database\0defaultdb\0\0"
    return struct.pack(">i", len(body) + 4) + body


class Raw:
    """A protocol-level client: send bytes, read messages."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> tuple[bytes, bytes] | None:
        """The next message, or None once the server closed."""
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack(">i", self.buf[1:5])[0]
                if len(self.buf) >= length + 1:
                    kind, body, self.buf = self.buf[:1], self.buf[5:length + 1], self.buf[length + 1:]
                    return kind, body
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.buf += data

    def until(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        got = []
        while True:
            m = self.read()
            assert m is not None, "closed; got %r" % [k for k, _ in got]
            got.append(m)
            if m[0] == kind:
                return got

    def login(self) -> "Raw":
        self.send(_startup())
        self.until(b"Z")
        return self

    def closed(self) -> list[tuple[bytes, bytes]]:
        """What the server sends before it closes."""
        got = []
        while (m := self.read()) is not None:
            got.append(m)
        return got


def _sqlstate(body: bytes) -> str:
    fields = {f[:1]: f[1:] for f in body.split(b"\0") if f}
    return fields[b"C"].decode()


def test_startup_answers_ssl_with_n_and_reports_the_parameters_drivers_read(port):
    p = port()
    raw = Raw(p.port)
    raw.send(struct.pack(">ii", 8, pg_port.GSSENC_REQUEST))
    assert raw.sock.recv(1) == b"N"
    raw.send(struct.pack(">ii", 8, pg_port.SSL_REQUEST))
    assert raw.sock.recv(1) == b"N"
    raw.send(_startup())
    got = raw.until(b"Z")
    kinds = [k for k, _ in got]
    assert kinds[0] == b"R" and got[0][1] == b"\0\0\0\0" and b"K" in kinds and got[-1] == (b"Z", b"I")
    params = dict(body.split(b"\0")[:2] for k, body in got if k == b"S")
    assert params[b"server_version"] == b"13.0.0" and params[b"client_encoding"] == b"UTF8"
    assert params[b"integer_datetimes"] == b"on" and params[b"standard_conforming_strings"] == b"on"


def test_another_protocol_version_is_refused_by_name(port):
    raw = Raw(port().port)
    body = struct.pack(">i", 2 << 16) + b"user\0root\0\0"
    raw.send(struct.pack(">i", len(body) + 4) + body)
    got = raw.closed()
    assert got[0][0] == b"E" and b"unsupported frontend protocol 2.0" in got[0][1]


def test_execute_with_a_row_limit_suspends_the_portal_and_the_next_execute_goes_on(port):
    p = port()
    with p.connect() as conn:
        _fill(conn)
    raw = Raw(p.port).login()
    raw.send(_msg(b"P", b"\0SELECT a FROM t ORDER BY a\0\0\0") + _msg(b"B", b"\0\0\0\0\0\0\0\0")
             + _msg(b"E", b"\0" + struct.pack(">i", 15)) + _msg(b"H"))
    first = raw.until(b"s")
    assert [k for k, _ in first] == [b"1", b"2"] + [b"D"] * 15 + [b"s"]
    raw.send(_msg(b"E", b"\0" + struct.pack(">i", 0)) + _msg(b"S"))
    rest = raw.until(b"Z")
    rows = [int(body[6:]) for k, body in rest if k == b"D"]
    assert rows == list(range(16, 41)) and (b"C", b"SELECT 40\0") in rest


def test_after_an_error_messages_are_skipped_until_sync(port):
    raw = Raw(port().port).login()
    raw.send(_msg(b"P", b"\0SELECT 1\0\0\0") + _msg(b"B", b"\0nosuch\0\0\0\0\0\0\0") + _msg(b"E", b"\0\0\0\0\0")
             + _msg(b"Q", b"SELECT 2\0") + _msg(b"S") + _msg(b"Q", b"SELECT 1\0"))
    got = raw.until(b"Z")
    assert [k for k, _ in got] == [b"1", b"E", b"Z"] and _sqlstate(got[1][1]) == "26000"
    assert [k for k, _ in raw.until(b"Z")] == [b"T", b"D", b"C", b"Z"]


def test_describe_tells_parameters_and_columns_before_anything_runs(port):
    p = port()
    with p.connect() as conn:
        _fill(conn)
    raw = Raw(p.port).login()
    raw.send(_msg(b"P", b"s1\0SELECT a, b FROM t WHERE a = $1\0" + struct.pack(">hi", 1, 20))
             + _msg(b"D", b"Ss1\0") + _msg(b"S"))
    got = raw.until(b"Z")
    assert got[1] == (b"t", struct.pack(">hi", 1, 20))
    assert got[2][0] == b"T" and b"a\0" in got[2][1] and b"b\0" in got[2][1]
    raw.send(_msg(b"P", b"s2\0INSERT INTO t (a) VALUES ($1)\0\0\0") + _msg(b"D", b"Ss2\0") + _msg(b"S"))
    assert [k for k, _ in raw.until(b"Z")] == [b"1", b"t", b"n", b"Z"]
    raw.send(_msg(b"C", b"Ss1\0") + _msg(b"B", b"\0s1\0\0\0\0\0\0\0") + _msg(b"S"))   # closed: gone
    got = raw.until(b"Z")
    assert [k for k, _ in got] == [b"3", b"E", b"Z"] and _sqlstate(got[1][1]) == "26000"


# --- limits and hostile bytes -------------------------------------------------------------------

def test_a_message_or_startup_claiming_a_gibibyte_is_refused_before_it_is_read(port):
    p = port()
    raw = Raw(p.port)
    raw.send(struct.pack(">ii", 1 << 30, pg_port.PROTOCOL_3_0))
    got = raw.closed()
    assert got and _sqlstate(got[0][1]) == "08P01" and b"startup packet" in got[0][1]
    raw = Raw(p.port).login()
    raw.send(b"Q" + struct.pack(">i", 1 << 30) + b"SELECT")
    got = raw.closed()
    assert got and _sqlstate(got[0][1]) == "54000"
    assert p.status()["memory_peak"] < 1 << 20
    wait_until(lambda: p.status()["memory_used"] == 0, 10, "the bytes come back")


def test_a_flood_of_parse_without_sync_stays_capped_and_others_go_on(port):
    p = port()
    raw = Raw(p.port).login()
    text = b"SELECT '" + b"x" * 4000 + b"'"
    flood = b"".join(_msg(b"P", b"f%d\0" % i + text + b"\0\0\0") for i in range(3000))   # 12 MB of statements
    sender = threading.Thread(target=raw.send, args=(flood,))
    sender.start()
    kinds = []
    while b"E" not in kinds:
        kinds.append(raw.read()[0])
    assert kinds.count(b"1") < constants.pg_prepared_max + 1
    sender.join(30)
    assert not sender.is_alive()
    with p.connect() as conn:   # another client meanwhile
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert p.status()["memory_peak"] < constants.pg_prepared_bytes_max + 2 * constants.pg_message_bytes_max
    raw.send(_msg(b"S"))
    assert raw.until(b"Z")[-1] == (b"Z", b"I")
    raw.sock.close()
    wait_until(lambda: p.status()["memory_used"] == 0 and p.status()["connections"] == 0, 10, "the flood's bytes back")


def test_random_and_truncated_bytes_never_take_the_port_down(port):
    p = port(frame_deadline_s=1.0)
    rng = random.Random(15)
    for i in range(60):
        raw = Raw(p.port)
        if i % 3 == 0:
            raw.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        elif i % 3 == 1:
            raw.login()
            message = _msg(rng.choice(b"QPBDECSHX").to_bytes(1, "big"), bytes(rng.randrange(256) for _ in range(40)))
            raw.send(message[:rng.randrange(1, len(message) + 1)])   # whole or truncated
        else:
            raw.login()
            raw.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        raw.sock.close()
    with p.connect() as conn:
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    wait_until(lambda: p.status()["connections"] == 0, 10, "every hostile connection ends")
    assert p.status()["memory_used"] == 0


def test_a_message_begun_must_be_whole_within_the_deadline_and_idle_connections_close(port):
    p = port(frame_deadline_s=0.5, idle_timeout_s=1.0)
    raw = Raw(p.port).login()
    raw.send(b"Q" + struct.pack(">i", 100) + b"SELECT")
    raw.closed()
    assert p.status()["frame_deadline_closed"] == 1
    idle = Raw(p.port).login()
    got = idle.closed()
    assert got and _sqlstate(got[0][1]) == "57P01" and p.status()["idle_closed"] == 1


def test_past_the_connection_limit_the_idle_one_goes_and_all_busy_refuses(port):
    p = port(connections_max=2)
    first, second = Raw(p.port).login(), Raw(p.port).login()
    third = Raw(p.port).login()   # the first, idle the longest, is closed for it
    assert _sqlstate(first.closed()[0][1]) == "57P01"
    second.send(b"Q" + struct.pack(">i", 100))   # a message begun: not idle
    third.send(b"Q" + struct.pack(">i", 100))
    wait_until(lambda: all(c.buf for c in p.server._connections.values()), 10, "both begin a message")
    fourth = Raw(p.port)
    fourth.send(_startup())
    got = fourth.closed()
    assert got and _sqlstate(got[0][1]) == "53300"


def test_a_result_over_the_cap_stops_with_54000_and_a_large_one_streams_in_batches(port):
    p = port(result_bytes_max=200_000)
    with p.connect() as conn:
        conn.execute("CREATE TABLE w (k INT PRIMARY KEY, v TEXT)")
        conn.cursor().executemany("INSERT INTO w VALUES (%s, %s)", [(k, "w" * 1000) for k in range(300)])
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("SELECT * FROM w").fetchall()
        assert len(conn.execute("SELECT * FROM w WHERE k < 150").fetchall()) == 150
        assert p.status()["results_refused"] == 1
    # Streamed: at most a batch or so of it is held at once, however large the result.
    assert p.status()["memory_peak"] < 4 * constants.pg_batch_bytes + 64 * 1024


def test_a_client_that_does_not_read_its_results_is_not_read_and_holds_little(port):
    p = port(write_timeout_s=2.0)
    with p.connect() as conn:
        conn.execute("CREATE TABLE big (k INT PRIMARY KEY, v TEXT)")
        conn.cursor().executemany("INSERT INTO big VALUES (%s, %s)", [(k, "b" * 2000) for k in range(2000)])
    raw = Raw(p.port).login()
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.send(_msg(b"Q", b"SELECT * FROM big\0") * 50)   # 4 MB answers each, never read
    wait_until(lambda: p.status()["write_timeout_closed"] == 1, 30, "the unread answer closes it")
    assert p.status()["memory_peak"] < 4 * constants.pg_batch_bytes + 64 * 1024
    wait_until(lambda: p.status()["memory_used"] == 0, 10, "its bytes come back")


# --- real node processes -------------------------------------------------------------------------

BUDGET = 32 * 1024 * 1024   # the cluster's --max-client-memory


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from raftstore.localcluster import Cluster

    root = str(tmp_path_factory.mktemp("pgwire"))
    with Cluster(root, extra_args=["--max-client-memory", str(BUDGET), "--client-idle-timeout", "20"]) as c:
        c.wait_leader(timeout=60)
        yield c


def _node_connect(node, **kwargs) -> psycopg.Connection:
    return psycopg.connect(node.pg_url, autocommit=True, connect_timeout=30, **kwargs)


def _wait_sql(node) -> None:
    def ready() -> bool:
        try:
            with _node_connect(node) as conn:
                conn.execute("SHOW TABLES")
            return True
        except psycopg.Error:
            return False
    wait_until(ready, 60, "n%d serves SQL on its pg port" % node.node_id)


@pytest.mark.slow
@pytest.mark.skipif(PSQL is None, reason="psql is not installed (apt-get install postgresql-client)")
def test_psql_psycopg_and_pg8000_on_three_nodes_see_one_table(cluster, tmp_path):
    n1, n2, n3 = cluster.nodes
    _wait_sql(n1)
    script = tmp_path / "users.sql"
    script.write_text("CREATE TABLE users (id INT PRIMARY KEY, name TEXT, score FLOAT, active BOOL, "
                      "avatar BYTES, joined TIMESTAMP);\n"
                      "INSERT INTO users VALUES (1, 'ada', 9.5, true, '\\x01ff', '2024-01-02 03:04:05.25');\n")
    ran = subprocess.run([PSQL, n1.pg_url, "-v", "ON_ERROR_STOP=1", "-f", str(script)], capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    with _node_connect(n2) as conn:
        conn.cursor().executemany("INSERT INTO users VALUES (%s, %s, %s, %s, %s, %s)",
                                  [(i, "u%d" % i, i / 2, i % 2 == 0, bytes([i]), datetime.datetime(2024, 2, 1, 0, 0, i))
                                   for i in range(2, 12)])
        cur = conn.cursor(binary=True)
        cur.execute("SELECT * FROM users WHERE id = %s", (1,), prepare=True)
        assert cur.fetchall() == [(1, "ada", 9.5, True, b"\x01\xff", datetime.datetime(2024, 1, 2, 3, 4, 5, 250000))]
    pg = pg8000.native.Connection("root", host=n3.pg_addr.split(":")[0], port=int(n3.pg_addr.split(":")[1]),
                                  database="defaultdb", timeout=30)
    try:
        assert pg.run("SELECT count(*) FROM users WHERE active = :a", a=True) == [[6]]
    finally:
        pg.close()
    ran = subprocess.run([PSQL, n3.pg_url, "-At", "-c", "SELECT name FROM users WHERE id <= 2 ORDER BY id"],
                         capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "ada\nu2\n"), ran.stderr
    ran = subprocess.run([PSQL, n1.pg_url, "-v", "VERBOSITY=verbose", "-c", "INSERT INTO users (id) VALUES (1)"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and "ERROR:  23505:" in ran.stderr, ran.stderr
    with cluster.client(n2) as client:
        assert client.status()["pg"]["addr"] == n2.pg_addr
    described = subprocess.run([PSQL, n3.pg_url, "-c", "\\d users"], capture_output=True, text=True, timeout=60)
    assert described.returncode == 0 and not described.stderr, described.stderr
    assert '"users_pkey" PRIMARY KEY, btree (id)' in described.stdout
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(n2.pg_url.replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT", use_native_hstore=False)
    try:
        reflected = sa.Table("users", sa.MetaData(), autoload_with=engine)
        assert [c.name for c in reflected.columns] == ["id", "name", "score", "active", "avatar", "joined"]
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(reflected)
                                .where(reflected.c.id > sa.bindparam("n")), {"n": 5}).scalar() == 6
    finally:
        engine.dispose()


@pytest.mark.slow
def test_psycopg_cancel_stops_a_long_statement_on_a_node(cluster):
    node = cluster.nodes[1]
    _wait_sql(node)
    with _node_connect(node) as conn:
        cancel_a_long_statement(_psycopg_run(conn), psycopg.Error, lambda: _statement_running(node), conn.cancel,
                                _psycopg_canceled)


def _statement_running(node) -> bool:
    """Whether a pg connection of `node` runs a statement now (the node's status: `pg`)."""
    from raftstore.kv import Client

    with Client([node.sql_addr], timeout_s=10) as client:
        return client.status()["pg"]["running"] > 0


@pytest.mark.slow
def test_hostile_pg_bytes_leave_the_node_up_in_budget_and_an_honest_client_served(cluster):
    node = cluster.nodes[2]
    _wait_sql(node)
    host, port_ = node.pg_addr.split(":")
    honest_errors, latencies = [], []
    stop = threading.Event()
    rss = []

    def honest() -> None:
        with _node_connect(node) as conn:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    assert conn.execute("SELECT %s + 1", (41,), prepare=True).fetchone() == (42,)
                    latencies.append(time.monotonic() - began)
                except Exception as exc:   # noqa: BLE001 - every failure is a finding
                    honest_errors.append(repr(exc))
                rss.append(rss_bytes(node.pid))
                stop.wait(0.05)

    def sock() -> socket.socket:
        return socket.create_connection((host, int(port_)), timeout=10)

    baseline = rss_bytes(node.pid)
    rng = random.Random(1515)
    watcher = threading.Thread(target=honest)
    watcher.start()
    try:
        for round_ in range(3):
            socks = []
            for _ in range(20):   # random bytes, before and after a startup
                s = sock()
                if rng.random() < 0.5:
                    s.sendall(_startup())
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))))
                socks.append(s)
            s = sock()
            s.sendall(struct.pack(">ii", 1 << 30, pg_port.PROTOCOL_3_0))   # a startup packet claiming 1 GiB
            socks.append(s)
            s = sock()
            s.sendall(_startup() + b"Q" + struct.pack(">i", (1 << 30) + 4))   # a query claiming 1 GiB
            socks.append(s)
            floods = []
            for _ in range(16):   # floods of Parse never followed by Sync, 12 MB each: 6 budgets' worth
                s = sock()
                s.settimeout(60)
                s.sendall(_startup())
                text = b"SELECT '" + b"p" * 8000 + b"'"
                flood = b"".join(_msg(b"P", b"f%d\0" % i + text + b"\0\0\0") for i in range(1500))
                floods.append(threading.Thread(target=s.sendall, args=(flood,)))
                floods[-1].start()
                socks.append(s)
            for thread in floods:
                thread.join(60)
            rss.append(rss_bytes(node.pid))   # all of it sent (and read, or held back by the budget)
            for _ in range(10):   # truncated messages: a header, then nothing
                s = sock()
                s.sendall(_startup() + b"P" + struct.pack(">i", 100000) + b"x" * 100)
                socks.append(s)
            for s in socks:
                s.close()
            assert node.pid is not None, "the node died"

            def settled() -> bool:
                with cluster.client(node) as client:
                    status = client.status()
                return status["pg"]["connections"] <= 1 and status["clients"]["memory_used"] < 256 * 1024
            wait_until(settled, 60, "the hostile connections end and their bytes come back")
    finally:
        stop.set()
        watcher.join(30)
    assert not honest_errors, honest_errors[:3]
    assert latencies and max(latencies) < 5.0
    peak = max(rss)
    print("\nhostile pg bytes: honest p99 %.1f ms over %d answers; RSS baseline %.0f MB, peak %.0f MB"
          % (sorted(latencies)[int(len(latencies) * 0.99)] * 1000, len(latencies), baseline / 2**20, peak / 2**20))
    assert peak <= (baseline + BUDGET) * 1.2, (peak, baseline)


# --- the differential test (tests/test_sql_differential.py) through the PostgreSQL port ---------------

_CODE_BY_SQLSTATE = {"23505": "unique_violation", "23502": "not_null_violation"}


class PgSession:
    """sql.Session's execute() contract through psycopg on the PostgreSQL port: rows and counts,
    SQLError (with our code where the differential test compares it) for a refused statement."""

    keep_tables = True   # a DROP waits out the schema leases (~2 s each); names are unique per example

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor)

    def execute(self, sql: str, params=None):
        from types import SimpleNamespace

        from sql import SQLError

        count = iter(range(1, 10**6))
        text = re.sub(r"%s", lambda _: "$%d" % next(count), sql)   # the generator's %s style, as $n
        cur = self.conn.cursor()
        try:
            cur.execute(text, list(params) if params else None, prepare=bool(params))
        except psycopg.errors.QueryCanceled:
            raise
        except psycopg.Error as exc:
            raise SQLError(_CODE_BY_SQLSTATE.get(exc.sqlstate, "syntax"), str(exc)) from None
        rows = [list(r) for r in cur.fetchall()] if cur.description else []
        return SimpleNamespace(rows=rows, rowcount=cur.rowcount, columns=[d.name for d in cur.description or []])


def test_the_differential_sql_test_passes_through_the_pg_port(port):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from test_sql_differential import test_same_results_as_sqlite as differential

    p = port()

    @settings(max_examples=100, deadline=None, report_multiple_bugs=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def through_pg(data) -> None:   # the same test, fewer examples: each statement is a round trip
        differential.hypothesis.inner_test(session_factory=lambda: PgSession(p.url), data=data)
    through_pg()
