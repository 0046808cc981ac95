"""``raftstore status``: rendering of one node's status map, and the command against a fake node.

The fake node is `test_kv_client.FakeServer`, which checks every request against the wire
schema, so these tests also pin the command to the real ``status`` request.
"""

from __future__ import annotations

import argparse
import json
import re

import pytest

from raftstore.cli import status as cli_status
from raftstore.cli.status import escape_bytes, render_size, render_span, render_totals, status_json, status_rows
from test_kv_client import CLOSE, FakeServer, err, ok

STATUS = {
    "node_id": 1,
    "region": "us-east1",
    "formed": True,
    "members": {
        "1": {"addr": "127.0.0.1:17101", "region": "us-east1"},
        "2": {"addr": "127.0.0.1:17102", "region": "europe-west1"},
        "3": {"addr": "127.0.0.1:17103", "region": "asia-south1"},
    },
    "connected": [2],
    "ranges": [
        {"range_id": 1, "start": b"\x01", "end": b"\x02", "generation": 0, "replicas": [1, 2, 3],
         "leader": 1, "applied_index": 57, "bytes": 1234},
        {"range_id": 4, "start": b"kfoo", "end": None, "generation": 0, "replicas": [3, 1, 2],
         "leader": None, "applied_index": 3, "bytes": None},
        {"range_id": 2, "start": b"\x02", "end": b"k\x00\xffa[b]", "generation": 2,
         "replicas": [1, 2, 3], "leader": 2, "applied_index": 1200, "bytes": 8 * 1024 * 1024,
         "lease": {"seq": 3, "holder": 2, "start": [1, 0], "expiration": [2, 0]}, "lease_serving": True,
         "home": "europe-west1"},
        {"range_id": 3, "start": b"k\x00\xffa[b]", "end": b"kfoo", "generation": 0,
         "replicas": [1, 2, 3], "leader": 1, "applied_index": 9, "bytes": 0},
    ],
    "leader": 2,
    "is_leader": False,
}


@pytest.fixture
def node(request):
    """node(status or handler) -> a FakeServer answering `status`, stopped at teardown."""

    def start(answer) -> FakeServer:
        handler = answer if callable(answer) else (lambda op, args: ok(answer))
        server = FakeServer(handler)
        request.addfinalizer(server.stop)
        return server

    return start


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raftstore")
    cli_status.add_status_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def row(output: str, *cells: str) -> bool:
    """Whether some table row of `output` holds `cells` in order, each a whole cell."""
    pattern = r"[│|]\s*" + r"\s*[│|]\s*".join(re.escape(cell) for cell in cells) + r"\s*[│|]"
    return re.search(pattern, output) is not None


# --- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, end, shown",
    [
        (b"\x01", b"\x02", "meta"),
        (b"\x02", None, "[-inf, +inf)"),
        (b"\x02", b"kfoo", "[-inf, foo)"),
        (b"kfoo", b"kzz", "[foo, zz)"),
        (b"kfoo", None, "[foo, +inf)"),
        (b"k", b"ka", '["", a)'),
        (b"k\x00\xff\n", None, "[\\x00\\xff\\x0a, +inf)"),
        (b"ka\\b", None, "[a\\\\b, +inf)"),
        ("kcafé".encode(), None, "[café, +inf)"),
        (b"kzz", b"t\x01", "[zz, b't\\x01')"),
        (b"k" + b"x" * 100, None, "[" + "x" * 37 + "..., +inf)"),
        (None, None, "?"),
    ],
)
def test_a_span_reads_as_user_keys_with_meta_and_infinities_named(start, end, shown):
    assert render_span(start, end) == shown


@pytest.mark.parametrize(
    "size, shown",
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (8 * 1024**2, "8.0 MiB"),
     (3 * 1024**4, "3.0 TiB"), (5 * 1024**5, "5120.0 TiB")],
)
def test_a_size_is_in_binary_units_and_unknown_is_a_dash(size, shown):
    assert render_size(size) == shown


