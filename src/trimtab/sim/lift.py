"""The lift report: what in-session adaptation is worth against the usual alternatives.

On the same simulated population (same seed: the same readers, visiting in the same order,
from the same simulated start), one slot is served four ways, each run on its own through the
real pipeline (only that slot is decided and shown, the others play no part):

- **in-session** (trimtab): the config's bandit for every reader, re-choosing on each page
  view with what the reader did so far, learning from each reward as its window closes;
- **hourly batch**: the same bandit, choosing once per session (an assignment, as
  GrowthBook's and Statsig's bandits make) and reweighted once an hour from the rewards of the
  hour before;
- **static default**: the slot's default for everyone;
- **hand rules**: the config's other rules on the slot, without the bandit.

The figure is clicks on the slot per 1,000 sessions, with a 95 % interval over seeds (for one
seed, over its sessions).

Next to each, an **off-policy estimate** from one more run that logged a uniformly random
choice on the slot (exact propensity ``1/K``): the static default and the hand rules by doubly
robust estimation on the logged rounds (rewards attributed by :mod:`trimtab.attribution`, the
learner's own function), the two learning bandits by replay (Li et al. 2011): the bandit runs
through the logged rounds in time order, a round counts when its pick equals the logged one,
and it learns only from those, on the same schedule as live. That log holds ``K`` times the
sessions (and readers) of a live run, so the replayed learner sees about as many rounds as the
live one; sessions start that many times as often, so each reader's visits are as far apart
as in a live run (what a reader's interest history looks like depends on it). An estimate
that covers the on-policy truth says ``trimtab ope`` can be trusted to compare policies
without running them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from trimtab.bandits import logeval
from trimtab.bandits.serving import ServedPolicy, policy_specs
from trimtab.config import SiteConfig, parse_config
from trimtab.runtime import Runtime
from trimtab.sim.drive import SimulationResult, simulate
from trimtab.sim.summary import Z95, mean_interval

STRATEGIES = ("in-session", "hourly batch", "static default", "hand rules")
LABELS = {
    "in-session": "trimtab: in-session bandit",
    "hourly batch": "same bandit, hourly batch",
    "static default": "static default",
    "hand rules": "hand rules",
}
HOUR_S = 3600.0


def _raw(site: SiteConfig) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(site, builtin_types=(), str_keys=True)
    return raw


def strategy_configs(site: SiteConfig, slot: str) -> dict[str, SiteConfig]:
    """The site config rewritten for each strategy, plus ``"uniform log"`` (module doc)."""
    raw = _raw(site)
    rules = raw["slots"][slot]["rules"]
    policy_rules = [r for r in rules if r.get("policy") is not None]
    if not policy_rules:
        raise ValueError(f"slot {slot!r} has no bandit policy to compare")
    bandit = copy.deepcopy(policy_rules[0])
    for key in ("coverage", "condition"):
        bandit.pop(key, None)
    others = [r for r in rules if r.get("policy") is None]
    batch = copy.deepcopy(bandit)
    batch["policy"].update(choose_per="session", learn_every_s=HOUR_S)
    uniform = copy.deepcopy(bandit)
    uniform["policy"].update(
        type="epsilon_greedy", params={"epsilon": 1.0}, min_default_share=0.0, guardrail=None
    )
    variants = {
        "in-session": [bandit],
        "hourly batch": [batch],
        "static default": [],
        "hand rules": others,
        "uniform log": [uniform],
    }
    out = {}
    for name, slot_rules in variants.items():
        data = copy.deepcopy(raw)
        data.pop("source", None)
        data["slots"][slot]["rules"] = slot_rules
        out[name] = parse_config(_strip_defaults(data), f"{site.source or 'config'} ({name})")
    return out


def _strip_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Rules as written (the converted form spells out every field, hashAttribute included)."""
    for slot in data["slots"].values():
        for i, rule in enumerate(slot["rules"]):
            slot["rules"][i] = {k: v for k, v in rule.items() if v is not None}
    return data


@dataclass
class SeedResult:
    """One seed: each strategy's on-policy run and off-policy estimate."""

    seed: int
    truth: dict[str, float] = field(default_factory=dict)  # clicks / 1,000 sessions
    truth_se: dict[str, float] = field(default_factory=dict)  # its standard error (sessions)
    ctr: dict[str, float] = field(default_factory=dict)  # clicks per decision
    estimate: dict[str, float] = field(default_factory=dict)  # clicks / 1,000 sessions
    estimate_se: dict[str, float] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=dict)  # rounds behind each estimate


