"""`raftstore bench`: the user command that runs the benchmark in `bench/` (bench/sql_bench.py).

The one place the product reaches into `bench/`, and why it may: the rule is that nothing in
the product's data path (raftstore's store and node, sql/, hlc/) depends on the benchmarks, so a
node never loads them. `raftstore bench` is a user command, like `raftstore demo`, whose whole
job is to run the benchmark; the dependency points from the CLI to bench, never back, and
`bench` is imported only inside the handler, when the user runs `raftstore bench`, so
`raftstore start` and every other command never import it.

The subcommand takes its arguments verbatim and hands them to bench's own parser, so the flags
(and `raftstore bench --help`) are defined in exactly one place.
"""

from __future__ import annotations

import argparse


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    # prefix_chars="\0": no option is parsed here, so "--matrix", "-h" and "--help" all reach bench.
    p = subparsers.add_parser(
        "bench", add_help=False, prefix_chars="\0",
        help="measure cross-region SQL latency against its physical bound (and against etcd)",
        description="Run `raftstore bench --help` for the options.")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_bench)
    return p


def run_bench(args: argparse.Namespace) -> int:
    from bench.sql_bench import main   # lazily: only this command loads the benchmark code
    return main(list(args.bench_args), prog="raftstore bench")
