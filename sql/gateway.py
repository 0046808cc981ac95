"""The SQL gateway of a node: the `sql` op of the client protocol.

A statement is a coroutine on the client port's asyncio loop (raftstore.coop.run): the engine is
plain blocking code, run in a greenlet of its own, and every KV call it makes suspends it while
the loop awaits the node's answer. Its KV (the `sql.kv.KV` Protocol) is what the composition
root gives the gateway: on a node, raftstore.server.nodekv.NodeKV, whose range operations go to
the node's router as typed batches, so the engine never touches the Store, the node or the Raft
layer. The node process's composition root (raftstore.server.main) makes the node's `Gateway` and
hands it to the client port. Why coroutines and not a pool of worker threads: raftstore/DESIGN.md,
"Statements as coroutines".

Per node (one `Gateway`, made when the node starts): the schema leases every session of the
node shares (sql/schema_leases.py), and a LIFO stack of idle Sessions, each with its own KV, so
a statement runs on a warm plan cache instead of planning again. A session serves one statement
at a time: it is taken off the stack for the statement and put back after it.

What a failed statement is answered (Gateway._execute): a write conflict before any write
applied is run again here (bounded), and is SQLSTATE 40001 if it still fails; once any write
of the statement applied or may have, the answer is 40003 (statement completion unknown,
ambiguous), never 40001 or "unavailable", which clients resend.

Statement timeout: each statement runs with a deadline, its session's `statement_timeout`
(sql.session_vars) or else the node's default (`raftstore start --statement-timeout`; none
unless given), from when the gateway takes it. The statement stops itself at the deadline
(raftstore.coop: its row loops and its KV waits check it) and is answered query_canceled,
SQLSTATE 57014 - or 40003 if a write of it applied or may have. The session stays usable.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from typing import Any, Callable

from raftstore import constants, coop
from raftstore.errors import AmbiguousCommitError, RaftstoreError, SqlError, UnavailableError
from raftstore.kv import backoff_delay_s
from raftstore.loglimit import LogLimiter
from sql.constants import GATEWAY_SESSIONS_IDLE_MAX
from sql.kv import KV, ReadRestart

_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

logger = logging.getLogger(__name__)


def _wire_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.strftime(_TS_FORMAT) if value.microsecond else value.strftime("%Y-%m-%d %H:%M:%S")
    return value


def _adopt_session(state: dict, session: dict) -> None:
    """A client's `session` (raftstore.wire: as an earlier answer returned it, perhaps from
    another node) joins this connection's: the later causality token, its session variables.
    SQLError invalid_value (or undefined_object) for a variable or value SET would refuse."""
    from sql.errors import SQLError
    from sql.session_vars import SESSION_VARS, set_value

    settings = session.get("settings") or {}
    adopted, dropped = {}, []
    for name, value in settings.items():
        if name not in SESSION_VARS:
            raise SQLError("undefined_object", "the session names an unknown variable %r (known: %s)"
                           % (name, ", ".join(sorted(SESSION_VARS))))
        value = set_value(name, value)
        if value is None:
            dropped.append(name)
        else:
            adopted[name] = value
    mine = state.setdefault("settings", {})
    mine.update(adopted)
    for name in dropped:
        mine.pop(name, None)
    causality = session.get("causality")
    if causality is not None and tuple(causality) > tuple(state.get("causality") or (0, 0)):
        state["causality"] = tuple(causality)


def _param(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and value[0] == "ts" and isinstance(value[1], str):
        return datetime.datetime.fromisoformat(value[1])
    return value


def _sql_error(exc) -> dict:
    message = getattr(exc, "message", None) or str(exc)   # the caret shows the position; no "(line, col)"
    code = getattr(exc, "code", "syntax")
    return {"ok": False, "error": SqlError(message, sql_code=code, position=getattr(exc, "position", None),
                                           ambiguous=code == "statement_completion_unknown").to_wire()}


def _completion_unknown(exc: RaftstoreError):
    from sql.errors import SQLError

    return SQLError("statement_completion_unknown",
                    "statement completion unknown: %s; some of this statement's writes applied, or "
                    "may have, before it failed; check before running it again" % exc.message)


def _canceled(timeout_ms: int, node_default: bool) -> str:
    """Why a statement its timeout canceled stopped: PostgreSQL's words and the limit."""
    from sql.session_vars import show_duration_ms

    shown = show_duration_ms(timeout_ms)
    if node_default:
        return "canceling statement due to statement timeout (%s, this node's --statement-timeout)" % shown
    return "canceling statement due to statement timeout (statement_timeout = %s)" % shown


