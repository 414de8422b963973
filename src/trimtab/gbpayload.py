"""trimtab's slots as a GrowthBook SDK payload, and a GrowthBook payload as trimtab slots.

A slot is a GrowthBook feature whose value is the shown variant's **value**: the ``value``
field of the variant's payload when it declares one (any JSON: a boolean, a number, an object),
else the variant's name. Rules translate one to one (force, rollout, experiment, namespace,
filters, prerequisites, explicit ranges, meta, fallback attribute, seed, hash version), and
saved groups travel with the payload; the site's global holdout becomes a first rule of every
feature. One difference is written out: a failed prerequisite *gate* blocks a GrowthBook
feature (its value is null) but shows a trimtab slot's default, so a gate travels as a
non-gate rule forcing that value when the prerequisite fails.

Two kinds of slot have no GrowthBook form, and :func:`export_payload` leaves them out, naming
each with its reason under ``trimtab.excluded``:

* a slot with a ``policy`` rule: a learning bandit picks there, GrowthBook SDKs cannot;
* a slot whose conditions read trimtab's live attributes (declared features, model scores,
  segments): only trimtab's server computes them, an SDK would evaluate without them.

>>> from trimtab.config import parse_config
>>> config = parse_config({"slots": {"cta": {"default": "plain", "variants": {
...     "plain": {}, "bold": {"value": "Buy now"}},
...     "rules": [{"id": "t", "key": "t", "variations": ["plain", "bold"]}]}}})
>>> payload = export_payload(config)
>>> payload["features"]["cta"]["rules"][0]["variations"]
['plain', 'Buy now']
>>> import_payload(payload)["slots"]["cta"]["variants"]
{'plain': {}, 'bold': {'value': 'Buy now'}}
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from trimtab.config import RuleDecl, SiteConfig, SlotDecl
from trimtab.models.spec import SEGMENT_ATTRIBUTES

HOLDOUT_RULE_ID = "trimtab-holdout"


class PayloadError(ValueError):
    """A GrowthBook payload trimtab cannot take: ``path: problem`` naming the field."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def variant_value(slot: SlotDecl, variant: str) -> Any:
    """What a GrowthBook SDK (or OpenFeature) sees for ``variant``: its ``value``, or its name.

    >>> slot = SlotDecl(default="a", variants={"a": {}, "on": {"value": True}})
    >>> variant_value(slot, "a"), variant_value(slot, "on")
    ('a', True)
    """
    payload = slot.variants.get(variant) or {}
    return payload.get("value", variant)


def live_attributes(config: SiteConfig) -> set[str]:
    """Attributes only trimtab's server computes: declared features, model scores, segments."""
    names = set(config.features) | set(config.models)
    if config.segments:
        names.update(SEGMENT_ATTRIBUTES)
    return names


