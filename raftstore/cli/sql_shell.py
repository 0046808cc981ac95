"""``raftstore sql``: a SQL shell on a node's client port, interactive or scripted.

Why a module of its own: the main CLI owns process management; this one reads statements,
runs them through `raftstore.sqlclient` and prints results, so it can be tested against a
fake server, and `raftstore demo` can reuse `run_repl` and `run_statements`.

Modes (``raftstore sql --url HOST:PORT[,HOST:PORT...]``):

* ``-e SQL`` (repeatable): run the statements and exit. Otherwise, if stdin is not a
  terminal: run every statement read from it and exit. Both stop at the first error, print
  ``ERROR: ...`` on stderr and exit 1; exit 0 when everything ran. A statement at the very end
  may omit its ``;``.
* Otherwise an interactive shell (prompt_toolkit): a statement runs once a ``;`` outside
  quotes and comments ends the input, so it may span lines (continuation prompt ``->``);
  history persists in ``~/.raftstore_sql_history`` (``--history FILE``); Tab completes
  keywords, table names and column names (refreshed after DDL); ``\\timing`` prints how long
  each statement took; ``\\q``, ``quit``, ``exit`` or Ctrl-D leave; an error is printed and the
  shell goes on.
  Ctrl-C at the prompt clears the line; Ctrl-C at any moment after Enter cancels what the Enter
  submitted (`_CtrlC` says how, whatever state the terminal is in when the key arrives).

Meta commands (psql's, in every mode; ``\\?`` lists them): ``\\d`` / ``\\dt`` list the tables
(``SHOW TABLES``), ``\\d TABLE`` describes one (``SHOW COLUMNS FROM``), ``\\l`` lists the
databases (``SHOW DATABASES``), ``\\x [on|off]`` switches expanded output (one
``-[ RECORD n ]-`` block per row, a ``column | value`` line per column), ``\\timing [on|off]``.

Output: a result with columns is an aligned table in psql's layout (numbers right-aligned,
NULL shown as ``NULL``, control characters escaped so that every row stays one line) and a
``(N rows)`` footer; a statement without columns prints the server's status (``INSERT 3``,
``CREATE TABLE``). An error prints ``ERROR: message`` and, when the server gave a position,
the offending line with a caret under it. A malformed ``--url`` is a one-line usage error,
exit 2.

The statement splitter and the formatting are pure functions, tested without a terminal.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import select
import signal
import sys
import termios
import time
from typing import Any, Iterable, Iterator, TextIO

from raftstore import constants, sqlclient
from raftstore.sqltext import ScannedInput
from raftstore.cli.client_args import add_timeout_argument, add_url_argument

HISTORY_PATH_DEFAULT = "~/.raftstore_sql_history"
PROMPT = "raftstore> "
CONTINUATION = "-> "

_TABLE_CELL_CHARS_MAX = 1000      # longer cell texts are cut, so one value cannot flood a screen
_ERROR_LINE_CHARS_MAX = 100       # the error's source line is shown in a window of this size

_OK, _ERROR, _QUIT = "ok", "error", "quit"

# --- splitting input into statements (pure: raftstore.sqltext) ---------------------------------

def split_statements(text: str) -> list[str]:
    """Every statement and meta command in `text`, in order (see `ScannedInput`); an
    unterminated statement at the end counts as the last one, so ``-e "SELECT 1"`` runs."""
    scanned = ScannedInput(text)
    items = list(scanned.items)
    if scanned.rest_has_code or (scanned.open_token and scanned.rest):
        items.append(scanned.rest)
    return items


def _is_quit(text: str) -> bool:
    return text.strip().rstrip(";").strip().lower() in ("quit", "exit")


# --- formatting results (pure) ---------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_controls(text: str) -> str:
    return _CONTROL_RE.sub(
        lambda match: _CONTROL_ESCAPES.get(match.group(), f"\\x{ord(match.group()):02x}"), text
    )


def format_value(value: Any) -> str:
    """One result value as shown in a table: NULL, true/false, numbers as PostgreSQL prints them
    (``1`` for 1.0, ``NaN``, ``Infinity``), bytes as ``\\x`` hex, timestamps as
    ``YYYY-MM-DD HH:MM:SS[.ffffff]``, text with control characters escaped."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    text = _escape_controls(str(value))
    if len(text) > _TABLE_CELL_CHARS_MAX:
        text = text[:_TABLE_CELL_CHARS_MAX] + "..."
    return text