_CANCEL_REQUESTED_HINT = "; nothing of it was written"   # a client's cancel (coop.Cancel)
_CANCELED_HINT = ("; nothing of it was written. SET statement_timeout to a longer duration (or 0 for no limit) "
                  "to let it finish")


class Gateway:
    """A node's SQL state: schema leases, idle sessions (see the module docstring)."""

    def __init__(self, new_kv: Callable[[], KV], loop: asyncio.AbstractEventLoop, *,
                 statement_timeout_ms: int = 0) -> None:
        """`new_kv()` makes the KV of a new session (raftstore.server.nodekv.NodeKV on a node);
        `loop` is the client port's, where statements run; `statement_timeout_ms` is the node's
        default statement timeout (0: none), for sessions that SET none."""
        from sql.schema_leases import SchemaLeases
        from sql.session_vars import STATEMENT_TIMEOUT_VAR, show_duration_ms

        assert statement_timeout_ms >= 0, statement_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.defaults = {STATEMENT_TIMEOUT_VAR: show_duration_ms(statement_timeout_ms)}
        self.new_kv, self.loop = new_kv, loop
        self.leases = SchemaLeases()
        self._idle: list = []
        self._rng = random.Random()
        self._renewals: set[asyncio.Task] = set()
        self._log_limit = LogLimiter()   # a renewal failing at every statement is said once per interval

    def _take_session(self):
        if self._idle:
            return self._idle.pop()
        from sql.execute import Session
        return Session(self.new_kv(), leases=self.leases)

    def _give_back(self, session) -> None:
        if len(self._idle) < GATEWAY_SESSIONS_IDLE_MAX:
            self._idle.append(session)

    def _renew(self, names: list[str]) -> None:
        """Renew schema leases past half their life (a statement of its own, after the one that
        found them has answered); a failure only means the next statement reads the catalog."""
        session = self._take_session()
        try:
            session.renew_leases(names)
        except Exception as exc:   # best effort: the lease simply runs out
            self._log_limit.log(logger, logging.INFO, "schema lease renewal failed",
                                "schema lease renewal of %s failed: %s", names, exc)
        finally:
            self._give_back(session)

    def _execute(self, session, sql: str, params: list) -> tuple:
        """Run one statement on `session` (inside coop.run); returns (Result, timestamp).

        What the client may do after a failure decides what it is told. A write conflict met
        before any write of the statement applied (40001) is run again here, at most
        sql_conflict_retries_max times, after a growing jittered pause; the last one reaches the
        client, which may run it again too. Once any write applied or may have (the KV saw it,
        whatever the engine said), no failure is "unavailable" or 40001, which would invite a
        resend that applies it twice: it is 40003, statement completion unknown. A read that
        found a version within its uncertainty interval (ReadRestart) runs it again at once, reading
        at that version, unless a write of it applied."""
        from sql.errors import SQLError

        kv = session.kv
        try:
            return self._attempts(session, sql, params)
        except coop.DeadlineExceeded as exc:
            # Its statement_timeout (coop.run's deadline) came: at a row, a KV wait or a backoff.
            if kv.wrote:
                raise _completion_unknown(SQLError("query_canceled", exc.message)) from None
            raise SQLError("query_canceled", exc.message + (_CANCEL_REQUESTED_HINT if exc.requested
                                                             else _CANCELED_HINT)) from None
        finally:
            kv.end_statement()   # a read outside a statement (a schema lease renewal) is its own

    def _attempts(self, session, sql: str, params: list) -> tuple:
        from sql.errors import SQLError

        kv = session.kv
        attempt = restarts = 0
        restart_at = None
        while True:
            attempt += 1
            if restart_at is None:
                kv.begin_statement()
            else:
                kv.begin_statement(read_ts=restart_at)
            restart_at = None
            try:
                return session.execute(sql, params), list(kv.max_ts)
            except ReadRestart as exc:
                # A read found a version within its uncertainty interval: read everything again
                # at that version (no pause: nothing conflicts), unless a write of it applied.
                if kv.wrote:
                    raise _completion_unknown(SQLError("serialization_failure", str(exc))) from None
                restarts += 1
                if restarts > constants.sql_read_restarts_max:
                    raise SQLError("serialization_failure", "%s; gave up after %d restarts" % (exc, restarts)) from None
                attempt -= 1
                restart_at = exc.ts
                continue
            except SQLError as exc:
                if exc.code != "serialization_failure":
                    raise
                if kv.wrote:
                    raise _completion_unknown(exc) from None
                if attempt > constants.sql_conflict_retries_max:
                    raise SQLError(exc.code, "%s; gave up after running it %d times" % (exc.message, attempt),
                                   exc.position) from None
            except (UnavailableError, AmbiguousCommitError) as exc:
                if kv.wrote:
                    raise _completion_unknown(exc) from None
                raise
            coop.sleep(backoff_delay_s(attempt, self._rng, constants.sql_conflict_backoff_s_min,
                                       constants.sql_conflict_backoff_s_max))

    async def describe(self, sql: str) -> dict:
        """What a PostgreSQL client's Describe asks before it runs `sql` (raftstore.server.pg_port):
        ``{"ok": True, "result": {"params": n, "columns": [str] | None, "types": [str] | None}}``,
        the columns of a SELECT as planned (nothing run); None for a statement whose columns only
        running it tells (SHOW, EXPLAIN) or that returns none. Or an error answer as `handle`'s."""
        from sql.errors import SQLError

        def run():
            session = self._take_session()
            try:
                session.kv.begin_statement()
                try:
                    return session.describe(sql)
                finally:
                    session.kv.end_statement()
            finally:
                self._give_back(session)
        try:
            params, columns, types = await coop.run(run)
        except SQLError as exc:
            return _sql_error(exc)
        except RaftstoreError as exc:
            return {"ok": False, "error": exc.to_wire()}
        return {"ok": True, "result": {"params": params, "columns": columns, "types": types}}

    @staticmethod
    def pg_startup(parameters: dict[str, str]) -> dict:
        """A PostgreSQL startup packet's parameters as a session: {"settings": what the session
        starts with, "status": the ParameterStatus values to report}, or {"error": {code,
        message}} for a setting SET would refuse (sql.pg_settings)."""
        from sql.errors import SQLError
        from sql.pg_settings import parameter_status, startup_settings

        try:
            settings = startup_settings(parameters)
        except SQLError as exc:
            return {"error": {"code": exc.code, "message": exc.message}}
        return {"settings": dict(settings), "status": parameter_status(settings)}

    async def handle(self, args: dict, state: dict | None = None, cancel: coop.Cancel | None = None) -> dict:
        """The `sql` op: run one statement, answer with columns, types, rows and the timestamp.
        `state` is the client connection's session: its variables (SET) and causality token
        (the newest timestamp a statement of it answered: its bounded-staleness reads never read
        below it), kept between its statements (sessions themselves are pooled). `cancel` lets
        the caller stop it (coop.Cancel; a PostgreSQL CancelRequest): it answers 57014."""
        state = state if state is not None else {}
        from sql.errors import SQLError

        try:
            params = [_param(p) for p in (args.get("params") or [])]
        except ValueError as exc:
            return _sql_error(SQLError("invalid_parameter", "bad timestamp parameter: %s" % exc))
        if args.get("session") is not None:
            try:
                _adopt_session(state, args["session"])
            except SQLError as exc:
                return _sql_error(exc)

        from sql.session_vars import STATEMENT_TIMEOUT_VAR, statement_timeout_ms

        settings = state.setdefault("settings", {})
        timeout_ms = statement_timeout_ms(settings, self.statement_timeout_ms)

        def run():
            session = self._take_session()
            session.settings = settings
            session.defaults = self.defaults
            session.causality = state.get("causality")
            session.backend_pid = state.get("backend_pid")   # the PostgreSQL port's, for pg_backend_pid()
            try:
                try:
                    return self._execute(session, args["sql"], params)
                finally:
                    renewals = session.take_renewals()
                    if renewals:
                        task = self.loop.create_task(coop.run(self._renew, renewals))
                        self._renewals.add(task)
                        task.add_done_callback(self._renewals.discard)
            finally:
                self._give_back(session)
        deadline = {} if not timeout_ms else {
            "deadline_s": timeout_ms / 1000,
            "deadline_message": _canceled(timeout_ms, STATEMENT_TIMEOUT_VAR not in settings)}
        try:
            result, ts = await coop.run(run, cancel=cancel, **deadline)
        except SQLError as exc:
            return _sql_error(exc)
        except RaftstoreError as exc:
            return {"ok": False, "error": exc.to_wire()}
        if ts and tuple(ts) > tuple(state.get("causality") or (0, 0)):
            state["causality"] = tuple(ts)
        causality = state.get("causality")
        return {"ok": True, "result": {"columns": list(result.columns), "types": list(result.types),
                                       "rows": [[_wire_value(v) for v in row] for row in result.rows],
                                       "rowcount": result.rowcount, "status": result.status, "ts": ts,
                                       "session": {"causality": list(causality) if causality else None,
                                                   "settings": dict(state.get("settings") or {})}}}
