"""The router (raftstore/router): range cache, redirect by a returned descriptor, backoff and
lookup when the refusing replica knows no better, a bound on refusals. Pure: the ranges and the
replicas that refuse are a dict here; tests/test_cluster_routing.py does the same on real nodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftstore import constants
from raftstore.kvserver.batch import BATCH_OP, TRACE_FIELDS, BatchRequest, Get, Header, Scan
from raftstore.kvserver.ranges import RANGE_KEY_MISMATCH, RangeDescriptor
from raftstore.raft.commands import Outcome, Rejection
from raftstore.router import RangeCache, Router

WHOLE = RangeDescriptor(2, b"a", None, 0)
LEFT, RIGHT = RangeDescriptor(2, b"a", b"m", 1), RangeDescriptor(3, b"m", None, 0)


class World:
    """Ranges as they are (`truth`), what the node's lookup answers (`meta`, may be behind), and
    replicas that refuse a key outside their span with their descriptor and, when
    `tell_holder`, the descriptor of the range that holds the key."""

    def __init__(self, router_class=Router, tell_holder: bool = True) -> None:
        self.truth = {2: WHOLE}
        self.meta = [WHOLE]
        self.tell_holder = tell_holder
        self.sent: list[tuple[int, bytes]] = []   # (range id, command id) per send
        self.data = {b"b": b"1", b"c": b"2", b"n": b"3", b"z": b"4"}
        self.queue: list = []
        self.t = 0.0
        self.router = router_class(lookup=self._lookup, send=self._send, later=self._later, now=lambda: self.t)

    def split(self) -> None:
        self.truth = {2: LEFT, 3: RIGHT}

    def _lookup(self, key: bytes):
        return next((d for d in self.meta if d.contains(key)), None)

    def _send(self, desc, op, args, done, cid) -> None:
        self.sent.append((desc.range_id, cid))
        actual = self.truth.get(desc.range_id)
        request = BatchRequest.from_wire(args) if op == BATCH_OP else None
        keys = request.keys() if request is not None else [args["key"]]
        outside = next((k for k in keys if actual is None or not actual.contains(k)), None)
        if outside is None and request is not None:
            self.answer_batch(actual, request, done)
            return
        if outside is None:
            done(Outcome.COMMITTED, {"range_id": actual.range_id})
            return
        returned = [actual] if actual is not None else []
        holder = next((d for d in self.truth.values() if d.contains(outside)), None)
        if self.tell_holder and holder is not None and holder is not actual:
            returned.append(holder)
        done(Outcome.REJECTED, Rejection(RANGE_KEY_MISMATCH, "RangeKeyMismatch: not here",
                                         {"descriptors": [d.to_wire() for d in returned]}))

    def answer_batch(self, actual: RangeDescriptor, request: BatchRequest, done) -> None:
        """Gets answer the value and the range that served them; a Scan its rows within the
        range, at most the header's max_keys (then a resume key)."""
        responses = []
        for op in request.ops:
            if isinstance(op, Scan):
                stop = actual.end if op.end is None or (actual.end is not None and actual.end < op.end) else op.end
                found = [[k, v] for k, v in sorted(self.data.items()) if op.key <= k and (stop is None or k < stop)]
                rows = found[:request.header.keys_limit()]
                resume = rows[-1][0] + b"\x00" if len(found) > len(rows) else None
                responses.append({"rows": rows, "versions": [[1, actual.range_id]] * len(rows), "resume": resume})
            else:
                responses.append({"value": self.data.get(op.key), "ts": [1, actual.range_id]})
        done(Outcome.COMMITTED, {"ts": [5, actual.range_id], "responses": responses, "span_end": actual.end})

    def _later(self, due, done, fn) -> None:
        self.queue.append((due, fn))

    def put(self, key: bytes, cid: bytes = b"c" * 16) -> tuple:
        return self.run(lambda done: self.router.send("put", key, {"key": key, "value": b"v"}, cid, done))

    def run(self, call) -> tuple:
        answers = []
        call(lambda o, r: answers.append((o, r)))
        self.drain()
        assert len(answers) == 1, answers
        return answers[0]

    def drain(self) -> None:
        while self.queue:                       # run deferred sends in due order, advancing time
            self.queue.sort(key=lambda e: e[0])
            due, fn = self.queue.pop(0)
            self.t = max(self.t, due)
            fn()


