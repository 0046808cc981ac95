"""Run the simulator over many seeds: `python -m raftstore.sim --seeds 1000`.

Exits non-zero on the first violation and prints the command that replays that seed exactly.
PYTHONHASHSEED is pinned (the process re-executes itself when it is not), because pysyncobj
iterates sets of node ids and that order must not change between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "raftstore.sim"] + (argv if argv is not None else sys.argv[1:]))

    p = argparse.ArgumentParser(prog="python -m raftstore.sim", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, help="run this one seed (replay)")
    p.add_argument("--seeds", type=int, default=200, help="run seeds 1..N (default 200)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--target", choices=["ours", "plain"], default="ours")
    p.add_argument("--fsync-off", action="store_true", help="the simulated disk ignores fsync")
    p.add_argument("--write-through", action="store_true", help="every write is durable at once")
    p.add_argument("--no-crashes", action="store_true")
    p.add_argument("--no-partitions", action="store_true")
    p.add_argument("--proposals", type=int, default=300)
    p.add_argument("--storage-faults", action="store_true",
                   help="failed journal appends and fsyncs, failed commits of applies, disks that fill "
                        "(with --splits: failed commits of applies in the real SQLite store)")
    p.add_argument("--splits", action="store_true",
                   help="simulate whole stores with automatic splits and a crash at a step of a split")
    p.add_argument("--lagging", action="store_true",
                   help="with --splits: a node is down while the others write, split and compact, then catches up by snapshots")
    p.add_argument("--quiesce", action="store_true",
                   help="with --splits: idle groups quiesce as on a node (caught-up leaders send no heartbeats; "
                        "node heartbeats keep followers waiting)")
    p.add_argument("--partition-s", type=float, default=0.0,
                   help="with --splits: cut off the node leading the most ranges this long once the writes are done")
    p.add_argument("--leader-fallback-s", type=float, default=2.5,
                   help="with --splits --quiesce: pysyncobj's leaderFallbackTimeout")
    p.add_argument("--crash-point", default=None, help="with --splits: the split step to crash at ('none': no crash)")
    p.add_argument("--keep-going", action="store_true", help="count violations instead of stopping at the first")
    p.add_argument("--jobs", type=int, default=0,
                   help="seeds run in this many processes at once (default: one per CPU this process may use)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each seed's summary")
    args = p.parse_args(argv)
    if args.jobs < 0:
        p.error("--jobs must be 0 (one per CPU) or more, not %d" % args.jobs)
    logging.disable(logging.CRITICAL)  # pysyncobj's own complaints would drown the summary
    seeds = [args.seed] if args.seed is not None else range(args.first_seed, args.first_seed + args.seeds)
    jobs = max(1, min(args.jobs or _cpus(), len(seeds)))
    started = time.monotonic()
    failed = []
    with contextlib.ExitStack() as stack:
        if jobs == 1:
            outcomes = (_run_one(args, seed) for seed in seeds)
        else:
            # Seeds run in worker processes (fork: each inherits the pinned hash seed and patches
            # pysyncobj on its own), but their outcomes are taken in seed order, so the output and
            # the first violation are the same as with one process.
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(jobs))
            outcomes = pool.imap(functools.partial(_run_one, args), seeds)
        for seed, summary, violation in outcomes:
            if violation is not None:
                print("FAIL %s" % violation, flush=True)
                failed.append(seed)
                if not args.keep_going:
                    break
            elif args.verbose or args.seed is not None:
                print(json.dumps(summary), flush=True)
    ran = len(seeds) if args.keep_going or not failed else list(seeds).index(failed[0]) + 1
    what = ", ".join(["splits"] + ["lagging"] * args.lagging + ["quiesce"] * args.quiesce) if args.splits else args.target
    print("%d seeds, %d violations (%s), %.1f s wall" % (ran, len(failed), what, time.monotonic() - started))
    return 1 if failed else 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_one(args: argparse.Namespace, seed: int) -> tuple[int, dict | None, str | None]:
    """One seed: (seed, its summary, None) or (seed, None, the violation)."""
    from raftstore.sim.world import SimConfig, Violation, run_seed
    try:
        if args.splits:
            from raftstore.sim.split_world import SplitSimConfig, run_split_seed
            return seed, run_split_seed(SplitSimConfig(seed=seed, lagging=args.lagging,
                                                       storage_faults=args.storage_faults, quiesce=args.quiesce,
                                                       partition_s=args.partition_s,
                                                       leader_fallback_s=args.leader_fallback_s,
                                                       crash_point=args.crash_point)), None
        return seed, run_seed(SimConfig(seed=seed, target=args.target, fsync_works=not args.fsync_off,
                                        write_through=args.write_through, crashes=not args.no_crashes,
                                        partitions=not args.no_partitions, proposals=args.proposals,
                                        storage_faults=args.storage_faults)), None
    except Violation as exc:
        return seed, None, str(exc)


if __name__ == "__main__":
    sys.exit(main())
