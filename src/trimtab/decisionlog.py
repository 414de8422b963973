"""Every decision, logged with the features it saw.

Experiments, bandits and models learn only from what was logged: the variant, the propensity of
choosing it, the rule or policy that chose it and the attributes at that moment. Decisions are
buffered in memory by the hot path and written in batches; a batch whose write failed goes back
to the buffer and is written by the next flush.

Erased users are in the ``erased`` set the log shares with its runtime: their decisions are
neither buffered nor written, even by a flush that took its rows before the erasure.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from trimtab.decide import Decision
from trimtab.logschema import INSERT_DECISION, create_decisions_table, open_readonly
from trimtab.models.spec import MODELS_ATTRIBUTE
from trimtab.privacy import erasure_token
from trimtab.store.sqlite import checkpoint, connect_sqlite, probe_writable, vacuum


class DecisionRecord(msgspec.Struct, kw_only=True):
    """A logged decision as read back."""

    decision_id: str
    ts: float
    user_id: str
    session_id: str
    slot: str
    variant: str
    source: str
    rule_id: str
    experiment: str
    variation: int
    propensity: float
    reason: str
    features: dict[str, Any]
    models: str = ""  # the model and segment versions (and scores) behind the attributes


class DecisionLog(Protocol):
    def record(self, decisions: list[Decision], attrs: Mapping[str, Any]) -> None: ...

    def flush_sync(self) -> int: ...


_encoder = msgspec.json.Encoder()
_features_decoder = msgspec.json.Decoder(dict[str, Any])


class SqliteDecisionLog:
    """Decisions in a SQLite table; :meth:`record` only appends to a buffer."""

    def __init__(
        self, path: str | Path, max_buffer: int = 100_000, erased: set[str] | None = None
    ) -> None:
        self.path = str(path)
        self._conn = connect_sqlite(path)
        self._lock = threading.Lock()
        self._buffer: list[tuple[list[Decision], Mapping[str, Any], float]] = []
        self._unwritten: list[
            tuple[Any, ...]
        ] = []  # rows of a failed write, written by the next flush
        self.max_buffer = max_buffer
        self.erased = erased if erased is not None else set()
        self.dropped = 0
        create_decisions_table(self._conn)
        probe_writable(self._conn, path)

    def record(self, decisions: list[Decision], attrs: Mapping[str, Any]) -> None:
        if self.erased and attrs.get("id") in self.erased:
            return
        if len(self._buffer) + len(self._unwritten) // 4 >= self.max_buffer:
            # The writer is far behind: count what is dropped rather than grow without bound.
            self.dropped += len(decisions)
            return
        self._buffer.append((decisions, attrs, time.time() * 1000.0))

    def pending(self) -> int:
        return len(self._buffer) + len(self._unwritten)

    def take_rows(self) -> list[tuple[Any, ...]]:
        """Swap the buffer out and serialise it (cheap, done on the event loop), after the
        rows of a failed write."""
        buffer, self._buffer = self._buffer, []
        rows, self._unwritten = self._unwritten, []
        for decisions, attrs, ts in buffer:
            features = _encoder.encode(attrs)
            user, session = str(attrs.get("id", "")), str(attrs.get("session_id", ""))
            models = attrs.get(MODELS_ATTRIBUTE, "")
            for d in decisions:
                rows.append(
                    (
                        d.decision_id,
                        ts,
                        user,
                        session,
                        d.slot,
                        d.variant,
                        d.source,
                        d.rule_id,
                        d.experiment,
                        d.variation,
                        d.propensity,
                        d.reason,
                        features,
                        models,
                    )
                )
        return rows

    def restore(self, rows: list[tuple[Any, ...]]) -> None:
        """Put back the rows of a failed write (ahead of anything recorded since)."""
        self._unwritten = rows + self._unwritten

    def write_rows(self, rows: list[tuple[Any, ...]]) -> int:
        """Write rows in one transaction, leaving out erased users (checked under the lock
        that erasure takes, so a row taken before an erasure is not written after it)."""
        if not rows:
            return 0
        with self._lock:
            if self.erased:
                rows = [r for r in rows if r[2] not in self.erased]
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(INSERT_DECISION, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
        return len(rows)

    def flush_sync(self) -> int:
        rows = self.take_rows()
        try:
            return self.write_rows(rows)
        except BaseException:
            self.restore(rows)
            raise

    def read(self, user_id: str | None = None, limit: int = 1000) -> list[DecisionRecord]:
        where, args = ("WHERE user_id = ?", [user_id]) if user_id else ("", [])
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM decisions {where} ORDER BY ts DESC LIMIT ?", [*args, limit]
            ).fetchall()
        return [_record(row) for row in rows]

    def iter_all(self) -> Iterator[DecisionRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM decisions ORDER BY ts").fetchall()
        for row in rows:
            yield _record(row)

    def forget(self, user_id: str) -> None:
        """Mark a user erased and drop their buffered decisions (on the event loop)."""
        self.erased.add(user_id)
        self._buffer = [b for b in self._buffer if b[1].get("id") != user_id]
        self._unwritten = [r for r in self._unwritten if r[2] != user_id]

    def erase_user(self, user_id: str) -> int:
        """Erase a user's written decisions; later ones are never written. Safe in a worker
        thread; call :meth:`forget` on the event loop first for the buffered ones."""
        self.erased.add(user_id)
        with self._lock:
            cur = self._conn.execute("DELETE FROM decisions WHERE user_id = ?", (user_id,))
            return cur.rowcount

    def checkpoint_sync(self) -> bool:
        with self._lock:
            return checkpoint(self._conn)

    def compact_sync(self) -> None:
        """Rewrite the file after erasures: no stale copy of an erased row survives."""
        with self._lock:
            vacuum(self._conn)

    def close_sync(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.flush_sync()
        with self._lock:
            self._conn.close()


def erase_from_files(
    paths: Iterable[Path], user_ids: Iterable[str] = (), tokens: Iterable[str] = ()
) -> int:
    """Erase users from decision log files, whichever process wrote them (earlier lifetimes,
    other workers on the data directory): delete, rewrite the file, truncate the WAL.

    Users are named by id or by :func:`~trimtab.privacy.erasure_token` (an erasure announced
    by another process); tokens are matched against the ids each file holds.
    """
    ids, wanted = set(user_ids), set(tokens)
    erased = 0
    for path in paths:
        conn = connect_sqlite(path)
        try:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions'"
            ).fetchone()
            if not has_table:
                continue
            doomed = set(ids)
            if wanted:
                for (user,) in conn.execute("SELECT DISTINCT user_id FROM decisions"):
                    if erasure_token(user) in wanted:
                        doomed.add(user)
            for user in doomed:
                erased += conn.execute("DELETE FROM decisions WHERE user_id = ?", (user,)).rowcount
            if doomed:
                vacuum(conn)
        finally:
            conn.close()
    return erased


def read_user(paths: Iterable[Path], user_id: str, limit: int) -> list[DecisionRecord]:
    """A user's newest decisions across decision log files (the other processes sharing a data
    directory), newest first, read-only. A file being written or without the table is read as
    far as it can be, never waited for."""
    found: list[DecisionRecord] = []
    for path in paths:
        try:
            conn = open_readonly(path)
        except (FileNotFoundError, sqlite3.Error):
            continue
        try:
            rows = conn.execute(
                "SELECT * FROM decisions WHERE user_id = ? ORDER BY ts DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        except sqlite3.Error:  # no table yet, or locked by its writer: skip it this time
            rows = []
        finally:
            conn.close()
        found.extend(_record(row) for row in rows)
    found.sort(key=lambda r: r.ts, reverse=True)
    return found[:limit]


def _record(row: tuple[Any, ...]) -> DecisionRecord:
    return DecisionRecord(
        decision_id=row[0],
        ts=row[1],
        user_id=row[2],
        session_id=row[3],
        slot=row[4],
        variant=row[5],
        source=row[6],
        rule_id=row[7],
        experiment=row[8],
        variation=row[9],
        propensity=row[10],
        reason=row[11],
        features=_features_decoder.decode(row[12]),
        models=row[13] if len(row) > 13 else "",
    )
