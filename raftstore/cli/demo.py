"""`raftstore demo`: a local multi-region cluster, a sample dataset and a SQL shell, in one command.

Starts one node process per region on loopback (three by default, `--nodes 5` for five), with
WAN delays between regions emulated inside the peer transport (`--no-latency` turns that off),
loads a small sample dataset, and opens the SQL shell on the first region's node; `-e SQL`
runs statements and exits. Every node process stops when the demo ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile

SAMPLE_SQL = [
    "CREATE TABLE IF NOT EXISTS users (id INT PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rides (id INT PRIMARY KEY, rider_id INT NOT NULL, city TEXT NOT NULL, "
    "revenue FLOAT, start_time TIMESTAMP)",
    "INSERT INTO users VALUES (1, 'Ana', 'new york'), (2, 'Ben', 'new york'), (3, 'Chloé', 'paris'), "
    "(4, 'Dev', 'paris'), (5, 'Eun-ji', 'seattle'), (6, 'Femi', 'seattle'), (7, 'Gus', 'amsterdam'), "
    "(8, 'Hana', 'los angeles') ON CONFLICT (id) DO NOTHING",
    "INSERT INTO rides VALUES "
    "(1, 1, 'new york', 23.50, '2026-11-20 08:15:00'), (2, 2, 'new york', 12.00, '2026-11-20 09:02:00'), "
    "(3, 3, 'paris', 31.25, '2026-11-20 10:40:00'), (4, 4, 'paris', 8.75, '2026-11-21 07:55:00'), "
    "(5, 5, 'seattle', 19.00, '2026-11-21 18:20:00'), (6, 6, 'seattle', 27.40, '2026-11-22 12:05:00'), "
    "(7, 7, 'amsterdam', 15.10, '2026-11-22 16:45:00'), (8, 8, 'los angeles', 42.00, '2026-11-23 21:30:00'), "
    "(9, 1, 'new york', 9.90, '2026-11-24 06:10:00'), (10, 3, 'paris', 18.60, '2026-11-25 14:00:00') "
    "ON CONFLICT (id) DO NOTHING",
]
SAMPLE_TABLES = ("users", "rides")


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="start a local multi-region cluster with sample data and open the SQL shell")
    p.add_argument("--nodes", type=int, choices=[3, 5], default=3, help="regions (one node each); default 3")
    p.add_argument("--no-latency", action="store_true", help="do not emulate WAN delays between regions")
    p.add_argument("--latency-matrix", metavar="NAME|FILE",
                   help="latency matrix (default: global3 for 3 nodes, global5 for 5)")
    p.add_argument("-e", "--execute", action="append", metavar="SQL", help="run SQL and exit (repeatable)")
    p.add_argument("--data-dir", metavar="DIR", help="keep the nodes' data here (default: a temporary directory)")
    p.set_defaults(func=run_demo)
    return p


def run_demo(args: argparse.Namespace) -> int:
    import raftstore
    from raftstore.cli.sql_shell import HISTORY_PATH_DEFAULT, run_repl, run_statements
    from raftstore.localcluster import Cluster
    from raftstore.node.wan import MatrixError, load_matrix
    from raftstore.sqlclient import wait_for_sql

    matrix_name = None if args.no_latency else (args.latency_matrix or ("global3" if args.nodes == 3 else "global5"))
    if matrix_name is not None:
        try:
            load_matrix(matrix_name)
        except MatrixError as exc:
            raise SystemExit("raftstore demo: error: %s" % exc)
    if args.data_dir:
        if os.path.exists(args.data_dir) and (not os.path.isdir(args.data_dir) or os.listdir(args.data_dir)):
            raise SystemExit("raftstore demo: error: --data-dir %s must be a new or empty directory "
                             "(a demo cluster picks fresh ports each time)" % args.data_dir)
        os.makedirs(args.data_dir, exist_ok=True)
    root = args.data_dir or tempfile.mkdtemp(prefix="raftstore-demo-")

    def _terminate(signum, frame):   # SIGTERM/SIGHUP: unwind so the cluster's nodes are stopped
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    interactive = not args.execute
    log = sys.stderr if interactive else None
    extra = ["--latency-matrix", matrix_name] if matrix_name else []
    try:
        with Cluster(root, size=args.nodes, extra_args=extra) as cluster:
            first = cluster.nodes[0]
            cluster.wait_leader(timeout=60)
            conn = raftstore.connect(first.sql_addr)
            wait_for_sql(conn, 60.0)
            cur = conn.cursor()
            for stmt in SAMPLE_SQL:
                cur.execute(stmt)
            if interactive and not sys.stdin.isatty():   # statements piped in: run them and exit
                return run_statements(conn, [sys.stdin.read()], sys.stdout)
            if log:
                print("raftstore demo: %d regions, one node each%s" % (
                    args.nodes, "" if matrix_name is None else ", WAN latency emulated (%s)" % matrix_name), file=log)
                for n in cluster.nodes:
                    print("  n%d %-22s sql %s  psql \"%s\"" % (n.node_id, n.region, n.sql_addr, n.pg_url), file=log)
                print("sample tables: %s. Connected to n%d (%s). \\q to quit." % (
                    ", ".join(SAMPLE_TABLES), first.node_id, first.region), file=log)
                return run_repl(conn, history_path=HISTORY_PATH_DEFAULT)
            return run_statements(conn, list(args.execute), sys.stdout)
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.data_dir:
            shutil.rmtree(root, ignore_errors=True)
