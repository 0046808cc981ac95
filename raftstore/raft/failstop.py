"""Crash-only storage errors: after a failed write, fsync or commit the replica stops.

Once a write to the Raft journal or a commit of applied commands has failed, the process no
longer knows what is on disk: the page cache may say one thing and the platter another (an fsync
that failed is never retried in-process, because after it the page cache no longer tells what
reached the disk), a rolled-back SQLite batch leaves entries that pysyncobj already counted as
applied, and every later commit would write over the hole. An answer built on that state could
acknowledge a write this replica then loses. The only safe move is the one a crash makes: stop
at once and let a restart replay the journal from the applied index stored with the data.

`FailStop` is a BaseException on purpose: it must pass through every `except Exception` on its
way (pysyncobj's handlers, ours around messages and ticks) to the code that owns the process --
the node loop, which logs one line and exits non-zero (`exit_now`), or the simulator, which
crashes the simulated node. A deterministic command failure (a CAS that does not match, a bad
argument) is not a FailStop: it is an answer, the same on every replica.
"""

from __future__ import annotations

import logging
import os
import sys

from raftstore import constants

logger = logging.getLogger(__name__)


class FailStop(BaseException):
    """The replica cannot go on safely; the message names the range, the index and the error."""


def exit_now(reason: FailStop | str) -> None:
    """Log one line naming what failed, flush the logs, and end the process without unwinding
    (no finalizer may write anything more to a disk we no longer trust)."""
    try:
        logger.critical("stopping: %s", reason)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
    finally:
        os._exit(constants.exit_code_storage_failure)
