"""Where a SQL statement's wall-clock time goes, from a py-spy `--idle` profile of its gateway node.

A statement is a coroutine on the gateway's client port loop, its main thread
(raftstore/coop.py, raftstore/DESIGN.md "Statements as coroutines"): the SQL engine runs in a
greenlet of its own and is switched out at each KV call, backoff or yield, so it holds the thread
only while it computes. What py-spy can and cannot see of that:

* A sample of the main thread catches a statement only while the statement is switched in. Its
  stack then starts at the greenlet's own entry (``Gateway.handle.<locals>.run``): py-spy shows no
  event loop frames below it (with greenlet 3 on CPython 3.11; should a build chain them to
  `coop.run`'s frame, the frames after the last `coop.run` frame are the statement's). So the
  statement samples give the statements' time on the main thread, split by step.
* A suspended statement has no thread and no stack: no sample shows it waiting, whether for its
  KV batch (the node loop, Raft, the leader's disk), for the main thread to switch it back in, or
  for anything else. Those waits are the rest of the latency, and the profile cannot divide them.
  What it can say is how busy the threads that serve them were: the main thread (a statement
  ready to go on queues for it only when it is busy) and the other threads with an event loop,
  the node loop among them.
* --idle samples every thread at every tick, whatever it does. A sample whose innermost frame is
  a selector's `select` is the thread waiting for I/O, i.e. idle; any other sample is the thread
  running or ready to run (waiting for the GIL looks the same). So "busy" here is "not in select".

Pure: takes a speedscope document (dict) and returns seconds and shares; the caller reads the
file. Labels are chains of our own frames (raftstore/, sql/, hlc/), outermost first. A step drops
the part the common statement samples share (the greenlet's entry) and trailing private helpers
(`_batch`, `_wait`), e.g. ``Gateway._execute > Session.execute > Session._plan > NodeKV.get``.
The main thread's other work is labelled by our frames under the event loop plus the first
library call they make (``ClientServer._answer > StreamWriter.write``), or, with no frame of
ours, by the callback the loop runs (``_SelectorSocketTransport._read_ready``) or, in the loop's
own bookkeeping, by its innermost frame (``BaseEventLoop._run_once``).
"""

from __future__ import annotations

import collections
import re
from typing import Any

from bench.kv_latency import _short_file

OWN_PACKAGES = ("sql", "raftstore", "hlc")
steps_top_default = 6
other_top_default = 5
prefix_min_share = 0.02      # chains rarer than this do not shorten the shared prefix
loop_thread_min_share = 0.5  # another thread sampled for less of the window than this is not reported
_EVENT_LOOP_FRAMES = ("run_forever", "_run_once")
_LOOP_PLUMBING = _EVENT_LOOP_FRAMES + ("Handle._run",)
NO_FRAME = "(no Python frame on the stack)"


def _name(frames: list[dict], i: int) -> str:
    return str(frames[i].get("name", "?"))


def _file(frames: list[dict], i: int) -> str:
    return _short_file(frames[i].get("file", "?"))


def _is_own(frames: list[dict], i: int) -> bool:
    return _file(frames, i).split("/", 1)[0] in OWN_PACKAGES


def _own_chain(frames: list[dict], stack: list[int]) -> list[tuple[str, str]]:
    return [(_name(frames, i), _file(frames, i)) for i in stack if _is_own(frames, i)]


def _is_loop_frame(frames: list[dict], i: int) -> bool:
    return _name(frames, i).endswith(_EVENT_LOOP_FRAMES)


def _is_idle(frames: list[dict], stack: list[int]) -> bool:
    """The thread waits in a selector's select (the event loop or a server with nothing to do)."""
    return bool(stack) and _name(frames, stack[-1]).endswith("select") and \
        _file(frames, stack[-1]).endswith("selectors.py")


def _statement_part(frames: list[dict], stack: list[int]) -> list[int] | None:
    """The frames of a running statement in this sample, None when it is not one: our SQL code
    in a greenlet, i.e. with no event loop frame below it (after the last `coop.run` frame, if
    the stack shows one). The loop's side of a statement (`Gateway.handle` awaiting `coop.run`,
    building the answer) is the main thread's other work."""
    start = 0
    for k, i in enumerate(stack):
        if _name(frames, i) == "run" and _file(frames, i) == "raftstore/coop.py":
            start = k + 1
    part = stack[start:]
    if any(_is_loop_frame(frames, i) for i in part):
        return None
    if not any(_file(frames, i).startswith("sql/") for i in part):
        return None
    return part


def _other_label(frames: list[dict], stack: list[int]) -> tuple[str, str]:
    """(label, file) of a busy main-thread sample that runs no statement (see the module doc)."""
    start = 0
    for k, i in enumerate(stack):
        if _name(frames, i).endswith(_LOOP_PLUMBING):
            start = k + 1
    if not stack:
        return NO_FRAME, ""
    part = stack[start:] or stack[-1:]   # the loop's own bookkeeping: its innermost frame
    own = [k for k, i in enumerate(part) if _is_own(frames, i)]
    if not own:
        return _name(frames, part[0]), _file(frames, part[0])
    names = [_name(frames, part[k]) for k in own]
    last = own[-1]
    if last + 1 < len(part):
        names.append(_name(frames, part[last + 1]))
    return " > ".join(names), _file(frames, part[last])


