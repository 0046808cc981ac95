"""Blocking key-value client for the protocol in `raftstore.wire`.

Why: a caller wants "put this key" to either succeed once or tell it plainly that it did not,
or that nobody can know. Nodes come and go (leader changes, restarts, draining), so the client
retries on its own within one deadline and keeps the promise that matters:

* Each write carries a random 16-byte command id chosen once and kept across retries; the
  servers remember applied ids, so a write applies at most once however often it is resent.
* ``unavailable``, ``draining`` and connection failures move to the next address after a bounded,
  jittered exponential backoff. An address that refuses the connection (nothing listens there)
  or answers that it is no client port (a node's peer port) is moved past without a pause, and
  when every address has answered so the call fails at once: retrying cannot help within it.
  ``ambiguous`` resends the same request (same command id) to the
  next address, whose answer settles the outcome.
* A write is reported as surely-not-applied only if no attempt could have applied it. Once any
  attempt was answered ``ambiguous``, or its connection broke (or timed out) after the whole
  request was handed to the kernel, running out of time raises AmbiguousCommitError.
* ``bad_request``, ``too_large`` and other non-retryable errors raise at once.
* ``split`` is a write without a command id: it is idempotent by nature (a range that already
  starts at the key answers ``already``), so it follows the write policy above unchanged.
* A request that must not run twice (a SQL statement, read or write: `Client.request` with
  ``resend=False``) is never sent again once an attempt may have reached a server: the first
  failure after that raises at once - AmbiguousCommitError for a write, for a read the failure
  itself (the statement may still be running there, and a timeout is no licence to start it a
  second time elsewhere). A SQL error answered by that attempt is the server's own account of
  what applied and is raised as it is (``ambiguous`` when it says so, as SQLSTATE 40003 does;
  a statement timeout, 57014, is as final). Such a request goes to another node only after a
  failure before it could reach one (the connection failed or was refused, sending failed) or
  after ``unavailable`` or ``draining``, which the server answers only when nothing of the
  statement applied. Before it goes out on a connection that sat idle, the client checks that
  the server has not closed it meanwhile, so a node restart between two statements does not
  make the next one fail.
* A call interrupted mid-exchange (KeyboardInterrupt) drops its connection, so the next call
  never reads the interrupted call's late answer.

This is an edge module (sockets, clock); `backoff_delay_s` is the pure part of the policy.
One connection is open at a time; a `Client` serialises its calls with a lock.
"""

from __future__ import annotations

import math
import os
import random
import socket
import threading
import time
from typing import Any, Callable, Iterable, NoReturn

from hlc import Timestamp
from raftstore import constants, wire
from raftstore.errors import (
    RETRY_ELSEWHERE_CODES,
    AmbiguousCommitError,
    ConnectionFailedError,
    ProtocolError,
    RaftstoreError,
    SqlError,
    TooLargeError,
    UnavailableError,
    error_from_wire,
)

__all__ = ["Client", "URL_SCHEME", "backoff_delay_s", "parse_address", "parse_addresses", "split_addresses"]

Address = tuple[str, int]

# ``raftstore://HOST:PORT[,HOST:PORT...]`` is the URL form of an address list.
URL_SCHEME = "raftstore"

# Ops that change state: a failure after sending may have applied them (see `Client._call`).
# `split` carries no command id, so the wire module does not list it among its writes.
_WRITE_OPS = wire.WRITE_OPS | {"split"}


# --- addresses --------------------------------------------------------------------------------


def parse_address(text: str) -> Address:
    """``"host:port"`` (or ``"[v6addr]:port"``) -> ``(host, port)``.

    Raises TypeError for a non-str, ValueError naming the problem for a malformed address or a
    port outside 1-65535.
    """
    if not isinstance(text, str):
        raise TypeError(f"address must be a str 'host:port', got {type(text).__name__}")
    example = "expected HOST:PORT, e.g. 127.0.0.1:26257"
    scheme, sep, _ = text.partition("://")
    if sep:
        raise ValueError(
            f"bad address {text!r}: a {scheme or 'URL'}:// URL is not an address; give "
            f"{URL_SCHEME}://HOST:PORT[,HOST:PORT...] or HOST:PORT[,HOST:PORT...]"
        )
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"bad address {text!r}: {example}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(ch.isspace() for ch in host) or ("[" in host or "]" in host):
        raise ValueError(f"bad address {text!r}: malformed host; {example}")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"bad address {text!r}: port must be a number in 1-65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"bad address {text!r}: port {port} is outside 1-65535")
    return host, port


