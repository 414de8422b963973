"""GrowthBook's ``evalFeature`` and ``run``, answered by the engine that serves.

GrowthBook payloads (features, saved groups, contextual bandits) are compiled by
:func:`trimtab.gbrules.compile_feature` and walked by :class:`trimtab.decide.Rules`, the very
code behind ``/v1/decide``; this module only shapes the engine's decision into GrowthBook's
``FeatureResult`` and experiment ``Result`` dicts, field for field, so GrowthBook's SDK
conformance suite (``tests/test_targeting.py``) checks the serving path.

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

from trimtab.decide import NO_VALUE_SOURCES, Decision, Options, Rules, StickyDocs, hash_string
from trimtab.gbrules import CompiledRule, CompiledSlot, compile_feature
from trimtab.targeting.hashing import normalized_weights
from trimtab.targeting.jsvalues import js_truthy

__all__ = [
    "FALLBACK_LEAF_ID",
    "Context",
    "InMemoryStickyBucketService",
    "StickyBucketService",
    "compile_features",
    "eval_feature",
    "run_experiment",
]

Json = dict[str, Any]
#: ``leafId`` reported when a contextual bandit rule falls back to its marginal weights.
FALLBACK_LEAF_ID = -1
_RUN = "\x00run"  # the name a standalone experiment is compiled under

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


def compile_features(
    features: Mapping[str, Any],
    saved_groups: Mapping[str, Any] | None = None,
    bandits: Mapping[str, Any] | None = None,
) -> dict[str, CompiledSlot]:
    """A GrowthBook payload's features compiled for the engine."""
    return {
        str(key): compile_feature(
            str(key), feature or {}, saved_groups=saved_groups, bandits=bandits
        )
        for key, feature in features.items()
    }


def _rules(ctx: Context, extra: Mapping[str, CompiledSlot] | None = None) -> Rules:
    slots = compile_features(ctx.features, ctx.saved_groups, ctx.contextual_bandits)
    if extra:
        slots.update(extra)
    return Rules(slots)


def _options(ctx: Context) -> Options:
    sticky = None
    if ctx.sticky_bucket_service is not None:
        sticky = StickyDocs(ctx.sticky_bucket_assignment_docs, ctx.sticky_bucket_service)
    return Options(
        forced=ctx.forced_variations,
        url=ctx.url,
        qa_mode=ctx.qa_mode,
        enabled=ctx.enabled,
        sticky=sticky,
    )


# --------------------------------------------------------------------------- sticky docs


def _load_sticky_docs(ctx: Context, names: Iterable[str]) -> None:
    """Fetch the docs of the user's values of ``names`` that were not fetched yet."""
    service = ctx.sticky_bucket_service
    if service is None:
        return
    wanted = {}
    for name in names:
        value = hash_string(ctx.attributes.get(name))
        if value is not None and (name, value) not in ctx._sticky_fetched:
            wanted[name] = value
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


# --------------------------------------------------------------------------- results


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
    sticky = ctx.sticky_bucket_service is not None and not experiment.get("disableStickyBucketing")
    attribute = experiment.get("hashAttribute") or "id"
    value: Any = ctx.attributes.get(attribute)
    if hash_string(value) is None:
        fallback = experiment.get("fallbackAttribute") if sticky else None
        if fallback and hash_string(ctx.attributes.get(fallback)) is not None:
            attribute, value = fallback, ctx.attributes.get(fallback)
        else:
            value = ""
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


def _experiment(ctx: Context, feature_key: str, rule: CompiledRule) -> Json:
    """The experiment a feature rule ran, as GrowthBook reports it."""
    source = rule.source
    variations = source.get("contextualVariations")
    if variations is None:
        variations = source.get("variations")
    variations = list(variations or [])
    experiment: Json = {"key": source.get("key") or feature_key, "variations": variations}
    for name in _PRESENT_FIELDS:
        if source.get(name) is not None:
            experiment[name] = source[name]
    for name in _TRUTHY_FIELDS:
        if js_truthy(source.get(name)):
            experiment[name] = source[name]
    if rule.bandit is not None:
        leaf = Rules.leaf(rule, ctx.attributes)[3]  # chosen before any forcing, as in the SDKs
        if leaf is not None:
            experiment["weights"] = list(leaf.weights)
            bandit: Json = {"leafId": leaf.leaf_id, "variationWeights": list(leaf.weights)}
        else:
            bandit = {
                "leafId": FALLBACK_LEAF_ID,
                "variationWeights": normalized_weights(len(variations), experiment.get("weights")),
            }
        if rule.bandit_version is not None:
            bandit["banditVersion"] = rule.bandit_version
        experiment["contextualBandit"] = bandit
    return experiment


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


def _rule_of(slot: CompiledSlot, d: Decision) -> CompiledRule:
    return slot.rules[slot.rank[d.rule_id]]


def eval_feature(context: Context, feature_key: str) -> Json:
    """Evaluate one feature for the context's user (GrowthBook's ``evalFeature``), returning
    the ``FeatureResult`` dict: ``value``, ``on``, ``off``, ``source``, ``ruleId`` and, when an
    experiment decided, ``experiment`` and ``experimentResult``."""
    _load_sticky_docs(context, _sticky_attribute_names(context.features))
    rules = _rules(context)
    opts = _options(context)
    d = rules.evaluate(feature_key, context.attributes, opts)
    if d is None:
        return _feature_result(None, "unknownFeature")
    slot = rules.slots[feature_key]
    if d.source in NO_VALUE_SOURCES:
        return _feature_result(None, d.source)
    value = slot.values.get(d.variant)
    if d.source == "default":
        return _feature_result(value, "defaultValue")
    rule = _rule_of(slot, d)
    if d.source == "force":
        return _feature_result(value, "force", rule.gb_id)
    assert opts.trace is not None
    traced, variation, bucket, hash_used, sticky_used, _ = opts.trace
    experiment = _experiment(context, feature_key, traced)
    result = _result(context, experiment, feature_key, variation, hash_used, bucket, sticky_used)
    if not hash_used:
        # Bandit propensities describe hashed assignments only, not forced or QA ones.
        experiment.pop("contextualBandit", None)
    return _feature_result(result["value"], "experiment", rule.gb_id, experiment, result)


def run_experiment(
    context: Context, experiment: Mapping[str, Any], feature_id: str | None = None
) -> Json:
    """Bucket the context's user into ``experiment`` (GrowthBook's ``run``), returning the
    ``Result`` dict: ``value``, ``variationId``, ``inExperiment``, ``hashUsed``, ``bucket``..."""
    names = [experiment.get("hashAttribute") or "id", experiment.get("fallbackAttribute")]
    _load_sticky_docs(context, [n for n in names if n])
    variations = experiment.get("variations") or []
    standalone = compile_feature(
        _RUN,
        {"defaultValue": variations[0] if variations else None, "rules": [experiment]},
        saved_groups=context.saved_groups,
        bandits=context.contextual_bandits,
        standalone=True,
    )
    rules = _rules(context, {_RUN: standalone})
    opts = _options(context)
    d = rules.evaluate(_RUN, context.attributes, opts)
    if d is None or d.source != "experiment" or opts.trace is None:
        return _result(context, experiment, feature_id)
    _, variation, bucket, hash_used, sticky_used, _ = opts.trace
    return _result(context, experiment, feature_id, variation, hash_used, bucket, sticky_used)
