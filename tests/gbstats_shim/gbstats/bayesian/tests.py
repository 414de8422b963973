"""gbstats' effect Bayesian test as an adapter over trimtab's ``bayesian_test``."""

from __future__ import annotations

from dataclasses import dataclass, field

from trimtab.experiments.stats import bayesian as bs
from trimtab.experiments.stats.statistics import combine

from ..models.results import BayesianTestResult, Uplift


@dataclass
class GaussianPrior:
    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


@dataclass
class EffectBayesianConfig:
    difference_type: str = "relative"
    alpha: float = 0.05
    inverse: bool = False
    prior_type: str = "relative"
    prior_effect: GaussianPrior = field(default_factory=GaussianPrior)


class EffectBayesianABTest:
    def __init__(self, stats, config: EffectBayesianConfig | None = None) -> None:
        self.config = config or EffectBayesianConfig()
        self.stat_a = combine([pair[0] for pair in stats])
        self.stat_b = combine([pair[1] for pair in stats])

    def compute_result(self) -> BayesianTestResult:
        c = self.config
        p = c.prior_effect
        r = bs.bayesian_test(
            self.stat_a,
            self.stat_b,
            relative=c.difference_type == "relative",
            alpha=c.alpha,
            prior=bs.GaussianPrior(mean=p.mean, variance=p.variance, proper=p.proper),
            prior_type=c.prior_type,
            inverse=c.inverse,
        )
        return BayesianTestResult(
            expected=r.expected,
            ci=(r.ci[0], r.ci[1]),
            uplift=Uplift("normal", r.expected, r.stddev),
            errorMessage=r.error,
            chanceToWin=r.chance_to_win,
            risk=list(r.risk),
            riskType="relative" if r.relative else "absolute",
        )

    @staticmethod
    def get_risk(mu: float, sigma: float) -> list[float]:
        return list(bs.risk(mu, sigma))