def split_addresses(text: str) -> list[str]:
    """The address strs (unchecked, stripped) of ``HOST:PORT[,HOST:PORT...]`` or of the URL
    ``raftstore://HOST:PORT[,HOST:PORT...]`` (a trailing ``/`` allowed)."""
    text = text.strip()
    prefix = URL_SCHEME + "://"
    if text[: len(prefix)].lower() == prefix:
        text = text[len(prefix):]
        if text.endswith("/"):
            text = text[:-1]
    return [item.strip() for item in text.split(",")]


def parse_addresses(addresses: str | Iterable[str]) -> list[Address]:
    """A str (one address, or several separated by commas, optionally as a URL
    ``raftstore://HOST:PORT[,HOST:PORT...]``) or an iterable of address strs -> list of
    ``(host, port)``. Any other URL scheme (``http://``, ``postgresql://``) is refused. Raises
    TypeError / ValueError (see `parse_address`), ValueError if there is none."""
    if isinstance(addresses, str):
        items = split_addresses(addresses)
    elif isinstance(addresses, (bytes, bytearray)) or not hasattr(addresses, "__iter__"):
        raise TypeError(
            "addresses must be a 'host:port' str or a list of them, got "
            f"{type(addresses).__name__}"
        )
    else:
        items = list(addresses)
    parsed = [parse_address(item.strip() if isinstance(item, str) else item) for item in items]
    if not parsed:
        raise ValueError("addresses is empty: give at least one 'host:port'")
    return parsed


def _format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- retry policy (pure) ------------------------------------------------------------------------


def backoff_delay_s(
    failures: int,
    rng: random.Random,
    min_s: float = constants.client_backoff_s_min,
    max_s: float = constants.client_backoff_s_max,
) -> float:
    """Delay before the retry that follows `failures` consecutive failed attempts (>= 1).

    Exponential from `min_s`, doubling up to `max_s` (by default the client's bounds), with
    "equal jitter": uniformly in [d/2, d] so clients that failed together do not retry together.
    """
    assert failures >= 1, failures
    exponent = min(failures - 1, 32)
    delay = min(max_s, min_s * 2**exponent)
    return rng.uniform(delay / 2, delay)


# --- argument checks ----------------------------------------------------------------------------


def _bytes_arg(method: str, name: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    hint = "; encode text first, e.g. 'abc'.encode()" if isinstance(value, str) else ""
    raise TypeError(f"{method}: {name} must be bytes, got {type(value).__name__}{hint}")


def _optional_bytes_arg(method: str, name: str, value: Any) -> bytes | None:
    return None if value is None else _bytes_arg(method, name, value)


def _check_command_size(op: str, *parts: bytes) -> None:
    """Refuse, before anything is sent, a write that cannot fit in one replicated command (the
    server refuses one just under the limit too, as the command adds a little of its own)."""
    size = sum(len(part) for part in parts)
    if size > constants.command_bytes_max:
        raise TooLargeError(
            f"{op}: the key and values are {size} bytes; a write must fit in one command of "
            f"{constants.command_bytes_max // 1024} KiB ({constants.command_bytes_max} bytes, "
            "command_bytes_max); nothing was sent"
        )


def _new_command_id() -> bytes:
    return os.urandom(constants.command_id_bytes)


# --- result checks (the server is trusted to follow the protocol, but checked anyway) -----------


def _ts_of(op: str, result: Any) -> Timestamp:
    if not isinstance(result, dict) or "ts" not in result:
        raise ValueError(f"{op} result must be a map with 'ts', got {type(result).__name__}")
    return Timestamp.from_wire(result["ts"])


def _check_put(result: Any) -> Timestamp:
    return _ts_of("put", result)


def _check_delete(result: Any) -> Timestamp:
    return _ts_of("delete", result)


def _check_get(result: Any) -> bytes | None:
    _ts_of("get", result)
    if "value" not in result:
        raise ValueError("get result has no 'value'")
    value = result["value"]
    if value is not None and not isinstance(value, bytes):
        raise ValueError(f"get result value must be bytes or nil, got {type(value).__name__}")
    return value


def _check_cas(result: Any) -> bool:
    _ts_of("cas", result)
    swapped = result.get("swapped")
    if not isinstance(swapped, bool):
        raise ValueError(f"cas result swapped must be a bool, got {type(swapped).__name__}")
    return swapped


def _check_limit(limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"scan: limit must be an int, got {type(limit).__name__}")
    if not 1 <= limit <= constants.scan_rows_max:
        raise ValueError(f"scan: limit must be in [1, {constants.scan_rows_max}], got {limit}")


def _check_scan(result: Any, limit: int) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    _ts_of("scan", result)
    resume = result.get("resume")
    if resume is not None and not isinstance(resume, bytes):
        raise ValueError(f"scan result resume must be bytes or nil, got {type(resume).__name__}")
    rows = result.get("rows")
    if not isinstance(rows, list):
        raise ValueError(f"scan result rows must be an array, got {type(rows).__name__}")
    if len(rows) > limit:
        raise ValueError(f"scan returned {len(rows)} rows, more than the limit {limit}")
    out = []
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != 2
            or not isinstance(row[0], bytes)
            or not isinstance(row[1], bytes)
        ):
            raise ValueError("scan result rows must be [key: bytes, value: bytes] pairs")
        out.append((row[0], row[1]))
    return out, resume


