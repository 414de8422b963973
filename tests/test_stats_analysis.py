"""compare_variants: one call agrees with the individual tests and flags SRM."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from trimtab.experiments.stats import (
    CupedStat,
    ProportionStat,
    bayesian_test,
    compare_variants,
    holm,
    sequential_ttest,
    ttest,
    with_theta,
)

STATS = [ProportionStat(10000, 1000), ProportionStat(10050, 1100), ProportionStat(9980, 990)]


def test_each_variant_matches_the_individual_tests() -> None:
    c = compare_variants(STATS, names=["control", "a", "b"], tuning=20000)
    assert [v.name for v in c.variants] == ["control", "a", "b"]
    base = c.variants[0]
    assert base.is_baseline and base.relative is None and base.bayesian is None
    for v, s in zip(c.variants[1:], STATS[1:], strict=True):
        assert v.absolute == ttest(STATS[0], s, relative=False)
        assert v.relative == ttest(STATS[0], s)
        assert v.sequential == sequential_ttest(STATS[0], s, tuning=20000)
        assert v.bayesian == bayesian_test(STATS[0], s)
        assert v.n == s.n and v.mean == s.mean
    raw = [v.relative.p_value for v in c.variants[1:]]
    assert [v.p_value_adjusted for v in c.variants[1:]] == pytest.approx(holm(raw).tolist())
    assert c.srm.ok


def test_other_baseline_absolute_difference_and_no_correction() -> None:
    c = compare_variants(STATS, baseline=2, difference="absolute", correction=None)
    assert c.variants[2].is_baseline
    v = c.variants[0]
    assert v.sequential == sequential_ttest(STATS[2], STATS[0], relative=False)
    assert v.p_value_adjusted is None


def test_srm_uses_configured_weights() -> None:
    skewed = [ProportionStat(9000, 900), ProportionStat(11000, 1100)]
    assert not compare_variants(skewed).srm.ok
    assert compare_variants(skewed, weights=[0.45, 0.55]).srm.ok


def test_cuped_variants_report_adjusted_means_and_serialise() -> None:
    rng = np.random.default_rng(1)
    pre = rng.normal(10, 2, (2, 2000))
    post = pre * 0.8 + rng.normal(2, 1, (2, 2000))
    stats = [CupedStat.from_values(post[i], pre[i]) for i in range(2)]
    c = compare_variants(stats)
    _, b = with_theta(*stats)
    assert c.variants[1].adjusted_mean == pytest.approx(b.mean)
    assert c.variants[1].mean == pytest.approx(post[1].mean())
    decoded = msgspec.json.decode(msgspec.json.encode(c))
    assert decoded["variants"][1]["relative"]["expected"] == pytest.approx(
        c.variants[1].relative.expected
    )


def test_bad_calls() -> None:
    with pytest.raises(ValueError):
        compare_variants(STATS[:1])
    with pytest.raises(ValueError):
        compare_variants(STATS, baseline=5)
    with pytest.raises(ValueError):
        compare_variants(STATS, names=["x"])
