"""The embedded deployment: one process over SQLite files in its data directory.

Events are appended to the SQLite event log in one transaction before they are applied (a 2xx
means committed). User states live in memory and are written in batches by the flush: first
the states, then the log position they include, so a crash between the two only replays
events; on start, events logged after that position are re-applied, and the per-user event-id
window makes re-applying an event already in a state a no-op. A flush that fails keeps the
states it could not write and the next one writes them first, so the position never moves
past states that are not stored. Memory is bounded: beyond ``storage.max_users_in_memory``
the oldest-loaded states that are already stored are evicted.

Erasure leaves a tombstone (see :mod:`trimtab.store.sqlite`) that the state store keeps across
restarts, then deletes the user's rows (their cells zeroed); compaction rewrites the three
files. Nobody else applies or erases events here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from trimtab.bandits.serving import POLICY_KEY, ServedPolicy, policy_specs, serve_policies
from trimtab.blocking import finish_in_thread
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import SiteConfig
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import AnyEvent
from trimtab.features import decode_state, encode_state
from trimtab.logschema import DECISIONS_FILE, EVENTS_FILE
from trimtab.privacy import erasure_token
from trimtab.store.cache import evict
from trimtab.store.sqlite import SqliteStateStore

if TYPE_CHECKING:
    from trimtab.runtime import Runtime

log = logging.getLogger("trimtab")
FEATURES_GROUP = "features"  # the event log's cursor: the position the stored states include

Snapshot = tuple[dict[str, bytes], int, list[tuple[Any, ...]]]


class Embedded:
    """The :class:`~trimtab.runtime.Deployment` of one process over SQLite; see the module."""

    kind = "embedded"
    shared = False

    def open(self, runtime: Runtime) -> SqliteDecisionLog:
        self.runtime = runtime
        folder, storage = runtime.data_dir, runtime.config.storage
        self.event_log = SqliteEventLog(folder / EVENTS_FILE, fsync=storage.fsync)
        self.state_store = SqliteStateStore(folder / "state.sqlite")
        self.erased_tokens = self.state_store.erased_tokens()  # tombstones stored
        self._unwritten: dict[str, bytes] = {}  # states a failed flush could not store
        self._saved_updates: dict[str, int] = {}  # each policy's updates when last stored
        self._erasure_lock = threading.Lock()  # erasure and compaction never overlap
        return SqliteDecisionLog(folder / DECISIONS_FILE, erased=runtime.erased)

    def recover(self) -> int:
        """Re-apply events logged after the last flushed position (after a crash)."""
        processor, erased = self.runtime.processor, self.runtime.erased
        seq = self.event_log.cursor(FEATURES_GROUP)
        replayed = 0
        while True:
            rows = self.event_log.read_sync(seq, 10_000)
            if not rows:
                break
            seq = rows[-1][0]
            self.load_now(e.user_id for _, e in rows)
            events = [e for _, e in rows if e.user_id not in erased]
            processor.apply(events)
            replayed += len(events)
        if replayed:
            log.info("re-applied %d events logged after the last flush", replayed)
            self.flush_now([])
        return replayed

    # -- where events are logged -----------------------------------------------------------
    def log_now(self, events: list[AnyEvent]) -> None:
        self.event_log.append_sync(events)

    async def log(self, events: list[AnyEvent]) -> None:
        # one short local transaction: cheaper in this thread than a hop to a worker
        self.event_log.append_sync(events)

    # -- states -----------------------------------------------------------------------------
    def load_now(self, user_ids: Iterable[str]) -> None:
        """Load the states of these users that are not in memory (erased ones stay out)."""
        states, erased = self.runtime.processor.states, self.runtime.erased
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

    async def load(self, user_ids: Iterable[str]) -> None:
        self.load_now(user_ids)

    async def apply(self, events: list[AnyEvent]) -> set[tuple[str, str]]:
        return self.runtime.processor.apply(events)  # stored by the next flush

    def remember(self, user_id: str, key: str, value: list[float]) -> None:
        pass  # in the state in memory: stored with it by the next flush

    def serve_policies(self, config: SiteConfig) -> dict[str, ServedPolicy]:
        """Serve the config's policy rules, keeping what each policy has already learned
        (the running one's state, else the stored one)."""
        stored = self.state_store.get_many_sync(
            POLICY_KEY + spec.name for _, _, spec in policy_specs(config.slots)
        )
        return serve_policies(config.slots, self.runtime.policies, stored)

    # -- the flush ------------------------------------------------------------------------
    async def flush(self, rows: list[tuple[Any, ...]]) -> None:
        """Write the snapshot in a worker thread (the event loop keeps serving)."""
        snapshot = self._snapshot(rows)
        try:
            await finish_in_thread(self._write, *snapshot)
        except BaseException:  # failed, or stopping: the next flush writes it again
            self._failed(snapshot)
            raise
        self._written()

    def flush_now(self, rows: list[tuple[Any, ...]]) -> None:
        snapshot = self._snapshot(rows)
        try:
            self._write(*snapshot)
        except BaseException:
            self._failed(snapshot)
            raise
        self._written()

    def _snapshot(self, rows: list[tuple[Any, ...]]) -> Snapshot:
        """What a flush writes, taken on the event loop: the log position first, so every
        event up to it is in the states taken next (the crash-recovery invariant). States a
        failed flush could not store come first, overridden by newer ones."""
        runtime = self.runtime
        position = self.event_log.max_seq()
        dirty = runtime.processor.take_dirty()
        blobs, self._unwritten = self._unwritten, {}
        blobs.update((u, encode_state(s)) for u, s in dirty.items() if u not in runtime.erased)
        blobs.update(self._policy_blobs())
        return blobs, position, rows

    def _policy_blobs(self) -> dict[str, bytes]:
        """The states of the policies that learned something since they were last saved."""
        blobs = {}
        for name, policy in self.runtime.policies.items():
            if self._saved_updates.get(name) != policy.updates:
                blobs[POLICY_KEY + name] = policy.to_state()
                self._saved_updates[name] = policy.updates
        return blobs

    def _write(self, blobs: dict[str, bytes], position: int, rows: list[tuple[Any, ...]]) -> None:
        """States before the log position, so a crash between them only replays events."""
        self.state_store.put_many_sync(blobs)
        self.event_log.set_cursor(FEATURES_GROUP, position)
        self.runtime.decision_log.write_rows(rows)

    def _failed(self, snapshot: Snapshot) -> None:
        """Keep the states a failed flush could not write; the next flush writes them first."""
        blobs = snapshot[0]
        blobs.update(self._unwritten)  # anything newer wins
        erased = self.runtime.erased
        self._unwritten = {u: b for u, b in blobs.items() if u not in erased}

    def _written(self) -> None:
        processor = self.runtime.processor
        evict(processor.states, self.runtime.max_users, processor.dirty)

    def unwritten(self) -> int:
        return len(self._unwritten)

    # -- erasure ------------------------------------------------------------------------------
    def forget(self, user_id: str) -> None:
        self.erased_tokens.add(erasure_token(user_id))
        self._unwritten.pop(user_id, None)

    async def erase(self, user_id: str) -> dict[str, int]:
        return await asyncio.to_thread(self._erase_stored, user_id)

    def _erase_stored(self, user_id: str) -> dict[str, int]:
        with self._erasure_lock:
            return {
                "state": int(self.state_store.erase_sync(user_id)),
                "events": self.event_log.erase_user_sync(user_id),
                "decisions": self.runtime.decision_log.erase_user(user_id),
            }

    async def erased_elsewhere(self) -> bool:
        return False  # one process: every erasure is made here

    async def compact(self) -> bool:
        await asyncio.to_thread(self._compact)
        return True

    def _compact(self) -> None:
        """Rewrite every data file, so no byte of an erased user survives in free or stale
        page space (see :mod:`trimtab.store.sqlite`)."""
        with self._erasure_lock:
            self.state_store.compact_sync()
            self.runtime.decision_log.compact_sync()
            self.event_log.compact_sync()

    # -- lifecycle and health ------------------------------------------------------------------
    async def start(self) -> list[asyncio.Task[None]]:
        return []  # nothing beside the flush loop: a restart replays the log

    async def stop(self) -> None:
        pass  # the files stay open until close()

    def close(self) -> None:
        self.event_log.close_sync()
        self.state_store.close_sync()
        self.runtime.decision_log.close_sync()

    def degraded(self) -> list[str]:
        return []  # the log and flush failures are the runtime's to say

    def figures(self) -> dict[str, Any]:
        return {"state": "sqlite", "bus": "sqlite"}
