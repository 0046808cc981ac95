"""The command line: argparse and terminal code only (start, sql, kv, status, demo, bench).
`raftstore.cli.main:main` is the `raftstore` command."""
