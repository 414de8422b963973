"""The decision: which variant each slot shows, with its source, propensity and reason.

For each slot the engine walks the slot's ordered rules, GrowthBook-style: a rule whose
condition fails is skipped; a force rule picks its variant (a rollout only for users whose hash
falls within its coverage); an experiment rule buckets the user by hash; a policy rule asks a
bandit policy. When no rule picks, the slot's default shows.

**Propensity** is the probability that this user gets this variant when the hash of every
rule is treated as random: the conditions are fixed by the user's attributes, the buckets are
not. A force rule has propensity 1; a 50/50 experiment 0.5; a user outside a 20 % rollout whose
default shows has propensity 0.8. This is what makes logged decisions usable for off-policy
evaluation.

Conditions are compiled once (:func:`trimtab.targeting.compile_condition`) so that deciding a
page of three slots over twenty rules takes a few microseconds.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from trimtab.config import RuleDecl, SiteConfig, SlotDecl
from trimtab.targeting import (
    choose_variation,
    compile_condition,
    get_bucket_ranges,
    get_path,
    in_namespace,
    walk_path,
)
from trimtab.targeting import hash as bucket_hash

FORCE, ROLLOUT, EXPERIMENT, POLICY = 0, 1, 2, 3


# Defaults shown without personalising (no consent, state unreachable): chosen by no rule or
# policy, so no experiment or learner counts them.
PLACEHOLDER_SOURCES = frozenset({"no_consent", "degraded"})
# Shown to the holder of a signed QA force link (trimtab.qa): logged, but chosen by no rule or
# policy either, so experiments, learners and off-policy evaluation leave it out too.
QA_SOURCE = "qa"
NOT_CHOSEN_SOURCES = PLACEHOLDER_SOURCES | {QA_SOURCE}


class Decision(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One slot's decision (not tracked by the cyclic GC: it holds no cycles)."""

    slot: str
    variant: str
    source: str  # default | force | experiment | policy | degraded
    rule_id: str = ""
    propensity: float = 1.0
    reason: str = ""
    detail: str = ""  # the technical account behind ``reason`` (a policy's numbers)
    decision_id: str = ""
    experiment: str = ""
    variation: int = -1
    payload: dict[str, Any] | None = None
    why: str = ""  # what the reader is told, in plain language ("" for default content)


STICKY_ATTRIBUTE = "_sticky"

# Called when a sticky experiment assigns a user: (user id, sticky key, variation, propensity).
AssignCallback = Callable[[str, str, int, float], None]


class PolicyChoice(NamedTuple):
    """A bandit's pick: the arm, its exact probability and why.

    ``mode`` says whether the policy *exploits* (shows what it believes is best), *explores*
    (shows something else to keep learning) or keeps its *control* share on the default;
    ``reason`` says so in words a reader understands, ``detail`` gives the numbers.
    """

    arm: str
    propensity: float
    mode: Literal["exploit", "explore", "control"]
    reason: str
    detail: str = ""


class PolicyChooser(Protocol):
    """What a ``policy`` rule needs from a bandit."""

    def choose_for(
        self, attrs: Mapping[str, Any], arms: list[str], decision_id: str = ""
    ) -> PolicyChoice:
        """The arm for this decision (``decision_id`` is what its exposure will carry)."""
        ...

    def shares(self, attrs: Mapping[str, Any], arms: list[str]) -> dict[str, float]:
        """The probability of each arm were the policy asked now (for propensities of
        decisions it did not make)."""
        ...


@dataclass(slots=True)
class CompiledRule:
    index: int
    rule_id: str
    kind: int
    condition: Callable[[Mapping[str, Any]], bool] | None
    condition_text: str
    condition_attrs: tuple[str, ...]
    force: str = ""
    coverage: float = 1.0
    hash_attribute: str = "id"
    hash_version: int = 1
    seed: str = ""
    key: str = ""
    variations: tuple[str, ...] = ()
    ranges: tuple[tuple[float, float], ...] = ()
    namespace: tuple[str, float, float] | None = None
    bucket_range: tuple[float, float] | None = None
    policy_name: str = ""
    arms: tuple[str, ...] = ()
    # For random rules: the probability of each variant, and of any pick at all.
    shares: dict[str, float] = field(default_factory=dict)
    taken: float = 0.0
    sticky_key: str = ""  # set for sticky experiment rules: "<key>__<bucketVersion>"
    shown_paths: tuple[tuple[str, tuple[str, ...]], ...] = ()  # attributes a reason shows
    why: str = ""  # the reader-facing explanation, ``{attribute}`` placeholders included


