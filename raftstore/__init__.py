"""raftstore: a multi-region, strongly consistent, SQL-speaking store.

``raftstore.connect("host:port")`` opens a DB-API 2.0 connection (see `raftstore.sqlclient`).
It is loaded on first use, so that importing any part of the package (a node, the CLI) does not
pull in the client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["connect"]


def __getattr__(name: str) -> Any:
    if name == "connect":
        from raftstore.sqlclient import connect

        return connect
    raise AttributeError(f"module 'raftstore' has no attribute {name!r}")
