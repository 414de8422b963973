"""Sufficient statistics: moments from sums, additivity, and the delta method for ratios."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.experiments.stats import (
    CupedRatioStat,
    CupedStat,
    MeanStat,
    ProportionStat,
    QuantileStat,
    RatioStat,
    combine,
)

values = st.lists(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=60
)


@given(values, values)
@settings(max_examples=60, deadline=None)
def test_mean_stat_matches_numpy_and_adds(x: list[float], y: list[float]) -> None:
    s = MeanStat.from_values(x)
    assert s.mean == pytest.approx(np.mean(x), rel=1e-9, abs=1e-9)
    assert s.variance == pytest.approx(np.var(x, ddof=1), rel=1e-6, abs=1e-6)
    both = combine([MeanStat.from_values(x), MeanStat.from_values(y)])
    whole = MeanStat.from_values(x + y)
    assert both.n == whole.n
    assert both.sum == pytest.approx(whole.sum, rel=1e-9, abs=1e-9)
    assert both.sum_squares == pytest.approx(whole.sum_squares, rel=1e-9)


@given(st.lists(st.integers(0, 1), min_size=2, max_size=200))
def test_proportion_stat(x: list[int]) -> None:
    s = ProportionStat.from_values(x)
    p = np.mean(x)
    assert s.mean == pytest.approx(p)
    assert s.variance == pytest.approx(p * (1 - p))
    assert (s + s).mean == pytest.approx(p)


def test_ratio_delta_method_matches_sampling_spread() -> None:
    """The delta-method standard error of ΣM/ΣD matches its spread over replications."""
    rng = np.random.default_rng(11)
    reps, n = 3000, 400
    sessions = rng.poisson(3.0, size=(reps, n)) + 1
    revenue = sessions * rng.gamma(2.0, 1.5, size=(reps, n)) * rng.binomial(1, 0.3, (reps, n))
    ratios = revenue.sum(axis=1) / sessions.sum(axis=1)
    stat = RatioStat.from_values(revenue[0], sessions[0])
    assert stat.mean == pytest.approx(ratios[0])
    delta_se = np.sqrt(stat.variance / stat.n)
    assert delta_se == pytest.approx(ratios.std(ddof=1), rel=0.1)


def test_ratio_stat_adds_like_concatenation() -> None:
    rng = np.random.default_rng(2)
    m, d = rng.normal(3, 1, 100), rng.normal(5, 1, 100)
    parts = combine([RatioStat.from_values(m[:40], d[:40]), RatioStat.from_values(m[40:], d[40:])])
    whole = RatioStat.from_values(m, d)
    assert parts.mean == pytest.approx(whole.mean)
    assert parts.variance == pytest.approx(whole.variance)


def test_cuped_stat_variance_is_residual_variance() -> None:
    rng = np.random.default_rng(5)
    pre = rng.normal(10, 3, 1000)
    post = 0.7 * pre + rng.normal(0, 1, 1000)
    s = CupedStat.from_values(post, pre)
    theta = 0.6
    adjusted = CupedStat(s.n, s.post, s.pre, s.sum_products, theta)
    assert adjusted.mean == pytest.approx(np.mean(post - theta * pre))
    assert adjusted.variance == pytest.approx(np.var(post - theta * pre, ddof=1))
    with pytest.raises(TypeError):
        CupedStat(10, MeanStat(10, 1.0, 1.0), ProportionStat(10, 1), 1.0)


def test_cuped_ratio_stat_adds_and_reports_unadjusted_mean() -> None:
    rng = np.random.default_rng(9)
    cols = [rng.gamma(2.0, 1.0, 200) for _ in range(4)]
    s = CupedRatioStat.from_values(*cols)
    assert s.unadjusted_mean == pytest.approx(cols[0].sum() / cols[1].sum())
    halves = combine(
        [
            CupedRatioStat.from_values(*(c[:90] for c in cols)),
            CupedRatioStat.from_values(*(c[90:] for c in cols)),
        ]
    )
    assert np.allclose(halves.lambda_matrix, s.lambda_matrix)
    assert np.allclose(s.lambda_matrix, np.cov(np.vstack(cols)))


def test_quantile_stat_variance_from_interval_width() -> None:
    q = QuantileStat(
        n=10000, n_star=10000, nu=0.9, quantile_hat=7.0, quantile_lower=6.9, quantile_upper=7.1
    )
    se = 0.1 / 1.959963984540054
    assert q.variance == pytest.approx(se**2 * 9999)
    assert not q.has_zero_variance
    assert QuantileStat(
        n=20, n_star=20, nu=0.99, quantile_hat=1, quantile_lower=0, quantile_upper=2
    ).has_zero_variance
    with pytest.raises(TypeError):
        combine([q, q])
