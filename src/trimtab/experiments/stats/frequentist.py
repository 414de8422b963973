"""Fixed-horizon frequentist tests: Welch's t-test on absolute or relative effects.

The statistic is ``t = Δ̂ / se(Δ̂)`` with Welch–Satterthwaite degrees of freedom

    ν = (σ_b²/n_b + σ_a²/n_a)² / (σ_b⁴/(n_b²(n_b-1)) + σ_a⁴/(n_a²(n_a-1)))

and the ``1 - α`` interval is ``Δ̂ ± t_{ν, 1-α/2} se``. One-sided variants test
``treatment > control`` (``alternative="greater"``) or ``<`` (``"less"``) with a half-open
interval. Ratio, CUPED and quantile statistics go through the same test with their
delta-method / adjusted variances.

>>> from trimtab.experiments.stats.statistics import MeanStat
>>> a = MeanStat(n=3407, sum=1396.87, sum_squares=52377.9767)
>>> b = MeanStat(n=3461, sum=2422.7, sum_squares=134698.29)
>>> r = ttest(a, b, relative=False)
>>> round(r.expected, 2), round(r.p_value, 5)
(0.29, 0.02016)
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from scipy.special import stdtr, stdtrit

from .cuped import with_theta
from .moments import EffectMoments, Num, effect_moments
from .statistics import Stat

Alternative = Literal["two-sided", "greater", "less"]


class FrequentistResult(msgspec.Struct, frozen=True):
    """An effect with its interval and p-value.

    ``expected`` is the point estimate (absolute or relative), ``stddev`` its standard error,
    ``ci`` the interval (``±inf`` on the open side of a one-sided test). ``error`` names why
    no test could be run (the other fields are then neutral: 0, (0, 0), p = 1);
    ``p_value_error`` says why only the p-value is missing. ``dof`` is ``inf`` for normal-based
    (sequential) intervals; msgspec's JSON encoder writes ``inf`` as ``null``.
    """

    expected: float
    ci: tuple[float, float]
    p_value: float | None
    stddev: float
    dof: float = math.inf
    relative: bool = True
    sequential: bool = False
    alpha: float = 0.05
    error: str | None = None
    p_value_error: str | None = None

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return self.error is None and (self.ci[0] > 0 or self.ci[1] < 0)


def neutral_result(
    error: str | None, *, relative: bool, sequential: bool, alpha: float
) -> FrequentistResult:
    """The uninformative result reported when a test cannot run."""
    return FrequentistResult(
        expected=0.0,
        ci=(0.0, 0.0),
        p_value=1.0,
        stddev=0.0,
        dof=math.inf,
        relative=relative,
        sequential=sequential,
        alpha=alpha,
        error=error,
    )


def welch_dof(var_a: Num, n_a: Num, var_b: Num, n_b: Num) -> Num:
    """Welch–Satterthwaite degrees of freedom (scalars or arrays)."""
    va = var_a / n_a
    vb = var_b / n_b
    return (va + vb) ** 2 / (vb**2 / (n_b - 1) + va**2 / (n_a - 1))


def _dof(a: Stat, b: Stat) -> float:
    if a.n <= 1 or b.n <= 1 or a.variance == 0 or b.variance == 0:
        return 1.0
    return float(welch_dof(a.variance, a.n, b.variance, b.n))


def prepare(a: Stat, b: Stat, relative: bool) -> tuple[Stat, Stat, EffectMoments]:
    """θ-adjust a pair and compute its effect moments (shared by every test)."""
    a, b = with_theta(a, b)
    return a, b, effect_moments(a, b, relative)


def ttest(
    a: Stat,
    b: Stat,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> FrequentistResult:
    """Welch t-test of ``b`` (treatment) against ``a`` (baseline)."""
    a, b, m = prepare(a, b, relative)
    if m.error is not None:
        return neutral_result(m.error, relative=relative, sequential=False, alpha=alpha)
    dof = _dof(a, b)
    z = m.estimate / m.stddev if m.stddev else 0.0
    if alternative == "two-sided":
        half = float(stdtrit(dof, 1.0 - alpha / 2)) * m.stddev
        ci = (m.estimate - half, m.estimate + half)
        p = 2.0 * float(stdtr(dof, -abs(z)))
    elif alternative == "greater":
        half = float(stdtrit(dof, 1.0 - alpha)) * m.stddev
        ci = (m.estimate - half, math.inf)
        p = float(stdtr(dof, -z))
    elif alternative == "less":
        half = float(stdtrit(dof, 1.0 - alpha)) * m.stddev
        ci = (-math.inf, m.estimate + half)
        p = float(stdtr(dof, z))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return FrequentistResult(
        expected=m.estimate,
        ci=ci,
        p_value=p,
        stddev=m.stddev,
        dof=dof,
        relative=relative,
        alpha=alpha,
    )


def two_sided_p_values(
    estimate: npt.NDArray[np.float64], stddev: npt.NDArray[np.float64], dof: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Vectorised two-sided Welch p-values."""
    p: npt.NDArray[np.float64] = 2.0 * stdtr(dof, -np.abs(estimate / stddev))  # scipy: untyped
    return p
