"""Read-only views of a pysyncobj SyncObj's Raft state (ours, RaftGroup, or plain pysyncobj),
for the simulator's invariant checks: the only place outside group.py that names pysyncobj's
private members, so the rest of the code never does. Valid for pysyncobj 0.3.17 (group.py
checks the version and the names at import)."""

from __future__ import annotations

from typing import Any

from pysyncobj import SyncObj


def current_term(obj: SyncObj) -> int:
    return obj._SyncObj__raftCurrentTerm


def commit_index(obj: SyncObj) -> int:
    return obj._SyncObj__raftCommitIndex


def last_applied(obj: SyncObj) -> int:
    return obj._SyncObj__raftLastApplied


def raft_log(obj: SyncObj) -> Any:
    """The journal: a sequence of (command, index, term)."""
    return obj._SyncObj__raftLog


def transport(obj: SyncObj) -> Any:
    """The transport pysyncobj was given (for RaftGroup, our wrapper; its `_inner` is the node's)."""
    return obj._SyncObj__transport
