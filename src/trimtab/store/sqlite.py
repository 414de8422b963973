"""The embedded state store: user state blobs in one SQLite table (WAL), batched writes.

Two connections: the writer, used only from worker threads (flushes, erasure), and a reader
for the event loop. WAL lets the reader go on while the writer waits for a lock another process
holds, so a locked file slows flushes down but never the loop.

Erasure leaves a **tombstone**: the user's :func:`~trimtab.privacy.erasure_token` (a hash,
not the id) in ``tombstones``. Every write skips tombstoned users inside its own
transaction, so a flush prepared before the erasure cannot bring the user back.

Erased bytes: connections run with ``secure_delete`` on (deleted cells are zeroed), but SQLite
also leaves stale copies of cells in the unused space of pages it rebalanced, long before any
erasure. So after erasures the files are rewritten whole (:func:`vacuum`; the event log, which
the event loop keeps appending to, by :meth:`~trimtab.bus.sqlite.SqliteEventLog.compact_sync`)
and :func:`checkpoint` truncates the write-ahead log: then no byte of an erased user is left in
any file (the disk blocks the old files occupied are the filesystem's; use an encrypted one).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from trimtab.privacy import erasure_token

Sync = Literal["OFF", "NORMAL", "FULL"]


class StorageError(RuntimeError):
    """A local data file cannot be written (read-only, locked, disk full): nothing was stored.

    ``retry_after_s`` is how long a caller should wait before trying again.
    """

    def __init__(self, message: str, retry_after_s: int = 2) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def connect_sqlite(
    path: str | Path, busy_timeout_ms: int = 5000, synchronous: Sync = "NORMAL"
) -> sqlite3.Connection:
    """A SQLite connection in WAL mode, usable from the worker thread that flushes.

    ``synchronous=NORMAL`` in WAL mode: a committed transaction survives a crash of the
    process; ``FULL`` also fsyncs each commit, so it survives a crash of the machine.
    ``secure_delete`` zeroes deleted content instead of leaving it in free pages (erasure).
    """
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA secure_delete=ON")
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    return conn


def probe_writable(conn: sqlite3.Connection, path: str | Path) -> None:
    """Write one row, so a read-only or unwritable file fails now, at start, with its path."""
    if str(path) == ":memory:":
        return
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS trimtab_meta (k TEXT PRIMARY KEY, v TEXT)")
        conn.execute(
            "INSERT INTO trimtab_meta VALUES ('opened_ms', ?) "
            "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            (str(int(time.time() * 1000)),),
        )
    except sqlite3.Error as exc:
        raise StorageError(f"{path} is not writable: {exc}") from exc


def checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the write-ahead log into the database file and truncate it to zero bytes.

    Returns False when a reader kept the log busy (try again later): until then, pages
    written before an erasure may still sit in the ``-wal`` file.
    """
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return bool(busy == 0)


def vacuum(conn: sqlite3.Connection) -> None:
    """Rewrite the whole database file (nothing stale survives), then truncate its WAL.

    Readers on other connections keep reading (WAL); writers wait for it.
    """
    conn.execute("VACUUM")
    checkpoint(conn)


class SqliteStateStore:
    """User state in one SQLite table, written in batches from a worker thread.

    Synchronous twins of the async methods (``get_many_sync`` …) serve the CLI and tests.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self._conn = connect_sqlite(path, busy_timeout_ms)
        self._lock = threading.Lock()
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS user_state (user_id TEXT PRIMARY KEY, blob BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS tombstones (token TEXT PRIMARY KEY, erased_ms REAL);
            """
        )
        probe_writable(self._conn, path)
        if self.path == ":memory:":  # one in-memory database: read through the writer
            self._reader, self._read_lock = self._conn, self._lock
        else:
            self._reader = connect_sqlite(path, busy_timeout_ms=100)
            self._read_lock = threading.Lock()

    # -- reads (the event loop's connection) -----------------------------------------------
    def get_many_sync(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        ids = list(user_ids)
        out: dict[str, bytes] = {}
        with self._read_lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._reader.execute(
                    f"SELECT user_id, blob FROM user_state WHERE user_id IN ({marks})", chunk
                )
                out.update(rows)
        return out

    def all_user_ids(self) -> list[str]:
        with self._read_lock:
            return [r[0] for r in self._reader.execute("SELECT user_id FROM user_state")]

    def erased_tokens(self) -> set[str]:
        """The erasure tokens of every tombstoned user (loaded once at start)."""
        with self._read_lock:
            return {r[0] for r in self._reader.execute("SELECT token FROM tombstones")}

    # -- writes (worker threads) -----------------------------------------------------------
    def put_many_sync(self, blobs: Mapping[str, bytes]) -> None:
        """Upsert states in one transaction, skipping tombstoned users."""
        if not blobs:
            return
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT INTO user_state (user_id, blob) SELECT ?1, ?2 "
                    "WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE token = ?3) "
                    "ON CONFLICT(user_id) DO UPDATE SET blob = excluded.blob",
                    [(u, blob, erasure_token(u)) for u, blob in blobs.items()],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def erase_sync(self, user_id: str) -> bool:
        """Tombstone a user and delete their state in one transaction; True if there was one."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.execute(
                    "INSERT OR IGNORE INTO tombstones VALUES (?, ?)",
                    (erasure_token(user_id), time.time() * 1e3),
                )
                deleted = self._conn.execute(
                    "DELETE FROM user_state WHERE user_id = ?", (user_id,)
                ).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return deleted > 0

    def delete_sync(self, user_id: str) -> bool:
        """Delete a user's state without a tombstone (a later write may create it again)."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM user_state WHERE user_id = ?", (user_id,))
            return cur.rowcount > 0

    def checkpoint_sync(self) -> bool:
        with self._lock:
            return checkpoint(self._conn)

    def compact_sync(self) -> None:
        """Rewrite the file after erasures (see the module docstring)."""
        with self._lock:
            vacuum(self._conn)

    # -- the StateStore protocol -----------------------------------------------------------
    async def get_many(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        return await asyncio.to_thread(self.get_many_sync, list(user_ids))

    async def put_many(self, blobs: Mapping[str, bytes]) -> None:
        await asyncio.to_thread(self.put_many_sync, blobs)

    async def erase(self, user_id: str) -> bool:
        return await asyncio.to_thread(self.erase_sync, user_id)

    async def erased(self, user_ids: Iterable[str]) -> set[str]:
        tokens = await asyncio.to_thread(self.erased_tokens)
        return {u for u in user_ids if erasure_token(u) in tokens}

    async def delete(self, user_id: str) -> bool:
        return await asyncio.to_thread(self.delete_sync, user_id)

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        with self._lock:
            self._conn.close()
        if self._reader is not self._conn:
            with self._read_lock:
                self._reader.close()
