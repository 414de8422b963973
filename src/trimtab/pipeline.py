"""The contract of a pipeline: what the collector and the admin APIs need of one process.

:class:`~trimtab.runtime.Runtime` implements it over a deployment: the embedded one
(:class:`~trimtab.embedded.Embedded`, one process over SQLite) or the scaled one
(:class:`~trimtab.scaled.Scaled`, one process among many over Redis and a shared bus).
:func:`open_pipeline` picks the deployment from the config and the environment. The collector
types against :class:`Pipeline` only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trimtab.config import SiteConfig
from trimtab.decide import Decision, Engine

if TYPE_CHECKING:
    from trimtab.bandits.serving import ServedPolicy
    from trimtab.decisionlog import SqliteDecisionLog
    from trimtab.events import AnyEvent
    from trimtab.features import UserState
    from trimtab.models.live import LiveModels
    from trimtab.runtime import Deployment


class Pipeline(Protocol):
    """One process's pipeline: events in, features, decisions out, erasure everywhere."""

    config: SiteConfig
    engine: Engine
    data_dir: Path
    decision_log: SqliteDecisionLog
    models: LiveModels
    deployment: Deployment
    policies: dict[str, ServedPolicy]  # the config's policy rules as served, by name

    async def accept(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Make gated events durable and apply them; the (user, session) pairs that changed.

        Raises :class:`~trimtab.store.sqlite.StorageError` when they cannot be made durable
        (nothing is acknowledged then)."""
        ...

    async def prepare(self, user_ids: Iterable[str]) -> None:
        """Have these users' current states at hand before deciding."""
        ...

    def features_of(
        self, user_id: str, session_id: str, page_view_id: str = ""
    ) -> dict[str, Any]: ...

    def state_of(self, user_id: str) -> UserState | None: ...

    def decide(
        self, user_id: str, session_id: str, slots: Iterable[str] | None = None
    ) -> list[Decision]: ...

    def reload(self, config: SiteConfig | None = None) -> SiteConfig:
        """Swap in a new (or re-read) config without a restart."""
        ...

    def health(self) -> dict[str, Any]:
        """Figures for ``/health``; ``degraded`` says why, or is empty."""
        ...

    async def decisions_written(self, wait_s: float = 10.0) -> None:
        """Wait for the flush under way, then write buffered decisions: what a reader of the
        decision log calls first."""
        ...

    async def erase_async(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store this process reaches; counts per store."""
        ...

    async def start(self, flush_interval_s: float) -> None: ...

    async def stop(self) -> None:
        """Stop the loops and flush a last time."""
        ...

    def close(self) -> None:
        """Flush what is left and close every file and connection (outside an event loop)."""
        ...


def open_pipeline(config: SiteConfig, data_dir: str | Path | None = None) -> Pipeline:
    """The :class:`~trimtab.runtime.Runtime`, embedded, or scaled when the config or the
    environment names shared backends (``TRIMTAB_STATE``, ``TRIMTAB_BUS``)."""
    state = os.environ.get("TRIMTAB_STATE") or config.storage.state
    bus = os.environ.get("TRIMTAB_BUS") or config.storage.bus
    from trimtab.runtime import Runtime

    if state.startswith("redis") or bus.startswith(("redis", "nats")):
        if not state.startswith("redis"):
            raise ValueError("a shared bus needs a shared state store: set TRIMTAB_STATE=redis://…")
        from trimtab.scaled import Scaled

        return Runtime(config, data_dir, Scaled())
    return Runtime(config, data_dir)
