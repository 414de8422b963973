"""Sample-ratio mismatch against scipy's chi-square test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from trimtab.experiments.stats import srm_check


@pytest.mark.parametrize("seed", range(8))
def test_matches_scipy_chisquare(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    weights = rng.uniform(0.5, 2.0, k)
    skew = rng.uniform(0.97, 1.03, k)
    counts = rng.multinomial(
        int(rng.integers(1000, 100000)), weights * skew / (weights * skew).sum()
    )
    r = srm_check(counts.tolist(), weights.tolist())
    ref = sps.chisquare(counts, counts.sum() * weights / weights.sum())
    assert r.chi2 == pytest.approx(ref.statistic, rel=1e-9)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300)
    assert r.ok == (ref.pvalue >= 0.001)
    assert sum(r.expected_shares) == pytest.approx(1.0)


def test_mismatch_is_loud() -> None:
    r = srm_check([10_000, 9_000])
    assert not r.ok
    assert "SAMPLE RATIO MISMATCH" in r.message
    assert r.observed_shares == pytest.approx((10 / 19, 9 / 19))
    ok = srm_check([10_000, 9_950])
    assert ok.ok and "No sample ratio mismatch" in ok.message


def test_zero_weight_variants_are_left_out() -> None:
    r = srm_check([5000, 5100, 0], [0.5, 0.5, 0.0])
    ref = sps.chisquare([5000, 5100])
    assert r.dof == 1
    assert r.p_value == pytest.approx(ref.pvalue)


def test_no_traffic_and_bad_input() -> None:
    assert srm_check([0, 0]).ok
    with pytest.raises(ValueError):
        srm_check([1, 2], [1.0])
    with pytest.raises(ValueError):
        srm_check([1, -2])
