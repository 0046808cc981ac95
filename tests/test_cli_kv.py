"""`raftstore kv` and the client against real node processes: what a script sees (stdout,
stderr, exit codes), values from stdin up to the command limit, a client pointed at the peer
port, and a write sent before the cluster has formed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import raftstore
from cluster import Cluster
from raftstore import constants, errors
from raftstore.cli import kv as cli_kv
from raftstore.kv import Client

pytestmark = pytest.mark.timeout(600)

CLI_TIMEOUT_S = 120   # a whole CLI process on a busy machine; the client's own --timeout is less


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(str(tmp_path_factory.mktemp("clikv"))) as c:
        c.wait_leader(timeout=120)
        yield c


def kv_cli(url: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftstore.cli", "kv", args[0], "--url", url, *args[1:]],
                          input=stdin, capture_output=True, timeout=CLI_TIMEOUT_S)


def test_get_of_a_missing_key_says_not_found_on_stderr_with_its_own_exit_code(cluster):
    url = cluster.nodes[0].sql_addr
    done = kv_cli(url, "get", "no-such-key")
    assert (done.returncode, done.stdout, done.stderr) == (cli_kv.EXIT_NO, b"", b"(not found)\n")
    assert cli_kv.EXIT_NO not in (cli_kv.EXIT_USAGE, cli_kv.EXIT_UNAVAILABLE)


def test_a_value_from_stdin_is_stored_and_one_larger_than_a_command_is_refused(cluster):
    url = cluster.nodes[0].sql_addr
    big = b"x" * (2 * 1024 * 1024)
    refused = kv_cli(url, "put", "big", "-", stdin=big)
    assert refused.returncode == cli_kv.EXIT_USAGE, refused.stderr
    assert refused.stdout == b""
    message = refused.stderr.decode()
    assert "512 KiB (%d bytes)" % constants.command_bytes_max in message, message
    assert kv_cli(url, "get", "big").returncode == cli_kv.EXIT_NO   # nothing was written

    value = bytes(ord("a") + i % 26 for i in range(100 * 1024))
    stored = kv_cli(url, "put", "hundred-k", "-", stdin=value)
    assert stored.returncode == 0, stored.stderr
    read = kv_cli(url, "get", "hundred-k")
    assert read.returncode == 0 and read.stdout == value + b"\n"


def test_a_value_from_a_file_is_stored(cluster, tmp_path):
    path = tmp_path / "value.bin"
    path.write_bytes(b"from a file\n")
    url = cluster.nodes[0].sql_addr
    assert kv_cli(url, "put", "f", "--file", str(path)).returncode == 0
    with cluster.client() as client:
        assert client.get(b"f") == b"from a file\n"


def test_a_sql_value_larger_than_a_command_is_refused_naming_the_limit(cluster):
    with raftstore.connect(cluster.nodes[0].sql_addr, timeout_s=60) as conn:
        raftstore.sqlclient.wait_for_sql(conn, 60)
        cur = conn.cursor()
        cur.execute("CREATE TABLE blobs (id INT PRIMARY KEY, body TEXT)")
        with pytest.raises(raftstore.DataError) as caught:
            cur.execute("INSERT INTO blobs VALUES (1, $1)", ["y" * (constants.command_bytes_max + 1)])
        assert str(constants.command_bytes_max) in str(caught.value)
        assert cur.execute("SELECT count(*) FROM blobs").fetchall() == [(0,)]


def test_a_client_given_the_peer_port_is_told_so_and_the_node_logs_it_once(cluster):
    node = cluster.nodes[1]
    for _ in range(5):
        with Client(node.peer_addr, timeout_s=60) as client:
            with pytest.raises(errors.ConnectionFailedError) as caught:
                client.get(b"k")
        assert f"{node.peer_addr} is not a client port" in str(caught.value)
        assert "--sql-addr" in str(caught.value)
    with open(node.log_path) as f:
        logged = [line for line in f if "bad handshake magic" in line]
    assert len(logged) == 1, logged
    assert "127.0.0.1" in logged[0]


def test_a_write_before_the_cluster_formed_says_so_once(tmp_path):
    c = Cluster(str(tmp_path))
    try:
        c.start(c.nodes[0])   # alone: its peers never come, so the cluster cannot form
        with c.client(c.nodes[0], timeout_s=60) as client:
            client.status()   # it serves its client port (its start may take seconds on a busy machine)
        done = kv_cli(c.nodes[0].sql_addr, "put", "--timeout", "3", "k", "v")
    finally:
        c.cleanup()
    message = done.stderr.decode()
    assert done.returncode == cli_kv.EXIT_UNAVAILABLE, message
    assert message.count("\n") == 1
    assert message.count("the cluster has not formed yet") == 1, message
    assert message.count("commit") == 0 and message.count("nothing was applied") == 1, message
    assert os.path.exists(c.nodes[0].log_path)


def test_follower_reads_from_the_shell_and_their_flags_named_when_wrong(cluster):
    url = cluster.nodes[2].sql_addr
    put = kv_cli(url, "put", "stale-k", "v1")
    assert put.returncode == 0, put.stderr
    ts = put.stdout.decode().strip()
    # Bounded staleness: this client's own write is not known to the next process, so it may
    # read at the replica's closed timestamp (before the write) or later; both are answers.
    bounded = kv_cli(url, "get", "stale-k", "--max-staleness", "10s")
    assert bounded.returncode in (0, cli_kv.EXIT_NO), bounded.stderr
    exact = kv_cli(url, "get", "stale-k", "--as-of", ts)
    assert (exact.returncode, exact.stdout) == (0, b"v1\n"), exact.stderr
    scan = kv_cli(url, "scan", "stale-", "stale-z", "--as-of", ts)
    assert (scan.returncode, scan.stdout) == (0, b"stale-k\tv1\n"), scan.stderr
    for flags, named in ((["--max-staleness", "soon"], "--max-staleness must be a duration"),
                         (["--as-of", "yesterday"], "--as-of must be a timestamp"),
                         (["--as-of", ts, "--max-staleness", "1s"], "not allowed with")):
        wrong = kv_cli(url, "get", "stale-k", *flags)
        assert wrong.returncode == cli_kv.EXIT_USAGE and named in wrong.stderr.decode(), wrong.stderr


def test_max_staleness_reads_durations_as_sql_does():
    """`--max-staleness` takes what `with_max_staleness('...')` takes (raftstore.durations),
    within 1 ms .. 7 days."""
    import argparse

    from raftstore.durations import parse_interval_s
    for text, seconds in (("10s", 10.0), ("500ms", 0.5), ("1m30s", 90.0), ("2 minutes", 120.0), ("1.5h", 5400.0),
                          ("3", 3.0)):
        assert cli_kv._duration_type(text) == seconds == parse_interval_s(text)
    for text in ("soon", "-5s", "0", "8 days", "0.5ms", "", "10 parsecs"):
        with pytest.raises(argparse.ArgumentTypeError, match="--max-staleness must be a duration"):
            cli_kv._duration_type(text)
