"""A node saves its HLC ceiling ahead, on a thread of its own (Node._save_ceiling_ahead): the two
fsyncs of a save, once every half second, never stall the node loop or a request that takes a
timestamp. A node of one, in-process, over its real ceiling file."""

from __future__ import annotations

import threading

from cluster import free_ports, wait_until
from raftstore.node.loop import Node, NodeConfig


def _saving_threads(tmp_path, monkeypatch, enough) -> list[str]:
    """The thread of each ceiling save after the node's first, until `enough(threads)`."""
    peer, sql = ("127.0.0.1:%d" % p for p in free_ports(2))
    node = Node(NodeConfig(node_id=1, region="us-east1", peer_addr=peer, sql_addr=sql, join=[peer],
                           data_dir=str(tmp_path / "d"), secret=b""))   # a cluster of one: it forms at once
    threads: list[str] = []
    save = node.hlc_ceiling.save

    def recorded(ns: int) -> None:
        threads.append(threading.current_thread().name)
        save(ns)
    monkeypatch.setattr(node.hlc_ceiling, "save", recorded)
    try:
        node.start_loop()
        wait_until(lambda: enough(threads[1:]), 30, "ceiling saves")
    finally:
        node.close()
    return threads[1:]


def test_a_node_saves_its_hlc_ceiling_ahead_on_its_own_thread(tmp_path, monkeypatch):
    threads = _saving_threads(tmp_path, monkeypatch, lambda t: t.count("hlc-ceiling") >= 3)
    # A save ahead left unfinished for half a second (a very slow disk) makes the clock save
    # once itself; on a working disk none is made elsewhere.
    assert len(threads) - threads.count("hlc-ceiling") <= 1, threads


def test_broken_a_node_that_does_not_save_ahead_saves_on_the_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(Node, "_save_ceiling_ahead", lambda self: None)
    threads = _saving_threads(tmp_path, monkeypatch, lambda t: len(t) >= 2)
    assert "hlc-ceiling" not in threads and "node-loop" in threads, threads
