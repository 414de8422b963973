"""Declared features, computed incrementally per session and per user.

A site config declares named features (``scroll_depth_max: {kind: scroll_depth_max}``). The
:class:`FeatureProcessor` compiles the declarations into one list of small update functions per
event kind, so applying an event is a dict lookup plus a few arithmetic updates. State lives in
:class:`UserState` objects (msgspec Structs, so a store can persist them as bytes).

Applying the same event twice (same ``event_id``) changes nothing: every user keeps a bounded
window of the event ids it has applied.

>>> from trimtab.events import Scroll
>>> fp = FeatureProcessor([FeatureSpec("scroll_depth_max", "scroll_depth_max")])
>>> e = Scroll(event_id="e1", user_id="u", session_id="s", ts=1.7e12, depth=0.8)
>>> sorted(fp.apply([e, e]))
[('u', 's')]
>>> fp.features_of("u", "s")["scroll_depth_max"]
0.8
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from operator import attrgetter
from statistics import median
from typing import Any, Literal

import msgspec

from trimtab.events import (
    AnyEvent,
    Click,
    Consent,
    Context,
    Custom,
    Exposure,
    Hover,
    PageView,
    Scroll,
    Visible,
)

Scope = Literal["session", "user"]
SEEN_IDS_PER_USER = 20_000
SESSION_TIMEOUT_MS = 30 * 60 * 1000
MAX_SESSIONS_PER_USER = 8


class FeatureSpec(msgspec.Struct, frozen=True):
    """One declared feature: its name (the attribute conditions see), kind and parameters."""

    name: str
    kind: str
    scope: Scope = "session"
    by: str = "total"  # element | kind | category | total, for hover/visible/click kinds
    event: str = ""  # for event_count: an event kind or a custom event name
    window: int = 9  # for scroll_velocity: how many recent samples the median covers
    half_life_s: float = 600.0  # for interest
    steps: tuple[str, ...] = ()  # for sequence: "kind:detail" patterns, "*" matches anything
    within_s: float = 30.0  # for sequence
    description: str = ""


class SessionState(msgspec.Struct):
    """Feature values and bookkeeping of one visit."""

    values: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    started_ms: float = 0.0
    last_ms: float = 0.0
    page_started_ms: float = 0.0


class UserState(msgspec.Struct):
    """Everything trimtab knows about one pseudonymous user, persisted as one blob."""

    user_id: str
    values: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    sessions: dict[str, SessionState] = {}
    seen: dict[str, None] = {}  # insertion-ordered set of applied event ids
    n_sessions: int = 0
    first_ms: float = 0.0
    last_ms: float = 0.0


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(UserState)


def encode_state(state: UserState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(blob: bytes) -> UserState:
    return _state_decoder.decode(blob)


# An updater mutates the state of one user/session for one event.
Updater = Callable[[UserState, SessionState, Any], None]
# A reader derives attributes from state when features are read (not per event).
Reader = Callable[["UserState | None", "SessionState | None", dict[str, Any]], None]


def _key_getter(by: str) -> Callable[[Any], str]:
    if by == "element":
        return lambda e: e.element
    if by == "kind":
        return lambda e: e.element_kind or "other"
    if by == "category":
        return lambda e: e.category or e.page_category or "other"
    raise FeatureConfigError(f"'by' must be element, kind, category or total, not {by!r}")


def _sum_by(spec: FeatureSpec, amount: Callable[[Any], float], zero: float = 0.0) -> Updater:
    """Sum of ``amount(event)``, in total or keyed by element / kind / category."""
    name, user_scope = spec.name, spec.scope == "user"
    if spec.by == "total":

        def update_total(user: UserState, sess: SessionState, e: Any) -> None:
            values = user.values if user_scope else sess.values
            values[name] = values.get(name, zero) + amount(e)

        return update_total
    key_of = _key_getter(spec.by)

    def update_by(user: UserState, sess: SessionState, e: Any) -> None:
        values = user.values if user_scope else sess.values
        table = values.get(name)
        if table is None:
            table = values[name] = {}
        key = key_of(e)
        table[key] = table.get(key, zero) + amount(e)

    return update_by


def _one(e: Any) -> int:
    return 1


def _scroll_depth_max(spec: FeatureSpec) -> Updater:
    name, user_scope = spec.name, spec.scope == "user"

    def update(user: UserState, sess: SessionState, e: Scroll) -> None:
        values = user.values if user_scope else sess.values
        if e.depth > values.get(name, 0.0):
            values[name] = e.depth

    return update


def _scroll_velocity(spec: FeatureSpec) -> Updater:
    """Median absolute scroll speed (px/s) over the last ``window`` non-zero samples."""
    name, window, user_scope = spec.name, spec.window, spec.scope == "user"

    def update(user: UserState, sess: SessionState, e: Scroll) -> None:
        if e.velocity == 0.0:
            return
        owner = user if user_scope else sess
        recent = owner.aux.get(name)
        if recent is None:
            recent = owner.aux[name] = []
        recent.append(abs(e.velocity))
        if len(recent) > window:
            del recent[0]
        owner.values[name] = median(recent)

    return update


def _time_on_page(spec: FeatureSpec) -> Updater:
    """Seconds between the current page's page_view and the latest event of the session."""
    name = spec.name

    def update(user: UserState, sess: SessionState, e: Any) -> None:
        sess.values[name] = max(0.0, (sess.last_ms - sess.page_started_ms) / 1000.0)

    return update