def test_escaped_bytes_are_unambiguous():
    samples = [b"a\\x00", b"a\x00", b"\xc3", "é".encode(), b"\\", b"\x7f", "\u200b".encode()]
    shown = [escape_bytes(sample) for sample in samples]
    assert shown == ["a\\\\x00", "a\\x00", "\\xc3", "é", "\\\\", "\\x7f", "\\u200b"]
    assert len(set(shown)) == len(shown)


def test_the_raw_prefix_and_data_start_match_the_storage_layer():
    from raftstore import keyspace
    from raftstore.kvserver import ranges, replica

    assert keyspace.RAW_PREFIX == replica.RAW_PREFIX
    assert render_span(ranges.DATA_START, None) == "[-inf, +inf)"


def test_nodes_are_up_when_they_answered_or_are_connected_else_down():
    nodes, _ = status_rows(STATUS)
    assert [(n.node_id, n.region, n.address, n.up, n.answered) for n in nodes] == [
        (1, "us-east1", "127.0.0.1:17101", True, True),
        (2, "europe-west1", "127.0.0.1:17102", True, False),
        (3, "asia-south1", "127.0.0.1:17103", False, False),
    ]


def test_the_clock_column_shows_offsets_and_a_node_that_stopped_serving():
    clock = {"serving": False, "reason": "this node's clock is off",
             "offsets": {"2": {"offset_ms": 812.5, "uncertainty_ms": 3.0, "far": True},
                         "3": {"offset_ms": -1.25, "uncertainty_ms": 0.5, "far": False}}}
    nodes, _ = status_rows({**STATUS, "clock": clock})
    cells = {n.node_id: n.clock for n in nodes}
    assert cells == {1: "NOT SERVING: this node's clock is off", 2: "+812.5 ms ± 3.0 (beyond max offset)",
                     3: "-1.2 ms ± 0.5"}
    assert {n.clock for n in status_rows(STATUS)[0]} == {""}     # an older server says nothing


def test_ranges_are_in_key_order_with_replica_regions_and_leader():
    _, ranges = status_rows(STATUS)
    shown = [(r.range_id, r.span, r.replicas, r.leader, r.size, r.applied_index) for r in ranges]
    assert shown == [
        (1, "meta", "1 us-east1, 2 europe-west1, 3 asia-south1", "n1 (us-east1)", "1.2 KiB", "57"),
        (2, "[-inf, \\x00\\xffa[b])", "1 us-east1, 2 europe-west1, 3 asia-south1",
         "n2 (europe-west1)", "8.0 MiB", "1200"),
        (3, "[\\x00\\xffa[b], foo)", "1 us-east1, 2 europe-west1, 3 asia-south1",
         "n1 (us-east1)", "0 B", "9"),
        (4, "[foo, +inf)", "1 us-east1, 2 europe-west1, 3 asia-south1", "none", "-", "3"),
    ]


def test_a_node_not_yet_formed_shows_itself_alone():
    alone = {"node_id": 5, "region": "eu", "formed": False, "members": {}, "connected": []}
    nodes, ranges = status_rows({**alone, "ranges": []})
    assert [(n.node_id, n.region, n.address, n.up) for n in nodes] == [(5, "eu", "?", True)]
    assert ranges == []


@pytest.mark.parametrize(
    "status, complaint",
    [
        ([], "expected a map"),
        ({"node_id": "n1", "region": "eu", "leader": True}, "node_id must be a node id"),
        ({**STATUS, "members": {"x": {}}}, "a members key must be a node id"),
        ({**STATUS, "ranges": [{"range_id": 9, "start": "k"}]}, "range 9: start must be bytes"),
        ({**STATUS, "ranges": [{"range_id": 9, "start": b"k", "bytes": -1}]}, "range 9: bytes"),
        ({**STATUS, "clock": []}, "clock must be a map"),
        ({**STATUS, "ranges": [{"range_id": 9, "start": b"k", "home": 3}]}, "range 9: home must be a region"),
        ({**STATUS, "clock": {"offsets": {"2": {"offset_ms": "x"}}}}, "clock.offsets"),
    ],
)
def test_a_status_in_an_unexpected_shape_is_a_format_error_not_a_crash(status, complaint):
    with pytest.raises(cli_status.StatusFormatError, match=complaint):
        status_rows(status)


