"""Replicated commands: msgpack payloads with an id, so a retried proposal applies once.

A command is `{"id": 16 bytes, "op": str, "args": any msgpack value}`. The id is chosen by the
proposer and kept across retries; the state machine remembers the result of every id it applied
and answers a repeat with that result instead of applying it again. Decoding never trusts the
bytes: anything malformed raises CommandError, which the apply path records as a failed command.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any

import msgpack

from raftstore import constants


REJECTED_CODE = "rejected"   # a CommandError's code when it names none
NOT_LEADER_CODE = "not_leader"   # a command reached a replica that does not lead (or not yet) its range


class CommandError(Exception):
    """A command that cannot be applied (malformed, unknown op, bad arguments, a key outside the
    range). Deterministic: every replica reaches the same verdict, so it is recorded as failed
    and apply goes on. `code` names the kind for the proposer (e.g. kvserver.ranges'
    range_key_mismatch); `details` is msgpack data that goes with it (e.g. descriptors)."""

    def __init__(self, message: str, *, code: str = REJECTED_CODE, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.details = code, dict(details or {})

    def rejection(self) -> "Rejection":
        return Rejection(self.code, str(self), self.details)


@dataclass(frozen=True)
class Rejection:
    """What the proposer of a rejected command gets (Outcome.REJECTED): the same on every
    replica, saved with the command's outcome, and answered again to a retry of its id.
    `str()` is the message."""

    code: str
    message: str
    details: dict

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details}

    @classmethod
    def from_wire(cls, obj: Any) -> "Rejection":
        """A saved or forwarded rejection; a plain string is one saved before rejections had codes."""
        if isinstance(obj, str):
            return cls(REJECTED_CODE, obj, {})
        if (isinstance(obj, dict) and isinstance(obj.get("code"), str) and isinstance(obj.get("message"), str)
                and isinstance(obj.get("details", {}), dict)):
            return cls(obj["code"], obj["message"], obj.get("details", {}))
        return cls(REJECTED_CODE, "malformed rejection %r" % (obj,), {})


@dataclass(frozen=True)
class Command:
    id: bytes
    op: str
    args: Any


def new_command_id() -> bytes:
    return os.urandom(constants.command_id_bytes)


def encode_command(op: str, args: Any, command_id: bytes | None = None) -> bytes:
    cid = command_id if command_id is not None else new_command_id()
    if not isinstance(cid, bytes) or len(cid) != constants.command_id_bytes:
        raise ValueError("command id must be %d bytes" % constants.command_id_bytes)
    payload = msgpack.packb({"id": cid, "op": op, "args": args}, use_bin_type=True)
    if len(payload) > constants.command_bytes_max:
        raise ValueError("command of %d bytes exceeds command_bytes_max=%d" % (len(payload), constants.command_bytes_max))
    return payload


def decode_command(payload: Any) -> Command:
    if not isinstance(payload, (bytes, bytearray)):
        raise CommandError("command payload is %s, not bytes" % type(payload).__name__)
    if len(payload) > constants.command_bytes_max:
        raise CommandError("command of %d bytes exceeds command_bytes_max" % len(payload))
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CommandError("command is not valid msgpack: %s" % exc) from None
    if not isinstance(obj, dict) or set(obj) != {"id", "op", "args"}:
        raise CommandError("command must be a map with keys id, op, args")
    cid, op = obj["id"], obj["op"]
    if not isinstance(cid, bytes) or len(cid) != constants.command_id_bytes:
        raise CommandError("command id must be %d bytes" % constants.command_id_bytes)
    if not isinstance(op, str):
        raise CommandError("command op must be a string")
    return Command(cid, op, obj["args"])


class Outcome(enum.Enum):
    """What a proposer learns. AMBIGUOUS means the command may or may not have committed:
    retry with the same command id to find out (it applies at most once)."""

    COMMITTED = "committed"
    REJECTED = "rejected"  # committed to the log, but applying it failed: it changed nothing
    NOT_COMMITTED = "not_committed"
    AMBIGUOUS = "ambiguous"


def saved_outcome(saved: Any) -> tuple[Outcome, Any]:
    """What the proposer of a command gets from the outcome apply saved for it, `(ok, value)`:
    committed with its value, or rejected with its Rejection."""
    ok, value = saved if isinstance(saved, (tuple, list)) and len(saved) == 2 else (False, "bad apply result")
    return (Outcome.COMMITTED, value) if ok else (Outcome.REJECTED, Rejection.from_wire(value))


def not_leader(message: str, hint: int | None) -> Rejection:
    """The answer (with Outcome.NOT_COMMITTED: nothing was proposed) of a replica that cannot
    evaluate a command because it does not lead its range, or has not yet applied its own
    term's first entry; `hint` is the leader it knows of, if any. The router sends again."""
    return Rejection(NOT_LEADER_CODE, message, {"leader": hint})


def is_not_leader(result: Any) -> bool:
    return isinstance(result, Rejection) and result.code == NOT_LEADER_CODE