def _interest(spec: FeatureSpec) -> Updater:
    """Recency-weighted interest per content category.

    A signal of weight ``w`` at time ``t`` counts ``w · exp(-ln 2 · (now − t) / half_life)``:
    attention a minute ago counts more than last week's. Signals: visible seconds, hover
    seconds, 5 per click, 1 per page view; "now" is the owner's latest signal.

    The state keeps ``g_c = Σ w · exp(λ (t − anchor))`` per category, so a signal touches its
    own category only (O(1), and the order signals arrive in does not matter); the decayed
    scores are ``g_c · exp(−λ (last − anchor))``, computed when features are read (see
    :func:`_interest_reader`). When the exponent grows large the anchor moves forward.
    """
    name = spec.name
    rate = math.log(2.0) / (spec.half_life_s * 1000.0)
    user_scope = spec.scope == "user"
    exp = math.exp

    def update(user: UserState, sess: SessionState, e: Any) -> None:
        kind = type(e)
        if kind is Visible:
            weight = e.visible_ms / 1000.0
        elif kind is Hover:
            weight = e.dwell_ms / 1000.0
        elif kind is Click:
            weight = 5.0
        else:
            weight = 1.0
        category = getattr(e, "category", "") or e.page_category
        if not category or weight <= 0.0:
            return
        owner = user if user_scope else sess
        st = owner.aux.get(name)
        if st is None:
            st = owner.aux[name] = [e.ts, e.ts, {}]  # anchor, last signal, growth per category
        x = rate * (e.ts - st[0])
        growth = st[2]
        if x > 300.0:  # rebase long before floats overflow (~700)
            shrink = exp(-x)
            for key in growth:
                growth[key] *= shrink
            st[0], x = e.ts, 0.0
        growth[category] = growth.get(category, 0.0) + weight * exp(x)
        if e.ts > st[1]:
            st[1] = e.ts

    return update


