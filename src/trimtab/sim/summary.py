"""What a simulation says about a bandit: its click rate against the rules and the default.

One run (a seed) gives each group's click rate with a Wilson interval; several runs give the
mean over seeds with a Student-t interval, the spread between seeds included — a figure that
holds for one seed only is not a finding. The two questions a bandit must answer:

- does it click at least as well as the hand rules on the same kind of readers
  (``policy − rules`` ≥ 0)?
- does it beat the non-personalised default by 20 % or more (``policy / default`` ≥ 1.2)?

Each can be asked of the observed clicks or, with ``expected=True``, of the simulator's click
probabilities of the very same decisions: a simulation knows what each shown rail was worth,
so the expected click rate answers the same question without the coin flips' noise (at 5,000
decisions a side, a run's observed ``policy − rules`` has a standard error of about 0.6
points from the coin flips alone, more than the spread of the expected one between seeds).

>>> interval = wilson(30, 200)
>>> round(interval[0], 3), round(interval[1], 3)
(0.107, 0.206)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trimtab.sim.drive import SimulationResult

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def mean_interval(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean with its Student-t interval over independent runs (NaN interval for one run)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if len(x) < 2:
        return (mean, math.nan, math.nan)
    half = float(stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return (mean, mean - half, mean + half)


@dataclass(frozen=True)
class GroupRate:
    """A group's click rate: pooled over runs, and its mean over runs with an interval."""

    group: str
    decisions: int
    clicks: int
    per_run: tuple[float, ...]
    mean: float
    lower: float
    upper: float


def group_rates(runs: Sequence[SimulationResult], expected: bool = False) -> dict[str, GroupRate]:
    """Each group's click rate; one run: Wilson interval; several: t interval over runs.

    ``expected``: the rate of the simulator's click probabilities instead of the observed
    clicks (``clicks`` then holds their sum, rounded).
    """
    out: dict[str, GroupRate] = {}
    for group in ("policy", "rules", "default", "other"):
        per_run = [run.expected_ctr(group) if expected else run.ctr(group) for run in runs]
        decisions = sum(n for _, _, n in per_run)
        if not decisions:
            continue
        clicks = round(sum(c for _, c, _ in per_run))
        rates = tuple(rate for rate, _, _ in per_run)
        if len(runs) == 1:
            lower, upper = wilson(clicks, decisions)
            mean = clicks / decisions
        else:
            mean, lower, upper = mean_interval(rates)
        out[group] = GroupRate(group, decisions, clicks, rates, mean, lower, upper)
    return out


@dataclass(frozen=True)
class Verdict:
    """One claim about the bandit with its estimate, interval and whether it holds."""

    claim: str
    estimate: float
    lower: float
    upper: float
    holds: bool


def verdicts(
    runs: Sequence[SimulationResult], min_lift: float = 1.2, expected: bool = False
) -> list[Verdict]:
    """Bandit ≥ rules and bandit ≥ ``min_lift`` × default, per run then over runs.

    A claim holds when its estimate meets the bar (the interval says how sure that is). With
    one run the intervals come from the normal approximation of the two rates (conservative
    for ``expected`` rates, which vary less than clicks).
    """
    out: list[Verdict] = []
    rates = group_rates(runs, expected)
    if "policy" not in rates:
        return out
    pol = rates["policy"]
    for other, claim, bar, kind in (
        ("rules", "bandit − rules (click-rate points)", 0.0, "difference"),
        ("default", f"bandit / default (must be ≥ {min_lift:g})", min_lift, "ratio"),
    ):
        if other not in rates:
            continue
        base = rates[other]
        if len(runs) > 1:
            pairs = zip(pol.per_run, base.per_run, strict=True)
            values = [a - b if kind == "difference" else a / b for a, b in pairs if b > 0]
            estimate, lower, upper = mean_interval(values)
        else:
            p, q = pol.clicks / pol.decisions, base.clicks / base.decisions
            se_p = p * (1 - p) / pol.decisions
            se_q = q * (1 - q) / base.decisions
            if kind == "difference":
                estimate, se = p - q, math.sqrt(se_p + se_q)
                lower, upper = estimate - Z95 * se, estimate + Z95 * se
            else:  # log-ratio interval
                estimate = p / q if q > 0 else math.inf
                se = math.sqrt(se_p / p**2 + se_q / q**2) if p > 0 and q > 0 else math.inf
                lower = estimate * math.exp(-Z95 * se)
                upper = estimate * math.exp(Z95 * se)
        out.append(Verdict(claim, estimate, lower, upper, estimate >= bar))
    return out


def arm_shares(runs: Sequence[SimulationResult], after: float = 0.5) -> dict[str, dict[str, float]]:
    """Per reader type, the bandit's picks in the second part of the runs, pooled."""
    counts: dict[str, dict[str, float]] = {}
    for run in runs:
        start = after * run.sessions
        for s in run.shown:
            if s.group == "policy" and s.session > start:
                per = counts.setdefault(s.reader, {})
                per[s.variant] = per.get(s.variant, 0) + 1
    out = {}
    for reader, per in sorted(counts.items()):
        total = sum(per.values())
        out[reader] = {v: n / total for v, n in sorted(per.items(), key=lambda kv: -kv[1])}
    return out
