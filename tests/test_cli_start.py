"""`raftstore start` refuses bad input with one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from cluster import LIVENESS_MARGIN_S, Cluster, free_ports, wait_until


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
        # A member remembers another as running with its data (node.json's "active") once it
        # has had a Raft message or a formed node's heartbeat from it; one killed before any
        # member saw it run acknowledged nothing, and may rejoin. One member that saw it is
        # enough, whichever of the two the wiped node reaches first (test_membership_wipe.py).
        def seen_running_by_a_member():
            def active(n):
                try:
                    with open(os.path.join(n.data_dir, "node.json")) as f:
                        return json.load(f).get("active", {})
                except (OSError, ValueError):
                    return {}
            return any(str(victim.node_id) in active(n) for n in c.nodes if n is not victim)
        wait_until(seen_running_by_a_member, LIVENESS_MARGIN_S, "a member to have seen node 3 running")
        c.kill9(victim)
        import shutil
        shutil.rmtree(victim.data_dir)
        run = subprocess.run(c.args(victim), capture_output=True, text=True, timeout=30)
        assert run.returncode != 0
        assert "wiped" in run.stderr and "cannot rejoin under its old id" in run.stderr, run.stderr
        with c.client() as cl:
            assert cl.get(b"k") == b"v"
    finally:
        c.cleanup()


def test_a_peer_addr_missing_from_join_is_refused(tmp_path):
    peer, sql, other = free_ports(3)
    args = _base(tmp_path, peer, sql, ["--insecure"])
    args[args.index("--join") + 1] = "127.0.0.1:%d" % other
    _one_line_error(_start(*args), "--peer-addr", "not in --join")


def test_a_node_id_beyond_the_join_list_is_warned_about_not_refused():
    from raftstore.cli.main import build_parser, start_warnings

    def warnings(node_id):
        return start_warnings(build_parser().parse_args(
            ["start", "--node-id", str(node_id), "--region", "r", "--peer-addr", "127.0.0.1:1", "--sql-addr",
             "127.0.0.1:2", "--join", "127.0.0.1:1,127.0.0.1:3", "--data-dir", "d"]))
    assert warnings(2) == []
    [said] = warnings(3)
    assert "--node-id 3" in said and "2 nodes of --join" in said


def test_the_log_file_rotates_by_size(tmp_path):
    import logging

    from raftstore.cli.main import configure_logging
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        path = configure_logging(str(tmp_path), 1, "INFO", file_bytes_max=2000, files_kept=2)
        for i in range(200):
            logging.getLogger("raftstore.test").info("line %d of the log, long enough to fill it soon", i)
    finally:
        for handler in root.handlers[len(before[0]):]:
            handler.close()
        root.handlers[:], root.level = before
    assert path == str(tmp_path / "logs" / "raftstore.log")
    assert sorted(os.listdir(tmp_path / "logs")) == ["raftstore.log", "raftstore.log.1", "raftstore.log.2"]
    assert all(os.path.getsize(tmp_path / "logs" / f) <= 2000 for f in os.listdir(tmp_path / "logs"))
    assert "line 199 of the log" in (tmp_path / "logs" / "raftstore.log").read_text()


class _Node:
    """One `raftstore start` process; stopped (SIGTERM, then SIGKILL) however the test ends."""

    def __init__(self, args):
        self.proc = subprocess.Popen([sys.executable, "-m", "raftstore.cli", "start", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def wait_log(self, path, needle, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.path.exists(path) and needle in open(path).read():
                return
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.1)
        raise AssertionError("no %r in %s after %.0f s" % (needle, path, timeout_s))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def test_a_node_logs_to_its_data_dir_says_whom_it_waits_for_and_keeps_its_region(tmp_path):
    peer, sql, absent = free_ports(3)
    args = _base(tmp_path, peer, sql, ["--insecure"])
    args[args.index("--join") + 1] = "127.0.0.1:%d,127.0.0.1:%d" % (peer, absent)
    log = str(tmp_path / "d" / "logs" / "raftstore.log")
    node = _Node(args)
    try:
        node.wait_log(log, "waiting for the cluster to form: heard from 0 of the 1 other --join nodes; "
                           "waiting for 127.0.0.1:%d" % absent)
    finally:
        assert node.stop() == 0
    alone = _base(tmp_path, peer, sql, ["--insecure"])        # a cluster of one: it forms at once
    import shutil
    shutil.rmtree(tmp_path / "d")
    node = _Node(alone)
    try:
        node.wait_log(log, "cluster formed")
    finally:
        assert node.stop() == 0
    assert "serving: peers on 127.0.0.1:%d, clients on 127.0.0.1:%d; logs in %s" % (
        peer, sql, os.path.dirname(log)) in open(log).read()
    alone[alone.index("--region") + 1] = "eu-west1"
    _one_line_error(_start(*alone), "created for region us-east1, not --region eu-west1")


def test_the_statement_timeout_flag_takes_a_duration_and_refuses_anything_else(tmp_path, capsys):
    from raftstore.cli.main import build_parser, node_config

    def config(*extra):
        return node_config(build_parser().parse_args(["start", *_base(tmp_path, 1, 2, ["--insecure", *extra])]))
    assert config().statement_timeout_ms == 0                       # none unless given
    assert config("--statement-timeout", "30s").statement_timeout_ms == 30_000
    assert config("--statement-timeout", "1500").statement_timeout_ms == 1500   # milliseconds, as SET takes it
    with pytest.raises(SystemExit) as exited:
        config("--statement-timeout", "soon")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--statement-timeout" in err and "'500ms'" in err
