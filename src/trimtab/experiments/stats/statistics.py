"""Per-variant sufficient statistics: everything the tests need, nothing per visitor.

Each statistic is a small frozen msgspec ``Struct`` of sums that a database can compute in one
pass (``COUNT``, ``SUM(x)``, ``SUM(x*x)``, ``SUM(x*y)``) and that add across shards or days.
From them come the unit-level ``mean`` and ``variance`` the tests use; the variance of a mean
is ``variance / n``.

* :class:`MeanStat` — a numeric metric per unit: ``mean = S/n``,
  ``variance = (SS - S²/n) / (n - 1)``.
* :class:`ProportionStat` — a 0/1 metric: ``p = S/n``, ``variance = p (1 - p)``.
* :class:`RatioStat` — a ratio of sums (revenue per session, say) where numerator and
  denominator vary per unit: delta method,
  ``var(M/D) ≈ var_M/μ_D² + var_D μ_M²/μ_D⁴ - 2 cov μ_M/μ_D³``.
* :class:`CupedStat` — a metric with a pre-exposure covariate for CUPED regression
  adjustment: ``mean = ȳ - θ x̄``, ``variance = var_y + θ² var_x - 2 θ cov``.
* :class:`CupedRatioStat` — a ratio metric with pre-exposure numerator and denominator.
* :class:`QuantileStat` — a quantile with its confidence bounds (from the warehouse).

>>> a = MeanStat.from_values([1.0, 2.0, 3.0])
>>> a.mean, a.variance
(2.0, 1.0)
>>> (a + a).n
6
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import msgspec
import numpy as np
from scipy.special import ndtri

# The z multiplier of the 95 % interval a warehouse reports around a quantile.
_Z_975 = float(ndtri(0.975))


class MeanStat(msgspec.Struct, frozen=True):
    """Count, sum and sum of squares of a numeric per-unit metric."""

    n: int
    sum: float
    sum_squares: float

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> MeanStat:
        x = np.asarray(values, dtype=float)
        return cls(n=int(x.size), sum=float(x.sum()), sum_squares=float(x @ x))

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def unadjusted_mean(self) -> float:
        return self.mean

    @property
    def variance(self) -> float:
        """Unbiased unit variance ``(SS - S²/n) / (n - 1)``; 0 below two units."""
        if self.n <= 1:
            return 0.0
        return (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1)

    @property
    def has_zero_variance(self) -> bool:
        return self.n <= 1 or self.variance <= 0.0

    def __add__(self, other: MeanStat | ProportionStat) -> MeanStat:
        return MeanStat(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_squares=self.sum_squares + other.sum_squares,
        )


class ProportionStat(msgspec.Struct, frozen=True):
    """Count and number of successes of a 0/1 per-unit metric."""

    n: int
    sum: float

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> ProportionStat:
        x = np.asarray(values, dtype=float)
        return cls(n=int(x.size), sum=float(x.sum()))

    @property
    def sum_squares(self) -> float:
        return self.sum

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def unadjusted_mean(self) -> float:
        return self.mean

    @property
    def variance(self) -> float:
        """Bernoulli variance ``p (1 - p)``."""
        p = self.mean
        return p * (1.0 - p)

    @property
    def has_zero_variance(self) -> bool:
        return self.n <= 1 or self.variance <= 0.0

    def __add__(self, other: ProportionStat) -> ProportionStat:
        return ProportionStat(n=self.n + other.n, sum=self.sum + other.sum)


Moment: TypeAlias = MeanStat | ProportionStat


def _paired_moments(
    first: Sequence[float] | np.ndarray, second: Sequence[float] | np.ndarray
) -> tuple[int, MeanStat, MeanStat, float]:
    """Units, the moments of two paired value columns and ``Σ a·b`` (ratio and CUPED)."""
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    return int(a.size), MeanStat.from_values(a), MeanStat.from_values(b), float(a @ b)


def covariance(n: int, x: Moment, y: Moment, sum_products: float) -> float:
    """Unit covariance of two metrics from ``Σxy``: unbiased, or plug-in when both are 0/1."""
    if n <= 1:
        return 0.0
    if isinstance(x, ProportionStat) and isinstance(y, ProportionStat):
        return sum_products / n - x.sum * y.sum / (n * n)
    return (sum_products - x.sum * y.sum / n) / (n - 1)


def ratio_variance(mean_m: float, var_m: float, mean_d: float, var_d: float, cov: float) -> float:
    """Delta-method variance of ``M / D``; 0 when the denominator mean is 0."""
    if mean_d == 0:
        return 0.0
    return var_m / mean_d**2 + var_d * mean_m**2 / mean_d**4 - 2.0 * cov * mean_m / mean_d**3


class RatioStat(msgspec.Struct, frozen=True):
    """A ratio-of-sums metric: numerator and denominator moments plus ``Σ m·d``."""

    n: int
    numerator: Moment
    denominator: Moment
    sum_products: float

    @classmethod
    def from_values(
        cls, numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray
    ) -> RatioStat:
        n, m, d, products = _paired_moments(numerator, denominator)
        return cls(n=n, numerator=m, denominator=d, sum_products=products)

    @property
    def mean(self) -> float:
        """``ΣM / ΣD``."""
        return self.numerator.sum / self.denominator.sum if self.denominator.sum else 0.0

    @property
    def unadjusted_mean(self) -> float:
        return self.mean

    @property
    def covariance(self) -> float:
        return covariance(self.n, self.numerator, self.denominator, self.sum_products)

    @property
    def variance(self) -> float:
        """Per-unit delta-method variance (divide by ``n`` for the variance of the ratio)."""
        if self.denominator.mean == 0 or self.n <= 1:
            return 0.0
        return ratio_variance(
            self.numerator.mean,
            self.numerator.variance,
            self.denominator.mean,
            self.denominator.variance,
            self.covariance,
        )

    @property
    def has_zero_variance(self) -> bool:
        return self.n <= 1 or self.variance <= 0.0

    def __add__(self, other: RatioStat) -> RatioStat:
        return RatioStat(
            n=self.n + other.n,
            numerator=self.numerator + other.numerator,  # type: ignore[operator]  # one Moment kind
            denominator=self.denominator + other.denominator,  # type: ignore[operator]  # one Moment kind
            sum_products=self.sum_products + other.sum_products,
        )


class CupedStat(msgspec.Struct, frozen=True):
    """A metric ``y`` (post-exposure) with covariate ``x`` (the same metric before exposure).

    ``theta`` is the regression coefficient; leave it ``None`` and the tests estimate it from
    both arms pooled (:func:`trimtab.experiments.stats.cuped.with_theta`).
    """

    n: int
    post: Moment
    pre: Moment
    sum_products: float
    theta: float | None = None

    def __post_init__(self) -> None:
        if type(self.post) is not type(self.pre):
            raise TypeError("CupedStat: post and pre must be the same kind of statistic")

    @classmethod
    def from_values(
        cls, post: Sequence[float] | np.ndarray, pre: Sequence[float] | np.ndarray
    ) -> CupedStat:
        n, y, x, products = _paired_moments(post, pre)
        return cls(n=n, post=y, pre=x, sum_products=products)

    @property
    def covariance(self) -> float:
        return covariance(self.n, self.post, self.pre, self.sum_products)

    @property
    def mean(self) -> float:
        """Adjusted mean ``ȳ - θ x̄``."""
        return self.post.mean - (self.theta or 0.0) * self.pre.mean

    @property
    def unadjusted_mean(self) -> float:
        return self.post.mean

    @property
    def variance(self) -> float:
        """``var_y + θ² var_x - 2 θ cov(y, x)``: the variance of the residual ``y - θ x``."""
        if self.n <= 1:
            return 0.0
        theta = self.theta or 0.0
        return (
            self.post.variance + theta * theta * self.pre.variance - 2.0 * theta * self.covariance
        )

    @property
    def has_zero_variance(self) -> bool:
        return self.n <= 1 or self.variance <= 0.0

    def __add__(self, other: CupedStat) -> CupedStat:
        return CupedStat(
            n=self.n + other.n,
            post=self.post + other.post,  # type: ignore[operator]  # one Moment kind
            pre=self.pre + other.pre,  # type: ignore[operator]  # one Moment kind
            sum_products=self.sum_products + other.sum_products,
        )


class CupedRatioStat(msgspec.Struct, frozen=True, kw_only=True):
    """A ratio metric ``M/D`` with its pre-exposure ratio ``M_pre/D_pre`` as covariate.

    The adjusted mean is ``ΣM/ΣD - θ ΣM_pre/ΣD_pre``; its unit variance is ``∇ᵀ Λ ∇`` with
    ``Λ`` the 4×4 covariance of ``(M, D, M_pre, D_pre)`` and ``∇`` the gradient of that mean.
    """

    n: int
    m_post: Moment
    d_post: Moment
    m_pre: Moment
    d_pre: Moment
    m_post_m_pre: float
    d_post_d_pre: float
    m_pre_d_pre: float
    m_post_d_post: float
    m_post_d_pre: float
    m_pre_d_post: float
    theta: float | None = None

    @classmethod
    def from_values(
        cls,
        m_post: Sequence[float] | np.ndarray,
        d_post: Sequence[float] | np.ndarray,
        m_pre: Sequence[float] | np.ndarray,
        d_pre: Sequence[float] | np.ndarray,
    ) -> CupedRatioStat:
        mp, dp, mq, dq = (np.asarray(v, dtype=float) for v in (m_post, d_post, m_pre, d_pre))
        return cls(
            n=int(mp.size),
            m_post=MeanStat.from_values(mp),
            d_post=MeanStat.from_values(dp),
            m_pre=MeanStat.from_values(mq),
            d_pre=MeanStat.from_values(dq),
            m_post_m_pre=float(mp @ mq),
            d_post_d_pre=float(dp @ dq),
            m_pre_d_pre=float(mq @ dq),
            m_post_d_post=float(mp @ dp),
            m_post_d_pre=float(mp @ dq),
            m_pre_d_post=float(mq @ dp),
        )

    @property
    def mean_post(self) -> float:
        return self.m_post.sum / self.d_post.sum if self.d_post.sum else 0.0

    @property
    def mean_pre(self) -> float:
        return self.m_pre.sum / self.d_pre.sum if self.d_pre.sum else 0.0

    @property
    def mean(self) -> float:
        if self.d_post.sum == 0 or self.d_pre.sum == 0:
            return 0.0
        return self.mean_post - (self.theta or 0.0) * self.mean_pre

    @property
    def unadjusted_mean(self) -> float:
        return self.mean_post

    @property
    def lambda_matrix(self) -> np.ndarray:
        """Unit covariance of ``(M, D, M_pre, D_pre)``."""
        n = self.n
        mp, dp, mq, dq = self.m_post, self.d_post, self.m_pre, self.d_pre
        c_mp_dp = covariance(n, mp, dp, self.m_post_d_post)
        c_mp_mq = covariance(n, mp, mq, self.m_post_m_pre)
        c_mp_dq = covariance(n, mp, dq, self.m_post_d_pre)
        c_dp_mq = covariance(n, dp, mq, self.m_pre_d_post)
        c_dp_dq = covariance(n, dp, dq, self.d_post_d_pre)
        c_mq_dq = covariance(n, mq, dq, self.m_pre_d_pre)
        return np.array(
            [
                [mp.variance, c_mp_dp, c_mp_mq, c_mp_dq],
                [c_mp_dp, dp.variance, c_dp_mq, c_dp_dq],
                [c_mp_mq, c_dp_mq, mq.variance, c_mq_dq],
                [c_mp_dq, c_dp_dq, c_mq_dq, dq.variance],
            ]
        )

    @property
    def nabla(self) -> np.ndarray:
        """Gradient of ``μ_M/μ_D - θ μ_Mpre/μ_Dpre`` in the four unit means."""
        theta = self.theta or 0.0
        mp, dp, mq, dq = self.m_post.mean, self.d_post.mean, self.m_pre.mean, self.d_pre.mean
        if dp == 0 or dq == 0:
            return np.zeros(4)
        return np.array([1.0 / dp, -mp / dp**2, -theta / dq, theta * mq / dq**2])

    @property
    def variance(self) -> float:
        g = self.nabla
        return float(g @ self.lambda_matrix @ g)

    @property
    def has_zero_variance(self) -> bool:
        return self.n <= 1 or self.m_post.variance <= 0.0 or self.d_post.variance <= 0.0

    def post_ratio(self) -> RatioStat:
        """The unadjusted ratio statistic (CUPED dropped)."""
        return RatioStat(
            n=self.n,
            numerator=self.m_post,
            denominator=self.d_post,
            sum_products=self.m_post_d_post,
        )

    def __add__(self, other: CupedRatioStat) -> CupedRatioStat:
        return CupedRatioStat(
            n=self.n + other.n,
            m_post=self.m_post + other.m_post,  # type: ignore[operator]  # one Moment kind
            d_post=self.d_post + other.d_post,  # type: ignore[operator]  # one Moment kind
            m_pre=self.m_pre + other.m_pre,  # type: ignore[operator]  # one Moment kind
            d_pre=self.d_pre + other.d_pre,  # type: ignore[operator]  # one Moment kind
            m_post_m_pre=self.m_post_m_pre + other.m_post_m_pre,
            d_post_d_pre=self.d_post_d_pre + other.d_post_d_pre,
            m_pre_d_pre=self.m_pre_d_pre + other.m_pre_d_pre,
            m_post_d_post=self.m_post_d_post + other.m_post_d_post,
            m_post_d_pre=self.m_post_d_pre + other.m_post_d_pre,
            m_pre_d_post=self.m_pre_d_post + other.m_pre_d_post,
        )


class QuantileStat(msgspec.Struct, frozen=True, kw_only=True):
    """A quantile ``nu`` of a metric with the 95 % bounds the warehouse computed around it.

    ``n_star`` is the sample size used for the bounds. The unit variance is recovered from the
    bounds' width: ``(n*/n) (n - 1) ((upper - lower) / (2 z₀.₉₇₅))²``.
    """

    n: int
    n_star: int
    nu: float
    quantile_hat: float
    quantile_lower: float
    quantile_upper: float

    @property
    def mean(self) -> float:
        return self.quantile_hat

    @property
    def unadjusted_mean(self) -> float:
        return self.quantile_hat

    @property
    def variance(self) -> float:
        if self.n <= 1:
            return 0.0
        half = (self.quantile_upper - self.quantile_lower) / (2 * _Z_975)
        v = float((self.n_star / self.n) * (self.n - 1) * half**2)
        return v if self.n < 100 else max(v, 1e-5)

    @property
    def has_zero_variance(self) -> bool:
        # Too few units for the bounds to exist inside (0, 1) quantile levels.
        z2 = _Z_975 * _Z_975
        if self.n <= z2 * self.nu / (1.0 - self.nu) or self.n <= z2 * (1.0 - self.nu) / self.nu:
            return True
        return self.variance <= 0.0 and self.n < 1000


Stat: TypeAlias = MeanStat | ProportionStat | RatioStat | CupedStat | CupedRatioStat | QuantileStat


def combine(stats: Sequence[Stat]) -> Stat:
    """Add statistics of one variant across cells (days, shards, strata)."""
    if not stats:
        raise ValueError("combine() needs at least one statistic")
    total = stats[0]
    for s in stats[1:]:
        if isinstance(total, QuantileStat) or isinstance(s, QuantileStat):
            raise TypeError("quantile statistics cannot be added; compute them over all units")
        total = total + s  # type: ignore[operator]  # one kind per metric
    return total
