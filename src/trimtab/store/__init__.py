"""Per-user state persistence.

The feature processor keeps the users it is working on in memory; a :class:`StateStore`
persists their :class:`~trimtab.features.UserState` blobs in batches and loads them back after
a restart (or, scaled out, in another process). The embedded default is
:class:`SqliteStateStore`: a SQLite file in WAL mode, written in one transaction per flush.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class StateStore(Protocol):
    """Where user state blobs live between processes and restarts."""

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored blobs of these users (absent users are missing from the result)."""
        ...

    async def put_many(self, blobs: Mapping[str, bytes]) -> object:
        """Store these blobs atomically per user (what it returns is the store's own)."""
        ...

    async def erase(self, user_id: str) -> bool:
        """Erase one user's state and leave a tombstone; True if there was any state.

        A tombstoned user is never written again, by any writer, so a flush or consumer that
        loaded the user before the erasure cannot bring them back.
        """
        ...

    async def erased(self, user_ids: Iterable[str]) -> set[str]:
        """Those of these users that were erased (have a tombstone)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class VersionedStateStore(StateStore, Protocol):
    """A store shared by several writers: every write is compare-and-set on a per-user
    version (Redis), so a writer never overwrites a state it has not seen."""

    async def get_many_versioned(
        self, user_ids: Iterable[str], erased: set[str] | None = None
    ) -> dict[str, tuple[bytes, int]]:
        """Blob and version of each stored user; tombstoned users are added to ``erased``."""
        ...

    async def put_many_versioned(
        self,
        blobs: Mapping[str, bytes],
        expected: Mapping[str, int] | None = None,
        erased: set[str] | None = None,
    ) -> tuple[dict[str, int], set[str]]:
        """Write the blobs whose stored version is the expected one: (the new versions
        written, the users whose version differed). Tombstoned users are refused and added
        to ``erased``."""
        ...

    async def announce_erasure(self, user_id: str) -> str:
        """Tell every process sharing the store about an erasure (by token)."""
        ...

    async def erasures_after(self, last: str) -> list[tuple[str, str]]:
        """Announced erasures after entry ``last`` ("0" for all): (entry id, token) pairs."""
        ...

    async def compact(self, done: set[str] | None = None) -> bool:
        """After erasures: have the server rewrite its files; False while it is busy."""
        ...


from trimtab.store.sqlite import (  # noqa: E402
    SqliteStateStore,
    StorageError,
    checkpoint,
    connect_sqlite,
    probe_writable,
    vacuum,
)

__all__ = [
    "SqliteStateStore",
    "StateStore",
    "StorageError",
    "VersionedStateStore",
    "checkpoint",
    "connect_sqlite",
    "probe_writable",
    "vacuum",
]
