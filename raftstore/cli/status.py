"""``raftstore status``: one node's view of the cluster, as a nodes table and a ranges table.

Why a module of its own: the main CLI owns process management; this one asks one node for its
``status`` (through `raftstore.kv.Client`) and renders it, so it can be tested against a fake
server. Turning the status map into table rows (`status_rows`, `render_span`, `render_size`,
...) is pure; only `run_status` opens a connection and prints.

What the tables can and cannot say, since they are one node's view:

* nodes: every member. ``up`` means the node that answered, or a peer it has a link to right
  now; ``down`` means it has no link to that member, which is not proof that the process is
  dead (a partition looks the same).
* ranges: only the ranges the answering node holds a replica of, each with the leader that
  node believes in (stale for up to an election), and the last consistency check of the range
  that node ran (raftstore.kvserver.consistency; ``-`` if it ran none since it started).
  ``--check-consistency`` has it run one of every range first.

Output contract: the two tables, exit 0; with ``--json`` the status map as JSON instead (bytes
as strings with backslash escapes, see `escape_bytes`), exit 0. With ``--check-consistency``,
exit 1 if any range's check found it inconsistent or incomplete (the ranges table says which
and why; an inconsistent range is also named on stderr). Any operating error or a status map
this CLI cannot read: one line ``error: ...`` on stderr, exit 2. A bad ``--url`` is a usage
error (exit 2) when parsing.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from raftstore import constants
from raftstore.cli.client_args import add_timeout_argument, add_url_argument
from raftstore.errors import RaftstoreError
from raftstore.kv import Client
from raftstore.keyspace import META_START, escape_bytes, render_key


# --- rendering (pure) -------------------------------------------------------------------------


def render_span(start: bytes | None, end: bytes | None) -> str:
    """A range's span ``[start, end)`` (raftstore.keyspace.render_key, as SQL's SHOW RANGES
    shows it); the meta range is ``meta`` and a replica that does not know its descriptor yet
    is ``?``."""
    if start is None:
        return "?"
    if start == META_START:
        return "meta"
    return f"[{render_key(start, is_end=False)}, {render_key(end, is_end=True)})"


def render_size(size_bytes: int | None) -> str:
    """Bytes in binary units with one decimal (``512 B``, ``1.5 KiB``, ``8.0 MiB``); None is
    ``-`` (size not measured yet)."""
    if size_bytes is None:
        return "-"
    if size_bytes < 1024:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class NodeRow:
    node_id: int
    region: str
    address: str
    up: bool
    answered: bool      # the node that answered this status
    clock: str = ""     # its clock offset as measured by the node that answered, or why it stopped


@dataclass(frozen=True)
class RangeRow:
    range_id: int
    span: str
    replicas: str       # "1 us-east1, 2 europe-west1"
    leader: str         # "n1 (us-east1)" or "none"
    size: str
    applied_index: str
    last_check: str = "-"   # "consistent at 57", "INCONSISTENT at 57: n3 differs ...", ...
    lease: str = "-"         # "n1 #3" (holder, seq) / "-" (none yet)
    home: str = "-"          # the range's home region (its table's, else the primary region) / "-" (none)


def _render_lease(lease, where: str) -> str:
    """A range's lease as the answering node applied it: its holder and seq (``n2 #4``)."""
    if lease is None:
        return "-"
    _expect(isinstance(lease, dict) and _is_int(lease.get("holder")) and _is_int(lease.get("seq")),
            f"{where}: lease must be a map with holder and seq")
    return "n%d #%d" % (lease["holder"], lease["seq"])


