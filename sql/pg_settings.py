"""The PostgreSQL session settings clients SET and SHOW when they connect, and what each takes.

Why: psql, psycopg, pg8000 and SQLAlchemy read a handful of settings on connect (SQLAlchemy:
``show standard_conforming_strings``, ``show transaction isolation level``; drivers:
``server_version``, ``client_encoding``, ``DateStyle``, ``TimeZone``, ``integer_datetimes``)
and set a few (``extra_float_digits``, ``DateStyle``, ``client_encoding``,
``application_name``). Each one here either describes what the engine always does (its value is
fixed: SET accepts only that value, in any of the spellings PostgreSQL accepts) or changes
nothing the engine computes (``application_name``, ``extra_float_digits``: we always send the
shortest text that reads back exactly, which is what PostgreSQL 12+ sends for any value >= 1).
A SET that would ask for behaviour we do not have (``TimeZone = 'Europe/Paris'``,
``DateStyle = 'German'``) is refused with 22023 rather than silently ignored.

Values are kept as text in the session map like the other variables (sql/session_vars.py).
Pure: no I/O.
"""

from __future__ import annotations

from sql.errors import SQLError

SERVER_VERSION = "13.0.0"        # CockroachDB reports 13.0.0 too; SQLAlchemy parses "PostgreSQL 13.0"
SERVER_VERSION_NUM = "130000"
VERSION_TEXT = "PostgreSQL 13.0 on raftstore, a Raft-replicated SQL store (CockroachDB-flavoured), 64-bit"
ISOLATION_LEVEL = "serializable"
SEARCH_PATH = '"$user", public'

# name (lower case) -> default, as SHOW prints it (startup parameters report the same values).
PG_SETTINGS: dict[str, str] = {
    "application_name": "",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    "client_min_messages": "notice",
    "datestyle": "ISO, MDY",
    "default_table_access_method": "heap",   # SQLAlchemy's get_columns reads it (pg_am's one method)
    "default_transaction_isolation": ISOLATION_LEVEL,
    "default_transaction_read_only": "off",
    "extra_float_digits": "1",
    "integer_datetimes": "on",
    "intervalstyle": "postgres",
    "is_superuser": "on",
    "lc_collate": "C.UTF-8",
    "lc_ctype": "C.UTF-8",
    "max_identifier_length": "63",
    "search_path": SEARCH_PATH,
    "server_encoding": "UTF8",
    "server_version": SERVER_VERSION,
    "server_version_num": SERVER_VERSION_NUM,
    "session_authorization": "root",
    "standard_conforming_strings": "on",
    "timezone": "UTC",
    "transaction_isolation": ISOLATION_LEVEL,
    "transaction_read_only": "off",
}

_READ_ONLY = frozenset({"default_table_access_method", "server_version", "server_version_num", "server_encoding", "integer_datetimes",
                        "lc_collate", "lc_ctype", "max_identifier_length", "is_superuser", "session_authorization"})
_ANY_TEXT = frozenset({"application_name", "search_path"})
_ISOLATION_WORDS = frozenset({"serializable", "repeatable read", "read committed", "read uncommitted", "default"})
# name -> the spellings (lower case, spaces squeezed) meaning the one behaviour we have
_FIXED: dict[str, frozenset[str]] = {
    "client_encoding": frozenset({"utf8", "utf-8", "unicode"}),
    "timezone": frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "universal", "0", "+00", "+00:00",
                           "-00", "00:00", "utc0"}),
    "standard_conforming_strings": frozenset({"on", "true", "yes", "1"}),
    "bytea_output": frozenset({"hex"}),
    "intervalstyle": frozenset({"postgres"}),
    "client_min_messages": frozenset({"debug5", "debug4", "debug3", "debug2", "debug1", "log", "notice",
                                      "warning", "error"}),
    "default_transaction_read_only": frozenset({"off", "false", "no", "0"}),
    "transaction_read_only": frozenset({"off", "false", "no", "0"}),
}


def set_pg_value(name: str, value: str) -> str:
    """The text a session keeps for PostgreSQL setting `name` (one of PG_SETTINGS) set to
    `value`; SQLError invalid_value for a value whose behaviour the engine does not have."""
    text = value.strip()
    word = " ".join(text.lower().split())
    if name in _READ_ONLY:
        raise SQLError("invalid_value", f'parameter "{name}" cannot be changed')
    if name in _ANY_TEXT:
        return text
    if name == "extra_float_digits":
        try:
            digits = int(text)
        except ValueError:
            digits = None
        if digits is None or not -15 <= digits <= 3:
            raise SQLError("invalid_value", f"extra_float_digits takes an integer from -15 to 3, not {value!r}")
        return str(digits)
    if name == "datestyle":
        parts = {p.strip() for p in word.split(",")}
        if not parts <= {"iso", "mdy", "dmy", "ymd"}:
            raise SQLError("invalid_value", f"DateStyle takes ISO (timestamps are always shown as ISO 8601), "
                           f"not {value!r}")
        return "ISO, " + ("DMY" if "dmy" in parts else "YMD" if "ymd" in parts else "MDY")
    if name == "client_encoding" and word.replace("_", "") == "sqlascii":
        return "SQL_ASCII"   # no conversion, which is what we do (psql's 'auto' in a C locale asks for it)
    if name in ("transaction_isolation", "default_transaction_isolation"):
        if word not in _ISOLATION_WORDS:
            raise SQLError("invalid_value", f"{name} takes an isolation level, not {value!r}")
        return ISOLATION_LEVEL   # as in CockroachDB, every level is run as SERIALIZABLE
    allowed = _FIXED[name]
    if word not in allowed:
        raise SQLError("invalid_value", f"{name} can only be {PG_SETTINGS[name]} here, not {value!r}")
    return PG_SETTINGS[name]


# The settings a server reports in ParameterStatus after startup (PostgreSQL's GUC_REPORT ones),
# with the capitalisation PostgreSQL sends; drivers read server_version, client_encoding,
# standard_conforming_strings and integer_datetimes from these.
REPORTED_SETTINGS = ("application_name", "client_encoding", "DateStyle", "integer_datetimes", "IntervalStyle",
                     "is_superuser", "server_encoding", "server_version", "session_authorization",
                     "standard_conforming_strings", "TimeZone")


def parameter_status(settings: dict[str, str]) -> dict[str, str]:
    """What a pgwire server reports in ParameterStatus for a session with `settings` (its SET
    values, lower-case names): each REPORTED_SETTINGS name with the session's value or the default."""
    return {name: settings.get(name.lower(), PG_SETTINGS[name.lower()]) for name in REPORTED_SETTINGS}


def startup_settings(parameters: dict[str, str]) -> dict[str, str]:
    """The session settings a startup packet's parameters ask for (``user``, ``database``,
    ``options`` and ``replication`` are not settings and are left out), each as SET keeps it;
    SQLError invalid_value for a value SET would refuse, undefined_object for an unknown
    setting - PostgreSQL refuses the connection in both cases."""
    from sql.session_vars import SESSION_VARS, set_value

    kept = {}
    for name, value in parameters.items():
        key = name.lower()
        if key in ("user", "database", "options", "replication"):
            continue
        if key not in SESSION_VARS:
            raise SQLError("undefined_object", f'unrecognized configuration parameter "{name}"')
        text = set_value(key, value)
        if text is not None and (key not in PG_SETTINGS or text != PG_SETTINGS[key]):
            kept[key] = text
    return kept
