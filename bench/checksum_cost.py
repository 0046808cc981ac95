"""What a consistency check costs a replica, for a range of --range-mib MiB (default 8).

    python -m bench.checksum_cost [--range-mib 8] [--value-bytes 100,8192] [--runs 5]

In one process, on a real SQLite MVCC store (synchronous FULL, as a node runs it), for each value
size: a range of that much data, then, as `Store._on_checksum` does inside the apply of a
compute_checksum command,
  * loop: mark the index applied inside a tick's batch (with one pending write), pin a SQLite read
    snapshot (`export_span`: commits the batch, opens a connection, reads the applied index) --
    the part on the node loop;
  * thread: hash the pinned snapshot (`range_checksum`) -- the part on a thread of its own;
  * late: while the thread hashes, how late a 5 ms ticker on the main thread gets (GIL
    contention: the node loop's share of the cost). Median and maximum of the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

from raftstore import constants
from raftstore.kvserver.consistency import range_checksum
from raftstore.storage.mvcc import MVCCStore

RANGE_ID = 2
START = b"\x02"


def _load(store: MVCCStore, total_bytes: int, value_bytes: int) -> int:
    rows, done, batch = 0, 0, []
    while done < total_bytes:
        key = START + b"key-%012d" % rows
        batch.append((key, (1_700_000_000_000_000_000 + rows, 0), os.urandom(value_bytes)))
        done += len(key) + value_bytes
        rows += 1
        if len(batch) == 2000:
            store.write_local(batch)
            batch = []
    store.write_local(batch)
    return rows


def _late_ticker(stop: threading.Event, lateness: list[float]) -> None:
    period = 0.005
    due = time.perf_counter() + period
    while not stop.is_set():
        time.sleep(max(0.0, due - time.perf_counter()))
        lateness.append(max(0.0, time.perf_counter() - due))
        due += period


def measure(range_mib: int, value_bytes: int, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        store = MVCCStore(os.path.join(d, "store.sqlite"))
        rows = _load(store, range_mib * 1024 * 1024, value_bytes)
        loop_ms, thread_ms, late_ms = [], [], []
        for i in range(runs):
            index = 100 + i
            t0 = time.perf_counter()
            with store.batch():
                store.write_local([(START + b"pending-%d" % i, (1, 0), b"x")])
                store.mark_applied(RANGE_ID, index)
                export = store.export_span(START, None, constants.consistency_chunk_rows, range_id=RANGE_ID)
                loop_ms.append((time.perf_counter() - t0) * 1000)
            stop, lateness = threading.Event(), []
            ticker = threading.Thread(target=_late_ticker, args=(stop, lateness))
            ticker.start()
            t1 = time.perf_counter()
            with export:
                range_checksum(RANGE_ID, START, None, export.applied_index, export)
            thread_ms.append((time.perf_counter() - t1) * 1000)
            stop.set()
            ticker.join()
            late_ms.append(max(lateness, default=0.0) * 1000)
        store.close()
    return {"range_mib": range_mib, "value_bytes": value_bytes, "rows": rows,
            "loop_ms_median": round(statistics.median(loop_ms), 2), "loop_ms_max": round(max(loop_ms), 2),
            "thread_ms_median": round(statistics.median(thread_ms), 1), "thread_ms_max": round(max(thread_ms), 1),
            "ticker_late_ms_max": round(max(late_ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range-mib", type=int, default=8)
    parser.add_argument("--value-bytes", default="100,8192", help="comma-separated value sizes")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| value bytes | rows | loop p50 / max (ms) | thread p50 / max (ms) | 5 ms ticker late, max (ms) |")
    print("|--:|--:|--:|--:|--:|")
    for value_bytes in (int(v) for v in args.value_bytes.split(",")):
        r = measure(args.range_mib, value_bytes, args.runs)
        print("| %d | %d | %.2f / %.2f | %.1f / %.1f | %.1f |" % (
            value_bytes, r["rows"], r["loop_ms_median"], r["loop_ms_max"], r["thread_ms_median"],
            r["thread_ms_max"], r["ticker_late_ms_max"]))


if __name__ == "__main__":
    main()
