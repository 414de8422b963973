"""Holm and Benjamini–Hochberg against statsmodels' multipletests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from trimtab.experiments.stats import adjust_p_values, benjamini_hochberg, holm

p_lists = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=40)


@given(p_lists)
@settings(max_examples=150, deadline=None)
def test_holm_matches_statsmodels(p: list[float]) -> None:
    assert np.allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12, atol=1e-15)


@given(p_lists)
@settings(max_examples=150, deadline=None)
def test_bh_matches_statsmodels(p: list[float]) -> None:
    expected = multipletests(p, method="fdr_bh")[1]
    assert np.allclose(benjamini_hochberg(p), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_generated_mixtures(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=30), rng.uniform(0, 0.001, size=5)])
    for ours, name in ((holm, "holm"), (benjamini_hochberg, "fdr_bh")):
        assert np.allclose(ours(p), multipletests(p, method=name)[1])


def test_dispatch_and_validation() -> None:
    assert np.array_equal(adjust_p_values([0.01, 0.2], "bh"), benjamini_hochberg([0.01, 0.2]))
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        holm([1.2])
