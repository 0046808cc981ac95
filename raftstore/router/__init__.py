"""kvclient: where a request goes (CockroachDB's DistSender). Above kvserver, below sql/ and
the server: it imports the store's types but never the store, and the store never imports it."""

from raftstore.router.cache import RangeCache
from raftstore.router.router import Router

__all__ = ["RangeCache", "Router"]
