"""The `raftstore` command: `start` a node, talk to one with `kv`.

Bad input gets one line naming what is wrong and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from raftstore import constants
from raftstore.node.peer import parse_addr

if TYPE_CHECKING:
    from raftstore.node.loop import NodeConfig


def _addr(text: str) -> str:
    try:
        parse_addr(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _addr_list(text: str) -> list[str]:
    return [_addr(part.strip()) for part in text.split(",") if part.strip()]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("%r must be a positive number" % text)
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError("%r is not a positive integer" % text)
    return int(text)


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}


def _size(text: str) -> int:
    """A byte count: 1048576, 512MiB, 2GiB, 10MB (decimal units), 0."""
    digits = text.strip()
    unit = digits.lstrip("0123456789")
    number = digits[:len(digits) - len(unit)]
    factor = _SIZE_UNITS.get(unit.strip().lower())
    if not number or factor is None:
        raise argparse.ArgumentTypeError("%r is not a size in bytes (e.g. 268435456, 256MiB, 2GiB)" % text)
    return int(number) * factor


def _client_memory(text: str) -> int:
    """--max-client-memory: a size that holds two whole frames (a frame larger than the budget
    could never be read)."""
    size = _size(text)
    least = 2 * constants.client_frame_bytes_max
    if size < least:
        raise argparse.ArgumentTypeError("%r is less than two client frames (%d bytes): the node could not "
                                         "read a frame of the largest size" % (text, least))
    return size


def _statement_timeout_ms(text: str) -> int:
    """A statement timeout as SET statement_timeout takes it: '30s', '500ms', '2min', a number of
    milliseconds, 0 for none (parsed by the SQL layer, through the composition root)."""
    from raftstore.server.main import parse_statement_timeout_ms

    try:
        return parse_statement_timeout_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _region(text: str) -> str:
    if not text or not all(c.isalnum() or c in "-_." for c in text):
        raise argparse.ArgumentTypeError("%r is not a region name (letters, digits, - _ .)" % text)
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raftstore", description="A multi-region, strongly consistent store.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = sub.add_parser("start", help="run a node (one per region)")
    start.add_argument("--node-id", type=_positive_int, required=True, help="this node's id (unique, never reused)")
    start.add_argument("--region", type=_region, required=True, help="this node's region, e.g. us-east1")
    start.add_argument("--peer-addr", type=_addr, required=True, metavar="HOST:PORT", help="address for other nodes")
    start.add_argument("--sql-addr", type=_addr, required=True, metavar="HOST:PORT", help="address for clients")
    start.add_argument("--http-addr", type=_addr, default=None, metavar="HOST:PORT",
                       help="serve /metrics (Prometheus text format) and /health here (default: not served)")
    start.add_argument("--pg-addr", type=_addr, default=None, metavar="HOST:PORT",
                       help="serve the PostgreSQL wire protocol here, for psql, psycopg, pg8000, SQLAlchemy "
                            "(insecure: trust authentication, any user; default: not served)")
    start.add_argument("--join", type=_addr_list, required=True, metavar="HOST:PORT[,...]",
                       help="peer addresses of the nodes that form the cluster on first start")
    start.add_argument("--data-dir", required=True, metavar="DIR")
    auth = start.add_mutually_exclusive_group()
    auth.add_argument("--cluster-secret-file", metavar="FILE", help="file holding the shared cluster secret")
    auth.add_argument("--insecure", action="store_true", help="run without peer authentication (testing only)")
    start.add_argument("--range-max-bytes", type=_positive_int, default=constants.range_bytes_max, metavar="BYTES",
                       help="split a range when it grows past this size (default %(default)s)")
    start.add_argument("--disk-reserve-bytes", type=_size, default=None, metavar="SIZE",
                       help="free space kept on the data dir's disk: below it the node refuses writes with "
                            "'disk nearly full' so what it acknowledged can still be applied (default: the larger "
                            "of 256MiB and 2%% of the disk)")
    start.add_argument("--disk-ballast-bytes", type=_size, default=None, metavar="SIZE",
                       help="size of the ballast file (EMERGENCY_BALLAST in the data dir) an operator can delete "
                            "to make room when the disk filled anyway (default: the smaller of 256MiB and 1%% of "
                            "the disk; 0: none)")
    start.add_argument("--log-compaction-entries", type=_positive_int, default=constants.log_compaction_entries_min,
                       metavar="N", help="compact a range's Raft log after N entries (default %(default)s)")
    start.add_argument("--latency-matrix", metavar="NAME|FILE",
                       help="emulate WAN delays between regions on peer links (global3, global5, symmetric60, "
                            "or a TOML file); client links are not delayed")
    start.add_argument("--unavailable-timeout", type=_positive_float, default=constants.range_unavailable_s,
                       metavar="SECONDS", help="a request whose range has no leaseholder reachable from this node "
                       "fails after this long with an 'unavailable' error naming the range (default %(default)s)")
    start.add_argument("--primary-region", type=_region, default=None, metavar="REGION",
                       help="the cluster's home region: every range's lease (and Raft lead) moves to its replica "
                       "there while that node is up, and comes back after it recovers; give every node the same "
                       "value (default: none, leases stay where elections put them)")
    start.add_argument("--lease-duration", type=_positive_float, default=constants.lease_duration_s,
                       metavar="SECONDS", help="how long a range lease lasts unless extended: after a leaseholder "
                       "dies its ranges wait out at most this (plus an election) before another node serves them "
                       "(default %(default)s)")
    start.add_argument("--gc-ttl", type=_positive_float, default=constants.gc_ttl_s, metavar="SECONDS",
                       help="old versions hidden by a newer one for longer than this are removed, and reads "
                       "further back are refused (default %(default)s: 4 h)")
    start.add_argument("--gc-interval", type=_positive_float, default=constants.gc_interval_s, metavar="SECONDS",
                       help="how often a leaseholder looks for versions to remove (default %(default)s)")
    start.add_argument("--max-client-connections", type=_positive_int, default=constants.client_connections_max,
                       metavar="N", help="client connections this node keeps open: a new one past it closes the "
                       "connection idle the longest, or is refused (too_many_connections) when none is idle; "
                       "lowered to fit the open-file limit (default %(default)s)")
    start.add_argument("--client-idle-timeout", type=_positive_float, default=constants.client_idle_timeout_s,
                       metavar="SECONDS", help="a client connection with nothing in flight for this long is closed "
                       "(default %(default)s)")
    start.add_argument("--max-client-memory", type=_client_memory, default=constants.client_memory_bytes, metavar="SIZE",
                       help="bytes of client requests and answers this node buffers, all connections together: "
                       "past it, connections holding more than 16 KiB are not read until bytes come back, and a "
                       "frame held back 1 s is refused (default 128MiB; at least 8MiB)")
    start.add_argument("--max-result-bytes", type=_size, default=constants.sql_result_bytes_max, metavar="SIZE",
                       help="a SQL result larger than this is refused with program_limit_exceeded (54000) "
                       "(default 64MiB)")
    start.add_argument("--statement-timeout", type=_statement_timeout_ms, default=0, metavar="DURATION",
                       help="SQL statements running longer than this are canceled (SQLSTATE 57014), unless their "
                       "session SETs its own statement_timeout: '30s', '500ms', '10min', or milliseconds "
                       "(default 0: no limit, as PostgreSQL and CockroachDB)")
    start.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    start.set_defaults(func=run_start)

    from raftstore.cli.demo import add_demo_parser
    from raftstore.cli.kv import add_kv_parser
    from raftstore.cli.status import add_status_parser
    add_kv_parser(sub)
    add_status_parser(sub)
    add_demo_parser(sub)
    from raftstore.cli.node import add_node_parser
    add_node_parser(sub)
    from raftstore.cli.sql_shell import add_sql_parser
    add_sql_parser(sub)
    from raftstore.cli.bench import add_bench_parser
    add_bench_parser(sub)
    return parser


def _read_secret(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise SystemExit("raftstore start: error: cannot read --cluster-secret-file %s: %s" % (path, exc.strerror or exc))
    if len(secret) < 16:
        raise SystemExit("raftstore start: error: --cluster-secret-file %s holds %d bytes; use at least 16" % (path, len(secret)))
    return secret


CLOCK_SKEW_ENV = "RAFTSTORE_TEST_CLOCK_SKEW_MS"   # tests only: play a node whose clock is off


def _clock_skew_ns() -> int:
    raw = os.environ.get(CLOCK_SKEW_ENV)
    if raw is None:
        return 0
    try:
        return int(float(raw) * 1_000_000)
    except ValueError:
        raise SystemExit("raftstore start: error: %s=%r is not a number of milliseconds" % (CLOCK_SKEW_ENV, raw)) from None


# Tests only: a JSON file {"cut": [node ids]} the node reads every 50 ms: frames to and from
# those peers are lost (a partition inside the peer transport; raftstore.node.loop._check_faults).
FAULTS_FILE_ENV = "RAFTSTORE_TEST_FAULTS_FILE"
# Tests only: "1" plays a broken build whose leaseholder serves until its lease's expiration itself,
# ignoring the max-offset stasis (tests/test_leases_cluster.py shows the stale read it gives).
IGNORE_STASIS_ENV = "RAFTSTORE_TEST_IGNORE_STASIS"

# Tests only: "HEXSTART-HEXEND"; this node answers its own writes to keys in [start, end) with
# "not committed", as when it cannot reach those ranges' leader (reads and other nodes unaffected).
REFUSE_WRITES_ENV = "RAFTSTORE_TEST_REFUSE_WRITES_SPAN"


def _refused_writes() -> tuple[bytes, bytes] | None:
    raw = os.environ.get(REFUSE_WRITES_ENV)
    if raw is None:
        return None
    try:
        start, end = (bytes.fromhex(part) for part in raw.split("-"))
    except ValueError:
        raise SystemExit("raftstore start: error: %s=%r is not HEXSTART-HEXEND" % (REFUSE_WRITES_ENV, raw)) from None
    return start, end


def run_start(args: argparse.Namespace) -> int:
    from raftstore.node.loop import StartupError
    from raftstore.server.main import run_node

    cfg = node_config(args)
    configure_logging(cfg.data_dir, args.node_id, args.log_level)
    try:
        return run_node(cfg, tuple(start_warnings(args)))
    except StartupError as exc:
        raise SystemExit("raftstore start: error: %s" % exc)


def configure_logging(data_dir: str, node_id: int, level: str, *, file_bytes_max: int = constants.log_file_bytes_max,
                      files_kept: int = constants.log_files_kept) -> str:
    """A node logs to stderr and to DATA_DIR/logs/raftstore.log, rotated past `file_bytes_max`
    (`files_kept` old files kept). Returns the log file's path; SystemExit if it cannot be opened."""
    import logging.handlers

    log_dir = os.path.join(data_dir, "logs")
    path = os.path.join(log_dir, "raftstore.log")
    try:
        os.makedirs(log_dir, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(path, maxBytes=file_bytes_max, backupCount=files_kept)
    except OSError as exc:
        raise SystemExit("raftstore start: error: data dir %s is not usable: cannot write the log file %s: %s"
                         % (data_dir, path, exc.strerror or exc)) from None
    to_stderr = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s n" + str(node_id) + " %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    for handler in (to_stderr, to_file):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    return path


def start_warnings(args: argparse.Namespace) -> list[str]:
    """What is legitimate but often a mistake in `raftstore start`'s flags, said at start-up."""
    out = []
    if args.node_id > len(args.join):
        out.append("--node-id %d is larger than the %d nodes of --join: node ids need not be 1..N, but check "
                   "that every node of the cluster has its own" % (args.node_id, len(args.join)))
    return out


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The NodeConfig of `raftstore start` with these arguments (SystemExit saying what is wrong
    with them). Tests that run a node in their own process build it here, as the CLI does."""
    from raftstore.node.loop import NodeConfig

    if args.cluster_secret_file is None and not args.insecure:
        raise SystemExit("raftstore start: error: no --cluster-secret-file given; peers must authenticate "
                         "(pass --insecure to run without, for local testing only)")
    if args.peer_addr not in args.join:
        raise SystemExit("raftstore start: error: --peer-addr %s is not in --join (%s): every node's --join lists "
                         "the peer addresses of all the cluster's nodes, its own included, spelled the same"
                         % (args.peer_addr, ",".join(args.join)))
    secret = b"" if args.insecure else _read_secret(args.cluster_secret_file)
    latency = None
    if args.latency_matrix:
        from raftstore.node.wan import MatrixError, load_matrix
        try:
            latency = load_matrix(args.latency_matrix)
            latency.rtt_ms(args.region, args.region)
        except MatrixError as exc:
            raise SystemExit("raftstore start: error: --latency-matrix: %s" % exc)
    return NodeConfig(node_id=args.node_id, region=args.region, peer_addr=args.peer_addr, sql_addr=args.sql_addr,
                      join=args.join, data_dir=os.path.abspath(args.data_dir), secret=secret,
                      range_bytes_max=args.range_max_bytes,
                      raft_conf={"logCompactionMinEntries": args.log_compaction_entries}, latency=latency,
                      clock_skew_ns=_clock_skew_ns(), refuse_writes=_refused_writes(),
                      faults_file=os.environ.get(FAULTS_FILE_ENV),
                      ignore_stasis=os.environ.get(IGNORE_STASIS_ENV) == "1",
                      disk_reserve_bytes=args.disk_reserve_bytes, disk_ballast_bytes=args.disk_ballast_bytes,
                      http_addr=args.http_addr, pg_addr=args.pg_addr, unavailable_s=args.unavailable_timeout,
                      lease_s=args.lease_duration, primary_region=args.primary_region, gc_ttl_s=args.gc_ttl,
                      gc_interval_s=args.gc_interval, client_connections_max=args.max_client_connections,
                      client_idle_timeout_s=args.client_idle_timeout, client_memory_bytes=args.max_client_memory,
                      sql_result_bytes_max=args.max_result_bytes,
                      statement_timeout_ms=args.statement_timeout)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
