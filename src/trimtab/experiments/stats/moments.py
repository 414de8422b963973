"""The effect of a variant against the baseline, and its standard error.

Given two (θ-adjusted) statistics ``a`` (baseline) and ``b``, with unit means ``μ``, unit
variances ``σ²`` and sizes ``n``:

* absolute effect ``Δ = μ_b - μ_a`` with ``Var Δ = σ_b²/n_b + σ_a²/n_a``;
* relative effect ``Δ / μ̃_a`` (``μ̃_a`` the unadjusted baseline mean) with the delta-method
  variance of ``μ_b / μ_a``: ``σ_b²/(n_b μ_a²) + σ_a² μ_b²/(n_a μ_a⁴)``.

CUPED statistics use the same delta method on the adjusted means, where the baseline's
adjusted mean and its unadjusted denominator share the control-arm data (see
:func:`_relative_variance_cuped`).

Array inputs broadcast, which the A/A simulation uses to test thousands of paths at once.
"""

from __future__ import annotations

import math
from typing import TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from .statistics import CupedRatioStat, CupedStat, Stat

ZERO_NEGATIVE_VARIANCE = "ZERO_NEGATIVE_VARIANCE"
BASELINE_ZERO = "ZERO_NEGATIVE_BASELINE_VARIATION"
MIXED_STATISTICS = "MIXED_STATISTICS"

# the moment formulas take one statistic's numbers or, broadcast, thousands of paths' at once
Num = TypeVar("Num", float, npt.NDArray[np.float64])


class EffectMoments(msgspec.Struct, frozen=True):
    """Point estimate and standard error of an effect; ``error`` set when none exists."""

    estimate: float
    stddev: float
    n: int
    error: str | None = None


def absolute_variance(var_a: Num, n_a: Num, var_b: Num, n_b: Num) -> Num:
    """``σ_b²/n_b + σ_a²/n_a`` (scalars or arrays)."""
    return var_b / n_b + var_a / n_a


def relative_variance(mean_a: Num, var_a: Num, n_a: Num, mean_b: Num, var_b: Num, n_b: Num) -> Num:
    """Delta-method variance of ``μ_b/μ_a - 1`` for independent arms (scalars or arrays)."""
    return var_b / n_b / mean_a**2 + var_a / n_a * mean_b**2 / mean_a**4


def _relative_variance_cuped(a: CupedStat, b: CupedStat) -> float:
    """Relative CUPED effect ``(ȳ_b - θx̄_b - ȳ_a + θx̄_a) / ȳ_a``.

    Gradient in the control means ``(ȳ_a, x̄_a)`` is ``(-ȳ_b/ȳ_a², θ/ȳ_a)`` to first order, so
    the control contributes ``(σ²_ya ȳ_b²/ȳ_a² - 2θ cov_a ȳ_b/ȳ_a + θ² σ²_xa) / (n_a ȳ_a²)`` and
    the treatment its residual variance ``/(n_b ȳ_a²)``.
    """
    base = a.unadjusted_mean
    if base == 0 or a.n == 0 or b.n == 0:
        return 0.0
    theta = a.theta or 0.0
    y_b = b.post.mean
    v_trt = b.variance / (b.n * base**2)
    v_ctrl = (
        a.post.variance * y_b**2 / a.post.mean**2
        - 2.0 * theta * a.covariance * y_b / a.post.mean
        + theta**2 * a.pre.variance
    ) / (a.n * base**2)
    return v_trt + v_ctrl


def _relative_variance_cuped_ratio(a: CupedRatioStat, b: CupedRatioStat) -> float:
    """Delta method for ``(r_b - r_a) / r̃_a`` with ``r = M/D - θ M_pre/D_pre``, ``r̃ = M/D``.

    The baseline's gradient gains terms from ``r̃_a`` in the denominator:
    ``∂/∂μ_M = -(r̃_a + g)/(μ_D r̃_a²)`` and ``∂/∂μ_D = μ_M (r̃_a + g)/(μ_D² r̃_a²)``,
    where ``g = r_b - r_a`` is the absolute effect.
    """
    base = abs(a.unadjusted_mean)
    d_a = a.d_post.mean
    if base == 0 or d_a == 0:
        return 0.0
    gap = b.mean - a.mean
    m_a = a.m_post.mean
    g_a = a.nabla
    grad_a = np.array(
        [
            -(base + gap) / d_a / base**2,
            m_a * (base + gap) / d_a**2 / base**2,
            -g_a[2] / base,
            -g_a[3] / base,
        ]
    )
    grad_b = b.nabla / base
    return float(grad_a @ a.lambda_matrix @ grad_a / a.n + grad_b @ b.lambda_matrix @ grad_b / b.n)


def effect_variance(a: Stat, b: Stat, relative: bool) -> float:
    """Variance of the effect estimate for any pair of statistics of one kind."""
    if relative and isinstance(a, CupedStat) and isinstance(b, CupedStat):
        return _relative_variance_cuped(a, b)
    if relative and isinstance(a, CupedRatioStat) and isinstance(b, CupedRatioStat):
        return _relative_variance_cuped_ratio(a, b)
    if relative:
        base = a.unadjusted_mean
        if base == 0:
            return 0.0
        return b.variance / b.n / base**2 + a.variance / a.n * b.mean**2 / base**4
    return absolute_variance(a.variance, a.n, b.variance, b.n)


def effect_estimate(a: Stat, b: Stat, relative: bool) -> float:
    """``μ_b - μ_a``, divided by the unadjusted baseline mean when relative (0 if that is 0)."""
    diff = b.mean - a.mean
    if not relative:
        return diff
    base = a.unadjusted_mean
    return diff / base if base != 0 else 0.0


def effect_moments(a: Stat, b: Stat, relative: bool = True) -> EffectMoments:
    """Point estimate and standard error, or an error when the data cannot support one.

    ``a`` and ``b`` must already be θ-adjusted (:func:`~.cuped.with_theta`).
    """
    if type(a) is not type(b):
        return EffectMoments(0.0, 0.0, 0, MIXED_STATISTICS)
    if a.has_zero_variance or b.has_zero_variance:
        return EffectMoments(0.0, 0.0, 0, ZERO_NEGATIVE_VARIANCE)
    if relative and (a.mean == 0 or a.unadjusted_mean == 0):
        return EffectMoments(0.0, 0.0, 0, BASELINE_ZERO)
    variance = effect_variance(a, b, relative)
    if not variance > 0:
        return EffectMoments(0.0, 0.0, 0, ZERO_NEGATIVE_VARIANCE)
    return EffectMoments(effect_estimate(a, b, relative), math.sqrt(variance), a.n + b.n)
