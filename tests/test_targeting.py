"""trimtab.targeting: GrowthBook's conformance suite run as data, plus properties.

Every case of GrowthBook's suite (vendored in ``tests/data/growthbook/cases.json``) is one test,
named ``test_<section>[<case name>]``. Hypothesis then checks that compiled conditions agree
with the interpreter on arbitrary (even invalid) conditions, and with the PyPI ``growthbook``
SDK (a differential oracle, used only here) on well-formed ones.
"""

from __future__ import annotations

import doctest
import itertools
import json
import math
from pathlib import Path
from typing import Any

import growthbook.core as gb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab import gbeval, targeting
from trimtab.gbeval import Context, InMemoryStickyBucketService, eval_feature, run_experiment
from trimtab.targeting import (
    ConditionError,
    choose_variation,
    compile_condition,
    conditions,
    eval_condition,
    fnv1a32,
    get_bucket_ranges,
    get_equal_weights,
    get_query_string_override,
    hashing,
    in_namespace,
    jsvalues,
    versions,
)
from trimtab.targeting import hash as gb_hash

DATA = Path(__file__).resolve().parent / "data"
CASES: dict[str, Any] = json.loads((DATA / "growthbook" / "cases.json").read_text(encoding="utf-8"))


def named(section: str) -> list[Any]:
    """One pytest param per case, with the case name as its id."""
    return [pytest.param(*case[1:], id=case[0]) for case in CASES[section]]


def unnamed(section: str) -> list[Any]:
    """Cases without a name (``hash``, ``getEqualWeights``): the inputs are the id."""
    return [pytest.param(*case, id=json.dumps(case[:-1])) for case in CASES[section]]


def rounded(ranges: list[Any]) -> list[list[float]]:
    return [[round(start, 8), round(end, 8)] for start, end in ranges]


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize(
    ("condition", "attributes", "expected", "saved_groups"),
    [
        pytest.param(c[1], c[2], c[3], c[4] if len(c) > 4 else None, id=c[0])
        for c in CASES["evalCondition"]
    ],
)
def test_evalCondition(condition: Any, attributes: Any, expected: bool, saved_groups: Any) -> None:
    assert eval_condition(condition, attributes, saved_groups) is expected
    assert compile_condition(condition, saved_groups, strict=False)(attributes) is expected
    assert written_out(condition, saved_groups, attributes) is expected


def written_out(condition: Any, saved_groups: Any, attributes: Any) -> bool:
    """The condition as the engine's generated walk runs it (``condition_source``)."""
    env: dict[str, Any] = {}

    def bind(value: Any) -> str:
        env[f"k{len(env)}"] = value
        return f"k{len(env) - 1}"

    code = conditions.condition_source(condition, saved_groups, bind)
    return eval(code, env, {"attrs": attributes})  # type: ignore[no-any-return]


@pytest.mark.parametrize(("seed", "value", "version", "expected"), unnamed("hash"))
def test_hash(seed: str, value: str, version: int, expected: float | None) -> None:
    assert gb_hash(seed, value, version) == expected


@pytest.mark.parametrize(("args", "expected"), named("getBucketRange"))
def test_getBucketRange(args: list[Any], expected: list[list[float]]) -> None:
    num_variations, coverage, weights = args
    assert rounded(get_bucket_ranges(num_variations, coverage, weights)) == rounded(expected)


@pytest.mark.parametrize(("n", "ranges", "expected"), named("chooseVariation"))
def test_chooseVariation(n: float, ranges: list[list[float]], expected: int) -> None:
    assert choose_variation(n, ranges) == expected


@pytest.mark.parametrize(("user_id", "namespace", "expected"), named("inNamespace"))
def test_inNamespace(user_id: str, namespace: list[Any], expected: bool) -> None:
    assert in_namespace(user_id, namespace) is expected


@pytest.mark.parametrize(("n", "expected"), unnamed("getEqualWeights"))
def test_getEqualWeights(n: int, expected: list[float]) -> None:
    assert [round(w, 8) for w in get_equal_weights(n)] == [round(w, 8) for w in expected]


@pytest.mark.parametrize(
    ("key", "url", "num_variations", "expected"), named("getQueryStringOverride")
)
def test_getQueryStringOverride(key: str, url: str, num_variations: int, expected: Any) -> None:
    assert get_query_string_override(key, url, num_variations) == expected


