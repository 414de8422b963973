"""Drive the real pipeline with simulated visitors: `trimtab simulate`.

Each simulated page view goes through :class:`trimtab.runtime.Runtime` exactly as tracker
events would (log, features, decide), stamped with the simulated server clock as their
receive time. Every slot's decision is shown (an ``exposure`` event with its decision id) and
the visitor may click it: the rail with the simulator's interest-based click model (the reward
the rail's bandit learns from), the hero and the call-to-action with the small true effects in
:data:`HERO_CLICK` and :data:`CTA_CLICK`, which ``trimtab report`` should then find. Reward
windows close on the simulated clock, so the bandit's arm probabilities move as the rewards
arrive.

The watched slot's decisions are recorded with the group they belong to, so a run measures
the bandit against the rules **on the same visitors**: a policy rule with ``coverage`` takes
that share of users (by hash), the others fall through to the rules below it, and the
policy's ``min_default_share`` shows the default to a random share of its own decisions.

- ``policy`` — decisions the policy chose (its exploration included);
- ``default`` — the policy's control share: the non-personalised default;
- ``rules`` — decisions of users outside the policy's share, made by the rules below it (or
  the default where none applies);
- ``other`` — decisions of rules above the policy, the same for everyone (not compared).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np

from trimtab.bandits.serving import ServedPolicy
from trimtab.decide import Decision
from trimtab.events import AnyEvent, Click, Exposure, PageView
from trimtab.runtime import Runtime
from trimtab.sim.simulator import DEFAULT_CATEGORIES, Simulator, Visitor

GROUPS = ("policy", "default", "rules", "other")

# Where simulated traffic starts unless told otherwise: 2026-01-05 00:00 UTC (a Monday), so a
# run is the same whenever and wherever it is made.
REFERENCE_START_MS = 1_767_571_200_000.0
DAY_MS = 86_400_000.0


def run_starts(
    runs: int, start: str = "spread", base_ms: float = REFERENCE_START_MS
) -> list[float]:
    """When each of ``runs`` runs starts its simulated traffic (epoch ms).

    ``"spread"``: run ``k`` of ``n`` starts ``k/n`` of a day after ``base_ms`` (00:00 UTC of the
    reference day by default), so the runs behind a mean cover the whole day, as a site's
    traffic does — the hour decides which time-of-day rules fire. ``"HH:MM"``: every run at
    that UTC time of the reference day. ``"now"``: the wall clock (not reproducible).

    >>> [round((t - REFERENCE_START_MS) / 3_600_000, 1) for t in run_starts(5)]
    [0.0, 4.8, 9.6, 14.4, 19.2]
    >>> run_starts(2, "17:15") == [REFERENCE_START_MS + 17.25 * 3_600_000] * 2
    True
    """
    if runs < 1:
        raise ValueError("need at least one run")
    if start == "spread":
        return [base_ms + k * DAY_MS / runs for k in range(runs)]
    if start == "now":
        return [time.time() * 1000.0] * runs
    hours, sep, minutes = start.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit()) or not (
        int(hours) < 24 and int(minutes) < 60
    ):
        raise ValueError(f"start {start!r}: expected 'spread', 'now' or a UTC time HH:MM")
    return [base_ms + (int(hours) * 60 + int(minutes)) * 60_000.0] * runs


@dataclass
class Snapshot:
    """The state of the run after ``sessions`` sessions."""

    sessions: int
    exposures: int
    clicks: int
    ctr_by_source: dict[str, float]
    probabilities: dict[str, dict[str, float]]  # profile -> arm -> probability


@dataclass
class Shown:
    """One decision of the watched slot: who saw what, and what came of it."""

    session: int  # 1-based number of the session in the run
    group: str  # policy | default | rules | other
    reader: str  # the visitor's favourite category (latent: what the policy must infer)
    variant: str
    clicked: bool
    p_click: float  # the simulator's true click probability for this visitor and variant


@dataclass
class SimulationResult:
    slot: str
    policy: str
    sessions: int = 0
    seed: int = 0
    snapshots: list[Snapshot] = field(default_factory=list)
    decisions_by_source: dict[str, int] = field(default_factory=dict)
    clicks_by_source: dict[str, int] = field(default_factory=dict)
    shown: list[Shown] = field(default_factory=list)

    def ctr(self, group: str) -> tuple[float, int, int]:
        """Observed click rate of a group's decisions: (rate, clicks, decisions)."""
        rows = [s for s in self.shown if s.group == group]
        clicks = sum(s.clicked for s in rows)
        return (clicks / len(rows) if rows else float("nan")), clicks, len(rows)

    def expected_ctr(self, group: str) -> tuple[float, float, int]:
        """The simulator's click probability of a group's decisions, averaged: (rate,
        expected clicks, decisions) — the observed rate without the coin flips' noise."""
        rows = [s for s in self.shown if s.group == group]
        expected = sum(s.p_click for s in rows)
        return (expected / len(rows) if rows else float("nan")), expected, len(rows)

    def clicks_per_1000_sessions(self) -> float:
        """Clicks on the watched slot per 1,000 sessions (every group together)."""
        return 1000.0 * sum(s.clicked for s in self.shown) / max(self.sessions, 1)