def replay(
    served: ServedPolicy, rounds: Sequence[logeval.Round], arms: Sequence[str]
) -> list[float]:
    """Li et al.'s replay of a learning policy over uniformly logged rounds (time order).

    The policy picks for each round's logged attributes; when its pick equals the logged one
    the round counts, and it learns from it once the round's window has closed on the logged
    clock (held for the next batch if the policy learns in batches). Returns the rewards of
    the rounds that counted.
    """
    window = served.window_ms
    due: list[tuple[float, str, float]] = []
    counted: list[float] = []
    clock = [0.0]
    served.clock = lambda: clock[0]
    for i, r in enumerate(rounds):
        clock[0] = r.time
        while due and due[0][0] <= r.time:
            _, decision_id, reward = due.pop(0)
            served.credit(decision_id, reward)
        if i % 256 == 0:
            served.expire(now_ms=r.time)  # batches at their boundaries; old choices forgotten
        choice = served.choose_for(r.features, list(arms), r.decision_id)
        if choice.arm == r.variant:
            counted.append(r.reward)
            due.append((r.time + window, r.decision_id, r.reward))
    return counted


def run_seed(
    site: SiteConfig,
    configs: dict[str, SiteConfig],
    slot: str,
    seed: int,
    sessions: int,
    users: int,
    data_dir: Path,
    advance: Callable[[int], None] | None = None,
    start_ms: float | None = None,
) -> SeedResult:
    """Every strategy on-policy, then the uniform log and the off-policy estimates, all with
    their simulated traffic starting at ``start_ms`` (default: the reference start)."""
    out = SeedResult(seed)
    for name in STRATEGIES:
        runtime = Runtime(configs[name], data_dir / f"seed-{seed}" / name.replace(" ", "-"))
        try:
            run = simulate(
                runtime,
                sessions,
                seed,
                slot,
                every=sessions,
                progress=advance,
                users=users,
                start_ms=start_ms,
            )
        finally:
            runtime.close()
        per_session = np.zeros(run.sessions)
        for shown in run.shown:
            per_session[shown.session - 1] += shown.clicked
        out.truth[name] = 1000.0 * float(per_session.mean())
        out.truth_se[name] = 1000.0 * float(per_session.std(ddof=1) / math.sqrt(run.sessions))
        out.ctr[name] = sum(s.clicked for s in run.shown) / max(len(run.shown), 1)
    arms = list(site.slots[slot].variants)
    factor = len(arms)
    log_dir = data_dir / f"seed-{seed}" / "uniform-log"
    runtime = Runtime(configs["uniform log"], log_dir)
    try:
        logged: SimulationResult = simulate(
            runtime, sessions * factor, seed, slot, every=sessions * factor, progress=advance,
            users=users * factor, slots=[slot], session_gap_ms=60_000.0 / factor,
            start_ms=start_ms,
        )  # fmt: skip
    finally:
        runtime.close()
    decisions_per_session = len(logged.shown) / logged.sessions  # of the slot
    spec = next(s for name, _, s in policy_specs(site.slots) if name == slot)
    rounds = logeval.load_rounds(log_dir, slot, spec.reward)
    default = site.slots[slot].default
    targets = {
        "static default": logeval.always(default),
        "hand rules": logeval.rules(configs["hand rules"], slot),
    }
    for name, target in targets.items():
        dr = logeval.evaluate(rounds, arms, target)["DR"]
        out.estimate[name] = 1000.0 * decisions_per_session * dr.value
        out.estimate_se[name] = 1000.0 * decisions_per_session * dr.std_err
        out.rounds[name] = len(rounds)
    for name in ("in-session", "hourly batch"):
        (bandit,) = [s for n, d, s in policy_specs(configs[name].slots) if n == slot]
        served = ServedPolicy(bandit, default, slot, seed=seed)
        counted = np.asarray(replay(served, rounds, arms))
        rate = float(counted.mean()) if len(counted) else math.nan
        out.estimate[name] = 1000.0 * decisions_per_session * rate
        out.estimate_se[name] = (
            1000.0 * decisions_per_session * math.sqrt(rate * (1 - rate) / len(counted))
        )
        out.rounds[name] = len(counted)
    return out


