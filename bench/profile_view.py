"""Where a SQL statement's wall-clock time goes, from a py-spy `--idle` profile of its gateway node.

Why: under an emulated WAN the leaseholder is idle most of the time (its Raft loop waits in
`select`), so an on-CPU profile says little about a 200 ms INSERT. The question is which of the
statement's steps it waits in: a catalog read through the meta range, a read of the row, the
write itself. The gateway runs each statement on a worker thread that blocks on one KV call at
a time, so sampling that thread's stack at every tick, waiting included, splits the statement's
time by step.

Pure: takes a speedscope document (dict) and returns shares; the caller reads the file.
A sample belongs to a statement when a frame of `sql/` is on its stack. Its label is the chain
of our own frames (raftstore/, sql/, hlc/) below the part the common statement samples share
(the request handler), with trailing private helpers (`_propose`, `_run`) dropped, e.g.
``Session._plan > Session._plan.<locals>.<dictcomp> > NodeKV.get``.
"""

from __future__ import annotations

import collections
from typing import Any

from bench.kv_latency import _short_file

OWN_PACKAGES = ("sql", "raftstore", "hlc")
steps_top_default = 6
prefix_min_share = 0.02      # chains rarer than this do not shorten the shared prefix
_EVENT_LOOP_FRAMES = ("run_forever", "_run_once")
worker_min_share = 0.01      # a thread with fewer statement samples than this (torn stacks) is no SQL worker


def _own_chain(frames: list[dict], stack: list[int]) -> list[str]:
    chain = []
    for i in stack:
        short = _short_file(frames[i].get("file", "?"))
        if short.split("/", 1)[0] in OWN_PACKAGES:
            chain.append((str(frames[i].get("name", "?")), short))
    return chain


def statement_steps(doc: dict, top_n: int = steps_top_default) -> dict[str, Any] | None:
    """Over every statement sample of every thread: {"samples": n, "statement_s": sampled seconds
    spent running statements (all threads), "threads": threads that ran any, "threads_busy_pct":
    their share of wall time spent running one, "steps": [{"step", "file", "pct"}, ...]}; None when
    no sample ran a statement. Weights are py-spy's, in seconds."""
    frames = doc["shared"]["frames"]
    chains = []
    threads = 0
    thread_s = 0.0        # wall time of the threads that ran statements
    for prof in doc.get("profiles", []):
        mine = []
        total = 0.0
        for stack, weight in zip(prof.get("samples", []), prof.get("weights", [])):
            total += weight
            if any(str(frames[i].get("name", "")).endswith(_EVENT_LOOP_FRAMES) for i in stack):
                continue    # the event loop handing a statement to a worker, not running one
            chain = _own_chain(frames, stack)
            if any(f.startswith("sql/") for _, f in chain):
                mine.append((chain, weight))
        if mine and len(mine) >= worker_min_share * len(prof.get("samples", [])):
            threads += 1
            thread_s += total
            chains += mine
    if not chains:
        return None
    # The shared prefix is taken over the common chains only: a few samples torn mid-call (the
    # handler itself on the stack, say) must not stop it from being cut off the rest.
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
    return {"samples": len(chains), "statement_s": total, "threads": threads,
            "threads_busy_pct": 100.0 * total / thread_s if thread_s else 0.0,
            "steps": [{"step": label, "file": files[label], "pct": 100.0 * w / total}
                      for label, w in counts.most_common(top_n)]}
