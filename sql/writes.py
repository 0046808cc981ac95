"""A statement's writes: each conditioned on the exact version it read, and taken back exactly
if the statement fails.

Why: until transactions make a statement atomic, a multi-row statement writes its rows one
key at a time, and other clients can read and write those keys meanwhile. Two rules keep their
acknowledged writes safe:

* Every read-then-write (UPDATE, DELETE, ON CONFLICT DO UPDATE) and every insert is a
  ``write_if`` (sql/kv.py) on the version the statement read, or on "no live value". A write
  that lost to another client's gets the key's current row back and is decided again from it
  (the row may no longer match, or be gone), at most ROW_CAS_RETRY_COUNT_MAX rounds.
* When the statement fails after writing, each key it wrote is put back to the row it found
  there, with one write conditioned on the version of the statement's own last write to that
  key. A key another client wrote since keeps that client's write. Versions are commit
  timestamps, so this holds even when the other client wrote the very same bytes.

What the caller is told (`StatementWrites.failure`): if every write was taken back, the
statement's own error (a duplicate key, a row too large, ...) saying so - or, for a conflict or
a failed write, SQLSTATE 40003 - and if anything may remain, 40003 naming the rows. A write
conflict before anything was written is SQLSTATE 40001 (`write_conflict`): nothing of the
statement applied, so it may simply run again. Readers may see a failed statement's rows
between their write and their rollback (sql/DIFFERENCES.md).

I/O only through the KV passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftstore.errors import RaftstoreError, TooLargeError
from sql.catalog import TableSchema
from sql.constants import ROW_CAS_RETRY_COUNT_MAX, ROWS_NAMED_IN_ERRORS_MAX
from sql.errors import SQLError
from sql.kv import KV, Version, held_unwritten
from sql.rowcodec import decode_row, pk_text

__all__ = ["RowWrite", "StatementWrites", "write_conflict", "duplicate_key_found", "duplicate_key_raced"]


@dataclass
class RowWrite:
    """One row to write: `new_raw` (None: delete it) at `key`, only if the key's newest version
    is still `version` (None: only if it has no live value). `old_raw` is the row read there
    (None: none); `row` the decoded row the messages name (None: decode `old_raw`);
    `generated`: the key is a drawn rowid, which may be drawn again if it is taken."""

    key: bytes
    version: Version | None
    old_raw: bytes | None
    new_raw: bytes | None
    row: list | None = None
    generated: bool = False

    def unchanged(self) -> bool:
        return self.new_raw is not None and self.new_raw == self.old_raw


Redo = Callable[[RowWrite, "tuple[bytes, Version] | None"], "RowWrite | None"]
"""Decides a write again after it lost: from the key's current (value, version), or None if it
has no live value, the write to make now, or None to leave the row alone."""


def write_conflict(schema: TableSchema, row: list) -> SQLError:
    return SQLError(
        "serialization_failure",
        f"write conflict: row {pk_text(schema, row)} of {schema.name} kept changing under "
        f"concurrent writes ({ROW_CAS_RETRY_COUNT_MAX} attempts)",
    )


def duplicate_key_found(schema: TableSchema, row: list) -> SQLError:
    """A given key found taken when the statement wrote it (no read before: the write's condition
    found it); what was written of the statement is said by whoever reports it."""
    return SQLError(
        "unique_violation",
        f'duplicate key value violates the primary key of "{schema.name}": '
        f"{pk_text(schema, row)} already exists (use UPSERT or INSERT ... ON CONFLICT to overwrite)",
    )


def duplicate_key_raced(schema: TableSchema, row: list) -> SQLError:
    return SQLError(
        "unique_violation",
        f'duplicate key value violates the primary key of "{schema.name}": '
        f"{pk_text(schema, row)} already exists (another statement wrote it while this one ran)",
    )


class StatementWrites:
    """The writes of one statement to one table, and what it takes to undo them.

    For each key written: the row found there before the statement's first write to it, and
    the version of the statement's latest write, so the undo is one conditioned write. Blind
    writes (an UPSERT naming every column reads nothing, so it has nothing to put back) and
    writes whose outcome is unknown cannot be undone; they are reported as rows that may
    remain. True once anything may have applied. Not thread-safe: one statement.
    """

    def __init__(self, kv: KV, schema: TableSchema) -> None:
        self.kv, self.schema = kv, schema
        self.started = False                          # a write has been sent
        self._undo: dict[bytes, list] = {}            # key -> [raw before, version written, row]
        self._unknown: dict[bytes, RowWrite] = {}     # may have applied; no version to undo by
        self._blind: dict[bytes, RowWrite] = {}       # applied over a row never read

    def __bool__(self) -> bool:
        return bool(self._undo or self._unknown or self._blind)

    # --- writing -------------------------------------------------------------------------

    def write(self, items: list[RowWrite], redo: Redo, rounds: int = ROW_CAS_RETRY_COUNT_MAX,
              lock: bytes | None = None, all_or_nothing: bool = False) -> int:
        """Write every item, all at once (one `write_if_many`; the first with `lock`, the token of
        the `get_for_update` the items were read by). An item whose
        condition no longer held is decided again by `redo` and written in the next round.
        With `all_or_nothing` (sql/kv.py), a range's items apply together or not at all: an item
        not written only because another of its batch lost is sent again as it is, after
        `redo` has seen the ones that lost (so a duplicate is raised, in statement order,
        before anything more is written). Returns the rows written, plus those already as wanted. Raises the first failed write
        (in the order given) after recording its round; `redo`'s errors; or, after `rounds`
        rounds, a write conflict (serialization_failure)."""
        done = 0
        pending = []
        for item in items:
            if item.unchanged():
                done += 1
            else:
                pending.append(item)
        for _ in range(rounds):
            if not pending:
                return done
            self.started = True
            wanted = [(i.key, i.version, i.new_raw) for i in pending]
            extra: dict = {"lock": lock} if lock is not None else {}
            if all_or_nothing:
                extra["all_or_nothing"] = True
            results = self.kv.write_if_many(wanted, **extra)
            lock = None
            failure = None
            for item, result in zip(pending, results):
                if result.swapped:
                    self._wrote(item, result.version)
                    done += 1
                elif result.maybe_applied:
                    self._unknown[item.key] = item
                if result.error is not None and failure is None:
                    failure = result.error
            if failure is not None:
                raise failure
            retry = []
            for item, result in zip(pending, results):
                if result.swapped:
                    continue
                if all_or_nothing and held_unwritten(item.version, result):
                    retry.append(item)               # its batch lost by another item
                    continue
                again = redo(item, result.current)
                if again is None:
                    continue
                if again.unchanged():
                    done += 1
                else:
                    retry.append(again)
            pending = retry
        if not pending:
            return done
        raise write_conflict(self.schema, self._row(pending[0]))

    def put_blind(self, key: bytes, raw: bytes, row: list) -> None:
        """An unconditioned write of a whole row (UPSERT naming every column): nothing read,
        so nothing to put back; if the statement fails later it is named as remaining."""
        self.started = True
        try:
            self.kv.put(key, raw)
        except RaftstoreError as exc:
            if exc.ambiguous:
                self._unknown[key] = RowWrite(key, None, None, raw, row)
            raise
        self._blind[key] = RowWrite(key, None, None, raw, row)

    def _wrote(self, item: RowWrite, version: Version) -> None:
        entry = self._undo.get(item.key)
        if entry is None:
            self._undo[item.key] = [item.old_raw, version, self._row(item)]
        else:
            entry[1] = version   # written again (a key moved away and back): undo to the first row

    def _row(self, item: RowWrite) -> list:
        if item.row is not None:
            return item.row
        return decode_row(self.schema, item.old_raw if item.old_raw is not None else item.new_raw)

    # --- failing -------------------------------------------------------------------------

    def failure(self, cause: Exception) -> Exception:
        """Take back what can be taken back, then the error to report for `cause` (see the
        module docstring). Call only when the statement wrote something (bool(self))."""
        assert self, "nothing to take back"
        written = len(self._undo) + len(self._unknown) + len(self._blind)
        keys = list(self._undo)
        results = self.kv.write_if_many([(key, self._undo[key][1], self._undo[key][0]) for key in keys],
                                        stop_after_failure=False)   # each rollback stands alone
        back, changed, kept, unknown = 0, [], [], [self._row(item) for item in self._unknown.values()]
        kept_because = None
        for key, result in zip(keys, results):
            row = self._undo[key][2]
            if result.swapped:
                back += 1
            elif result.error is None:
                changed.append(row)
            elif result.maybe_applied:
                unknown.append(row)
            else:
                kept.append(row)
                kept_because = kept_because or _cause_text(result.error)
        blind = [self._row(item) for item in self._blind.values()]
        what = _cause_text(cause)
        if not changed and not kept and not unknown and not blind:
            note = (f"the {_rows(back)} this statement had written "
                    f"{'was' if back == 1 else 'were'} rolled back (other statements could read "
                    f"{'it' if back == 1 else 'them'} meanwhile)")
            if isinstance(cause, SQLError) and cause.code not in _RETRYABLE:
                return SQLError(cause.code, f"{what}; {note}", cause.position)
            if isinstance(cause, TooLargeError):
                return TooLargeError(f"{what}; {note}")
            return SQLError("statement_completion_unknown",
                            f"statement completion unknown: {what}; {note}; check before running "
                            "the statement again")
        parts = []
        if changed:
            them = "it" if len(changed) == 1 else "them"
            parts.append(f"{self._names(changed)}, changed by another statement after this one "
                         f"wrote {them}, left as that statement wrote {them}")
        if kept:
            parts.append(f"{self._names(kept)}, as this statement wrote "
                         f"{'it' if len(kept) == 1 else 'them'} (rolling back failed: {kept_because})")
        if unknown:
            parts.append(f"{self._names(unknown)}, whose write or rollback got no definite answer")
        if blind:
            parts.append(f"{self._names(blind)}, written whole without reading the row before "
                         "(UPSERT of every column), so not rolled back")
        rolled = f"; the other {back} {'was' if back == 1 else 'were'} rolled back" if back else ""
        return SQLError(
            "statement_completion_unknown",
            f"statement completion unknown: {what}; this statement is not atomic yet, and "
            f"{len(changed) + len(kept) + len(unknown) + len(blind)} of the {_rows(written)} it wrote may "
            "remain: " + "; ".join(parts) + rolled + ". Check these rows before running it again",
        )

    def _names(self, rows: list[list]) -> str:
        shown = ", ".join(pk_text(self.schema, row) for row in rows[:ROWS_NAMED_IN_ERRORS_MAX])
        more = len(rows) - ROWS_NAMED_IN_ERRORS_MAX
        return shown + (f" and {more} more" if more > 0 else "")


_RETRYABLE = frozenset({"serialization_failure"})


def _rows(n: int) -> str:
    return "1 row" if n == 1 else f"{n} rows"


def _cause_text(cause: Exception) -> str:
    return getattr(cause, "message", None) or str(cause)
