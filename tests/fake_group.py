"""A stand-in Raft group for tests of the store's evaluation (tests/test_evaluation.py,
tests/test_leases.py, tests/test_batch.py): who leads, whether the lead is ready, and propose."""

from __future__ import annotations


class FakeGroup:
    """What the store asks of a RaftGroup when it evaluates: who leads, whether the lead is
    ready, and propose (recorded; answered by the test)."""

    def __init__(self, leader: bool = True, ready: bool = True, leader_id: str | None = "1") -> None:
        self.leader, self.ready, self.leader_id_ = leader, ready, leader_id
        self.proposed: list[tuple[str, dict, object, bytes]] = []
        self.offered: list[str | None] = []         # transfer_leadership targets (None: any)

    def is_leader(self) -> bool:
        return self.leader

    def leader_ready(self) -> bool:
        return self.leader and self.ready

    def leader_id(self) -> str | None:
        return self.leader_id_

    def propose(self, op, args, callback, command_id=None, essential=False):
        self.proposed.append((op, args, callback, command_id))
        return command_id

    def transfer_leadership(self, to: str | None) -> bool:
        self.offered.append(to)
        return True

    def queued(self) -> int:
        return 0