class StatusFormatError(ValueError):
    """The status map does not have the shape this CLI reads (an older or newer server)."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise StatusFormatError(f"the node's status is not in a form this CLI reads: {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _node_id(value: Any, what: str) -> int:
    # Member ids are map keys, hence strs on the wire; everywhere else they are ints.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    _expect(_is_int(value), f"{what} must be a node id, got {value!r}")
    return value


def _clock_cells(clock: Any, self_id: int) -> dict[int, str]:
    """The clock column: each peer's offset from the answering node (theirs minus ours, with its
    uncertainty), and for the answering node whether it serves. Absent from older servers."""
    if clock is None:
        return {}
    _expect(isinstance(clock, dict), "clock must be a map")
    offsets = clock.get("offsets") or {}
    _expect(isinstance(offsets, dict), "clock.offsets must be a map")
    cells = {self_id: "ok" if clock.get("serving", True) else "NOT SERVING: %s" % clock.get("reason")}
    for key, m in offsets.items():
        _expect(isinstance(m, dict) and isinstance(m.get("offset_ms"), (int, float))
                and isinstance(m.get("uncertainty_ms"), (int, float)), f"clock.offsets[{key!r}] must be a measurement")
        cells[_node_id(key, "a clock.offsets key")] = "%+.1f ms ± %.1f%s" % (
            m["offset_ms"], m["uncertainty_ms"], " (beyond max offset)" if m.get("far") else "")
    return cells


def render_check(check: Any, where: str) -> str:
    """The last-check cell: ``-`` for none, ``consistent at <index>``, else the status in
    capitals (for inconsistent) or as is, the index if any, and the detail."""
    if check is None:
        return "-"
    _expect(isinstance(check, dict), f"{where}: last_check must be a map")
    status, index, detail = check.get("status"), check.get("index"), check.get("detail")
    _expect(isinstance(status, str) and isinstance(detail, str), f"{where}: last_check needs status and detail")
    _expect(index is None or _is_int(index), f"{where}: last_check.index must be an int")
    at = "" if index is None else f" at {index}"
    if status == "consistent":
        return f"consistent{at}"
    return f"{status.upper() if status == 'inconsistent' else status}{at}: {detail}"


def status_rows(status: Any) -> tuple[list[NodeRow], list[RangeRow]]:
    """The nodes table (by node id) and the ranges table (in key order) for a status map.

    The map comes from the network: anything it lacks or holds in an unexpected type raises
    StatusFormatError naming it, never an assert or a KeyError.
    """
    _expect(isinstance(status, dict), f"expected a map, got {type(status).__name__}")
    self_id = _node_id(status.get("node_id"), "node_id")
    self_region = status.get("region")
    _expect(isinstance(self_region, str), "region must be a str")
    members = status.get("members") or {}
    _expect(isinstance(members, dict), "members must be a map")
    connected = status.get("connected") or []
    _expect(isinstance(connected, list), "connected must be a list")
    up = {self_id} | {_node_id(peer, "connected") for peer in connected}

    regions: dict[int, str] = {}
    addresses: dict[int, str] = {}
    for key, info in members.items():
        member = _node_id(key, "a members key")
        _expect(isinstance(info, dict), f"members[{key!r}] must be a map")
        region, address = info.get("region"), info.get("addr")
        _expect(isinstance(region, str), f"members[{key!r}].region must be a str")
        _expect(isinstance(address, str), f"members[{key!r}].addr must be a str")
        regions[member], addresses[member] = region, address
    regions.setdefault(self_id, self_region)  # not formed yet: members is empty
    clocks = _clock_cells(status.get("clock"), self_id)

    nodes = [
        NodeRow(
            node_id=node,
            region=regions[node],
            address=addresses.get(node, "?"),
            up=node in up,
            answered=node == self_id,
            clock=clocks.get(node, ""),
        )
        for node in sorted(regions)
    ]

    raw_ranges = status.get("ranges") or []
    _expect(isinstance(raw_ranges, list), "ranges must be a list")
    keyed = []
    for item in raw_ranges:
        _expect(isinstance(item, dict), "each range must be a map")
        range_id = item.get("range_id")
        _expect(_is_int(range_id), f"range_id must be an int, got {range_id!r}")
        where = f"range {range_id}"
        start, end = item.get("start"), item.get("end")
        _expect(start is None or isinstance(start, bytes), f"{where}: start must be bytes")
        _expect(end is None or isinstance(end, bytes), f"{where}: end must be bytes or nil")
        replicas = item.get("replicas") or []
        _expect(isinstance(replicas, list), f"{where}: replicas must be a list")
        replicas = [_node_id(r, f"{where}: a replica") for r in replicas]
        leader = item.get("leader")
        leader = None if leader is None else _node_id(leader, f"{where}: leader")
        size = item.get("bytes")
        _expect(size is None or (_is_int(size) and size >= 0), f"{where}: bytes must be >= 0")
        applied = item.get("applied_index")
        _expect(applied is None or _is_int(applied), f"{where}: applied_index must be an int")
        row = RangeRow(
            range_id=range_id,
            span=render_span(start, end),
            replicas=", ".join(f"{r} {regions.get(r, '?')}" for r in sorted(replicas)) or "-",
            leader="none" if leader is None else f"n{leader} ({regions.get(leader, '?')})",
            size=render_size(size),
            applied_index="-" if applied is None else str(applied),
            last_check=render_check(item.get("last_check"), where),
            lease=_render_lease(item.get("lease"), where),
            home=_render_home(item.get("home"), where),
        )
        keyed.append(((start is None, start or b"", range_id), row))
    ranges = [row for _, row in sorted(keyed, key=lambda pair: pair[0])]
    return nodes, ranges


def _render_home(home, where: str) -> str:
    _expect(home is None or isinstance(home, str), f"{where}: home must be a region name or nil")
    return home or "-"


def render_totals(status: Any) -> list[str]:
    """The node's running totals in words (what its /metrics exports): one line for Raft and
    the loop, one for the client requests it answered. Nothing for a server that sends none."""
    totals = status.get("totals") if isinstance(status, dict) else None
    lines = []
    if isinstance(totals, dict) and isinstance(totals.get("raft"), dict):
        raft, proposals, router = totals["raft"], totals.get("proposals") or {}, totals.get("router") or {}
        lines.append(
            "n%s: %s ranges, leading %s; proposals %s here, %s forwarded, %s for peers; %s entries applied; "
            "%s elections started, %s leader changes; snapshots %s sent, %s received; router %s lookups, "
            "%s redirects; %s evaluation misses; %s loop stalls (longest %.1f ms)" % (
                status.get("node_id", "?"), totals.get("ranges"), totals.get("leading"), proposals.get("here", 0),
                proposals.get("forwarded", 0), proposals.get("for_peers", 0), raft.get("entries_applied"),
                raft.get("elections_started"), raft.get("leader_changes"), raft.get("snapshots_sent"),
                raft.get("snapshots_received"), router.get("lookup", 0), router.get("redirect", 0),
                totals.get("evaluation_misses"), totals.get("loop_stalls"),
                1000 * float(totals.get("loop_busy_max_s") or 0)))
    requests = status.get("requests") if isinstance(status, dict) else None
    if isinstance(requests, dict):
        parts = []
        for kind in ("kv", "sql"):
            by_op = requests.get(kind)
            if isinstance(by_op, dict):
                for op, outcomes in sorted(by_op.items()):
                    if isinstance(outcomes, dict):
                        parts.append("%s %s %s" % (kind, op, ", ".join(
                            "%s %s" % (n, outcome) for outcome, n in sorted(outcomes.items()))))
        lines.append("requests answered: " + ("; ".join(parts) if parts else "none yet"))
    return lines


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return escape_bytes(value)
    if isinstance(value, dict):
        return {
            escape_bytes(k) if isinstance(k, bytes) else k: _jsonable(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def status_json(status: Any) -> str:
    """The status map as indented JSON; bytes (values and map keys) become `escape_bytes`
    strings, so ``b"\\x01"`` prints as ``"\\\\x01"``."""
    return json.dumps(_jsonable(status), indent=2, ensure_ascii=False)


# --- command (edge: network and terminal) -------------------------------------------------------


def add_status_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``status`` command to `subparsers` (``func=run_status``); returns its parser."""
    parser = subparsers.add_parser(
        "status",
        help="show the nodes and ranges as one node sees them",
        description="Ask one node (the first of --url that answers) for its view of the "
        "cluster: members up or down, and the ranges it holds with their leaders.",
    )
    add_url_argument(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the raw status map as JSON instead"
    )
    parser.add_argument(
        "--check-consistency",
        action="store_true",
        help="first run a consistency check of every range (every replica's checksum at one log "
        "index); exit 1 unless every range is consistent",
    )
    add_timeout_argument(parser)
    parser.set_defaults(func=run_status)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_status(args: argparse.Namespace) -> int:
    """Fetch and print the status (see module doc); returns the exit code."""
    client = Client(args.url, timeout_s=args.timeout)   # --url was checked when parsing
    checked: list[dict] | None = None
    try:
        with client:
            if getattr(args, "check_consistency", False):
                # Run on the node that answers the status below: its table shows these results.
                checked = client.check_consistency(timeout_s=max(args.timeout, constants.consistency_call_timeout_s))
            status = client.status()
        if args.json:
            print(status_json(status))
            return _check_exit(checked)
        nodes, ranges = status_rows(status)
    except (RaftstoreError, StatusFormatError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    _print_tables(status, nodes, ranges)
    return _check_exit(checked)


def _check_exit(checked: list[dict] | None) -> int:
    """0 unless a check ran and some range is not consistent (each inconsistent one named)."""
    if checked is None:
        return 0
    for r in checked:
        if r["status"] == "inconsistent":
            print(f"error: range {r['range_id']} is INCONSISTENT: {_one_line(r['detail'])}", file=sys.stderr)
    return 0 if all(r["status"] == "consistent" for r in checked) else 1


def _print_tables(status: dict, nodes: list[NodeRow], ranges: list[RangeRow]) -> None:
    # Imported here: rich is slow to import and only this path needs it.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 250  # piped output: do not wrap rows at 80 columns
    answered = next(node for node in nodes if node.answered)
    formed = "" if status.get("formed", True) else "; cluster not formed yet"
    node_table = Table(title=f"nodes (as seen by n{answered.node_id}{formed})")
    for column in ("node", "region", "peer address", "state", "clock"):
        node_table.add_column(column)
    for node in nodes:
        state = Text("up", style="green") if node.up else Text("down", style="bold red")
        if node.answered:
            state.append(" (answered)", style="dim")
        # Text(...) everywhere: keys and names must never be read as rich markup.
        clock = Text(node.clock, style="bold red" if "NOT SERVING" in node.clock or "beyond" in node.clock else "")
        node_table.add_row(Text(f"n{node.node_id}"), Text(node.region), Text(node.address), state, clock)
    console.print(node_table)
    disk = status.get("disk")
    if isinstance(disk, dict) and _is_int(disk.get("free_bytes")) and _is_int(disk.get("reserve_bytes")):
        line = Text("disk of n%d: %s free, reserve %s" % (answered.node_id, render_size(disk["free_bytes"]),
                                                          render_size(disk["reserve_bytes"])))
        if disk.get("low"):
            line.append("; NOT TAKING WRITES: %s" % _one_line(str(disk["low"])), style="bold red")
        console.print(line)
    pg = status.get("pg")
    if isinstance(pg, dict) and isinstance(pg.get("addr"), str):
        console.print(Text("PostgreSQL clients of n%d: psql \"postgresql://root@%s/defaultdb?sslmode=disable\" "
                           "(%s connection(s))" % (answered.node_id, pg["addr"], pg.get("connections", "?"))))
    for line in render_totals(status):
        console.print(Text(line))

    range_table = Table(title=f"ranges (held by n{answered.node_id})")
    for column in ("range", "span", "replicas", "leader", "lease", "home", "size", "applied", "last check"):
        justify = "right" if column in ("range", "size", "applied") else "left"
        range_table.add_column(column, justify=justify)
    for row in ranges:
        leader = Text(row.leader, style="bold red" if row.leader == "none" else "")
        range_table.add_row(
            Text(str(row.range_id)),
            Text(row.span),
            Text(row.replicas),
            leader,
            Text(row.lease),
            Text(row.home),
            Text(row.size),
            Text(row.applied_index),
            Text(row.last_check, style="bold red" if row.last_check.startswith("INCONSISTENT") else ""),
        )
    console.print(range_table)