def failing_range(w: World, range_id: int, outcome: Outcome, why: str) -> None:
    """Every send to `range_id` answers (outcome, why); the rest go to the world as before."""
    real = w.router._send
    w.router._send = lambda desc, op, args, done, cid: (done(outcome, why) if desc.range_id == range_id
                                                        else real(desc, op, args, done, cid))


def split_under_a_client(router_class=Router) -> tuple[World, tuple]:
    """A client writes z (caching r2 = [a, ∞)); r2 splits at m; meta at the node is updated
    too (so a router that looks up again also finds r3); the client writes z again."""
    w = World(router_class)
    assert w.put(b"z")[0] is Outcome.COMMITTED
    w.split()
    w.meta = [LEFT, RIGHT]
    w.sent.clear()
    return w, w.put(b"z")


def redirected_by_the_returned_descriptor(w: World, answer: tuple) -> bool:
    """The check: the second write reached r3 with exactly one refusal and no second lookup."""
    return (answer == (Outcome.COMMITTED, {"range_id": 3}) and [rid for rid, _ in w.sent] == [2, 3]
            and w.router.stats["lookups"] == 1 and w.router.stats["redirects"] == 1)


def test_a_stale_descriptor_is_replaced_by_the_one_the_refusing_replica_returns():
    w, answer = split_under_a_client()
    assert redirected_by_the_returned_descriptor(w, answer)
    assert {cid for _, cid in w.sent} == {b"c" * 16}          # one command id across sends
    assert w.router.cache.lookup(b"b") == LEFT and w.router.cache.lookup(b"z") == RIGHT


class IgnoresReturnedDescriptors(Router):
    """A deliberately broken router: drops the refused descriptor but believes nothing returned."""

    def learn(self, refused, returned):
        super().learn(refused, [])


def test_the_redirect_check_catches_a_router_that_ignores_returned_descriptors():
    w, answer = split_under_a_client(IgnoresReturnedDescriptors)
    assert answer[0] is Outcome.COMMITTED                     # it gets there, by a second lookup
    assert not redirected_by_the_returned_descriptor(w, answer)
    assert w.router.stats["lookups"] == 2


def test_a_replica_that_knows_no_better_makes_the_router_back_off_and_look_up_again():
    w = World(tell_holder=False)
    assert w.put(b"z")[0] is Outcome.COMMITTED
    w.split()
    w.meta = [LEFT, RIGHT]
    t0 = w.t
    assert w.put(b"z") == (Outcome.COMMITTED, {"range_id": 3})
    assert w.router.stats == {"lookups": 2, "redirects": 0, "backoffs": 1, "not_leader": 0, "read_restarts": 0,
                              "retries_cancelled": 0, "follower_reads": 0, "to_leaseholder": 0}
    assert w.t > t0                                           # it waited before the lookup


def test_a_range_that_keeps_refusing_is_given_up_after_a_bounded_number_of_sends():
    w = World(tell_holder=False)
    w.put(b"z")
    w.split()                                                 # meta stays behind: every lookup is stale
    outcome, why = w.put(b"z")
    assert outcome is Outcome.NOT_COMMITTED and "kept changing" in why
    assert len(w.sent) - 1 == constants.route_retries_max     # the first write's send, then the bound


def test_other_rejections_and_outcomes_pass_through_unchanged():
    w = World()
    rejection = Rejection("rejected", "bad argument", {})
    w.router._send = lambda desc, op, args, done, cid: done(Outcome.REJECTED, rejection)
    assert w.put(b"z") == (Outcome.REJECTED, rejection)
    w.router._send = lambda desc, op, args, done, cid: done(Outcome.AMBIGUOUS, "timeout")
    assert w.put(b"z") == (Outcome.AMBIGUOUS, "timeout")
    assert w.router.stats["redirects"] == w.router.stats["backoffs"] == 0


