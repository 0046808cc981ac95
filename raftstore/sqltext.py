"""SQL text as PostgreSQL lexes it, without parsing it (pure): where statements end (at the
semicolons outside quotes, quoted identifiers, E'...' strings, dollar quotes and comments) and
what their first words are. Shared by the SQL shell (raftstore.cli.sql_shell), the client
(raftstore.sqlclient: whether a statement may be sent again) and the PostgreSQL port
(raftstore.server.pg_port: a simple Query's statements)."""

from __future__ import annotations

import re

_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def _end_of_quoted(text: str, start: int, quote: str, backslash_escapes: bool) -> int:
    """Index just past the quote closing the one at `start` (doubled quotes stay inside), or -1
    if the text ends first."""
    pos, end = start + 1, len(text)
    while pos < end:
        ch = text[pos]
        if backslash_escapes and ch == "\\":
            pos += 2
        elif ch == quote:
            if pos + 1 < end and text[pos + 1] == quote:
                pos += 2
            else:
                return pos + 1
        else:
            pos += 1
    return -1


def _end_of_block_comment(text: str, start: int) -> int:
    """Index just past the ``*/`` closing the ``/*`` at `start` (they nest), or -1."""
    depth, pos, end = 1, start + 2, len(text)
    while pos < end:
        if text.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif text.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return -1


class ScannedInput:
    """Input text cut into complete items and an unfinished rest.

    `items`: complete statements (text without the ending ``;``, leading comments kept) and,
    with `meta_commands`, meta commands (a line starting with ``\\`` where a statement could
    start), in order; `offsets`: where each item starts in `text`.
    `rest`: the text after the last complete item. `rest_has_code`: the rest holds more than
    whitespace and comments. `open_token`: the text ends inside a string, quoted identifier,
    dollar-quoted string or block comment.
    """

    def __init__(self, text: str, meta_commands: bool = True):
        self.meta_commands = meta_commands
        self.items: list[str] = []
        self.offsets: list[int] = []
        self.rest = ""
        self.rest_has_code = False
        self.open_token = False
        self._scan(text)

    @property
    def complete(self) -> bool:
        """True if nothing is pending: no unterminated statement, quote or comment."""
        return not self.rest_has_code and not self.open_token

    def _scan(self, text: str) -> None:
        start, pos, end = 0, 0, len(text)
        has_code = False
        while pos < end:
            ch = text[pos]
            if ch == ";":
                if has_code:
                    self._item(text, start, pos)
                start, pos, has_code = pos + 1, pos + 1, False
            elif ch.isspace():
                pos += 1
            elif text.startswith("--", pos):
                newline = text.find("\n", pos)
                pos = end if newline < 0 else newline + 1
            elif text.startswith("/*", pos):
                pos = _end_of_block_comment(text, pos)
                if pos < 0:
                    self._finish(text[start:], has_code, open_token=True)
                    return
            elif ch == "\\" and not has_code and self.meta_commands:
                newline = text.find("\n", pos)
                line_end = end if newline < 0 else newline
                self._item(text, pos, line_end)
                start = pos = line_end
            else:
                has_code = True
                closing = self._skip_token(text, pos)
                if closing < 0:
                    self._finish(text[start:], has_code, open_token=True)
                    return
                pos = closing
        self._finish(text[start:], has_code, open_token=False)

    def _item(self, text: str, start: int, end: int) -> None:
        item = text[start:end]
        self.items.append(item.strip())
        self.offsets.append(start + len(item) - len(item.lstrip()))

    @staticmethod
    def _skip_token(text: str, pos: int) -> int:
        """Index past the quoted token at `pos` (or past the one character there); -1 if the
        quoted token does not end."""
        ch = text[pos]
        if ch == "'":
            # E'...' strings take backslash escapes; the E must start a token of its own.
            escapes = (
                pos >= 1
                and text[pos - 1] in "eE"
                and (pos < 2 or not _is_ident_char(text[pos - 2]))
            )
            return _end_of_quoted(text, pos, "'", escapes)
        if ch == '"':
            return _end_of_quoted(text, pos, '"', False)
        if ch == "$" and (pos == 0 or not _is_ident_char(text[pos - 1])):
            match = _DOLLAR_TAG_RE.match(text, pos)
            if match is not None:  # $tag$ ... $tag$ (a $1 parameter never matches)
                closing = text.find(match.group(), match.end())
                return -1 if closing < 0 else closing + len(match.group())
        return pos + 1

    def _finish(self, rest: str, has_code: bool, *, open_token: bool) -> None:
        self.rest = rest.strip()
        self.rest_has_code = has_code
        self.open_token = open_token




def statements(text: str) -> list[tuple[int, str]]:
    """The statements of `text` with their offsets, a last one without its ``;`` included; no
    meta commands (a ``\\`` is just a character); statements of blanks and comments left out."""
    scanned = ScannedInput(text, meta_commands=False)
    found = list(zip(scanned.offsets, scanned.items))
    if scanned.rest_has_code or (scanned.open_token and scanned.rest):
        found.append((text.rindex(scanned.rest), scanned.rest))
    return found


_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_READ_KEYWORDS = frozenset({"SELECT", "SHOW", "EXPLAIN"})


def leading_keywords(sql: str, count: int = 2) -> list[str]:
    """The first `count` words of `sql`, upper-cased, skipping whitespace, ``--`` and ``/* */``
    comments and opening parentheses (fewer if the text ends, or reaches anything else first).
    """
    words: list[str] = []
    pos, end = 0, len(sql)
    while pos < end and len(words) < count:
        ch = sql[pos]
        if ch.isspace() or ch == "(":
            pos += 1
        elif sql.startswith("--", pos):
            newline = sql.find("\n", pos)
            pos = end if newline < 0 else newline + 1
        elif sql.startswith("/*", pos):
            pos = _end_of_block_comment(sql, pos)   # PostgreSQL block comments nest
            if pos < 0:
                break
        else:
            match = _WORD_RE.match(sql, pos)
            if match is None:
                break
            words.append(match.group().upper())
            pos = match.end()
    return words


def statement_is_read(sql: str) -> bool:
    """True if `sql` only reads, so that sending it twice is harmless: it starts with SELECT,
    SHOW or EXPLAIN (but not EXPLAIN ANALYZE, which runs the statement). Anything else, and
    anything unrecognised, counts as a write."""
    words = leading_keywords(sql, 2)
    if not words or words[0] not in _READ_KEYWORDS:
        return False
    return not (words[0] == "EXPLAIN" and len(words) > 1 and words[1] in ("ANALYZE", "ANALYSE"))
