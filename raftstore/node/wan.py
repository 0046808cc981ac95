"""WAN emulation: round-trip times between regions, from a TOML latency matrix.

A frame from region A to region B waits RTT(A, B) / 2 inside the peer transport before it is
written, in order (raftstore.node.peer). Client links are never delayed. Matrices ship beside this
module (`raftstore/latency/*.toml`) and are named by file stem: `global3` (the matrix
`cockroach demo --global` uses), `global5` (five regions) and `symmetric60`; any other value is
a path to a TOML file of the same shape:

    name = "..."
    source = "where the figures come from"
    default_rtt_ms = 60            # optional: for pairs not listed
    [rtt_ms]
    "us-east1 europe-west1" = 64   # symmetric; a region to itself is 0
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

LATENCY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "latency")


class MatrixError(ValueError):
    """The latency matrix cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class LatencyMatrix:
    name: str
    source: str = ""
    pairs: dict[frozenset, float] = field(default_factory=dict)
    default_rtt_ms: float | None = None

    def rtt_ms(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        rtt = self.pairs.get(frozenset((a, b)), self.default_rtt_ms)
        if rtt is None:
            raise MatrixError("latency matrix %r has no round-trip time for %s <-> %s" % (self.name, a, b))
        return rtt

    def one_way_s(self, a: str, b: str) -> float:
        return self.rtt_ms(a, b) / 2000.0

    def regions(self) -> list[str]:
        return sorted({r for pair in self.pairs for r in pair})


def load_matrix(name_or_path: str) -> LatencyMatrix:
    path = name_or_path
    if not os.path.sep in name_or_path and not name_or_path.endswith(".toml"):
        path = os.path.join(LATENCY_DIR, name_or_path + ".toml")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        known = sorted(p[:-5] for p in os.listdir(LATENCY_DIR) if p.endswith(".toml"))
        raise MatrixError("cannot read latency matrix %s: %s (built-in: %s)" % (path, exc.strerror or exc, ", ".join(known))) from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError("latency matrix %s is not valid TOML: %s" % (path, exc)) from None
    pairs: dict[frozenset, float] = {}
    for key, value in (doc.get("rtt_ms") or {}).items():
        regions = key.split()
        if len(regions) != 2 or not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise MatrixError("latency matrix %s: entry %r = %r is not \"REGION REGION\" = milliseconds" % (path, key, value))
        pairs[frozenset(regions)] = float(value)
    default = doc.get("default_rtt_ms")
    if default is not None and (not isinstance(default, (int, float)) or default < 0):
        raise MatrixError("latency matrix %s: default_rtt_ms must be a non-negative number" % path)
    if not pairs and default is None:
        raise MatrixError("latency matrix %s lists no round-trip times" % path)
    return LatencyMatrix(str(doc.get("name", os.path.basename(path))), str(doc.get("source", "")), pairs,
                         float(default) if default is not None else None)
