"""Declared features, computed incrementally per page view, per session and per user.

A site config declares named features (``scroll_depth_max: {kind: scroll_depth_max, scope:
page}``). Each feature has a **scope**: ``page`` (reset by every page view: "this page"),
``session`` ("this visit") or ``user`` ("this reader"). The :class:`FeatureProcessor` compiles
the declarations into small update functions per event kind and scope, so applying an event
is a dict lookup plus a few arithmetic updates on the state of its scope. State lives in
:class:`UserState` objects (msgspec Structs, so a store can persist them as bytes).

Page views are told apart by the ``page_view_id`` the tracker puts on every event; events
without one (other clients, the simulator) belong to the page opened by the latest
``page_view`` event. A session keeps the state of its last few page views, so a late event of
the previous page (or a second tab) updates its own page, never the current one.

Applying the same event twice (same ``event_id``) changes nothing: every user keeps a bounded
window of the event ids it has applied.

>>> from trimtab.events import Scroll
>>> fp = FeatureProcessor([FeatureSpec("scroll_depth_max", "scroll_depth_max")])
>>> e = Scroll(event_id="e1", user_id="u", session_id="s", ts=1.7e12, depth=0.8)
>>> sorted(fp.apply([e, e]))
[('u', 's')]
>>> fp.features_of("u", "s")["scroll_depth_max"]
0.8
>>> _ = fp.apply([PageView(event_id="e2", user_id="u", session_id="s", ts=1.7e12 + 1)])
>>> "scroll_depth_max" in fp.features_of("u", "s")  # a new page view starts from nothing
False
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any, Literal

import msgspec

from trimtab import patterns
from trimtab.events import (
    BEHAVIOUR_TYPES,
    BY_KIND,
    EVENT_TYPES,
    READING_TYPES,
    AnyEvent,
    Click,
    Consent,
    Context,
    Custom,
    Hover,
    PageView,
    Scroll,
    Visible,
)
from trimtab.validation import ConfigError

Scope = Literal["page", "session", "user"]
SCOPES: tuple[str, ...] = ("page", "session", "user")
SEEN_IDS_PER_USER = 20_000
SESSION_TIMEOUT_MS = 30 * 60 * 1000
MAX_SESSIONS_PER_USER = 8
MAX_PAGES_PER_SESSION = 4  # page views whose state a session keeps (tabs, late events)
MAX_SUM = 1e15  # where a summed feature stops growing (bounded inputs never reach it in years)
FROZEN_ANCHOR_MS = 2 * 86_400_000.0  # an interest anchor this far ahead of an event is poison


class FeatureSpec(msgspec.Struct, frozen=True):
    """One declared feature: its name (the attribute conditions see), kind and parameters."""

    name: str
    kind: str
    scope: Scope | None = None  # None: the kind's natural scope (DEFAULT_SCOPE)
    by: str = "total"  # element | kind | category | total, for hover/visible/click kinds
    event: str = ""  # for event_count: an event kind or a custom event name
    window: int = 9  # for scroll_velocity: how many recent samples the median covers
    half_life_s: float = 600.0  # for interest
    steps: tuple[str, ...] = ()  # for sequence: "kind:detail" patterns, "*" matches anything
    within_s: float = 30.0  # for sequence
    min_evidence: int = 0  # for interest: categorised page views before _top/_share exist
    description: str = ""

    @property
    def resolved_scope(self) -> str:
        return self.scope or DEFAULT_SCOPE.get(self.kind, "session")


class PageState(msgspec.Struct):
    """Feature values of one page view (the ``page`` scope)."""

    values: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    started_ms: float = 0.0
    last_ms: float = 0.0


class SessionState(msgspec.Struct):
    """Feature values and bookkeeping of one visit, and of its latest page views."""

    values: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    started_ms: float = 0.0
    last_ms: float = 0.0
    page_view_id: str = ""  # the latest page view
    pages: dict[str, PageState] = {}


class UserState(msgspec.Struct):
    """Everything trimtab knows about one pseudonymous user, persisted as one blob."""

    user_id: str
    values: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    sessions: dict[str, SessionState] = {}
    seen: dict[str, None] = {}  # insertion-ordered set of applied event ids
    # reading events applied (READING_TYPES outside nav): the evidence segments.min_events
    # counts; 0 in a state stored before it was kept (the count starts then)
    reading_events: int = 0
    n_sessions: int = 0
    first_ms: float = 0.0
    last_ms: float = 0.0


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(UserState)


def encode_state(state: UserState) -> bytes:
    return _state_encoder.encode(state)


def decode_state(blob: bytes) -> UserState:
    return _state_decoder.decode(blob)


# The state of one scope: a UserState, SessionState or PageState (each has values and aux).
Owner = Any
# An updater mutates the state of its scope's owner for one event.
Updater = Callable[[Owner, Any], None]
# A reader derives attributes from an owner's state when features are read (not per event).
Reader = Callable[[Owner, dict[str, Any]], None]
# A derived reader sees the finished attributes of a user and page view (model scores).
Derived = Callable[["UserState | None", str, dict[str, Any]], None]


def _key_getter(by: str) -> Callable[[Any], str]:
    if by == "element":
        return attrgetter("element")
    if by == "kind":
        return lambda e: e.element_kind or "other"
    if by == "category":
        return lambda e: e.category or e.page_category or "other"
    raise FeatureConfigError(f"'by' must be element, kind, category or total, not {by!r}")


class SummedMap(dict):  # type: ignore[type-arg]
    """A map of amounts (hovered ms by element kind, clicks by kind) that carries its sum.

    ``total`` is ``sum(self.values())`` exactly — the same left-to-right fold in insertion
    order that Python's ``sum`` makes, ints staying ints — kept as :func:`_sum_by` adds to
    the map, where the map is in the CPU's caches anyway; a column ``sum(hover_ms_by_kind)``
    then reads one number instead of walking a map that the event being served (a scroll)
    never touched. Adding to a new key (appended last) continues the fold with one addition;
    adding to an existing key sums the map again with the builtin ``sum``. Only
    :func:`_sum_by` writes these maps (nothing else may change one); a stored state decodes
    them as plain dicts, made summed again at their next update.

    >>> m = SummedMap({"image": 120.0})
    >>> m.add("link", 30.5); m.add("image", 5.0); m.total == sum(m.values()) == 155.5
    True
    """

    __slots__ = ("total",)

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.total: Any = sum(self.values())

    def add(self, key: str, amount: Any, zero: Any = 0) -> None:
        """``self[key] += amount`` (from ``zero`` when new), stopping at :data:`MAX_SUM`
        (what :func:`_sum_by`'s updater does, inlined there)."""
        old = self.get(key)
        value = (zero if old is None else old) + amount
        value = value if value < MAX_SUM else MAX_SUM
        self[key] = value
        self.total = self.total + value if old is None else sum(self.values())


def _sum_by(spec: FeatureSpec, amount: Callable[[Any], float], zero: float = 0.0) -> Updater:
    """Sum of ``amount(event)``, in total or keyed by element / kind / category (a
    :class:`SummedMap`, which keeps its own sum for the ``sum(map)`` model columns).

    Amounts are bounded by the event schema and a sum stops at :data:`MAX_SUM`, so no sum
    ever becomes infinite (nor, divided by another, NaN).
    """
    name = spec.name
    if spec.by == "total":

        def update_total(owner: Owner, e: Any) -> None:
            values = owner.values
            total = values.get(name, zero) + amount(e)
            values[name] = total if total < MAX_SUM else MAX_SUM

        return update_total
    key_of = _key_getter(spec.by)

    def update_by(owner: Owner, e: Any) -> None:  # SummedMap.add, inlined: runs per event
        values = owner.values
        table = values.get(name)
        if type(table) is not SummedMap:  # new, or a plain dict from a stored state
            table = values[name] = SummedMap(table or ())
        key = key_of(e)
        old = table.get(key)
        total = (zero if old is None else old) + amount(e)
        total = total if total < MAX_SUM else MAX_SUM
        table[key] = total
        # appended last: the fold goes on; an earlier key: the builtin sum again
        table.total = table.total + total if old is None else sum(table.values())

    return update_by


def _one(e: Any) -> int:
    return 1


def _noop(owner: Owner, e: Any) -> None:
    return None


def _scroll_depth_max(spec: FeatureSpec) -> Updater:
    name = spec.name

    def update(owner: Owner, e: Scroll) -> None:
        values = owner.values
        if e.depth > values.get(name, 0.0):
            values[name] = e.depth

    return update


def _scroll_velocity(spec: FeatureSpec) -> Updater:
    """Median absolute scroll speed (px/s) over the last ``window`` non-zero samples.

    The tracker measures each sample over a time window (distance covered in the last half
    second), not per animation frame, so one wheel notch is not a flick.
    """
    name, window = spec.name, spec.window

    def update(owner: Owner, e: Scroll) -> None:
        if e.velocity == 0.0:
            return
        recent = owner.aux.get(name)
        if recent is None:
            recent = owner.aux[name] = []
        recent.append(abs(e.velocity))
        n = len(recent)
        if n > window:
            del recent[0]
            n -= 1
        ordered = sorted(recent)
        mid = n >> 1
        owner.values[name] = ordered[mid] if n & 1 else (ordered[mid - 1] + ordered[mid]) / 2

    return update


def _time_on_page_reader(spec: FeatureSpec) -> Reader:
    """Seconds between a page view's first event and its latest (always page-scoped).

    Computed when features are read from the page's clock, which every event keeps: no work
    per event.
    """
    name = spec.name

    def read(page: PageState | None, attrs: dict[str, Any]) -> None:
        if page is not None:
            attrs[name] = max(0.0, (page.last_ms - page.started_ms) / 1000.0)

    return read


def _interest(spec: FeatureSpec) -> Updater:
    """Recency-weighted interest per content category.

    A signal of weight ``w`` at time ``t`` counts ``w · exp(-ln 2 · (now − t) / half_life)``:
    attention a minute ago counts more than last week's. Signals: visible seconds, hover
    seconds, 5 per click, 1 per page view; "now" is the owner's latest signal. Only content
    counts: events on navigation and chrome (``nav``, from ``data-tt-nav`` markup) do not.

    The state keeps ``g_c = Σ w · exp(λ (t − anchor))`` per category, so a signal touches its
    own category only (O(1), and the order signals arrive in does not matter); the decayed
    scores are ``g_c · exp(−λ (last − anchor))``, computed when features are read (see
    :func:`_interest_reader`). When the exponent grows large the anchor moves forward. The
    state also counts the categorised page views: the evidence ``min_evidence`` asks for.
    """
    name = spec.name
    rate = math.log(2.0) / (spec.half_life_s * 1000.0)
    exp = math.exp
    # events come at most a day late (the clock-skew window): an anchor further ahead is bad
    frozen = -rate * FROZEN_ANCHOR_MS

    def update(owner: Owner, e: Any) -> None:
        kind = type(e)
        if kind is PageView:
            weight = 1.0
        elif e.nav:
            return
        elif kind is Visible:
            weight = e.visible_ms / 1000.0
        elif kind is Hover:
            weight = e.dwell_ms / 1000.0
        else:  # Click
            weight = 5.0
        category = e.page_category if kind is PageView else (e.category or e.page_category)
        if not category or weight <= 0.0:
            return
        st = owner.aux.get(name)
        if st is None:
            # anchor, last signal, growth per category, categorised page views
            st = owner.aux[name] = [e.ts, e.ts, {}, 0]
        x = rate * (e.ts - st[0])
        growth = st[2]
        if not x >= frozen:
            # NaN, or an anchor days ahead of this event: a state poisoned before timestamps
            # were bounded (an event dated in the year 5100 froze it), started afresh
            growth.clear()
            st[0] = st[1] = e.ts
            x = 0.0
        elif x > 300.0:  # rebase long before floats overflow (~700)
            shrink = exp(-x)
            for key in growth:
                growth[key] *= shrink
            st[0], x = e.ts, 0.0
        growth[category] = growth.get(category, 0.0) + weight * exp(x)
        if e.ts > st[1]:
            st[1] = e.ts
        if kind is PageView:
            if len(st) < 4:  # state saved before page views were counted
                st.append(0)
            st[3] += 1

    return update


def _interest_reader(spec: FeatureSpec) -> Reader:
    """Adds ``<name>_pages`` (categorised page views seen) and, once they reach
    ``min_evidence``, ``<name>`` (category → score), ``<name>_share`` (category → share of the
    total), ``<name>_top`` and ``<name>_top_share``: no interest is claimed without evidence."""
    name, top_name, share_name = spec.name, f"{spec.name}_top", f"{spec.name}_top_share"
    shares_name, pages_name = f"{spec.name}_share", f"{spec.name}_pages"
    rate = math.log(2.0) / (spec.half_life_s * 1000.0)
    min_evidence = spec.min_evidence

    def read(owner: Owner, attrs: dict[str, Any]) -> None:
        st = owner.aux.get(name) if owner is not None else None
        pages = st[3] if st and len(st) > 3 else 0
        attrs[pages_name] = pages
        if not st or not st[2] or pages < min_evidence:
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


def _sequence(spec: FeatureSpec) -> Updater:
    """True once the steps occurred in order with the last within ``within_s`` of the first.

    The state keeps, for each completed prefix of the steps, the latest time it could have
    started: a later start is never worse for the time window.
    """
    if len(spec.steps) < 2:
        raise FeatureConfigError("a sequence needs at least two steps")
    name, n = spec.name, len(spec.steps)
    matchers = [patterns.matcher(step) for step in spec.steps]
    within_ms = spec.within_s * 1000.0

    def update(owner: Owner, e: Any) -> None:
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
    name, event = spec.name, spec.event

    def update(owner: Owner, e: Custom) -> None:
        if e.name == event:
            owner.values[name] = e.value

    return update


def _event_count(spec: FeatureSpec) -> tuple[list[type], Updater]:
    name, event = spec.name, spec.event
    if event in BY_KIND:
        kinds = [BY_KIND[event]]

        def count_kind(owner: Owner, e: Any) -> None:
            values = owner.values
            values[name] = values.get(name, 0) + 1

        return kinds, count_kind

    def count_custom(owner: Owner, e: Custom) -> None:
        if e.name == event:
            values = owner.values
            values[name] = values.get(name, 0) + 1

    return [Custom], count_custom


# kind -> (event types it listens to, updater factory)
FEATURE_KINDS: dict[str, tuple[tuple[type, ...], Callable[[FeatureSpec], Updater]]] = {
    "scroll_depth_max": ((Scroll,), _scroll_depth_max),
    "scroll_velocity": ((Scroll,), _scroll_velocity),
    "hover_ms": ((Hover,), lambda s: _sum_by(s, attrgetter("dwell_ms"))),
    "visible_ms": ((Visible,), lambda s: _sum_by(s, attrgetter("visible_ms"))),
    "click_count": ((Click,), lambda s: _sum_by(s, _one, 0)),  # counts stay integers
    "time_on_page": ((), lambda s: _noop),  # a reader: see _time_on_page_reader
    "interest": ((PageView, Visible, Hover, Click), _interest),
    "sequence": (BEHAVIOUR_TYPES, _sequence),  # narrowed to the steps' types
    "last_value": ((Custom,), _last_value),
    "event_count": ((), lambda s: _noop),  # compiled by _event_count: what `event` names
}

# Kinds whose attributes are (also) derived when features are read.
_READERS: dict[str, Callable[[FeatureSpec], Reader]] = {
    "interest": _interest_reader,
    "time_on_page": _time_on_page_reader,
}

# The scope a kind has when a declaration does not say: what its name means.
DEFAULT_SCOPE: dict[str, str] = {
    "scroll_depth_max": "page",
    "scroll_velocity": "page",
    "time_on_page": "page",
    "interest": "user",
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


def check_features(specs: list[FeatureSpec], source: str) -> None:
    """Validate the config's ``features`` section; :class:`ConfigError` names the path."""
    for spec in specs:
        where = f"$.features.{spec.name}"
        if spec.kind not in FEATURE_KINDS:
            known = ", ".join(sorted(FEATURE_KINDS))
            raise ConfigError(source, f"{where}.kind", f"unknown kind {spec.kind!r} ({known})")
        if spec.name in CONTEXT_ATTRIBUTES:
            raise ConfigError(source, where, f"{spec.name!r} is a built-in context attribute")
    try:
        FeatureProcessor(specs)
    except FeatureConfigError as exc:
        raise ConfigError(source, "$.features", str(exc)) from None


class FeatureProcessor:
    """Applies events to per-user state and answers ``features_of(user, session)``.

    The processor keeps the states it has touched in memory (``states``); a store persists
    them (see :mod:`trimtab.store`). It does no I/O itself.
    """

    def __init__(self, specs: Iterable[FeatureSpec] = ()) -> None:
        self.states: dict[str, UserState] = {}
        self.dirty: set[str] = set()
        self.duplicates = 0
        # Attributes derived from all the others (model scores, segments), computed last.
        self.derived: list[Derived] = []
        self.configure(specs)

    def configure(self, specs: Iterable[FeatureSpec]) -> None:
        """Compile feature declarations; existing state is kept (config reload)."""
        specs = list(specs)
        names: set[str] = set()
        # per event type, per scope: the updaters
        tables: dict[str, dict[type, list[Updater]]] = {
            scope: {t: [] for t in EVENT_TYPES} for scope in SCOPES
        }
        for spec in specs:
            if spec.name in names or spec.name in CONTEXT_ATTRIBUTES:
                raise FeatureConfigError(f"feature name {spec.name!r} is used twice or reserved")
            names.add(spec.name)
            if spec.kind not in FEATURE_KINDS:
                known = ", ".join(sorted(FEATURE_KINDS))
                raise FeatureConfigError(f"unknown feature kind {spec.kind!r} (known: {known})")
            scope = spec.resolved_scope
            if scope not in SCOPES:
                raise FeatureConfigError(f"scope must be page, session or user, not {scope!r}")
            if spec.min_evidence < 0:
                raise FeatureConfigError(f"{spec.name}: min_evidence must be 0 or more")
            if spec.kind == "time_on_page" and scope != "page":
                raise FeatureConfigError(f"{spec.name}: time_on_page is always page-scoped")
            types, factory = FEATURE_KINDS[spec.kind]
            if spec.kind == "event_count":
                if not spec.event:
                    raise FeatureConfigError("event_count needs 'event' (an event kind or name)")
                types_list, updater = _event_count(spec)
                types = tuple(types_list)
            else:
                updater = factory(spec)
                if spec.kind == "sequence":
                    types = patterns.behaviour_types_for(spec.steps)
            for t in types:
                tables[scope][t].append(updater)
        self.specs = specs
        self.scopes = {spec.name: spec.resolved_scope for spec in specs}
        # per event type: its updaters per scope, and whether it is reading (READING_TYPES:
        # None, not reading; False, reading; True, reading unless it is navigation)
        self._dispatch = {
            t: (
                tuple(tables["user"][t]),
                tuple(tables["session"][t]),
                tuple(tables["page"][t]),
                READING_TYPES.get(t),
            )
            for t in EVENT_TYPES
        }
        self._track_pages = any(s == "page" for s in self.scopes.values())
        self._readers = [
            (spec.resolved_scope, _READERS[spec.kind](spec))
            for spec in specs
            if spec.kind in _READERS
        ]

    def apply(self, events: Iterable[AnyEvent]) -> set[tuple[str, str]]:
        """Apply events in order; return the (user, session) pairs whose features changed."""
        changed: set[tuple[str, str]] = set()
        states = self.states
        dispatch = self._dispatch
        track_pages = self._track_pages
        mark_changed, mark_dirty = changed.add, self.dirty.add
        e: Any  # one of AnyEvent; dispatched on its exact type below
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
            to_user, to_session, to_page, reading = dispatch[kind]
            if reading is not None and not (reading and e.nav):
                user.reading_events += 1
            if kind is PageView:
                sess.values["page"] = e.page
                sess.values["page_category"] = e.page_category
            elif kind is Context:
                _apply_context(sess.values, e)
            elif kind is Consent:
                user.values["consent"] = dict(e.purposes)
            for update in to_user:
                update(user, e)
            for update in to_session:
                update(sess, e)
            if track_pages:
                pv = e.page_view_id
                if not pv:  # a client without page view ids: page_view events start pages
                    pv = e.event_id if kind is PageView else sess.page_view_id
                page = sess.pages.get(pv)
                if page is None:
                    page = _new_page(sess, pv, ts)
                elif ts > page.last_ms:
                    page.last_ms = ts
                elif ts < page.started_ms:
                    page.started_ms = ts
                for update in to_page:
                    update(page, e)
            mark_changed((user_id, e.session_id))
            mark_dirty(user_id)
        return changed

    def _new_session(self, user: UserState, e: AnyEvent) -> SessionState:
        sess = user.sessions[e.session_id] = SessionState(
            values={}, aux={}, started_ms=e.ts, last_ms=e.ts, pages={}
        )
        if user.n_sessions == 0:
            user.first_ms = e.ts
        user.n_sessions += 1
        if len(user.sessions) > MAX_SESSIONS_PER_USER:
            oldest = min(user.sessions, key=lambda sid: user.sessions[sid].last_ms)
            del user.sessions[oldest]
        return sess

    def features_of(
        self,
        user_id: str,
        session_id: str,
        page_view_id: str = "",
        *,
        now_ms: float | None = None,
    ) -> dict[str, Any]:
        """The attributes rules see: user, then session, then page features, then context.

        ``page_view_id`` names the page being decided; a page view not seen yet has no page
        features (a new page starts from nothing). Without it, the session's latest page view.
        A fresh dict each call, so callers (the decision log) may keep it.
        """
        user, page_view_id, attrs = self.own_features(
            user_id, session_id, page_view_id, now_ms=now_ms
        )
        for derive in self.derived:
            derive(user, page_view_id, attrs)
        return attrs

    def own_features(
        self,
        user_id: str,
        session_id: str,
        page_view_id: str = "",
        *,
        now_ms: float | None = None,
    ) -> tuple[UserState | None, str, dict[str, Any]]:
        """:meth:`features_of` before the derived readers run: the user's state (``None`` for
        a user never seen), the page view read and the attributes — what each derived reader
        (model scores) is handed, so the live-scoring benchmark can time that reader alone on
        the very attributes serving builds."""
        user = self.states.get(user_id)
        sess = user.sessions.get(session_id) if user is not None else None
        page = None
        if sess is not None:
            page_view_id = page_view_id or sess.page_view_id
            page = sess.pages.get(page_view_id)
        attrs = attributes_of(user, sess, user_id, session_id, now_ms, page)
        for scope, read in self._readers:
            read(user if scope == "user" else sess if scope == "session" else page, attrs)
        return user, page_view_id, attrs

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


def _new_page(sess: SessionState, page_view_id: str, ts: float) -> PageState:
    """Start the state of a page view; it becomes the session's current page unless it is
    older than the current one (a late event of an earlier page)."""
    pages = sess.pages
    page = pages[page_view_id] = PageState(values={}, aux={}, started_ms=ts, last_ms=ts)
    current = pages.get(sess.page_view_id)
    if current is None or ts >= current.started_ms:
        sess.page_view_id = page_view_id
    if len(pages) > MAX_PAGES_PER_SESSION:
        oldest = min(pages, key=lambda pv: pages[pv].started_ms)
        del pages[oldest]
    return page


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
    page: PageState | None = None,
) -> dict[str, Any]:
    """Merge user, session, page and context attributes (local hour from the visitor's time
    zone)."""
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
    if page is not None:
        attrs.update(page.values)
    attrs["id"] = user_id
    attrs["session_id"] = session_id
    now = time.time() * 1000.0 if now_ms is None else now_ms
    local_s = now / 1000.0 + attrs.get("tz_offset_min", 0) * 60
    attrs["local_hour"] = int(local_s // 3600 % 24)
    # 1970-01-01 was a Thursday; 0 = Monday as in Python's weekday().
    attrs["day_of_week"] = int((local_s // 86400 + 3) % 7)
    return attrs