def test_json_turns_bytes_into_escaped_strings():
    decoded = json.loads(status_json(STATUS))
    assert decoded["ranges"][0]["start"] == "\\x01"
    assert decoded["ranges"][1]["start"] == "kfoo" and decoded["ranges"][1]["end"] is None
    assert decoded["ranges"][2]["end"] == "k\\x00\\xffa[b]"
    assert decoded["members"]["2"] == {"addr": "127.0.0.1:17102", "region": "europe-west1"}
    assert json.loads(status_json({b"\x00k": [b"v"]})) == {"\\x00k": ["v"]}


# --- the command --------------------------------------------------------------------------------


def test_status_prints_a_nodes_table_and_a_ranges_table(node, capsys):
    server = node(STATUS)
    assert run_cli(["status", "--url", server.address]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert row(out, "n1", "us-east1", "127.0.0.1:17101", "up (answered)")
    assert row(out, "n2", "europe-west1", "127.0.0.1:17102", "up")
    assert row(out, "n3", "asia-south1", "127.0.0.1:17103", "down")
    replicas = "1 us-east1, 2 europe-west1, 3 asia-south1"
    assert row(out, "1", "meta", replicas, "n1 (us-east1)", "-", "-", "1.2 KiB", "57")
    assert row(out, "2", "[-inf, \\x00\\xffa[b])", replicas, "n2 (europe-west1)", "n2 #3", "europe-west1", "8.0 MiB", "1200")
    assert row(out, "4", "[foo, +inf)", replicas, "none", "-", "-", "-", "3")
    assert out.index("meta") < out.index("[-inf,") < out.index("[foo, +inf)")
    assert server.requests == [("status", {})]


def test_status_json_prints_the_raw_map(node, capsys):
    server = node(STATUS)
    assert run_cli(["status", "--url", server.address, "--json"]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["connected"] == [2] and decoded["leader"] == 2
    assert [r["range_id"] for r in decoded["ranges"]] == [1, 4, 2, 3]  # as the node sent it


def test_status_asks_the_next_url_when_the_first_node_is_down(node, capsys):
    broken = node(lambda op, args: CLOSE)
    working = node(STATUS)
    assert run_cli(["status", "--url", f"{broken.address},{working.address}"]) == 0
    assert row(capsys.readouterr().out, "n3", "asia-south1", "127.0.0.1:17103", "down")


@pytest.mark.parametrize(
    "url, message",
    [
        ("localhost", "expected HOST:PORT"),
        ("h:0", "outside 1-65535"),
        ("h:1,,h:2", "expected HOST:PORT"),
        ("http://127.0.0.1:26267", "a http:// URL is not an address"),
    ],
)
def test_a_bad_url_is_a_one_line_usage_error_before_any_connection(capsys, url, message):
    from raftstore.cli.main import build_parser   # its usage errors are one line

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["status", "--url", url])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "argument --url: " in captured.err and message in captured.err


def test_an_unreachable_node_is_a_one_line_error(capsys):
    assert run_cli(["status", "--url", "127.0.0.1:1", "--timeout", "0.2"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1
    assert err_text.startswith("error: status: connection refused by 127.0.0.1:1")


def test_an_error_answer_or_an_unreadable_status_is_a_one_line_error(node, capsys):
    refusing = node(lambda op, args: err("bad_request", "unknown op\n'status'"))
    assert run_cli(["status", "--url", refusing.address]) == 2
    assert capsys.readouterr().err == (
        "error: bad_request: unknown op 'status' (the request was rejected and not applied; "
        "fix the request (client/server mismatch?))\n"
    )
    old = node({"node_id": "n1", "region": "eu", "leader": True})
    assert run_cli(["status", "--url", old.address]) == 2
    assert capsys.readouterr().err.startswith(
        "error: the node's status is not in a form this CLI reads: node_id"
    )


# --- consistency checks ---------------------------------------------------------------------------


def _checked(status: str, detail: str) -> dict:
    return {"range_id": 2, "start": b"\x02", "end": None, "index": 57, "status": status, "detail": detail,
            "differing": [3] if status == "inconsistent" else [], "replicas": [], "at": 1.0, "duration_ms": 3.0}


def _with_last_check(check: dict | None) -> dict:
    ranges = [dict(r, last_check=check if r["range_id"] == 2 else None) for r in STATUS["ranges"]]
    return dict(STATUS, ranges=ranges)


def test_the_ranges_table_shows_each_ranges_last_check():
    _, ranges = status_rows(_with_last_check({"status": "inconsistent", "index": 57, "at": 1.0,
                                              "detail": "n3 differs from n1, n2 at index 57"}))
    by_id = {r.range_id: r.last_check for r in ranges}
    assert by_id[2] == "INCONSISTENT at 57: n3 differs from n1, n2 at index 57"
    assert by_id[1] == "-"
    _, ranges = status_rows(_with_last_check({"status": "consistent", "index": 9, "at": 1.0, "detail": "3 agree"}))
    assert {r.range_id: r.last_check for r in ranges}[2] == "consistent at 9"


@pytest.mark.parametrize("check, exit_code", [
    (_checked("consistent", "3 replicas agree at index 57"), 0),
    (_checked("incomplete", "n3 did not report within 5 s; n1, n2 agree at index 57"), 1),
    (_checked("inconsistent", "n3 differs from n1, n2 at index 57"), 1),
])
def test_check_consistency_runs_a_check_then_shows_it_and_fails_unless_every_range_is_consistent(
        node, capsys, check, exit_code):
    def answer(op, args):
        if op == "check_consistency":
            return ok({"ranges": [check]})
        return ok(_with_last_check({k: check[k] for k in ("status", "index", "at", "detail")}))
    server = node(answer)
    assert run_cli(["status", "--url", server.address, "--check-consistency"]) == exit_code
    captured = capsys.readouterr()
    assert [op for op, _ in server.requests] == ["check_consistency", "status"]
    assert check["detail"] in captured.out or check["status"] == "consistent"
    if check["status"] == "inconsistent":
        assert captured.err == "error: range 2 is INCONSISTENT: n3 differs from n1, n2 at index 57\n"
    else:
        assert captured.err == ""


TOTALS = {"ranges": 3, "leading": 1, "proposals": {"here": 4, "forwarded": 5, "for_peers": 6, "as_follower": 0},
          "raft": {"entries_applied": 70, "elections_started": 2, "leader_changes": 3, "snapshots_sent": 1,
                   "snapshots_received": 0, "snapshots_created": 0},
          "router": {"lookup": 7, "redirect": 8, "backoff": 0, "not_leader": 0}, "evaluation_misses": 0,
          "loop_stalls": 9, "loop_busy_max_s": 0.0457}


def test_the_totals_metrics_export_are_shown_in_words():
    status = {**STATUS, "totals": TOTALS, "requests": {"kv": {"put": {"ok": 20, "unavailable": 1}},
                                                       "sql": {"select": {"undefined_table": 1}}}}
    raft, requests = render_totals(status)
    for words in ("3 ranges, leading 1", "proposals 4 here, 5 forwarded, 6 for peers", "70 entries applied",
                  "2 elections started, 3 leader changes", "snapshots 1 sent, 0 received",
                  "router 7 lookups, 8 redirects", "9 loop stalls (longest 45.7 ms)"):
        assert words in raft, (words, raft)
    assert requests == "requests answered: kv put 20 ok, 1 unavailable; sql select 1 undefined_table"
    assert render_totals(STATUS) == []   # an older server sends no totals: nothing is made up


def test_status_prints_the_totals_in_words(node, capsys):
    server = node({**STATUS, "totals": TOTALS, "requests": {"kv": {}, "sql": {}}})
    assert run_cli(["status", "--url", server.address]) == 0
    out = capsys.readouterr().out
    assert "70 entries applied" in out and "requests answered: none yet" in out
