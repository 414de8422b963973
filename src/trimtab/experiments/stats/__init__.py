"""The statistics engine: per-variant sufficient statistics in, effects and decisions out.

Start with :func:`compare_variants` (every variant against the baseline: absolute and relative
Welch tests, sequential always-valid intervals, Bayesian chance to win and risk, adjusted
p-values, a sample-ratio check). The pieces are usable alone:

* statistics — :class:`MeanStat`, :class:`ProportionStat`, :class:`RatioStat`,
  :class:`CupedStat`, :class:`CupedRatioStat`, :class:`QuantileStat`;
* tests — :func:`ttest`, :func:`sequential_ttest`, :func:`bayesian_test`;
* checks — :func:`srm_check`, :func:`holm`, :func:`benjamini_hochberg`;
* planning — :func:`power_means`, :func:`power_proportions`, ``sample_size_*``, ``mde_*``;
* :func:`aa_simulation` — the false-positive rates of peeking, for benchmarks.

Results are numbers compatible with GrowthBook's gbstats (its unit tests run against this
package). Effects are relative (``Δ/μ_baseline``) unless ``relative=False``.
"""

from .analysis import Comparison, VariantResult, compare_variants
from .bayesian import BayesianResult, GaussianPrior, bayesian_test, risk
from .corrections import adjust_p_values, benjamini_hochberg, holm
from .cuped import pooled_ratio_theta, pooled_theta, with_theta
from .frequentist import FrequentistResult, ttest
from .moments import EffectMoments, effect_moments
from .power import (
    mde_means,
    mde_proportions,
    power_means,
    power_proportions,
    sample_size_means,
    sample_size_proportions,
)
from .sequential import sequential_rho, sequential_ttest
from .simulation import aa_simulation
from .srm import SrmResult, srm_check
from .statistics import (
    CupedRatioStat,
    CupedStat,
    MeanStat,
    ProportionStat,
    QuantileStat,
    RatioStat,
    Stat,
    combine,
)

__all__ = [
    "BayesianResult",
    "Comparison",
    "CupedRatioStat",
    "CupedStat",
    "EffectMoments",
    "FrequentistResult",
    "GaussianPrior",
    "MeanStat",
    "ProportionStat",
    "QuantileStat",
    "RatioStat",
    "SrmResult",
    "Stat",
    "VariantResult",
    "aa_simulation",
    "adjust_p_values",
    "bayesian_test",
    "benjamini_hochberg",
    "combine",
    "compare_variants",
    "effect_moments",
    "holm",
    "mde_means",
    "mde_proportions",
    "pooled_ratio_theta",
    "pooled_theta",
    "power_means",
    "power_proportions",
    "risk",
    "sample_size_means",
    "sample_size_proportions",
    "sequential_rho",
    "sequential_ttest",
    "srm_check",
    "ttest",
    "with_theta",
]
