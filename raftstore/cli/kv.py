"""``raftstore kv ...``: the key-value client from the shell.

Why a module of its own: the main CLI owns process management; this one only parses kv
arguments, calls `raftstore.kv.Client` and prints, so it can be tested against a fake server.

Output contract (scripts rely on it):

* put / delete: the commit timestamp (``<seconds>.<9-digit nanos>,<logical>``), exit 0.
* get: the value, exit 0; ``(not found)``, exit 1.
* cas: ``swapped`` exit 0, ``not swapped`` exit 1.
* scan: one ``key<TAB>value`` line per row, exit 0.
* split: ``split at KEY`` or, if a range already started at KEY, ``already a range boundary``;
  exit 0 either way (a retried split that did apply also answers the latter).
* any operating error: one line ``error: ...`` on stderr, exit 2 (an ambiguous write says it may
  have committed). Usage errors are argparse's: usage and ``error: ...`` on stderr, exit 2.

Keys and values are UTF-8 text by default (undecodable bytes printed as backslash escapes);
``--hex`` takes and prints them as hex instead, for binary data or data holding tabs/newlines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raftstore import constants
from raftstore.errors import RaftstoreError
from raftstore.kv import Client, parse_address


def _url_type(text: str) -> list[str]:
    """argparse type for ``--url HOST:PORT[,HOST:PORT...]``."""
    items = text.split(",")
    for item in items:
        try:
            parse_address(item.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{exc}; --url takes HOST:PORT[,HOST:PORT...], e.g. 127.0.0.1:26257"
            ) from None
    return [item.strip() for item in items]


def _timeout_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"--timeout must be a positive number of seconds, got {text!r}"
        )
    return value


def _limit_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= constants.scan_rows_max:
        raise argparse.ArgumentTypeError(
            f"--limit must be an integer in [1, {constants.scan_rows_max}], got {text!r}"
        )
    return value


def add_kv_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``kv`` command (with put/get/delete/cas/scan/split) to `subparsers`; every leaf
    sets ``func=run_kv``. Returns the ``kv`` parser."""
    kv = subparsers.add_parser(
        "kv",
        help="read and write keys through a node's client port",
        description="Read and write raw keys through a node's client port (--sql-addr).",
    )
    kv.set_defaults(func=run_kv)
    commands = kv.add_subparsers(dest="kv_op", metavar="COMMAND", required=True)

    def leaf(name: str, help_text: str, usage: str | None = None) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text, usage=usage)
        parser.add_argument(
            "--url",
            required=True,
            type=_url_type,
            metavar="HOST:PORT[,HOST:PORT...]",
            help="client addresses of one or more nodes, tried in order",
        )
        parser.add_argument(
            "--hex", action="store_true", help="keys and values are given and printed as hex"
        )
        parser.add_argument(
            "--timeout",
            type=_timeout_type,
            default=constants.client_timeout_s_default,
            metavar="SECONDS",
            help="give up after this long, retries included (default %(default)s)",
        )
        parser.set_defaults(func=run_kv, kv_parser=parser)
        return parser

    put = leaf("put", "set KEY to VALUE; prints the commit timestamp")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE")

    get = leaf("get", "print the value of KEY (exit 1 if not found)")
    get.add_argument("key", metavar="KEY")

    delete = leaf("delete", "delete KEY; prints the commit timestamp")
    delete.add_argument("key", metavar="KEY")

    cas = leaf(
        "cas",
        "set KEY to NEW if its value is EXPECTED (or, with --absent, if it has none); "
        "exit 0 if swapped, 1 if not",
        usage="%(prog)s --url HOST:PORT[,...] [--hex] KEY EXPECTED NEW\n"
        "       %(prog)s --url HOST:PORT[,...] [--hex] --absent KEY NEW",
    )
    cas.add_argument(
        "--absent", action="store_true", help="swap only if KEY has no value (omit EXPECTED)"
    )
    cas.add_argument("key", metavar="KEY")
    cas.add_argument("expected", metavar="EXPECTED", nargs="?", default=None)
    cas.add_argument("new", metavar="NEW")

    scan = leaf("scan", "print key<TAB>value for keys in [START, END) (END omitted: to the end)")
    scan.add_argument("start", metavar="START")
    scan.add_argument("end", metavar="END", nargs="?", default=None)
    scan.add_argument(
        "--limit",
        type=_limit_type,
        default=1000,
        metavar="N",
        help="at most N rows (default %(default)s)",
    )

    split = leaf("split", "split the range holding KEY so that a new range starts at KEY")
    split.add_argument("key", metavar="KEY")
    return kv


class _UsageError(Exception):
    pass


def _decode_arg(args: argparse.Namespace, name: str, text: str) -> bytes:
    if args.hex:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise _UsageError(f"{name} {text!r} is not valid hex (--hex)") from None
    # argv was decoded with surrogateescape, so this gives back the exact bytes typed.
    return text.encode("utf-8", "surrogateescape")


def _show(args: argparse.Namespace, data: bytes) -> str:
    if args.hex:
        return data.hex()
    return data.decode("utf-8", "backslashreplace")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_kv(args: argparse.Namespace) -> int:
    """Run the parsed kv command; print its result. Returns the exit code (see module doc)."""
    try:
        return _run(args)
    except _UsageError as exc:
        parser = getattr(args, "kv_parser", None)
        if parser is not None:
            parser.error(str(exc))  # exits 2 with usage, like any other argument error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RaftstoreError as exc:
        message = _one_line(str(exc))
        if exc.ambiguous and "may" not in message:
            message += " (the write may have committed)"
        print(f"error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    op = args.kv_op
    # Decode every operand before connecting, so a usage error never touches the network.
    if op == "scan":
        start = _decode_arg(args, "START", args.start)
        end = None if args.end is None else _decode_arg(args, "END", args.end)
    else:
        key = _decode_arg(args, "KEY", args.key)
    if op == "put":
        value = _decode_arg(args, "VALUE", args.value)
    elif op == "cas":
        if args.absent and args.expected is not None:
            raise _UsageError("--absent means KEY must have no value: give KEY NEW, not EXPECTED")
        if not args.absent and args.expected is None:
            raise _UsageError("cas needs KEY EXPECTED NEW (or --absent KEY NEW)")
        expected = None if args.absent else _decode_arg(args, "EXPECTED", args.expected)
        new = _decode_arg(args, "NEW", args.new)

    with Client(args.url, timeout_s=args.timeout) as client:
        if op == "put":
            print(client.put(key, value))
            return 0
        if op == "delete":
            print(client.delete(key))
            return 0
        if op == "get":
            found = client.get(key)
            if found is None:
                print("(not found)")
                return 1
            print(_show(args, found))
            return 0
        if op == "cas":
            swapped = client.cas(key, expected, new)
            print("swapped" if swapped else "not swapped")
            return 0 if swapped else 1
        if op == "scan":
            for row_key, row_value in client.scan(start, end, limit=args.limit):
                print(f"{_show(args, row_key)}\t{_show(args, row_value)}")
            return 0
        if op == "split":
            result = client.split(key)
            if result.get("already") is True:
                print("already a range boundary")
            else:
                print(f"split at {_show(args, key)}")
            return 0
    raise AssertionError(f"unknown kv command {op!r}")  # argparse only yields the ones above
