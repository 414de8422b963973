"""The decision: which variant each slot shows, with its source, propensity and reason.

Each slot is a GrowthBook feature compiled once (:mod:`trimtab.gbrules`), and the engine walks
its ordered rules exactly as GrowthBook's SDKs do: prerequisites (``parentConditions``), the
targeting condition and hash ``filters`` decide whether a rule applies; a force rule picks its
variant (a rollout only for users whose hash falls within its coverage or range); an experiment
rule buckets the user by hash (namespaces, explicit ranges, contextual-bandit leaves, sticky
buckets with a fallback attribute, passthrough variations from ``meta``); a policy rule, trimtab's
addition, asks a bandit policy. When no rule picks, the slot's default shows. The same walk
answers GrowthBook's conformance suite (:mod:`trimtab.gbeval`), so what is checked is what serves.

**Propensity** is the probability that this user gets this variant when the hash of every
rule is treated as random: the conditions are fixed by the user's attributes, the buckets are
not. A force rule has propensity 1; a 50/50 experiment 0.5; a user outside a 20 % rollout whose
default shows has propensity 0.8. A prerequisite on a randomised feature passes with the
probability of that feature's passing values. This is what makes logged decisions usable for
off-policy evaluation.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from trimtab.config import RuleDecl, SiteConfig, SlotDecl
from trimtab.gbrules import (
    EXPERIMENT,
    FORCE,
    PASS_ON,
    POLICY,
    ROLLOUT,
    WHY_EXPERIMENT,
    CompiledRule,
    CompiledSlot,
    compile_feature,
    describe_condition,
    link,
)
from trimtab.targeting import (
    choose_variation,
    get_bucket_ranges,
    get_path,
    get_query_string_override,
    walk_path,
)
from trimtab.targeting import hash as bucket_hash
from trimtab.targeting.jsvalues import is_number, js_number_to_string
from trimtab.walkcode import HashKey, shared_hashes, spread_function, walk_function

__all__ = [
    "EXPERIMENT",
    "FORCE",
    "POLICY",
    "ROLLOUT",
    "CompiledRule",
    "CompiledSlot",
    "Decision",
    "Engine",
    "Options",
    "Rules",
    "compile_slot",
    "describe_condition",
]

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


_PLACEHOLDER = re.compile(r"\{([\w.]+)\}")
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


def _fmt(value: Any) -> str:
    if value.__class__ is float:
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return repr(value)


def _show(value: Any) -> str:
    """An attribute's value as a reason shows it (``saw f0=0.98``)."""
    if value.__class__ is float:
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return repr(value)


def hash_string(value: Any) -> str | None:
    """A user's hash value as GrowthBook writes it (JS ``String()``), or None when ``value``
    cannot identify a user (missing, empty, zero, not finite, not a string or number)."""
    if value.__class__ is str:
        return value or None
    if is_number(value) and value != 0:
        text = js_number_to_string(value)
        return None if text in ("NaN", "Infinity", "-Infinity") else text
    return None


def compile_slot(
    name: str, slot: SlotDecl, saved_groups: Mapping[str, Any] | None = None
) -> CompiledSlot:
    """A config slot compiled: written as a GrowthBook feature whose values are the variant
    names (with trimtab's additions), then through the one compile step."""
    rules = [rule_source(rule) for rule in slot.rules]
    values = {n: (p or {}).get("value", n) for n, p in slot.variants.items()}
    compiled = compile_feature(
        name,
        {"defaultValue": slot.default, "rules": rules},
        variants=slot.variants,
        values=values,
        saved_groups=saved_groups,
    )
    compiled.blocked = slot.blocked or slot.default
    compiled.max_changes = slot.max_changes_per_view
    compiled.min_gap_s = slot.min_ms_between_changes / 1000.0
    return compiled


def rule_source(rule: RuleDecl) -> dict[str, Any]:
    """A config rule as a GrowthBook rule (trimtab's fields kept alongside)."""
    out: dict[str, Any] = msgspec.to_builtins(rule)
    return {k: v for k, v in out.items() if v is not None and v != "" and v != []}


@dataclass(slots=True)
class Options:
    """What a GrowthBook SDK context adds to the attributes: forced variations, a URL for
    query-string overrides, QA mode, a disabled SDK, sticky-bucket docs; ``trace`` receives
    how an experiment decision was bucketed (for GrowthBook-shaped results)."""

    forced: Mapping[str, Any] = field(default_factory=dict)
    url: str = ""
    qa_mode: bool = False
    enabled: bool = True
    sticky: StickyDocs | None = None
    trace: tuple[Any, ...] | None = None