def _check_split(result: Any) -> dict:
    if not isinstance(result, dict):
        raise ValueError(f"split result must be a map, got {type(result).__name__}")
    return result


_CHECK_STATUSES = frozenset({"consistent", "inconsistent", "incomplete"})


def _check_consistency(result: Any) -> list[dict]:
    ranges = result.get("ranges") if isinstance(result, dict) else None
    if not isinstance(ranges, list):
        raise ValueError("check_consistency result must be a map with a list of ranges")
    for item in ranges:
        if (not isinstance(item, dict) or not isinstance(item.get("range_id"), int)
                or item.get("status") not in _CHECK_STATUSES or not isinstance(item.get("detail"), str)
                or not isinstance(item.get("replicas"), list) or not isinstance(item.get("differing"), list)):
            raise ValueError(f"check_consistency result has a malformed range entry: {item!r:.200}")
    return ranges


def _check_status(result: Any) -> dict:
    if not isinstance(result, dict):
        raise ValueError(f"status result must be a map, got {type(result).__name__}")
    return result


class _DeadlineSocket:
    """Gives every recv/sendall on `sock` only the time left until `deadline` (monotonic), so an
    attempt that receives a frame in many small pieces still ends on time."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("attempt timed out")
        self._sock.settimeout(remaining)

    def recv(self, bufsize: int) -> bytes:
        self._arm()
        return self._sock.recv(bufsize)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(data)


class _AttemptFailed(Exception):
    """One attempt did not produce an answer; `error` is what to report if it was the last.
    `final`: the address answered in a way no retry within this call can change (it refused
    the connection, or is not a client port)."""

    def __init__(self, error: RaftstoreError, *, maybe_applied: bool, final: bool = False):
        super().__init__(str(error))
        self.error = error
        self.maybe_applied = maybe_applied
        self.final = final


class _Refused(ConnectionFailedError):
    """An address refused the connection: nothing listens there."""


class Client:
    """Blocking client for one or more nodes' client ports.

    ``Client(["host:port", ...], timeout_s=15.0)``; a single str may hold one address or several
    separated by commas. Addresses are tried in the order given, starting with the first, one
    connection at a time; a connection that answered is reused by the next call.

    Every method is bounded by `timeout_s` in total, retries included (one attempt by
    `attempt_timeout_s_max`), and raises a subclass of
    `raftstore.errors.RaftstoreError` on an operating error: ConnectionFailedError (nothing
    reachable; at once when every address refuses the connection or is not a client port), UnavailableError / DrainingError (no node could serve in time; writes surely did
    not apply), AmbiguousCommitError (a write may have applied), BadRequestError,
    TooLargeError, ProtocolError. Wrong argument types raise TypeError, out-of-range arguments
    ValueError, use after `close()` RuntimeError.
    """

    def __init__(
        self,
        addresses: str | Iterable[str],
        *,
        timeout_s: float = constants.client_timeout_s_default,
        attempt_timeout_s_max: float = constants.client_attempt_timeout_s_max,
    ):
        self._addresses = parse_addresses(addresses)
        self.timeout_s = _seconds_arg("timeout_s", timeout_s)
        # One attempt waits at most this long before the next address is tried.
        self.attempt_timeout_s_max = _seconds_arg("attempt_timeout_s_max", attempt_timeout_s_max)
        self._index = 0
        self._sock: socket.socket | None = None
        self._decoder: wire.FrameDecoder | None = None
        self._next_request_id = 1
        self._rng = random.Random()  # backoff jitter only; command ids come from os.urandom
        self._lock = threading.Lock()
        self._closed = False
        # The newest commit timestamp of this client's own writes (its causality token): its
        # bounded-staleness reads never read below it, so it always reads its own writes.
        self.causality: Timestamp | None = None

    @property
    def addresses(self) -> list[str]:
        return [_format_address(address) for address in self._addresses]

    def __repr__(self) -> str:
        return f"Client({self.addresses!r}, timeout_s={self.timeout_s})"

    # --- operations -------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> Timestamp:
        """Set `key` to `value`; return the commit timestamp."""
        args = {
            "key": _bytes_arg("put", "key", key),
            "value": _bytes_arg("put", "value", value),
            "command_id": _new_command_id(),
        }
        _check_command_size("put", args["key"], args["value"])
        return self._wrote(self._call("put", args, _check_put))

    def _wrote(self, ts: Timestamp) -> Timestamp:
        if self.causality is None or ts > self.causality:
            self.causality = ts
        return ts

    def _staleness_args(self, args: dict, max_staleness: float | None, read_ts: Timestamp | None) -> dict:
        """A read's follower-read arguments: `max_staleness` seconds (a bounded-staleness read,
        never below this client's own writes) or `read_ts` (an exact read there)."""
        if max_staleness is not None and read_ts is not None:
            raise ValueError("a read takes max_staleness or read_ts, not both")
        if max_staleness is not None:
            if isinstance(max_staleness, bool) or not isinstance(max_staleness, (int, float)) or not max_staleness > 0:
                raise ValueError(f"max_staleness must be a positive number of seconds, got {max_staleness!r}")
            args["max_staleness_ms"] = max(1, int(max_staleness * 1000))
            if self.causality is not None:
                args["min_ts"] = self.causality.to_wire()
        elif read_ts is not None:
            args["read_ts"] = read_ts.to_wire()
        return args

    def get(self, key: bytes, *, max_staleness: float | None = None, read_ts: Timestamp | None = None) -> bytes | None:
        """The value of `key`, or None if it has none. `max_staleness` (seconds): a
        bounded-staleness read, served by the nearest replica that has closed a timestamp no
        older than that (and not below this client's own latest write), else by the
        leaseholder; `read_ts`: an exact read at that timestamp."""
        return self.read(key, max_staleness=max_staleness, read_ts=read_ts)["value"]

    def read(self, key: bytes, *, max_staleness: float | None = None, read_ts: Timestamp | None = None) -> dict:
        """`get` with how it was served: {"value", "ts" (the version read), "read_ts" (the
        timestamp it read at), "served_by" (the node)}."""
        args = self._staleness_args({"key": _bytes_arg("get", "key", key)}, max_staleness, read_ts)

        def check(result: Any) -> dict:
            value = _check_get(result)
            return {"value": value, "ts": _ts_of("get", result), "read_ts": result.get("read_ts"),
                    "served_by": result.get("served_by")}
        return self._call("get", args, check)

    def delete(self, key: bytes) -> Timestamp:
        """Delete `key` (deleting an absent key succeeds); return the commit timestamp."""
        args = {"key": _bytes_arg("delete", "key", key), "command_id": _new_command_id()}
        return self._wrote(self._call("delete", args, _check_delete))

    def cas(self, key: bytes, expected: bytes | None, new: bytes) -> bool:
        """Set `key` to `new` if its value is `expected` (None: if it is absent). True if it
        swapped. An ambiguous outcome raises AmbiguousCommitError, never returns False."""
        args = {
            "key": _bytes_arg("cas", "key", key),
            "expected": _optional_bytes_arg("cas", "expected", expected),
            "new": _bytes_arg("cas", "new", new),
            "command_id": _new_command_id(),
        }
        _check_command_size("cas", args["key"], args["expected"] or b"", args["new"])

        def check(result: Any) -> bool:
            swapped = _check_cas(result)
            if swapped:
                self._wrote(_ts_of("cas", result))
            return swapped
        return self._call("cas", args, check)

    def scan(
        self, start: bytes, end: bytes | None = None, limit: int = 1000, *,
        max_staleness: float | None = None, read_ts: Timestamp | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (1..scan_rows_max) ``(key, value)`` pairs with start <= key < end in key
        order; `end` None means to the end of the keyspace. Fewer than `limit` only when the span
        holds fewer. Pages by `scan_page` while a page stops at the server's byte limit; to bound
        what one call holds in memory, use `scan_page`. `max_staleness` and `read_ts` as for
        `get`; every page of a follower read reads at the first page's timestamp."""
        _check_limit(limit)
        rows: list[tuple[bytes, bytes]] = []
        at: bytes | None = start
        while at is not None and len(rows) < limit:
            page, at, page_ts = self._scan_page(at, end, limit - len(rows), 0, max_staleness, read_ts)
            if page_ts is not None and (max_staleness is not None or read_ts is not None):
                max_staleness, read_ts = None, Timestamp.from_wire(page_ts)
            rows.extend(page)
        return rows

    def scan_page(
        self, start: bytes, end: bytes | None = None, limit: int = 1000, max_bytes: int = 0, *,
        max_staleness: float | None = None, read_ts: Timestamp | None = None
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """One page of `scan`: at most `limit` rows, taken until their keys' and values' bytes
        reach `max_bytes` (that row the last, so a page always makes progress; 0: the server's own
        bound, which keeps an answer within a frame), and the key to resume from - None when
        the span holds no more."""
        rows, resume, _ = self._scan_page(start, end, limit, max_bytes, max_staleness, read_ts)
        return rows, resume

    def _scan_page(self, start, end, limit, max_bytes, max_staleness, read_ts):
        _check_limit(limit)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 <= max_bytes <= constants.scan_bytes_max:
            raise ValueError(f"scan: max_bytes must be an int in [0, {constants.scan_bytes_max}], got {max_bytes!r}")
        args = {
            "start": _bytes_arg("scan", "start", start),
            "end": _optional_bytes_arg("scan", "end", end),
            "limit": limit,
        }
        if max_bytes:
            args["max_bytes"] = max_bytes
        self._staleness_args(args, max_staleness, read_ts)
        return self._call("scan", args, lambda result: _check_scan(result, limit) + (result.get("read_ts"),))

    def split(self, key: bytes) -> dict:
        """Split the range holding `key` (a raw user key, as given to `put`) so that a range
        starts exactly at `key`; return the server's result map (contents not checked beyond
        being a map). ``result.get("already")`` is True when a range already started at `key`,
        which is also the answer to a retry of a split that did apply, so callers cannot tell
        "I split it" from "it was split" and need not.

        Errors as for `put`: UnavailableError surely did not split, AmbiguousCommitError may
        have; splitting again at the same key is safe either way.
        """
        return self._call("split", {"key": _bytes_arg("split", "key", key)}, _check_split)

    def status(self) -> dict:
        """The serving node's status map (node id, region, leader, ...; contents not checked)."""
        return self._call("status", {}, _check_status)

    def drain(self) -> int:
        """Ask the node this client reaches first to hand every lease it serves to other nodes
        (it keeps running, takes no lease until it restarts); returns how many it still serves
        after drain_timeout_s (0: drained). Send it with a Client of one address: a retry on
        another address would drain that node instead."""
        result = self.request("drain", {}, _check_status, write=False,
                              timeout_s=constants.drain_timeout_s + 5.0, attempt_timeout_s=constants.drain_timeout_s + 5.0)
        return int(result["leases_left"])

    def lease_transfer(self, range_id: int, to: int) -> None:
        """Ask the node this client reaches (which must serve the range's lease) to move the
        lease of `range_id` to node `to`: the lead moves first, the lease follows it."""
        self.request("lease_transfer", {"range_id": range_id, "to": to}, _check_status, write=False)

    def check_consistency(
        self, start: bytes = b"", end: bytes | None = None, *, timeout_s: float | None = None
    ) -> list[dict]:
        """Run a consistency check of every range overlapping ``[start, end)`` now (store keys:
        the default is every range, meta included) and return one result map per range, in key
        order: ``status`` is ``consistent`` (every replica reported the same checksum at
        ``index``), ``inconsistent`` (``differing`` lists the odd replicas) or ``incomplete``
        (some replica did not report; ``detail`` says which and why); ``replicas`` is
        ``[[node id, checksum hex or None, error or None], ...]``. See raftstore.kvserver.consistency.

        One attempt waits up to `timeout_s` (default consistency_call_timeout_s: the serving node
        bounds the check below that); a failed attempt runs a new check on the next address.
        Errors as for `get`.
        """
        args = {"start": _bytes_arg("check_consistency", "start", start),
                "end": _optional_bytes_arg("check_consistency", "end", end)}
        limit = _seconds_arg("timeout_s", timeout_s) if timeout_s is not None else constants.consistency_call_timeout_s
        return self.request("check_consistency", args, _check_consistency, write=False,
                            timeout_s=limit, attempt_timeout_s=limit)

    def close(self) -> None:
        """Close the connection. Idempotent; later calls raise RuntimeError."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- retry loop -------------------------------------------------------------------------

    def _call(self, op: str, args: dict[str, Any], check: Callable[[Any], Any]) -> Any:
        return self.request(op, args, check, write=op in _WRITE_OPS)

    def request(
        self,
        op: str,
        args: dict[str, Any],
        check: Callable[[Any], Any],
        *,
        write: bool,
        resend: bool = True,
        timeout_s: float | None = None,
        attempt_timeout_s: float | None = None,
    ) -> Any:
        """Send one request of any op in `wire.REQUEST_ARGS` with the retry policy of the module
        docstring; return ``check(result)`` of the ok answer (`check` raises ValueError for a
        malformed result, which becomes ProtocolError, ambiguous for a write).

        `write`: the request may change state, so a failure after it may have reached a server
        leaves it ambiguous rather than failed. `resend`: the request may be sent again after it
        may have reached a server (a write the server deduplicates, e.g. by command id; a KV
        read); with ``resend=False`` the first failure after a send raises at once,
        AmbiguousCommitError for a write and the failure itself (not ambiguous) for a read, and
        only failures before a send move to the next address. `timeout_s` / `attempt_timeout_s`
        replace the client's bounds for this call (an op the server itself bounds above them).
        Errors as for `put`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{op} on a closed raftstore Client")
            request_id = self._next_request_id
            self._next_request_id += 1
            try:
                frame = wire.encode_frame({"id": request_id, "op": op, "args": args})
            except wire.FrameError as exc:
                raise TooLargeError(f"{op}: {exc} ({TooLargeError.hint})") from None

            total_s = self.timeout_s if timeout_s is None else timeout_s
            attempt_s = self.attempt_timeout_s_max if attempt_timeout_s is None else attempt_timeout_s
            result = self._retrying(
                op,
                lambda deadline: self._attempt(
                    op, request_id, frame, deadline, check_idle=not resend
                ),
                write=write,
                resend=resend,
                total_s=total_s,
                attempt_s=attempt_s,
            )
            try:
                return check(result)
            except ValueError as exc:
                raise ProtocolError(
                    f"{op} succeeded but the server's result is malformed: {exc} "
                    f"({ProtocolError.hint})",
                    ambiguous=write,
                ) from None

    def connect(self) -> None:
        """Open a connection now rather than at the first call: to the first address, in order,
        that accepts one, within `timeout_s`. Does nothing if one is open. Raises
        ConnectionFailedError (at once when every address refuses the connection),
        RuntimeError after `close()`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("connect on a closed raftstore Client")
            if self._sock is None:
                self._retrying(
                    "connect",
                    self._ensure_connected,
                    write=False,
                    resend=True,
                    total_s=self.timeout_s,
                    attempt_s=self.attempt_timeout_s_max,
                )

    def _retrying(
        self,
        op: str,
        attempt: Callable[[float], Any],
        *,
        write: bool,
        resend: bool,
        total_s: float,
        attempt_s: float,
    ) -> Any:
        """Run ``attempt(attempt_deadline)`` on the current address until it returns, moving
        to the next address after each _AttemptFailed (module doc: the policy). An address
        whose failure no retry can change (`_AttemptFailed.final`: it refused the connection)
        is tried again without a pause; once every address failed so, this gives up at once."""
        deadline = time.monotonic() + total_s
        last: _AttemptFailed | None = None
        maybe_applied = False
        failures = 0
        final: dict[int, RaftstoreError] = {}  # address index -> why it cannot answer now
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt_deadline = time.monotonic() + min(remaining, attempt_s)
            try:
                return attempt(attempt_deadline)
            except _AttemptFailed as failed:
                last = failed
                maybe_applied = maybe_applied or (write and failed.maybe_applied)
                self._drop_connection()
                if failed.maybe_applied and not resend:   # it may have reached a server: never again
                    if write:
                        raise self._ambiguous(op, failed.error.message) from None
                    raise self._not_resent(op, failed.error) from None
                if failed.final:
                    final[self._index] = failed.error
                    if len(final) == len(self._addresses):
                        self._give_up_refused(op, maybe_applied, final)
                else:
                    final.pop(self._index, None)
                self._index = (self._index + 1) % len(self._addresses)
                if failed.final:
                    continue  # another address may answer: try it now
                failures += 1
                pause = min(backoff_delay_s(failures, self._rng), deadline - time.monotonic())
                if pause > 0:
                    time.sleep(pause)
                continue
            except RaftstoreError as exc:
                # A definite, non-retryable answer (bad_request, too_large, internal, ...).
                # A SQL error from the only attempt that may have applied is the server's
                # own account of the outcome (its `ambiguous` included): raised as it is.
                if isinstance(exc, SqlError) and not maybe_applied:
                    raise
                if write and (maybe_applied or exc.ambiguous):
                    raise self._ambiguous(op, str(exc)) from exc
                raise
            except BaseException:
                # Interrupted mid-exchange (KeyboardInterrupt): the stream may hold the rest
                # of this answer, which the next call must not read as its own.
                self._drop_connection()
                raise
        self._give_up(op, write, maybe_applied, last, total_s)

    def _give_up_refused(
        self, op: str, maybe_applied: bool, final: dict[int, RaftstoreError]
    ) -> NoReturn:
        """Every address refused this call in a way no retry within it can change."""
        reasons = [final[i].message for i in sorted(final)]
        if all(isinstance(e, _Refused) for e in final.values()):
            detail = (f"connection refused by {', '.join(self.addresses)}: nothing listens "
                      "there")
        else:
            detail = "; ".join(reasons)
        if maybe_applied:
            raise self._ambiguous(op, f"an earlier attempt may have applied it; now {detail}")
        raise ConnectionFailedError(f"{op}: {detail} ({ConnectionFailedError.hint})")

    def _give_up(
        self, op: str, write: bool, maybe_applied: bool, last: _AttemptFailed | None, total_s: float
    ) -> NoReturn:
        waited = f"after {total_s:g} s"
        if write and maybe_applied:
            detail = f"; last error: {last.error.message}" if last is not None else ""
            raise self._ambiguous(op, f"no definite answer {waited}{detail}")
        if last is None:  # the deadline passed before the first attempt could start
            raise ConnectionFailedError(
                f"{op}: no attempt could be made {waited} to {', '.join(self.addresses)} "
                f"({ConnectionFailedError.hint})"
            )
        error = last.error
        if isinstance(error, ConnectionFailedError):
            error = ConnectionFailedError(
                f"{op}: could not get an answer from any of {', '.join(self.addresses)} "
                f"{waited}; last error: {error.message} ({ConnectionFailedError.hint})"
            )
        raise error

    @staticmethod
    def _not_resent(op: str, error: RaftstoreError) -> RaftstoreError:
        """The failure of a read that must not run twice (``resend=False``), after its request
        may have reached a server: raised as it is, saying why no other node was asked."""
        detail = ("; it was not sent to another node, since it may still be running where it went "
                  "(a statement that may have reached a node is never run again elsewhere)")
        return type(error)(f"{op}: {error.message}{detail}", code=error.code, ambiguous=False)

    @staticmethod
    def _ambiguous(op: str, detail: str) -> AmbiguousCommitError:
        hint = AmbiguousCommitError.hint
        if op == "split":  # reading a key cannot tell; repeating the split can, harmlessly
            hint = "the split may have happened; splitting again at the same key is safe"
        if op == "sql":
            hint = (
                "the statement may have committed; check with a SELECT before running it again"
            )
            return AmbiguousCommitError(
                f"the statement may or may not have committed: {detail} ({hint})"
            )
        if hint in detail:  # the server's ambiguous answer carries it already: say it once
            return AmbiguousCommitError(f"{op} may or may not have committed: {detail}")
        return AmbiguousCommitError(f"{op} may or may not have committed: {detail} ({hint})")

    def _attempt(
        self, op: str, request_id: int, frame: bytes, deadline: float, *, check_idle: bool = False
    ) -> Any:
        """Send `frame` once and return the result of an ok answer.

        `check_idle`: first make sure a reused connection was not closed by the server while it
        sat idle (and open a new one if it was), for requests that must not be sent twice.
        Raises _AttemptFailed when the next address should be tried, RaftstoreError for a
        definite answer that retrying cannot change.
        """
        address = _format_address(self._addresses[self._index])
        if check_idle and self._sock is not None and _closed_while_idle(self._sock):
            self._drop_connection()
        self._ensure_connected(deadline)
        assert self._sock is not None and self._decoder is not None
        timed = _DeadlineSocket(self._sock, deadline)
        sent = False
        try:
            timed.sendall(frame)
            # Every byte is with the kernel now: the server may read, apply and crash before
            # answering, so from here a failure leaves a write ambiguous.
            sent = True
            response = wire.read_frame(timed, self._decoder)
            response_id, ok, body = wire.validate_response(response)
            if response_id == wire.CONNECTION_REFUSAL_ID and not ok and _code(body) in ("too_many_connections",
                                                                                     "unavailable"):
                # Every connection the node allows is busy, or its memory for clients is spent
                # (the request was not run): another node, or this one later.
                raise _AttemptFailed(UnavailableError(f"{address}: {_reason(body)}"), maybe_applied=False)
            if response_id == wire.CONNECTION_REFUSAL_ID and not ok:
                # Not an answer to the request: the port refuses clients (a peer port).
                raise _AttemptFailed(
                    ConnectionFailedError(f"{address} is not a client port: {_reason(body)}"),
                    maybe_applied=False,
                    final=True,
                )
            if response_id != request_id:
                raise wire.BadResponse(
                    f"response id {response_id} does not match request id {request_id}"
                )
            if not ok:
                error = error_from_wire(body)
                if isinstance(error, ProtocolError):
                    raise wire.BadResponse(error.message)
            elif response.get("more") is True:
                body = self._rest_of(timed, request_id, body)
        except (OSError, wire.FrameError, wire.BadResponse) as exc:
            when = "after sending the request" if sent else "while sending the request"
            raise _AttemptFailed(
                ConnectionFailedError(
                    f"connection to {address} failed {when}: {_describe(exc)}"
                ),
                maybe_applied=sent,
            ) from None
        if ok:
            return body
        if error.code in RETRY_ELSEWHERE_CODES or error.code == "ambiguous":
            raise _AttemptFailed(error, maybe_applied=error.ambiguous)
        raise error

    def _rest_of(self, timed: "_DeadlineSocket", request_id: int, first: Any) -> Any:
        """The whole result of an answer sent in pages (raftstore.wire): `first`'s rows and
        those of each following frame of the same id, up to the one without `more`. A page
        that is an error is that answer's error."""
        assert self._decoder is not None
        if not isinstance(first, dict) or not isinstance(first.get("rows"), list):
            raise wire.BadResponse("a paged result must be a map with rows")
        rows = first["rows"]
        held = _rows_bytes(rows)
        while True:
            response = wire.read_frame(timed, self._decoder)
            response_id, ok, body = wire.validate_response(response)
            if response_id != request_id:
                raise wire.BadResponse(f"page of response {response_id} in the answer to {request_id}")
            if not ok:
                self._drop_connection()   # what else the server meant to send is not ours to read
                raise error_from_wire(body)
            held += _rows_bytes(body.get("rows")) if isinstance(body, dict) else 0
            if held > RESULT_BYTES_MAX:
                # A node sends at most its --max-result-bytes (64 MiB by default).
                raise wire.BadResponse(f"a result of more than {RESULT_BYTES_MAX} bytes: the server does not "
                                       "stop sending it")
            if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
                raise wire.BadResponse("a page of a result must be a map with rows")
            rows.extend(body["rows"])
            if response.get("more") is not True:
                return first

    def _ensure_connected(self, deadline: float) -> None:
        """Open a connection to the current address unless one is open; raises _AttemptFailed
        (`final` when the address refused it: nothing listens there)."""
        if self._sock is not None:
            return
        address = _format_address(self._addresses[self._index])
        try:
            self._connect(deadline)
        except ConnectionRefusedError:
            raise _AttemptFailed(
                _Refused(f"connection refused by {address}"), maybe_applied=False, final=True
            ) from None
        except OSError as exc:
            error = ConnectionFailedError(f"cannot connect to {address}: {_describe(exc)}")
            raise _AttemptFailed(error, maybe_applied=False) from None

    def _connect(self, deadline: float) -> None:
        host, port = self._addresses[self._index]
        timeout = max(deadline - time.monotonic(), 0.001)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (tests may hand us something else); latency only
        self._sock = sock
        self._decoder = wire.FrameDecoder(constants.client_frame_bytes_max)

    def _drop_connection(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._decoder = None


def _seconds_arg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value}")
    return float(value)


def _closed_while_idle(sock: socket.socket) -> bool:
    """True if the idle connection `sock` cannot carry a new request: the server closed it (EOF
    or reset), or it holds bytes nobody asked for. Does not block.

    Between calls nothing should be in flight, so a non-blocking peek that finds no data means
    the connection is still open as far as this end can tell.
    """
    try:
        sock.setblocking(False)
        try:
            sock.recv(1, socket.MSG_PEEK)
        finally:
            sock.setblocking(True)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return True


RESULT_BYTES_MAX = 1 << 30   # a paged result the client joins at most (what a faulty server can make it hold)


def _rows_bytes(rows: Any) -> int:
    """About what `rows` hold: their texts' and byte strings' lengths, 8 for any other value."""
    if not isinstance(rows, list):
        return 0
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for row in rows if isinstance(row, list) for v in row)


def _code(error: Any) -> str | None:
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _reason(error: Any) -> str:
    """The message of an error map from the network, bounded, for showing in ours."""
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        return "no reason given"
    return " ".join(message.split())[:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out"
    return str(exc) or type(exc).__name__
