"""One compile step: a GrowthBook feature (plus trimtab's additions) into the engine's rules.

Both what serves and what the conformance suite checks go through :func:`compile_feature`:
a trimtab slot is first written as a GrowthBook feature whose values are its variant names
(:func:`slot_feature`), with trimtab's additions (``policy``, ``why``, ``description``,
``sticky``) as extra rule fields; a GrowthBook payload's features are compiled as they come,
their values named ``v0``, ``v1``... The engine (:mod:`trimtab.decide`) walks the result.

Everything a rule needs at decision time is prepared here once: conditions compiled with the
saved groups bound, bucket ranges and the share of each variant (for propensities), hash seeds,
prerequisite tests, hash filters, contextual-bandit leaves, variation keys from ``meta``.

>>> slot = compile_feature("cta", {"defaultValue": "plain", "rules": [
...     {"condition": {"plan": "pro"}, "force": {"text": "Buy"}},
...     {"key": "t", "variations": ["plain", {"text": "Buy"}], "coverage": 0.5}]})
>>> slot.default, slot.values["v1"], [r.kind for r in slot.rules] == [FORCE, EXPERIMENT]
('v0', {'text': 'Buy'}, True)
>>> slot.rules[1].variations, slot.rules[1].shares
(('v0', 'v1'), {'v0': 0.25, 'v1': 0.25})
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trimtab.targeting import compile_condition, get_bucket_ranges
from trimtab.targeting.conditions import condition_source
from trimtab.targeting.hashing import weights_are_valid
from trimtab.targeting.jsvalues import js_truthy

__all__ = [
    "EXPERIMENT",
    "FORCE",
    "PASS_ON",
    "POLICY",
    "ROLLOUT",
    "CompiledRule",
    "CompiledSlot",
    "compile_feature",
    "describe_condition",
]

FORCE, ROLLOUT, EXPERIMENT, POLICY = 0, 1, 2, 3
PASS_ON = 4  # a rule with neither force nor variations: only its prerequisite gates act
Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(slots=True)
class Parent:
    """A prerequisite: the feature ``key``'s value must pass ``test`` (on ``{"value": v}``);
    a ``gate`` that fails blocks the whole feature instead of skipping the rule. ``passing``
    names the parent's variants whose value passes ("" for no value), once linked."""

    key: str
    test: Predicate
    gate: bool
    passing: frozenset[str] | None = None


def link(slots: Mapping[str, CompiledSlot]) -> None:
    """Resolve every prerequisite against the slots it names: which of the parent's variants
    pass (a test of a value, so known before any user comes)."""
    for slot in slots.values():
        for rule in slot.rules:
            for parent in rule.parents:
                target = slots.get(parent.key)
                if target is None:
                    parent.passing = None
                    continue
                names = [n for n, v in target.values.items() if parent.test({"value": v})]
                if parent.test({"value": None}):
                    names.append("")
                parent.passing = frozenset(names)


@dataclass(frozen=True, slots=True)
class HashFilter:
    """A hash filter: the user's hash of ``attribute`` under ``seed`` must fall in a range."""

    attribute: str
    seed: str
    version: int
    ranges: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class BanditLeaf:
    """One context of a contextual bandit: users matching ``test`` get ``weights``
    (``None`` when the leaf's weights are unusable: the rule's own weights apply)."""

    test: Predicate
    leaf_id: int | None
    weights: tuple[float, ...] | None