class StickyService(Protocol):
    def save_assignments(self, doc: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class StickyDocs:
    """GrowthBook sticky-bucket docs (``"<attribute>||<value>"`` -> doc) and where to save
    them: an assignment, once made, is kept until the rule's bucketVersion is raised."""

    docs: dict[str, dict[str, Any]]
    service: StickyService

    def assignments(self, rule: CompiledRule, attrs: Mapping[str, Any]) -> dict[str, str]:
        """The user's stored assignments: the hash attribute's doc wins over the fallback's."""
        value = hash_string(attrs.get(rule.hash_attribute)) or ""
        doc = self.docs.get(f"{rule.hash_attribute}||{value}") or {}
        merged = dict(doc.get("assignments") or {})
        if rule.fallback_attribute:
            value = hash_string(attrs.get(rule.fallback_attribute)) or ""
            doc = self.docs.get(f"{rule.fallback_attribute}||{value}") or {}
            for key, variation_key in (doc.get("assignments") or {}).items():
                merged.setdefault(key, variation_key)
        return merged

    def variation(self, rule: CompiledRule, attrs: Mapping[str, Any]) -> tuple[int, bool]:
        """``(stored variation or -1, whether an assignment of a blocked version exists)``."""
        assignments = self.assignments(rule, attrs)
        if any(f"{rule.key}__{v}" in assignments for v in range(rule.min_bucket_version)):
            return -1, True
        wanted = assignments.get(f"{rule.key}__{rule.bucket_version}")
        if wanted and wanted in rule.variation_keys:
            # only variations that declare a meta key can be found again
            metas = rule.source.get("meta") or []
            for index, meta in enumerate(metas):
                if isinstance(meta, Mapping) and meta.get("key") == wanted:
                    return index, False
        return -1, False

    def save(self, rule: CompiledRule, attribute: str, value: str, variation_key: str) -> None:
        doc_id = f"{attribute}||{value}"
        existing = (self.docs.get(doc_id) or {}).get("assignments") or {}
        merged = {**existing, f"{rule.key}__{rule.bucket_version}": variation_key}
        if merged == existing:
            return
        doc = {"attributeName": attribute, "attributeValue": value, "assignments": merged}
        self.docs[doc_id] = doc
        self.service.save_assignments(doc)


PASS, FAIL, GATE, CYCLIC = 0, 1, 2, 3  # what a rule's prerequisites say (_prerequisites)

# What a slot's generated walk (trimtab.walkcode) calls besides the engine's own methods.
_WALK_HELPERS: dict[str, Any] = {
    "Decision": Decision,
    "bucket_hash": bucket_hash,
    "hash_string": hash_string,
    "explain": explain,
    "walk_path": walk_path,
    "show": _show,
    "FAIL": FAIL,
    "GATE": GATE,
    "CYCLIC": CYCLIC,
}

# "00" … "ff": the last two hex digits of a decision id (Engine._decide_all)
_BYTE_HEX = tuple(f"{i:02x}" for i in range(256))

NO_VALUE_SOURCES = frozenset({"prerequisite", "cyclicPrerequisite", "unknownFeature"})


class Rules:
    """The walk over compiled slots: one decision per slot, with its exact propensity.

    :class:`Engine` serves with it; :mod:`trimtab.gbeval` answers GrowthBook's conformance
    suite with it. ``policies`` maps policy names to choosers for ``policy`` rules;
    ``assign`` is told of every new sticky (trimtab) assignment.
    """

    def __init__(
        self,
        slots: Mapping[str, CompiledSlot],
        policies: Mapping[str, PolicyChooser] | None = None,
        assign: AssignCallback | None = None,
    ) -> None:
        self.slots: dict[str, CompiledSlot] = dict(slots)
        link(self.slots)
        # the hashes several written walks compute: kept in the decide call's memo
        self._shared_hashes = shared_hashes(self.slots)
        # where the slots' walks written out as code (trimtab.walkcode) find their helpers
        self._code_env: dict[str, Any] = dict(_WALK_HELPERS)
        self.policies: Mapping[str, PolicyChooser] = dict(policies or {})
        self.assign = assign
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:06x}-"
        # Within one decide_attrs call a prerequisite's value and pass chances depend on the
        # attributes alone: kept here for the attributes object being decided.
        self._memo_for: object = None
        self._memo: dict[Any, Any] = {}

    def _new_id(self) -> str:
        # a block of its own, like each call's decisions in Engine._decide_all
        return f"{self._id_prefix}{next(self._ids):x}00"  # events.DECISION_ID's grammar

    def evaluate(
        self, name: str, attrs: Mapping[str, Any], opts: Options | None = None
    ) -> Decision | None:
        """Slot ``name`` decided for ``attrs`` (None for an unknown slot): not logged, no
        decision id, no holdout; ``opts`` carries a GrowthBook SDK context's extras."""
        slot = self.slots.get(name)
        return None if slot is None else self._decide_slot(slot, attrs, opts)

    # ------------------------------------------------------------------ hash values

    @staticmethod
    def _hash_value(rule: CompiledRule, attrs: Mapping[str, Any], fallback: bool) -> str | None:
        value = hash_string(attrs.get(rule.hash_attribute))
        if value is None and fallback and rule.fallback_attribute:
            value = hash_string(attrs.get(rule.fallback_attribute))
        return value

    def _shared_hash(self, attrs: Mapping[str, Any], key: HashKey) -> float:
        """The bucket hash ``key`` names for ``attrs`` (NaN when the attribute gives no hash
        value or the version is unknown: no range contains it), kept in the decide call's
        memo for the other written walks that read it (:func:`trimtab.walkcode.shared_hashes`)."""
        seed, version, attribute = key
        value = hash_string(attrs.get(attribute))
        n = None if value is None else bucket_hash(seed, value, version)
        found = math.nan if n is None else n
        if self._memo_for is attrs:
            self._memo[key] = found
        return found

    @staticmethod
    def _filtered(rule: CompiledRule, attrs: Mapping[str, Any]) -> bool:
        for f in rule.filters:
            value = hash_string(attrs.get(f.attribute))
            if value is None:
                return True
            n = bucket_hash(f.seed, value, f.version)
            if n is None or not any(lo <= n < hi for lo, hi in f.ranges):
                return True
        return False

    def _experiment_hash(
        self, rule: CompiledRule, attrs: Mapping[str, Any], sticky: bool
    ) -> str | None:
        """The user's hash value for an experiment rule, or None when it cannot enrol them
        (no hash value, outside its namespace)."""
        value = self._hash_value(rule, attrs, sticky)
        if value is None:
            return None
        namespace = rule.namespace
        if namespace is not None and not rule.filters:
            n = bucket_hash(f"__{namespace[0]}", value, 1)
            if n is None or not namespace[1] <= n < namespace[2]:
                return None
        return value

    @staticmethod
    def leaf(
        rule: CompiledRule, attrs: Mapping[str, Any]
    ) -> tuple[tuple[tuple[float, float], ...], dict[str, float], float, Any]:
        """A contextual bandit's ranges, shares and leaf for this user (leaf -1: marginal)."""
        assert rule.bandit is not None
        for leaf in rule.bandit:
            if leaf.test(attrs):
                if leaf.weights is not None and leaf.leaf_id is not None:
                    ranges = tuple(
                        get_bucket_ranges(len(rule.variations), rule.coverage, leaf.weights)
                    )
                    shares: dict[str, float] = {}
                    for name, (lo, hi), skip in zip(
                        rule.variations, ranges, rule.passthrough, strict=True
                    ):
                        if not skip and hi > lo:
                            shares[name] = shares.get(name, 0.0) + (hi - lo)
                    return ranges, shares, sum(shares.values()), leaf
                break
        return rule.ranges, rule.shares, rule.taken, None

    # ------------------------------------------------------------------ prerequisites

    def _parent_variant(
        self, key: str, attrs: Mapping[str, Any], opts: Options | None, stack: tuple[str, ...]
    ) -> tuple[str, str]:
        """The parent feature's variant for this user ("" for no value), and its source."""
        parent = self.slots.get(key)
        if parent is None:
            return "", "unknownFeature"
        if key in stack:
            return "", "cyclicPrerequisite"
        memo = self._memo if opts is None and self._memo_for is attrs else None
        if memo is not None:
            known = memo.get(key)
            if known is not None:
                return known.variant, known.source
        d = self._decide_slot(parent, attrs, opts, stack)
        if memo is not None:
            memo[key] = d  # decided for this user: decide_attrs serves it as it is
        return d.variant, d.source

    def _prerequisites(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        opts: Options | None,
        stack: tuple[str, ...],
    ) -> int:
        """PASS, FAIL (skip the rule), GATE (block the feature) or CYCLIC."""
        inner = (*stack, slot.name)
        for parent in rule.parents:
            variant, source = self._parent_variant(parent.key, attrs, opts, inner)
            if source == "cyclicPrerequisite":
                return CYCLIC
            if parent.passing is not None and source != "unknownFeature":
                ok = variant in parent.passing
            else:
                ok = parent.test({"value": None})
            if not ok:
                return GATE if parent.gate else FAIL
        return PASS

    def _prerequisites_served(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        stack: tuple[str, ...],
    ) -> tuple[int, float, float]:
        """:meth:`_prerequisites` in serving, then (unless CYCLIC) :meth:`_pass_chances`, in
        one pass over the parents: the same state and chances (the same products, in the same
        order), and the same parents decided (each parent up to the first that fails, then
        only those decided by conditions)."""
        memo = self._memo if self._memo_for is attrs else None
        name = slot.name
        inner = None  # (*stack, name): made only when a parent is decided or spread here
        slots = self.slots
        state = PASS
        gates = all_pass = 1.0
        for parent in rule.parents:
            key = parent.key
            passing = parent.passing
            parent_slot = slots.get(key)
            looped = key == name or key in stack
            variant: str | None = None
            if state == PASS:
                # the parent's served value: the state is the first parent's that fails
                if parent_slot is None:
                    ok = parent.test({"value": None})
                elif looped:
                    return CYCLIC, 1.0, 1.0
                else:
                    d = memo.get(key) if memo is not None else None
                    if d is None:
                        inner = inner or (*stack, name)
                        d = self._decide_slot(parent_slot, attrs, None, inner)
                        if memo is not None:
                            memo[key] = d  # decided for this user: decide_attrs serves it
                    if d.source == "cyclicPrerequisite":
                        return CYCLIC, 1.0, 1.0
                    variant = d.variant
                    ok = variant in passing if passing is not None else parent.test({"value": None})
                if not ok:
                    state = GATE if parent.gate else FAIL
            # the chance this parent passes, its hashes treated as random (_pass_chances)
            if parent_slot is None or looped or passing is None:
                chance = float(parent.test({"value": None}))
            elif not parent_slot.random:
                if variant is None:
                    inner = inner or (*stack, name)
                    variant, _ = self._parent_variant(key, attrs, None, inner)
                chance = float(variant in passing)
            else:
                chance_key = (key, passing)
                kept = memo.get(chance_key) if memo is not None else None
                if kept is None:
                    inner = inner or (*stack, name)
                    chance = 0.0
                    for variant_name, p in self._distribution(
                        parent_slot, attrs, inner, memo
                    ).items():
                        if variant_name in passing:
                            chance += p
                    if memo is not None:
                        memo[chance_key] = chance
                else:
                    chance = kept
            all_pass *= chance
            if parent.gate:
                gates *= chance
        return state, gates, all_pass

    def _pass_chances(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        stack: tuple[str, ...],
    ) -> tuple[float, float]:
        """``(P(every gate passes), P(every prerequisite passes))`` with the parents'
        hashes treated as random (parents decided by conditions alone give 0 or 1)."""
        memo = self._memo if self._memo_for is attrs else None
        if memo is not None:
            known = memo.get(id(rule))
            if known is not None:
                # the memo mixes value types: (gates, all_pass) under rule ids
                return known  # type: ignore[no-any-return]
        inner = (*stack, slot.name)
        gates = all_pass = 1.0
        for parent in rule.parents:
            parent_slot = self.slots.get(parent.key)
            passing = parent.passing
            if parent_slot is None or parent.key in inner or passing is None:
                chance = float(parent.test({"value": None}))
            elif not parent_slot.random:
                variant, _ = self._parent_variant(parent.key, attrs, None, inner)
                chance = float(variant in passing)
            else:
                # the chance a random parent passes, kept for the other rules naming it alike
                key = (parent.key, passing)
                known_chance = memo.get(key) if memo is not None else None
                if known_chance is None:
                    chance = 0.0
                    for name, p in self._distribution(parent_slot, attrs, inner, memo).items():
                        if name in passing:
                            chance += p
                    if memo is not None:
                        memo[key] = chance
                else:
                    chance = known_chance
            all_pass *= chance
            if parent.gate:
                gates *= chance
        if memo is not None:
            memo[id(rule)] = (gates, all_pass)
        return gates, all_pass

    def _distribution(
        self,
        slot: CompiledSlot,
        attrs: Mapping[str, Any],
        stack: tuple[str, ...],
        memo: dict[Any, Any] | None,
    ) -> dict[str, float]:
        """The probability of each of a slot's variants for this user ("": no value)."""
        key = ("d", slot.name)
        if memo is not None and key in memo:
            # the memo mixes value types: shares dicts under ("d", slot) keys
            return memo[key]  # type: ignore[no-any-return]
        shares = self._spread(slot, attrs, stack)
        if memo is not None:
            memo[key] = shares
        return shares

    # ------------------------------------------------------------------ the walk

    def _decide_slot(
        self,
        slot: CompiledSlot,
        attrs: Mapping[str, Any],
        opts: Options | None = None,
        stack: tuple[str, ...] = (),
    ) -> Decision:
        """The slot's walk, written out as code for this slot (:mod:`trimtab.walkcode`): the
        same decision as :meth:`_walk`, which it hands over to for the rules it leaves."""
        fast = slot.fast
        if fast is None:
            fast = slot.fast = walk_function(slot, self._code_env, self._shared_hashes)
        return fast(self, attrs, opts, stack)  # type: ignore[no-any-return]

    def _walk(
        self,
        slot: CompiledSlot,
        attrs: Mapping[str, Any],
        opts: Options | None = None,
        stack: tuple[str, ...] = (),
        start: int = 0,
        mass: float = 1.0,
        passed: dict[str, float] | None = None,
    ) -> Decision:
        """Walk the rules once from ``start``; the propensity is accumulated along the way
        (module doc).

        ``mass`` is the probability of reaching the current rule; ``passed`` holds what
        earlier random rules that did not pick this user would have given each variant.
        """
        walk = slot.walk[start:] if start else slot.walk
        for pos, (condition, plain, kind, rule) in enumerate(walk, start):
            if plain:
                # the common case: a condition, then the rule's kind
                if condition is not None and not condition(attrs):
                    continue
                if kind == FORCE:
                    p = mass + (passed.get(rule.force, 0.0) if passed else 0.0)
                    return self._made(slot, rule, rule.force, "force", p, attrs, -1, 0.0)
                m = mass
            else:
                state = self._prelude(slot, rule, attrs, opts, stack, mass, passed)
                if isinstance(state, Decision):
                    return state
                acts, m, mass, passed = state
                if not acts:
                    continue
            if kind == PASS_ON:
                continue
            if kind == FORCE:
                p = m + (passed.get(rule.force, 0.0) if passed else 0.0)
                if m < mass:
                    p += self._rest(slot, pos + 1, rule.force, mass - m, attrs, stack)
                return self._made(slot, rule, rule.force, "force", p, attrs, -1, 0.0)
            if kind == POLICY:
                if rule.policy_name not in self.policies:
                    continue
                if rule.coverage < 1.0:
                    value = self._hash_value(rule, attrs, True)
                    if value is None:
                        continue
                    n = bucket_hash(rule.seed, value, rule.hash_version)
                    if n is None:
                        continue
                    if n >= rule.coverage:
                        # Outside the policy's share of traffic: the rules below decide. Had
                        # the hash fallen inside, the policy would have picked.
                        passed = self._pass_policy(rule, attrs, m, passed)
                        mass -= m * rule.coverage
                        continue
                return self._by_policy(slot, rule, pos, attrs, m, mass, passed, stack)
            if kind == ROLLOUT:
                value = attrs.get(rule.hash_attribute)
                if value.__class__ is not str or not value:
                    value = self._hash_value(rule, attrs, True)
                    if value is None:
                        continue
                n = bucket_hash(rule.seed, value, rule.hash_version)
                if n is None:
                    continue
                bounds = rule.bucket_range
                if bounds is None:
                    inside = n <= rule.coverage and rule.coverage != 0.0
                else:
                    inside = bounds[0] <= n < bounds[1]
                if inside:
                    p = m * rule.taken + (passed.get(rule.force, 0.0) if passed else 0.0)
                    p += self._rest(slot, pos + 1, rule.force, mass - m * rule.taken, attrs, stack)
                    return self._made(slot, rule, rule.force, "force", p, attrs, -1, n)
                if rule.taken > 0.0:
                    passed = passed or {}
                    passed[rule.force] = passed.get(rule.force, 0.0) + m * rule.taken
                    mass -= m * rule.taken
                continue
            # an experiment
            if rule.simple and opts is None:
                # serving a plain experiment: no sticky, bandit or passthrough to consider
                value = attrs.get(rule.hash_attribute)
                if value.__class__ is not str or not value:
                    value = hash_string(value)
                    if value is None:
                        continue
                namespace = rule.namespace
                if namespace is not None and not rule.filters:
                    n = bucket_hash(rule.namespace_seed, value, 1)
                    if n is None or not namespace[1] <= n < namespace[2]:
                        continue
                n = bucket_hash(rule.seed, value, rule.hash_version)
                if n is None:
                    continue
                assigned = -1
                for index, (lo, hi) in enumerate(rule.ranges):
                    if lo <= n < hi:
                        assigned = index
                        break
                if assigned < 0:
                    if rule.taken > 0.0:
                        passed = passed or {}
                        for name, share in rule.shares.items():
                            passed[name] = passed.get(name, 0.0) + m * share
                        mass -= m * rule.taken
                    continue
                variant = rule.variations[assigned]
                p = m * rule.shares.get(variant, 0.0) + (
                    passed.get(variant, 0.0) if passed else 0.0
                )
                if m * rule.taken < mass:
                    p += self._rest(slot, pos + 1, variant, mass - m * rule.taken, attrs, stack)
                return self._made(slot, rule, variant, "experiment", p, attrs, assigned, n)
            if not rule.enrolls or (opts is not None and not opts.enabled):
                continue
            if opts is not None:
                if not rule.standalone:
                    forced = self._forced(slot, rule, opts)
                    if forced is not None:
                        if forced.source:
                            return forced
                        continue
                if rule.inactive:
                    continue
            sticky_docs = opts.sticky if opts is not None and not rule.disable_sticky else None
            sticky = sticky_docs is not None or (opts is None and bool(rule.sticky_key))
            assigned, blocked_version = (
                sticky_docs.variation(rule, attrs) if sticky_docs is not None else (-1, False)
            )
            if assigned >= 0:
                value = self._hash_value(rule, attrs, True)
            else:
                value = self._experiment_hash(rule, attrs, sticky)
            if value is None:
                continue
            n = bucket_hash(rule.seed, value, rule.hash_version)
            if n is None:
                continue
            ranges, shares, taken, leaf = (
                self.leaf(rule, attrs)
                if rule.bandit is not None
                else (rule.ranges, rule.shares, rule.taken, None)
            )
            found = assigned >= 0
            if not found:
                assigned = choose_variation(n, ranges)
            if blocked_version:
                continue
            if assigned < 0 or (
                opts is not None
                and rule.experiment_force is None
                and (opts.qa_mode or rule.stopped)
            ):
                if assigned < 0 and taken > 0.0:
                    passed = passed or {}
                    for name, share in shares.items():
                        passed[name] = passed.get(name, 0.0) + m * share
                    mass -= m * taken
                continue
            if opts is not None and rule.experiment_force is not None:
                opts.trace = (rule, rule.experiment_force, None, False, False, None)
                index = rule.experiment_force
                if not 0 <= index < len(rule.variations):
                    return self._none(slot, "experiment")
                return self._made(
                    slot, rule, rule.variations[index], "experiment", 1.0, attrs, index, n
                )
            if sticky_docs is not None:
                attribute = rule.hash_attribute
                if hash_string(attrs.get(attribute)) is None and rule.fallback_attribute:
                    attribute = rule.fallback_attribute
                sticky_docs.save(rule, attribute, value, rule.variation_keys[assigned])
            if opts is not None:
                opts.trace = (rule, assigned, n, True, found, leaf)
            if rule.passthrough[assigned]:
                if taken > 0.0:
                    passed = passed or {}
                    for name, share in shares.items():
                        passed[name] = passed.get(name, 0.0) + m * share
                    mass -= m * taken
                continue
            variant = rule.variations[assigned]
            p = m * shares.get(variant, 0.0) + (passed.get(variant, 0.0) if passed else 0.0)
            p += self._rest(slot, pos + 1, variant, mass - m * taken, attrs, stack)
            if rule.sticky_key and self.assign is not None and opts is None:
                user = attrs.get("id")
                if user:
                    self.assign(str(user), rule.sticky_key, assigned, p)
            return self._made(slot, rule, variant, "experiment", p, attrs, assigned, n)
        p = mass + (passed.get(slot.default, 0.0) if passed else 0.0)
        return Decision(
            slot=slot.name,
            variant=slot.default,
            source="default",
            propensity=p,
            reason="no rule matched: default content",
            payload=slot.variants.get(slot.default),
        )

    def _prelude(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        opts: Options | None,
        stack: tuple[str, ...],
        mass: float,
        passed: dict[str, float] | None,
    ) -> Decision | tuple[bool, float, float, dict[str, float] | None]:
        """What comes before a rule that is not plain acts: a kept sticky assignment, run()'s
        forcing, prerequisites, the condition, hash filters. Returns a decision, or whether the
        rule acts, with what mass (``m``), and the walk's updated ``mass`` and ``passed``."""
        if rule.sticky_key and opts is None:
            kept = self._sticky(slot, rule, attrs)
            if kept is not None:
                return kept
        if rule.standalone and opts is not None:
            if not rule.enrolls or not opts.enabled:
                return self._none(slot, "experiment")
            forced = self._forced(slot, rule, opts)
            if forced is not None:
                return forced if forced.source else self._none(slot, "experiment")
        m = mass  # the mass with which this rule acts (less when prerequisites are random)
        if rule.parents:
            if opts is None and not rule.gates and not self._applies(rule, attrs):
                # serving: no cycles (refused at load), so the order of checks is free; a rule
                # its own condition rules out needs no prerequisite decided
                return False, m, mass, passed
            state = self._prerequisites(slot, rule, attrs, opts, stack)
            if state == CYCLIC:
                return self._none(slot, "cyclicPrerequisite")
            gates, chance = self._pass_chances(slot, rule, attrs, stack)
            if state == GATE:
                p = mass * (1.0 - gates) + (passed.get(slot.blocked, 0.0) if passed else 0.0)
                return self._none(slot, "prerequisite", p, rule)
            blocked = mass * (1.0 - gates)
            m = mass * chance
            if blocked > 0.0:
                # the branch where a random gate had failed shows the blocked value
                passed = passed or {}
                passed[slot.blocked] = passed.get(slot.blocked, 0.0) + blocked
            mass -= blocked
            if state == FAIL:
                if m > 0.0:
                    passed, mass = self._pass_by(slot, rule, attrs, m, mass, passed)
                return False, m, mass, passed
        if rule.condition is not None and not rule.condition(attrs):
            return False, m, mass, passed
        if rule.filters and self._filtered(rule, attrs):
            return False, m, mass, passed
        return True, m, mass, passed

    def _applies(self, rule: CompiledRule, attrs: Mapping[str, Any]) -> bool:
        """Whether the rule's condition and hash filters let this user through."""
        if rule.condition is not None and not rule.condition(attrs):
            return False
        return not (rule.filters and self._filtered(rule, attrs))

    def _forced(self, slot: CompiledSlot, rule: CompiledRule, opts: Options) -> Decision | None:
        """A variation forced by the URL or the context's forced variations: the decision
        (an empty ``source`` when the forced index names no variation), else None."""
        index = get_query_string_override(rule.key, opts.url, len(rule.variations))
        if index is None:
            forced = opts.forced.get(rule.key)
            if forced is None:
                return None
            index = forced if isinstance(forced, int) and not isinstance(forced, bool) else -1
        opts.trace = (rule, index, None, False, False, None)
        if not 0 <= index < len(rule.variations) or not rule.enrolls:
            return Decision(slot="", variant="", source="")
        if rule.passthrough[index]:
            return Decision(slot="", variant="", source="")
        variant = rule.variations[index]
        return Decision(
            slot=slot.name,
            variant=variant,
            source="experiment",
            rule_id=rule.rule_id,
            reason=f"experiment {rule.key}: variation {index} forced",
            experiment=rule.key,
            variation=index,
            payload=slot.variants.get(variant),
        )

    def _none(
        self,
        slot: CompiledSlot,
        source: str,
        propensity: float = 1.0,
        rule: CompiledRule | None = None,
    ) -> Decision:
        """No value from the rules: a failed prerequisite gate (``prerequisite``), a cycle of
        prerequisites, a run() that enrolled nobody. A trimtab slot shows its default."""
        variant = slot.blocked
        return Decision(
            slot=slot.name,
            variant=variant,
            source=source,
            rule_id=rule.rule_id if rule is not None else "",
            propensity=propensity,
            reason=(
                f"rule {rule.rule_id}: prerequisite gate on "
                f"{', '.join(p.key for p in rule.parents if p.gate)} not met"
                if rule
                else source
            ),
            payload=slot.variants.get(variant),
        )

    def _pass_by(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        m: float,
        mass: float,
        passed: dict[str, float] | None,
    ) -> tuple[dict[str, float] | None, float]:
        """A rule whose random prerequisites failed: what it would have given each variant
        (with mass ``m``) had they passed."""
        if rule.condition is not None and not rule.condition(attrs):
            return passed, mass
        if rule.filters and self._filtered(rule, attrs):
            return passed, mass
        shares, taken = self._shares(slot, rule, attrs)
        if taken > 0.0:
            passed = passed or {}
            for name, share in shares.items():
                passed[name] = passed.get(name, 0.0) + m * share
            mass -= m * taken
        return passed, mass

    def _shares(
        self, slot: CompiledSlot, rule: CompiledRule, attrs: Mapping[str, Any]
    ) -> tuple[dict[str, float], float]:
        """What a rule that applies gives each variant, and the chance it picks at all."""
        kind = rule.kind
        if kind == PASS_ON:
            return {}, 0.0
        if kind == FORCE:
            return {rule.force: 1.0}, 1.0
        if kind == POLICY:
            policy = self.policies.get(rule.policy_name)
            if policy is None:
                return {}, 0.0
            if rule.coverage < 1.0 and self._hash_value(rule, attrs, True) is None:
                return {}, 0.0
            try:
                shares = policy.shares(attrs, list(rule.arms))
            except Exception:  # a tripped or broken policy shows the default
                shares = {slot.default: 1.0}
            return {k: v * rule.coverage for k, v in shares.items()}, rule.coverage
        if kind == ROLLOUT:
            if self._hash_value(rule, attrs, True) is None:
                return {}, 0.0
            return rule.shares, rule.taken
        if not rule.enrolls or self._experiment_hash(rule, attrs, bool(rule.sticky_key)) is None:
            return {}, 0.0
        if rule.bandit is not None:
            _, shares, taken, _ = self.leaf(rule, attrs)
            return shares, taken
        return rule.shares, rule.taken

    def _outcomes(
        self,
        slot: CompiledSlot,
        start: int,
        mass: float,
        attrs: Mapping[str, Any],
        stack: tuple[str, ...],
    ) -> Iterator[tuple[str, float]]:
        """``(variant, probability)`` for each way the rules from ``start`` on (reached with
        probability ``mass``) can end, the hashes treated as random: a random prerequisite
        gate failing (the blocked value), a rule picking, no rule picking (the default).
        A variant may come more than once; the probabilities add up to ``mass``."""
        rules = slot.rules
        for pos in range(start, len(rules)):
            if mass <= 0.0:
                return
            rule = rules[pos]
            applies = self._applies(rule, attrs)
            if not applies and not rule.gates:
                continue
            m = mass
            if rule.parents:
                gates, chance = self._pass_chances(slot, rule, attrs, stack)
                blocked = mass * (1.0 - gates)
                if blocked > 0.0:
                    yield slot.blocked, blocked
                m = mass * chance
                mass -= blocked
            if not applies:
                continue
            shares, taken = self._shares(slot, rule, attrs)
            for name, share in shares.items():
                yield name, m * share
            mass -= m * taken
        if mass > 0.0:
            yield slot.default, mass

    def _spread(
        self, slot: CompiledSlot, attrs: Mapping[str, Any], stack: tuple[str, ...]
    ) -> dict[str, float]:
        """The probability of each of the slot's variants: :meth:`_outcomes` from the first
        rule, added up by variant (written out as code for the slot, :mod:`trimtab.walkcode`)."""
        spread = slot.spread
        if spread is None:
            spread = slot.spread = spread_function(slot, self._code_env, self._shared_hashes)
        return spread(self, attrs, stack)  # type: ignore[no-any-return]

    def _rest(
        self,
        slot: CompiledSlot,
        start: int,
        variant: str,
        mass: float,
        attrs: Mapping[str, Any],
        stack: tuple[str, ...] = (),
    ) -> float:
        """What the rules from ``start`` on would give ``variant`` with probability ``mass``
        of reaching them (had a random pick before them missed)."""
        p = 0.0
        for name, share in self._outcomes(slot, start, mass, attrs, stack):
            if name == variant:
                p += share
        return p

    # ------------------------------------------------------------------ decisions

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

    def _pass_policy(
        self,
        rule: CompiledRule,
        attrs: Mapping[str, Any],
        m: float,
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
            out[arm] = out.get(arm, 0.0) + m * rule.coverage * share
        return out

    def _by_policy(
        self,
        slot: CompiledSlot,
        rule: CompiledRule,
        pos: int,
        attrs: Mapping[str, Any],
        m: float,
        mass: float,
        passed: dict[str, float] | None,
        stack: tuple[str, ...],
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
        propensity = m * rule.coverage * choice.propensity
        propensity += passed.get(arm, 0.0) if passed else 0.0
        if m * rule.coverage < mass:  # had the hash fallen outside, the rules below decide
            propensity += self._rest(slot, pos + 1, arm, mass - m * rule.coverage, attrs, stack)
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
        if rule.kind == EXPERIMENT:
            reason = (
                f"{rule.reason_head}{variation} of {len(rule.variations)} "
                f"(bucket {bucket:.4f}) for {rule.condition_text}"
            )
        else:
            reason = rule.reason_head
        shown = rule.shown_paths
        if shown:
            seen = []
            for name, parts in shown:
                value = attrs.get(name) if len(parts) == 1 else walk_path(attrs, parts)
                seen.append(f"{name}={_show(value)}")
            reason = f"{reason} (saw {', '.join(seen)})"
        why = rule.why_fixed
        if why is None:
            why = explain(rule.why, attrs)
        return Decision(
            slot=slot.name,
            variant=variant,
            source=source,
            rule_id=rule.rule_id,
            propensity=propensity,
            reason=reason,
            experiment=rule.key,
            variation=variation,
            payload=slot.variants.get(variant),
            why=why,
        )


class Engine(Rules):
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
        super().__init__({}, policies, assign)
        self.features_of = features_of or (lambda user, session, page_view_id="": {"id": user})
        self.log = log
        self.reload(config)

    def reload(self, config: SiteConfig) -> None:
        """Swap in a new config atomically (already validated by the loader)."""
        self.config = config
        groups = config.saved_groups
        self.slots = {name: compile_slot(name, decl, groups) for name, decl in config.slots.items()}
        link(self.slots)
        self._code_env = dict(_WALK_HELPERS)  # the old slots' code goes with them
        self._shared_hashes = shared_hashes(self.slots)
        # a decide call keeps a memo when prerequisites or shared hashes can read it
        self._memo_used = bool(self._shared_hashes) or any(
            r.parents for s in self.slots.values() for r in s.rules
        )
        # slots other slots' prerequisites name: their served decision is kept for those
        self._parent_slots = frozenset(
            p.key for s in self.slots.values() for r in s.rules for p in r.parents
        )
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
        return self.decide_attrs(self.attributes(user, session, extra, page_view_id), slots)

    def attributes(
        self,
        user: str,
        session: str,
        extra: Mapping[str, Any] | None = None,
        page_view_id: str = "",
    ) -> dict[str, Any]:
        """What :meth:`decide` decides on: the live features of the user, session and page
        view, with ``extra`` over them (a fresh dict: the caller may change it)."""
        attrs = (
            self.features_of(user, session, page_view_id)
            if page_view_id
            else self.features_of(user, session)
        )
        if page_view_id:
            attrs["page_view_id"] = page_view_id  # a policy chooses once per page view
        if extra:
            attrs.update(extra)
        return attrs

    def decide_attrs(
        self,
        attrs: Mapping[str, Any],
        slots: Iterable[str] | None = None,
        opts: Options | None = None,
    ) -> list[Decision]:
        """Decide from attributes directly (the CLI, tests and benchmarks use this);
        ``opts`` adds a GrowthBook context's forced variations (remote evaluation)."""
        if self._memo_used and opts is None:
            self._memo_for, self._memo = attrs, {}
        try:
            return self._decide_all(attrs, slots, opts)
        finally:
            self._memo_for = None

    def _decide_all(
        self, attrs: Mapping[str, Any], slots: Iterable[str] | None, opts: Options | None
    ) -> list[Decision]:
        compiled = self.slots
        names = compiled.keys() if slots is None else slots
        decisions = []
        holdout = self.holdout
        held_out = holdout > 0.0 and self._in_holdout(attrs)
        memo = self._memo if self._memo_for is attrs else None
        prefix, ids, parents = self._id_prefix, self._ids, self._parent_slots
        given, block = 0, ""  # ids given in this call; the current block of ids
        for name in names:
            slot = compiled.get(name)
            if slot is None:
                continue
            if held_out:
                decision = self._held_out(slot, attrs)
            else:
                known: Decision | None = memo.pop(name, None) if memo else None
                if known is None or known.decision_id:  # (one already served: a repeated name)
                    walk = slot.fast  # the slot's walk as code (_decide_slot)
                    if walk is None:
                        walk = slot.fast = walk_function(slot, self._code_env, self._shared_hashes)
                    decision = walk(self, attrs, opts, ())
                    if memo is not None and name in parents:
                        memo[name] = decision  # a prerequisite of slots still to decide
                else:
                    decision = known
                if holdout > 0.0:
                    # the holdout shows the default:
                    # P(v) = (1-h)·P(v | not held out) + h·[v = default]
                    decision.propensity *= 1.0 - holdout
                    if decision.variant == slot.default:
                        decision.propensity += holdout
            if not decision.decision_id:
                # ids in blocks of 256: the block's hex number then two hex digits, so an id
                # is one string concatenation (events.DECISION_ID's grammar)
                if not given & 255:
                    block = f"{prefix}{next(ids):x}"
                decision.decision_id = block + _BYTE_HEX[given & 255]
                given += 1
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
