"""Welch t-tests cross-checked against scipy and statsmodels on generated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats import proportion as sm_proportion

from trimtab.experiments.stats import MeanStat, ProportionStat, RatioStat, ttest
from trimtab.experiments.stats.moments import BASELINE_ZERO, ZERO_NEGATIVE_VARIANCE

SEEDS = [1, 2, 3, 4, 5, 6]


def _samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_a, n_b = rng.integers(20, 3000, size=2)
    a = rng.lognormal(mean=1.0, sigma=rng.uniform(0.2, 1.2), size=n_a)
    b = rng.lognormal(mean=1.0 + rng.normal(0, 0.1), sigma=rng.uniform(0.2, 1.2), size=n_b)
    return a, b


@pytest.mark.parametrize("seed", SEEDS)
def test_absolute_welch_matches_scipy(seed: int) -> None:
    a, b = _samples(seed)
    ours = ttest(MeanStat.from_values(a), MeanStat.from_values(b), relative=False)
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert ours.expected == pytest.approx(b.mean() - a.mean(), rel=1e-9)
    assert ours.expected / ours.stddev == pytest.approx(ref.statistic, rel=1e-9)
    assert ours.dof == pytest.approx(ref.df, rel=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-14)
    ci = ref.confidence_interval(0.95)
    assert ours.ci == pytest.approx((ci.low, ci.high), rel=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alternative", ["greater", "less"])
def test_one_sided_welch_matches_scipy(seed: int, alternative: str) -> None:
    a, b = _samples(seed)
    ours = ttest(
        MeanStat.from_values(a), MeanStat.from_values(b), relative=False, alternative=alternative
    )
    ref = sps.ttest_ind(b, a, equal_var=False, alternative=alternative)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-14)
    ci = ref.confidence_interval(0.95)
    assert ours.ci == pytest.approx((ci.low, ci.high), rel=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
def test_two_proportions_match_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_a, n_b = (int(x) for x in rng.integers(2000, 20000, size=2))
    p = rng.uniform(0.02, 0.5)
    s_a = int(rng.binomial(n_a, p))
    s_b = int(rng.binomial(n_b, p * rng.uniform(0.9, 1.15)))
    ours = ttest(ProportionStat(n_a, s_a), ProportionStat(n_b, s_b), relative=False)
    z_ours = ours.expected / ours.stddev
    # Unpooled Wald z-test: the same statistic exactly.
    wald = sm_proportion.test_proportions_2indep(s_b, n_b, s_a, n_a, method="wald", compare="diff")
    assert z_ours == pytest.approx(wald.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(wald.pvalue, abs=2e-4)
    # Pooled z-test (statsmodels' proportions_ztest): close at these sizes.
    z_pooled, p_pooled = sm_proportion.proportions_ztest([s_b, s_a], [n_b, n_a])
    assert z_ours == pytest.approx(z_pooled, rel=0.03, abs=0.02)
    assert ours.p_value == pytest.approx(p_pooled, abs=0.01)


@pytest.mark.parametrize("seed", SEEDS)
def test_relative_ci_is_delta_method(seed: int) -> None:
    a, b = _samples(seed)
    r = ttest(MeanStat.from_values(a), MeanStat.from_values(b))
    ma, mb = a.mean(), b.mean()
    se = math.sqrt(b.var(ddof=1) / b.size / ma**2 + a.var(ddof=1) / a.size * mb**2 / ma**4)
    assert r.expected == pytest.approx(mb / ma - 1, rel=1e-9)
    assert r.stddev == pytest.approx(se, rel=1e-9)
    q = sps.t.ppf(0.975, r.dof)
    assert r.ci == pytest.approx((r.expected - q * se, r.expected + q * se), rel=1e-9)
    assert r.significant == (r.p_value < 0.05)


def test_relative_interval_covers_truth_at_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    true_a, true_b, n = 0.10, 0.11, 4000
    covered = 0
    runs = 600
    for s_a, s_b in zip(rng.binomial(n, true_a, runs), rng.binomial(n, true_b, runs), strict=True):
        r = ttest(ProportionStat(n, int(s_a)), ProportionStat(n, int(s_b)))
        covered += r.ci[0] <= true_b / true_a - 1 <= r.ci[1]
    margin = 3 * math.sqrt(0.05 * 0.95 / runs)
    assert abs(covered / runs - 0.95) < margin


def test_ratio_metric_with_unit_denominators_equals_mean_metric() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(5, 2, 500), rng.normal(5.3, 2, 600)
    ones_a, ones_b = np.ones_like(a), np.ones_like(b)
    ones_a[0] = ones_b[0] = 1.0 + 1e-9  # a constant denominator has zero variance
    ratio = ttest(RatioStat.from_values(a, ones_a), RatioStat.from_values(b, ones_b))
    plain = ttest(MeanStat.from_values(a), MeanStat.from_values(b))
    assert ratio.expected == pytest.approx(plain.expected, rel=1e-6)
    assert ratio.stddev == pytest.approx(plain.stddev, rel=1e-5)


def test_errors_give_neutral_results() -> None:
    tiny = ttest(MeanStat(1, 3.0, 9.0), MeanStat(10, 30.0, 100.0))
    assert tiny.error == ZERO_NEGATIVE_VARIANCE
    assert (tiny.expected, tiny.ci, tiny.p_value) == (0.0, (0.0, 0.0), 1.0)
    assert not tiny.significant
    zero_base = ttest(MeanStat(10, 0.0, 10.0), MeanStat(10, 5.0, 10.0))
    assert zero_base.error == BASELINE_ZERO
    mixed = ttest(MeanStat(10, 5.0, 10.0), ProportionStat(10, 5))
    assert mixed.error is not None
    with pytest.raises(ValueError):
        ttest(MeanStat(10, 5.0, 10.0), MeanStat(10, 6.0, 12.0), alternative="sideways")  # type: ignore[arg-type]