@pytest.mark.parametrize(
    ("context", "experiment", "value", "in_experiment", "hash_used"), named("run")
)
def test_run(
    context: dict[str, Any],
    experiment: dict[str, Any],
    value: Any,
    in_experiment: bool,
    hash_used: bool,
) -> None:
    result = run_experiment(Context.from_dict(context), experiment)
    assert (result["value"], result["inExperiment"], result["hashUsed"]) == (
        value,
        in_experiment,
        hash_used,
    )


@pytest.mark.parametrize(("context", "feature_key", "expected"), named("feature"))
def test_feature(context: dict[str, Any], feature_key: str, expected: dict[str, Any]) -> None:
    assert eval_feature(Context.from_dict(context), feature_key) == expected


@pytest.mark.parametrize(
    ("context", "existing_docs", "feature_key", "expected_result", "expected_docs"),
    named("stickyBucket"),
)
def test_stickyBucket(
    context: dict[str, Any],
    existing_docs: list[dict[str, Any]],
    feature_key: str,
    expected_result: dict[str, Any] | None,
    expected_docs: dict[str, Any],
) -> None:
    service = InMemoryStickyBucketService(existing_docs)
    ctx = Context.from_dict(context, sticky_bucket_service=service)
    result = eval_feature(ctx, feature_key)
    assert result.get("experimentResult") == expected_result
    assert ctx.sticky_bucket_assignment_docs == expected_docs
    # Whatever the context now holds was also persisted through the service.
    for doc_id, doc in expected_docs.items():
        assert service.docs[doc_id] == doc


@pytest.mark.parametrize(("context", "feature_key", "expected"), named("contextualBandit"))
def test_contextualBandit(
    context: dict[str, Any], feature_key: str, expected: dict[str, Any]
) -> None:
    assert eval_feature(Context.from_dict(context), feature_key) == expected


# --------------------------------------------------------------------------- strict compile


@pytest.mark.parametrize(
    ("condition", "path", "reason"),
    [
        ({"device": {"$gtt": 1}}, "device.$gtt", "unknown operator"),
        ({"ua": {"$regex": "(unclosed"}}, "ua.$regex", "invalid regular expression"),
        ({"tags": {"$in": "a"}}, "tags.$in", "expects an array"),
        ({"depth": {"$gt": [1]}}, "depth.$gt", "expects a number or a string"),
        ({"$and": [{"a": 1}, {"b": {"$nope": 2}}]}, "$and[1].b.$nope", "unknown operator"),
        ({"$or": {"a": 1}}, "$or", "expects an array of conditions"),
        ({"x": {"$elemMatch": 3}}, "x.$elemMatch", "expects a condition object"),
        ({"x": {"$type": "integer"}}, "x.$type", "unknown type name"),
        ({"id": {"$inGroup": "missing"}}, "id.$inGroup", "unknown saved group"),
        ({"x": {"$exists": 1}}, "x.$exists", "expects true or false"),
        ({"x": {"$not": {"$size": {"$bad": 1}}}}, "x.$not.$size.$bad", "unknown operator"),
        (["not", "a", "dict"], "", "must be an object"),
    ],
)
def test_strict_compile_reports_path_and_reason(condition: Any, path: str, reason: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(condition, {"known": [1]})
    assert info.value.path == path
    assert reason in info.value.reason
    assert path in str(info.value)


def test_invalid_condition_never_matches_even_negated() -> None:
    condition = {"$not": {"name": {"$regx": "x"}}}
    assert eval_condition(condition, {"name": "x"}) is False
    assert compile_condition(condition, strict=False)({"name": "x"}) is False


def test_saved_groups_are_bound_at_compile_time() -> None:
    groups = {"vip": ["u1", "u2"]}
    rule = compile_condition({"user": {"$inGroup": "vip"}}, groups)
    assert rule({"user": "u2"}) and not rule({"user": "u3"})
    assert rule({"user": ["x", "u1"]})


def test_dotted_paths_follow_nested_objects_and_arrays() -> None:
    attributes = {"hover_ms_by_kind": {"image": 800, "text": 10}, "clicks": [{"id": "cta"}]}
    for condition, expected in [
        ({"hover_ms_by_kind.image": {"$gt": 500}}, True),
        ({"hover_ms_by_kind.video": {"$exists": False}}, True),
        ({"clicks.0.id": "cta"}, True),
        ({"clicks.length": 1}, True),
        ({"clicks.1.id": {"$exists": True}}, False),
        ({"hover_ms_by_kind.image.deeper": None}, True),
    ]:
        assert eval_condition(condition, attributes) is expected, condition
        assert compile_condition(condition)(attributes) is expected, condition


def test_module_doctests() -> None:
    for module in (conditions, gbeval, hashing, jsvalues, versions):
        failures, tried = doctest.testmod(module)
        assert tried > 0 and failures == 0, module.__name__


# --------------------------------------------------------------------------- sticky service


def test_sticky_assignment_survives_a_new_context() -> None:
    features = {
        "f": {
            "defaultValue": 0,
            "rules": [
                {
                    "key": "e",
                    "variations": [0, 1, 2],
                    "meta": [{"key": "a"}, {"key": "b"}, {"key": "c"}],
                }
            ],
        }
    }
    service = InMemoryStickyBucketService()
    first = eval_feature(
        Context(attributes={"id": "u9"}, features=features, sticky_bucket_service=service), "f"
    )
    assert service.docs["id||u9"]["assignments"] == {"e__0": first["experimentResult"]["key"]}
    # The experiment's weights change; a returning user keeps the stored variation.
    features["f"]["rules"][0]["weights"] = [0.0, 0.0, 1.0] if first["value"] != 2 else [1, 0, 0]
    again = eval_feature(
        Context(attributes={"id": "u9"}, features=features, sticky_bucket_service=service), "f"
    )
    assert again["value"] == first["value"]
    assert again["experimentResult"]["stickyBucketUsed"] is True


# --------------------------------------------------------------------------- properties

KEYS = ["num", "str", "flag", "tags", "opt", "n.x"]
TEXT = st.text(alphabet="abAB01.-", max_size=4)
NUMBER = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "$b"]), inner, max_size=2),
    ),
    max_leaves=5,
)
ATTRIBUTES = st.fixed_dictionaries(
    {"num": NUMBER, "str": TEXT, "flag": st.booleans(), "tags": st.lists(TEXT, max_size=4)},
    optional={"opt": JSON, "n": st.fixed_dictionaries({}, optional={"x": SCALAR})},
)
OPERATORS = [
    "$eq",
    "$ne",
    "$lt",
    "$lte",
    "$gt",
    "$gte",
    "$veq",
    "$vne",
    "$vlt",
    "$vgt",
    "$in",
    "$nin",
    "$ini",
    "$nini",
    "$all",
    "$alli",
    "$exists",
    "$type",
    "$not",
    "$size",
    "$elemMatch",
    "$regex",
    "$regexi",
    "$inGroup",
    "$notInGroup",
    "$unknown",
]
SAVED_GROUPS = {"g1": [1, "a", True], "g2": ["AB", 0.5]}


