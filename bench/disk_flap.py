"""A leader whose disk flaps full: is every write it acknowledged still there? (issue 9, finding 1)

    python -m bench.disk_flap --runs 3 [--seconds 15] [--tmpfs-mb 300] [--label NAME] [--keep-logs]

Why: a node that runs out of disk must either keep what it acknowledged or stop; it must never
go on serving with a hole in its data. This scenario drives a real cluster into that corner the
way a real disk gets there -- full, with a little space coming and going as other programs write
and delete -- and checks the promise from outside: through each node, and in each node's SQLite
file. Run it as root: every data dir is a tmpfs of its own, so only the leader's disk fills.

One run:
  1. mount a --tmpfs-mb tmpfs as each node's data dir; start 3 `raftstore start` processes
     (raftstore.localcluster; node logs stay outside the tmpfs);
  2. --clients threads put unique keys (raftstore.kv.Client, each through a different node
     first), recording every acknowledged key and every failure by kind (unavailable,
     ambiguous, other) and message;
  3. fill the tmpfs of the node that leads the data range(s) with a filler file; then, for
     --seconds, every --flap-period-s: free --flap-bytes of the filler, wait half a period, fill
     again, wait half a period;
  4. delete the filler (space returns). If the leader exited by itself meanwhile (a crash-only
     node stops on a storage error), record how and restart it with the same flags, as an
     operator's supervisor would. Writers go on for --settle-s, then stop;
  5. check "space returned": read every acknowledged key through each node alone (a read goes
     through the Raft log and is answered from that node's own state machine); kill -9 the
     leader, restart it with the same flags, wait until it serves, check again ("restarted");
  6. stop the cluster (SIGTERM) and read the keys in each node's SQLite MVCC file (read-only).
A run passes when no acknowledged key is missing through any node in either check and every
node's store holds the same keys (`problems`). Every node is stopped and every tmpfs unmounted on
every exit, Ctrl-C and SIGTERM included.

Node flags: `--disk-reserve-bytes` and `--disk-ballast-bytes` are passed only when `raftstore
start --help` lists them, so the same harness measures builds from before and after they exist.

Output: one line per run, a summary, and bench/results/disk-flap-<label>-<UTC time>.json.
tests/test_disk_full.py runs one shortened run through `run_once` and asserts `problems` is empty.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Callable

from raftstore import constants
from raftstore.errors import AmbiguousCommitError, RaftstoreError, UnavailableError
from raftstore.kv import Client
from raftstore.kvserver.ranges import META_RANGE_ID
from raftstore.kvserver.replica import RAW_PREFIX
from raftstore.localcluster import Cluster, NodeProc

SCHEMA_VERSION = 1

# Scenario defaults (the figures) and the harness's own bounds.
nodes_count = 3
clients_default = 4
seconds_default = 15.0
tmpfs_mb_default = 300
flap_bytes_default = 128 * 1024
flap_period_s_default = 0.25
warmup_s_default = 2.0           # writes acknowledged before the disk fills
settle_s_default = 2.0           # writes after space returned, before the checks
# A row-sized value: more of a tick's SQLite commits then need new pages while the disk is full.
# On the build before crash-only, 15 s runs with 100-byte values met 0-19 failed commits ("database
# or disk is full") and 2 of 14 lost nothing; with 1 KiB values 14-50, and 16 of 16 (8 s and 15 s
# runs) lost acknowledged writes.
value_bytes_default = 1024
disk_reserve_bytes_default = 32 * 1024 * 1024   # passed only if the build has --disk-reserve-bytes
disk_ballast_bytes_default = 16 * 1024 * 1024   # passed only if the build has --disk-ballast-bytes
writer_timeout_s = 10.0          # one put, retries included
leader_timeout_s = 60.0          # liveness waits: generous, the machine is shared
serve_timeout_s = 120.0
read_timeout_s = 60.0            # reading every key through one node, retries included
stop_timeout_s = 20.0
scan_page_bytes = constants.client_frame_bytes_max // 2   # a scan answer must fit one client frame
fill_chunk_bytes = 1024 * 1024
fill_tail_bytes = 4096           # a tmpfs page: the last bytes are taken in pages
unmount_attempts_max = 20
messages_kept_max = 20           # distinct failure messages kept per run
log_excerpt_lines_max = 5
examples_kept_max = 5

FILLER_NAME = "disk-flap-filler"
KEY_PREFIX = b"flap/"
KEY_END = b"flap0"               # first key after every KEY_PREFIX key ("/" + 1 == "0")
PROBE_KEY = b"flap-probe"        # read (never written) to see that a node serves

# Lines of a node's log that say it met a storage error (today's SQLite message, the errno, and
# the words the crash-only and disk-reserve changes use).
STORAGE_ERROR_RE = re.compile(
    r"disk is full|no space left|ENOSPC|errno 28|disk nearly full|storage error|disk I/O error", re.IGNORECASE)

LOG_STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class HarnessError(Exception):
    """The scenario could not be carried out (not a finding about the system under test)."""


class MountError(HarnessError):
    pass


@dataclass
class FlapConfig:
    """The knobs of one run; the defaults are the issue's scenario (the command's flags)."""

    seconds: float = seconds_default
    tmpfs_mb: int = tmpfs_mb_default
    clients: int = clients_default
    flap_bytes: int = flap_bytes_default
    flap_period_s: float = flap_period_s_default
    warmup_s: float = warmup_s_default
    settle_s: float = settle_s_default
    value_bytes: int = value_bytes_default
    disk_reserve_bytes: int = disk_reserve_bytes_default
    disk_ballast_bytes: int = disk_ballast_bytes_default
    keep_logs: bool = False


# --- tmpfs ------------------------------------------------------------------------------------


def mount_tmpfs(path: str, size_mb: int) -> None:
    """Mount a fresh tmpfs of `size_mb` MiB on the existing directory `path`. Raises MountError."""
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mb, "tmpfs", path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountError("cannot mount a %d MiB tmpfs on %s: %s" % (size_mb, path,
                                                                      " ".join((proc.stderr or proc.stdout).split())))


def unmount(path: str) -> None:
    """Unmount `path`, retrying while it is busy (a process just killed may still hold files),
    then lazily. Raises MountError naming the path if it stays mounted."""
    last = ""
    for _ in range(unmount_attempts_max):
        proc = subprocess.run(["umount", path], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        last = (proc.stderr or proc.stdout).strip()
        time.sleep(0.25)
    if subprocess.run(["umount", "-l", path], capture_output=True).returncode != 0:
        raise MountError("could not unmount the tmpfs on %s (%s); unmount it by hand" % (path, last))


def tmpfs_unavailable_reason() -> str | None:
    """Why this process cannot run the scenario (not root, no tmpfs), or None if it can."""
    if os.geteuid() != 0:
        return "the disk-flap scenario mounts a tmpfs per node and needs root (running as uid %d)" % os.geteuid()
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not on PATH"
    probe = tempfile.mkdtemp(prefix="disk-flap-probe-")
    try:
        try:
            mount_tmpfs(probe, 1)
        except MountError as exc:
            return str(exc)
        unmount(probe)
        return None
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


# --- the disk ---------------------------------------------------------------------------------


class DiskFiller:
    """A file that takes every free byte of its filesystem and gives some back on request."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def fill(self) -> int:
        """Append until the filesystem says ENOSPC; returns the bytes added."""
        added = 0
        for chunk in (b"\0" * fill_chunk_bytes, b"\0" * fill_tail_bytes):
            while True:
                try:
                    written = os.pwrite(self._fd, chunk, self.size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                self.size += written
                added += written
                if written < len(chunk):
                    break
        return added

    def free(self, nbytes: int) -> int:
        """Give back up to `nbytes` from the end; returns the bytes freed."""
        new_size = max(0, self.size - nbytes)
        os.ftruncate(self._fd, new_size)
        freed, self.size = self.size - new_size, new_size
        return freed

    def remove(self) -> None:
        """Close and delete the filler (idempotent): the space returns."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def flap(filler: DiskFiller, node: NodeProc, seconds: float, period_s: float, nbytes: int,
         on_exit: Callable[[NodeProc, float], None]) -> dict[str, Any]:
    """For `seconds`: free `nbytes` of the (full) filler, wait half of `period_s`, fill again, wait
    the other half. Calls on_exit(node, seconds_into_flap) once if `node`'s process exits
    meanwhile (the flap goes on: the disk does not care). Returns what was freed and refilled."""
    stats = {"cycles": 0, "freed_bytes": 0, "refilled_bytes": 0}
    start = time.monotonic()
    end = start + seconds
    exited = False
    step = 0
    while time.monotonic() < end:
        if step % 2 == 0:
            stats["freed_bytes"] += filler.free(nbytes)
        else:
            stats["refilled_bytes"] += filler.fill()
            stats["cycles"] += 1
        step += 1
        if not exited and node.proc is not None and node.proc.poll() is not None:
            exited = True
            on_exit(node, time.monotonic() - start)
        time.sleep(max(0.0, min(end, start + step * period_s / 2) - time.monotonic()))
    # Bytes the node took from the freed space, net of what it gave back.
    stats["taken_by_node_bytes"] = stats["freed_bytes"] - stats["refilled_bytes"]
    return stats


# --- writers ----------------------------------------------------------------------------------


def failure_kind(exc: RaftstoreError) -> str:
    """How a put failed, as a client must read it: surely not applied, maybe applied, or other."""
    if isinstance(exc, AmbiguousCommitError) or exc.ambiguous:
        return "ambiguous"
    if isinstance(exc, UnavailableError):
        return "unavailable"
    return "other"


def message_shape(exc: BaseException) -> str:
    """An error message with its numbers (ports, indexes, ids) blanked, so alike ones count as one."""
    return "%s: %s" % (type(exc).__name__, re.sub(r"\d+", "#", str(exc))[:240])


class Writers:
    """`count` threads putting unique keys under KEY_PREFIX, thread w through node w mod n first.

    `acked` holds every key whose put was acknowledged, with its value; failures are counted by
    kind and by message shape. A thread that dies of anything but a RaftstoreError is a harness
    bug: `stop()` raises it.
    """

    def __init__(self, addresses: list[str], count: int, value_bytes: int) -> None:
        self.acked: dict[bytes, bytes] = {}
        self.failures: collections.Counter[str] = collections.Counter()
        self.messages: collections.Counter[tuple[str, str]] = collections.Counter()
        self.crashed: list[str] = []
        self._failure_raised = False
        self._value_bytes = value_bytes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        n = len(addresses)
        self._threads = [threading.Thread(target=self._guarded, args=(w, [addresses[(w + k) % n] for k in range(n)]),
                                          name="disk-flap-writer-%d" % w, daemon=True)
                         for w in range(count)]

    def start(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def _guarded(self, w: int, addresses: list[str]) -> None:
        try:
            self._run(w, addresses)
        except BaseException as exc:  # recorded and raised by stop(): a harness bug, not a finding
            self.crashed.append("writer %d: %s: %s" % (w, type(exc).__name__, exc))

    def _run(self, w: int, addresses: list[str]) -> None:
        with Client(addresses, timeout_s=writer_timeout_s) as client:
            i = 0
            while not self._stop.is_set():
                key = KEY_PREFIX + b"w%d-%08d" % (w, i)
                value = (b"%s=" % key).ljust(self._value_bytes, b"v")
                try:
                    client.put(key, value)
                except RaftstoreError as exc:
                    kind = failure_kind(exc)
                    with self._lock:
                        self.failures[kind] += 1
                        self.messages[(kind, message_shape(exc))] += 1
                else:
                    with self._lock:
                        self.acked[key] = value
                i += 1

    def stop(self) -> None:
        """Stop and join every thread (idempotent). Raises HarnessError if one crashed."""
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:
                t.join(writer_timeout_s + 30.0)
        alive = [t.name for t in self._threads if t.is_alive()]
        if (alive or self.crashed) and not self._failure_raised:
            self._failure_raised = True
            raise HarnessError("writers failed: %s" % "; ".join(self.crashed + ["%s did not stop" % a for a in alive]))

    def summary(self) -> dict[str, Any]:
        with self._lock:
            top = self.messages.most_common(messages_kept_max)
            return {"acknowledged": len(self.acked),
                    "failures": {kind: self.failures.get(kind, 0) for kind in ("unavailable", "ambiguous", "other")},
                    "failure_messages": [{"kind": kind, "message": msg, "count": count}
                                         for (kind, msg), count in top],
                    "failure_messages_distinct": len(self.messages)}


# --- the cluster ------------------------------------------------------------------------------


def start_flags(reserve_bytes: int, ballast_bytes: int) -> list[str]:
    """The disk flags this build's `raftstore start --help` lists, with the given values."""
    proc = subprocess.run([sys.executable, "-m", "raftstore.cli", "start", "--help"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise HarnessError("raftstore start --help failed: %s" % (proc.stderr or proc.stdout).strip())
    flags = []
    for flag, value in (("--disk-reserve-bytes", reserve_bytes), ("--disk-ballast-bytes", ballast_bytes)):
        if flag in proc.stdout:
            flags += [flag, str(value)]
    return flags


def _status(node: NodeProc, timeout_s: float = 2.0) -> dict | None:
    try:
        with Client([node.sql_addr], timeout_s=timeout_s) as c:
            return c.status()
    except RaftstoreError:
        return None


def data_leaders(cluster: Cluster) -> dict[int, int | None]:
    """range id -> leader node id of every data range, as the first live node that answers sees it."""
    for n in cluster.nodes:
        if n.pid is None:
            continue
        status = _status(n)
        if status is not None:
            return {r["range_id"]: r["leader"] for r in status.get("ranges", []) if r["range_id"] != META_RANGE_ID}
    return {}


def wait_data_leader(cluster: Cluster) -> NodeProc:
    """The node leading the most data ranges, once every data range has a leader."""
    cluster.wait_leader(leader_timeout_s)
    deadline = time.monotonic() + leader_timeout_s
    while time.monotonic() < deadline:
        leaders = data_leaders(cluster)
        if leaders and None not in leaders.values():
            node_id, _ = collections.Counter(leaders.values()).most_common(1)[0]
            return cluster.node(node_id)
        time.sleep(0.2)
    raise HarnessError("the data ranges have no leader within %.0f s; logs in %s" % (leader_timeout_s, cluster.root))


def wait_serving(cluster: Cluster, node: NodeProc) -> float:
    """Wait until `node` answers a linearizable read by itself; returns the seconds waited.
    Raises HarnessError with its log's tail if it exits or does not serve in time."""
    start = time.monotonic()
    while time.monotonic() - start < serve_timeout_s:
        if node.pid is None:
            raise HarnessError("n%d exited (%s) before it served; its log ends:\n%s"
                               % (node.node_id, describe_exit(node.proc.returncode if node.proc else None),
                                  cluster.log_tail(node)))
        try:
            with Client([node.sql_addr], timeout_s=3.0) as c:
                if c.status().get("formed"):
                    c.get(PROBE_KEY)
                    return time.monotonic() - start
        except RaftstoreError:
            pass
        time.sleep(0.2)
    raise HarnessError("n%d did not serve within %.0f s of its restart; its log ends:\n%s"
                       % (node.node_id, serve_timeout_s, cluster.log_tail(node)))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return "signal %s" % signal.Signals(-code).name
        except ValueError:
            return "signal %d" % -code
    return "exit code %d" % code


def storage_error_lines(log_path: str) -> tuple[int, list[str]]:
    """How many lines of a node's log name a storage error, and the most frequent kinds of them
    (timestamps dropped, numbers blanked), each with its count."""
    shapes: collections.Counter[str] = collections.Counter()
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if STORAGE_ERROR_RE.search(line):
                    shapes[re.sub(r"\d+", "#", LOG_STAMP_RE.sub("", line.strip()))[:300]] += 1
    except OSError:
        pass
    return sum(shapes.values()), ["%d x %s" % (n, shape) for shape, n in shapes.most_common(log_excerpt_lines_max)]


# --- checks -----------------------------------------------------------------------------------


def scan_page_rows(value_bytes: int) -> int:
    """Rows per scan page: as many as keep a page of `value_bytes` values within half a client
    frame (a larger answer cannot be sent), at most scan_rows_max."""
    return max(1, min(constants.scan_rows_max, scan_page_bytes // (value_bytes + 64)))


def read_through(node: NodeProc, value_bytes: int) -> dict[bytes, bytes]:
    """Every key under KEY_PREFIX, read through `node` alone (scans go through the Raft log and
    are answered from that node's own state machine). Retries while the range has no leader;
    raises HarnessError after read_timeout_s."""
    deadline = time.monotonic() + read_timeout_s
    page_rows = scan_page_rows(value_bytes)
    while True:
        try:
            out: dict[bytes, bytes] = {}
            start = KEY_PREFIX
            with Client([node.sql_addr]) as c:
                while True:
                    page = c.scan(start, KEY_END, page_rows)
                    out.update(page)
                    if len(page) < page_rows:
                        return out
                    start = page[-1][0] + b"\x00"
        except RaftstoreError as exc:
            if time.monotonic() > deadline:
                raise HarnessError("could not read through n%d within %.0f s: %s" % (node.node_id, read_timeout_s, exc))
            time.sleep(0.5)


def compare_acked(acked: dict[bytes, bytes], seen: dict[bytes, bytes]) -> dict[str, Any]:
    """Acknowledged keys absent from `seen`, and present with another value."""
    missing = sorted(k for k in acked if k not in seen)
    wrong = sorted(k for k, v in acked.items() if k in seen and seen[k] != v)
    return {"missing": len(missing), "wrong_value": len(wrong),
            "missing_examples": [k.decode() for k in missing[:examples_kept_max]],
            "wrong_value_examples": [k.decode() for k in wrong[:examples_kept_max]]}


def check_reads(cluster: Cluster, acked: dict[bytes, bytes], value_bytes: int) -> dict[str, dict[str, Any]]:
    """compare_acked through every node; a node that cannot be read gets 'read_error'."""
    out = {}
    for n in cluster.nodes:
        try:
            out["n%d" % n.node_id] = compare_acked(acked, read_through(n, value_bytes))
        except HarnessError as exc:
            out["n%d" % n.node_id] = {"read_error": str(exc)}
    return out


def store_contents(data_dir: str) -> tuple[set[bytes], dict[str, int]]:
    """The KEY_PREFIX keys (without the raw prefix) in a stopped node's SQLite MVCC file, opened
    read-only, and its applied index per range. Keys are never deleted in this scenario, so a key
    with any version counts."""
    path = os.path.join(data_dir, "store.sqlite")
    conn = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True)
    try:
        rows = conn.execute("SELECT DISTINCT key FROM versions WHERE key >= ? AND key < ?",
                            (RAW_PREFIX + KEY_PREFIX, RAW_PREFIX + KEY_END))
        keys = {bytes(k)[len(RAW_PREFIX):] for (k,) in rows}
        applied = {"r%d" % rid: idx for rid, idx in conn.execute("SELECT range_id, applied_index FROM range_state")}
    finally:
        conn.close()
    return keys, applied


def check_stores(cluster: Cluster, acked: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    """Per node: keys in its store, acknowledged keys missing from it, keys the others hold and it
    lacks (and the reverse), applied indexes. The nodes must be stopped."""
    contents = {}
    for n in cluster.nodes:
        try:
            contents[n.node_id] = store_contents(n.data_dir)
        except sqlite3.Error as exc:
            contents[n.node_id] = exc
    union = set().union(*(c[0] for c in contents.values() if not isinstance(c, Exception)))
    out = {}
    for nid, c in contents.items():
        if isinstance(c, Exception):
            out["n%d" % nid] = {"store_error": "%s: %s" % (type(c).__name__, c)}
            continue
        keys, applied = c
        out["n%d" % nid] = {"keys": len(keys), "acked_missing": sum(1 for k in acked if k not in keys),
                            "lacks_from_others": len(union - keys), "applied_index": applied}
    return out


def problems(result: dict[str, Any]) -> list[str]:
    """What a run found wrong: acknowledged keys missing (or changed) through a node, a node that
    could not be read, stores that differ. Empty means the run kept every promise."""
    out = []
    for phase in ("space_returned", "restarted"):
        for node, r in result.get("reads", {}).get(phase, {}).items():
            if "read_error" in r:
                out.append("%s: %s could not be read: %s" % (phase, node, r["read_error"]))
            elif r["missing"] or r["wrong_value"]:
                out.append("%s: %d acknowledged keys missing and %d with another value through %s (e.g. %s)"
                           % (phase, r["missing"], r["wrong_value"], node,
                              ", ".join(r["missing_examples"] + r["wrong_value_examples"])))
    stores = result.get("stores", {})
    for node, s in stores.items():
        if "store_error" in s:
            out.append("%s's store could not be read: %s" % (node, s["store_error"]))
        elif s["acked_missing"] or s["lacks_from_others"]:
            out.append("%s's store holds %d keys: %d acknowledged keys and %d keys of the other stores are missing"
                       % (node, s["keys"], s["acked_missing"], s["lacks_from_others"]))
    if not stores:
        out.append("the stores were not read")
    for r in result.get("consistency", []):
        if r.get("status") != "consistent":
            out.append("range r%s: replicas not shown identical: %s (%s)" % (r.get("range_id"), r.get("status"), r.get("detail")))
    if "consistency" not in result:
        out.append("the replicas' checksums were not compared")
    return out


def check_checksums(cluster: Cluster, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every range's consistency check (raftstore.kvserver.consistency) once every replica reports: a
    check that is only incomplete (a replica still catching up) is run again until timeout_s."""
    deadline = time.monotonic() + timeout_s
    with cluster.client(timeout_s=30) as kv:
        while True:
            results = kv.check_consistency()
            if all(r["status"] != "incomplete" for r in results) or time.monotonic() > deadline:
                return [{"range_id": r["range_id"], "status": r["status"], "detail": r.get("detail")} for r in results]
            time.sleep(0.5)


# --- one run ----------------------------------------------------------------------------------


def run_once(cfg: FlapConfig, say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """One run of the scenario (module docstring). Needs root (see tmpfs_unavailable_reason).
    Returns the run's findings; raises HarnessError if the scenario itself could not be carried
    out. Every node is stopped and every tmpfs unmounted before it returns or raises."""
    began = time.monotonic()
    root = tempfile.mkdtemp(prefix="disk-flap-")
    result: dict[str, Any] = {"root": root if cfg.keep_logs else None}
    with contextlib.ExitStack() as stack:
        if not cfg.keep_logs:
            stack.callback(shutil.rmtree, root, True)
        for i in range(1, nodes_count + 1):
            data_dir = os.path.join(root, "n%d" % i)
            os.mkdir(data_dir)
            mount_tmpfs(data_dir, cfg.tmpfs_mb)
            stack.callback(unmount, data_dir)
        flags = start_flags(cfg.disk_reserve_bytes, cfg.disk_ballast_bytes)
        result["node_flags"] = flags
        cluster = Cluster(root, size=nodes_count, extra_args=flags)
        stack.callback(cluster.cleanup)
        cluster.start_all()
        leader = wait_data_leader(cluster)
        result["leader"] = "n%d" % leader.node_id
        result["data_leaders_before"] = {"r%d" % r: l for r, l in data_leaders(cluster).items()}
        say("cluster up under %s (flags: %s); leader n%d" % (root, " ".join(flags) or "none", leader.node_id))

        writers = Writers([n.sql_addr for n in cluster.nodes], cfg.clients, cfg.value_bytes).start()
        stack.callback(writers.stop)
        time.sleep(cfg.warmup_s)
        result["acked_before_fill"] = len(writers.acked)

        exits: list[dict[str, Any]] = []

        def on_exit(node: NodeProc, at_s: float) -> None:
            exits.append({"node": "n%d" % node.node_id, "at_s": round(at_s, 2),
                          "how": describe_exit(node.proc.returncode)})
            say("n%d exited by itself %.2f s into the flap (%s)" % (node.node_id, exits[-1]["at_s"], exits[-1]["how"]))

        filler = DiskFiller(os.path.join(leader.data_dir, FILLER_NAME))
        stack.callback(filler.remove)
        result["filled_bytes"] = filler.fill()
        say("filled n%d's disk (%d MiB), flapping %d KiB every %.2f s for %.0f s"
            % (leader.node_id, result["filled_bytes"] >> 20, cfg.flap_bytes >> 10, cfg.flap_period_s, cfg.seconds))
        result["flap"] = flap(filler, leader, cfg.seconds, cfg.flap_period_s, cfg.flap_bytes, on_exit)
        filler.remove()
        result["free_bytes_after"] = free_bytes(leader.data_dir)
        if leader.pid is None:
            if not exits:
                on_exit(leader, cfg.seconds)
            cluster.start(leader)   # the supervisor's restart, same flags, now that space is back
            result["supervisor_restart_serving_s"] = round(wait_serving(cluster, leader), 2)
        result["exits_during_flap"] = exits
        result["data_leaders_after_flap"] = {"r%d" % r: l for r, l in data_leaders(cluster).items()}

        time.sleep(cfg.settle_s)
        writers.stop()
        result.update(writers.summary())
        acked = dict(writers.acked)
        say("%d acknowledged; checking reads through every node" % len(acked))
        result["reads"] = {"space_returned": check_reads(cluster, acked, cfg.value_bytes)}

        others_down = [describe_exit(n.proc.returncode) for n in cluster.nodes if n is not leader and n.pid is None]
        result["other_nodes_down_before_kill"] = others_down
        if leader.pid is None:   # a node that stops after space returned: the check above said so
            result["leader_end"] = describe_exit(leader.proc.returncode) + " (by itself, after space returned)"
        else:
            cluster.kill9(leader)
            result["leader_end"] = describe_exit(leader.proc.returncode) + " (the harness's kill -9)"
        cluster.start(leader)
        result["restart_serving_s"] = round(wait_serving(cluster, leader), 2)
        result["reads"]["restarted"] = check_reads(cluster, acked, cfg.value_bytes)
        result["consistency"] = check_checksums(cluster)

        result["node_stops"] = {"n%d" % n.node_id: describe_exit(cluster.stop(n, stop_timeout_s))
                                for n in cluster.nodes}
        result["stores"] = check_stores(cluster, acked)
        count, lines = storage_error_lines(leader.log_path)
        result["leader_storage_error_lines"] = count
        result["leader_storage_error_excerpt"] = lines
    result["problems"] = problems(result)
    result["duration_s"] = round(time.monotonic() - began, 1)
    return result


# --- the command ------------------------------------------------------------------------------


def run_line(index: int, r: dict[str, Any]) -> str:
    """One line per run: acknowledged, missing through each node, store keys, how the leader ended."""
    def missing(phase: str) -> str:
        return "/".join(str(v.get("missing", "?")) for v in r["reads"][phase].values())
    nodes = "/".join(r["reads"]["space_returned"])
    f = r["failures"]
    exits = "; ".join("%s %s at %.2f s" % (e["node"], e["how"], e["at_s"]) for e in r["exits_during_flap"])
    return ("run %d: leader %s; %d acknowledged (failed: %d unavailable, %d ambiguous, %d other); "
            "missing through %s: %s after space returned, %s after restart; store keys %s; "
            "leader ended: %s%s; storage error logged: %s"
            % (index, r["leader"], r["acknowledged"], f["unavailable"], f["ambiguous"], f["other"], nodes,
               missing("space_returned"), missing("restarted"),
               "/".join(str(s.get("keys", "?")) for s in r["stores"].values()),
               ("exited by itself during the flap (%s), restarted; then " % exits) if exits else "",
               r["leader_end"], ("yes (%d lines)" % r["leader_storage_error_lines"])
               if r["leader_storage_error_lines"] else "no"))


def summary_lines(runs: list[dict[str, Any]]) -> list[str]:
    leader_missing = [r["reads"]["restarted"][r["leader"]].get("missing") for r in runs]
    bad = [i + 1 for i, r in enumerate(runs) if r["problems"]]
    lines = ["%d run(s); acknowledged keys missing through the flapped leader after its restart: %s"
             % (len(runs), ", ".join(str(m) for m in leader_missing)),
             "runs that lost acknowledged writes or whose stores differ: %s"
             % (", ".join(map(str, bad)) if bad else "none")]
    for i, r in enumerate(runs):
        for p in r["problems"]:
            lines.append("  run %d: %s" % (i + 1, p))
    return lines


def _git_revision() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("-dirty" if dirty else "")) or None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not value > 0:
        raise argparse.ArgumentTypeError("%r must be > 0" % text)
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError("%r is not a positive integer" % text)
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.disk_flap",
                                description="Fill and flap the Raft leader's disk; check no acknowledged write is "
                                            "lost (issue 9, finding 1). Needs root (tmpfs mounts).")
    p.add_argument("--runs", type=_positive_int, default=3)
    p.add_argument("--seconds", type=_positive_float, default=seconds_default, help="how long the disk flaps")
    p.add_argument("--tmpfs-mb", type=_positive_int, default=tmpfs_mb_default, help="size of each node's tmpfs")
    p.add_argument("--clients", type=_positive_int, default=clients_default)
    p.add_argument("--flap-bytes", type=_positive_int, default=flap_bytes_default)
    p.add_argument("--flap-period-s", type=_positive_float, default=flap_period_s_default)
    p.add_argument("--warmup-s", type=_positive_float, default=warmup_s_default)
    p.add_argument("--settle-s", type=_positive_float, default=settle_s_default)
    p.add_argument("--value-bytes", type=_positive_int, default=value_bytes_default)
    p.add_argument("--disk-reserve-bytes", type=_positive_int, default=disk_reserve_bytes_default,
                   help="passed to the nodes if `raftstore start` has the flag")
    p.add_argument("--disk-ballast-bytes", type=_positive_int, default=disk_ballast_bytes_default,
                   help="passed to the nodes if `raftstore start` has the flag")
    p.add_argument("--label", default="run", help="part of the result file's name, e.g. before or after")
    p.add_argument("--keep-logs", action="store_true", help="keep the node logs (printed path) instead of deleting")
    p.add_argument("--out", default=RESULTS_DIR)
    return p


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reason = tmpfs_unavailable_reason()
    if reason:
        print("python -m bench.disk_flap: cannot run: %s" % reason, file=sys.stderr)
        return 2
    # Ctrl-C (even when started with SIGINT ignored, as a background job is), SIGTERM and SIGHUP
    # unwind the stack, so every node is stopped and every tmpfs unmounted.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    cfg = FlapConfig(seconds=args.seconds, tmpfs_mb=args.tmpfs_mb, clients=args.clients, flap_bytes=args.flap_bytes,
                     flap_period_s=args.flap_period_s, warmup_s=args.warmup_s, settle_s=args.settle_s,
                     value_bytes=args.value_bytes,
                     disk_reserve_bytes=args.disk_reserve_bytes, disk_ballast_bytes=args.disk_ballast_bytes,
                     keep_logs=args.keep_logs)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict[str, Any] = {"schema": SCHEMA_VERSION, "started_at": stamp, "revision": _git_revision(),
                              "command": "python -m bench.disk_flap " + " ".join(sys.argv[1:] if argv is None else argv),
                              "config": asdict(cfg), "runs": []}
    try:
        for i in range(1, args.runs + 1):
            r = run_once(cfg, say=lambda line, i=i: print("  [run %d] %s" % (i, line), flush=True))
            report["runs"].append(r)
            print(run_line(i, r), flush=True)
    except HarnessError as exc:
        print("python -m bench.disk_flap: the scenario failed: %s" % exc, file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:
        print("interrupted: every node was stopped and every tmpfs unmounted; no result written", file=sys.stderr)
        return exc.code if isinstance(exc, SystemExit) else 130
    report["summary"] = summary_lines(report["runs"])
    for line in report["summary"]:
        print(line)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "disk-flap-%s-%s.json" % (args.label, stamp))
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
