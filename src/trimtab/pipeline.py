"""The contract of a pipeline: what the collector and the admin APIs need of one process.

Two pipelines implement it: :class:`~trimtab.runtime.Runtime` (one process over the embedded
SQLite stores) and :class:`~trimtab.scaled.ScaledRuntime` (one process among many over Redis
and a shared bus). :func:`open_pipeline` picks one from the config and the environment. The
collector types against :class:`Pipeline` only, so a pipeline is a drop-in for the other.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trimtab.config import SiteConfig, load_config
from trimtab.decide import Decision, Engine

if TYPE_CHECKING:
    from trimtab.bandits.serving import ServedPolicy
    from trimtab.decisionlog import SqliteDecisionLog
    from trimtab.events import AnyEvent
    from trimtab.features import FeatureProcessor, UserState
    from trimtab.models.live import LiveModels


class Pipeline(Protocol):
    """One process's pipeline: events in, features, decisions out, erasure everywhere."""

    config: SiteConfig
    engine: Engine
    data_dir: Path
    decision_log: SqliteDecisionLog
    models: LiveModels

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

    async def erase_async(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store this process reaches; counts per store."""
        ...

    async def start(self, flush_interval_s: float) -> None: ...

    async def stop(self) -> None: ...


class PipelineBase(ABC):
    """What both pipelines share: an engine over their own features, and a config swap that
    keeps every user's state and what each policy has learned. A pipeline says how it serves
    the config's policies (:meth:`_serve_policies`) and how it keeps a sticky assignment
    (:meth:`_remember`)."""

    config: SiteConfig
    engine: Engine
    processor: FeatureProcessor
    models: LiveModels
    policies: dict[str, ServedPolicy]
    decision_log: SqliteDecisionLog

    def _new_engine(self) -> Engine:
        return Engine(
            self.config,
            self.features_of,
            log=self.decision_log.record,
            policies=self.policies,
            assign=self._remember,
        )

    def reload(self, config: SiteConfig | None = None) -> SiteConfig:
        """Re-read the config file (or take ``config``) and swap it in without a restart.

        An invalid config raises :class:`~trimtab.config.ConfigError` and the running one stays.
        """
        if config is None:
            config = load_config(self.config.source)
        self.processor.configure(config.feature_specs())
        self.models.configure(config)
        self.policies = self._serve_policies(config)
        self.engine.policies = self.policies
        self.engine.reload(config)
        self.config = config
        return config

    @abstractmethod
    def _serve_policies(self, config: SiteConfig) -> dict[str, ServedPolicy]:
        """The config's policy rules served, keeping what each policy has learned."""

    @abstractmethod
    def _remember(self, user_id: str, key: str, variation: int, propensity: float) -> None:
        """Keep a sticky experiment assignment in the user's state."""

    @abstractmethod
    def features_of(
        self, user_id: str, session_id: str, page_view_id: str = ""
    ) -> dict[str, Any]: ...


def open_pipeline(config: SiteConfig, data_dir: str | Path | None = None) -> Pipeline:
    """The embedded :class:`~trimtab.runtime.Runtime`, or a
    :class:`~trimtab.scaled.ScaledRuntime` when the config or the environment names shared
    backends (``TRIMTAB_STATE``, ``TRIMTAB_BUS``)."""
    state = os.environ.get("TRIMTAB_STATE") or config.storage.state
    bus = os.environ.get("TRIMTAB_BUS") or config.storage.bus
    if state.startswith("redis") or bus.startswith(("redis", "nats")):
        if not state.startswith("redis"):
            raise ValueError("a shared bus needs a shared state store: set TRIMTAB_STATE=redis://…")
        from trimtab.scaled import ScaledRuntime

        return ScaledRuntime(config, data_dir)
    from trimtab.runtime import Runtime

    return Runtime(config, data_dir)