def test_no_range_known_for_a_key_is_not_committed():
    w = World()
    assert w.put(b"0")[0] is Outcome.NOT_COMMITTED            # below b"a": no range holds it


def test_the_cache_is_bounded_and_never_takes_an_older_view_of_a_range():
    cache = RangeCache(2)
    cache.insert(LEFT)
    cache.insert(WHOLE)                                        # older generation of r2: ignored
    assert cache.lookup(b"z") is None and cache.lookup(b"b") == LEFT
    cache.insert(RIGHT)
    cache.insert(RangeDescriptor(4, b"0", b"a", 0))            # third entry: the least recently used goes
    assert len(cache) == 2 and cache.lookup(b"b") is None


def _model_insert(model: list[RangeDescriptor], desc: RangeDescriptor) -> list[RangeDescriptor]:
    """The cache's rule, by a pass over every entry (as RangeCache did before its bisection)."""
    replaced = [d for d in model if d.overlaps(desc.start, desc.end) or d.range_id == desc.range_id]
    if any(d.range_id == desc.range_id and d.generation > desc.generation for d in replaced):
        return model
    return [d for d in model if d not in replaced] + [desc]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 9), st.integers(1, 4), st.booleans(),
                          st.integers(0, 3)), max_size=30))
def test_the_cache_replaces_exactly_what_a_pass_over_every_entry_would(inserts):
    cache, model = RangeCache(1000), []
    for rid, start, width, to_end, gen in inserts:
        desc = RangeDescriptor(rid, bytes([97 + start]), None if to_end else bytes([97 + start + width]), gen)
        cache.insert(desc)
        model = _model_insert(model, desc)
        assert sorted(cache._by_start.values(), key=lambda d: d.start) == sorted(model, key=lambda d: d.start)


@pytest.mark.parametrize("returned", [[], ["garbage"], [[2, "not bytes", None, 0, []]]])
def test_a_malformed_mismatch_falls_back_to_a_lookup(returned):
    w = World()
    w.put(b"z")
    w.split()
    w.meta = [LEFT, RIGHT]
    w.router._send = lambda desc, op, args, done, cid, real=w.router._send: (
        done(Outcome.REJECTED, Rejection(RANGE_KEY_MISMATCH, "m", {"descriptors": returned}))
        if desc.range_id == 2 else real(desc, op, args, done, cid))
    assert w.put(b"z") == (Outcome.COMMITTED, {"range_id": 3})
    assert w.router.stats["lookups"] == 2


def test_not_leader_is_sent_again_after_a_backoff_and_given_up_after_the_bound():
    from raftstore.raft.commands import not_leader
    w = World()
    refusals = [3]                                             # the first three sends: not (yet) the leader

    def send(desc, op, args, done, cid, real=w.router._send):
        if refusals[0]:
            refusals[0] -= 1
            done(Outcome.NOT_COMMITTED, not_leader("n1 has not applied its term's first entry", 1))
        else:
            real(desc, op, args, done, cid)
    w.router._send = send
    assert w.put(b"z") == (Outcome.COMMITTED, {"range_id": 2})
    assert w.router.stats["not_leader"] == 3 and w.router.stats["lookups"] == 1 and w.t > 0
    refusals[0] = 10 ** 6
    outcome, why = w.put(b"z")
    assert outcome is Outcome.NOT_COMMITTED and "first entry" in why and "refusals" in why