@dataclass(slots=True)
class CompiledSlot:
    name: str
    default: str
    variants: dict[str, dict[str, Any]]
    rules: list[CompiledRule] = field(default_factory=list)
    # (condition, kind, sticky key, rule) per rule: what the hot loop reads, unpacked once
    walk: tuple[tuple[Any, int, str, CompiledRule], ...] = ()
    rank: dict[str, int] = field(default_factory=dict)  # rule id -> precedence (0 = first)
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


def _attributes_in(condition: Mapping[str, Any] | None) -> tuple[str, ...]:
    if not condition:
        return ()
    found: list[str] = []
    for key, value in condition.items():
        if key in ("$and", "$or", "$nor"):
            for sub in value:
                found.extend(_attributes_in(sub))
        elif key == "$not":
            found.extend(_attributes_in(value))
        elif not key.startswith("$"):
            found.append(key)
    return tuple(dict.fromkeys(found))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return repr(value)


def _bucketable(rule: CompiledRule, attrs: Mapping[str, Any]) -> str | None:
    """The user's hash value for a random rule, or None when the rule cannot bucket them.

    A missing hash attribute or an experiment namespace the user is outside of rules the
    user out deterministically, like a condition does.
    """
    value = attrs.get(rule.hash_attribute)
    if value is None or value == "":
        return None
    value = str(value)
    namespace = rule.namespace
    if rule.kind == EXPERIMENT and namespace is not None and not in_namespace(value, namespace):
        return None
    return value


def _bucket(rule: CompiledRule, attrs: Mapping[str, Any]) -> float | None:
    """The user's bucket in ``[0, 1)`` for a random rule, or None when they cannot be bucketed."""
    value = _bucketable(rule, attrs)
    return None if value is None else bucket_hash(rule.seed, value, rule.hash_version)


def decision_json(d: Decision, with_payload: bool = True) -> dict[str, Any]:
    """A decision as the API returns it (``docs/protocol.md``)."""
    out: dict[str, Any] = {
        "slot": d.slot,
        "variant": d.variant,
        "decision_id": d.decision_id,
        "source": d.source,
        "rule_id": d.rule_id,
        "propensity": d.propensity,
        "reason": d.reason,
    }
    if d.detail:
        out["detail"] = d.detail
    if with_payload:
        out["payload"] = d.payload
    if d.why:
        out["why"] = d.why
    if d.experiment:
        out["experiment"] = d.experiment
        out["variation"] = d.variation
    return out


def compile_slot(name: str, slot: SlotDecl) -> CompiledSlot:
    compiled = CompiledSlot(
        name=name,
        default=slot.default,
        variants=slot.variants,
        max_changes=slot.max_changes_per_view,
        min_gap_s=slot.min_ms_between_changes / 1000.0,
    )
    for i, rule in enumerate(slot.rules):
        if rule.enabled:
            compiled.rules.append(_compile_rule(name, i, rule))
    compiled.walk = tuple((r.condition, r.kind, r.sticky_key, r) for r in compiled.rules)
    compiled.rank = {r.rule_id: pos for pos, r in enumerate(compiled.rules)}
    return compiled


_PLACEHOLDER = re.compile(r"\{([\w.]+)\}")
WHY_FORCE = "Adjusted to how you are reading"
WHY_EXPERIMENT = "One of {n} versions of this part of the page that we are comparing"
WHY_POLICY = "We are trying out what to show here and learning from what readers open"


def explain(template: str, attrs: Mapping[str, Any]) -> str:
    """A rule's ``why`` with its ``{attribute}`` placeholders filled from what it saw.

    >>> explain("Because you read {interest_top} stories", {"interest_top": "sport"})
    'Because you read sport stories'
    """
    if "{" not in template:
        return template

    def value(match: re.Match[str]) -> str:
        found = get_path(attrs, match[1])
        if isinstance(found, float):
            return _fmt(found)
        return "" if found is None else str(found)

    return _PLACEHOLDER.sub(value, template)