def _attributes_in(condition: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(condition, dict):
        for key, value in condition.items():
            if key in ("$and", "$or", "$nor") and isinstance(value, list):
                for sub in value:
                    found |= _attributes_in(sub)
            elif key == "$not":
                found |= _attributes_in(value)
            elif not key.startswith("$"):
                found.add(key.split(".")[0])
    return found


def exclusion(config: SiteConfig, name: str, live: set[str] | None = None) -> str:
    """Why slot ``name`` has no GrowthBook form ("" when it has one)."""
    slot = config.slots[name]
    live = live_attributes(config) if live is None else live
    for i, rule in enumerate(slot.rules):
        if not rule.enabled:
            continue
        rid = rule.id or f"rules[{i}]"
        for parent in rule.parent_conditions or ():
            if parent.id != name and parent.id in config.slots:
                why = exclusion(config, parent.id, live)
                if why:
                    return f"rule {rid} needs slot {parent.id}, which has no GrowthBook form"
        if rule.policy is not None:
            return (
                f"rule {rid} is a learning policy ({rule.policy.get('type', 'bandit')}); "
                "GrowthBook SDKs cannot run it: use /v1/decide"
            )
        hashed = {rule.hash_attribute, rule.fallback_attribute or rule.hash_attribute}
        hashed |= {f.attribute for f in rule.filters or ()}
        read = sorted((_attributes_in(rule.condition) | hashed) & live)
        if read:
            return (
                f"rule {rid} reads live attributes only trimtab computes ({', '.join(read)}); "
                "use /v1/decide"
            )
    return ""


def exclusions(config: SiteConfig) -> dict[str, str]:
    """Every slot without a GrowthBook form, with its reason."""
    live = live_attributes(config)
    out = {}
    for name in config.slots:
        reason = exclusion(config, name, live)
        if reason:
            out[name] = reason
    return out


def export_payload(config: SiteConfig) -> dict[str, Any]:
    """The GrowthBook SDK payload (``features``) of every slot that has a GrowthBook form."""
    excluded = exclusions(config)
    features = {name: export_feature(config, name) for name in config.slots if name not in excluded}
    payload: dict[str, Any] = {"features": features}
    if config.saved_groups:
        payload["savedGroups"] = {k: list(v) for k, v in config.saved_groups.items()}
    payload["trimtab"] = {"excluded": excluded}
    return payload


def export_feature(config: SiteConfig, name: str) -> dict[str, Any]:
    slot = config.slots[name]
    rules: list[dict[str, Any]] = []
    holdout = config.site.holdout
    if holdout > 0.0:
        # trimtab's holdout: hash version 2 of the user id under the holdout seed, below h
        rules.append(
            {
                "id": HOLDOUT_RULE_ID,
                "force": variant_value(slot, slot.default),
                "range": [0.0, holdout],
                "hashAttribute": "id",
                "hashVersion": 2,
                "seed": config.site.holdout_seed,
            }
        )
    for rule in slot.rules:
        if rule.enabled:
            rules.extend(_export_rules(name, slot, rule))
    feature: dict[str, Any] = {"defaultValue": variant_value(slot, slot.default)}
    if rules:
        feature["rules"] = rules
    return feature


def inclusive_bound(coverage: float, hash_version: int) -> float:
    """The exclusive upper bound of the buckets a rollout of ``coverage`` includes.

    trimtab (like GrowthBook's JS SDK) includes a user whose bucket equals the coverage;
    GrowthBook's Python SDK 4 does not. Buckets are multiples of 1/1000 (hash version 1) or
    1/10000 (version 2), so ``[0, next bucket)`` states the same users to every SDK.

    >>> inclusive_bound(0.3, 1), inclusive_bound(0.3, 2), inclusive_bound(1.0, 1)
    (0.301, 0.3001, 1.001)
    """
    steps = 1000 if hash_version == 1 else 10000
    return (math.floor(round(coverage * steps, 6)) + 1) / steps


def _export_rules(name: str, slot: SlotDecl, rule: RuleDecl) -> list[dict[str, Any]]:
    """A config rule as GrowthBook rules: its gates first (each a rule forcing the default
    when the prerequisite fails, as trimtab shows it), then the rule itself."""
    out: list[dict[str, Any]] = []
    parents = rule.parent_conditions or []
    if variant_value(slot, slot.blocked or slot.default) is None:
        return [_export_rule(name, slot, rule)]  # GrowthBook's own gates show null too
    for parent in parents:
        if parent.gate:
            out.append(
                {
                    "parentConditions": [
                        {"id": parent.id, "condition": {"$not": parent.condition}}
                    ],
                    "force": variant_value(slot, slot.default),
                }
            )
    if rule.force is not None or rule.variations is not None or rule.policy is not None:
        out.append(_export_rule(name, slot, rule))
    return out


def _export_rule(name: str, slot: SlotDecl, rule: RuleDecl) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.id:
        out["id"] = rule.id
    if rule.condition:
        out["condition"] = rule.condition
    keep_gates = variant_value(slot, slot.blocked or slot.default) is None
    parents = [p for p in rule.parent_conditions or () if keep_gates or not p.gate]
    if parents:
        out["parentConditions"] = [
            {"id": p.id, "condition": p.condition, **({"gate": True} if p.gate else {})}
            for p in parents
        ]
    if rule.filters:
        out["filters"] = [
            {
                "attribute": f.attribute,
                "seed": f.seed,
                "hashVersion": f.hash_version,
                "ranges": [list(r) for r in f.ranges],
            }
            for f in rule.filters
        ]
    if rule.fallback_attribute:
        out["fallbackAttribute"] = rule.fallback_attribute
    if rule.force is None and rule.variations is None:
        return out  # only prerequisites: a gate
    if rule.force is not None:
        out["force"] = variant_value(slot, rule.force)
        if rule.coverage is None and rule.range is None:
            return out
        if rule.range is not None:
            out["range"] = list(rule.range)
        elif not rule.coverage:
            out["range"] = [0.0, 0.0]  # a rollout to 0 % includes nobody, not even bucket 0
        else:
            out["range"] = [0.0, inclusive_bound(rule.coverage, rule.hash_version)]
        out["hashAttribute"] = rule.hash_attribute
        out["hashVersion"] = rule.hash_version
        out["seed"] = rule.seed or name
        return out
    variations = rule.variations or []
    key = rule.key or name
    out["key"] = key
    out["seed"] = rule.seed or key
    out["hashAttribute"] = rule.hash_attribute
    out["hashVersion"] = rule.hash_version
    out["variations"] = [variant_value(slot, v) for v in variations]
    if rule.weights is not None:
        out["weights"] = list(rule.weights)
    if rule.coverage is not None:
        out["coverage"] = rule.coverage
    if rule.ranges is not None:
        out["ranges"] = [list(r) for r in rule.ranges]
    if rule.namespace is not None:
        out["namespace"] = list(rule.namespace)
    if rule.name:
        out["name"] = rule.name
    metas = []
    for j, v in enumerate(variations):  # the variant names come back on import
        meta = rule.meta[j] if rule.meta is not None else None
        entry: dict[str, Any] = {"key": (meta.key if meta and meta.key else v)}
        if meta is not None and meta.name:
            entry["name"] = meta.name
        if meta is not None and meta.passthrough:
            entry["passthrough"] = True
        metas.append(entry)
    out["meta"] = metas
    if rule.sticky:
        out["bucketVersion"] = rule.bucket_version
    else:
        out["disableStickyBucketing"] = True
    return out


# -- import -----------------------------------------------------------------------------------

_TOP_LEVEL = {"features", "dateUpdated", "status", "trimtab", "savedGroups"}
_EMPTY_OK = {"experiments", "contextualBandits"}
_FEATURE_FIELDS = {"defaultValue", "rules"}
_COMMON = {
    "id",
    "condition",
    "hashAttribute",
    "hashVersion",
    "seed",
    "name",
    "parentConditions",
    "filters",
    "fallbackAttribute",
    "description",
}
_FORCE_FIELDS = _COMMON | {"force", "coverage", "range"}
_EXPERIMENT_FIELDS = _COMMON | {
    "key",
    "variations",
    "weights",
    "coverage",
    "namespace",
    "meta",
    "ranges",
    "bucketVersion",
    "disableStickyBucketing",
    "phase",
    "type",
    "banditVersion",
}
_WHY_NOT = {
    "minBucketVersion": "sticky bucket blocking (minBucketVersion) is not supported by "
    "trimtab's server-side sticky assignments: raise bucketVersion instead",
    "tracks": "remote-evaluation tracking data is not a rule to import",
    "contextualBanditRef": "contextual bandits are declared as trimtab policy rules instead",
    "contextualVariations": "contextual bandits are declared as trimtab policy rules instead",
    "encryptedFeatures": "encrypted payloads are not supported: export without encryption",
    "encryptedExperiments": "encrypted payloads are not supported: export without encryption",
    "encryptedSavedGroups": "encrypted payloads are not supported: export without encryption",
    "experiments": "visual and URL-redirect experiments are not supported",
    "contextualBandits": "contextual bandits are declared as trimtab policy rules instead",
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")


def _refuse(path: str, field: str) -> PayloadError:
    return PayloadError(f"{path}.{field}", _WHY_NOT.get(field, "unknown field, not supported"))


class _Namer:
    """Variant names for a feature's values: the string itself, else its JSON, made unique."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # canonical JSON of the value -> name
        self.variants: dict[str, dict[str, Any]] = {}

    def name(self, value: Any, hint: str = "") -> str:
        canonical = json.dumps(value, sort_keys=True)
        if canonical in self.names:
            return self.names[canonical]
        if isinstance(value, str) and _NAME.match(value) and not hint:
            base = value
        elif hint and _NAME.match(hint):
            base = hint
        elif not isinstance(value, dict | list) and _NAME.match(canonical):
            base = canonical
        else:
            base = f"v{len(self.variants)}"
        name, n = base, 2
        while name in self.variants:
            name, n = f"{base}-{n}", n + 1
        self.variants[name] = {} if value == name else {"value": value}
        self.names[canonical] = name
        return name


def import_payload(data: Any) -> dict[str, Any]:
    """A GrowthBook SDK payload as a trimtab config mapping (``{"slots": …}``).

    Anything trimtab cannot evaluate the way GrowthBook does raises :class:`PayloadError`
    naming the field; parse the result with :func:`trimtab.config.parse_config` to validate
    the rest (conditions, weights, ranges).
    """
    if not isinstance(data, dict):
        raise PayloadError("$", "a GrowthBook payload is a JSON object with `features`")
    for key, value in data.items():
        if key in _EMPTY_OK and not value:
            continue
        if key not in _TOP_LEVEL:
            raise _refuse("$", key)
    features = data.get("features")
    if not isinstance(features, dict) or not features:
        raise PayloadError("$.features", "expected a non-empty object of features")
    slots = {}
    for key, feature in features.items():
        slots[str(key)] = _import_feature(str(key), feature, f"$.features.{key}")
    out: dict[str, Any] = {"slots": slots}
    groups = data.get("savedGroups")
    if groups:
        if not isinstance(groups, dict):
            raise PayloadError("$.savedGroups", "expected an object of saved groups")
        out["saved_groups"] = groups
    return out


def _import_feature(key: str, feature: Any, path: str) -> dict[str, Any]:
    if not isinstance(feature, dict):
        raise PayloadError(path, "a feature is an object with defaultValue and rules")
    for field in feature:
        if field not in _FEATURE_FIELDS:
            raise _refuse(path, field)
    rules_in = feature.get("rules") or []
    if not isinstance(rules_in, list):
        raise PayloadError(f"{path}.rules", "expected a list of rules")
    namer = _Namer()
    # experiment variations first, so their meta names the variants
    for rule in rules_in:
        if isinstance(rule, dict) and isinstance(rule.get("variations"), list):
            raw_meta = rule.get("meta")
            meta: list[Any] = raw_meta if isinstance(raw_meta, list) else []
            for j, value in enumerate(rule["variations"]):
                hint = meta[j].get("key", "") if j < len(meta) and isinstance(meta[j], dict) else ""
                namer.name(value, hint if isinstance(hint, str) and not hint.isdigit() else "")
    default = namer.name(feature.get("defaultValue"))
    rules = [
        _import_rule(rule, namer, f"{path}.rules[{i}]")
        for i, rule in enumerate(rules_in)
        if not _inert(rule)
    ]
    slot: dict[str, Any] = {"default": default, "variants": namer.variants, "rules": rules}
    if any(p.get("gate") for r in rules for p in r.get("parentConditions") or ()):
        slot["blocked"] = namer.name(None)  # what GrowthBook shows when a gate fails: null
    return slot


def _inert(rule: Any) -> bool:
    """A rule GrowthBook skips whatever the user: no force, no variations, no gate."""
    if not isinstance(rule, dict) or "force" in rule or "variations" in rule:
        return False
    parents = rule.get("parentConditions")
    gated = isinstance(parents, list) and any(
        isinstance(p, dict) and p.get("gate") for p in parents
    )
    return not gated and set(rule) <= {
        "id",
        "condition",
        "name",
        "description",
        "parentConditions",
        "filters",
    }


def _import_rule(rule: Any, namer: _Namer, path: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise PayloadError(path, "a rule is an object")
    # empty prerequisite or filter lists change nothing: GrowthBook exports them so
    rule = {
        k: v
        for k, v in rule.items()
        if not ((k in _WHY_NOT or k in ("parentConditions", "filters")) and v in ([], None, ""))
    }
    for field in rule:
        if field in _WHY_NOT:
            raise _refuse(path, field)
    is_experiment = "variations" in rule
    allowed = _EXPERIMENT_FIELDS if is_experiment else _FORCE_FIELDS
    for field in rule:
        if field not in allowed:
            raise _refuse(path, field)
    gate_only = not is_experiment and "force" not in rule
    if is_experiment and "force" in rule:
        raise PayloadError(path, "a rule needs exactly one of force or variations")
    out: dict[str, Any] = {}
    for field in (
        "id",
        "name",
        "description",
        "condition",
        "filters",
        "hashAttribute",
        "fallbackAttribute",
        "hashVersion",
        "seed",
        "coverage",
    ):
        if field in rule and rule[field] is not None:
            out[field] = rule[field]
    parents = rule.get("parentConditions") or []
    for j, parent in enumerate(parents):
        if not isinstance(parent, dict):
            raise PayloadError(f"{path}.parentConditions[{j}]", "a prerequisite is an object")
    if parents:
        out["parentConditions"] = parents
    if gate_only:
        return out
    if not is_experiment:
        out["force"] = namer.name(rule["force"])
        if "range" in rule:
            out["range"] = rule["range"]
        elif rule.get("coverage") == 0:
            out["enabled"] = False  # GrowthBook: a rollout to 0 % includes nobody
        return out
    variations = rule["variations"]
    if not isinstance(variations, list):
        raise PayloadError(f"{path}.variations", "expected a list of values")
    metas = rule.get("meta") or []
    for j, meta in enumerate(metas):
        if isinstance(meta, dict):
            for field in meta:
                if field not in ("key", "name", "passthrough"):
                    raise _refuse(f"{path}.meta[{j}]", field)
    out["variations"] = [namer.name(v) for v in variations]
    if metas:
        out["meta"] = [
            {k: v for k, v in m.items() if k in ("key", "name", "passthrough") and v}
            if isinstance(m, dict)
            else {}
            for m in metas
        ]
    if rule.get("ranges"):
        out["ranges"] = rule["ranges"]
    if rule.get("type", "standard") not in ("standard", "multi-armed-bandit"):
        raise PayloadError(f"{path}.type", f"experiment type {rule['type']!r} is not supported")
    for field in ("key", "weights", "namespace"):
        if field in rule and rule[field] is not None:
            out[field] = rule[field]
    if "bucketVersion" in rule and not rule.get("disableStickyBucketing"):
        out["sticky"] = True
        out["bucketVersion"] = rule["bucketVersion"]
    return out
