"""The SQL layer: CockroachDB-flavoured SQL over raftstore's KV interface.

parse (sql.dialect) -> plan (sql.plan, sql.expr) -> execute (sql.execute) -> KV calls.
Public entry points: `Session`, `Result`, `SQLError`, `MemKV` (see sql/DESIGN.md).
"""

from sql.errors import SQLError
from sql.execute import Result, Session
from sql.memkv import MemKV

__all__ = ["MemKV", "Result", "SQLError", "Session"]
