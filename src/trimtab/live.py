"""Live pages: who is on which page now, what each slot shows, and when it may change.

A :class:`LiveConnection` is one open page view. Its first decisions are what the page renders
first. When the session's features change, :meth:`LiveHub.refresh` re-decides its slots and
returns, per connection, only the decisions the page should swap in.

**Stable slots.** After its first render a slot changes only for a *new trigger*: a rule ranked
above the one that chose what is shown has started to apply (the reader scrolled past 75 %,
rested on a picture…). Features jittering around a threshold never flip it back: a slot never
falls back to a lower-ranked rule or its default on the same page view. Each slot allows at
most ``max_changes_per_view`` changes per page view and waits ``min_ms_between_changes``
after a change before the next (a change held by the wait goes out when it ends, see
:meth:`LiveHub.due`). What is shown while nothing personal was allowed — before consent, or a
degraded default when state was unavailable — is replaced by the first real decision.

**Who the reader is, as the page opened.** A reader's segment (``segment``, ``segment_p``,
:data:`PINNED`) is not something they do on the page: it is assigned and reassigned by the
live segmentation as their events accumulate, at any moment. So a page view keeps the
segment it had at its first personal decision: every later decision on that page view sees
that value, a segment assigned or changed while the page is open is never a trigger by itself
(not even for a rule that also watches scroll or dwell), and it takes effect when the next page
opens — whose why panel then says "readers like you…". The decision log records the held
segment too (its entry in the model record), next to the scores of the moment.

A page view keeps its slots' history across reconnects (the hub remembers recent page views by
id), so a reconnecting page is answered with what it already shows unless a trigger fired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trimtab.decide import PLACEHOLDER_SOURCES, QA_SOURCE, Decision, Engine
from trimtab.models.spec import MODELS_ATTRIBUTE, holding_segment, segment_record

Render = Callable[[Decision, dict[str, Any]], dict[str, Any] | None]
REMEMBERED_PAGE_VIEWS = 50_000
# Attributes a page view keeps as they were at its first personal decision (see above).
PINNED = ("segment", "segment_p")
PageView = tuple[dict[str, "SlotState"], dict[str, Any]]  # what a page view shows, its pins


@dataclass(slots=True)
class SlotState:
    """What one slot of an open page shows, and how often it has changed."""

    decision: Decision
    rank: int  # precedence of the rule that chose it (0 = first rule); the default ranks last
    changes: int = 0
    changed_at: float = 0.0  # monotonic seconds of the last change; 0 before any


@dataclass(eq=False)
class LiveConnection:
    """One open page: its user, session, page view, slots and what each slot shows."""

    user_id: str
    session_id: str
    slots: list[str]
    page: str = ""
    page_category: str = ""
    page_view_id: str = ""
    personalize: bool = True
    send: Callable[[bytes], Awaitable[None]] | None = None
    shown: dict[str, SlotState] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)
    due_at: float = 0.0  # when a change held by min_ms_between_changes may go out
    forced: dict[str, str] = field(default_factory=dict)  # a QA force link's {slot: variant}
    force_refused: str = ""  # why a force token that came along was refused
    # PINNED as at the page view's first personal decision (None: absent then), with the
    # segment's entry in the model record under MODELS_ATTRIBUTE; empty before
    pinned: dict[str, Any] = field(default_factory=dict)


class LiveHub:
    """The registry of open live connections, keyed by (user, session)."""

    def __init__(
        self,
        engine_of: Callable[[], Engine],
        render: Render | None = None,
        personalize: Callable[[str], bool] | None = None,
    ) -> None:
        self._engine_of = engine_of
        self.render = render
        self.personalize = personalize  # user -> personalization allowed now
        self.connections: dict[tuple[str, str], set[LiveConnection]] = {}
        self.waiting: set[LiveConnection] = set()  # holding a change until due_at
        # page view -> (what its slots show, its pinned attributes): kept across reconnects
        self.pages: OrderedDict[tuple[str, str], PageView] = OrderedDict()

    def open(self, conn: LiveConnection) -> None:
        """Register an open page: it gets pushes from now on."""
        self.connections.setdefault((conn.user_id, conn.session_id), set()).add(conn)

    def recall(self, conn: LiveConnection) -> None:
        """Give a page view seen before (a reconnect) the slot history it had."""
        if conn.page_view_id:
            key = (conn.user_id, conn.page_view_id)
            remembered = self.pages.get(key)
            if remembered is not None:
                conn.shown, conn.pinned = remembered
                self.pages.move_to_end(key)
            else:
                self.pages[key] = (conn.shown, conn.pinned)
                if len(self.pages) > REMEMBERED_PAGE_VIEWS:
                    self.pages.popitem(last=False)

    def close(self, conn: LiveConnection) -> None:
        key = (conn.user_id, conn.session_id)
        group = self.connections.get(key)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.connections[key]
        self.waiting.discard(conn)

    def __len__(self) -> int:
        return sum(len(group) for group in self.connections.values())

    def first(self, conn: LiveConnection) -> list[Decision]:
        """Every slot of the page, as it should show now (the answer to a hello).

        A page view seen before (a reconnect) keeps what it shows unless a trigger fired.
        """
        decisions = self._decide(conn)
        now = time.monotonic()
        out = []
        for d in decisions:
            state = conn.shown.get(d.slot)
            if (
                state is None
                or state.decision.source in PLACEHOLDER_SOURCES
                or not conn.personalize
            ):
                conn.shown[d.slot] = SlotState(d, self._rank(d))
            else:
                self._consider(conn, state, d, now)
            out.append(conn.shown[d.slot].decision)
        return self._rendered(conn, out)

    def restart(self, conn: LiveConnection) -> list[Decision]:
        """Every slot decided afresh (consent was just given or withdrawn): all of them are
        sent, each with a new decision id, even when the variant stays the same; the page
        view's pinned attributes are taken afresh."""
        conn.shown.clear()
        conn.pinned.clear()
        conn.due_at = 0.0
        return self.first(conn)

    def refresh(
        self, changed: Iterable[tuple[str, str]]
    ) -> list[tuple[LiveConnection, list[Decision]]]:
        """Re-decide the open pages of changed sessions; only what should change is returned.

        A connection whose user just gained (or lost) personalization consent gets every slot
        again (:meth:`restart`).
        """
        pushes = []
        for key in changed:
            for conn in self.connections.get(key, ()):
                moved = self.update(conn)
                if moved:
                    pushes.append((conn, moved))
        return pushes

    def update(self, conn: LiveConnection) -> list[Decision]:
        """The decisions one open page should swap in now."""
        if self.personalize is not None:
            allowed = self.personalize(conn.user_id)
            if allowed != conn.personalize:
                conn.personalize = allowed
                return self.restart(conn)
        if not conn.personalize:
            return []
        now = time.monotonic()
        moved = []
        for d in self._decide(conn):
            state = conn.shown.get(d.slot)
            if state is None:
                conn.shown[d.slot] = SlotState(d, self._rank(d))
                moved.append(d)
            elif self._consider(conn, state, d, now):
                moved.append(d)
        return self._rendered(conn, moved)

    def due(self, now: float | None = None) -> list[LiveConnection]:
        """Connections holding a change whose wait (``min_ms_between_changes``) has ended."""
        now = time.monotonic() if now is None else now
        out = [conn for conn in self.waiting if conn.due_at <= now]
        for conn in out:
            conn.due_at = 0.0
            self.waiting.discard(conn)
        return out

    # -- internals ------------------------------------------------------------------------
    def _decide(self, conn: LiveConnection) -> list[Decision]:
        engine = self._engine_of()
        slots = conn.slots
        qa: list[Decision] = []
        if conn.forced:  # a QA force link: those slots show its variants, nothing decides them
            slots = [s for s in slots if s not in conn.forced]
            todo = {}
            for s, v in conn.forced.items():
                shown = conn.shown.get(s)
                if shown is not None and shown.decision.source == QA_SOURCE:
                    qa.append(shown.decision)  # already shown (and logged) on this page view
                elif s in conn.slots:
                    todo[s] = v
            if todo:
                qa += engine.forced(todo, conn.user_id, conn.session_id)
        if not conn.personalize:
            return qa + engine.defaults(
                slots,
                reason="no personalization consent: default content",
                source="no_consent",
                user=conn.user_id,
                session=conn.session_id,
            )
        extra = {"page": conn.page, "page_category": conn.page_category} if conn.page else None
        if not slots:
            return qa
        attrs = engine.attributes(conn.user_id, conn.session_id, extra, conn.page_view_id)
        _pin(conn, attrs)
        return qa + engine.decide_attrs(attrs, slots)

    def _rank(self, d: Decision) -> int:
        if d.source == QA_SOURCE:
            return -1  # above every rule: nothing replaces it on this page
        slot = self._engine_of().slots.get(d.slot)
        if slot is None:
            return 0
        return slot.rank.get(d.rule_id, len(slot.rules)) if d.rule_id else len(slot.rules)

    def _consider(self, conn: LiveConnection, state: SlotState, d: Decision, now: float) -> bool:
        """Whether ``d`` replaces what the slot shows now (and record it if so)."""
        shown = state.decision
        if d.variant == shown.variant:
            return False
        rank = self._rank(d)
        if shown.source not in PLACEHOLDER_SOURCES:
            if rank >= state.rank:
                return False  # not a new trigger: the same rule or one ranked below it
            slot = self._engine_of().slots.get(d.slot)
            limit, gap_s = (2, 1.5) if slot is None else (slot.max_changes, slot.min_gap_s)
            if state.changes >= limit:
                return False
            ready_at = state.changed_at + gap_s
            if state.changes and now < ready_at:
                if not conn.due_at or ready_at < conn.due_at:
                    conn.due_at = ready_at  # held: decided again when the wait ends
                    self.waiting.add(conn)
                return False
        conn.shown[d.slot] = SlotState(d, rank, state.changes + 1, now)
        return True

    def _rendered(self, conn: LiveConnection, decisions: list[Decision]) -> list[Decision]:
        if self.render is not None:
            for d in decisions:
                d.payload = self.render(d, {"page": conn.page, "category": conn.page_category})
        return decisions


def _pin(conn: LiveConnection, attrs: dict[str, Any]) -> None:
    """Pin :data:`PINNED` at the page view's first personal decision; later, decide with the
    pinned values (an attribute absent then is absent now). The segment's entry in the model
    record (:data:`MODELS_ATTRIBUTE`: version, id, posterior) is held with them, so the
    decision log records the segment the decision used, not the one the reader has now."""
    pinned = conn.pinned
    if not pinned:
        pinned.update((name, attrs.get(name)) for name in PINNED)
        pinned[MODELS_ATTRIBUTE] = segment_record(attrs.get(MODELS_ATTRIBUTE, ""))
        return
    for name in PINNED:
        value = pinned[name]
        if value is None:
            attrs.pop(name, None)
        else:
            attrs[name] = value
    record = attrs.get(MODELS_ATTRIBUTE, "")
    held = pinned[MODELS_ATTRIBUTE]
    if record or held is not None:
        record = holding_segment(record, held)
        if record:
            attrs[MODELS_ATTRIBUTE] = record
        else:
            attrs.pop(MODELS_ATTRIBUTE, None)