def _compile_rule(slot: str, index: int, rule: RuleDecl) -> CompiledRule:
    rule_id = rule.id or f"{slot}#{index}"
    shown = _attributes_in(rule.condition)[:3]
    common: dict[str, Any] = {
        "shown_paths": tuple((a, tuple(a.split("."))) for a in shown),
        "index": index,
        "rule_id": rule_id,
        "condition": compile_condition(rule.condition) if rule.condition else None,
        "condition_text": rule.description or describe_condition(rule.condition),
        "condition_attrs": _attributes_in(rule.condition),
        "why": rule.why,
        "hash_attribute": rule.hash_attribute,
        "hash_version": rule.hash_version,
    }
    if rule.policy is not None:
        name = str(rule.policy.get("name", rule_id))
        arms = tuple(rule.policy.get("arms", ()))
        coverage = 1.0 if rule.coverage is None else rule.coverage
        return CompiledRule(
            kind=POLICY,
            policy_name=name,
            arms=arms,
            coverage=coverage,
            seed=rule.seed or rule_id,
            **common,
        )
    if rule.force is not None:
        if rule.coverage is None and rule.range is None:
            return CompiledRule(kind=FORCE, force=rule.force, **common)
        coverage = 1.0 if rule.coverage is None else rule.coverage
        taken = rule.range[1] - rule.range[0] if rule.range is not None else coverage
        return CompiledRule(
            kind=ROLLOUT,
            force=rule.force,
            coverage=coverage,
            seed=rule.seed or slot,
            bucket_range=rule.range,
            shares={rule.force: taken},
            taken=taken,
            **common,
        )
    variations = tuple(rule.variations or ())
    key = rule.key or slot
    coverage = 1.0 if rule.coverage is None else rule.coverage
    ranges = tuple(get_bucket_ranges(len(variations), coverage, rule.weights))
    shares: dict[str, float] = {}
    for name, (lo, hi) in zip(variations, ranges, strict=True):
        shares[name] = shares.get(name, 0.0) + (hi - lo)
    return CompiledRule(
        shares=shares,
        taken=sum(shares.values()),
        sticky_key=f"{key}__{rule.bucket_version}" if rule.sticky else "",
        kind=EXPERIMENT,
        seed=rule.seed or key,
        key=key,
        variations=variations,
        ranges=ranges,
        coverage=coverage,
        namespace=rule.namespace,
        **common,
    )


