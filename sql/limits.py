"""Statement limits: a statement too large or too deep is refused before the CPU is spent on it.

Why: a 1 MB ``SELECT 1+1+...+1`` (500,000 terms) used to cost about 11 s of CPU - sqlglot's
tokenizer 3.5 s, its parser 4 s, our whitelist walk and the planner's walks 2 s - and then
failed with RecursionError in the expression compiler (sql/expr.py compiles a left-deep tree
recursively), answered as an internal error while the node's other clients waited. Every cost
of the SQL front end grows with the number of tokens (about 10 us each, tokenize + parse +
plan), and every recursive stage with a depth. So each limit is checked before the stage it
protects, by something much cheaper than that stage:

  text    bytes; then a lower bound on the tokens (`token_estimate`,       before sqlglot's tokenizer
          one C-speed regex pass)
  tokens  the exact count                                                    before sqlglot's parser
  parser  nesting: parentheses, calls, CASE, IN lists, NOT, unary minus     during the parse, as it
          inside one another (RaftstoreParser counts its own recursion;      descends
          <= 24 frames a level)
  tree    depth of the syntax tree, a chain ``a OR b OR ...`` or ``1+2+...`` before the whitelist
          one level per operator (iterative walk)                            and the planner

So the most a refused statement costs is tokenizing and parsing just under the token limit
(about 1 s), as much as the largest statement accepted.

The values live in sql/constants.py (read at each check). The depths keep the parser (<= 24
frames a nesting level) and expr.py (<= 3 frames a tree level) far inside Python's recursion
limit of 1000 frames, so no stage raises RecursionError; should one all the same (a caller
already deep in its stack), sql/dialect.py and sql/execute.py answer program_limit_exceeded too.

A statement over a limit is SQLError ``program_limit_exceeded`` (SQLSTATE 54000), whose message
names the limit, its value and what the statement has.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokens import Token

from sql import constants
from sql.errors import SQLError

CODE = "program_limit_exceeded"


def check_text(sql: str) -> None:
    """Refuse `sql` longer than SQL_STATEMENT_BYTES_MAX (UTF-8) or with more tokens than
    SQL_STATEMENT_TOKENS_MAX by `token_estimate`. Costs one pass over the text in C."""
    bytes_max = constants.SQL_STATEMENT_BYTES_MAX
    if len(sql) > bytes_max or len(sql) * 4 > bytes_max:   # else it surely fits: skip the encode
        size = len(sql.encode("utf-8", "surrogatepass"))
        if size > bytes_max:
            raise SQLError(CODE, f"statement too large: {size} bytes of SQL text, more than the "
                           f"limit of {bytes_max} (SQL_STATEMENT_BYTES_MAX); {_SPLIT_HINT}")
    estimate = token_estimate(sql)
    tokens_max = constants.SQL_STATEMENT_TOKENS_MAX
    if estimate is not None and estimate > tokens_max:
        raise SQLError(CODE, f"statement too large: at least {estimate} tokens, more than the limit "
                       f"of {tokens_max} (SQL_STATEMENT_TOKENS_MAX); {_SPLIT_HINT}")


def check_tokens(tokens: Sequence[Token], sql: str) -> None:
    """Refuse more than SQL_STATEMENT_TOKENS_MAX `tokens` (the tokenizer's, before the parse)."""
    tokens_max = constants.SQL_STATEMENT_TOKENS_MAX
    if len(tokens) > tokens_max:
        raise SQLError(CODE, f"statement too large: {len(tokens)} tokens, more than the limit of "
                       f"{tokens_max} (SQL_STATEMENT_TOKENS_MAX); {_SPLIT_HINT}",
                       tokens[tokens_max].start, sql)


def nesting_exceeded(level: int, token: Token | None, sql: str) -> SQLError:
    """The error of a parse that reached nesting `level` at `token` (sql/dialect.py raises it
    there: the parse goes no deeper, so `level` is the limit + 1, not the statement's depth)."""
    return SQLError(CODE, f"statement nested too deeply: it reaches level {level} of parentheses, "
                    "function calls, CASE, NOT and unary minus inside one another here, more than the "
                    f"limit of {constants.SQL_NESTING_DEPTH_MAX} (SQL_NESTING_DEPTH_MAX)",
                    token.start if token else None, sql)


def check_tree(tree: exp.Expr, sql: str) -> None:
    """Refuse a syntax tree deeper than SQL_EXPRESSION_DEPTH_MAX levels (the statement node is
    level 1). Iterative; it walks the whole tree (its size is bounded by the token count) to say
    how deep it is, and points at the first node below the limit, down the left spines first
    (where a chain ``a + b + c ...`` grows)."""
    depth_max = constants.SQL_EXPRESSION_DEPTH_MAX
    deepest, first_too_deep = 0, None
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if depth > depth_max and first_too_deep is None:
                first_too_deep = node
        stack.extend((child, depth + 1) for child in reversed(list(node.iter_expressions())))
    if first_too_deep is not None:
        raise SQLError(
            CODE, f"expression too deep: its syntax tree is {deepest} levels deep, more than the "
            f"limit of {depth_max} (SQL_EXPRESSION_DEPTH_MAX); a chain such as a OR b OR ... or "
            "1 + 2 + ... takes one level per operator: use IN (...) for a list of values, or split "
            "the expression", _start(first_too_deep), sql)


def recursion_error(stage: str) -> SQLError:
    """The answer to a RecursionError that a stage met despite the limits (a caller already
    deep in its stack): still program_limit_exceeded, never an internal error."""
    return SQLError(CODE, f"statement too complex: {stage} ran out of stack (Python's recursion "
                    "limit); nest it less deeply or split it")


_SPLIT_HINT = "split it into smaller statements (fewer rows per INSERT, a shorter IN list)"


def _start(node: exp.Expr) -> int | None:
    """A source offset at or near `node` without walking its (perhaps huge) subtree: its own
    recorded start, else the first one down its leftmost descendants."""
    while node is not None:
        if node._meta and "start" in node._meta:
            return node.meta["start"]
        node = next(node.iter_expressions(), None)
    return None


# --- the token estimate ----------------------------------------------------------------------


def _lexeme_re() -> re.Pattern:
    """Lexemes of the text, each covering at least one of the tokenizer's tokens: comments (not
    tokens; group 1), quoted strings and identifiers with the tokenizer's escape rules, the
    tokenizer's keywords that span several words or symbols, runs of word characters, runs of
    operator characters, and single brackets and separators."""
    simple = re.compile(r"[\w$.]+|[^\w\s]+")
    spanning = sorted((k for k in Postgres.Tokenizer.KEYWORDS if len(simple.findall(k)) > 1
                       or " " in k), key=len, reverse=True)
    keywords = "|".join(r"\s+".join(map(re.escape, k.split())) + (r"(?!\w)" if " " in k else "")
                        for k in spanning)
    return re.compile(
        r"(--[^\n]*|/\*.*?(?:\*/|\Z)|\{#.*?(?:#\}|\Z))"  # a comment
        r"|[eE]'(?:[^'\\]|''|\\.)*'?"              # E'...': backslash escapes
        r"|(?:[xXbBnN]|[uU]&)?'(?:[^']|'')*'?"     # '...', x'..', b'..', n'..', U&'..'
        r'|"(?:[^"]|"")*"?'                        # "identifier"
        rf"|(?i:{keywords})"                       # ORDER BY, DOUBLE PRECISION, USER-DEFINED
        r"|0[xX]\w+|\d[\d.]*(?:[eE](?:[+-]\d+|\d*)[\d.]*)?"  # a number: 0x1f, 1.5, 1.5e-3 (1_000: 2 tokens)
        r"|[^\W\d][\w$]*"                            # a word
        r"|(?:(?!--|/\*|\{#)[^\w\s'\"$.()\[\],;])+"    # an operator: <=, ::, ||, ->>
        r"|[()\[\],;.$]",
        re.DOTALL,
    )


_LEXEME_RE = _lexeme_re()
_OPERATOR_THEN_COMMENT_RE = re.compile(r"[^\w\s'\"$.()\[\],;](?:--|/\*|\{#)")


def token_estimate(sql: str) -> int | None:
    """A lower bound on the number of tokens sqlglot's tokenizer makes of `sql` (so a statement
    it refuses, the exact count would refuse too), or None when it cannot tell (a comment nested
    in a comment, an operator character just before ``--``, ``/*`` or ``{#``). One regex pass in C, about 50 times cheaper than tokenizing."""
    found = _LEXEME_RE.findall(sql)   # each lexeme's comment group: "" unless it is a comment
    if ("--" in sql or "/*" in sql or "{#" in sql) and _OPERATOR_THEN_COMMENT_RE.search(sql):
        return None   # |/*, #--: the tokenizer may read an operator |/ or #- there, not a comment
    if "/*" in sql and any(c.startswith("/*") and "/*" in c[2:] for c in found if c):
        return None   # a comment nested in a comment
    return found.count("")
