"""GrowthBook-compatible targeting: conditions, hashing, bucketing and evaluation.

Pure functions with no I/O: the decision engine (:mod:`trimtab.decide`) compiles conditions
and buckets with them. Whole features are evaluated by that engine alone;
:mod:`trimtab.gbeval` shapes its answers as GrowthBook's SDKs do for the conformance suite.
"""

from trimtab.targeting.conditions import (
    ConditionError,
    compile_condition,
    eval_condition,
    get_path,
    walk_path,
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
    "choose_variation",
    "compile_condition",
    "eval_condition",
    "fnv1a32",
    "get_bucket_ranges",
    "get_equal_weights",
    "get_path",
    "get_query_string_override",
    "hash",
    "in_namespace",
    "walk_path",
]
