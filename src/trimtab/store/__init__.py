"""Per-user state persistence.

The feature processor keeps the users it is working on in memory; a :class:`StateStore`
persists their :class:`~trimtab.features.UserState` blobs in batches and loads them back after
a restart (or, scaled out, in another process). The embedded default is
:class:`SqliteStateStore`: a SQLite file in WAL mode, written in one transaction per flush.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


@runtime_checkable
class StateStore(Protocol):
    """Where user state blobs live between processes and restarts."""

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored blobs of these users (absent users are missing from the result)."""
        ...

    async def put_many(self, blobs: dict[str, bytes]) -> None:
        """Store these blobs atomically per user."""
        ...

    async def delete(self, user_id: str) -> bool:
        """Erase one user's state; True if there was any."""
        ...

    async def close(self) -> None: ...


from trimtab.store.sqlite import SqliteStateStore, connect_sqlite  # noqa: E402

__all__ = ["SqliteStateStore", "StateStore", "connect_sqlite"]
