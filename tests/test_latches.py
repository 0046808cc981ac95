"""Key latches (kvserver.latches): one holder per key, waiters in arrival order, no recursion."""

from __future__ import annotations

from raftstore.kvserver.latches import Latches


def test_a_second_holder_of_a_key_waits_until_the_first_releases_and_other_keys_do_not():
    latches, log, releases = Latches(), [], {}

    def holder(name):
        def run(release):
            log.append(name)
            releases[name] = release
        return run
    latches.acquire("a", holder("a1"))
    latches.acquire("a", holder("a2"))
    latches.acquire("b", holder("b1"))
    assert log == ["a1", "b1"] and len(latches) == 2 and latches.waiting() == 1
    releases["a1"]()
    releases["a1"]()                      # idempotent: does not pass the latch twice
    assert log == ["a1", "b1", "a2"] and latches.waiting() == 0
    releases["a2"]()
    releases["b1"]()
    assert len(latches) == 0


def test_holders_that_release_at_once_are_granted_in_order_without_recursion():
    latches, log, first = Latches(), [], {}

    def blocker(release):
        first["release"] = release
    latches.acquire("k", blocker)
    for i in range(5000):                 # far beyond the recursion limit if grants recursed
        latches.acquire("k", lambda release, i=i: (log.append(i), release()))
    first["release"]()
    assert log == list(range(5000)) and len(latches) == 0
