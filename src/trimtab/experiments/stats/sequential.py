"""Sequential testing: always-valid confidence intervals you may peek at after every visitor.

GrowthBook's approach (Howard, Ramdas, McAuliffe & Sekhon 2021, asymptotic confidence
sequences): a normal-mixture boundary whose mixing variance ``ρ²`` is tuned so the interval is
tightest when the total sample size reaches the tuning parameter ``N*`` (a guess of the final
``n``). With ``n = n_a + n_b``, standard error ``se`` and ``k = nρ²``:

    ρ² = (-2 ln α + ln(1 - 2 ln α)) / N*
    half-width = se · sqrt(2 (k + 1) / k · ln(sqrt(k + 1) / α))                  (two-sided)
    half-width = se · sqrt(2 (k + 1) / k · ln(1 + sqrt(k + 1) / (2α)))           (one-sided,
                                                                    with 2α in place of α in ρ)

The interval is valid simultaneously over all ``n``, so stopping as soon as it excludes zero
keeps the false-positive rate below ``α``. The two-sided p-value is the inverse e-value of the
mixture martingale, ``min(1, sqrt(k + 1) exp(-k z² / (2 (k + 1))))`` with ``z = Δ̂/se``:
``p < α`` exactly when the interval excludes 0. The one-sided p-value is the ``α`` at which the
interval's finite bound touches 0, reported within ``[1e-5, 0.4999]``. By default it is found
the way GrowthBook finds it — a bisection on ``α`` that stops once the bound is within 1e-6 of
0 — so reports show GrowthBook's numbers (``p_value="search"``); ``p_value="exact"`` gives the
closed-form root instead (they differ in the 4th decimal at most).

>>> from trimtab.experiments.stats.statistics import ProportionStat
>>> r = sequential_ttest(ProportionStat(3000, 1396), ProportionStat(3461, 2422))
>>> [round(x, 3) for x in r.ci]
[0.401, 0.607]
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from .frequentist import Alternative, FrequentistResult, neutral_result, prepare
from .moments import Num
from .statistics import Stat

DEFAULT_TUNING = 5000
ALPHA_TOO_LARGE_ONE_SIDED = "ALPHA_GREATER_THAN_0.5_FOR_SEQUENTIAL_ONE_SIDED_TEST"
ONE_SIDED_P_RANGE = (1e-5, 0.4999)


def sequential_rho(alpha: float, tuning: float, two_sided: bool = True) -> float:
    """Mixing standard deviation ``ρ`` that makes the boundary tightest at ``n = tuning``."""
    a = alpha if two_sided else 2.0 * alpha
    return math.sqrt((-2.0 * math.log(a) + math.log(-2.0 * math.log(a) + 1.0)) / tuning)


def halfwidth_two_sided(stddev: Num, n: Num, rho: float, alpha: float) -> Num:
    """Half-width of the two-sided confidence sequence (scalars or arrays)."""
    k = n * rho * rho
    half: Num = stddev * np.sqrt(2.0 * (k + 1.0) / k * np.log(np.sqrt(k + 1.0) / alpha))
    return half


def halfwidth_one_sided(stddev: Num, n: Num, rho: float, alpha: float) -> Num:
    """Half-width of the one-sided confidence sequence (scalars or arrays)."""
    k = n * rho * rho
    half: Num = stddev * np.sqrt(2.0 * (k + 1.0) / k * np.log1p(np.sqrt(k + 1.0) / (2.0 * alpha)))
    return half


def p_value_two_sided(z: Num, n: Num, rho: float) -> Num:
    """``min(1, 1/e)`` for the mixture e-value at ``z = Δ̂/se`` (scalars or arrays)."""
    k = n * rho * rho
    p: Num = np.minimum(1.0, np.sqrt(k + 1.0) * np.exp(-k * z * z / (2.0 * (k + 1.0))))
    return p


def p_value_one_sided(z: float, n: int, rho: float, greater: bool) -> float:
    """Smallest ``α`` at which the one-sided interval excludes 0, clipped like GrowthBook.

    Setting the bound to zero gives ``ln(1 + sqrt(k+1)/(2α)) = k z² / (2(k+1))``, so
    ``α = sqrt(k + 1) / (2 (exp(k z² / (2(k+1))) - 1))``. If the estimate lies on the wrong
    side of zero no ``α`` works and the upper clip is returned.
    """
    lo, hi = ONE_SIDED_P_RANGE
    if (z <= 0) if greater else (z >= 0):
        return hi
    k = n * rho * rho
    exponent = k * z * z / (2.0 * (k + 1.0))
    if exponent > 700.0:
        return lo
    alpha = math.sqrt(k + 1.0) / (2.0 * math.expm1(exponent))
    return min(max(alpha, lo), hi)


NOT_CONVERGED = "NUMERICAL_PVALUE_NOT_CONVERGED"
SEARCH_TOLERANCE = 1e-6
SEARCH_STEPS = 100


def p_value_one_sided_search(
    estimate: float, stddev: float, n: int, rho: float, greater: bool
) -> tuple[float | None, str | None]:
    """The one-sided p-value by bisection on ``α``, as GrowthBook computes it.

    ``ρ`` stays fixed while ``α`` moves (so only the interval's width changes). The bracket
    is ``[1e-5, 0.4999]``: if the bound already excludes 0 at the small end, or still includes
    it at the large end, that end is the answer. Otherwise bisect until the bound is within
    ``SEARCH_TOLERANCE`` of 0; the answer is the midpoint of the bracket *after* that last
    step (GrowthBook's convention). The tolerance is absolute, so with a small standard error
    the answer can sit a few per cent from the exact root (always inside the final bracket,
    see :func:`bisect_one_sided`). Returns ``(p, None)`` or ``(None, NOT_CONVERGED)``.
    """
    p, _, _, converged = bisect_one_sided(estimate, stddev, n, rho, greater)
    return (p, None) if converged else (None, NOT_CONVERGED)


def bisect_one_sided(
    estimate: float, stddev: float, n: int, rho: float, greater: bool
) -> tuple[float, float, float, bool]:
    """GrowthBook's search: ``(reported α, final bracket low, high, converged)``."""
    lo, hi = ONE_SIDED_P_RANGE

    def bound(alpha: float) -> float:
        half = float(halfwidth_one_sided(stddev, n, rho, alpha))
        return estimate - half if greater else estimate + half

    # a larger α narrows the interval: the lower bound rises, the upper bound falls
    if (bound(lo) > 0) if greater else (bound(lo) < 0):
        return lo, lo, lo, True
    if (bound(hi) < 0) if greater else (bound(hi) > 0):
        return hi, hi, hi, True
    alpha = 0.5 * (lo + hi)
    for _ in range(SEARCH_STEPS):
        gap = bound(alpha)
        if (gap < 0) if greater else (gap > 0):
            lo = alpha
        else:
            hi = alpha
        alpha = 0.5 * (lo + hi)
        if abs(gap) < SEARCH_TOLERANCE:
            return alpha, lo, hi, True
    return alpha, lo, hi, False


def sequential_ttest(
    a: Stat,
    b: Stat,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    tuning: float = DEFAULT_TUNING,
    alternative: Alternative = "two-sided",
    rho: float | None = None,
    p_value: str = "search",
) -> FrequentistResult:
    """Always-valid test of ``b`` against ``a``; ``tuning`` is the expected final total ``n``."""
    two_sided = alternative == "two-sided"
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"unknown alternative {alternative!r}")
    a, b, m = prepare(a, b, relative)
    if m.error is not None:
        return neutral_result(m.error, relative=relative, sequential=True, alpha=alpha)
    if not two_sided and alpha >= 0.5:
        result = neutral_result(None, relative=relative, sequential=True, alpha=alpha)
        return msgspec.structs.replace(result, p_value_error=ALPHA_TOO_LARGE_ONE_SIDED)
    r = rho if rho is not None else sequential_rho(alpha, tuning, two_sided)
    n = a.n + b.n
    z = m.estimate / m.stddev
    p: float | None
    p_error: str | None
    if two_sided:
        half = float(halfwidth_two_sided(m.stddev, n, r, alpha))
        ci = (m.estimate - half, m.estimate + half)
        p, p_error = float(p_value_two_sided(z, n, r)), None
    else:
        half = float(halfwidth_one_sided(m.stddev, n, r, alpha))
        greater = alternative == "greater"
        ci = (m.estimate - half, math.inf) if greater else (-math.inf, m.estimate + half)
        if p_value == "exact":
            p, p_error = p_value_one_sided(z, n, r, greater), None
        elif p_value == "search":
            p, p_error = p_value_one_sided_search(m.estimate, m.stddev, n, r, greater)
        else:
            raise ValueError(f"p_value must be 'search' or 'exact', not {p_value!r}")
    return FrequentistResult(
        expected=m.estimate,
        ci=ci,
        p_value=p,
        p_value_error=p_error,
        stddev=m.stddev,
        dof=math.inf,
        relative=relative,
        sequential=True,
        alpha=alpha,
    )
