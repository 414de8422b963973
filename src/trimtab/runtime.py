"""The embedded pipeline in one process: event log → features → decisions.

:class:`Runtime` wires the stages together with the embedded defaults (SQLite event log,
memory state persisted to SQLite, SQLite decision log). Ingest is synchronous and fast:
events are appended to the log in one transaction, then applied to features in memory;
state and decisions are written in batches by :meth:`flush`.

Durability: an event is acknowledged only once its transaction is committed to the log; when
it cannot be (the file is locked, read-only or the disk full) :meth:`accept` raises
:class:`~trimtab.store.sqlite.StorageError` and the collector answers 503.

Crash safety: :meth:`flush` stores the user states and then the log position they include.
On start, events logged after that position are re-applied; the per-user event-id window makes
re-applying an event already in the state a no-op. A flush that fails keeps what it could not
write (states and decision rows) and the next flush writes it, so the position never moves past
states that are not stored; ``/health`` says degraded meanwhile.

Erasure leaves a tombstone (see :mod:`trimtab.store.sqlite`): no late event, flush or replay
brings an erased user back. Memory is bounded: beyond ``storage.max_users_in_memory`` the
oldest-loaded states that are already stored are evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trimtab.bandits.serving import POLICY_KEY, ServedPolicy, policy_specs, serve_policies
from trimtab.blocking import finish_in_thread
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import SiteConfig
from trimtab.decide import STICKY_ATTRIBUTE, Decision
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import AnyEvent
from trimtab.features import FeatureProcessor, UserState, decode_state, encode_state
from trimtab.logschema import DECISIONS_FILE, EVENTS_FILE
from trimtab.models.live import attach as attach_models
from trimtab.pipeline import PipelineBase
from trimtab.privacy import erasure_token
from trimtab.reload import ConfigWatcher
from trimtab.store.cache import evict
from trimtab.store.sqlite import SqliteStateStore, StorageError

log = logging.getLogger("trimtab")
FEATURES_GROUP = "features"
ERASURE_COMPACTION_DELAY_S = 1.0


class Runtime(PipelineBase):
    """One process's pipeline over the embedded stores in ``data_dir``."""

    def __init__(self, config: SiteConfig, data_dir: str | Path | None = None) -> None:
        self.config = config
        self.data_dir = Path(data_dir or config.storage.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.event_log = SqliteEventLog(self.data_dir / EVENTS_FILE, fsync=config.storage.fsync)
        self.state_store = SqliteStateStore(self.data_dir / "state.sqlite")
        # Tombstones: the tokens stored, and the ids met since (shared with the decision log).
        self.erased_tokens = self.state_store.erased_tokens()
        self.erased: set[str] = set()
        self.decision_log = SqliteDecisionLog(self.data_dir / DECISIONS_FILE, erased=self.erased)
        self.processor = FeatureProcessor(config.feature_specs())
        self.models = attach_models(self.processor, config, self.data_dir)  # scores, segments
        self.max_users = config.storage.max_users_in_memory
        self._unwritten: dict[str, bytes] = {}  # states a failed flush could not store
        self.flush_error = ""
        self.append_error = ""
        self._flush_started: float | None = None
        self._erasure_lock = threading.Lock()  # erasure and compaction never overlap
        self._compact_after: float | None = None  # files to rewrite after erasures, from when
        self._compacting = False
        self.compaction_error = ""
        self.policies: dict[str, ServedPolicy] = {}
        self._saved_updates: dict[str, int] = {}
        self.policies = self._serve_policies(config)
        self.engine = self._new_engine()
        self.events_ingested = 0
        self.config_error = ""
        self.replayed = self._recover()

    # -- configuration -------------------------------------------------------------------
    def _serve_policies(self, config: SiteConfig) -> dict[str, ServedPolicy]:
        """Serve the config's policy rules, keeping what each policy has already learned."""
        stored = self.state_store.get_many_sync(
            POLICY_KEY + spec.name for _, _, spec in policy_specs(config.slots)
        )
        return serve_policies(config.slots, self.policies, stored)

    # -- the hot path --------------------------------------------------------------------
    def ingest(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        """Log events durably, then apply them; returns (user, session) pairs that changed.

        Events of erased users are dropped. Raises :class:`StorageError` (nothing logged,
        nothing applied) when the log cannot be written.
        """
        self._ensure_loaded(e.user_id for e in events)  # meets tombstones too
        if self.erased:
            events = [e for e in events if e.user_id not in self.erased]
        if not events:
            return set()
        try:
            self.event_log.append_sync(events)
        except StorageError as exc:
            self.append_error = str(exc)[:300]
            raise
        self.append_error = ""
        self.events_ingested += len(events)
        changed = self.processor.apply(events)
        for policy in self.policies.values():
            policy.observe(events)
        return changed

    def features_of(self, user_id: str, session_id: str, page_view_id: str = "") -> dict[str, Any]:
        self._ensure_loaded((user_id,))
        return self.processor.features_of(user_id, session_id, page_view_id)

    def decide(
        self, user_id: str, session_id: str, slots: Iterable[str] | None = None
    ) -> list[Decision]:
        return self.engine.decide(user_id, session_id, slots)

    def _remember(self, user_id: str, key: str, variation: int, propensity: float) -> None:
        """Keep a sticky experiment assignment in the user's state (persisted with it)."""
        self._ensure_loaded((user_id,))
        if user_id in self.erased:
            return
        self.processor.set_user_value(user_id, STICKY_ATTRIBUTE, key, [variation, propensity])

    def _ensure_loaded(self, user_ids: Iterable[str]) -> None:
        """Load the states of these users that are not in memory (erased ones stay out)."""
        states, erased = self.processor.states, self.erased
        missing = {u for u in user_ids if u not in states and u not in erased}
        if not missing:
            return
        if self.erased_tokens:
            for user_id in missing:
                if erasure_token(user_id) in self.erased_tokens:
                    erased.add(user_id)
            missing -= erased
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
        """Persist changed user states, policies and buffered decisions (in this thread)."""
        snapshot = self._snapshot()
        try:
            self._write(*snapshot)
        except Exception as exc:
            self._failed(snapshot, exc)
            raise
        self._written()

    def _snapshot(self) -> tuple[dict[str, bytes], int, list[tuple[Any, ...]]]:
        """What a flush writes, taken on the event loop: the log position first, so every
        event up to it is in the states taken next (the crash-recovery invariant). States a
        failed flush could not store come first, overridden by newer ones."""
        position = self.event_log.max_seq()
        dirty = self.processor.take_dirty()
        blobs, self._unwritten = self._unwritten, {}
        blobs.update((u, encode_state(s)) for u, s in dirty.items() if u not in self.erased)
        self.learn()
        blobs.update(self._policy_blobs())
        return blobs, position, self.decision_log.take_rows()

    def _failed(
        self, snapshot: tuple[dict[str, bytes], int, list[tuple[Any, ...]]], exc: Exception
    ) -> None:
        """Keep what a failed flush could not write; the next flush writes it first."""
        blobs, _, rows = snapshot
        blobs.update(self._unwritten)  # anything newer wins
        self._unwritten = {u: b for u, b in blobs.items() if u not in self.erased}
        self.decision_log.restore(rows)
        self.flush_error = f"{type(exc).__name__}: {exc}"[:300]

    def _written(self) -> None:
        self.flush_error = ""
        evict(self.processor.states, self.max_users, self.processor.dirty)

    async def flush_async(self) -> None:
        """One flush, written in a worker thread (the event loop keeps serving)."""
        snapshot = self._snapshot()
        self._flush_started = time.monotonic()
        try:
            await finish_in_thread(self._write, *snapshot)
        except asyncio.CancelledError:  # stopping: written or not, stop() writes it again
            self._failed(snapshot, RuntimeError("flush interrupted by shutdown"))
            raise
        except Exception as exc:
            self._failed(snapshot, exc)
            raise
        finally:
            self._flush_started = None
        self._written()

    async def flush_forever(self, interval_s: float) -> None:
        """Flush every ``interval_s`` until cancelled; a failed flush is retried next round."""
        watcher = ConfigWatcher(self.config.source, self.reload)
        while True:
            await asyncio.sleep(interval_s)
            watcher.check()
            self.config_error = watcher.last_error
            try:
                await self.flush_async()
            except Exception as exc:  # keep flushing; the next round retries it all
                log.warning("flush failed, will retry: %s", exc)

    def _write(self, blobs: dict[str, bytes], position: int, rows: list[tuple[Any, ...]]) -> None:
        """States before the log position, so a crash between them only replays events."""
        self.state_store.put_many_sync(blobs)
        self.event_log.set_cursor(FEATURES_GROUP, position)
        self.decision_log.write_rows(rows)
        due = self._compact_after
        if due is not None and time.monotonic() >= due:
            with contextlib.suppress(Exception):  # retried; /health shows compaction_error
                self.compact()

    def compact(self) -> None:
        """Rewrite every data file after erasures, so no byte of an erased user survives in
        free or stale page space (see :mod:`trimtab.store.sqlite`). Runs in the flush thread
        about a second after the last erasure, so a burst of erasures costs one rewrite."""
        with self._erasure_lock:
            self._compacting = True  # before clearing the due time: health never sees neither
            self._compact_after = None
            try:
                self.state_store.compact_sync()
                self.decision_log.compact_sync()
                self.event_log.compact_sync()
            except Exception as exc:
                self._compact_after = time.monotonic() + 5.0
                self.compaction_error = f"{type(exc).__name__}: {exc}"[:300]
                raise
            finally:
                self._compacting = False
            self.compaction_error = ""

    def _recover(self) -> int:
        """Re-apply events logged after the last flushed position (after a crash)."""
        seq = self.event_log.cursor(FEATURES_GROUP)
        replayed = 0
        while True:
            rows = self.event_log.read_sync(seq, 10_000)
            if not rows:
                break
            seq = rows[-1][0]
            self._ensure_loaded(e.user_id for _, e in rows)
            events = [e for _, e in rows if e.user_id not in self.erased]
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
        if self._compact_after is not None:
            self._compact_after = time.monotonic()  # erasures pending: rewrite before leaving
        try:
            await self.flush_async()
        except Exception as exc:  # what is logged is safe: the next start replays it
            log.warning("final flush failed: %s", exc)

    def health(self) -> dict[str, Any]:
        degraded = []
        if self.append_error:
            degraded.append(f"event log not writable, events refused: {self.append_error}")
        if self.flush_error:
            degraded.append(
                f"state flush failing ({len(self._unwritten)} users kept to retry): "
                f"{self.flush_error}"
            )
        elif self._flush_started is not None and time.monotonic() - self._flush_started > 2.0:
            stuck = time.monotonic() - self._flush_started
            degraded.append(f"state flush waiting for {stuck:.1f} s (is a data file locked?)")
        if self.compaction_error:
            degraded.append(f"erased data not yet rewritten away: {self.compaction_error}")
        if self.decision_log.dropped:
            degraded.append(f"{self.decision_log.dropped} decisions dropped (writer far behind)")
        if self.config_error:
            degraded.append(f"config change refused: {self.config_error}")
        return {
            "degraded": "; ".join(degraded),
            "state": "sqlite",
            "bus": "sqlite",
            "events_ingested": self.events_ingested,
            "replayed_at_start": self.replayed,
            "users_in_memory": len(self.processor.states),
            "erasure_compaction_pending": self._compact_after is not None or self._compacting,
        }

    # -- privacy -------------------------------------------------------------------------
    async def erase_async(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store, in a worker thread; see :meth:`erase`."""
        in_memory = self._forget(user_id)
        counts = await asyncio.to_thread(self._erase_stored, user_id)
        counts["state"] = counts["state"] or in_memory
        return counts

    def erase(self, user_id: str) -> dict[str, int]:
        """Erase a user from every store: state, event log and decision log.

        The tombstone is set first, on the event loop, so no event of theirs is logged or
        applied after this point; then the stored rows go (their cells zeroed), and about a
        second later the next flush rewrites every file (:meth:`compact`). Raises
        :class:`StorageError` when a file cannot be written (the in-memory tombstone holds
        until a retry succeeds).
        """
        in_memory = self._forget(user_id)
        counts = self._erase_stored(user_id)
        counts["state"] = counts["state"] or in_memory
        return counts

    def _forget(self, user_id: str) -> int:
        self.erased.add(user_id)
        self.erased_tokens.add(erasure_token(user_id))
        self._unwritten.pop(user_id, None)
        self.decision_log.forget(user_id)
        return int(self.processor.forget(user_id))

    def _erase_stored(self, user_id: str) -> dict[str, int]:
        try:
            with self._erasure_lock:
                counts = {
                    "state": int(self.state_store.erase_sync(user_id)),
                    "events": self.event_log.erase_user_sync(user_id),
                    "decisions": self.decision_log.erase_user(user_id),
                }
                self._compact_after = time.monotonic() + ERASURE_COMPACTION_DELAY_S
        except Exception as exc:
            raise StorageError(f"erasure not finished, try again: {exc}", 5) from exc
        return counts

    def state_of(self, user_id: str) -> UserState | None:
        self._ensure_loaded((user_id,))
        return self.processor.states.get(user_id)

    def close(self) -> None:
        if self._compact_after is not None:
            self._compact_after = time.monotonic()  # erasures pending: rewrite before leaving
        try:
            self.flush()
        except Exception as exc:
            log.warning("final flush failed: %s", exc)
        self.event_log.close_sync()
        self.state_store.close_sync()
        self.decision_log.close_sync()
