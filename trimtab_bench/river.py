"""The feature-update baseline: the bench's 10 feature declarations computed with River.

River (online machine learning) keeps running statistics one value at a time. Its per-key
running aggregate is ``river.feature_extraction.Agg`` (``on`` a field, ``by`` the keys, ``how``
a statistic), fed one event at a time as a dict — River's input format. :class:`RiverAgg`
declares one ``Agg`` per feature, keyed by its scope (user, session or page view) and, for
``by`` features, the element / kind / category: the way a stream processor built on River
would compute the bench's declarations. :class:`RiverFeatures` does the same with River's
statistics (``river.stats``) in hand-written per-key tables, without ``Agg``: a leaner use of
River, shown alongside. Both compute the same values as
:class:`trimtab.features.FeatureProcessor` on the declarations of
:data:`trimtab_bench.core.BENCH_FEATURES` (checked by :func:`disagreements`):

- maxima, sums, counts and time on page: ``stats.Max``, ``stats.Sum``, ``stats.Count``,
  ``stats.PeakToPeak`` (of the timestamps of a page view);
- the scroll velocity's median of the last 9 movements: ``stats.RollingQuantile(0.5, 9)``;
- interest: one ``stats.Sum`` per (user, category) of the same anchored exponential weights
  trimtab uses (River has no time-decayed sum);
- the filter → expand sequence has no River statistic: the same few lines of Python as
  trimtab's.

River is a dev dependency, imported only by the benchmark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from trimtab.events import AnyEvent, Click, Hover, PageView, Scroll, Visible


class RiverAgg:
    """One ``river.feature_extraction.Agg`` per declaration, fed event dicts.

    Events reach it as dicts (what a River pipeline consumes; converting them is not timed,
    as trimtab's typed events are not). A dict gets the fields the declarations key on: its
    page view, ``|velocity|``, the element kind / category with their fallbacks, and the
    interest weight.
    """

    def __init__(self, half_life_s: float = 600.0, within_s: float = 30.0) -> None:
        from river import feature_extraction, stats

        agg = feature_extraction.Agg
        page = ["user_id", "pv"]
        session = ["user_id", "session_id"]
        self.rate = math.log(2.0) / (half_life_s * 1000.0)
        self.within_ms = within_s * 1000.0
        self.seen: dict[str, set[str]] = {}
        self.page_of: dict[tuple[str, str], str] = {}
        self.anchor: dict[str, float] = {}
        self.sequence: dict[tuple, list] = {}
        self.depth = agg(on="depth", by=page, how=stats.Max())
        self.velocity = agg(on="speed", by=page, how=stats.RollingQuantile(0.5, 9))
        self.hover_element = agg(on="dwell_ms", by=[*page, "element"], how=stats.Sum())
        self.hover_kind = agg(on="dwell_ms", by=[*page, "kind"], how=stats.Sum())
        self.visible_category = agg(on="visible_ms", by=[*session, "cat"], how=stats.Sum())
        self.clicks_kind = agg(on="kind", by=[*session, "kind"], how=stats.Count())
        self.page_clock = agg(on="ts", by=page, how=stats.PeakToPeak())
        self.interest = agg(on="growth", by=["user_id", "cat"], how=stats.Sum())
        self.page_views = agg(on="user_id", by="user_id", how=stats.Count())
        self.by_kind = {
            "scroll": (self.depth, self.page_clock),
            "hover": (self.hover_element, self.hover_kind, self.page_clock),
            "visible": (self.visible_category, self.page_clock),
            "click": (self.clicks_kind, self.page_clock),
            "page_view": (self.page_views, self.page_clock),
        }

    @staticmethod
    def dicts(events: Iterable[AnyEvent]) -> list[dict[str, Any]]:
        """The events as River consumes them: plain dicts."""
        return [msgspec.to_builtins(e) for e in events]

    def learn(self, events: Iterable[dict[str, Any]]) -> None:
        """``learn_one`` every event into each declaration that listens to its kind."""
        for x in events:
            user = x["user_id"]
            seen = self.seen.get(user)
            if seen is None:
                seen = self.seen[user] = set()
            if x["event_id"] in seen:
                continue
            seen.add(x["event_id"])
            kind = x["kind"]
            sess = (user, x["session_id"])
            pv = x.get("page_view_id") or (
                x["event_id"] if kind == "page_view" else self.page_of.get(sess, "")
            )
            if kind == "page_view" or sess not in self.page_of:
                self.page_of[sess] = pv
            x["pv"] = pv
            x["kind"] = x.get("element_kind") or "other"
            x["cat"] = x.get("category") or x.get("page_category") or "other"
            if kind == "scroll" and x.get("velocity"):
                x["speed"] = abs(x["velocity"])
                self.velocity.learn_one(x)
            for aggregate in self.by_kind.get(kind, ()):
                aggregate.learn_one(x)
            if kind in ("page_view", "visible", "hover", "click"):
                self._interest(kind, x)
            if kind == "click":
                self._sequence(sess, x)

    def _interest(self, kind: str, x: dict[str, Any]) -> None:
        if kind == "page_view":
            weight = 1.0
        elif x.get("nav"):
            return
        elif kind == "visible":
            weight = x["visible_ms"] / 1000.0
        elif kind == "hover":
            weight = x["dwell_ms"] / 1000.0
        else:
            weight = 5.0
        category = x.get("category") or x.get("page_category")
        if not category or weight <= 0.0:
            return
        anchor = self.anchor.setdefault(x["user_id"], x["ts"])
        x["growth"] = weight * math.exp(self.rate * (x["ts"] - anchor))
        x["cat"] = category
        self.interest.learn_one(x)

    def _sequence(self, sess: tuple[str, str], x: dict[str, Any]) -> None:
        state = self.sequence.get(sess)
        if state is None:
            state = self.sequence[sess] = [None, False]
        if state[1]:
            return
        if x["kind"] == "expand" and state[0] is not None:
            state[1] = x["ts"] - state[0] <= self.within_ms
        if x["kind"] == "filter":
            state[0] = x["ts"]

    def value(self, aggregate: Any, key: tuple) -> Any:
        stat = aggregate._groups.get(key)
        return None if stat is None else stat.get()


class RiverFeatures:
    """Per-key River statistics for the bench's declarations (see the module docstring)."""

    def __init__(self, half_life_s: float = 600.0, within_s: float = 30.0) -> None:
        from river import stats

        self._stats = stats
        self.rate = math.log(2.0) / (half_life_s * 1000.0)
        self.within_ms = within_s * 1000.0
        self.seen: dict[str, set[str]] = {}
        self.page_of: dict[tuple[str, str], str] = {}  # current page view per session
        self.depth: dict[tuple, Any] = {}
        self.velocity: dict[tuple, Any] = {}
        self.hover_element: dict[tuple, Any] = {}
        self.hover_kind: dict[tuple, Any] = {}
        self.visible_category: dict[tuple, Any] = {}
        self.clicks_kind: dict[tuple, Any] = {}
        self.page_clock: dict[tuple, Any] = {}
        self.interest: dict[tuple, Any] = {}
        self.anchor: dict[str, float] = {}
        self.sequence: dict[tuple, list] = {}
        self.page_views: dict[str, Any] = {}

    def _get(self, table: dict, key: Any, make: Any) -> Any:
        stat = table.get(key)
        if stat is None:
            stat = table[key] = make()
        return stat

    def learn(self, events: Iterable[AnyEvent]) -> None:
        """Update every declaration with each event, in order, each event once."""
        s = self._stats
        for e in events:
            seen = self.seen.get(e.user_id)
            if seen is None:
                seen = self.seen[e.user_id] = set()
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            kind = type(e)
            sess = (e.user_id, e.session_id)
            pv = e.page_view_id or (e.event_id if kind is PageView else self.page_of.get(sess, ""))
            if kind is PageView or sess not in self.page_of:
                self.page_of[sess] = pv
            page = (e.user_id, pv)
            if kind is Scroll:
                self._get(self.depth, page, s.Max).update(e.depth)
                if e.velocity:
                    roll = self._get(self.velocity, page, lambda: s.RollingQuantile(0.5, 9))
                    roll.update(abs(e.velocity))
            elif kind is Hover:
                self._get(self.hover_element, (*page, e.element), s.Sum).update(e.dwell_ms)
                key = e.element_kind or "other"
                self._get(self.hover_kind, (*page, key), s.Sum).update(e.dwell_ms)
            elif kind is Visible:
                cat = e.category or e.page_category or "other"
                self._get(self.visible_category, (*sess, cat), s.Sum).update(e.visible_ms)
            elif kind is Click:
                key = e.element_kind or "other"
                self._get(self.clicks_kind, (*sess, key), s.Count).update()
            elif kind is PageView:
                self._get(self.page_views, e.user_id, s.Count).update()
            if kind in (PageView, Scroll, Hover, Visible, Click):
                self._get(self.page_clock, page, s.PeakToPeak).update(e.ts)
                self._sequence(sess, e)
            if kind in (PageView, Visible, Hover, Click):
                self._interest(e)

    def _interest(self, e: Any) -> None:
        kind = type(e)
        if kind is PageView:
            weight = 1.0
        elif e.nav:
            return
        elif kind is Visible:
            weight = e.visible_ms / 1000.0
        elif kind is Hover:
            weight = e.dwell_ms / 1000.0
        else:
            weight = 5.0
        category = getattr(e, "category", "") or e.page_category
        if not category or weight <= 0.0:
            return
        anchor = self.anchor.setdefault(e.user_id, e.ts)
        grow = weight * math.exp(self.rate * (e.ts - anchor))
        self._get(self.interest, (e.user_id, category), self._stats.Sum).update(grow)

    def _sequence(self, sess: tuple[str, str], e: Any) -> None:
        """click:filter then click:expand within the window (no River statistic for this)."""
        state = self.sequence.get(sess)
        if state is None:
            state = self.sequence[sess] = [None, False]
        if state[1] or type(e) is not Click:
            return
        if e.element_kind == "expand" and state[0] is not None:
            state[1] = e.ts - state[0] <= self.within_ms
        if e.element_kind == "filter":
            state[0] = e.ts


def river_rate(stream: list[AnyEvent], runs: int) -> list[float]:
    """Events per CPU second of :class:`RiverFeatures` over ``stream``, a fresh one each run."""
    rates = []
    for _ in range(runs):
        features = RiverFeatures()
        started = time.process_time()
        features.learn(stream)
        rates.append(len(stream) / (time.process_time() - started))
    return sorted(rates)


def agg_rate(dicts: list[dict[str, Any]], runs: int) -> list[float]:
    """Events per CPU second of :class:`RiverAgg` over the stream's dicts (copied per run:
    the baseline annotates them)."""
    rates = []
    for _ in range(runs):
        features = RiverAgg()
        fresh = [dict(x) for x in dicts]
        started = time.process_time()
        features.learn(fresh)
        rates.append(len(fresh) / (time.process_time() - started))
    return sorted(rates)


def disagreements(stream: list[AnyEvent], processor: Any, users: int = 50) -> int:
    """How many compared values differ between River and trimtab on the stream (want 0).

    Compares, for the first ``users`` users' latest page view and session: scroll depth,
    velocity, hover sums by element and kind, time on page, visible sums, clicks and page
    views.
    """
    river = RiverFeatures()
    river.learn(stream)
    agg = RiverAgg()
    agg.learn(RiverAgg.dicts(stream))
    differ = 0
    for user_id in list(processor.states)[:users]:
        state = processor.states[user_id]
        for session_id, sess in state.sessions.items():
            attrs = processor.features_of(user_id, session_id)
            pv = sess.page_view_id
            page = (user_id, pv)
            checks: list[tuple[Any, Any]] = [
                (attrs.get("scroll_depth_max"), _value(river.depth.get(page))),
                (attrs.get("scroll_velocity"), _value(river.velocity.get(page))),
                (attrs.get("time_on_page_s"), _seconds(river.page_clock.get(page))),
                (attrs.get("page_views"), _value(river.page_views.get(user_id))),
                (attrs.get("scroll_depth_max"), agg.value(agg.depth, page)),
                (attrs.get("scroll_velocity"), agg.value(agg.velocity, page)),
                (attrs.get("page_views"), agg.value(agg.page_views, (user_id,))),
            ]
            time_on_page = agg.value(agg.page_clock, page)
            checks.append(
                (attrs.get("time_on_page_s"), None if time_on_page is None else time_on_page / 1e3)
            )
            for name, table, aggregate, prefix in (
                ("hover_ms_by_element", river.hover_element, agg.hover_element, page),
                ("hover_ms_by_kind", river.hover_kind, agg.hover_kind, page),
                (
                    "visible_ms_by_category",
                    river.visible_category,
                    agg.visible_category,
                    (user_id, session_id),
                ),
                ("clicks_by_kind", river.clicks_kind, agg.clicks_kind, (user_id, session_id)),
            ):
                for key, value in (attrs.get(name) or {}).items():
                    checks.append((value, _value(table.get((*prefix, key)))))
                    checks.append((value, agg.value(aggregate, (*prefix, key))))
            differ += sum(1 for ours, theirs in checks if not _close(ours, theirs))
    return differ


def _value(stat: Any) -> Any:
    return None if stat is None else stat.get()


def _seconds(stat: Any) -> Any:
    return None if stat is None else stat.get() / 1000.0


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
