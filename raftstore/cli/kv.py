"""``raftstore kv ...``: the key-value client from the shell.

Why a module of its own: the main CLI owns process management; this one only parses kv
arguments, calls `raftstore.kv.Client` and prints, so it can be tested against a fake server.

Output contract (scripts rely on it):

* put / delete: the commit timestamp (``<seconds>.<9-digit nanos>,<logical>``), exit 0. ``put
  KEY -`` reads the value from stdin, ``put KEY --file PATH`` from a file; a key and its value
  must fit in one command (``constants.command_bytes_max``, 512 KiB): a larger value is a usage
  error naming the limit.
* get: the value on stdout, exit 0; ``(not found)`` on stderr (stdout empty), exit 1.
  ``--max-staleness 10s`` makes get and scan bounded-staleness follower reads (the nearest
  replica answers if it has closed a timestamp at most that old, else the leaseholder);
  ``--as-of TS`` (a timestamp as put prints it) reads exactly there.
* cas: ``swapped`` exit 0, ``not swapped`` exit 1.
* scan: one ``key<TAB>value`` line per row, exit 0.
* split: ``split at KEY`` or, if a range already started at KEY, ``already a range boundary``;
  exit 0 either way (a retried split that did apply also answers the latter).
* an operating error: one line ``error: ...`` on stderr, and the exit code says which kind:
  3 unavailable (no node could serve or none could be reached; nothing was applied, retry
  later), 4 ambiguous (the write may have committed: read before writing again), 5 any other
  (a refused request, a protocol mismatch, an internal error). Usage errors are argparse's:
  usage and ``error: ...`` on stderr, exit 2.

Keys and values are UTF-8 text by default (undecodable bytes printed as backslash escapes);
``--hex`` takes and prints them as hex instead, for binary data or data holding tabs/newlines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raftstore import constants
from raftstore.cli.client_args import add_timeout_argument, add_url_argument
from raftstore.durations import parse_interval_s
from raftstore.errors import AmbiguousCommitError, RaftstoreError, UnavailableError
from raftstore.kv import Client
from hlc.timestamp import Timestamp

# Exit codes (documented in the module doc and the README).
EXIT_OK = 0
EXIT_NO = 1            # get: not found; cas: not swapped
EXIT_USAGE = 2         # bad arguments (argparse's own code too)
EXIT_UNAVAILABLE = 3   # no node could serve, or none could be reached: nothing was applied
EXIT_AMBIGUOUS = 4     # a write may or may not have applied
EXIT_ERROR = 5         # any other operating error (refused request, protocol, internal)


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


def _duration_type(text: str) -> float:
    """A staleness bound: ``10s``, ``500ms``, ``2m``, ``1h``, ``1m30s`` or plain seconds
    (raftstore.durations)."""
    seconds = parse_interval_s(text)
    if seconds is None or not 0.001 <= seconds <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(
            f"--max-staleness must be a duration from 1ms to 7 days like 10s, 500ms or 2m, got {text!r}")
    return seconds


def _timestamp_type(text: str) -> Timestamp:
    try:
        return Timestamp.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--as-of must be a timestamp as put prints it "
                                         f"(<seconds>.<nanos>,<logical>): {exc}") from None


def _staleness_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--max-staleness", type=_duration_type, metavar="DURATION", default=None,
                       help="a bounded-staleness follower read: the nearest replica answers if it has "
                            "closed a timestamp at most DURATION old (e.g. 10s), else the leaseholder")
    group.add_argument("--as-of", type=_timestamp_type, metavar="TS", default=None,
                       help="read exactly at TS (as put prints it), from any replica that has closed it")


_LIMIT_TEXT = f"{constants.command_bytes_max // 1024} KiB ({constants.command_bytes_max} bytes)"


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
        add_url_argument(parser)
        parser.add_argument(
            "--hex", action="store_true", help="keys and values are given and printed as hex"
        )
        add_timeout_argument(parser)
        parser.set_defaults(func=run_kv, kv_parser=parser)
        return parser

    put = leaf(
        "put",
        "set KEY to VALUE ('-': read it from stdin; or --file PATH); prints the commit "
        f"timestamp. A key and its value must fit in one command of {_LIMIT_TEXT}",
        usage="%(prog)s --url HOST:PORT[,...] [--hex] KEY (VALUE | - | --file PATH)",
    )
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?", default=None)
    put.add_argument(
        "--file", metavar="PATH", help="read the value from this file (its bytes as they are)"
    )

    get = leaf("get", "print the value of KEY ('(not found)' on stderr and exit 1 if it has none)")
    get.add_argument("key", metavar="KEY")
    _staleness_arguments(get)

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
    _staleness_arguments(scan)

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
        return EXIT_USAGE
    except RaftstoreError as exc:
        message = _one_line(str(exc))
        if exc.ambiguous and "may" not in message:
            message += " (the write may have committed)"
        print(f"error: {message}", file=sys.stderr)
        if exc.ambiguous or isinstance(exc, AmbiguousCommitError):
            return EXIT_AMBIGUOUS
        if isinstance(exc, UnavailableError):
            return EXIT_UNAVAILABLE
        return EXIT_ERROR


def _read_value(args: argparse.Namespace) -> bytes:
    """The value of ``put``: VALUE, stdin for ``-`` or the file of ``--file``; at most one
    command's worth is read (a larger value is refused naming the limit)."""
    if args.file is not None and args.value is not None:
        raise _UsageError("give VALUE or --file PATH, not both")
    if args.file is None and args.value is None:
        raise _UsageError("put needs KEY VALUE (or KEY - to read the value from stdin, or --file PATH)")
    if args.file is None and args.value != "-":
        return _decode_arg(args, "VALUE", args.value)
    source = "stdin" if args.file is None else args.file
    limit = constants.command_bytes_max
    try:
        if args.file is None:
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(args.file, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise _UsageError(f"cannot read the value from {source}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _UsageError(
            f"the value from {source} is larger than one command: a key and its value must "
            f"fit in {_LIMIT_TEXT}; store a larger value in pieces under several keys"
        )
    if args.hex:
        return _decode_arg(args, "VALUE", data.decode("ascii", "replace").strip())
    return data


def _run(args: argparse.Namespace) -> int:
    op = args.kv_op
    # Decode every operand before connecting, so a usage error never touches the network.
    if op == "scan":
        start = _decode_arg(args, "START", args.start)
        end = None if args.end is None else _decode_arg(args, "END", args.end)
    else:
        key = _decode_arg(args, "KEY", args.key)
    if op == "put":
        value = _read_value(args)
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
            found = client.get(key, max_staleness=args.max_staleness, read_ts=args.as_of)
            if found is None:
                print("(not found)", file=sys.stderr)  # stdout stays empty: no value to mistake
                return EXIT_NO
            print(_show(args, found))
            return EXIT_OK
        if op == "cas":
            swapped = client.cas(key, expected, new)
            print("swapped" if swapped else "not swapped")
            return EXIT_OK if swapped else EXIT_NO
        if op == "scan":
            for row_key, row_value in client.scan(start, end, limit=args.limit, max_staleness=args.max_staleness,
                                                  read_ts=args.as_of):
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
