"""GrowthBook-compatible feature and experiment evaluation, on plain dicts.

This is the import path for GrowthBook payloads: give it a :class:`Context` (attributes,
features, forced variations, saved groups, contextual bandits, an optional sticky-bucket
service) and it returns the same ``FeatureResult`` and experiment ``Result`` dicts as
GrowthBook's SDKs, field for field. trimtab's own decision engine uses the compiled
conditions and the hashing functions directly; this module favours readability.

Evaluating a feature walks its rules in order: prerequisites (``parentConditions``), the
targeting ``condition`` and hash ``filters`` decide whether a rule applies; a ``force`` rule
(optionally rolled out to a ``coverage`` or ``range`` of users) returns its value; an
experiment rule buckets the user and returns the variation's value, unless the user is not
enrolled or the variation is a passthrough, in which case evaluation moves to the next rule.

>>> ctx = Context.from_dict({
...     "attributes": {"id": "123"},
...     "features": {"headline": {"defaultValue": "a", "rules": [{"variations": ["a", "b", "c"]}]}},
... })
>>> result = eval_feature(ctx, "headline")
>>> result["value"], result["source"], result["experimentResult"]["bucket"]
('a', 'experiment', 0.099)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from trimtab.targeting.conditions import eval_condition
from trimtab.targeting.hashing import (
    choose_variation,
    get_bucket_ranges,
    get_query_string_override,
    in_namespace,
    in_range,
    normalized_weights,
    weights_are_valid,
)
from trimtab.targeting.hashing import hash as gb_hash
from trimtab.targeting.jsvalues import is_number, js_number_to_string, js_truthy

__all__ = [
    "FALLBACK_LEAF_ID",
    "Context",
    "InMemoryStickyBucketService",
    "StickyBucketService",
    "eval_feature",
    "run_experiment",
]

Json = dict[str, Any]
#: ``leafId`` reported when a contextual bandit rule falls back to its marginal weights.
FALLBACK_LEAF_ID = -1

_NOT_FINITE = ("NaN", "Infinity", "-Infinity")
# Rule fields an experiment inherits: the first set when present, the second when truthy.
_PRESENT_FIELDS = ("coverage", "bucketVersion", "minBucketVersion")
_TRUTHY_FIELDS = (
    "weights",
    "hashAttribute",
    "fallbackAttribute",
    "disableStickyBucketing",
    "namespace",
    "meta",
    "ranges",
    "name",
    "phase",
    "seed",
    "hashVersion",
    "filters",
    "condition",
)


class StickyBucketService(Protocol):
    """Where sticky-bucket assignment docs live (a cookie, Redis, a database...).

    A doc is ``{"attributeName", "attributeValue", "assignments": {"<exp>__<version>": key}}``
    and is identified by ``"<attributeName>||<attributeValue>"``.
    """

    def get_all_assignments(self, attributes: Mapping[str, str]) -> dict[str, Json]:
        """The docs of the given ``{attribute name: hash value}`` pairs, keyed by doc id."""
        ...

    def save_assignments(self, doc: Json) -> None:
        """Store (replace) one doc."""
        ...


class InMemoryStickyBucketService:
    """A :class:`StickyBucketService` holding docs in a dict (tests, single process)."""

    def __init__(self, docs: Iterable[Mapping[str, Any]] = ()) -> None:
        self.docs: dict[str, Json] = {}
        for doc in docs:
            self.save_assignments(doc)

    def get_all_assignments(self, attributes: Mapping[str, str]) -> dict[str, Json]:
        found = {}
        for name, value in attributes.items():
            doc = self.docs.get(f"{name}||{value}")
            if doc is not None:
                found[f"{name}||{value}"] = _copy_doc(doc)
        return found

    def save_assignments(self, doc: Mapping[str, Any]) -> None:
        self.docs[f"{doc['attributeName']}||{doc['attributeValue']}"] = _copy_doc(doc)


def _copy_doc(doc: Mapping[str, Any]) -> Json:
    return {**doc, "assignments": dict(doc.get("assignments") or {})}


@dataclass
class Context:
    """Everything an evaluation sees, named as in GrowthBook's SDK context."""

    attributes: Json = field(default_factory=dict)
    features: Json = field(default_factory=dict)
    forced_variations: dict[str, int] = field(default_factory=dict)
    url: str = ""
    enabled: bool = True
    qa_mode: bool = False
    saved_groups: Json = field(default_factory=dict)
    contextual_bandits: Json = field(default_factory=dict)
    sticky_bucket_service: StickyBucketService | None = None
    sticky_bucket_assignment_docs: dict[str, Json] = field(default_factory=dict)
    _sticky_fetched: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], sticky_bucket_service: StickyBucketService | None = None
    ) -> Context:
        """A context from GrowthBook's JSON spelling (``forcedVariations``, ``qaMode``...)."""
        return cls(
            attributes=dict(data.get("attributes") or {}),
            features=dict(data.get("features") or {}),
            forced_variations=dict(data.get("forcedVariations") or {}),
            url=data.get("url") or "",
            enabled=data.get("enabled", True) is not False,
            qa_mode=bool(data.get("qaMode", False)),
            saved_groups=dict(data.get("savedGroups") or {}),
            contextual_bandits=dict(data.get("contextualBandits") or {}),
            sticky_bucket_service=sticky_bucket_service,
            sticky_bucket_assignment_docs=dict(data.get("stickyBucketAssignmentDocs") or {}),
        )