def conditions_with(value_condition: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    field = st.dictionaries(st.sampled_from(KEYS), value_condition, min_size=1, max_size=2)
    return st.recursive(
        field,
        lambda inner: st.one_of(
            st.fixed_dictionaries({"$and": st.lists(inner, max_size=3)}),
            st.fixed_dictionaries({"$or": st.lists(inner, max_size=3)}),
            st.fixed_dictionaries({"$nor": st.lists(inner, max_size=3)}),
            st.fixed_dictionaries({"$not": inner}),
            st.tuples(field, inner).map(lambda pair: {**pair[0], **pair[1]}),
        ),
        max_leaves=6,
    )


# Anything goes, including invalid operands and unknown operators.
ANY_VALUE_CONDITION = st.recursive(
    JSON,
    lambda inner: st.dictionaries(
        st.sampled_from(OPERATORS), st.one_of(JSON, inner), min_size=1, max_size=2
    ),
    max_leaves=6,
)


def well_formed_value_condition() -> st.SearchStrategy[Any]:
    """Conditions on which trimtab and GrowthBook's Python SDK promise the same answer: no
    invalid operands and no ordering of mixed types (where trimtab follows JavaScript)."""
    scalar_list = st.lists(SCALAR, max_size=3)
    text_list = st.lists(TEXT, max_size=3)
    version = st.sampled_from(["1.2.3", "v1.2.3", "1.10.0-rc.1", "0.9", "2", "1.2.3+b"])
    regex = st.sampled_from(["^a", "b$", "A|0", "[ab]+", r"\.", ""])

    def operator(name: str, operand: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return operand.map(lambda x: {name: x})

    on_any = st.one_of(
        SCALAR,
        *(operator(op, SCALAR) for op in ("$eq", "$ne")),
        *(operator(op, version) for op in ("$veq", "$vne", "$vlt", "$vgt")),
        *(operator(op, scalar_list) for op in ("$in", "$nin", "$ini", "$nini")),
        operator("$exists", st.booleans()),
        operator("$type", st.sampled_from(["null", "boolean", "number", "string", "array"])),
        *(operator(op, regex) for op in ("$regex", "$regexi")),
        *(operator(op, st.sampled_from(["g1", "g2", "g3"])) for op in ("$inGroup", "$notInGroup")),
    )
    on_tags = st.one_of(
        text_list,
        *(operator(op, text_list) for op in ("$all", "$alli")),
        operator(
            "$size", st.one_of(st.integers(0, 3), st.integers(0, 3).map(lambda n: {"$gt": n}))
        ),
        operator(
            "$elemMatch",
            st.one_of(TEXT.map(lambda t: {"$eq": t}), text_list.map(lambda t: {"$in": t})),
        ),
    )
    ordered = st.one_of(
        st.sampled_from(["$lt", "$lte", "$gt", "$gte"]).flatmap(
            lambda op: st.one_of(
                NUMBER.map(lambda x: ("num", {op: x})), TEXT.map(lambda x: ("str", {op: x}))
            )
        ),
    )
    plain = st.tuples(st.sampled_from(KEYS), st.one_of(on_any, on_any.map(lambda c: {"$not": c})))
    return st.one_of(plain, st.tuples(st.just("tags"), on_tags), ordered)


def well_formed_conditions() -> st.SearchStrategy[Any]:
    field = st.lists(well_formed_value_condition(), min_size=1, max_size=2).map(dict)
    return st.recursive(
        field,
        lambda inner: st.one_of(
            st.fixed_dictionaries({"$and": st.lists(inner, max_size=3)}),
            st.fixed_dictionaries({"$or": st.lists(inner, max_size=3)}),
            st.fixed_dictionaries({"$nor": st.lists(inner, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"$not": inner}),
        ),
        max_leaves=6,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    condition=st.one_of(conditions_with(ANY_VALUE_CONDITION), well_formed_conditions()),
    attributes=ATTRIBUTES,
)
def test_compiled_agrees_with_interpreter(condition: Any, attributes: Any) -> None:
    expected = eval_condition(condition, attributes, SAVED_GROUPS)
    assert compile_condition(condition, SAVED_GROUPS, strict=False)(attributes) is expected
    assert written_out(condition, SAVED_GROUPS, attributes) is expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(condition=well_formed_conditions(), attributes=ATTRIBUTES)
def test_compiled_agrees_with_growthbook_sdk(condition: Any, attributes: Any) -> None:
    expected = gb.evalCondition(attributes, condition, SAVED_GROUPS)
    assert compile_condition(condition, SAVED_GROUPS, strict=False)(attributes) is expected


@given(seed=st.text(max_size=12), value=st.text(max_size=12), version=st.sampled_from([1, 2, 3]))
def test_hash_agrees_with_growthbook_sdk_on_any_text(seed: str, value: str, version: int) -> None:
    assert fnv1a32(seed + value) == gb.fnv1a32(seed + value)
    assert gb_hash(seed, value, version) == gb.gbhash(seed, value, version)


@given(
    num_variations=st.integers(0, 6),
    coverage=st.floats(-1, 2, allow_nan=False),
    weights=st.none() | st.lists(st.floats(0, 1, allow_nan=False), max_size=6),
)
def test_bucket_ranges_are_ordered_and_sized_by_coverage(
    num_variations: int, coverage: float, weights: list[float] | None
) -> None:
    ranges = get_bucket_ranges(num_variations, coverage, weights)
    assert len(ranges) == num_variations
    clamped = min(max(coverage, 0.0), 1.0)
    for (start, end), (next_start, _) in itertools.pairwise(ranges):
        assert start <= end <= next_start + 1e-12
    assert math.isclose(
        sum(end - start for start, end in ranges), clamped * (num_variations > 0), abs_tol=0.011
    )


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60))
def test_js_number_to_string_round_trips(x: float) -> None:
    text = jsvalues.js_number_to_string(x)
    assert float(text) == float(x)
    assert "e" not in text or "e+" in text or "e-" in text


def test_public_api_is_reexported() -> None:
    for name in (
        "eval_condition",
        "compile_condition",
        "ConditionError",
        "hash",
        "fnv1a32",
        "get_bucket_ranges",
        "choose_variation",
        "in_namespace",
        "get_equal_weights",
    ):
        assert name in targeting.__all__ and hasattr(targeting, name)
