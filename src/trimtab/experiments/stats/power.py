"""Power, sample size and minimum detectable effect for two-arm tests (two-sided).

Means: Welch/Student t-test power from the noncentral t. With ``n_b = ratio · n_a``,
``ν = n_a + n_b - 2``, standardised effect ``d = Δ/σ`` and ``ñ = n_a n_b / (n_a + n_b)``:

    power = P(T'_{ν, d√ñ} > t_{ν, 1-α/2}) + P(T'_{ν, d√ñ} < -t_{ν, 1-α/2})

Proportions: the normal approximation on Cohen's arcsine effect size
``h = 2 asin √p_b - 2 asin √p_a`` (variance-stabilised, so no pooled-variance guess):

    power = Φ(h√ñ - z_{1-α/2}) + Φ(-h√ñ - z_{1-α/2})

Sample size and MDE invert these numerically. Sizes are per control arm and fractional;
round up.

>>> round(power_means(delta=0.2, sd=1.0, n_control=394), 3)
0.801
>>> round(sample_size_proportions(0.10, 0.12), 0)
3835.0
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy.optimize import brentq
from scipy.special import nctdtr, ndtr, ndtri, stdtrit

_MAX_N = 1e12


def _effective_n(n_control: float, ratio: float) -> float:
    if n_control <= 0 or ratio <= 0:
        raise ValueError("sample sizes and the allocation ratio must be positive")
    n_treatment = ratio * n_control
    return n_control * n_treatment / (n_control + n_treatment)


def power_means(
    delta: float, sd: float, n_control: float, *, alpha: float = 0.05, ratio: float = 1.0
) -> float:
    """Power of the two-sided t-test to detect a difference ``delta`` in means (unit sd ``sd``)."""
    if sd <= 0:
        raise ValueError("sd must be positive")
    df = n_control * (1.0 + ratio) - 2.0
    if df <= 0:
        raise ValueError("need more than two units in total")
    nc = (delta / sd) * math.sqrt(_effective_n(n_control, ratio))
    crit = float(stdtrit(df, 1.0 - alpha / 2))
    power = float(1.0 - nctdtr(df, nc, crit) + nctdtr(df, nc, -crit))
    if math.isnan(power):  # noncentrality far out in the tail: the normal limit is exact enough
        power = float(ndtr(abs(nc) - crit) + ndtr(-abs(nc) - crit))
    return power


def power_proportions(
    p_control: float,
    p_treatment: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    ratio: float = 1.0,
) -> float:
    """Power of the two-sided two-proportion test (arcsine normal approximation)."""
    h = cohens_h(p_control, p_treatment)
    shift = abs(h) * math.sqrt(_effective_n(n_control, ratio))
    z = float(ndtri(1.0 - alpha / 2))
    return float(ndtr(shift - z) + ndtr(-shift - z))


def cohens_h(p_control: float, p_treatment: float) -> float:
    """Arcsine effect size ``2 asin √p_b - 2 asin √p_a``."""
    for p in (p_control, p_treatment):
        if not 0.0 <= p <= 1.0:
            raise ValueError("proportions must lie in [0, 1]")
    return 2.0 * math.asin(math.sqrt(p_treatment)) - 2.0 * math.asin(math.sqrt(p_control))


def _solve_n(power_at: Callable[[float], float], target: float, n_min: float) -> float:
    if not 0.0 < target < 1.0:
        raise ValueError("power must lie in (0, 1)")
    if power_at(n_min) >= target:
        return n_min
    hi = max(2.0 * n_min, 16.0)
    while power_at(hi) < target:
        hi *= 4.0
        if hi > _MAX_N:
            raise ValueError("the effect is too small to detect with any realistic sample")
    return float(brentq(lambda n: power_at(n) - target, n_min, hi, xtol=1e-9, rtol=1e-12))


def sample_size_means(
    delta: float, sd: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> float:
    """Control-arm units needed to detect ``delta`` with the given power."""
    if delta == 0:
        raise ValueError("a zero effect cannot be detected")
    n_min = max(2.0, 4.0 / (1.0 + ratio))  # at least two degrees of freedom
    return _solve_n(lambda n: power_means(delta, sd, n, alpha=alpha, ratio=ratio), power, n_min)


def sample_size_proportions(
    p_control: float,
    p_treatment: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> float:
    """Control-arm units needed to detect ``p_control → p_treatment`` with the given power."""
    if cohens_h(p_control, p_treatment) == 0:
        raise ValueError("a zero effect cannot be detected")
    return _solve_n(
        lambda n: power_proportions(p_control, p_treatment, n, alpha=alpha, ratio=ratio),
        power,
        1e-6,
    )


def mde_means(
    sd: float, n_control: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> float:
    """Smallest absolute difference in means detectable with the given power."""
    if not 0.0 < power < 1.0:
        raise ValueError("power must lie in (0, 1)")
    hi = sd
    while power_means(hi, sd, n_control, alpha=alpha, ratio=ratio) < power:
        hi *= 2.0
    return float(
        brentq(
            lambda d: power_means(d, sd, n_control, alpha=alpha, ratio=ratio) - power,
            0.0,
            hi,
            xtol=1e-12 * sd,
            rtol=1e-12,
        )
    )


def mde_proportions(
    p_control: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> float:
    """Smallest absolute lift ``p_treatment - p_control > 0`` detectable with the given power.

    Divide by ``p_control`` for the relative MDE. Raises when even ``p_treatment = 1`` is not
    detectable.
    """
    if not 0.0 < power < 1.0:
        raise ValueError("power must lie in (0, 1)")

    def gap(p: float) -> float:
        return power_proportions(p_control, p, n_control, alpha=alpha, ratio=ratio) - power

    if gap(1.0) < 0:
        raise ValueError("no lift is detectable with this sample size")
    return float(brentq(gap, p_control, 1.0, xtol=1e-12, rtol=1e-12)) - p_control
