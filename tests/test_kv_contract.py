"""The SQL engine's KV contract (sql/kv.py) holds on the in-memory KV and on a real node, and
the suite that says so catches a KV that breaks it.

The same checks (tests/kv_contract.py) run against:
* `memkv` - sql.memkv.MemKV, a fresh one per check;
* `node` (slow) - raftstore.server.nodekv.NodeKV, the class the gateway runs statements on, over a node
  that this process runs and that forms a 3-node cluster with two `raftstore start` processes
  on loopback (real sockets, SQLite files, fsync). NodeKV needs the node object in its own
  process, as the gateway has it, so the third node is built here from the very arguments
  `raftstore start` gets (raftstore.cli.main.node_config). One cluster per module; each check
  writes under its own key prefix.

Then the suite is run against deliberately broken MemKVs, each of which must fail the checks
named for what it breaks; and MemKV and NodeKV must offer every call of the Protocol with the
Protocol's parameters.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import pytest

from cluster import LIVENESS_MARGIN_S, Cluster, wait_until
from kv_contract import CHECKS, Subject, protocol_methods, signature_mismatches, subject_for
from raftstore.cli.main import build_parser, node_config
from raftstore.errors import AmbiguousCommitError, UnavailableError
from raftstore.node.loop import Node
from raftstore.raft.commands import Outcome
from raftstore.server.nodekv import NodeKV
from sql.kv import Locked, WriteResult, not_sent
from sql.memkv import MemKV

READY_TIMEOUT_S = 60.0 + LIVENESS_MARGIN_S   # a cluster forms and elects within seconds when idle
SPLIT_TIMEOUT_S = 30.0 + LIVENESS_MARGIN_S


@dataclass
class NodeUnderTest:
    """A node run by this process, its NodeKV, and the asyncio loop its async calls run on."""

    node: Node
    loop: asyncio.AbstractEventLoop
    kv: NodeKV

    def split(self, key: bytes) -> None:
        """Split the range holding `key` at `key`; return once the new range answers."""
        future = asyncio.run_coroutine_threadsafe(self.node.split(key), self.loop)
        outcome, result = future.result(SPLIT_TIMEOUT_S)
        assert outcome is Outcome.COMMITTED, "split at %r: %s %s" % (key, outcome, result)
        wait_until(lambda: self._serves(key), SPLIT_TIMEOUT_S, "the range split at %r to serve" % key)

    def _serves(self, key: bytes) -> bool:
        ranges = self.kv.ranges_for(key, key + b"\x00")
        if len(ranges) != 1 or ranges[0]["start"] != key or ranges[0]["leader"] is None:
            return False
        return _answers(lambda: self.kv.get(key))


def _answers(call) -> bool:
    try:
        call()
    except (UnavailableError, AmbiguousCommitError):
        return False
    return True


@pytest.fixture(scope="module")
def node_under_test(tmp_path_factory) -> Iterator[NodeUnderTest]:
    cluster = Cluster(str(tmp_path_factory.mktemp("kv-contract")))
    try:
        cluster.start(cluster.node(1))
        cluster.start(cluster.node(2))
        cfg = node_config(build_parser().parse_args(cluster.args(cluster.node(3))[3:]))   # after "-m raftstore.cli"
        node = Node(cfg)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kv-contract-asyncio", daemon=True)
        try:
            node.start_loop()
            thread.start()
            kv = NodeKV(node, loop)

            def ready() -> bool:
                return (_answers(lambda: kv.put(b"t\x01contract-probe", b"up"))
                        and _answers(lambda: kv.get(b"\x01contract-probe"))     # the meta range (splits use it)
                        and all(r["up"] for r in kv.regions()) and len(kv.regions()) == 3)
            wait_until(ready, READY_TIMEOUT_S, "the 3-node cluster to serve (logs in %s)" % cluster.root)
            yield NodeUnderTest(node, loop, kv)
        finally:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
            node.close()
    finally:
        cluster.cleanup()


@pytest.fixture(params=["memkv", pytest.param("node", marks=pytest.mark.slow)])
def make_subject(request):
    """check name -> the Subject it runs on."""
    if request.param == "memkv":
        def fresh(name: str) -> Subject:
            kv = MemKV()
            return subject_for(kv, name, kv.split)
        return fresh
    world: NodeUnderTest = request.getfixturevalue("node_under_test")
    return lambda name: subject_for(world.kv, name, world.split)


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_the_kv_keeps_its_contract(check, make_subject) -> None:
    check(make_subject(check.__name__))


# --- the suite catches a broken KV ------------------------------------------------------------------


class DeleteKeepsTheVersion(MemKV):
    """Broken: a delete leaves the key's version as it was (no tombstone version)."""

    def _remove(self, key: bytes) -> None:
        if key in self._data:
            del self._data[key]
            self._keys.pop(bisect.bisect_left(self._keys, key))


class ScanInReverse(MemKV):
    """Broken: scans return the right pairs, newest key first."""

    def _scan(self, start, end, limit):
        return list(reversed(super()._scan(start, end, limit)))


class EmptyValueReadsAsAbsent(MemKV):
    """Broken: a live b"" reads as None."""

    def get(self, key):
        return super().get(key) or None


class WriteIfIgnoresAStaleVersion(MemKV):
    """Broken: a conditioned write on any version of a live key swaps (a blind write)."""

    def write_if(self, key, if_version, value):
        found = self.get_version(key)
        if if_version is not None and found is not None:
            if_version = found[1]
        return super().write_if(key, if_version, value)


