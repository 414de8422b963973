"""CUPED: θ is the pooled regression slope, and adjustment shrinks variance by about 1 - ρ²."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.experiments.stats import (
    CupedRatioStat,
    CupedStat,
    MeanStat,
    RatioStat,
    pooled_ratio_theta,
    pooled_theta,
    ttest,
    with_theta,
)


def _arms(seed: int, rho: float, n: int = 4000, lift: float = 0.0):
    rng = np.random.default_rng(seed)
    pre = rng.normal(10, 2, (2, n))
    noise = rng.normal(0, 2, (2, n))
    post = 10 + rho * (pre - 10) + np.sqrt(1 - rho**2) * noise
    post[1] += lift
    return pre, post


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_theta_is_pooled_ols_slope(seed: int) -> None:
    pre, post = _arms(seed, 0.8)
    a = CupedStat.from_values(post[0], pre[0])
    b = CupedStat.from_values(post[1], pre[1])
    slope = np.polyfit(pre.ravel(), post.ravel(), 1)[0]
    assert pooled_theta(a, b) == pytest.approx(slope, rel=1e-9)
    adjusted_a, adjusted_b = with_theta(a, b)
    assert adjusted_a.theta == adjusted_b.theta == pytest.approx(slope)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_variance_reduction_is_one_minus_rho_squared(rho: float) -> None:
    pre, post = _arms(4, rho, n=20000, lift=0.1)
    cuped = ttest(
        CupedStat.from_values(post[0], pre[0]),
        CupedStat.from_values(post[1], pre[1]),
        relative=False,
    )
    plain = ttest(MeanStat.from_values(post[0]), MeanStat.from_values(post[1]), relative=False)
    assert (cuped.stddev / plain.stddev) ** 2 == pytest.approx(1 - rho**2, abs=0.03)
    assert cuped.ci[0] <= 0.1 <= cuped.ci[1]


def test_cuped_estimate_is_unbiased_over_replications() -> None:
    estimates, plain = [], []
    for seed in range(200):
        pre, post = _arms(seed, 0.8, n=500, lift=0.05)
        estimates.append(
            ttest(
                CupedStat.from_values(post[0], pre[0]),
                CupedStat.from_values(post[1], pre[1]),
                relative=False,
            ).expected
        )
        plain.append(post[1].mean() - post[0].mean())
    assert np.mean(estimates) == pytest.approx(0.05, abs=3 * np.std(estimates) / np.sqrt(200))
    assert np.std(estimates) < 0.75 * np.std(plain)


def test_uninformative_covariate_reverts_to_plain_test() -> None:
    rng = np.random.default_rng(0)
    post = rng.normal(5, 1, (2, 300))
    pre = np.zeros((2, 300))
    a, b = (CupedStat.from_values(post[i], pre[i]) for i in range(2))
    assert with_theta(a, b) == (a.post, b.post)
    assert ttest(a, b) == ttest(a.post, b.post)


def test_cuped_ratio_reduces_variance() -> None:
    rng = np.random.default_rng(8)
    n = 5000
    taste = rng.gamma(0.5, 2.0, (2, n))  # strongly persistent per-user value
    d_pre, d_post = rng.poisson(3.0, (2, n)) + 1, rng.poisson(3.0, (2, n)) + 1
    m_pre = d_pre * taste * rng.gamma(5.0, 0.2, (2, n))
    m_post = d_post * taste * rng.gamma(5.0, 0.2, (2, n))
    a = CupedRatioStat.from_values(m_post[0], d_post[0], m_pre[0], d_pre[0])
    b = CupedRatioStat.from_values(m_post[1], d_post[1], m_pre[1], d_pre[1])
    theta = pooled_ratio_theta(a, b)
    assert 0.3 < theta < 1.2
    for relative in (False, True):
        adjusted = ttest(a, b, relative=relative)
        plain = ttest(a.post_ratio(), b.post_ratio(), relative=relative)
        assert adjusted.error is None
        assert adjusted.stddev < 0.8 * plain.stddev
    assert isinstance(with_theta(a.post_ratio(), b.post_ratio())[0], RatioStat)


def test_a_ratio_without_pre_exposure_denominator_falls_back_to_the_plain_ratio() -> None:
    """Clicks per exposure with exposures only after the first one: no pre-period ratio exists,
    so CUPED steps aside instead of reporting a zero baseline."""
    rng = np.random.default_rng(5)
    stats = []
    for _ in range(2):
        d = rng.integers(1, 6, 3000).astype(float)
        m = rng.binomial(d.astype(int), 0.05).astype(float)
        m_pre = rng.binomial(1, 0.3, 3000).astype(float)  # clicks before the first exposure
        stats.append(CupedRatioStat.from_values(m, d, m_pre, np.zeros(3000)))
    a, b = with_theta(*stats)
    assert isinstance(a, RatioStat) and isinstance(b, RatioStat)
    result = ttest(*stats)
    assert result.error is None and 0.03 < a.mean < 0.07
