"""`raftstore start` refuses bad input with one line and a non-zero exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from cluster import Cluster, free_ports


def _start(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "raftstore.cli", "start", *args], capture_output=True, text=True,
                          timeout=timeout)


def _base(tmp_path, peer, sql, extra=()):
    return ["--node-id", "1", "--region", "us-east1", "--peer-addr", "127.0.0.1:%d" % peer,
            "--sql-addr", "127.0.0.1:%d" % sql, "--join", "127.0.0.1:%d" % peer,
            "--data-dir", str(tmp_path / "d"), *extra]


def _one_line_error(run, *needles):
    assert run.returncode != 0
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("flags,needle", [
    (["--node-id", "zero"], "--node-id"),
    (["--peer-addr", "nohost"], "--peer-addr"),
    (["--region", "bad region"], "--region"),
    (["--sql-addr", "127.0.0.1:99999"], "--sql-addr"),
    (["--http-addr", "nohost"], "--http-addr"),
])
def test_bad_flags_give_one_line(tmp_path, flags, needle):
    peer, sql = free_ports(2)
    args = _base(tmp_path, peer, sql, ["--insecure", "--http-addr", "127.0.0.1:%d" % free_ports(1)[0]])
    for i in range(0, len(flags), 2):
        args[args.index(flags[i]) + 1] = flags[i + 1]
    _one_line_error(_start(*args), needle)


def test_no_secret_file_and_no_insecure_is_refused(tmp_path):
    peer, sql = free_ports(2)
    _one_line_error(_start(*_base(tmp_path, peer, sql)), "--insecure")


def test_unreadable_secret_file_is_named(tmp_path):
    peer, sql = free_ports(2)
    _one_line_error(_start(*_base(tmp_path, peer, sql, ["--cluster-secret-file", str(tmp_path / "nope")])), "nope")


def test_port_in_use_is_a_one_line_error(tmp_path):
    peer, sql = free_ports(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", sql))
        s.listen(1)
        _one_line_error(_start(*_base(tmp_path, peer, sql, ["--insecure"])), "--sql-addr", "in use")


def test_http_port_in_use_is_a_one_line_error(tmp_path):
    peer, sql, http = free_ports(3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", http))
        s.listen(1)
        _one_line_error(_start(*_base(tmp_path, peer, sql, ["--insecure", "--http-addr", "127.0.0.1:%d" % http])),
                        "--http-addr", "in use")


def test_unusable_data_dir_is_a_one_line_error(tmp_path):
    peer, sql = free_ports(2)
    (tmp_path / "d").write_text("a file, not a directory")
    _one_line_error(_start(*_base(tmp_path, peer, sql, ["--insecure"])), "data dir")


def test_a_wiped_node_cannot_rejoin_under_its_old_id(tmp_path):
    c = Cluster(str(tmp_path))
    try:
        c.start_all()
        c.wait_leader()
        with c.client() as cl:
            cl.put(b"k", b"v")
        victim = c.nodes[2]
        c.kill9(victim)
        import shutil
        shutil.rmtree(victim.data_dir)
        run = subprocess.run(c.args(victim), capture_output=True, text=True, timeout=30)
        assert run.returncode != 0
        assert "wiped" in run.stderr and "new --node-id" in run.stderr, run.stderr
        with c.client() as cl:
            assert cl.get(b"k") == b"v"
    finally:
        c.cleanup()
