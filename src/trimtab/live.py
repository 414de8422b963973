"""Live sessions: who is on which page now, and what each of their slots shows.

When a session's features change, :meth:`LiveHub.refresh` re-decides the slots of that
session's open pages and returns, per connection, only the decisions whose variant changed —
the tracker swaps just those.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trimtab.decide import Decision, Engine

Render = Callable[[Decision, dict[str, Any]], dict[str, Any] | None]


@dataclass(eq=False)
class LiveConnection:
    """One open page: its user, session, slots and the variant each slot last received."""

    user_id: str
    session_id: str
    slots: list[str]
    page: str = ""
    page_category: str = ""
    personalize: bool = True
    send: Callable[[bytes], Awaitable[None]] | None = None
    shown: dict[str, str] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)


class LiveHub:
    """The registry of open live connections, keyed by (user, session)."""

    def __init__(self, engine_of: Callable[[], Engine], render: Render | None = None) -> None:
        self._engine_of = engine_of
        self.render = render
        self.connections: dict[tuple[str, str], set[LiveConnection]] = {}

    def open(self, conn: LiveConnection) -> None:
        self.connections.setdefault((conn.user_id, conn.session_id), set()).add(conn)

    def close(self, conn: LiveConnection) -> None:
        key = (conn.user_id, conn.session_id)
        group = self.connections.get(key)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.connections[key]

    def __len__(self) -> int:
        return sum(len(group) for group in self.connections.values())

    def decide(self, conn: LiveConnection, only_changed: bool) -> list[Decision]:
        """Decide the connection's slots; with ``only_changed`` keep the ones that moved."""
        engine = self._engine_of()
        if not conn.personalize:
            decisions = engine.defaults(conn.slots, reason="no personalization consent")
            for d in decisions:
                d.source = "default"
        else:
            extra = {"page": conn.page, "page_category": conn.page_category} if conn.page else None
            decisions = engine.decide(conn.user_id, conn.session_id, conn.slots, extra)
        out = []
        for d in decisions:
            if only_changed and conn.shown.get(d.slot) == d.variant:
                continue
            conn.shown[d.slot] = d.variant
            out.append(d)
        if self.render is not None:
            for d in out:
                d.payload = self.render(d, {"page": conn.page, "category": conn.page_category})
        return out

    def refresh(
        self, changed: Iterable[tuple[str, str]]
    ) -> list[tuple[LiveConnection, list[Decision]]]:
        """Re-decide the open pages of changed sessions; only what moved is returned."""
        pushes = []
        for key in changed:
            for conn in self.connections.get(key, ()):
                if not conn.personalize:
                    continue
                moved = self.decide(conn, only_changed=True)
                if moved:
                    pushes.append((conn, moved))
        return pushes
