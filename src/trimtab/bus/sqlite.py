"""The embedded event log: SQLite in WAL mode, one file, per-group read cursors.

An event is logged once per ``(user_id, event_id)``: a retried batch adds nothing, and one
user reusing another's ``event_id`` cannot keep their own event out of the log.

Appends run on the event loop (they are short, and keeping them there keeps log order equal to
apply order), so the connection waits at most ``busy_timeout_ms`` for a lock another process
holds; then :class:`~trimtab.store.sqlite.StorageError` says the batch was not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import msgspec

from trimtab.bus import BusMessage
from trimtab.events import AnyEvent, decode_one
from trimtab.logschema import INSERT_EVENT, create_events_table
from trimtab.store.sqlite import (
    StorageError,
    Sync,
    checkpoint,
    connect_sqlite,
    probe_writable,
)

_encoder = msgspec.json.Encoder()


class SqliteEventLog:
    """Append-only event log in SQLite (WAL), with per-group read cursors."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 250, fsync: bool = False) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous: Sync = "FULL" if fsync else "NORMAL"
        self._conn = connect_sqlite(path, busy_timeout_ms, self.synchronous)
        self._lock = threading.Lock()
        create_events_table(self._conn)
        probe_writable(self._conn, path)
        self._new = asyncio.Event() if _has_loop() else None

    def append_sync(self, events: list[AnyEvent]) -> int:
        """Append in one transaction; events already in the log are ignored.

        Raises :class:`~trimtab.store.sqlite.StorageError` when the file cannot be written
        (locked by another process, read-only, disk full): then nothing of the batch is logged.
        """
        if not events:
            return 0
        rows = [
            (
                e.event_id,
                e.user_id,
                e.session_id,
                e.__struct_config__.tag,
                e.ts,
                e.received,
                _encoder.encode(e),
            )
            for e in events
        ]
        with self._lock:
            before = self._conn.total_changes
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(INSERT_EVENT, rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"event log {self.path}: {exc}") from exc
            added = self._conn.total_changes - before
        if self._new is not None:
            self._new.set()
        return added

    def read_sync(self, after_seq: int = 0, limit: int = 10_000) -> list[tuple[int, AnyEvent]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [(seq, decode_one(body)) for seq, body in rows]

    def iter_all(self, batch: int = 10_000) -> Iterator[AnyEvent]:
        """Every logged event in order (for replay, reports and rebuilding features)."""
        seq = 0
        while True:
            rows = self.read_sync(seq, batch)
            if not rows:
                return
            seq = rows[-1][0]
            for _, event in rows:
                yield event

    def max_seq(self) -> int:
        """The position of the newest logged event (0 when empty)."""
        with self._lock:
            row = self._conn.execute("SELECT max(seq) FROM events").fetchone()
        return row[0] or 0

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def cursor(self, group: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT seq FROM cursors WHERE grp = ?", (group,)).fetchone()
        return row[0] if row else 0

    def set_cursor(self, group: str, seq: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO cursors (grp, seq) VALUES (?, ?) "
                "ON CONFLICT(grp) DO UPDATE SET seq = max(seq, excluded.seq)",
                (group, seq),
            )

    async def erase_user(self, user_id: str) -> int:
        """Delete every logged event of a user (in a worker thread); how many."""
        return await asyncio.to_thread(self.erase_user_sync, user_id)

    def erase_user_sync(self, user_id: str) -> int:
        """Delete every event of a user; the bytes are zeroed (``secure_delete``)."""
        with self._lock:
            return self._conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount

    async def delete(self, ids: list[str]) -> int:
        """Delete delivered messages (events of erased users a consumer met)."""
        seqs = [(int(i),) for i in ids]
        with self._lock:
            before = self._conn.total_changes
            self._conn.executemany("DELETE FROM events WHERE seq = ?", seqs)
            return self._conn.total_changes - before

    def checkpoint_sync(self) -> bool:
        """Fold the write-ahead log into the file and truncate it (after an erasure)."""
        with self._lock:
            return checkpoint(self._conn)

    def compact_sync(self) -> None:
        """Replace the file by a fresh copy without deleted rows or stale page space.

        Appends go on meanwhile: the copy is made from a snapshot on a side connection
        (``VACUUM INTO``); then, holding the log's lock for a moment, the events appended since
        are added to it, the copy is renamed over the file and the connection reopened. Callers
        must not erase concurrently (an erasure after the snapshot would be undone).
        """
        if self.path == ":memory:":
            return
        fresh = self.path + ".compact"
        for leftover in (fresh, fresh + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        side = sqlite3.connect(self.path, isolation_level=None)
        try:
            side.execute("VACUUM INTO ?", (fresh,))
        finally:
            side.close()
        copy = sqlite3.connect(fresh, isolation_level=None)
        try:
            snapshot = copy.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        finally:
            copy.close()
        with self._lock:
            conn = self._conn
            conn.execute("ATTACH DATABASE ? AS fresh", (fresh,))
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO fresh.events SELECT * FROM main.events WHERE seq > ?",
                             (snapshot,))  # fmt: skip
                conn.execute("DELETE FROM fresh.cursors")
                conn.execute("INSERT INTO fresh.cursors SELECT * FROM main.cursors")
                conn.execute("DELETE FROM fresh.sqlite_sequence")
                conn.execute("INSERT INTO fresh.sqlite_sequence SELECT * FROM main.sqlite_sequence")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                conn.execute("DETACH DATABASE fresh")
                raise
            conn.execute("DETACH DATABASE fresh")
            checkpoint(conn)
            conn.close()
            os.replace(fresh, self.path)
            for stale in (self.path + "-wal", self.path + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)  # the old file's: never let it touch the new one
            self._conn = connect_sqlite(self.path, self.busy_timeout_ms, self.synchronous)

    async def publish(self, events: list[AnyEvent]) -> int:
        return await asyncio.to_thread(self.append_sync, events)

    async def subscribe(
        self, group: str, batch: int = 500, consumer: str | None = None
    ) -> AsyncGenerator[list[BusMessage], None]:
        """Batches for ``group``, which has one reader here (``consumer`` is not needed)."""
        seq = self.cursor(group)
        while True:
            rows = await asyncio.to_thread(self.read_sync, seq, batch)
            if rows:
                seq = rows[-1][0]
                yield [BusMessage(str(s), e) for s, e in rows]
                continue
            if self._new is None:
                self._new = asyncio.Event()
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), timeout=0.5)

    async def ack(self, group: str, ids: list[str]) -> None:
        if ids:
            self.set_cursor(group, max(int(i) for i in ids))

    async def compact(self, done: set[str] | None = None) -> bool:
        """:meth:`compact_sync` in a worker thread (a file here: nothing shared to ask)."""
        await asyncio.to_thread(self.compact_sync)
        return True

    async def durability(self) -> str:
        if self.synchronous == "FULL":
            return "fsync per write: a machine crash loses nothing acknowledged"
        return (
            "fsync at checkpoints (synchronous=NORMAL): a process crash loses nothing, a "
            "machine crash may lose the last writes (storage.fsync: true to fsync each)"
        )

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        with self._lock:
            self._conn.close()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