def _width(text: str) -> int:
    from prompt_toolkit.utils import get_cwidth  # wide (CJK) characters take two columns

    return get_cwidth(text)


def _pad(text: str, width: int, align: str) -> str:
    gap = width - _width(text)
    if align == "right":
        return " " * gap + text
    if align == "center":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


def format_table(columns: list[str], types: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """The lines of an aligned table in psql's layout (header, rule, one line per row; no
    footer). Columns of numeric type are right-aligned, others left-aligned."""
    headers = [_escape_controls(name) for name in columns]
    cells = [[format_value(value) for value in row] for row in rows]
    widths = [_width(header) for header in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _width(cell))
    aligns = [
        "right" if sqlclient.NUMBER == type_name and type_name.upper() != "BOOL" else "left"
        for type_name in types
    ]
    lines = [
        "|".join(f" {_pad(h, w, 'center')} " for h, w in zip(headers, widths)).rstrip(),
        "+".join("-" * (w + 2) for w in widths),
    ]
    for row in cells:
        line = "|".join(f" {_pad(c, w, a)} " for c, w, a in zip(row, widths, aligns))
        lines.append(line.rstrip())
    return lines


def format_expanded(columns: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """The lines of psql's expanded layout: per row a ``-[ RECORD n ]-`` rule as wide as the
    block, then one ``column | value`` line per column; ``(0 rows)`` when there are none."""
    headers = [_escape_controls(name) for name in columns]
    cells = [[format_value(value) for value in row] for row in rows]
    if not cells:
        return ["(0 rows)"]
    name_width = max(_width(h) for h in headers)
    value_width = max(_width(c) for row in cells for c in row)
    rule = "-" * (name_width + 1) + "+" + "-" * (value_width + 1)
    lines = []
    for number, row in enumerate(cells, start=1):
        label = f"-[ RECORD {number} ]"
        lines.append(label + rule[len(label):])
        lines.extend(f"{_pad(h, name_width, 'left')} | {c}".rstrip() for h, c in zip(headers, row))
    return lines


def format_rows_footer(count: int) -> str:
    return "(1 row)" if count == 1 else f"({count} rows)"


def format_error(error: BaseException, sql: str | None = None) -> list[str]:
    """``ERROR: message``, then (if `error` has a position inside `sql`) psql's ``LINE n:`` with
    the statement's line and a caret under the position."""
    message = " ".join(str(error).split()) or type(error).__name__
    lines = [f"ERROR: {message}"]
    position = getattr(error, "position", None)
    if sql is None or not isinstance(position, int) or not 0 <= position <= len(sql):
        return lines
    line_start = sql.rfind("\n", 0, position) + 1
    line_end = sql.find("\n", position)
    line = sql[line_start : len(sql) if line_end < 0 else line_end]
    column = position - line_start
    shown, column = _window(line.replace("\t", " "), column)
    prefix = f"LINE {sql.count(chr(10), 0, position) + 1}: "
    lines.append(prefix + _escape_controls(shown))
    lines.append(" " * (_width(prefix) + _width(_escape_controls(shown[:column]))) + "^")
    return lines


def _window(line: str, column: int) -> tuple[str, int]:
    """A part of `line` of at most _ERROR_LINE_CHARS_MAX characters around `column`, with
    ``...`` where it was cut; returns it and the column within it."""
    if len(line) <= _ERROR_LINE_CHARS_MAX:
        return line, column
    half = _ERROR_LINE_CHARS_MAX // 2
    start = max(0, min(column - half, len(line) - _ERROR_LINE_CHARS_MAX))
    shown = line[start : start + _ERROR_LINE_CHARS_MAX]
    if start > 0:
        shown, column = "..." + shown, column - start + 3
    if start + _ERROR_LINE_CHARS_MAX < len(line):
        shown += "..."
    return shown, column


# --- running statements ----------------------------------------------------------------------

_DDL_KEYWORDS = frozenset({"CREATE", "DROP", "ALTER", "RENAME", "TRUNCATE"})

HELP_TEXT = """\
Statements end with ";" and may span several lines.
  \\q, quit, exit, Ctrl-D   leave the shell
  \\d, \\dt                  list tables (SHOW TABLES)
  \\d TABLE                 describe a table: columns, types, nullability, defaults, key
                           (SHOW COLUMNS FROM TABLE; SHOW CREATE TABLE TABLE gives its DDL)
  \\l                       list databases (SHOW DATABASES)
  \\x [on|off]              expanded output: one block per row (toggles without argument)
  \\timing [on|off]         print how long each statement took (toggles without argument)
  \\?                       this help
  Ctrl-C                   cancel the current input, or the running statement
  Tab                      complete SQL keywords, table names and column names
Every statement commits on its own. Parameters ($1, %s) are for the Python client."""


class _Shell:
    """Runs statements and meta commands on one connection and prints what they give."""

    def __init__(
        self, connection: sqlclient.Connection, out: TextIO, err: TextIO, *, interactive: bool
    ):
        self.connection = connection
        self.cursor = connection.cursor()
        self.out = out
        self.err = err
        self.interactive = interactive  # keep table and column names for completion
        self.timing = False
        self.expanded = False
        self.tables: list[str] = []
        self.columns: dict[str, list[str]] = {}  # table -> its column names, for completion

    def write(self, lines: Iterable[str], *, to_err: bool = False) -> None:
        stream = self.err if to_err else self.out
        for line in lines:
            stream.write(line + "\n")
        stream.flush()

    def run_item(self, item: str) -> str:
        """Run one statement or meta command; returns _OK, _ERROR or _QUIT."""
        if item.startswith("\\"):
            return self.run_meta(item)
        if _is_quit(item):
            return _QUIT
        return self.run_sql(item)

    def run_sql(self, sql: str) -> str:
        started = time.perf_counter()
        ddl = self.interactive and bool(set(sqlclient.leading_keywords(sql, 1)) & _DDL_KEYWORDS)
        try:
            self.cursor.execute(sql)
        except sqlclient.Error as exc:
            self.out.flush()
            self.write(format_error(exc, sql), to_err=True)
            if ddl:
                self.refresh_tables()
            return _ERROR
        except KeyboardInterrupt:
            # The connection dropped its half-read answer; say what that means for a write.
            note = "" if sqlclient.statement_is_read(sql) else "; the statement may have committed"
            self.write([f"ERROR: canceled{note}"], to_err=True)
            return _ERROR
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.print_result()
        if self.timing:
            self.write([f"Time: {elapsed_ms:.3f} ms"])
        if ddl:
            self.refresh_tables()
        return _OK

    def print_result(self) -> None:
        cursor = self.cursor
        if cursor.description is not None:
            rows = cursor.fetchall()
            columns = [column.name for column in cursor.description]
            if self.expanded:
                self.write(format_expanded(columns, rows) + [""])
                return
            types = [column.type_code for column in cursor.description]
            self.write(format_table(columns, types, rows) + [format_rows_footer(len(rows)), ""])
        elif cursor.statusmessage:
            self.write([cursor.statusmessage])

    def run_meta(self, item: str) -> str:
        command, _, typed_argument = item.partition(" ")
        typed_argument = typed_argument.strip()
        argument = typed_argument.lower()
        if command == "\\q":
            return _QUIT
        if command in ("\\?", "\\h", "\\help"):
            self.write([HELP_TEXT])
            return _OK
        if command == "\\timing" and argument in ("", "on", "off"):
            self.timing = (not self.timing) if not argument else argument == "on"
            self.write([f"Timing is {'on' if self.timing else 'off'}."])
            return _OK
        if command == "\\x" and argument in ("", "on", "off"):
            self.expanded = (not self.expanded) if not argument else argument == "on"
            self.write([f"Expanded display is {'on' if self.expanded else 'off'}."])
            return _OK
        if command in ("\\dt", "\\d") and not argument:
            return self.run_sql("SHOW TABLES")
        if command == "\\d":
            if not _TABLE_NAME_RE.fullmatch(typed_argument):
                self.write([f"ERROR: \\d takes one table name, got {_escape_controls(typed_argument)}; "
                            "\\dt lists the tables"], to_err=True)
                return _ERROR
            return self.run_sql(f"SHOW COLUMNS FROM {typed_argument}")
        if command == "\\l" and not argument:
            return self.run_sql("SHOW DATABASES")
        self.write([f"ERROR: unknown command {_escape_controls(item)}; type \\? for help"], to_err=True)
        return _ERROR

    def refresh_tables(self) -> None:
        """Reload the table and column names for completion; on failure keep the old ones (a
        connection error would show up on the next statement anyway)."""
        try:
            self.tables = fetch_table_names(self.connection)
        except sqlclient.Error:
            return
        self.columns = fetch_column_names(self.connection, self.tables)


# A table name as \\d takes it: a plain identifier or a double-quoted one.
_TABLE_NAME_RE = re.compile(r'[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+"')


def fetch_column_names(connection: sqlclient.Connection, tables: list[str]) -> dict[str, list[str]]:
    """Column names of the first `repl_completion_tables_max` of `tables` (``SHOW COLUMNS FROM``
    each; hidden columns too, as they can be selected). A table that fails (dropped meanwhile,
    or a server without SHOW COLUMNS) is left out; an operating error (no node answers) ends
    the fetch with what it has, rather than waiting out the timeout once per table."""
    columns: dict[str, list[str]] = {}
    cursor = connection.cursor()
    try:
        for table in tables[: constants.repl_completion_tables_max]:
            quoted = '"' + table.replace('"', '""') + '"'
            try:
                cursor.execute(f"SHOW COLUMNS FROM {quoted}")
            except sqlclient.OperationalError:
                break
            except sqlclient.Error:
                continue
            if cursor.description is not None:
                columns[table] = [row[0] for row in cursor.fetchall() if isinstance(row[0], str)]
    finally:
        cursor.close()
    return columns


def fetch_table_names(connection: sqlclient.Connection) -> list[str]:
    """Table names from ``SHOW TABLES`` (its ``table_name`` or ``name`` column, else the first).
    Raises sqlclient.Error."""
    cursor = connection.cursor()
    try:
        cursor.execute("SHOW TABLES")
        if cursor.description is None:
            return []
        names = [column.name.lower() for column in cursor.description]
        index = next((names.index(n) for n in ("table_name", "name") if n in names), 0)
        return sorted({row[index] for row in cursor.fetchall() if isinstance(row[index], str)})
    finally:
        cursor.close()


def run_statements(
    connection: sqlclient.Connection,
    statements: list[str],
    out: TextIO,
    *,
    err: TextIO | None = None,
    timing: bool = False,
) -> int:
    """Run every statement (each str may hold several, split as the shell splits them; meta
    commands such as ``\\timing`` work too) in order, printing results to `out` and errors to
    `err` (default stderr). Stops at the first error: returns 1, else 0."""
    shell = _Shell(connection, out, sys.stderr if err is None else err, interactive=False)
    shell.timing = timing
    for text in statements:
        for item in split_statements(text):
            status = shell.run_item(item)
            if status == _ERROR:
                return 1
            if status == _QUIT:
                return 0
    return 0


# --- the interactive shell -------------------------------------------------------------------

SQL_KEYWORDS = (
    "ALL ANALYZE AND AS ASC AVG BETWEEN BIGINT BOOL BY BYTES CASE CAST COLUMNS CONFLICT COUNT CREATE CROSS "
    "DATABASES DEFAULT DELETE DESC DISTINCT DO DROP ELSE END EXISTS EXPLAIN FALSE FIRST FLOAT FROM GROUP "
    "HAVING IF IN INNER INSERT INT INTO IS JOIN KEY LAST LIKE LIMIT MAX MIN NOT NOTHING NULL "
    "NULLS OF OFFSET ON OR ORDER PRIMARY RANGES REGIONS SELECT SET SHOW SUM SYSTEM TABLE "
    "TABLES TEXT THEN TIME TIMESTAMP TRUE UPDATE UPSERT VALUES WHEN WHERE"
).split()
_TABLE_CONTEXT_KEYWORDS = frozenset({"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "EXISTS"})
_WORD_BEFORE_CURSOR_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)?$")
_PREVIOUS_WORD_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")
_QUALIFIER_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\.$")


def completions_for(
    text_before_cursor: str, tables: list[str], columns: dict[str, list[str]] | None = None
) -> list[str]:
    """Words that complete the one being typed: table names first (only they after FROM, JOIN,
    INTO, UPDATE, TABLE), then column names (of every table in `columns`; after ``table.`` only
    that table's), then keywords, in the case the user is typing in. Pure."""
    columns = columns or {}
    match = _WORD_BEFORE_CURSOR_RE.search(text_before_cursor)
    word = (match.group(1) or "") if match else ""
    before = text_before_cursor[: len(text_before_cursor) - len(word)]
    prefix = word.lower()
    qualifier = _QUALIFIER_RE.search(before)
    if qualifier is not None:
        named = qualifier.group(1)
        table = next((t for t in columns if t.lower() == named.lower()), None)
        if table is not None:
            return [c for c in columns[table] if c.lower().startswith(prefix)]
    previous = _PREVIOUS_WORD_RE.search(before)
    table_context = previous is not None and previous.group(1).upper() in _TABLE_CONTEXT_KEYWORDS
    found = [name for name in tables if name.lower().startswith(prefix)]
    if table_context or not word:
        return found if table_context else []
    for name in sorted({c for names in columns.values() for c in names}):
        if name.lower().startswith(prefix) and name.lower() != prefix and name not in found:
            found.append(name)
    lower = word.islower()
    for keyword in SQL_KEYWORDS:
        if keyword.lower().startswith(prefix) and keyword.lower() != prefix:
            found.append(keyword.lower() if lower else keyword)
    return found


def _make_completer(shell: _Shell) -> Any:
    from prompt_toolkit.completion import Completer, Completion

    class SqlCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterator[Completion]:
            before = document.text_before_cursor
            match = _WORD_BEFORE_CURSOR_RE.search(before)
            word = (match.group(1) or "") if match else ""
            for candidate in completions_for(before, shell.tables, shell.columns):
                yield Completion(candidate, start_position=-len(word))

    return SqlCompleter()


class _CtrlC:
    """Routes Ctrl-C by what the shell is doing, so that one pressed at any moment after Enter
    cancels what the Enter submitted, and one pressed at the prompt only clears the line.

    While the prompt edits a line the terminal is in raw mode: Ctrl-C is a key, and
    prompt_toolkit's binding clears the line. After Enter a Ctrl-C can arrive in three ways:
    as a key byte while prompt_toolkit is still in raw mode (read into its key queue, which it
    keeps as typeahead for the next prompt, or left in the terminal's buffer); as SIGINT while
    prompt_toolkit winds down (its own SIGINT handling, or asyncio's, would drop the statement
    or the signal); or as SIGINT while the statement runs. So the shell handles SIGINT itself
    for its whole life (prompt_toolkit's handler stays off, and asyncio installs none over a
    handler that is not Python's default), whatever disposition it inherited -- a shell
    started from a script's background job inherits SIGINT ignored, and Python then installs
    no KeyboardInterrupt handler at all:

    * ``EDITING`` (from before the prompt appears until Enter is accepted): a SIGINT can only
      come from outside the terminal or in the instant before the prompt takes the terminal;
      there is nothing to cancel, and it is dropped.
    * ``SUBMITTED`` (Enter accepted, prompt_toolkit restoring the terminal): it is recorded in
      `pending`, never raised inside prompt_toolkit.
    * ``RUNNING`` (the shell runs what was submitted): it raises KeyboardInterrupt, which
      interrupts the request in flight.

    The shell moves from SUBMITTED to RUNNING only after it has taken the keys typed after
    Enter (`_keys_typed_after_enter`), and checks `pending` after the move, so a Ctrl-C that
    arrives at any instant is seen by exactly one of the three checks.
    """

    EDITING, SUBMITTED, RUNNING = "editing", "submitted", "running"

    def __init__(self) -> None:
        self.state = self.EDITING
        self.pending = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "_CtrlC":
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        except ValueError:  # not the main thread: no SIGINT can reach this shell anyway
            pass
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.state == self.RUNNING:
            self.state = self.EDITING  # one cancel per Enter; more Ctrl-Cs find nothing to do
            raise KeyboardInterrupt
        if self.state == self.SUBMITTED:
            self.pending = True

    def editing(self) -> None:
        self.state, self.pending = self.EDITING, False

    def submitted(self) -> None:
        self.state = self.SUBMITTED

    def running(self) -> None:
        self.state = self.RUNNING


def _keys_typed_after_enter(app_input: Any) -> list[Any]:
    """The keys typed after the Enter that ended the last prompt and not read by the shell yet:
    those prompt_toolkit read along with the Enter (its typeahead), then, on a terminal, those
    still in the terminal's buffer. Takes them all from where they were; the caller hands back
    what the next prompt should see with `store_typeahead`.

    The terminal is read with canonical mode off (so a half-typed line is readable) but signals
    on: a Ctrl-C typed meanwhile is a SIGINT, which `_CtrlC` sees.
    """
    from prompt_toolkit.input.typeahead import get_typeahead

    keys = list(get_typeahead(app_input))
    try:
        fd = app_input.fileno()
        is_terminal = os.isatty(fd)
    except (AttributeError, NotImplementedError, OSError, ValueError):
        is_terminal = False
    if not is_terminal:
        return keys
    try:
        cooked = termios.tcgetattr(fd)
        readable = [*cooked[:6], list(cooked[6])]
        readable[3] &= ~termios.ICANON
        readable[6][termios.VMIN], readable[6][termios.VTIME] = 0, 0
        termios.tcsetattr(fd, termios.TCSANOW, readable)
    except termios.error:  # the terminal went away: nothing more was typed on it
        return keys
    try:
        for _ in range(constants.repl_typeahead_reads_max):
            if not select.select([fd], [], [], 0)[0]:
                break
            keys.extend(app_input.read_keys())
            if app_input.closed:
                break
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, cooked)
    return keys


def _ctrl_c_typed_after_enter(app_input: Any) -> bool:
    """True if a Ctrl-C key was typed after the last Enter and not handled yet (see
    `_keys_typed_after_enter`). The first such Ctrl-C is for the statement just submitted; the
    keys typed before it go with it (as a terminal flushes its input on Ctrl-C), and the keys
    after it stay typed ahead for the next prompt."""
    from prompt_toolkit.input.typeahead import store_typeahead
    from prompt_toolkit.keys import Keys

    keys = _keys_typed_after_enter(app_input)
    first = next((i for i, press in enumerate(keys) if press.key == Keys.ControlC), None)
    store_typeahead(app_input, keys if first is None else keys[first + 1 :])
    return first is not None


def _make_key_bindings(ctrl_c: _CtrlC) -> Any:
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event: Any) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.complete_state = None  # Enter picks the completion; keep editing
            return
        if ScannedInput(buffer.text).complete or _is_quit(buffer.text):
            ctrl_c.submitted()  # from here a SIGINT is for what this Enter submits
            buffer.validate_and_handle()
            if not event.app.is_done:
                ctrl_c.editing()
        else:
            buffer.newline(copy_margin=False)

    return bindings


def _open_history(path: str, shell: _Shell) -> Any:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = os.path.expanduser(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        shell.write(
            [f"WARNING: history will not be saved: cannot write {path}: {exc.strerror or exc}"],
            to_err=True,
        )
        return InMemoryHistory()
    return FileHistory(path)


def run_repl(
    connection: sqlclient.Connection,
    *,
    history_path: str = HISTORY_PATH_DEFAULT,
    input: Any = None,
    output: Any = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The interactive shell (module doc) until the user leaves; returns the exit code: 0, or
    1 if no node answers the first request (``SHOW TABLES``, for completion).

    `input` / `output`: prompt_toolkit Input and Output (default: the terminal); `out` /
    `err`: where results and errors go (default: stdout, stderr).
    """
    from prompt_toolkit import PromptSession

    shell = _Shell(
        connection,
        sys.stdout if out is None else out,
        sys.stderr if err is None else err,
        interactive=True,
    )
    try:
        shell.tables = fetch_table_names(connection)
    except sqlclient.OperationalError as exc:
        shell.write(format_error(exc), to_err=True)
        return 1
    except sqlclient.Error:
        pass  # a server without SHOW TABLES: complete keywords only
    shell.columns = fetch_column_names(connection, shell.tables)
    ctrl_c = _CtrlC()
    session: PromptSession[str] = PromptSession(
        multiline=True,
        prompt_continuation=lambda width, line_number, is_soft_wrap: (
            " " * max(width - len(CONTINUATION), 0) + CONTINUATION
        ),
        history=_open_history(history_path, shell),
        completer=_make_completer(shell),
        complete_while_typing=False,
        key_bindings=_make_key_bindings(ctrl_c),
        input=input,
        output=output,
    )
    shell.write(
        [
            f"raftstore sql: connected to {', '.join(connection.addresses)}. "
            "Type \\? for help, \\q to quit."
        ]
    )
    with ctrl_c:
        while True:
            ctrl_c.editing()
            try:
                text = session.prompt(PROMPT, handle_sigint=False)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt drops the input being typed
            except EOFError:
                return 0
            if _run_submitted(shell, text, ctrl_c, session.input) == _QUIT:
                return 0


def _run_submitted(shell: _Shell, text: str, ctrl_c: _CtrlC, app_input: Any) -> str:
    """Run the statements and meta commands of one submitted input in order, up to the first
    that fails; a Ctrl-C typed at any moment after the Enter cancels the rest (`_CtrlC`).
    Returns _QUIT if one of them leaves the shell, else _OK."""
    items = split_statements(text)
    canceled = _ctrl_c_typed_after_enter(app_input)
    try:
        ctrl_c.running()
        if canceled or ctrl_c.pending:  # pressed before anything was sent
            ctrl_c.editing()
            if items:  # (an empty line: as at the prompt, nothing to say)
                read = items[0].startswith("\\") or sqlclient.statement_is_read(items[0])
                note = "" if read else "; the statement was not sent"
                shell.write([f"ERROR: canceled{note}"], to_err=True)
            return _OK
        for item in items:
            status = shell.run_item(item)  # a Ctrl-C during a statement ends it as an error
            if status == _QUIT:
                return _QUIT
            if status == _ERROR:
                break  # the rest of this input depended on what failed
    except KeyboardInterrupt:  # between statements, or while one's result was printed
        shell.out.flush()
        shell.write(["ERROR: canceled"], to_err=True)
    finally:
        ctrl_c.editing()
    return _OK


# --- command line ----------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url_argument(parser)
    parser.add_argument(
        "-e",
        "--execute",
        action="append",
        metavar="SQL",
        help="run these statements and exit (repeatable; exit 1 on the first error)",
    )
    parser.add_argument(
        "--history",
        metavar="FILE",
        default=HISTORY_PATH_DEFAULT,
        help="the shell's history file (default %(default)s)",
    )
    add_timeout_argument(parser, "give up on a statement")


def add_sql_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sql`` command to `subparsers` (sets ``func=run_sql``); returns its parser."""
    parser = subparsers.add_parser(
        "sql",
        help="run SQL: an interactive shell, or -e / piped statements",
        description="Run SQL against a node's client port (--sql-addr): an interactive shell, "
        "or the statements given with -e or on stdin.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_sql)
    return parser


def run_sql(args: argparse.Namespace) -> int:
    """Run the parsed ``sql`` command (module doc); returns the exit code."""
    try:
        connection = sqlclient.connect(args.url, timeout_s=args.timeout)
    except sqlclient.Error as exc:
        print(f"raftstore sql: error: {exc}", file=sys.stderr)
        return 2
    with connection:
        try:
            if args.execute:
                return run_statements(connection, args.execute, sys.stdout)
            if not sys.stdin.isatty():
                return run_statements(connection, [sys.stdin.read()], sys.stdout)
            return run_repl(connection, history_path=args.history)
        except KeyboardInterrupt:
            print("ERROR: interrupted", file=sys.stderr)
            return 130


class _OneLineParser(argparse.ArgumentParser):
    """A usage error is one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m raftstore.cli.sql_shell ...``: the ``sql`` command on its own."""
    parser = _OneLineParser(prog="raftstore sql", description="Run SQL against a raftstore node.")
    _add_arguments(parser)
    return run_sql(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