def _interest_reader(spec: FeatureSpec) -> Reader:
    """Adds ``<name>`` (category → score), ``<name>_share`` (category → share of the total),
    ``<name>_top`` and ``<name>_top_share`` to the attributes when they are read."""
    name, top_name, share_name = spec.name, f"{spec.name}_top", f"{spec.name}_top_share"
    shares_name = f"{spec.name}_share"
    rate = math.log(2.0) / (spec.half_life_s * 1000.0)
    user_scope = spec.scope == "user"

    def read(user: UserState | None, sess: SessionState | None, attrs: dict[str, Any]) -> None:
        owner = user if user_scope else sess
        st = owner.aux.get(name) if owner is not None else None
        if not st or not st[2]:
            return
        factor = math.exp(-rate * (st[1] - st[0]))
        scores = {key: g * factor for key, g in st[2].items()}
        total = sum(scores.values())
        top = max(scores, key=scores.__getitem__)
        inv = 1.0 / total if total > 0 else 0.0
        attrs[name] = scores
        attrs[top_name] = top
        attrs[share_name] = scores[top] * inv
        attrs[shares_name] = {key: value * inv for key, value in scores.items()}

    return read


def _token_matcher(pattern: str) -> Callable[[Any], bool]:
    """Match ``kind:detail`` against an event.

    ``kind`` is an event kind or a custom event's name; ``detail`` is the element kind, the
    element id, or the custom value; ``*`` matches anything.
    """
    head, _, detail = pattern.partition(":")
    detail = detail or "*"

    def matches(e: Any) -> bool:
        kind = e.__struct_config__.tag
        if type(e) is Custom:
            if head not in ("*", e.name, "custom"):
                return False
            return detail == "*" or detail == str(e.value)
        if head not in ("*", kind):
            return False
        if detail == "*":
            return True
        return detail in (getattr(e, "element_kind", None), getattr(e, "element", None))

    return matches


def _sequence(spec: FeatureSpec) -> Updater:
    """True once the steps occurred in order with the last within ``within_s`` of the first.

    The state keeps, for each completed prefix of the steps, the latest time it could have
    started: a later start is never worse for the time window.
    """
    if len(spec.steps) < 2:
        raise FeatureConfigError("a sequence needs at least two steps")
    name, n = spec.name, len(spec.steps)
    matchers = [_token_matcher(step) for step in spec.steps]
    within_ms = spec.within_s * 1000.0
    user_scope = spec.scope == "user"

    def update(user: UserState, sess: SessionState, e: Any) -> None:
        owner = user if user_scope else sess
        if owner.values.get(name):
            return
        starts = owner.aux.get(name)
        if starts is None:
            starts = owner.aux[name] = [None] * n
        for j in range(n - 1, -1, -1):  # from the end, so one event advances one step only
            if not matchers[j](e):
                continue
            if j == 0:
                starts[0] = e.ts
            elif starts[j - 1] is not None and e.ts - starts[j - 1] <= within_ms:
                starts[j] = starts[j - 1]
        owner.values[name] = starts[n - 1] is not None

    return update


def _last_value(spec: FeatureSpec) -> Updater:
    name, event, user_scope = spec.name, spec.event, spec.scope == "user"

    def update(user: UserState, sess: SessionState, e: Custom) -> None:
        if e.name == event:
            (user.values if user_scope else sess.values)[name] = e.value

    return update


def _event_count(spec: FeatureSpec) -> tuple[list[type], Updater]:
    name, event, user_scope = spec.name, spec.event, spec.scope == "user"
    kinds = [t for t in _ALL_KINDS if t.__struct_config__.tag == event]
    if kinds:

        def count_kind(user: UserState, sess: SessionState, e: Any) -> None:
            values = user.values if user_scope else sess.values
            values[name] = values.get(name, 0) + 1

        return kinds, count_kind

    def count_custom(user: UserState, sess: SessionState, e: Custom) -> None:
        if e.name == event:
            values = user.values if user_scope else sess.values
            values[name] = values.get(name, 0) + 1

    return [Custom], count_custom


_ALL_KINDS: tuple[type, ...] = (
    PageView,
    Scroll,
    Hover,
    Visible,
    Click,
    Custom,
    Consent,
    Context,
    Exposure,
)
_BEHAVIOUR = (PageView, Scroll, Hover, Visible, Click, Custom)