# --------------------------------------------------------------------------- hash attributes


def _is_hashable(value: Any) -> bool:
    # Only a non-empty string or a finite, non-zero number can identify a user.
    if isinstance(value, str):
        return value != ""
    return is_number(value) and value != 0 and js_number_to_string(value) not in _NOT_FINITE


def _hash_string(value: Any) -> str:
    """A hash value as JS ``String()`` writes it (``123`` -> ``"123"``)."""
    return value if isinstance(value, str) else js_number_to_string(value)


def _hash_attribute(ctx: Context, attribute: str | None, fallback: str | None) -> tuple[str, Any]:
    """The attribute a user is hashed by and its raw value (``""`` when it has none)."""
    name = attribute or "id"
    value = ctx.attributes.get(name)
    if _is_hashable(value):
        return name, value
    if fallback:
        fallback_value = ctx.attributes.get(fallback)
        if _is_hashable(fallback_value):
            return fallback, fallback_value
    return name, ""


# --------------------------------------------------------------------------- sticky buckets


def _sticky_enabled(ctx: Context, experiment: Mapping[str, Any]) -> bool:
    return ctx.sticky_bucket_service is not None and not experiment.get("disableStickyBucketing")


def _load_sticky_docs(ctx: Context, names: Iterable[str]) -> None:
    """Fetch the docs of the user's values of ``names`` that were not fetched yet."""
    service = ctx.sticky_bucket_service
    if service is None:
        return
    wanted = {}
    for name in names:
        value = ctx.attributes.get(name)
        if _is_hashable(value) and (name, _hash_string(value)) not in ctx._sticky_fetched:
            wanted[name] = _hash_string(value)
    if wanted:
        ctx.sticky_bucket_assignment_docs.update(service.get_all_assignments(wanted))
        ctx._sticky_fetched.update(wanted.items())


