"""One call for a whole experiment metric: every variant against the baseline.

:func:`compare_variants` takes one sufficient statistic per variant (in variant order) and
returns, for each, the absolute and relative fixed-horizon tests, the sequential (always-valid)
interval, the Bayesian chance to win and risk, a multiple-comparison-adjusted p-value across
the treatments, and one sample-ratio-mismatch verdict for the experiment.

>>> from trimtab.experiments.stats.statistics import ProportionStat
>>> c = compare_variants([ProportionStat(1000, 100), ProportionStat(1000, 130)])
>>> c.srm.ok, round(c.variants[1].relative.expected, 2), c.variants[0].relative
(True, 0.3, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from .bayesian import BayesianResult, GaussianPrior, bayesian_test
from .corrections import adjust_p_values
from .cuped import with_theta
from .frequentist import FrequentistResult, ttest
from .sequential import DEFAULT_TUNING, sequential_ttest
from .srm import DEFAULT_THRESHOLD, SrmResult, srm_check
from .statistics import Stat


class VariantResult(msgspec.Struct, frozen=True):
    """Everything known about one variant; the test fields are ``None`` for the baseline.

    ``sequential`` and ``bayesian`` use the comparison's ``difference`` (relative by default).
    ``p_value_adjusted`` is the fixed-horizon p-value of that difference after the correction
    across all treatments (``None`` without a correction).
    """

    index: int
    name: str
    n: int
    mean: float
    adjusted_mean: float
    is_baseline: bool
    absolute: FrequentistResult | None = None
    relative: FrequentistResult | None = None
    sequential: FrequentistResult | None = None
    bayesian: BayesianResult | None = None
    p_value_adjusted: float | None = None


class Comparison(msgspec.Struct, frozen=True):
    """Per-variant results plus the experiment-wide sample-ratio check."""

    variants: list[VariantResult]
    srm: SrmResult
    baseline: int
    difference: Literal["relative", "absolute"]
    correction: Literal["holm", "bh"] | None


def compare_variants(
    stats: Sequence[Stat],
    *,
    names: Sequence[str] | None = None,
    baseline: int = 0,
    weights: Sequence[float] | None = None,
    difference: Literal["relative", "absolute"] = "relative",
    alpha: float = 0.05,
    tuning: float = DEFAULT_TUNING,
    prior: GaussianPrior | None = None,
    inverse: bool = False,
    correction: Literal["holm", "bh"] | None = "holm",
    srm_threshold: float = DEFAULT_THRESHOLD,
) -> Comparison:
    """Analyse each variant in ``stats`` against ``stats[baseline]``.

    ``weights`` are the configured traffic shares for the SRM check (equal by default);
    ``tuning`` is the sequential test's expected final total sample size per comparison;
    ``inverse`` marks a metric where lower is better (it flips chance to win and risk).
    """
    if len(stats) < 2:
        raise ValueError("need a baseline and at least one other variant")
    if not 0 <= baseline < len(stats):
        raise ValueError(f"baseline index {baseline} out of range")
    labels = list(names) if names is not None else [str(i) for i in range(len(stats))]
    if len(labels) != len(stats):
        raise ValueError("one name per variant, please")
    relative = difference == "relative"
    base = stats[baseline]
    rows: list[dict[str, Any]] = []
    for i, stat in enumerate(stats):
        row: dict[str, Any] = {
            "index": i,
            "name": labels[i],
            "n": stat.n,
            "mean": stat.unadjusted_mean,
            "adjusted_mean": stat.mean,
            "is_baseline": i == baseline,
        }
        if i != baseline:
            a, b = with_theta(base, stat)
            row["adjusted_mean"] = b.mean
            row["absolute"] = ttest(a, b, relative=False, alpha=alpha)
            row["relative"] = ttest(a, b, relative=True, alpha=alpha)
            row["sequential"] = sequential_ttest(
                a, b, relative=relative, alpha=alpha, tuning=tuning
            )
            row["bayesian"] = bayesian_test(
                a, b, relative=relative, alpha=alpha, prior=prior, inverse=inverse
            )
        rows.append(row)
    if correction is not None:
        key = "relative" if relative else "absolute"
        treated = [r for r in rows if not r["is_baseline"]]
        raw = [r[key].p_value if r[key].p_value is not None else 1.0 for r in treated]
        for r, q in zip(treated, adjust_p_values(raw, correction), strict=True):
            r["p_value_adjusted"] = float(q)
    return Comparison(
        variants=[VariantResult(**r) for r in rows],
        srm=srm_check([s.n for s in stats], weights, threshold=srm_threshold),
        baseline=baseline,
        difference=difference,
        correction=correction,
    )