# kind -> (event types it listens to, updater factory)
FEATURE_KINDS: dict[str, tuple[tuple[type, ...], Callable[[FeatureSpec], Updater]]] = {
    "scroll_depth_max": ((Scroll,), _scroll_depth_max),
    "scroll_velocity": ((Scroll,), _scroll_velocity),
    "hover_ms": ((Hover,), lambda s: _sum_by(s, attrgetter("dwell_ms"))),
    "visible_ms": ((Visible,), lambda s: _sum_by(s, attrgetter("visible_ms"))),
    "click_count": ((Click,), lambda s: _sum_by(s, _one, 0)),  # counts stay integers
    "time_on_page": (_BEHAVIOUR, _time_on_page),
    "interest": ((PageView, Visible, Hover, Click), _interest),
    "sequence": (_BEHAVIOUR, _sequence),
    "last_value": ((Custom,), _last_value),
    "event_count": ((), _event_count),  # listens to what its `event` names
}

# Attributes trimtab always provides, whatever the config declares.
CONTEXT_ATTRIBUTES = (
    "id",
    "session_id",
    "device",
    "viewport_w",
    "viewport_h",
    "ua_family",
    "language",
    "tz_offset_min",
    "local_hour",
    "day_of_week",
    "returning",
    "sessions",
    "page",
    "page_category",
    "consent",
)


class FeatureConfigError(ValueError):
    """A feature declaration is invalid."""


class FeatureProcessor:
    """Applies events to per-user state and answers ``features_of(user, session)``.

    The processor keeps the states it has touched in memory (``states``); a store persists
    them (see :mod:`trimtab.store`). It does no I/O itself.
    """

    def __init__(self, specs: Iterable[FeatureSpec] = ()) -> None:
        self.states: dict[str, UserState] = {}
        self.dirty: set[str] = set()
        self.duplicates = 0
        self.configure(specs)

    def configure(self, specs: Iterable[FeatureSpec]) -> None:
        """Compile feature declarations; existing state is kept (config reload)."""
        specs = list(specs)
        names: set[str] = set()
        dispatch: dict[type, list[Updater]] = {t: [] for t in _ALL_KINDS}
        tail: dict[type, list[Updater]] = {t: [] for t in _ALL_KINDS}
        for spec in specs:
            if spec.name in names or spec.name in CONTEXT_ATTRIBUTES:
                raise FeatureConfigError(f"feature name {spec.name!r} is used twice or reserved")
            names.add(spec.name)
            if spec.kind not in FEATURE_KINDS:
                known = ", ".join(sorted(FEATURE_KINDS))
                raise FeatureConfigError(f"unknown feature kind {spec.kind!r} (known: {known})")
            if spec.scope not in ("session", "user"):
                raise FeatureConfigError(f"scope must be session or user, not {spec.scope!r}")
            types, factory = FEATURE_KINDS[spec.kind]
            if spec.kind == "event_count":
                if not spec.event:
                    raise FeatureConfigError("event_count needs 'event' (an event kind or name)")
                types_list, updater = _event_count(spec)
                types = tuple(types_list)
            else:
                updater = factory(spec)
            # time_on_page reads the session clock, so it runs after the others.
            target = tail if spec.kind == "time_on_page" else dispatch
            for t in types:
                target[t].append(updater)
        self.specs = specs
        self._dispatch = {t: dispatch[t] + tail[t] for t in _ALL_KINDS}
        self._readers = [_interest_reader(spec) for spec in specs if spec.kind == "interest"]

    def apply(self, events: Iterable[AnyEvent]) -> set[tuple[str, str]]:
        """Apply events in order; return the (user, session) pairs whose features changed."""
        changed: set[tuple[str, str]] = set()
        states = self.states
        dispatch = self._dispatch
        for e in events:
            user_id = e.user_id
            user = states.get(user_id)
            if user is None:
                user = states[user_id] = UserState(user_id=user_id)
            seen = user.seen
            if e.event_id in seen:
                self.duplicates += 1
                continue
            seen[e.event_id] = None
            if len(seen) > SEEN_IDS_PER_USER:
                del seen[next(iter(seen))]
            sess = user.sessions.get(e.session_id)
            if sess is None:
                sess = self._new_session(user, e)
            ts = e.ts
            if ts > sess.last_ms:
                sess.last_ms = ts
            if ts > user.last_ms:
                user.last_ms = ts
            kind = type(e)
            if kind is PageView:
                sess.page_started_ms = ts
                sess.values["page"] = e.page
                sess.values["page_category"] = e.page_category
            elif kind is Context:
                _apply_context(sess.values, e)
            elif kind is Consent:
                user.values["consent"] = dict(e.purposes)
            for update in dispatch[kind]:
                update(user, sess, e)
            changed.add((user_id, e.session_id))
            self.dirty.add(user_id)
        return changed

    def _new_session(self, user: UserState, e: AnyEvent) -> SessionState:
        sess = user.sessions[e.session_id] = SessionState(
            values={}, aux={}, started_ms=e.ts, last_ms=e.ts, page_started_ms=e.ts
        )
        if user.n_sessions == 0:
            user.first_ms = e.ts
        user.n_sessions += 1
        if len(user.sessions) > MAX_SESSIONS_PER_USER:
            oldest = min(user.sessions, key=lambda sid: user.sessions[sid].last_ms)
            del user.sessions[oldest]
        return sess

    def features_of(self, user_id: str, session_id: str, now_ms: float | None = None) -> dict:
        """The attributes rules see: user features, then session features, then context.

        A fresh dict each call, so callers (the decision log) may keep it.
        """
        user = self.states.get(user_id)
        sess = user.sessions.get(session_id) if user is not None else None
        attrs = attributes_of(user, sess, user_id, session_id, now_ms)
        for read in self._readers:
            read(user, sess, attrs)
        return attrs

    def set_user_value(self, user_id: str, name: str, key: str, value: Any) -> None:
        """Store ``values[name][key] = value`` in a user's state and mark it to be persisted
        (the engine keeps sticky experiment assignments this way)."""
        state = self.states.get(user_id)
        if state is None:
            state = self.states[user_id] = UserState(user_id=user_id)
        state.values.setdefault(name, {})[key] = value
        self.dirty.add(user_id)

    def forget(self, user_id: str) -> bool:
        """Drop a user's state (erasure)."""
        self.dirty.discard(user_id)
        return self.states.pop(user_id, None) is not None

    def take_dirty(self) -> dict[str, UserState]:
        """The states changed since the last call, for the store to persist in one batch."""
        dirty = {uid: self.states[uid] for uid in self.dirty if uid in self.states}
        self.dirty = set()
        return dirty