def _profiles(
    categories: tuple[str, ...], served: ServedPolicy | None
) -> dict[str, dict[str, object]]:
    """Reference readers to watch: one mostly attentive to each of two categories, on a page of
    it, described with whatever per-category attributes the policy reads."""
    first, second = categories[1], categories[3]
    paths = [] if served is None else [*served.spec.features, *served.spec.arm_features]
    out: dict[str, dict[str, object]] = {}
    for top, other in ((first, second), (second, first)):
        attrs: dict[str, object] = {"page_category": top, "scroll_depth_max": 0.8}
        for path in paths:
            name, _, rest = path.partition(".")
            if rest in ("{arm}", *categories):  # a per-category share, like attention_share.x
                attrs[name] = {top: 0.6, other: 0.2}
        out[f"{top} reader"] = attrs
    return out


def _local_time(clock_ms: float, tz_offset_min: int) -> dict[str, int]:
    """The visitor's local hour and weekday on the simulated clock (as features compute them)."""
    local_s = clock_ms / 1000.0 + tz_offset_min * 60
    return {"local_hour": int(local_s // 3600 % 24), "day_of_week": int((local_s // 86400 + 3) % 7)}


def simulate(
    runtime: Runtime,
    sessions: int = 2000,
    seed: int = 0,
    slot: str = "rail",
    every: int = 200,
    progress: Callable[[int], None] | None = None,
    users: int = 3000,
    slots: Sequence[str] | None = None,
    session_gap_ms: float = 60_000.0,
    start_ms: float | None = None,
) -> SimulationResult:
    """Run ``sessions`` simulated visits of ``users`` visitors; snapshot every ``every``.

    ``slots`` limits the page's slots to decide and show (default: all of the config's);
    ``session_gap_ms`` is the mean time between two sessions starting. ``start_ms`` is when
    the simulated traffic starts (default: :data:`REFERENCE_START_MS`, so the same arguments
    give the same run at any time; see :func:`run_starts`). The hour of day decides which
    time-of-day rules fire, so a different start is a different run — as different as another
    seed, since the bandit's learning follows another path from its first rounds on.
    """
    policy_name = next((name for name, p in runtime.policies.items() if p.slot == slot), "")
    served = runtime.policies.get(policy_name)
    if slot not in runtime.engine.slots:
        raise ValueError(f"slot {slot!r} is not declared in this config")
    page_slots = list(runtime.engine.slots if slots is None else slots)
    categories = tuple(DEFAULT_CATEGORIES)
    sim = Simulator(
        seed=seed,
        categories=categories,
        n_users=users,
        start_ms=REFERENCE_START_MS if start_ms is None else start_ms,
        session_gap_ms=session_gap_ms,
    )
    result = SimulationResult(slot=slot, policy=policy_name, sessions=sessions, seed=seed)
    # Reproducible runs: the policies draw from seeded generators, and each slot's clicks from
    # its own, so one slot's randomness never shifts another's outcomes.
    for k, policy in enumerate(runtime.policies.values()):
        policy.rng = np.random.default_rng([seed, 1, k])
        policy.policy.rng = np.random.default_rng([seed, 2, k])
        policy.clock = lambda: sim.clock_ms  # the server clock is the simulated one
    click_rngs = {
        name: np.random.default_rng([seed, 3, k]) for k, name in enumerate(runtime.engine.slots)
    }
    order = [r.rule_id for r in runtime.engine.slots[slot].rules]
    split = order.index(policy_name) if policy_name in order else len(order)
    profiles = _profiles(categories, served)
    visitors = {v.user_id: v for v in sim.users}
    exposures = clicks = 0
    by_source_n: dict[str, int] = {}
    by_source_c: dict[str, int] = {}
    for number, events in enumerate(sim.sessions(sessions), 1):
        visitor = visitors[events[0].user_id]
        tz = next((e.tz_offset_min for e in events if hasattr(e, "tz_offset_min")), 0)
        for page_events in _split_pages(events):
            for e in page_events:
                e.received = e.ts  # what a server stamps on arrival
            runtime.ingest(page_events)
            view = next((e for e in page_events if type(e) is PageView), None)
            if view is None:
                continue
            extra = {"page": view.page, **_local_time(sim.clock_ms, tz)}
            decisions = runtime.engine.decide(
                view.user_id, view.session_id, page_slots, extra, view.page_view_id
            )
            sim.clock_ms += 500.0
            reaction: list[AnyEvent] = [
                Exposure(
                    **_on_page(sim, view), slot=d.slot, variant=d.variant, decision_id=d.decision_id
                )
                for d in decisions
            ]
            clicked = False
            p_watched = 0.0
            for d in decisions:
                p_click = _slot_click_probability(sim, visitor, d.slot, d.variant, categories)
                if d.slot == slot:
                    p_watched = p_click
                rng = click_rngs[d.slot]
                if rng.random() < p_click:
                    sim.clock_ms += float(rng.gamma(2.0, 900.0))
                    kind = "cta" if d.slot == "cta" else "card"
                    reaction.append(
                        Click(
                            **_on_page(sim, view),
                            element=f"{d.slot}-{kind}",
                            element_kind=kind,
                            slot=d.slot,
                        )
                    )
                    clicked = clicked or d.slot == slot
            runtime.ingest(reaction)
            decision = next(d for d in decisions if d.slot == slot)
            exposures += 1
            clicks += clicked
            source = "policy" if decision.rule_id == policy_name else decision.source
            by_source_n[source] = by_source_n.get(source, 0) + 1
            by_source_c[source] = by_source_c.get(source, 0) + int(clicked)
            group = _group(decision, policy_name, order, split, served, view)
            result.shown.append(
                Shown(number, group, _reader(visitor, categories), decision.variant, clicked,
                      p_watched)
            )  # fmt: skip
        runtime.learn(now_ms=sim.clock_ms)
        if progress is not None:
            progress(1)
        if number % every == 0 or number == sessions:
            # Looking must not change the run: the snapshot's Monte Carlo estimate of the arm
            # probabilities draws from the policy's generator, so its state is put back (a
            # run snapshotted every 400 sessions followed another path than one every 4,000).
            drawn = None if served is None else served.policy.rng.bit_generator.state
            result.snapshots.append(
                Snapshot(
                    sessions=number,
                    exposures=exposures,
                    clicks=clicks,
                    ctr_by_source={g: result.ctr(g)[0] for g in GROUPS if result.ctr(g)[2]},
                    probabilities={
                        name: served.probabilities(attrs) for name, attrs in profiles.items()
                    }
                    if served is not None
                    else {},
                )
            )
            if served is not None and drawn is not None:
                served.policy.rng.bit_generator.state = drawn
    runtime.learn(now_ms=sim.clock_ms + 10 * 60 * 1000)
    result.decisions_by_source = by_source_n
    result.clicks_by_source = by_source_c
    return result


def _group(
    decision: Decision,
    policy_name: str,
    order: list[str],
    split: int,
    served: ServedPolicy | None,
    view: PageView,
) -> str:
    """Which side of the comparison a decision of the watched slot is on (module doc)."""
    if policy_name and decision.rule_id == policy_name:
        if served is not None and decision.source == "policy":
            choice = served.choices.get((view.user_id, view.session_id, view.page_view_id))
            if choice is not None and not choice.by_policy:
                return "default"
            return "policy"
        return "other"  # the policy fell back (guardrail, error)
    if decision.rule_id in order and order.index(decision.rule_id) < split:
        return "other"
    return "rules"


def _reader(visitor: Visitor, categories: tuple[str, ...]) -> str:
    return categories[int(np.argmax(visitor.interests))]


def _split_pages(events: list[AnyEvent]) -> list[list[AnyEvent]]:
    pages: list[list[AnyEvent]] = [[]]
    for e in events:
        if type(e) is PageView and pages[-1]:
            pages.append([])
        pages[-1].append(e)
    return pages


_counter = iter(range(10**12))


class _OnPage(TypedDict):
    """The fields of an event a simulated reader makes on a page, stamped on arrival."""

    event_id: str
    user_id: str
    session_id: str
    ts: float
    received: float
    page: str
    page_category: str
    page_view_id: str


def _on_page(sim: Simulator, view: PageView) -> _OnPage:
    """A new event's common fields, on ``view``'s page, one simulated millisecond later."""
    sim.clock_ms += 1.0
    return _OnPage(
        event_id=f"sim-{next(_counter)}-{int(sim.clock_ms)}",
        user_id=view.user_id,
        session_id=view.session_id,
        ts=sim.clock_ms,
        received=sim.clock_ms,
        page=view.page,
        page_category=view.page_category,
        page_view_id=view.page_view_id,
    )


# The simulated truth behind the demo's experiments: what each variant does to clicks.
HERO_CLICK = {"top_story": 0.02, "for_you": 0.03, "skim": 0.025}
CTA_CLICK = {"newsletter": 0.015, "subscribe_offer": 0.05}


def _slot_click_probability(
    sim: Simulator, visitor: Visitor, slot: str, variant: str, categories: tuple[str, ...]
) -> float:
    if slot == "rail":
        return _click_probability(sim, visitor, variant, categories)
    if slot == "hero":
        return HERO_CLICK.get(variant, 0.02)
    if slot == "cta":
        return CTA_CLICK.get(variant, 0.015)
    return 0.0


def _click_probability(
    sim: Simulator, visitor: Visitor, variant: str, categories: tuple[str, ...]
) -> float:
    """A category rail is clicked by its fans; generic rails get the visitor's average."""
    if variant in categories:
        return sim.click_probability(visitor, categories.index(variant))
    average = float(np.mean([sim.click_probability(visitor, k) for k in range(len(categories))]))
    return average * (0.8 if variant == "short_reads" else 1.0)
