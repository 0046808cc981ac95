"""raftstore: a multi-region, strongly consistent, SQL-speaking store.

``raftstore.connect("host:port")`` opens a DB-API 2.0 connection (see `raftstore.sqlclient`),
and the module carries what PEP 249 asks of the module `connect` comes from: ``apilevel``,
``threadsafety``, ``paramstyle``, the exception classes (``raftstore.Error`` is
``raftstore.sqlclient.Error``) and the type constructors and objects. They are loaded on first use, so that importing any part of the
package (a node, the CLI) does not pull in the client.
"""

from __future__ import annotations

from typing import Any

# The names PEP 249 puts on the module, all taken from raftstore.sqlclient.
_DBAPI_NAMES = tuple(
    "connect apilevel threadsafety paramstyle "
    "Warning Error InterfaceError DatabaseError DataError OperationalError IntegrityError "
    "InternalError ProgrammingError NotSupportedError "
    "Date Time Timestamp DateFromTicks TimeFromTicks TimestampFromTicks Binary "
    "STRING BINARY NUMBER DATETIME ROWID".split()
)

__all__ = list(_DBAPI_NAMES)


def __getattr__(name: str) -> Any:
    if name in _DBAPI_NAMES:
        from raftstore import sqlclient

        return getattr(sqlclient, name)
    raise AttributeError(f"module 'raftstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DBAPI_NAMES))
