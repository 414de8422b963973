"""The Gaussian effect model: posterior, chance to win, risk and credible interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps

from trimtab.experiments.stats import (
    GaussianPrior,
    MeanStat,
    ProportionStat,
    bayesian_test,
    risk,
    ttest,
)

A = ProportionStat(2000, 200)
B = ProportionStat(2100, 240)


@given(st.floats(-5, 5), st.floats(0.01, 3))
@settings(max_examples=60, deadline=None)
def test_risk_is_expected_loss(mu: float, sigma: float) -> None:
    def density(x: float) -> float:
        return sps.norm.pdf(x, mu, sigma)

    lo, hi = mu - 12 * sigma, mu + 12 * sigma
    ctrl = integrate.quad(lambda x: x * density(x), max(lo, 0), max(hi, 0))[0]
    trt = integrate.quad(lambda x: -x * density(x), min(lo, 0), min(hi, 0))[0]
    got = risk(mu, sigma)
    assert got[0] == pytest.approx(ctrl, abs=1e-7)
    assert got[1] == pytest.approx(trt, abs=1e-7)
    assert got[0] - got[1] == pytest.approx(mu, abs=1e-9)


def test_flat_prior_posterior_is_the_likelihood() -> None:
    b = bayesian_test(A, B)
    f = ttest(A, B)
    assert b.expected == f.expected
    assert b.stddev == pytest.approx(f.stddev)
    assert b.chance_to_win == pytest.approx(sps.norm.cdf(f.expected / f.stddev))
    z = sps.norm.ppf(0.975)
    assert b.ci == pytest.approx((f.expected - z * f.stddev, f.expected + z * f.stddev))


def test_proper_prior_shrinks_toward_prior_mean() -> None:
    f = ttest(A, B)
    prior = GaussianPrior(mean=0.0, variance=0.01, proper=True)
    b = bayesian_test(A, B, prior=prior)
    precision = 1 / f.stddev**2 + 1 / prior.variance
    assert b.expected == pytest.approx(f.expected / f.stddev**2 / precision)
    assert b.stddev == pytest.approx(math.sqrt(1 / precision))
    assert 0 < b.expected < f.expected


def test_absolute_prior_is_rescaled_for_relative_analysis() -> None:
    base = A.mean
    relative_prior = bayesian_test(A, B, prior=GaussianPrior(0.05, 0.04, True))
    absolute_prior = bayesian_test(
        A, B, prior=GaussianPrior(0.05 * base, 0.04 * base**2, True), prior_type="absolute"
    )
    assert absolute_prior.expected == pytest.approx(relative_prior.expected)
    assert absolute_prior.stddev == pytest.approx(relative_prior.stddev)


def test_inverse_metric_flips_chance_to_win_and_risk() -> None:
    up = bayesian_test(A, B)
    down = bayesian_test(A, B, inverse=True)
    assert down.chance_to_win == pytest.approx(1 - up.chance_to_win)
    assert down.risk == (up.risk[1], up.risk[0])


def test_chance_to_win_matches_monte_carlo() -> None:
    b = bayesian_test(
        MeanStat(500, 5000.0, 52000.0), MeanStat(480, 4900.0, 51500.0), relative=False
    )
    draws = np.random.default_rng(0).normal(b.expected, b.stddev, 400_000)
    assert b.chance_to_win == pytest.approx((draws > 0).mean(), abs=0.005)


def test_missing_data_is_neutral() -> None:
    r = bayesian_test(ProportionStat(0, 0), ProportionStat(0, 0))
    assert (r.chance_to_win, r.expected, r.risk) == (0.5, 0.0, (0.0, 0.0))
    assert r.error is not None
