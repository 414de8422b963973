"""CUPED: variance reduction with pre-exposure behaviour.

Regress the metric on its own pre-exposure value, pooled over both arms, and compare the
residual means ``ȳ - θ x̄``. Because ``x`` was measured before exposure it is independent of
the assignment, so the adjusted difference stays unbiased while its variance shrinks by the
factor ``1 - ρ²`` (``ρ`` the pre/post correlation):

    θ = cov(y, x) / var(x)        (both arms pooled, so θ is the same in both)

For ratio metrics the covariate is the pre-exposure ratio; ``θ`` minimises the delta-method
variance of the adjusted ratio, ``θ = cov(R, R_pre) / var(R_pre)`` summed over the arms.

>>> from trimtab.experiments.stats.statistics import CupedStat
>>> a = CupedStat.from_values([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0])
>>> b = CupedStat.from_values([2.0, 3.0, 5.0, 5.0], [1.0, 2.0, 4.0, 4.0])
>>> round(pooled_theta(a, b), 4)  # the OLS slope of post on pre, both arms pooled
0.8548
"""

from __future__ import annotations

import math

import msgspec

from .statistics import (
    CupedRatioStat,
    CupedStat,
    MeanStat,
    ProportionStat,
    Stat,
    covariance,
)

# Below this |θ| a ratio adjustment is numerically meaningless: fall back to the plain ratio.
_RATIO_THETA_FLOOR = 1e-8


def _pooled(
    a: MeanStat | ProportionStat, b: MeanStat | ProportionStat, n: int
) -> MeanStat | ProportionStat:
    if isinstance(a, ProportionStat) and isinstance(b, ProportionStat):
        return ProportionStat(n=n, sum=a.sum + b.sum)
    if isinstance(a, ProportionStat | MeanStat) and isinstance(b, ProportionStat | MeanStat):
        if type(a) is not type(b):
            raise TypeError("a metric must be the same kind of statistic in every variant")
        return MeanStat(n=n, sum=a.sum + b.sum, sum_squares=a.sum_squares + b.sum_squares)
    raise TypeError(f"cannot pool {type(a).__name__} with {type(b).__name__}")


def pooled_theta(a: CupedStat, b: CupedStat) -> float:
    """``cov(y, x) / var(x)`` over both arms; 0 when either pooled variance is 0."""
    n = a.n + b.n
    post = _pooled(a.post, b.post, n)
    pre = _pooled(a.pre, b.pre, n)
    if pre.variance == 0 or post.variance == 0:
        return 0.0
    return float(covariance(n, post, pre, a.sum_products + b.sum_products) / pre.variance)


def _ratio_parts(s: CupedRatioStat) -> tuple[float, float]:
    """Variance of the pre-ratio and its covariance with the post-ratio, at ``θ = 1``."""
    one = msgspec.structs.replace(s, theta=1.0)
    g = one.nabla
    lam = one.lambda_matrix
    var_pre = float(g[2:4] @ lam[2:4, 2:4] @ g[2:4])
    cov = float(g[2:4] @ lam[2:4, 0:2] @ g[0:2])
    return var_pre, cov


def pooled_ratio_theta(a: CupedRatioStat, b: CupedRatioStat) -> float:
    """The ``θ`` minimising the summed delta-method variance of both adjusted ratios."""
    var_a, cov_a = _ratio_parts(a)
    var_b, cov_b = _ratio_parts(b)
    if var_a + var_b == 0:
        return 0.0
    # At θ = 1 the pre-ratio gradient carries a minus sign, hence the leading minus.
    return -(cov_a + cov_b) / (var_a + var_b)


def with_theta(a: Stat, b: Stat) -> tuple[Stat, Stat]:
    """Set a pooled ``θ`` on a CUPED pair that has none; other pairs pass through.

    When the covariate carries no information (``θ = 0``, or a ratio with no pre-exposure
    denominator) the pair reverts to the plain post-exposure statistics, so the result is the
    unadjusted test.
    """
    if isinstance(a, CupedStat) and isinstance(b, CupedStat):
        if a.theta is not None and b.theta is not None:
            return a, b
        theta = pooled_theta(a, b)
        if theta == 0:
            return a.post, b.post
        return (
            msgspec.structs.replace(a, theta=theta),
            msgspec.structs.replace(b, theta=theta),
        )
    if isinstance(a, CupedRatioStat) and isinstance(b, CupedRatioStat):
        if a.theta is not None and b.theta is not None:
            return a, b
        if a.d_pre.sum == 0 or b.d_pre.sum == 0:
            # No pre-exposure denominator in an arm (every unit's first exposure is where the
            # denominator starts): there is no pre-period ratio to adjust with.
            return a.post_ratio(), b.post_ratio()
        theta = pooled_ratio_theta(a, b)
        if not math.isfinite(theta) or abs(theta) < _RATIO_THETA_FLOOR:
            return a.post_ratio(), b.post_ratio()
        return (
            msgspec.structs.replace(a, theta=theta),
            msgspec.structs.replace(b, theta=theta),
        )
    return a, b