def _sticky_attribute_names(features: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for feature in features.values():
        for rule in (feature or {}).get("rules") or []:
            if rule.get("variations") is None and rule.get("contextualVariations") is None:
                continue
            names.append(rule.get("hashAttribute") or "id")
            if rule.get("fallbackAttribute"):
                names.append(rule["fallbackAttribute"])
    return names


def _sticky_key(experiment_key: str, bucket_version: int) -> str:
    return f"{experiment_key}__{bucket_version}"


def _sticky_assignments(ctx: Context, experiment: Mapping[str, Any]) -> dict[str, str]:
    """The user's stored assignments: the hash attribute's doc wins over the fallback's."""
    docs = ctx.sticky_bucket_assignment_docs
    name = experiment.get("hashAttribute") or "id"
    value = ctx.attributes.get(name)
    merged = dict(
        docs.get(f"{name}||{_hash_string(value) if _is_hashable(value) else ''}", {}).get(
            "assignments", {}
        )
    )
    fallback = experiment.get("fallbackAttribute")
    if fallback:
        value = ctx.attributes.get(fallback)
        fallback_doc = docs.get(f"{fallback}||{_hash_string(value) if _is_hashable(value) else ''}")
        for key, variation_key in (fallback_doc or {}).get("assignments", {}).items():
            merged.setdefault(key, variation_key)
    return merged


def _sticky_variation(ctx: Context, experiment: Mapping[str, Any]) -> tuple[int, bool]:
    """``(variation index or -1, whether an assignment from a blocked version exists)``."""
    key = experiment["key"]
    assignments = _sticky_assignments(ctx, experiment)
    min_version = experiment.get("minBucketVersion") or 0
    if any(_sticky_key(key, v) in assignments for v in range(min_version)):
        return -1, True
    wanted = assignments.get(_sticky_key(key, experiment.get("bucketVersion") or 0))
    if wanted:
        for index, meta in enumerate(experiment.get("meta") or []):
            if isinstance(meta, Mapping) and meta.get("key") == wanted:
                return index, False
    return -1, False


def _save_sticky(
    ctx: Context, experiment: Mapping[str, Any], attribute: str, value: str, variation_key: str
) -> None:
    doc_id = f"{attribute}||{value}"
    existing = ctx.sticky_bucket_assignment_docs.get(doc_id, {}).get("assignments", {})
    assignment = {
        _sticky_key(experiment["key"], experiment.get("bucketVersion") or 0): variation_key
    }
    merged = {**existing, **assignment}
    if merged == existing:
        return
    doc = {"attributeName": attribute, "attributeValue": value, "assignments": merged}
    ctx.sticky_bucket_assignment_docs[doc_id] = doc
    assert ctx.sticky_bucket_service is not None
    ctx.sticky_bucket_service.save_assignments(doc)


# --------------------------------------------------------------------------- experiments


def _result(
    ctx: Context,
    experiment: Mapping[str, Any],
    feature_id: str | None,
    variation: int = -1,
    hash_used: bool = False,
    bucket: float | None = None,
    sticky_used: bool = False,
) -> Json:
    variations = experiment["variations"]
    in_experiment = 0 <= variation < len(variations)
    if not in_experiment:
        variation = 0
    metas = experiment.get("meta") or []
    meta = (
        metas[variation] if variation < len(metas) and isinstance(metas[variation], Mapping) else {}
    )
    fallback = experiment.get("fallbackAttribute") if _sticky_enabled(ctx, experiment) else None
    attribute, value = _hash_attribute(ctx, experiment.get("hashAttribute"), fallback)
    result: Json = {
        "featureId": feature_id,
        "key": meta.get("key") or str(variation),
        "inExperiment": in_experiment,
        "hashUsed": hash_used,
        "variationId": variation,
        "value": variations[variation] if variations else None,
        "hashAttribute": attribute,
        "hashValue": value,
        "stickyBucketUsed": sticky_used,
    }
    if meta.get("name"):
        result["name"] = meta["name"]
    if bucket is not None:
        result["bucket"] = bucket
    if meta.get("passthrough"):
        result["passthrough"] = True
    bandit = experiment.get("contextualBandit")
    if bandit and hash_used and in_experiment:
        result["leafId"] = bandit["leafId"]
        result["variationWeights"] = bandit["variationWeights"]
        if "banditVersion" in bandit:
            result["banditVersion"] = bandit["banditVersion"]
    return result


def _is_filtered_out(ctx: Context, filters: Iterable[Mapping[str, Any]]) -> bool:
    for hash_filter in filters:
        _, value = _hash_attribute(ctx, hash_filter.get("attribute"), None)
        if value == "":
            return True
        n = gb_hash(
            hash_filter.get("seed", ""), _hash_string(value), hash_filter.get("hashVersion", 2)
        )
        if n is None or not any(in_range(n, r) for r in hash_filter.get("ranges") or []):
            return True
    return False


def _in_rollout(ctx: Context, feature_key: str, rule: Mapping[str, Any]) -> bool:
    coverage, bounds = rule.get("coverage"), rule.get("range")
    if coverage is None and bounds is None:
        return True
    if bounds is None and coverage == 0:
        return False
    _, value = _hash_attribute(ctx, rule.get("hashAttribute"), rule.get("fallbackAttribute"))
    if value == "":
        return False
    n = gb_hash(rule.get("seed") or feature_key, _hash_string(value), rule.get("hashVersion") or 1)
    if n is None:
        return False
    return in_range(n, bounds) if bounds else n <= coverage


def run_experiment(
    context: Context, experiment: Mapping[str, Any], feature_id: str | None = None
) -> Json:
    """Bucket the context's user into ``experiment`` (GrowthBook's ``run``), returning the
    ``Result`` dict: ``value``, ``variationId``, ``inExperiment``, ``hashUsed``, ``bucket``..."""
    names = [experiment.get("hashAttribute") or "id", experiment.get("fallbackAttribute")]
    _load_sticky_docs(context, [n for n in names if n])
    return _run(context, dict(experiment), feature_id, frozenset())


def _run(ctx: Context, exp: Json, feature_id: str | None, stack: frozenset[str]) -> Json:
    key, variations = exp["key"], exp["variations"]
    if len(variations) < 2 or not ctx.enabled:
        return _result(ctx, exp, feature_id)
    forced = get_query_string_override(key, ctx.url, len(variations))
    if forced is not None:
        return _result(ctx, exp, feature_id, forced)
    if ctx.forced_variations.get(key) is not None:
        return _result(ctx, exp, feature_id, ctx.forced_variations[key])
    if exp.get("status") == "draft" or exp.get("active") is False:
        return _result(ctx, exp, feature_id)

    sticky = _sticky_enabled(ctx, exp)
    attribute, value = _hash_attribute(
        ctx, exp.get("hashAttribute"), exp.get("fallbackAttribute") if sticky else None
    )
    if value == "":
        return _result(ctx, exp, feature_id)
    hash_value = _hash_string(value)

    assigned, blocked = _sticky_variation(ctx, exp) if sticky else (-1, False)
    found_sticky = assigned >= 0
    if not found_sticky:
        if exp.get("filters"):
            if _is_filtered_out(ctx, exp["filters"]):
                return _result(ctx, exp, feature_id)
        elif exp.get("namespace") and not in_namespace(hash_value, exp["namespace"]):
            return _result(ctx, exp, feature_id)
        if js_truthy(exp.get("condition")) and not eval_condition(
            exp["condition"], ctx.attributes, ctx.saved_groups
        ):
            return _result(ctx, exp, feature_id)
        if exp.get("parentConditions") and (
            _prerequisites(ctx, exp["parentConditions"], stack) != "pass"
        ):
            return _result(ctx, exp, feature_id)

    n = gb_hash(exp.get("seed") or key, hash_value, exp.get("hashVersion") or 1)
    if n is None:
        return _result(ctx, exp, feature_id)
    if not found_sticky:
        coverage = exp.get("coverage")
        ranges = exp.get("ranges") or get_bucket_ranges(
            len(variations), 1.0 if coverage is None else coverage, exp.get("weights")
        )
        assigned = choose_variation(n, ranges)
    if blocked:
        return _result(ctx, exp, feature_id, sticky_used=True)
    if assigned < 0:
        return _result(ctx, exp, feature_id)
    if exp.get("force") is not None:
        return _result(ctx, exp, feature_id, exp["force"])
    if ctx.qa_mode or exp.get("status") == "stopped":
        return _result(ctx, exp, feature_id)

    result = _result(ctx, exp, feature_id, assigned, True, n, found_sticky)
    if sticky:
        _save_sticky(ctx, exp, attribute, hash_value, result["key"])
    return result


# --------------------------------------------------------------------------- features


def _feature_result(
    value: Any,
    source: str,
    rule_id: str = "",
    experiment: Json | None = None,
    result: Json | None = None,
) -> Json:
    on = js_truthy(value)
    out: Json = {"value": value, "on": on, "off": not on, "source": source, "ruleId": rule_id}
    if experiment is not None:
        out["experiment"] = experiment
        out["experimentResult"] = result
    return out


def eval_feature(context: Context, feature_key: str) -> Json:
    """Evaluate one feature for the context's user (GrowthBook's ``evalFeature``), returning
    the ``FeatureResult`` dict: ``value``, ``on``, ``off``, ``source``, ``ruleId`` and, when an
    experiment decided, ``experiment`` and ``experimentResult``."""
    _load_sticky_docs(context, _sticky_attribute_names(context.features))
    return _eval_feature(context, feature_key, frozenset())


def _prerequisites(
    ctx: Context, parents: Iterable[Mapping[str, Any]], stack: frozenset[str]
) -> str:
    """``"pass"``, ``"fail"`` (skip the rule), ``"gate"`` (block the feature) or ``"cyclic"``."""
    for parent in parents:
        parent_result = _eval_feature(ctx, parent["id"], stack)
        if parent_result["source"] == "cyclicPrerequisite":
            return "cyclic"
        condition = parent.get("condition") or {}
        if not eval_condition(condition, {"value": parent_result["value"]}, ctx.saved_groups):
            return "gate" if parent.get("gate") else "fail"
    return "pass"


def _experiment_from_rule(feature_key: str, rule: Mapping[str, Any], variations: list[Any]) -> Json:
    experiment: Json = {"key": rule.get("key") or feature_key, "variations": variations}
    for name in _PRESENT_FIELDS:
        if rule.get(name) is not None:
            experiment[name] = rule[name]
    for name in _TRUTHY_FIELDS:
        if js_truthy(rule.get(name)):
            experiment[name] = rule[name]
    return experiment


def _apply_contextual_bandit(ctx: Context, experiment: Json, bandit_ref: str) -> None:
    """Route the user to the first matching leaf of a contextual bandit and bucket with that
    leaf's weights; with no usable leaf, keep the rule's marginal weights (leaf -1). A
    reference to an unknown bandit leaves a plain experiment."""
    definition = ctx.contextual_bandits.get(bandit_ref)
    if not isinstance(definition, Mapping) or experiment.get("ranges"):
        return
    count = len(experiment["variations"])
    leaf = next(
        (
            context
            for context in definition.get("contexts") or []
            if isinstance(context, Mapping)
            and eval_condition(context.get("condition") or {}, ctx.attributes, ctx.saved_groups)
        ),
        None,
    )
    leaf_id = leaf.get("leafId") if leaf else None
    if (
        leaf is not None
        and isinstance(leaf_id, int)
        and not isinstance(leaf_id, bool)
        and weights_are_valid(count, leaf.get("weights"))
    ):
        experiment["weights"] = list(leaf["weights"])
        bandit: Json = {"leafId": leaf_id, "variationWeights": list(leaf["weights"])}
    else:
        bandit = {
            "leafId": FALLBACK_LEAF_ID,
            "variationWeights": normalized_weights(count, experiment.get("weights")),
        }
    version = definition.get("banditVersion")
    if isinstance(version, int) and not isinstance(version, bool):
        bandit["banditVersion"] = version
    experiment["contextualBandit"] = bandit


def _eval_feature(ctx: Context, key: str, stack: frozenset[str]) -> Json:
    if key not in ctx.features:
        return _feature_result(None, "unknownFeature")
    if key in stack:
        return _feature_result(None, "cyclicPrerequisite")
    stack = stack | {key}
    feature = ctx.features[key] or {}
    for rule in feature.get("rules") or []:
        rule_id = rule.get("id") or ""
        if rule.get("parentConditions"):
            outcome = _prerequisites(ctx, rule["parentConditions"], stack)
            if outcome == "gate":
                return _feature_result(None, "prerequisite")
            if outcome == "cyclic":
                return _feature_result(None, "cyclicPrerequisite")
            if outcome == "fail":
                continue
        if rule.get("condition") and not eval_condition(
            rule["condition"], ctx.attributes, ctx.saved_groups
        ):
            continue
        if rule.get("filters") and _is_filtered_out(ctx, rule["filters"]):
            continue
        if "force" in rule:
            if not _in_rollout(ctx, key, rule):
                continue
            return _feature_result(rule["force"], "force", rule_id)

        variations = rule.get("contextualVariations")
        if variations is None:
            variations = rule.get("variations")
        if variations is None:
            continue
        experiment = _experiment_from_rule(key, rule, variations)
        if rule.get("contextualBanditRef"):
            _apply_contextual_bandit(ctx, experiment, rule["contextualBanditRef"])
        result = _run(ctx, experiment, key, stack)
        if not (result["hashUsed"] and result["inExperiment"]):
            # Bandit propensities describe hashed assignments only, not forced or QA ones.
            experiment.pop("contextualBandit", None)
        if not result["inExperiment"] or result.get("passthrough"):
            continue
        return _feature_result(result["value"], "experiment", rule_id, experiment, result)
    return _feature_result(feature.get("defaultValue"), "defaultValue")
