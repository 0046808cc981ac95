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


class CommandError(Exception):
    """A command that cannot be applied (malformed, unknown op, bad arguments). Deterministic:
    every replica reaches the same verdict, so it is recorded as failed and apply goes on."""


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