def test_a_read_refused_by_a_leaseholder_whose_clock_is_behind_it_is_sent_again_then_given_up():
    from raftstore.kvserver.lease import READ_TOO_NEW
    w = World()
    refusals = [2]
    too_new = Rejection(READ_TOO_NEW, "n3: read timestamp [9, 0] is more than the max clock offset ahead", {})

    def send(desc, op, args, done, cid, real=w.router._send):
        if refusals[0]:
            refusals[0] -= 1
            done(Outcome.REJECTED, too_new)            # until its lease moves to a node with a sound clock
        else:
            real(desc, op, args, done, cid)
    w.router._send = send
    assert w.put(b"z") == (Outcome.COMMITTED, {"range_id": 2}) and w.t > 0
    refusals[0] = 10 ** 6
    outcome, why = w.put(b"z")
    assert outcome is Outcome.NOT_COMMITTED and "max clock offset" in why and "retry" in why


def _batch_refused_not_leader(cancel_after_sends: int | None) -> tuple[list, list]:
    """A write batch whose range answers not-leader every time; the caller is answered (its
    unavailable deadline) after `cancel_after_sends` sends (None: never). What the router sent,
    and what it answered."""
    from raftstore.kvserver.batch import Put
    from raftstore.raft.commands import not_leader
    w = World()
    sends: list = []

    def send(desc, op, args, done, cid):
        sends.append(cid)
        done(Outcome.NOT_COMMITTED, not_leader("n1 is cut off from the others", None))
    w.router._send = send
    answers: list = []
    w.router.send_batch(Header(), [Put(b"z", b"v")], answers.append, b"w" * 16,
                        cancelled=lambda: cancel_after_sends is not None and len(sends) >= cancel_after_sends)
    w.drain()
    return sends, answers


def test_a_write_is_not_sent_again_once_its_caller_has_been_answered():
    """The gateway answered the client "unavailable, may still commit" at its deadline: a
    resend now could commit the write long after that answer, so none is sent."""
    sends, answers = _batch_refused_not_leader(cancel_after_sends=2)
    assert sends == [b"w" * 16] * 2
    [[(outcome, why)]] = answers
    assert outcome is Outcome.NOT_COMMITTED and "cut off" in str(why)
    sends, answers = _batch_refused_not_leader(cancel_after_sends=None)   # never answered: sent to the bound
    assert len(sends) == constants.route_retries_max and len(answers) == 1


def test_a_scan_pages_across_ranges_by_the_ranges_ends_and_stops_at_the_limit():
    w = World()
    w.put(b"b")                                               # cache r2 whole
    w.split()                                                 # the scan meets the split on its way
    w.meta = [LEFT, RIGHT]
    outcome, got = w.run(lambda done: w.router.scan(b"a", None, 10, done))
    assert outcome is Outcome.COMMITTED
    assert got["rows"] == [[b"b", b"1"], [b"c", b"2"], [b"n", b"3"], [b"z", b"4"]]
    assert got["ts"] == [5, 3] and len(got["versions"]) == 4
    assert w.run(lambda done: w.router.scan(b"c", None, 2, done))[1]["rows"] == [[b"c", b"2"], [b"n", b"3"]]
    assert w.run(lambda done: w.router.scan(b"a", b"n", 10, done))[1]["rows"] == [[b"b", b"1"], [b"c", b"2"]]


def test_a_scan_answers_each_page_with_the_span_it_read_its_range_and_its_trace_fields():
    w = World()
    w.split()
    w.meta = [LEFT, RIGHT]
    got = w.run(lambda done: w.router.scan(b"a", None, 10, done))[1]
    assert [(p["start"], p["end"], p["range_id"], p["rows"]) for p in got["pages"]] == [
        (b"a", b"m", 2, 2), (b"m", None, 3, 2)]
    assert all(set(TRACE_FIELDS) <= set(p) for p in got["pages"])
    limited = w.run(lambda done: w.router.scan(b"a", None, 3, done))[1]    # stopped by its limit after n
    assert [(p["start"], p["end"], p["rows"]) for p in limited["pages"]] == [(b"a", b"m", 2), (b"m", b"n\x00", 1)]
    inside = w.run(lambda done: w.router.scan(b"c", b"d", 10, done))[1]    # ends inside its range
    assert [(p["start"], p["end"]) for p in inside["pages"]] == [(b"c", b"d")]


