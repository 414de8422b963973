"""The embedded state store: user state blobs in one SQLite table (WAL), batched writes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path


def connect_sqlite(path: str | Path) -> sqlite3.Connection:
    """A SQLite connection in WAL mode, usable from the worker thread that flushes."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteStateStore:
    """User state in one SQLite table, written in batches from a worker thread.

    Synchronous twins of the async methods (``get_many_sync`` …) serve the CLI and tests.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect_sqlite(path)
        self._lock = threading.Lock()
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS user_state (user_id TEXT PRIMARY KEY, blob BLOB NOT NULL)"
        )

    def get_many_sync(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        ids = list(user_ids)
        out: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT user_id, blob FROM user_state WHERE user_id IN ({marks})", chunk
                )
                out.update(rows)
        return out

    def put_many_sync(self, blobs: dict[str, bytes]) -> None:
        if not blobs:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT INTO user_state (user_id, blob) VALUES (?, ?) "
                    "ON CONFLICT(user_id) DO UPDATE SET blob = excluded.blob",
                    blobs.items(),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def delete_sync(self, user_id: str) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM user_state WHERE user_id = ?", (user_id,))
            return cur.rowcount > 0

    def all_user_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT user_id FROM user_state")]

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        return await asyncio.to_thread(self.get_many_sync, list(user_ids))

    async def put_many(self, blobs: dict[str, bytes]) -> None:
        await asyncio.to_thread(self.put_many_sync, blobs)

    async def delete(self, user_id: str) -> bool:
        return await asyncio.to_thread(self.delete_sync, user_id)

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        with self._lock:
            self._conn.close()
