"""The ``--url`` and ``--timeout`` options of every command that talks to a node as a client
(``kv``, ``status``, ``sql``): one definition, so they parse and explain themselves alike.

``--url`` takes ``HOST:PORT[,HOST:PORT...]`` or the same as a URL,
``raftstore://HOST:PORT[,HOST:PORT...]``; any other scheme (``http://``, ``postgresql://``) is
a usage error when parsing, naming what is accepted, never a failed DNS lookup later.
"""

from __future__ import annotations

import argparse

from raftstore import constants
from raftstore.kv import URL_SCHEME, parse_addresses, split_addresses

URL_METAVAR = "HOST:PORT[,HOST:PORT...]"


def url_type(text: str) -> list[str]:
    """argparse type for ``--url``: the list of ``HOST:PORT`` strs, checked."""
    items = split_addresses(text)
    try:
        parse_addresses(items)
    except ValueError as exc:
        if f"{URL_SCHEME}://" in str(exc):   # it already says what is accepted
            raise argparse.ArgumentTypeError(str(exc)) from None
        raise argparse.ArgumentTypeError(
            f"{exc}; --url takes {URL_METAVAR} or {URL_SCHEME}://{URL_METAVAR}, "
            "e.g. 127.0.0.1:26257"
        ) from None
    return items


def timeout_type(text: str) -> float:
    """argparse type for ``--timeout``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"--timeout must be a positive number of seconds, got {text!r}"
        )
    return value


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        required=True,
        type=url_type,
        metavar=URL_METAVAR,
        help="client addresses (--sql-addr) of one or more nodes, tried in order; "
        f"also as {URL_SCHEME}://{URL_METAVAR}",
    )


def add_timeout_argument(parser: argparse.ArgumentParser, what: str = "give up") -> None:
    parser.add_argument(
        "--timeout",
        type=timeout_type,
        default=constants.client_timeout_s_default,
        metavar="SECONDS",
        help=f"{what} after this long, retries included (default %(default)s)",
    )
