"""``raftstore sql`` driven through a pseudo-terminal as a person would drive it.

The shell runs as a real process (``python -m raftstore.cli.sql_shell``) on the slave side of a pty,
so prompt_toolkit sees a terminal; the test types on the master side and reads the screen
output (escape sequences stripped). The node is the fake server of test_sqlclient.
Every wait is bounded, and the child is killed in a finalizer whatever happens.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from test_kv_client import SILENT
from test_sqlclient import result, sql_err, sql_server  # noqa: F401 - sql_server is a fixture

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")

WAIT_S = 15.0
ANSI_RE = re.compile(  # CSI, OSC, charset selection and keypad/cursor-save sequences
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)

SCRIPT = {
    "SHOW TABLES": result(["table_name"], ["TEXT"], [["t"]]),
    "SELECT a, b FROM t": result(["a", "b"], ["INT", "TEXT"], [[1, "one"], [22, None]]),
    "SELECT a FORM t": sql_err("syntax", 'syntax error at or near "FORM"', 9),
    "SELECT count(*) FROM t": result(["count"], ["INT"], [[2]]),
    "SELECT pg_sleep(60)": SILENT,
}


# Runs argv[2:] with the pty (its stdin) as controlling terminal, as a login shell would, so
# that Ctrl-C typed while the shell is not reading keys reaches it as SIGINT from the tty, and
# with SIGINT's disposition set by argv[1] ("default" or "ignore"), not inherited from
# whatever started pytest. (Done in the child itself: a preexec_fn is unsafe beside the fake
# server's threads.)
ADOPT_TTY = (
    "import fcntl, os, signal, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[1] == 'ignore' else signal.SIG_DFL); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class Terminal:
    """A child process on a pty, with bounded waits for what it prints."""

    def __init__(self, argv: list[str], env: dict[str, str], sigint: str = "default"):
        master, slave = os.openpty()
        # A real size: prompt_toolkit lays out for the terminal it is given.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.master = master
        self.process = subprocess.Popen(
            [sys.executable, "-c", ADOPT_TTY, sigint, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.raw = b""
        self.mark = 0  # `expect` looks only at the screen text after this offset

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_S)
        os.close(self.master)

    def _read_some(self, timeout_s: float) -> bool:
        # poll, not select: late in a long test session this process's descriptors may pass
        # select()'s limit of 1024 ("filedescriptor out of range").
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        if not poller.poll(max(timeout_s, 0) * 1000):
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            data = b""
        self.raw += data
        return bool(data)

    @property
    def screen(self) -> str:
        """Everything printed so far, escape sequences and carriage returns removed."""
        return ANSI_RE.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")

    def expect(self, pattern: str) -> re.Match:
        """Wait (bounded) until `pattern` (a regex) appears after the mark; move the mark past
        it and return the match."""
        deadline = time.monotonic() + WAIT_S
        regex = re.compile(pattern, re.MULTILINE)
        while True:
            match = regex.search(self.screen, self.mark)
            if match is not None:
                self.mark = match.end()
                return match
            remaining = deadline - time.monotonic()
            exited = self.process.poll() is not None
            if remaining <= 0 or (not self._read_some(remaining) and exited):
                raise AssertionError(
                    f"{pattern!r} did not appear within {WAIT_S} s; screen after the mark:\n"
                    + self.screen[self.mark :][-2000:]
                )

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_exit(self) -> int:
        """The child's exit code, once it exits (bounded wait)."""
        deadline = time.monotonic() + WAIT_S
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read_some(0.05)
        if self.process.poll() is None:
            raise AssertionError(
                f"the shell did not exit within {WAIT_S} s; screen after the mark:\n"
                + self.screen[self.mark :][-2000:]
            )
        return self.process.returncode