def test_a_scan_answers_the_first_failure_of_a_page():
    w = World()
    w.split()
    w.meta = [LEFT, RIGHT]
    failing_range(w, 3, Outcome.NOT_COMMITTED, "r3 has no leader")
    assert w.run(lambda done: w.router.scan(b"a", None, 10, done)) == (Outcome.NOT_COMMITTED, "r3 has no leader")


def run_batch(w: World, ops, header: Header = Header()) -> list:
    answers = []
    w.router.send_batch(header, ops, answers.append)
    w.drain()
    assert len(answers) == 1, answers
    return answers[0]


def test_a_batch_over_two_ranges_is_split_per_range_the_parts_sent_together_answers_in_order():
    w = World()
    w.split()
    w.meta = [LEFT, RIGHT]
    held = []                                                  # parts sent, none answered yet
    real = w.router._send
    w.router._send = lambda desc, op, args, done, cid: held.append((desc, op, args, done, cid))
    answers = []
    w.router.send_batch(Header(), [Get(b"n"), Get(b"b"), Get(b"z"), Get(b"c")], answers.append)
    assert sorted(d.range_id for d, *_ in held) == [2, 3] and answers == []   # concurrent: both out at once
    assert {len(BatchRequest.from_wire(args).ops) for _, _, args, _, _ in held} == {2}
    for part in reversed(held):                                # answered in any order
        real(*part)
    assert [(o, r["value"]) for o, r in answers[0]] == [(Outcome.COMMITTED, v) for v in (b"3", b"1", b"4", b"2")]
    assert [r["ts"] for _, r in answers[0]] == [[1, 3], [1, 2], [1, 3], [1, 2]]   # a get's ts: its version


def test_a_batch_part_refused_by_a_split_is_grouped_again_and_each_op_reaches_its_range():
    w = World()
    w.put(b"b")                                                # cache r2 whole
    w.split()                                                  # the batch meets the split
    w.meta = [LEFT, RIGHT]
    answers = run_batch(w, [Get(b"b"), Get(b"z")])
    assert [r["value"] for _, r in answers] == [b"1", b"4"]
    assert w.router.stats["redirects"] == 1 and w.router.stats["lookups"] == 1


def test_a_failed_part_fails_only_its_own_ops():
    w = World()
    w.split()
    w.meta = [LEFT, RIGHT]
    failing_range(w, 3, Outcome.AMBIGUOUS, "r3 timed out")
    answers = run_batch(w, [Get(b"b"), Get(b"z")])
    assert answers[0][0] is Outcome.COMMITTED and answers[1] == (Outcome.AMBIGUOUS, "r3 timed out")


def test_a_batch_that_breaks_the_rules_is_refused_before_anything_is_sent():
    from raftstore.kvserver.batch import Put
    w = World()
    with pytest.raises(ValueError, match="reads or writes"):
        w.router.send_batch(Header(), [Get(b"b"), Put(b"c", b"v")], lambda got: None)
    with pytest.raises(ValueError, match="more than once"):
        w.router.send_batch(Header(), [Put(b"c", b"v"), Put(b"c", b"w")], lambda got: None)
    assert w.sent == []


def test_a_scan_stopped_by_its_limit_gives_the_key_to_resume_from_and_resuming_reads_the_rest():
    w = World()
    w.split()
    w.meta = [LEFT, RIGHT]
    outcome, got = w.run(lambda done: w.router.scan(b"a", None, 3, done))
    assert got["rows"] == [[b"b", b"1"], [b"c", b"2"], [b"n", b"3"]] and got["resume"] == b"n\x00"
    rest = w.run(lambda done: w.router.scan(got["resume"], None, 10, done))[1]
    assert rest["rows"] == [[b"z", b"4"]] and rest["resume"] is None
    done_at_end = w.run(lambda done: w.router.scan(b"a", b"c", 10, done))[1]
    assert done_at_end["rows"] == [[b"b", b"1"]] and done_at_end["resume"] is None