@dataclass(frozen=True)
class LiftRow:
    strategy: str
    truth: tuple[float, float, float]  # mean, lower, upper over seeds
    ctr: float
    estimate: tuple[float, float, float]
    rounds: int
    difference: tuple[float, float, float]  # estimate − truth, paired by seed

    @property
    def inside(self) -> bool:
        """The off-policy estimate lies within the on-policy truth's 95 % interval."""
        return self.truth[1] <= self.estimate[0] <= self.truth[2]

    @property
    def agrees(self) -> bool:
        """The 95 % interval of estimate − truth (paired by seed, both noises counted)
        contains 0: the data cannot tell the estimate from the truth."""
        return self.difference[1] <= 0.0 <= self.difference[2]


def _interval(values: list[float], errors: list[float]) -> tuple[float, float, float]:
    """Over several seeds: the t interval of their means; one seed: its own normal interval."""
    if len(values) > 1:
        return mean_interval(values)
    return (values[0], values[0] - Z95 * errors[0], values[0] + Z95 * errors[0])


def lift_rows(results: Sequence[SeedResult]) -> list[LiftRow]:
    rows = []
    for name in STRATEGIES:
        truth = _interval([r.truth[name] for r in results], [r.truth_se[name] for r in results])
        estimate = _interval(
            [r.estimate[name] for r in results], [r.estimate_se[name] for r in results]
        )
        difference = _interval(
            [r.estimate[name] - r.truth[name] for r in results],
            [math.hypot(r.estimate_se[name], r.truth_se[name]) for r in results],
        )
        ctr = sum(r.ctr[name] for r in results) / len(results)
        rounds = sum(r.rounds[name] for r in results)
        rows.append(LiftRow(name, truth, ctr, estimate, rounds, difference))
    return rows


def _fmt(interval: tuple[float, float, float]) -> str:
    mean, lower, upper = interval
    if not math.isfinite(lower):
        return f"{mean:.1f}"
    return f"{mean:.1f} [{lower:.1f}, {upper:.1f}]"


def run_and_print(
    site: SiteConfig,
    sessions: int,
    users: int,
    slot: str,
    seed: int,
    seeds: int,
    data_dir: Path,
    console: Console,
    starts: Sequence[float] | None = None,
) -> list[LiftRow]:
    """`trimtab simulate --compare`: run every seed and print the lift table (seed ``k``'s
    traffic starting at ``starts[k]``, default: the reference start)."""
    configs = strategy_configs(site, slot)
    factor = len(site.slots[slot].variants)
    per_seed = sessions * (len(STRATEGIES) + factor)
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(
            f"{seeds} seed(s) × (4 strategies + a {factor}× uniform log)", total=seeds * per_seed
        )
        for k in range(seeds):
            results.append(
                run_seed(
                    site,
                    configs,
                    slot,
                    seed + k,
                    sessions,
                    users,
                    data_dir,
                    advance=lambda n: progress.advance(task, n),
                    start_ms=None if starts is None else starts[k],
                )
            )
    rows = lift_rows(results)
    table = Table(
        title=f"'{slot}' clicks per 1,000 sessions: {seeds} seed(s) × {sessions:,} sessions "
        f"of {users:,} readers",
        caption="truth: on-policy runs (mean, 95 % CI); estimate: off-policy from a "
        f"uniformly random log {factor}× as long (DR for fixed policies, replay for bandits); "
        "agree: the interval of estimate − truth, paired by seed, contains 0",
    )
    for column in (
        "strategy", "truth", "CTR", "off-policy estimate", "rounds", "in truth's CI",
        "estimate − truth", "agree",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in rows:
        table.add_row(
            LABELS[row.strategy],
            _fmt(row.truth),
            f"{100 * row.ctr:.1f}%",
            _fmt(row.estimate),
            f"{row.rounds:,}",
            "yes" if row.inside else "no",
            _fmt(row.difference),
            "[green]yes[/]" if row.agrees else "[red]no[/]",
        )
    console.print(table)
    base = {row.strategy: row.truth[0] for row in rows}
    lifts = ", ".join(
        f"{base['in-session'] / base[name]:.2f}× {name}"
        for name in ("hourly batch", "static default", "hand rules")
        if base[name] > 0
    )
    console.print(f"in-session bandit: {lifts}")
    for r in results:
        console.print(
            f"[dim]seed {r.seed}: "
            + ", ".join(f"{n} {r.truth[n]:.1f} (est. {r.estimate[n]:.1f})" for n in STRATEGIES)
            + "[/]"
        )
    return rows