def _apply_context(values: dict[str, Any], e: Context) -> None:
    values["device"] = e.device
    values["viewport_w"] = e.viewport_w
    values["viewport_h"] = e.viewport_h
    values["ua_family"] = e.ua_family
    values["language"] = e.language
    values["tz_offset_min"] = e.tz_offset_min


def attributes_of(
    user: UserState | None,
    sess: SessionState | None,
    user_id: str,
    session_id: str,
    now_ms: float | None = None,
) -> dict[str, Any]:
    """Merge user, session and context attributes (local hour from the visitor's time zone)."""
    attrs: dict[str, Any] = {}
    if user is not None:
        attrs.update(user.values)
        attrs["returning"] = user.n_sessions > 1
        attrs["sessions"] = user.n_sessions
    else:
        attrs["returning"] = False
        attrs["sessions"] = 0
    if sess is not None:
        attrs.update(sess.values)
    attrs["id"] = user_id
    attrs["session_id"] = session_id
    now = time.time() * 1000.0 if now_ms is None else now_ms
    local_s = now / 1000.0 + attrs.get("tz_offset_min", 0) * 60
    attrs["local_hour"] = int(local_s // 3600 % 24)
    # 1970-01-01 was a Thursday; 0 = Monday as in Python's weekday().
    attrs["day_of_week"] = int((local_s // 86400 + 3) % 7)
    return attrs
