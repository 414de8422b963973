"""The local durable spool: events accepted while the bus could not confirm them.

A scaled process acknowledges an event only once the bus has confirmed it, or once it is
committed here: a SQLite file in the process's data directory, with every commit fsynced
(``synchronous=FULL``), so a spooled event survives a crash of the process and of the machine.
The publisher (:class:`~trimtab.backends.DurablePublisher`) sends spooled events to the bus in
order and deletes them only after the bus confirmed them; a restarted process finds the file
and carries on. Processes sharing a data directory share the spool: any of them may send a
row (the bus drops the duplicate by its message id).

>>> from trimtab.events import Scroll
>>> spool = Spool(":memory:")
>>> spool.append_sync([Scroll(event_id="e1", user_id="u", session_id="s", ts=1.7e12, depth=1)])
>>> [(seq, e.event_id) for seq, e in spool.read_sync()]
[(1, 'e1')]
>>> spool.delete_through_sync(1); spool.count_sync()
0
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import msgspec

from trimtab.events import AnyEvent, decode_one
from trimtab.privacy import erasure_token
from trimtab.store.sqlite import StorageError, connect_sqlite, probe_writable, vacuum

_encoder = msgspec.json.Encoder()


class Spool:
    """An ordered, durable queue of events in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect_sqlite(path, busy_timeout_ms=2000, synchronous="FULL")
        self._lock = threading.Lock()
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS spool ("
            "seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, body BLOB NOT NULL)"
        )
        probe_writable(self._conn, path)

    def append_sync(self, events: list[AnyEvent]) -> None:
        """Commit events (fsynced); raises :class:`StorageError` when that is impossible."""
        if not events:
            return
        rows = [(e.user_id, _encoder.encode(e)) for e in events]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany("INSERT INTO spool (user_id, body) VALUES (?, ?)", rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"spool {self.path}: {exc}", retry_after_s=5) from exc

    def read_sync(self, limit: int = 1000) -> list[tuple[int, AnyEvent]]:
        """The oldest spooled events, in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, body FROM spool ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(seq, decode_one(body)) for seq, body in rows]

    def delete_through_sync(self, seq: int) -> None:
        """Forget everything up to ``seq`` (the bus has confirmed it)."""
        with self._lock:
            self._conn.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def count_sync(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM spool").fetchone()[0])

    def erase_user(self, user_id: str) -> int:
        """Delete a user's spooled events (erasure); :meth:`compact_sync` then rewrites the file."""
        with self._lock:
            return self._conn.execute("DELETE FROM spool WHERE user_id = ?", (user_id,)).rowcount

    def erase_tokens(self, tokens: set[str]) -> int:
        """Delete the spooled events of users erased elsewhere (known by erasure token)."""
        with self._lock:
            users = [u for (u,) in self._conn.execute("SELECT DISTINCT user_id FROM spool")]
            deleted = 0
            for user in users:
                if erasure_token(user) in tokens:
                    deleted += self._conn.execute(
                        "DELETE FROM spool WHERE user_id = ?", (user,)
                    ).rowcount
        return deleted

    def compact_sync(self) -> None:
        """Rewrite the file and truncate its WAL: nothing of an erased row survives."""
        with self._lock:
            vacuum(self._conn)

    def close_sync(self) -> None:
        with self._lock:
            self._conn.close()
