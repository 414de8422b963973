"""gbstats' error message constants, mapped to trimtab's."""

from trimtab.experiments.stats.moments import BASELINE_ZERO, ZERO_NEGATIVE_VARIANCE

ZERO_NEGATIVE_VARIANCE_MESSAGE = ZERO_NEGATIVE_VARIANCE
BASELINE_VARIATION_ZERO_MESSAGE = BASELINE_ZERO
