"""The embedded pipeline in one process: event log → features → decisions.

:class:`Runtime` wires the stages together with the embedded defaults (SQLite event log,
memory state persisted to SQLite, SQLite decision log). Ingest is synchronous and fast:
events are appended to the log in one transaction, then applied to features in memory;
state and decisions are written in batches by :meth:`flush`.

Crash safety: :meth:`flush` stores the user states and then the log position they include.
On start, events logged after that position are re-applied; the per-user event-id window makes
re-applying an event already in the state a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trimtab.bandits.serving import POLICY_KEY, ServedPolicy, policy_specs, serve_policies
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import SiteConfig, load_config
from trimtab.decide import STICKY_ATTRIBUTE, Engine
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, UserState, decode_state, encode_state
from trimtab.models.live import attach as attach_models
from trimtab.reload import ConfigWatcher
from trimtab.store.sqlite import SqliteStateStore

log = logging.getLogger("trimtab")
FEATURES_GROUP = "features"


class Runtime:
    """One process's pipeline over the embedded stores in ``data_dir``."""

    def __init__(self, config: SiteConfig, data_dir: str | Path | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir or config.storage.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.event_log = SqliteEventLog(self.data_dir / "events.sqlite")
        self.state_store = SqliteStateStore(self.data_dir / "state.sqlite")
        self.decision_log = SqliteDecisionLog(self.data_dir / "decisions.sqlite")
        self.processor = FeatureProcessor(config.feature_specs())
        self.models = attach_models(self.processor, config, self.data_dir)  # scores, segments
        self.policies: dict[str, ServedPolicy] = {}
        self._saved_updates: dict[str, int] = {}
        self._build_policies(config)
        self.engine = Engine(
            config,
            self.features_of,
            log=self.decision_log.record,
            policies=self.policies,
            assign=self._remember,
        )
        self.events_ingested = 0
        self.config_error = ""
        self.replayed = self._recover()

    # -- configuration -------------------------------------------------------------------
    def reload(self, config: SiteConfig | None = None) -> SiteConfig:
        """Re-read the config file (or take ``config``) and swap it in without a restart.

        An invalid config raises :class:`~trimtab.config.ConfigError` and the running one stays.
        """
        if config is None:
            config = load_config(self.config.source)
        self.processor.configure(config.feature_specs())
        self.models.configure(config)
        self._build_policies(config)
        self.engine.policies = self.policies
        self.engine.reload(config)
        self.config = config
        return config

    def _build_policies(self, config: SiteConfig) -> None:
        """Serve the config's policy rules, keeping what each policy has already learned."""
        stored = self.state_store.get_many_sync(
            POLICY_KEY + spec.name for _, _, spec in policy_specs(config.slots)
        )
        self.policies = serve_policies(config.slots, self.policies, stored)

    # -- the hot path --------------------------------------------------------------------
    def ingest(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Log events durably, then apply them; returns (user, session) pairs that changed."""
        if not events:
            return set()
        self.event_log.append_sync(events)
        self._ensure_loaded(e.user_id for e in events)
        self.events_ingested += len(events)
        changed = self.processor.apply(events)
        for policy in self.policies.values():
            policy.observe(events)
        return changed

    def features_of(self, user_id: str, session_id: str, page_view_id: str = "") -> dict[str, Any]:
        self._ensure_loaded((user_id,))
        return self.processor.features_of(user_id, session_id, page_view_id)

    def decide(self, user_id: str, session_id: str, slots: Iterable[str] | None = None):
        return self.engine.decide(user_id, session_id, slots)

    def _remember(self, user_id: str, key: str, variation: int, propensity: float) -> None:
        """Keep a sticky experiment assignment in the user's state (persisted with it)."""
        self._ensure_loaded((user_id,))
        self.processor.set_user_value(user_id, STICKY_ATTRIBUTE, key, [variation, propensity])

    def _ensure_loaded(self, user_ids: Iterable[str]) -> None:
        states = self.processor.states
        missing = {u for u in user_ids if u not in states}
        if not missing:
            return
        for user_id, blob in self.state_store.get_many_sync(missing).items():
            states[user_id] = decode_state(blob)

    # -- persistence ---------------------------------------------------------------------
    def learn(self, now_ms: float | None = None) -> int:
        """Close ended reward windows: the online policy updates. Returns windows closed."""
        return sum(policy.expire(now_ms) for policy in self.policies.values())

    def _policy_blobs(self) -> dict[str, bytes]:
        """The states of the policies that learned something since they were last saved."""
        blobs = {}
        for name, policy in self.policies.items():
            if self._saved_updates.get(name) != policy.updates:
                blobs[POLICY_KEY + name] = policy.to_state()
                self._saved_updates[name] = policy.updates
        return blobs

    def flush(self) -> None:
        """Persist changed user states, policies and buffered decisions."""
        self._write(*self._snapshot())

    def _snapshot(self) -> tuple[dict[str, bytes], int, list[tuple]]:
        """What a flush writes, taken on the event loop: the log position first, so every
        event up to it is in the states taken next (the crash-recovery invariant)."""
        position = self.event_log.max_seq()
        dirty = self.processor.take_dirty()
        blobs = {u: encode_state(s) for u, s in dirty.items()}
        self.learn()
        blobs.update(self._policy_blobs())
        return blobs, position, self.decision_log.take_rows()

    async def flush_forever(self, interval_s: float) -> None:
        """Flush in a worker thread every ``interval_s`` until cancelled."""
        watcher = ConfigWatcher(self.config.source, self.reload)
        while True:
            await asyncio.sleep(interval_s)
            watcher.check()
            self.config_error = watcher.last_error
            try:
                await asyncio.to_thread(self._write, *self._snapshot())
            except Exception:  # keep flushing; the next round retries what it can
                log.exception("flush failed")

    def _write(self, blobs: dict[str, bytes], position: int, rows: list[tuple]) -> None:
        """States before the log position, so a crash between them only replays events."""
        self.state_store.put_many_sync(blobs)
        self.event_log.set_cursor(FEATURES_GROUP, position)
        self.decision_log.write_rows(rows)

    def _recover(self) -> int:
        """Re-apply events logged after the last flushed position (after a crash)."""
        seq = self.event_log.cursor(FEATURES_GROUP)
        replayed = 0
        while True:
            rows = self.event_log.read_sync(seq, 10_000)
            if not rows:
                break
            seq = rows[-1][0]
            events = [e for _, e in rows]
            self._ensure_loaded(e.user_id for e in events)
            self.processor.apply(events)
            replayed += len(events)
        if replayed:
            log.info("re-applied %d events logged after the last flush", replayed)
            self.flush()
        return replayed

    # -- the interface the collector uses (shared with trimtab.scaled.ScaledRuntime) -----
    async def accept(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Log and apply gated events; the (user, session) pairs whose features changed."""
        return self.ingest(events)

    async def prepare(self, user_ids: Iterable[str]) -> None:
        """Make sure these users' states are loaded before deciding."""
        self._ensure_loaded(user_ids)

    async def start(self, flush_interval_s: float) -> None:
        self._flusher = asyncio.create_task(self.flush_forever(flush_interval_s))

    async def stop(self) -> None:
        task = getattr(self, "_flusher", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush()

    def health(self) -> dict[str, Any]:
        return {
            "degraded": f"config change refused: {self.config_error}" if self.config_error else "",
            "state": "sqlite",
            "bus": "sqlite",
            "events_ingested": self.events_ingested,
            "replayed_at_start": self.replayed,
        }

    async def erase_async(self, user_id: str) -> dict[str, int]:
        return self.erase(user_id)

    # -- privacy -------------------------------------------------------------------------
    def erase(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store: state, event log and decision log."""
        in_memory = int(self.processor.forget(user_id))
        return {
            "state": int(self.state_store.delete_sync(user_id)) or in_memory,
            "events": self.event_log.erase_user(user_id),
            "decisions": self.decision_log.erase_user(user_id),
        }

    def state_of(self, user_id: str) -> UserState | None:
        self._ensure_loaded((user_id,))
        return self.processor.states.get(user_id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        self.event_log.close_sync()
        self.state_store.close_sync()
        self.decision_log.close_sync()