@dataclass(slots=True)
class CompiledRule:
    index: int
    rule_id: str  # trimtab's id: the rule's ``id`` or ``<slot>#<index>``
    kind: int
    condition: Predicate | None
    condition_text: str
    condition_attrs: tuple[str, ...]
    source: Mapping[str, Any] = field(default_factory=dict)  # the rule as written
    gb_id: str = ""  # GrowthBook's ruleId: the rule's ``id`` or ""
    parents: tuple[Parent, ...] = ()
    gates: bool = False  # any parent is a gate
    filters: tuple[HashFilter, ...] = ()
    force: str = ""
    coverage: float = 1.0
    hash_attribute: str = "id"
    fallback_attribute: str = ""
    hash_version: int = 1
    seed: str = ""
    key: str = ""
    variations: tuple[str, ...] = ()
    variation_keys: tuple[str, ...] = ()  # meta[i].key, else str(i)
    passthrough: tuple[bool, ...] = ()
    ranges: tuple[tuple[float, float], ...] = ()
    weights: tuple[float, ...] | None = None
    enrolls: bool = True  # an experiment with fewer than two variations enrols nobody
    namespace: tuple[str, float, float] | None = None
    bucket_range: tuple[float, float] | None = None
    bucket_version: int = 0
    min_bucket_version: int = 0
    disable_sticky: bool = False
    bandit_ref: str = ""
    bandit: tuple[BanditLeaf, ...] | None = None
    bandit_version: int | None = None
    standalone: bool = False  # run(): forced variations come before conditions
    inactive: bool = False  # run(): a draft or inactive experiment
    stopped: bool = False  # run(): a stopped experiment
    experiment_force: int | None = None  # run(): the experiment's forced variation
    policy_name: str = ""
    arms: tuple[str, ...] = ()
    # For random rules: the probability of each variant, and of any pick at all.
    shares: dict[str, float] = field(default_factory=dict)
    taken: float = 0.0
    sticky_key: str = ""  # trimtab sticky experiments: "<key>__<bucketVersion>"
    shown_paths: tuple[tuple[str, tuple[str, ...]], ...] = ()  # attributes a reason shows
    why: str = ""  # the reader-facing explanation, ``{attribute}`` placeholders included
    # Prepared once for the hot path (:func:`_prepare`):
    plain: bool = True  # no sticky key, prerequisites, filters or run() forcing to look at
    simple: bool = False  # an experiment with no sticky, bandit, passthrough or run() forcing
    namespace_seed: str = ""  # "__<namespace id>"
    reason_head: str = ""  # the reason's fixed part
    why_fixed: str | None = None  # ``why`` when it has no placeholder to fill
    # The condition as a Python expression over ``attrs`` and the constants it names, for the
    # slot's generated walk (:mod:`trimtab.walkcode`)
    condition_code: str = "True"
    condition_env: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CompiledSlot:
    name: str
    default: str  # the default variant's name ("" when the feature has no default value)
    variants: dict[str, dict[str, Any]]  # name -> payload served by /v1/decide
    values: dict[str, Any] = field(default_factory=dict)  # name -> GrowthBook value
    blocked: str = ""  # what a failed prerequisite gate shows ("": GrowthBook's null)
    rules: list[CompiledRule] = field(default_factory=list)
    rank: dict[str, int] = field(default_factory=dict)  # rule id -> precedence (0 = first)
    # (condition, plain, kind, rule) per rule: what the hot loop reads, unpacked once
    walk: tuple[tuple[Predicate | None, bool, int, CompiledRule], ...] = ()
    random: bool = False  # some rule (or prerequisite) depends on a hash or a policy
    # the walk written out for this slot (:mod:`trimtab.walkcode`), made when first decided
    fast: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    spread: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    max_changes: int = 2  # per page view, after the first render (trimtab.live)
    min_gap_s: float = 1.5  # between two changes on one page view


def describe_condition(condition: Mapping[str, Any] | None) -> str:
    """A short human-readable rendering of a GrowthBook condition."""
    if not condition:
        return "everyone"
    ops = {"$gt": ">", "$gte": "≥", "$lt": "<", "$lte": "≤", "$eq": "=", "$ne": "≠"}
    parts = []
    for key, value in condition.items():
        if key in ("$and", "$or", "$nor"):
            joiner = {"$and": " and ", "$or": " or ", "$nor": " nor "}[key]
            parts.append("(" + joiner.join(describe_condition(c) for c in value) + ")")
        elif key == "$not":
            parts.append(f"not ({describe_condition(value)})")
        elif isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            for op, operand in value.items():
                symbol = ops.get(op, op.lstrip("$") + " ")
                parts.append(f"{key} {symbol}{'' if symbol.endswith(' ') else ' '}{operand!r}")
        else:
            parts.append(f"{key} = {value!r}")
    return " and ".join(parts)


