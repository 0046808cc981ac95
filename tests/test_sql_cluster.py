"""SQL on real node processes: the catalog is shared, the REPL works as a person uses it,
`raftstore demo -e` prints from a fresh data directory, and the emulated WAN is really there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import raftstore
from cluster import Cluster
from test_repl_pty import Terminal


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("sqlc"))) as c:
        c.wait_leader()
        yield c


@pytest.mark.slow
def test_a_table_created_on_one_node_is_usable_on_every_node_at_once(cluster):
    first = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    first.execute("CREATE TABLE shared (k INT PRIMARY KEY, v TEXT)")
    for i, node in enumerate(cluster.nodes):
        cur = raftstore.connect(node.sql_addr).cursor()
        cur.execute("INSERT INTO shared VALUES ($1, $2)", [i, "from n%d" % node.node_id])
        assert cur.rowcount == 1 and cur.timestamp.wall_ns > 0
    for node in cluster.nodes:
        cur = raftstore.connect(node.sql_addr).cursor()
        cur.execute("SELECT k, v FROM shared ORDER BY k")
        assert cur.fetchall() == [(0, "from n1"), (1, "from n2"), (2, "from n3")]


def _shell(node, tmp_path) -> Terminal:
    """`raftstore sql` against `node` in a pty, as a person starts it."""
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "HOME": str(tmp_path),
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    return Terminal([sys.executable, "-m", "raftstore.cli", "sql", "--url", node.sql_addr,
                     "--history", str(tmp_path / "history")], env)


@pytest.mark.slow
def test_a_person_uses_raftstore_sql_through_a_terminal(cluster, tmp_path):
    cur = raftstore.connect(cluster.nodes[1].sql_addr).cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS pets (id INT PRIMARY KEY, name TEXT NOT NULL)")
    cur.execute("UPSERT INTO pets VALUES (1, 'rex'), (2, 'tom')")
    term = _shell(cluster.nodes[2], tmp_path)
    try:
        term.expect(r"raftstore>")
        term.type("SELECT id,\r")
        term.expect(r"^ +->")
        term.type(" name FROM pets ORDER BY id;\r")
        term.expect(r"^ id \| name\n----\+------\n  1 \| rex\n  2 \| tom\n\(2 rows\)\n")
        term.expect(r"raftstore>")
        term.type("SELEC name FROM pets;\r")
        term.expect(r"ERROR: .*\n")
        term.expect(r"raftstore>")
        term.type("INSERT INTO pets VALUES (3, 'kit');\r")
        term.expect(r"INSERT 1")
        term.type("SELECT count(*) FROM pets;\r")
        term.expect(r"^ count\n-------\n +3\n\(1 row\)\n")
        term.type("\\q\r")
        assert term.wait_exit() == 0
    finally:
        term.kill()


@pytest.mark.slow
def test_d_users_in_the_shell_describes_the_table_through_a_terminal(cluster, tmp_path, monkeypatch):
    import test_repl_pty

    # A busy machine: the shell's start (python, SHOW TABLES, SHOW COLUMNS of each table) may be slow.
    monkeypatch.setattr(test_repl_pty, "WAIT_S", 90.0)
    cur = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS users (id INT PRIMARY KEY, name TEXT NOT NULL DEFAULT 'anon', age INT)")
    cur.execute("SHOW RANGES")
    keys = [(row[1], row[2]) for row in cur.fetchall()]
    assert keys[0] == ("meta", "-inf") and keys[1][0] == "-inf", keys   # as raftstore status shows them
    term = _shell(cluster.nodes[1], tmp_path)
    try:
        term.expect(r"raftstore>")
        term.type("\\d users\r")
        term.expect(r"^ column_name \| data_type \| is_nullable \| column_default \| primary_key \| is_hidden\n"
                    r"-+(\+-+){5}\n"
                    r" id +\| INT +\| false +\| +\| true +\| false\n"
                    r" name +\| TEXT +\| false +\| 'anon' +\| false +\| false\n"
                    r" age +\| INT +\| true +\| +\| false +\| false\n"
                    r"\(3 rows\)\n")
        term.expect(r"raftstore>")
        term.type("\\d nope\r")
        term.expect(r'ERROR: relation "nope" does not exist; SHOW TABLES \(\\dt in the shell\) lists the tables')
        term.expect(r"raftstore>")
        term.type("SELECT ag\t")        # Tab completes the column name
        term.expect(r"age")
        term.type(" FROM users;\r")
        term.expect(r"^ age\n-----\n\(0 rows\)\n")
        term.type("\\q\r")
        assert term.wait_exit() == 0
    finally:
        term.kill()


@pytest.mark.slow
def test_demo_runs_a_statement_from_a_fresh_data_directory_and_stops_its_nodes(tmp_path):
    data = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "raftstore.cli", "demo", "--data-dir", str(data),
                          "-e", "SELECT count(*) FROM users"], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^ +8\n\(1 row\)", run.stdout, re.M), run.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "demo left node processes running: %s" % leftovers


@pytest.mark.slow
def test_demo_exits_non_zero_on_a_bad_statement(tmp_path):
    run = subprocess.run([sys.executable, "-m", "raftstore.cli", "demo", "--no-latency", "--data-dir",
                          str(tmp_path / "d"), "-e", "SELECT nope FROM users"], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 1 and "ERROR" in run.stderr, run.stdout + run.stderr


@pytest.mark.slow
def test_with_the_default_matrix_an_insert_through_us_east1_takes_at_least_the_round_trip_to_its_nearest_peer(tmp_path):
    # global3: us-east1 <-> europe-west1 64 ms, us-east1 <-> us-west1 66 ms. A commit needs a
    # majority, so a write entering at us-east1 cannot finish before one round trip to a peer:
    # a lower bound the emulation guarantees, not a speed claim.
    with Cluster(str(tmp_path), extra_args=["--latency-matrix", "global3"]) as c:
        c.wait_leader()
        east = c.nodes[0]
        assert east.region == "us-east1"
        cur = raftstore.connect(east.sql_addr).cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS w (id INT PRIMARY KEY, v TEXT)")
        took = []
        for i in range(5):
            started = time.perf_counter()
            cur.execute("INSERT INTO w VALUES ($1, 'x')", [i])
            took.append(time.perf_counter() - started)
        assert min(took) >= 0.064, took


@pytest.mark.slow
def test_a_long_statement_on_a_node_does_not_hold_back_another_clients_statements(cluster):
    """Statements are coroutines on the node's client loop (raftstore/coop.py): a cross join
    computing for seconds yields the loop every few milliseconds, so a point read sent while it
    runs is answered before it ends. (A build without the checkpoints answers it after.)"""
    import threading

    node = cluster.nodes[0]
    setup = raftstore.connect(node.sql_addr).cursor()
    setup.execute("CREATE TABLE wide (k INT PRIMARY KEY)")
    for start in range(0, 1500, 500):
        setup.execute("INSERT INTO wide VALUES " + ", ".join("(%d)" % i for i in range(start, start + 500)))
    finished: list[str] = []
    long_sent = threading.Event()

    def long_statement():
        cur = raftstore.connect(node.sql_addr, timeout_s=300).cursor()
        long_sent.set()
        cur.execute("SELECT count(*) FROM wide AS a, wide AS b WHERE a.k + b.k >= 0")   # 2.25 million pairs
        assert cur.fetchall() == [(1500 * 1500,)]
        finished.append("long")
    thread = threading.Thread(target=long_statement)
    thread.start()
    try:
        long_sent.wait(30)
        time.sleep(0.5)   # well into its join: reading 1,500 rows twice takes milliseconds
        short = raftstore.connect(node.sql_addr, timeout_s=60).cursor()
        short.execute("SELECT k FROM wide WHERE k = 7")
        assert short.fetchall() == [(7,)]
        finished.append("short")
    finally:
        thread.join(300)
    assert finished == ["short", "long"]


@pytest.mark.slow
def test_the_pg_catalog_of_every_node_shows_a_table_created_on_one_node_at_once(cluster):
    first = raftstore.connect(cluster.nodes[0].sql_addr).cursor()
    first.execute("CREATE TABLE cataloged (k INT PRIMARY KEY, v TEXT NOT NULL, n SERIAL)")
    for node in cluster.nodes:
        cur = raftstore.connect(node.sql_addr).cursor()
        cur.execute("SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull "
                    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                    "WHERE c.oid = 'cataloged'::regclass ORDER BY a.attnum")
        assert cur.fetchall() == [("k", "bigint", True), ("v", "text", True), ("n", "bigint", True)]
        cur.execute("SELECT column_default FROM information_schema.columns WHERE table_name = 'cataloged' "
                    "AND column_name = 'n'")
        assert cur.fetchall() == [("unique_rowid()",)]
