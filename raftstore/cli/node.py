"""`raftstore node drain`: hand every lease a node serves to other nodes (before maintenance);
`raftstore node lease-transfer`: move one range's lease (and its lead) to a chosen node."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raftstore.cli.client_args import add_timeout_argument, add_url_argument
from raftstore.errors import RaftstoreError
from raftstore.kv import Client


def add_node_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("node", help="operate on one node: drain its leases, move a lease")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    drain = verbs.add_parser("drain", help="hand every lease the node serves to other nodes; the node keeps running "
                                          "and takes no lease until it restarts (SIGTERM drains the same way)")
    add_url_argument(drain)
    add_timeout_argument(drain)
    drain.set_defaults(func=run_drain)
    move = verbs.add_parser("lease-transfer", help="move a range's lease to another node (ask the node serving it)")
    add_url_argument(move)
    add_timeout_argument(move)
    move.add_argument("--range", dest="range_id", type=int, required=True, metavar="RANGE_ID")
    move.add_argument("--to", type=int, required=True, metavar="NODE_ID")
    move.set_defaults(func=run_lease_transfer)
    return parser


def run_drain(args: argparse.Namespace) -> int:
    try:
        with Client(args.url[:1], timeout_s=args.timeout) as client:   # one node: a retry elsewhere drains another
            left = client.drain()
    except RaftstoreError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    if left:
        print("node at %s still serves %d lease(s)" % (args.url[0], left), file=sys.stderr)
        return 1
    print("node at %s serves no lease" % args.url[0])
    return 0


def run_lease_transfer(args: argparse.Namespace) -> int:
    try:
        with Client(args.url[:1], timeout_s=args.timeout) as client:
            client.lease_transfer(args.range_id, args.to)
    except RaftstoreError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    print("moving the lease of r%d to n%d" % (args.range_id, args.to))
    return 0