def _thread_name(profile: dict) -> str:
    """py-spy names a thread 'Thread 7370 "MainThread"'; the quoted part, else the whole."""
    name = str(profile.get("name", "?"))
    found = re.search(r'"(.*)"', name)
    return found.group(1) if found else name


def _step_labels(chains: list[tuple[list[tuple[str, str]], float]], top_n: int) -> list[dict[str, Any]]:
    """Statement time by step: chains with the prefix the common ones share cut off."""
    # The shared prefix is taken over the common chains only: a few samples torn mid-call (the
    # entry itself on the stack, say) must not stop it from being cut off the rest.
    shapes = collections.Counter(tuple(c) for c, _ in chains)
    common = [list(c) for c, n in shapes.items() if n >= prefix_min_share * len(chains)] or [chains[0][0]]
    prefix = 0
    while all(len(c) > prefix + 1 and c[prefix] == common[0][prefix] for c in common):
        prefix += 1
    head = common[0][:prefix]
    counts: collections.Counter = collections.Counter()
    files: dict[str, str] = {}
    total = 0.0
    for chain, weight in chains:
        rest = chain[prefix:] if chain[:prefix] == head and len(chain) > prefix else chain
        while len(rest) > 1 and rest[-1][0].rsplit(".", 1)[-1].startswith("_"):
            rest = rest[:-1]
        label = " > ".join(name for name, _ in rest)
        counts[label] += weight
        files.setdefault(label, rest[-1][1])
        total += weight
    return [{"step": label, "file": files[label], "pct": 100.0 * w / total} for label, w in counts.most_common(top_n)]


def statement_steps(doc: dict, top_n: int = steps_top_default,
                    other_n: int = other_top_default) -> dict[str, Any] | None:
    """Where the gateway's main thread (the thread that runs statements) spent its wall-clock time,
    None when no sample caught a statement running. Seconds are py-spy's weights; percentages of
    the main thread's sampled wall time unless said otherwise:

    {"thread": its name, "wall_s": its sampled seconds, "samples": statement samples,
     "statement_s", "statement_pct": running statements (greenlets switched in),
     "other_pct": its other busy samples (client port I/O, asyncio, the loop's side of statements),
     "idle_pct": waiting in select, "busy_pct": statement + other,
     "steps": [{"step", "file", "pct" (of statement time)}], "other": [{"work", "file", "pct"}],
     "offloaded_s": statement samples on other threads (long texts parsed by coop.offload),
     "loop_threads": [{"thread", "busy_pct"}]: every other thread that waits in select (the node
     loop, servers) and was sampled for most of the window, and how much of it it was not waiting}
    """
    frames = doc["shared"]["frames"]
    threads = []
    for prof in doc.get("profiles", []):
        samples = list(zip(prof.get("samples", []), prof.get("weights", [])))
        running = [(part, w) for part, w in ((_statement_part(frames, s), w) for s, w in samples)
                   if part is not None]
        threads.append((prof, samples, running))
    main = max(threads, key=lambda t: sum(w for _, w in t[2]), default=None)
    if main is None or not main[2]:
        return None
    prof, samples, running = main
    wall = sum(w for _, w in samples)
    idle = sum(w for s, w in samples if _is_idle(frames, s))
    statement_s = sum(w for _, w in running)
    other: collections.Counter = collections.Counter()
    other_files: dict[str, str] = {}
    for stack, weight in samples:
        if _is_idle(frames, stack) or _statement_part(frames, stack) is not None:
            continue
        label, file = _other_label(frames, stack)
        other[label] += weight
        other_files.setdefault(label, file)

    def pct(seconds: float) -> float:
        return 100.0 * seconds / wall if wall else 0.0

    loop_threads = []
    for p, s, _ in threads:
        if p is prof:
            continue
        sampled = sum(w for _, w in s)
        waiting = sum(w for st, w in s if _is_idle(frames, st))
        if waiting and sampled >= loop_thread_min_share * wall:
            loop_threads.append({"thread": _thread_name(p), "busy_pct": 100.0 * (sampled - waiting) / sampled})
    chains = [(_own_chain(frames, part), w) for part, w in running]
    return {"thread": _thread_name(prof), "wall_s": wall, "samples": len(running),
            "statement_s": statement_s, "statement_pct": pct(statement_s),
            "other_pct": pct(wall - idle - statement_s), "idle_pct": pct(idle), "busy_pct": pct(wall - idle),
            "steps": _step_labels(chains, top_n),
            "other": [{"work": label, "file": other_files[label], "pct": pct(w)}
                      for label, w in other.most_common(other_n)],
            "offloaded_s": sum(w for p, _, r in threads if p is not prof for _, w in r),
            "loop_threads": loop_threads}
