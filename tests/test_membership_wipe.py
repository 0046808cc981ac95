"""A node id never runs again with another data directory once a member saw it run (Node._on_hello):
a wiped directory lost what it acknowledged, so it may not come back under its old id. Each data
directory has an incarnation, made when it was empty and kept in node.json; every member remembers
the incarnation it saw each other member run with. The check holds whichever side connects first,
and whichever member the wiped node reaches first. In-process nodes over real data directories;
their loops never run, so each HELLO and heartbeat is handed over by the test."""

from __future__ import annotations

import json
import os

import pytest

from cluster import free_ports
from raftstore.node.loop import Node, NodeConfig

MEMBERS = {str(i): {"addr": "127.0.0.1:%d" % (20000 + i), "region": "r%d" % i} for i in (1, 2, 3)}


@pytest.fixture
def make_node(tmp_path):
    nodes = []

    def make(node_id: int, meta: dict | None = None) -> Node:
        data_dir = tmp_path / ("n%d-%d" % (node_id, len(nodes)))
        data_dir.mkdir()
        if meta is not None:
            (data_dir / "node.json").write_text(json.dumps(dict(meta, node_id=node_id, region="r%d" % node_id)))
        peer, sql = ("127.0.0.1:%d" % p for p in free_ports(2))
        node = Node(NodeConfig(node_id=node_id, region="r%d" % node_id, peer_addr=peer, sql_addr=sql,
                               join=[m["addr"] for m in MEMBERS.values()], data_dir=str(data_dir), secret=b""))
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.close()


def _hello(node_id: int, incarnation: str, fresh: bool, active: dict | None = None) -> dict:
    return {"node_id": node_id, "region": "r%d" % node_id, "addr": MEMBERS[str(node_id)]["addr"],
            "fresh": fresh, "incarnation": incarnation, "members": None if fresh else MEMBERS,
            "active": active or {}}


def _saved(node: Node) -> dict:
    with open(node.meta_path) as f:
        return json.load(f)


def test_a_member_refuses_a_node_id_back_with_another_data_directory(make_node):
    one = make_node(1, {"members": MEMBERS, "incarnation": "one", "active": {"3": "three"}})
    # Fresh, or already formed by adopting the members from a peer that never saw it run (the
    # other member answered first): either way its data directory is not the one seen.
    for fresh in (True, False):
        said = one._on_hello(_hello(3, "three-after-wipe", fresh))
        assert said is not None and "node 3's data directory was wiped" in said and "cannot rejoin under its old id" in said
    assert one._on_hello(_hello(3, "three", fresh=False)) is None   # the same directory, reconnecting


def test_a_wiped_node_stops_when_a_peer_remembers_it_with_other_data(make_node):
    # It reached the member that never saw it first, adopted the members and formed ...
    three = make_node(3)
    assert three._on_hello(_hello(2, "two", fresh=False, active={"2": "two", "1": "one"})) is None
    assert three.members is not None and three.fatal is None
    # ... and the member that did see it run tells it so, in its own HELLO.
    said = three._on_hello(_hello(1, "one", fresh=False, active={"1": "one", "3": "three-before-wipe"}))
    assert said == "wiped" and "node 3's data directory was wiped" in three.fatal


def test_a_member_remembers_the_data_directory_each_member_runs_with(make_node):
    one = make_node(1, {"members": MEMBERS, "incarnation": "one", "active": {}})
    assert one._on_hello(_hello(2, "two", fresh=True)) is None     # fresh: it may not have formed yet
    assert one._on_hello(_hello(3, "three", fresh=True)) is None
    one._on_heartbeat(2, None, None, None, None)                   # no leaderships named: still forming
    assert "2" not in _saved(one)["active"]
    one._on_heartbeat(2, None, None, [], None)                     # a formed node names its leaderships
    assert _saved(one)["active"] == {"2": "two"}
    assert one._hello()["active"] == {"1": "one", "2": "two"}      # what the others learn from it
    assert one._on_hello(_hello(3, "three-after-wipe", fresh=True)) is None   # 3 never ran: nothing lost
    assert one._on_hello(_hello(2, "two-after-wipe", fresh=True)) is not None


def test_a_directory_from_before_incarnations_gets_one_and_keeps_the_old_rule(make_node):
    one = make_node(1, {"members": MEMBERS, "active": [3]})
    first = _saved(one)["incarnation"]
    assert isinstance(first, str) and first
    assert one._on_hello(_hello(3, "three", fresh=True)) is not None    # seen running, now empty
    assert one._on_hello(_hello(3, "three", fresh=False)) is None       # seen running, still formed
    assert _saved(one)["active"] == {"3": "three"}
    one.close()
    again = make_node(1, _saved(one))
    assert again.incarnation == first
    # A node that started empty and hears it was seen, with no directory named, stops too.
    fresh = make_node(2)
    assert fresh._on_hello(_hello(1, first, fresh=False, active={"1": first, "2": None})) == "wiped"
