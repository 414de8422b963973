"""Sequential testing: interval/p-value consistency and the A/A peeking simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.experiments.stats import (
    MeanStat,
    ProportionStat,
    aa_simulation,
    sequential_rho,
    sequential_ttest,
    ttest,
)
from trimtab.experiments.stats.sequential import (
    ALPHA_TOO_LARGE_ONE_SIDED,
    ONE_SIDED_P_RANGE,
    bisect_one_sided,
    p_value_one_sided,
)
from trimtab.experiments.stats.simulation import significance_paths

A = MeanStat(n=3000, sum=1396.87, sum_squares=52377.9767)
B = MeanStat(n=3461, sum=2422.7, sum_squares=134698.29)

stat_pairs = st.tuples(
    st.integers(200, 20000), st.floats(0.02, 0.5), st.integers(200, 20000), st.floats(0.8, 1.4)
)


def _pair(n_a: int, p: float, n_b: int, lift: float) -> tuple[ProportionStat, ProportionStat]:
    return ProportionStat(n_a, round(n_a * p)), ProportionStat(
        n_b, round(n_b * min(p * lift, 0.99))
    )


@given(stat_pairs, st.sampled_from([0.01, 0.05, 0.1]), st.integers(500, 50000))
@settings(max_examples=80, deadline=None)
def test_two_sided_p_value_agrees_with_interval(pair, alpha: float, tuning: int) -> None:
    a, b = _pair(*pair)
    r = sequential_ttest(a, b, alpha=alpha, tuning=tuning)
    assert r.ci[0] < r.expected < r.ci[1]
    excludes_zero = r.ci[0] > 0 or r.ci[1] < 0
    assert r.p_value is not None
    if abs(r.p_value - alpha) > 1e-9:
        assert excludes_zero == (r.p_value < alpha)


@given(stat_pairs, st.sampled_from(["greater", "less"]))
@settings(max_examples=60, deadline=None)
def test_one_sided_p_value_is_where_the_bound_touches_zero(pair, alternative: str) -> None:
    a, b = _pair(*pair)
    r = sequential_ttest(a, b, relative=False, alternative=alternative, p_value="exact")
    assert r.p_value is not None
    lo, hi = ONE_SIDED_P_RANGE
    rho = sequential_rho(0.05, 5000, two_sided=False)
    if lo < r.p_value < hi:
        at_p = sequential_ttest(
            a, b, relative=False, alternative=alternative, alpha=r.p_value, rho=rho
        )
        bound = at_p.ci[0] if alternative == "greater" else at_p.ci[1]
        assert bound == pytest.approx(0.0, abs=1e-9 * max(1.0, r.stddev))
    # GrowthBook's bisection (the default) reports the midpoint of its final bracket, and the
    # exact root lies inside that bracket
    searched = sequential_ttest(a, b, relative=False, alternative=alternative)
    est = sequential_ttest(a, b, relative=False, alternative=alternative, p_value="exact")
    p, low, high, converged = bisect_one_sided(
        est.expected, est.stddev, a.n + b.n, rho, alternative == "greater"
    )
    if not converged:
        assert searched.p_value is None
        assert searched.p_value_error == "NUMERICAL_PVALUE_NOT_CONVERGED"
    else:
        assert searched.p_value == p == pytest.approx(0.5 * (low + high))
        assert low - 1e-12 <= r.p_value <= high + 1e-12


def test_one_sided_p_value_conformance_case_is_exact_root() -> None:
    """The gbstats case where bisection and the exact root differ: p="exact" is the root."""
    r = sequential_ttest(A, B, relative=False, alternative="greater", p_value="exact")
    rho = sequential_rho(0.05, 5000, two_sided=False)
    at_p = sequential_ttest(A, B, relative=False, alternative="greater", alpha=r.p_value, rho=rho)
    assert at_p.ci[0] == pytest.approx(0.0, abs=1e-12)
    assert p_value_one_sided(-1.0, 100, rho, greater=True) == ONE_SIDED_P_RANGE[1]
    assert p_value_one_sided(50.0, 10**6, rho, greater=True) == ONE_SIDED_P_RANGE[0]


def test_sequential_interval_is_wider_than_fixed_and_shrinks_with_data() -> None:
    fixed = ttest(A, B)
    seq = sequential_ttest(A, B)
    assert seq.ci[0] < fixed.ci[0] and seq.ci[1] > fixed.ci[1]
    assert seq.expected == fixed.expected
    bigger = sequential_ttest(
        MeanStat(A.n * 4, A.sum * 4, A.sum_squares * 4),
        MeanStat(B.n * 4, B.sum * 4, B.sum_squares * 4),
    )
    assert bigger.ci[1] - bigger.ci[0] < seq.ci[1] - seq.ci[0]


def test_one_sided_alpha_above_half_is_refused() -> None:
    r = sequential_ttest(A, B, alternative="less", alpha=0.6)
    assert r.p_value_error == ALPHA_TOO_LARGE_ONE_SIDED


def test_vectorised_paths_match_scalar_tests() -> None:
    rng = np.random.default_rng(3)
    conv = np.cumsum(rng.binomial(300, 0.1, size=(2, 50, 6)), axis=2)
    n = 300 * np.arange(1, 7)
    rho = sequential_rho(0.05, 3600)
    fixed, seq = significance_paths(conv[0], conv[1], n, alpha=0.05, rho=rho)
    for e in range(50):
        for look in range(6):
            a = ProportionStat(int(n[look]), float(conv[0, e, look]))
            b = ProportionStat(int(n[look]), float(conv[1, e, look]))
            assert fixed[e, look] == (ttest(a, b).p_value < 0.05)
            assert seq[e, look] == sequential_ttest(a, b, tuning=3600).significant


def test_aa_simulation_shows_peeking_problem_and_sequential_fix() -> None:
    r = aa_simulation(n_experiments=2000, looks=20, seed=20240611)
    alpha, margin = r["alpha"], r["noise_margin"]
    assert margin == pytest.approx(3 * math.sqrt(0.05 * 0.95 / 2000))
    # One planned look: calibrated.
    assert abs(r["fixed_final_look_fpr"] - alpha) <= margin
    # Peeking at a fixed-horizon test inflates false positives well past alpha...
    assert r["fixed_peeking_fpr"] > alpha + margin
    # ...while the always-valid interval keeps them at or below alpha.
    assert r["sequential_peeking_fpr"] <= alpha + margin
    assert r["sequential_peeking_fpr"] < r["fixed_peeking_fpr"]


def test_aa_simulation_is_reproducible() -> None:
    assert aa_simulation(300, 5, seed=1) == aa_simulation(300, 5, seed=1)
    with pytest.raises(ValueError):
        aa_simulation(0)
