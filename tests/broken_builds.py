"""Broken builds the closed-timestamp checkers must catch, shared by the unit tests and the
simulator's tests."""

from __future__ import annotations

from raftstore.kvserver.store import Store


def trust_the_gateway(monkeypatch) -> None:
    """A leader that proposes a write at the gateway's timestamp (or its floor), not raised to its
    own clock: then only the closed timestamp keeps the write above what followers may serve."""
    real = Store.propose

    def propose(self, range_id, op, args, callback, command_id=None, at=None):
        clock, self.now_ts = self.now_ts, lambda: [0, 0]
        try:
            return real(self, range_id, op, args, callback, command_id=command_id, at=at)
        finally:
            self.now_ts = clock
    monkeypatch.setattr(Store, "propose", propose)


def ignore_what_is_closed(monkeypatch) -> None:
    """A leaseholder that evaluates writes without regard to what it closed."""
    monkeypatch.setattr(Store, "closed_floor", lambda self, rid: (0, 0))
    monkeypatch.setattr(Store, "_close", lambda self, rid, lease, now: (0, 0))