@pytest.fixture
def terminal(request, tmp_path):
    """terminal(address, sigint="default"|"ignore") -> a Terminal running ``raftstore sql --url
    address`` with that SIGINT disposition inherited, killed at teardown."""

    def start(address: str, sigint: str = "default") -> Terminal:
        env = {
            **os.environ,
            "TERM": "xterm-256color",
            "PROMPT_TOOLKIT_NO_CPR": "1",  # nobody answers cursor-position requests
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        argv = [
            sys.executable,
            "-m",
            "raftstore.cli.sql_shell",
            "--url",
            address,
            "--history",
            str(tmp_path / "history"),
        ]
        term = Terminal(argv, env, sigint)
        request.addfinalizer(term.kill)
        return term

    return start


def test_a_person_types_a_multi_line_statement_makes_a_syntax_error_and_keeps_working(
    sql_server, terminal, tmp_path
):
    server = sql_server(SCRIPT)
    term = terminal(server.address)
    term.expect(r"connected to 127\.0\.0\.1:\d+")
    term.expect(r"raftstore>")

    # A statement over two lines: the first Enter only continues it.
    term.type("SELECT a,\r")
    term.expect(r"^ +->")
    term.type(" b FROM t;\r")
    table = term.expect(r"^ a  \|  b\n----\+------\n  1 \| one\n 22 \| NULL\n\(2 rows\)\n")
    assert table
    term.expect(r"raftstore>")

    # A syntax error: the message and a caret under the offending word; the shell stays.
    term.type("SELECT a FORM t;\r")
    error = term.expect(r'ERROR: syntax error at or near "FORM"\nLINE 1: (.*)\n( *)\^\n')
    line, caret = error.group(1), error.group(2)
    assert line == "SELECT a FORM t"
    assert len(caret) == len("LINE 1: ") + line.index("FORM")
    term.expect(r"raftstore>")

    # Ctrl-C throws away a half-typed statement; the next one runs.
    term.type("SELECT junk")
    term.expect(r"junk")
    term.type("\x03")
    term.expect(r"raftstore>")
    term.type("SELECT count(*) FROM t;\r")
    term.expect(r"^ count\n-------\n +2\n\(1 row\)\n")
    term.expect(r"raftstore>")

    term.type("\\q\r")
    assert term.wait_exit() == 0

    assert server.script.statements == [
        "SHOW TABLES",
        'SHOW COLUMNS FROM "t"',   # for Tab completion (not in the script: the shell goes on)
        "SELECT a,\n b FROM t",
        "SELECT a FORM t",
        "SELECT count(*) FROM t",
    ]
    history = (tmp_path / "history").read_text()
    assert "+SELECT a,\n+ b FROM t;\n" in history
    assert "junk" not in history


def test_tab_completes_table_names_and_keywords(sql_server, terminal):
    server = sql_server({**SCRIPT, "select a, b from t": SCRIPT["SELECT a, b FROM t"]})
    term = terminal(server.address)
    term.expect(r"raftstore>")
    term.type("sel\t")
    term.expect(r"select")
    term.type(" a, b fr\t")
    term.expect(r"from")
    term.type(" \t")  # the only table: completed at once
    term.expect(r"t")  # drawn after the cursor, behind "from "
    term.type(";\r")
    term.expect(r"\(2 rows\)")
    term.expect(r"raftstore>")  # typed any earlier, Ctrl-D would be the tty's end-of-file
    term.type("\x04")  # Ctrl-D leaves
    assert term.wait_exit() == 0
    assert server.script.statements[-1] == "select a, b from t"


def the_next_statement_runs_and_quit_leaves(term: Terminal) -> None:
    """At a prompt: a statement prints its own answer, then ``quit`` leaves with exit code 0."""
    term.type("SELECT count(*) FROM t;\r")
    term.expect(r"^ count\n-------\n +2\n\(1 row\)\n")
    term.expect(r"raftstore>")
    term.type("quit\r")
    assert term.wait_exit() == 0


# A shell started by a script's background job (``cmd &`` without job control) inherits
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler: Ctrl-C must work anyway.
@pytest.mark.parametrize("sigint", ["default", "ignore"])
def test_ctrl_c_cancels_a_running_statement_and_the_shell_goes_on(sql_server, terminal, sigint):
    server = sql_server(SCRIPT)
    term = terminal(server.address, sigint)
    term.expect(r"raftstore>")
    term.type("SELECT pg_sleep(60);\r")  # the fake node never answers this one
    deadline = time.monotonic() + WAIT_S
    while "SELECT pg_sleep(60)" not in server.script.statements:
        assert time.monotonic() < deadline, "the statement never reached the server"
        time.sleep(0.01)
    term.type("\x03")  # the terminal is in cooked mode now: the tty sends SIGINT
    term.expect(r"ERROR: canceled\n")
    term.expect(r"raftstore>")
    # The interrupted exchange's connection was dropped: the next answer is this statement's.
    the_next_statement_runs_and_quit_leaves(term)
    assert server.connections == 2


SLOW_STATEMENT = "SELECT slow_one_second()"
SLOW_S = 1.0
CTRL_C_DELAYS_MS = (0, 0, 1, 2, 5, 5, 10, 10, 15, 20, 20, 30, 30, 50, 100, 200)


def answer_after_a_second(args: dict) -> dict:
    time.sleep(SLOW_S)
    return result(["slept"], ["INT"], [[1]])


def test_ctrl_c_at_any_moment_after_enter_cancels_the_statement(sql_server, terminal):
    # Pressed just after Enter, Ctrl-C reaches the shell while prompt_toolkit is still in raw
    # mode (a key byte), or while it is leaving it (SIGINT to prompt_toolkit's handlers), or
    # once the statement runs (SIGINT): every time it must cancel the statement, not let it run
    # to the end, nor drop it without a word.
    server = sql_server({**SCRIPT, SLOW_STATEMENT: answer_after_a_second})
    term = terminal(server.address)
    term.expect(r"raftstore>")
    for delay_ms in CTRL_C_DELAYS_MS:
        term.type(SLOW_STATEMENT + ";\r")
        time.sleep(delay_ms / 1000)
        term.type("\x03")
        try:
            shown = term.expect(r"ERROR: canceled\n|^ slept\n").group()
        except AssertionError as exc:
            raise AssertionError(
                f"Ctrl-C {delay_ms} ms after Enter: neither 'ERROR: canceled' nor an answer "
                f"(the statement was dropped without a word)\n{exc}"
            ) from None
        assert shown.startswith("ERROR"), (
            f"Ctrl-C {delay_ms} ms after Enter did not cancel: the statement ran to the end"
        )
        term.expect(r"raftstore>")
    # Nothing of the Ctrl-Cs is left over: the next statement runs and prints its answer.
    the_next_statement_runs_and_quit_leaves(term)