def attributes_in(condition: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The attribute paths a condition reads, in order of appearance."""
    if not condition:
        return ()
    found: list[str] = []
    for key, value in condition.items():
        if key in ("$and", "$or", "$nor"):
            for sub in value:
                found.extend(attributes_in(sub))
        elif key == "$not":
            found.extend(attributes_in(value))
        elif not key.startswith("$"):
            found.append(key)
    return tuple(dict.fromkeys(found))


class _Names:
    """Names for a GrowthBook feature's values: ``v0``, ``v1``... one per distinct JSON value."""

    def __init__(self, named: Mapping[str, Any] | None) -> None:
        self.fixed = named is not None  # trimtab slot: values are variant names already
        self.values: dict[str, Any] = dict(named or {})
        self._by_json: dict[str, str] = {}

    def __call__(self, value: Any) -> str:
        if self.fixed:
            return str(value)
        canonical = json.dumps(value, sort_keys=True, default=repr)
        name = self._by_json.get(canonical)
        if name is None:
            name = self._by_json[canonical] = f"v{len(self._by_json)}"
            self.values[name] = value
        return name


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _ranges(value: Any) -> tuple[tuple[float, float], ...]:
    out = []
    for r in value or ():
        if isinstance(r, Sequence) and len(r) >= 2:
            out.append((_float(r[0], 0.0), _float(r[1], 0.0)))
    return tuple(out)


def compile_feature(
    key: str,
    feature: Mapping[str, Any],
    *,
    saved_groups: Mapping[str, Any] | None = None,
    bandits: Mapping[str, Any] | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    values: Mapping[str, Any] | None = None,
    strict: bool = False,
    standalone: bool = False,
) -> CompiledSlot:
    """Compile one feature (``defaultValue`` and ``rules``) for the engine.

    With ``values`` (a trimtab slot) the feature's values are variant names and ``values``
    maps each to what GrowthBook SDKs see; ``variants`` are the payloads /v1/decide serves.
    ``strict`` raises on invalid conditions (config loading checks them first); otherwise an
    invalid condition never matches, as in GrowthBook. ``standalone`` compiles an experiment
    for :func:`trimtab.gbeval.run_experiment` (its ``status``, ``active`` and ``force`` count).
    """
    names = _Names(values)
    default = names(feature.get("defaultValue"))
    slot = CompiledSlot(name=key, default=default, variants=variants or {})
    for index, rule in enumerate(feature.get("rules") or ()):
        if not isinstance(rule, Mapping) or rule.get("enabled") is False:
            continue
        compiled = _compile_rule(
            key, index, rule, names, saved_groups or {}, bandits or {}, strict, standalone
        )
        if compiled is not None:
            slot.rules.append(compiled)
    slot.values = names.values
    if not slot.variants:
        slot.variants = {name: {} for name in names.values}
    slot.blocked = default if values is not None else ""
    slot.rank = {r.rule_id: pos for pos, r in enumerate(slot.rules)}
    for rule in slot.rules:
        _prepare(rule)
    slot.walk = tuple((r.condition, r.plain, r.kind, r) for r in slot.rules)
    slot.random = any(r.kind not in (FORCE, PASS_ON) or r.parents or r.filters for r in slot.rules)
    return slot


WHY_FORCE = "Adjusted to how you are reading"
WHY_EXPERIMENT = "One of {n} versions of this part of the page that we are comparing"


def _prepare(rule: CompiledRule) -> None:
    """What the engine would otherwise rebuild on every decision."""
    rule.plain = not (rule.sticky_key or rule.parents or rule.filters or rule.standalone)
    rule.simple = (
        rule.kind == EXPERIMENT
        and rule.enrolls
        and not (rule.sticky_key or rule.standalone or rule.inactive or rule.stopped)
        and rule.bandit is None
        and not any(rule.passthrough)
        and rule.experiment_force is None
    )
    if rule.namespace is not None:
        rule.namespace_seed = f"__{rule.namespace[0]}"
    if rule.kind == EXPERIMENT:
        rule.reason_head = f"experiment {rule.key}: variation "
    elif rule.kind == ROLLOUT:
        share = rule.taken if rule.bucket_range is not None else rule.coverage
        rule.reason_head = f"rule {rule.rule_id}: {rule.condition_text}, in {share:.0%} rollout"
    else:
        rule.reason_head = f"rule {rule.rule_id}: {rule.condition_text}"
    if rule.why:
        rule.why_fixed = None if "{" in rule.why else rule.why
    elif rule.kind == EXPERIMENT:
        rule.why_fixed = WHY_EXPERIMENT.format(n=len(rule.variations))
    else:
        rule.why_fixed = WHY_FORCE


def _condition(
    condition: Any, groups: Mapping[str, Any], strict: bool
) -> tuple[Predicate | None, bool]:
    """The compiled condition (None: always true) and whether one was given."""
    if not js_truthy(condition):
        return None, False
    if not isinstance(condition, Mapping):
        return (lambda attrs: False), True
    return compile_condition(condition, groups, strict=strict), True


def _condition_code(
    condition: Any, predicate: Predicate | None, groups: Mapping[str, Any], env: dict[str, Any]
) -> str:
    """The condition written as an expression over ``attrs`` (``env`` gets its constants)."""
    if predicate is None:
        return "True"
    if not isinstance(condition, Mapping):
        return "False"

    def bind(value: Any) -> str:
        name = f"_c{next(_constant_names)}"
        env[name] = value
        return name

    return condition_source(condition, groups, bind)


_constant_names = itertools.count()


def _written_predicate(code: str, env: Mapping[str, Any]) -> Predicate:
    """The condition's expression as a function: one call where the compiled condition's
    closures make one per part (the walks of _rest and the engine's loop call it)."""
    namespace = dict(env)
    exec(compile(f"def test(attrs):\n    return {code}\n", "<condition>", "exec"), namespace)
    return namespace["test"]  # type: ignore[no-any-return]


def _compile_rule(
    slot: str,
    index: int,
    rule: Mapping[str, Any],
    names: _Names,
    groups: Mapping[str, Any],
    bandits: Mapping[str, Any],
    strict: bool,
    standalone: bool,
) -> CompiledRule | None:
    gb_id = rule.get("id") if isinstance(rule.get("id"), str) else ""
    rule_id = gb_id or f"{slot}#{index}"
    condition = rule.get("condition") if isinstance(rule.get("condition"), Mapping) else None
    predicate, _ = _condition(rule.get("condition"), groups, strict)
    env: dict[str, Any] = {}
    code = _condition_code(rule.get("condition"), predicate, groups, env)
    if predicate is not None and code not in ("True", "False"):
        predicate = _written_predicate(code, env)
    parents = tuple(
        Parent(
            key=str(p.get("id", "")),
            test=compile_condition(p.get("condition") or {}, groups, strict=strict),
            gate=bool(p.get("gate")),
        )
        for p in rule.get("parentConditions") or ()
        if isinstance(p, Mapping)
    )
    filters = tuple(
        HashFilter(
            attribute=str(f.get("attribute") or "id"),
            seed=str(f.get("seed", "")),
            version=_int(f.get("hashVersion"), 2),
            ranges=_ranges(f.get("ranges")),
        )
        for f in rule.get("filters") or ()
        if isinstance(f, Mapping)
    )
    shown = attributes_in(condition)[:3]
    common: dict[str, Any] = {
        "index": index,
        "rule_id": rule_id,
        "gb_id": gb_id,
        "source": rule,
        "condition": predicate,
        "condition_code": code,
        "condition_env": env,
        "condition_text": str(rule.get("description") or describe_condition(condition)),
        "condition_attrs": attributes_in(condition),
        "shown_paths": tuple((a, tuple(a.split("."))) for a in shown),
        "why": str(rule.get("why") or ""),
        "parents": parents,
        "gates": any(p.gate for p in parents),
        "filters": filters,
        "hash_attribute": str(rule.get("hashAttribute") or "id"),
        "fallback_attribute": str(rule.get("fallbackAttribute") or ""),
        "hash_version": _int(rule.get("hashVersion"), 1) or 1,
    }
    policy = rule.get("policy")
    if isinstance(policy, Mapping):
        return CompiledRule(
            kind=POLICY,
            policy_name=str(policy.get("name", rule_id)),
            arms=tuple(str(a) for a in policy.get("arms", ())),
            coverage=_float(rule.get("coverage"), 1.0),
            seed=str(rule.get("seed") or rule_id),
            **common,
        )
    if "force" in rule and not standalone:
        force = names(rule["force"])
        coverage, bounds = rule.get("coverage"), rule.get("range")
        if coverage is None and bounds is None:
            return CompiledRule(kind=FORCE, force=force, **common)
        if bounds is not None:
            bucket_range = _ranges([bounds])[0] if _ranges([bounds]) else (0.0, 0.0)
            taken = max(0.0, bucket_range[1] - bucket_range[0])
            coverage_f = 1.0
        else:
            bucket_range = None
            coverage_f = _float(coverage, 1.0)
            # GrowthBook: a rollout to 0 % includes nobody (not even bucket 0)
            taken = min(max(coverage_f, 0.0), 1.0)
        return CompiledRule(
            kind=ROLLOUT,
            force=force,
            coverage=coverage_f,
            seed=str(rule.get("seed") or slot),
            bucket_range=bucket_range,
            shares={force: taken} if taken > 0 else {},
            taken=taken,
            **common,
        )
    raw = rule.get("contextualVariations")
    if raw is None:
        raw = rule.get("variations")
    if not isinstance(raw, list):
        # GrowthBook skips a rule with neither force nor variations, once its gates pass
        return CompiledRule(kind=PASS_ON, **common) if parents else None
    variations = tuple(names(v) for v in raw)
    exp_key = str(rule.get("key") or slot)
    raw_meta = rule.get("meta")
    metas: list[Any] = raw_meta if isinstance(raw_meta, list) else []
    keys, through = [], []
    for i in range(len(variations)):
        meta = metas[i] if i < len(metas) and isinstance(metas[i], Mapping) else {}
        keys.append(str(meta.get("key") or i))
        through.append(bool(meta.get("passthrough")))
    coverage = _float(rule.get("coverage"), 1.0)
    weights = rule.get("weights") if js_truthy(rule.get("weights")) else None
    explicit = _ranges(rule.get("ranges")) if js_truthy(rule.get("ranges")) else ()
    ranges = explicit or tuple(get_bucket_ranges(len(variations), coverage, weights))
    bandit_ref = str(rule.get("contextualBanditRef") or "")
    bandit, bandit_version = None, None
    definition = bandits.get(bandit_ref) if bandit_ref else None
    if isinstance(definition, Mapping) and not explicit:
        leaves = []
        for context in definition.get("contexts") or ():
            if not isinstance(context, Mapping):
                continue
            leaf_id = context.get("leafId")
            valid = isinstance(leaf_id, int) and not isinstance(leaf_id, bool)
            w = context.get("weights")
            leaves.append(
                BanditLeaf(
                    test=compile_condition(context.get("condition") or {}, groups, strict=False),
                    leaf_id=leaf_id if valid else None,
                    weights=tuple(w)
                    if valid and isinstance(w, list) and weights_are_valid(len(variations), w)
                    else None,
                )
            )
        bandit = tuple(leaves)
        version = definition.get("banditVersion")
        if isinstance(version, int) and not isinstance(version, bool):
            bandit_version = version
    shares: dict[str, float] = {}
    for name, (lo, hi), skip in zip(variations, ranges, through, strict=False):
        if not skip and hi > lo:
            shares[name] = shares.get(name, 0.0) + (hi - lo)
    bucket_version = _int(rule.get("bucketVersion"), 0)
    namespace = rule.get("namespace")
    status = rule.get("status") if standalone else None
    forced = rule.get("force") if standalone else None
    return CompiledRule(
        kind=EXPERIMENT,
        key=exp_key,
        seed=str(rule.get("seed") or exp_key),
        variations=variations,
        variation_keys=tuple(keys),
        passthrough=tuple(through),
        ranges=ranges,
        weights=tuple(weights) if isinstance(weights, list) else None,
        coverage=coverage,
        enrolls=len(variations) >= 2,
        # GrowthBook's [id, start, end] as JSON gives it: typed by msgspec for config slots,
        # taken as it comes from a raw payload, like the SDKs do
        namespace=tuple(namespace) if js_truthy(namespace) else None,  # type: ignore[arg-type]
        bucket_version=bucket_version,
        min_bucket_version=_int(rule.get("minBucketVersion"), 0),
        disable_sticky=bool(rule.get("disableStickyBucketing")),
        bandit_ref=bandit_ref,
        bandit=bandit,
        bandit_version=bandit_version,
        standalone=standalone,
        inactive=status == "draft" or (standalone and rule.get("active") is False),
        stopped=status == "stopped",
        experiment_force=forced
        if isinstance(forced, int) and not isinstance(forced, bool)
        else None,
        shares=shares,
        taken=sum(shares.values()),
        sticky_key=f"{exp_key}__{bucket_version}" if rule.get("sticky") else "",
        **common,
    )
