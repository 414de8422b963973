"""gbstats' frequentist test classes as adapters over trimtab's ``ttest``/``sequential_ttest``."""

from __future__ import annotations

from dataclasses import dataclass

from trimtab.experiments.stats import frequentist as fq
from trimtab.experiments.stats import sequential as sq
from trimtab.experiments.stats.statistics import combine

from ..models.results import FrequentistTestResult, Uplift


@dataclass
class FrequentistConfig:
    difference_type: str = "relative"
    alpha: float = 0.05
    test_value: float = 0.0


@dataclass
class SequentialConfig(FrequentistConfig):
    sequential_tuning_parameter: float = 5000


def _convert(r: fq.FrequentistResult) -> FrequentistTestResult:
    return FrequentistTestResult(
        expected=r.expected,
        ci=(r.ci[0], r.ci[1]),
        uplift=Uplift("normal", r.expected, r.stddev),
        errorMessage=r.error,
        pValue=r.p_value,
        pValueErrorMessage=r.p_value_error,
    )


class _Test:
    alternative: fq.Alternative = "two-sided"
    sequential = False

    def __init__(self, stats, config: FrequentistConfig | None = None) -> None:
        if config is None:
            config = SequentialConfig() if self.sequential else FrequentistConfig()
        if config.test_value != 0:
            raise NotImplementedError("trimtab tests against a null effect of 0 only")
        self.config = config
        self.stat_a = combine([pair[0] for pair in stats])
        self.stat_b = combine([pair[1] for pair in stats])

    @property
    def _relative(self) -> bool:
        return self.config.difference_type == "relative"

    def compute_result(self) -> FrequentistTestResult:
        if self.sequential:
            tuning = getattr(self.config, "sequential_tuning_parameter", sq.DEFAULT_TUNING)
            r = sq.sequential_ttest(
                self.stat_a,
                self.stat_b,
                relative=self._relative,
                alpha=self.config.alpha,
                tuning=tuning,
                alternative=self.alternative,
            )
        else:
            r = fq.ttest(
                self.stat_a,
                self.stat_b,
                relative=self._relative,
                alpha=self.config.alpha,
                alternative=self.alternative,
            )
        return _convert(r)

    def _default_output(self, error_message=None, p_value_error_message=None):
        r = fq.neutral_result(
            error_message, relative=self._relative, sequential=self.sequential, alpha=0.05
        )
        out = _convert(r)
        out.pValueErrorMessage = p_value_error_message
        return out


class TwoSidedTTest(_Test):
    pass


class OneSidedTreatmentGreaterTTest(_Test):
    alternative = "greater"


class OneSidedTreatmentLesserTTest(_Test):
    alternative = "less"


class SequentialTwoSidedTTest(_Test):
    sequential = True


class SequentialOneSidedTreatmentGreaterTTest(_Test):
    sequential = True
    alternative = "greater"


class SequentialOneSidedTreatmentLesserTTest(_Test):
    sequential = True
    alternative = "less"
