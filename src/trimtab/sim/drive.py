"""Drive the real pipeline with simulated visitors: `trimtab simulate`.

Each simulated page view goes through :class:`trimtab.runtime.Runtime` exactly as tracker
events would (log, features, decide). Every slot's decision is shown (an ``exposure`` event
with its decision id) and the visitor may click it: the rail with the simulator's
interest-based click model (the reward the rail's bandit learns from), the hero and the
call-to-action with the small true effects in :data:`HERO_CLICK` and :data:`CTA_CLICK`, which
``trimtab report`` should then find. Reward windows close on the simulated
clock, so the bandit's arm probabilities move as the rewards arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trimtab.events import AnyEvent, Click, Exposure, PageView
from trimtab.runtime import Runtime
from trimtab.sim.simulator import DEFAULT_CATEGORIES, Simulator


@dataclass
class Snapshot:
    """The state of the run after ``sessions`` sessions."""

    sessions: int
    exposures: int
    clicks: int
    ctr_by_source: dict[str, float]
    probabilities: dict[str, dict[str, float]]  # profile -> arm -> probability


@dataclass
class SimulationResult:
    slot: str
    policy: str
    snapshots: list[Snapshot] = field(default_factory=list)
    decisions_by_source: dict[str, int] = field(default_factory=dict)
    clicks_by_source: dict[str, int] = field(default_factory=dict)


def _profiles(categories: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Reference visitors to watch: one strongly interested in each of two categories."""
    first, second = categories[1], categories[3]
    return {
        f"{first} reader": {"interest_share": {first: 0.45, second: 0.2}, "scroll_depth_max": 0.8},
        f"{second} reader": {"interest_share": {second: 0.45, first: 0.2}, "scroll_depth_max": 0.8},
    }


def simulate(
    runtime: Runtime,
    sessions: int = 2000,
    seed: int = 0,
    slot: str = "rail",
    every: int = 200,
    progress: Callable[[int], None] | None = None,
    users: int = 3000,
) -> SimulationResult:
    """Run ``sessions`` simulated visits of ``users`` visitors; snapshot every ``every``."""
    policy_name = next((name for name, p in runtime.policies.items() if p.slot == slot), None)
    if policy_name is None:
        raise ValueError(f"slot {slot!r} has no policy rule in this config")
    served = runtime.policies[policy_name]
    categories = tuple(c for c in DEFAULT_CATEGORIES)
    sim = Simulator(seed=seed, categories=categories, n_users=users, start_ms=time.time() * 1000)
    result = SimulationResult(slot=slot, policy=policy_name)
    # Reproducible runs: the policies draw from seeded generators, and each slot's clicks from
    # its own, so one slot's randomness never shifts another's outcomes.
    for k, policy in enumerate(runtime.policies.values()):
        policy.rng = np.random.default_rng([seed, 1, k])
        policy.policy.rng = np.random.default_rng([seed, 2, k])
    click_rngs = {
        name: np.random.default_rng([seed, 3, k]) for k, name in enumerate(runtime.engine.slots)
    }
    profiles = _profiles(categories)
    exposures = clicks = 0
    by_source_n: dict[str, int] = {}
    by_source_c: dict[str, int] = {}
    for number, events in enumerate(sim.sessions(sessions), 1):
        visitor = next(v for v in sim.users if v.user_id == events[0].user_id)
        pages = _split_pages(events)
        for page_events in pages:
            runtime.ingest(page_events)
            view = next((e for e in page_events if type(e) is PageView), None)
            if view is None:
                continue
            decisions = runtime.engine.decide(
                view.user_id, view.session_id, list(runtime.engine.slots), {"page": view.page}
            )
            sim.clock_ms += 500.0
            reaction: list[AnyEvent] = [
                _event(
                    sim, view, Exposure, slot=d.slot, variant=d.variant, decision_id=d.decision_id
                )
                for d in decisions
            ]
            clicked = False
            for d in decisions:
                p_click = _slot_click_probability(sim, visitor, d.slot, d.variant, categories)
                rng = click_rngs[d.slot]
                if rng.random() < p_click:
                    sim.clock_ms += float(rng.gamma(2.0, 900.0))
                    kind = "cta" if d.slot == "cta" else "card"
                    reaction.append(
                        _event(
                            sim,
                            view,
                            Click,
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
        runtime.learn(now_ms=sim.clock_ms)
        if progress is not None:
            progress(1)
        if number % every == 0 or number == sessions:
            result.snapshots.append(
                Snapshot(
                    sessions=number,
                    exposures=exposures,
                    clicks=clicks,
                    ctr_by_source={
                        k: by_source_c.get(k, 0) / n for k, n in by_source_n.items() if n
                    },
                    probabilities={
                        name: served.probabilities(attrs) for name, attrs in profiles.items()
                    },
                )
            )
    runtime.learn(now_ms=sim.clock_ms + 10 * 60 * 1000)
    result.decisions_by_source = by_source_n
    result.clicks_by_source = by_source_c
    return result


def _split_pages(events: list[AnyEvent]) -> list[list[AnyEvent]]:
    pages: list[list[AnyEvent]] = [[]]
    for e in events:
        if type(e) is PageView and pages[-1]:
            pages.append([])
        pages[-1].append(e)
    return pages


_counter = iter(range(10**12))


def _event(sim: Simulator, view: PageView, kind: type, **fields) -> AnyEvent:
    sim.clock_ms += 1.0
    return kind(
        event_id=f"sim-{next(_counter)}-{int(sim.clock_ms)}",
        user_id=view.user_id,
        session_id=view.session_id,
        ts=sim.clock_ms,
        page=view.page,
        page_category=view.page_category,
        **fields,
    )


# The simulated truth behind the demo's experiments: what each variant does to clicks.
HERO_CLICK = {"top_story": 0.02, "for_you": 0.03, "skim": 0.025}
CTA_CLICK = {"newsletter": 0.015, "subscribe_offer": 0.05}


def _slot_click_probability(
    sim: Simulator, visitor, slot: str, variant: str, categories: tuple[str, ...]
) -> float:
    if slot == "rail":
        return _click_probability(sim, visitor, variant, categories)
    if slot == "hero":
        return HERO_CLICK.get(variant, 0.02)
    if slot == "cta":
        return CTA_CLICK.get(variant, 0.015)
    return 0.0


def _click_probability(sim: Simulator, visitor, variant: str, categories: tuple[str, ...]) -> float:
    """A category rail is clicked by its fans; generic rails get the visitor's average."""
    if variant in categories:
        return sim.click_probability(visitor, categories.index(variant))
    average = float(np.mean([sim.click_probability(visitor, k) for k in range(len(categories))]))
    return average * (0.8 if variant == "short_reads" else 1.0)