class Engine:
    """Decides slots for users from their live features.

    ``features_of(user, session, page_view_id)`` supplies the attributes (normally
    :meth:`trimtab.features.FeatureProcessor.features_of`); ``policies`` maps policy names to
    choosers for ``policy`` rules. Each decision is passed to ``log`` with the attributes it saw.
    """

    def __init__(
        self,
        config: SiteConfig,
        features_of: Callable[..., dict[str, Any]] | None = None,
        log: Callable[[list[Decision], Mapping[str, Any]], None] | None = None,
        policies: Mapping[str, PolicyChooser] | None = None,
        assign: AssignCallback | None = None,
    ) -> None:
        self.features_of = features_of or (lambda user, session, page_view_id="": {"id": user})
        self.log = log
        self.assign = assign
        self.policies: Mapping[str, PolicyChooser] = dict(policies or {})
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:06x}-"
        self.reload(config)

    def reload(self, config: SiteConfig) -> None:
        """Swap in a new config atomically (already validated by the loader)."""
        self.config = config
        self.slots = {name: compile_slot(name, decl) for name, decl in config.slots.items()}
        self.holdout = config.site.holdout
        self.holdout_seed = config.site.holdout_seed

    def decide(
        self,
        user: str,
        session: str,
        slots: Iterable[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        page_view_id: str = "",
    ) -> list[Decision]:
        """Decide the given slots (all slots when None) for one user and session.

        ``extra`` overrides attributes for this decision only (the page a request is for);
        ``page_view_id`` names the page view whose ``page``-scoped features apply.
        """
        attrs = (
            self.features_of(user, session, page_view_id)
            if page_view_id
            else self.features_of(user, session)
        )
        if page_view_id:
            attrs["page_view_id"] = page_view_id  # a policy chooses once per page view
        if extra:
            attrs.update(extra)
        return self.decide_attrs(attrs, slots)

    def decide_attrs(
        self, attrs: Mapping[str, Any], slots: Iterable[str] | None = None
    ) -> list[Decision]:
        """Decide from attributes directly (the CLI, tests and benchmarks use this)."""
        names = self.slots.keys() if slots is None else slots
        decisions = []
        held_out = self.holdout > 0.0 and self._in_holdout(attrs)
        for name in names:
            slot = self.slots.get(name)
            if slot is None:
                continue
            if held_out:
                decision = self._held_out(slot, attrs)
            else:
                decision = self._decide_slot(slot, attrs)
                if self.holdout > 0.0:
                    # the holdout shows the default:
                    # P(v) = (1-h)·P(v | not held out) + h·[v = default]
                    decision.propensity *= 1.0 - self.holdout
                    if decision.variant == slot.default:
                        decision.propensity += self.holdout
            if not decision.decision_id:
                decision.decision_id = self._new_id()
            decisions.append(decision)
        if self.log is not None and decisions:
            self.log(decisions, attrs)
        return decisions

    def defaults(
        self,
        slots: Iterable[str] | None = None,
        reason: str = "",
        source: str = "degraded",
        user: str = "",
        session: str = "",
    ) -> list[Decision]:
        """Every slot's default, not personalised: ``degraded`` when state is unreachable,
        ``no_consent`` without personalization consent.

        Logged like every decision (with no features: none were used) when ``user`` is given,
        so an exposure of a default still refers to a logged decision; they belong to no
        experiment, so experiments leave such traffic out in every arm alike.
        """
        names = self.slots.keys() if slots is None else slots
        out = []
        for name in names:
            slot = self.slots.get(name)
            if slot is not None:
                out.append(
                    Decision(
                        slot=name,
                        variant=slot.default,
                        source=source,
                        reason=reason or "degraded: live features unavailable, default shown",
                        payload=slot.variants[slot.default],
                        decision_id=self._new_id(),
                    )
                )
        if self.log is not None and user and out:
            self.log(out, {"id": user, "session_id": session})
        return out

    def forced(
        self, choices: Mapping[str, str], user: str = "", session: str = "", reason: str = ""
    ) -> list[Decision]:
        """Decisions of a QA force link (``{slot: variant}``, already verified): source
        ``qa``, logged like every decision. Slots or variants the config does not declare
        (any more) are left out."""
        out = []
        for name, variant in choices.items():
            slot = self.slots.get(name)
            if slot is None or variant not in slot.variants:
                continue
            out.append(
                Decision(
                    slot=name,
                    variant=variant,
                    source=QA_SOURCE,
                    rule_id="tt_force",
                    reason=reason or f"QA force link: {name} shows {variant}",
                    payload=slot.variants[variant],
                    decision_id=self._new_id(),
                    why="Shown for a quality check (a QA link chose it)",
                )
            )
        if self.log is not None and user and out:
            self.log(out, {"id": user, "session_id": session})
        return out

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"  # events.DECISION_ID's grammar

    def _in_holdout(self, attrs: Mapping[str, Any]) -> bool:
        user = attrs.get("id")
        if user is None or user == "":
            return False
        n = bucket_hash(self.holdout_seed, str(user), 2)
        return n is not None and n < self.holdout

    def _held_out(self, slot: CompiledSlot, attrs: Mapping[str, Any]) -> Decision:
        normal = self._rest(slot, 0, slot.default, 1.0, attrs)
        return Decision(
            slot=slot.name,
            variant=slot.default,
            source="holdout",
            propensity=self.holdout + (1.0 - self.holdout) * normal,
            reason=f"in the {self.holdout:.0%} global holdout: every slot shows its default",
            payload=slot.variants[slot.default],
        )

    def _sticky(
        self, slot: CompiledSlot, rule: CompiledRule, attrs: Mapping[str, Any]
    ) -> Decision | None:
        """The stored assignment of a sticky experiment, if this user has one."""
        stored = attrs.get(STICKY_ATTRIBUTE)
        if not stored:
            return None
        hit = stored.get(rule.sticky_key)
        if hit is None or not 0 <= hit[0] < len(rule.variations):
            return None
        index, propensity = int(hit[0]), float(hit[1])
        variant = rule.variations[index]
        return Decision(
            slot=slot.name,
            variant=variant,
            source="experiment",
            rule_id=rule.rule_id,
            propensity=propensity,
            reason=f"experiment {rule.key}: variation {index} of {len(rule.variations)} "
            "(sticky assignment)",
            experiment=rule.key,
            variation=index,
            payload=slot.variants[variant],
            why=explain(rule.why, attrs) or WHY_EXPERIMENT.format(n=len(rule.variations)),
        )

    def _decide_slot(self, slot: CompiledSlot, attrs: Mapping[str, Any]) -> Decision:
        """Walk the rules once; the propensity is accumulated along the way (module doc).

        ``mass`` is the probability of reaching the current rule; ``passed`` holds what
        earlier random rules that did not pick this user would have given each variant.
        """
        mass = 1.0
        passed: dict[str, float] | None = None
        for pos, (condition, kind, sticky, rule) in enumerate(slot.walk):
            if sticky:
                kept = self._sticky(slot, rule, attrs)
                if kept is not None:
                    return kept
            if condition is not None and not condition(attrs):
                continue
            if kind == FORCE:
                p = mass + (passed.get(rule.force, 0.0) if passed else 0.0)
                return self._made(slot, rule, rule.force, "force", p, attrs, -1, 0.0)
            if kind == POLICY:
                if rule.policy_name not in self.policies:
                    continue
                if rule.coverage < 1.0:
                    n = _bucket(rule, attrs)
                    if n is None:
                        continue
                    if n >= rule.coverage:
                        # Outside the policy's share of traffic: the rules below decide. Had
                        # the hash fallen inside, the policy would have picked.
                        passed = self._pass_policy(rule, attrs, mass, passed)
                        mass *= 1.0 - rule.coverage
                        continue
                return self._by_policy(slot, rule, pos, attrs, mass, passed)
            hash_value = _bucketable(rule, attrs)
            if hash_value is None:
                continue
            n = bucket_hash(rule.seed, hash_value, rule.hash_version)
            if n is None:
                continue
            if kind == ROLLOUT:
                lo, hi = rule.bucket_range or (0.0, rule.coverage)
                inside = lo <= n < hi if rule.bucket_range is not None else n <= rule.coverage
                if inside:
                    p = mass * rule.taken + (passed.get(rule.force, 0.0) if passed else 0.0)
                    p += self._rest(slot, pos + 1, rule.force, mass * (1.0 - rule.taken), attrs)
                    return self._made(slot, rule, rule.force, "force", p, attrs, -1, n)
            else:
                index = choose_variation(n, rule.ranges)
                if index >= 0:
                    variant = rule.variations[index]
                    p = mass * rule.shares[variant] + (passed.get(variant, 0.0) if passed else 0.0)
                    p += self._rest(slot, pos + 1, variant, mass * (1.0 - rule.taken), attrs)
                    if rule.sticky_key and self.assign is not None:
                        user = attrs.get("id")
                        if user:
                            self.assign(str(user), rule.sticky_key, index, p)
                    return self._made(slot, rule, variant, "experiment", p, attrs, index, n)
            if passed is None:
                passed = {}
            for name, share in rule.shares.items():
                passed[name] = passed.get(name, 0.0) + mass * share
            mass *= 1.0 - rule.taken
        p = mass + (passed.get(slot.default, 0.0) if passed else 0.0)
        return Decision(
            slot=slot.name,
            variant=slot.default,
            source="default",
            propensity=p,
            reason="no rule matched: default content",
            payload=slot.variants[slot.default],
        )

    def _pass_policy(
        self,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        mass: float,
        passed: dict[str, float] | None,
    ) -> dict[str, float]:
        """Add what a policy rule the user's hash passed by would have given each arm."""
        out = {} if passed is None else passed
        policy = self.policies[rule.policy_name]
        try:
            shares = policy.shares(attrs, list(rule.arms))
        except Exception:  # a tripped or broken policy would have shown the default
            return out
        for arm, share in shares.items():
            out[arm] = out.get(arm, 0.0) + mass * rule.coverage * share
        return out

    def _by_policy(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        pos: int,
        attrs: Mapping[str, Any],
        mass: float = 1.0,
        passed: dict[str, float] | None = None,
    ) -> Decision:
        policy = self.policies[rule.policy_name]
        arms = list(rule.arms or slot.variants)
        decision_id = self._new_id()
        try:
            choice = policy.choose_for(attrs, arms, decision_id)
        except Exception as exc:  # a broken policy must never break the page
            return Decision(
                slot=slot.name,
                variant=slot.default,
                source="default",
                rule_id=rule.rule_id,
                propensity=1.0,
                reason=f"policy {rule.policy_name} fell back to the default: "
                f"{exc or type(exc).__name__}",
                payload=slot.variants[slot.default],
            )
        arm = choice.arm
        propensity = mass * rule.coverage * choice.propensity
        propensity += passed.get(arm, 0.0) if passed else 0.0
        if rule.coverage < 1.0:  # had the hash fallen outside, the rules below would decide
            propensity += self._rest(slot, pos + 1, arm, mass * (1.0 - rule.coverage), attrs)
        return Decision(
            slot=slot.name,
            variant=arm,
            source="policy",
            rule_id=rule.rule_id,
            propensity=propensity,
            reason=choice.reason,
            detail=f"{choice.detail}; rule {rule.rule_id}: {rule.condition_text}",
            decision_id=decision_id,
            payload=slot.variants[arm],
            # the policy's own words say whether it explores or exploits
            why=explain(rule.why, attrs) or choice.reason or WHY_POLICY,
        )

    def _made(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        variant: str,
        source: str,
        propensity: float,
        attrs: Mapping[str, Any],
        variation: int,
        bucket: float,
    ) -> Decision:
        seen = ", ".join(f"{a}={_fmt(walk_path(attrs, parts))}" for a, parts in rule.shown_paths)
        if rule.kind == EXPERIMENT:
            reason = (
                f"experiment {rule.key}: variation {variation} of {len(rule.variations)} "
                f"(bucket {bucket:.4f}) for {rule.condition_text}"
            )
        elif rule.kind == ROLLOUT:
            reason = f"rule {rule.rule_id}: {rule.condition_text}, in {rule.coverage:.0%} rollout"
        else:
            reason = f"rule {rule.rule_id}: {rule.condition_text}"
        if seen:
            reason += f" (saw {seen})"
        if rule.why:
            why = explain(rule.why, attrs)
        else:
            why = WHY_EXPERIMENT.format(n=len(rule.variations)) if variation >= 0 else WHY_FORCE
        return Decision(
            slot=slot.name,
            variant=variant,
            source=source,
            rule_id=rule.rule_id,
            propensity=propensity,
            reason=reason,
            experiment=rule.key,
            variation=variation,
            payload=slot.variants[variant],
            why=why,
        )

    def _rest(
        self, slot: CompiledSlot, start: int, variant: str, mass: float, attrs: Mapping[str, Any]
    ) -> float:
        """What the rules after a random pick would give ``variant`` had the pick missed."""
        p = 0.0
        rules = slot.rules
        for pos in range(start, len(rules)):
            if mass <= 0.0:
                return p
            rule = rules[pos]
            if rule.condition is not None and not rule.condition(attrs):
                continue
            kind = rule.kind
            if kind == FORCE:
                return p + (mass if rule.force == variant else 0.0)
            if kind == POLICY:
                policy = self.policies.get(rule.policy_name)
                if policy is None:
                    continue
                share = rule.coverage
                if share < 1.0 and _bucket(rule, attrs) is None:
                    continue
                try:
                    p += mass * share * policy.shares(attrs, list(rule.arms)).get(variant, 0.0)
                except Exception:  # a tripped or broken policy shows the default
                    p += mass * share * float(variant == slot.default)
                mass *= 1.0 - share
                continue
            if _bucketable(rule, attrs) is None:
                continue
            p += mass * rule.shares.get(variant, 0.0)
            mass *= 1.0 - rule.taken
        return p + (mass if variant == slot.default else 0.0)
