"""GrowthBook-compatible targeting: conditions, hashing, bucketing and evaluation.

Pure functions with no I/O. The decision engine's hot path uses :func:`compile_condition` and
the hashing functions; :func:`eval_feature` and :func:`run_experiment` evaluate imported
GrowthBook payloads exactly as GrowthBook's SDKs do (its conformance suite runs in the tests).
"""

from trimtab.targeting.conditions import (
    ConditionError,
    compile_condition,
    eval_condition,
    get_path,
    walk_path,
)
from trimtab.targeting.evaluate import (
    Context,
    InMemoryStickyBucketService,
    StickyBucketService,
    eval_feature,
    run_experiment,
)
from trimtab.targeting.hashing import (
    choose_variation,
    fnv1a32,
    get_bucket_ranges,
    get_equal_weights,
    get_query_string_override,
    hash,
    in_namespace,
)

__all__ = [
    "ConditionError",
    "Context",
    "InMemoryStickyBucketService",
    "StickyBucketService",
    "choose_variation",
    "compile_condition",
    "eval_condition",
    "eval_feature",
    "fnv1a32",
    "get_bucket_ranges",
    "get_equal_weights",
    "get_path",
    "get_query_string_override",
    "hash",
    "in_namespace",
    "run_experiment",
    "walk_path",
]