class ARefusalStopsTheBatch(MemKV):
    """Broken: write_if_many treats a condition that did not hold as a failure."""

    def write_if_many(self, writes, *, stop_after_failure=True, lock=None, all_or_nothing=False):
        results = []
        for key, if_version, value in writes:
            results.append(self.write_if(key, if_version, value))
            if not results[-1].swapped:
                break
        return results + not_sent(len(writes) - len(results))


class AllOrNothingIgnored(MemKV):
    """Broken: write_if_many writes each key alone even when asked for all or nothing."""

    def write_if_many(self, writes, *, stop_after_failure=True, lock=None, all_or_nothing=False):
        return super().write_if_many(writes, stop_after_failure=False, lock=lock)


class ConfirmByValue(MemKV):
    """Broken: confirm holds while the key has a live value, whatever its version (so a
    same-bytes write by another client passes)."""

    def confirm(self, key, if_version, *, lock=None):
        self._count("confirm")
        live = self.get_version(key)
        held = (live is None) if if_version is None else live is not None
        return WriteResult(True) if held else WriteResult(False, current=live)


class LockingReadOfTheDeleted(MemKV):
    """Broken: a locking read of a deleted key answers its last live row."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last: dict = {}

    def write_if(self, key, if_version, value):
        found = self.get_version(key)
        if found is not None:
            self._last[key] = found
        return super().write_if(key, if_version, value)

    def delete(self, key):
        found = self.get_version(key)
        if found is not None:
            self._last[key] = found
        super().delete(key)

    def get_for_update(self, key):
        locked = super().get_for_update(key)
        return locked if locked.found is not None else Locked(self._last.get(key))


class DeleteAlwaysFound(MemKV):
    """Broken: a delete says a row was there whether or not one was."""

    def delete(self, key):
        super().delete(key)
        return True


class SetFieldsCreates(MemKV):
    """Broken: set_fields of a key with no live value writes a row of its fields (a blind
    UPDATE would then insert)."""

    def set_fields(self, key, width, fields):
        if self.get(key) is None:
            row = [None] * width
            for position, value in fields:
                row[position] = value
            self.put(key, msgpack.packb(row, use_bin_type=True))
        return super().set_fields(key, width, fields)


class TraceSerializesParts(MemKV):
    """Broken: the parts of one call in different ranges are traced as steps one after another
    (as if sent one at a time), so the bound would add up what ran concurrently."""

    def _traced(self, kind, keys):
        for key in keys:
            super()._traced(kind, [key])


def _failing_checks(kv_class: type[MemKV]) -> list[str]:
    """The checks that fail (an assertion, or any other error: the test fails either way) on a
    fresh `kv_class` each."""
    failed = []
    for check in CHECKS:
        kv = kv_class()
        try:
            check(subject_for(kv, check.__name__, kv.split))
        except Exception:
            failed.append(check.__name__)
    return failed


def test_every_check_passes_on_the_in_memory_kv() -> None:
    assert _failing_checks(MemKV) == []


@pytest.mark.parametrize("broken, caught_by", [
    (DeleteKeepsTheVersion, {"check_versions_of_a_key_strictly_grow_also_across_deletes",
                             "check_a_delete_is_a_version_of_its_own"}),
    (ScanInReverse, {"check_a_scan_returns_the_span_start_inclusive_end_exclusive_ascending",
                     "check_a_scan_crosses_range_splits_in_order",
                     "check_a_scan_with_end_none_reaches_the_end_of_the_keyspace"}),
    (EmptyValueReadsAsAbsent, {"check_an_empty_value_is_live_and_distinct_from_absent"}),
    (WriteIfIgnoresAStaleVersion, {"check_write_if_on_a_stale_version_refuses_and_returns_the_current_row"}),
    (ARefusalStopsTheBatch, {"check_write_if_many_answers_each_write_in_order"}),
    (AllOrNothingIgnored, {"check_all_or_nothing_writes_nothing_of_a_range_where_one_condition_fails"}),
    (ConfirmByValue, {"check_confirm_holds_only_while_the_key_is_at_the_version_read_and_writes_nothing"}),
    (LockingReadOfTheDeleted, {"check_a_locking_read_answers_the_live_row_and_its_write_applies_on_that_version"}),
    (TraceSerializesParts, {"check_a_trace_records_each_range_operation_between_begin_and_end"}),
    (DeleteAlwaysFound, {"check_a_delete_makes_the_key_absent"}),
    (SetFieldsCreates, {"check_set_fields_replaces_a_live_rows_fields_as_a_new_version_and_leaves_absent_keys_absent"}),
], ids=lambda p: p.__name__ if isinstance(p, type) else "")
def test_the_contract_catches_a_broken_in_memory_kv(broken, caught_by) -> None:
    failed = set(_failing_checks(broken))
    assert caught_by <= failed, "%s passed %s" % (broken.__name__, sorted(caught_by - failed))


def test_the_checks_call_every_method_of_the_protocol() -> None:
    kv = MemKV()
    for check in CHECKS:
        check(subject_for(kv, check.__name__, kv.split))
    assert set(protocol_methods()) - set(kv.calls) == set()


# --- the interface ----------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", [MemKV, NodeKV], ids=lambda c: c.__name__)
def test_every_call_of_the_protocol_is_implemented_with_its_parameters(implementation) -> None:
    assert signature_mismatches(implementation) == []


def test_a_missing_call_or_a_different_parameter_is_found() -> None:
    class Incomplete(MemKV):
        check_consistency = None

        def write_if_many(self, writes, stop_after_failure=True):   # not keyword-only
            return super().write_if_many(writes, stop_after_failure=stop_after_failure)

        def scan(self, start, end, limit=100):                       # a default the Protocol lacks
            return super().scan(start, end, limit)

    assert [m.split(":")[0].split("(")[0] for m in signature_mismatches(Incomplete)] == [
        "scan", "write_if_many", "check_consistency"]
