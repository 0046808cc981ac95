"""raftstore bench, with issue 11's latency targets added to the verdicts (so --profile re-runs
their cells too): UPDATE by primary key and the one-range multi-row INSERT, p50 <= 1.10 x bound.
Lives outside the repo; bench/ itself is unchanged."""
import sys
from bench import sql_bench, targets

_orig = targets.evaluate

def evaluate(cells, etcd_cells, **kw):
    out = _orig(cells, etcd_cells, **kw)
    for c in cells:
        if c["workload"] not in ("update", "multirow") or c.get("status") != "ok" or not c.get("bound_ms"):
            continue
        p50, bound = c["latency_ms"]["p50"], c["bound_ms"]
        limit = 1.10 * bound
        ok = p50 <= limit
        out.append({"id": "i11_" + c["name"], "target": "issue 11: %s p50 <= 1.10 x bound" % c["name"],
                    "status": targets.MET if ok else targets.MISSED,
                    "detail": "p50 %.1f ms vs 1.10 x %.0f ms = %.1f ms (%.2f x), %s %.1f ms" % (
                        p50, bound, limit, p50 / bound, "to spare" if ok else "missed by", abs(limit - p50)),
                    "cells": [c["name"]]})
    return out

if __name__ == "__main__":
    targets.evaluate = evaluate
    sys.exit(sql_bench.main(prog="raftstore bench (issue-11 targets wrapper)"))
