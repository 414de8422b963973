"""A slot's rule walk written out as Python code: one specialised function per slot.

:meth:`trimtab.decide.Rules._walk` walks any slot's compiled rules in a loop that looks at
each rule's kind, flags and fields on every decision. For the rules a served decision meets
most (forces, rollouts, plain experiments, and the conditions, prerequisites and hash filters
in front of them) this module writes that walk out once, when a slot is first decided: the
rules' order, kinds and constants are fixed in the code, conditions are inlined
(:func:`trimtab.targeting.conditions.condition_source`), and a decision's fixed reason and
``why`` are constants. The result is the same decision, propensity and reason as the loop's.

Where the code would need the loop's generality (a policy rule, an experiment with sticky
assignments, a contextual bandit, passthrough variations or run()'s forcing, or any
experiment under a GrowthBook SDK context's options) it hands over to the loop at that rule,
with the walk's state (``mass``, ``passed``) as it stands.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from trimtab.gbrules import EXPERIMENT, FORCE, PASS_ON, ROLLOUT, CompiledRule, CompiledSlot

__all__ = [
    "HashKey",
    "shared_hashes",
    "spread_function",
    "spread_source",
    "walk_function",
    "walk_source",
]

# A bucket hash as a written walk computes it: (seed, hash version, attribute whose hash
# value is hashed); the same key gives the same number for the same attributes.
HashKey = tuple[str, int, str]

_names = itertools.count()


class _Code:
    """Lines of the function being written, and the constants it reads."""

    def __init__(self, env: dict[str, Any], shared: frozenset[HashKey] = frozenset()) -> None:
        self.lines: list[str] = []
        self.env = env
        self.shared = shared  # hashes read from (and kept in) the decide call's memo

    def bind(self, value: Any) -> str:
        """``value`` as a literal when it can be one (read from the code's constants), else
        the name of a global holding it."""
        if _literal(value):
            return repr(value)
        name = f"_w{next(_names)}"
        self.env[name] = value
        return name

    def add(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


def _literal(value: Any) -> bool:
    """Whether ``repr(value)`` is a Python literal for exactly ``value``."""
    kind = value.__class__
    if kind is float:
        return math.isfinite(value)
    return kind is str or kind is int or kind is bool or value is None


def shared_hashes(slots: Mapping[str, CompiledSlot]) -> frozenset[HashKey]:
    """The namespace and hash-filter hashes that more than one written walk or spread of
    ``slots`` computes: a namespace or a filter layer is one hash split between experiments,
    and a slot that prerequisites name is spread as well as walked. The written code keeps
    these in the decide call's memo (:meth:`trimtab.decide.Rules._shared_hash`) and computes
    each at most once a call; every other hash is computed where it is needed."""
    parents = {p.key for slot in slots.values() for rule in slot.rules for p in rule.parents}
    uses: Counter[HashKey] = Counter()
    for slot in slots.values():
        times = 2 if slot.name in parents else 1
        for rule in slot.rules:
            for f in rule.filters:
                uses[(f.seed, f.version, f.attribute)] += times
            if rule.kind == EXPERIMENT and rule.namespace is not None and not rule.filters:
                uses[(rule.namespace_seed, 1, rule.hash_attribute)] += times
    return frozenset(key for key, n in uses.items() if n > 1)


def _hashed(key: HashKey) -> str:
    """The bucket hash ``key`` names as an expression: from the decide call's memo when an
    earlier walk computed it, else computed (and kept) by ``Rules._shared_hash``; NaN when the
    attribute gives no hash value, so that no range contains it."""
    k = repr(key)  # a tuple of literals: a constant of the code
    return (
        f"(_k if (_k := (self._memo.get({k}) if self._memo_for is attrs else None)) "
        f"is not None else self._shared_hash(attrs, {k}))"
    )


def walk_source(
    slot: CompiledSlot, shared: frozenset[HashKey] = frozenset()
) -> tuple[str, dict[str, Any]]:
    """Source of ``walk(self, attrs, opts, stack) -> Decision`` for ``slot`` (``S``, a default
    argument, is the slot), and the constants it reads. The caller executes it with
    ``Decision``, ``bucket_hash``, ``hash_string``, ``explain``, ``walk_path``, ``show`` and
    the prerequisite states (``FAIL``, ``GATE``, ``CYCLIC``) added to the constants; the
    hashes in ``shared`` (:func:`shared_hashes`) are read from the decide call's memo."""
    code = _Code({}, shared)
    add = code.add
    add(0, f"def walk(self, attrs, opts, stack, S={code.bind(slot)}):")
    add(1, "mass = 1.0")
    add(1, "passed = None")
    clean = True  # no random rule before this one: mass is 1.0 and passed is None
    for pos, rule in enumerate(slot.rules):
        handover = f"return self._walk(S, attrs, opts, stack, {pos}, mass, passed)"
        if not _written(rule):
            add(1, handover)
            return "\n".join(code.lines) + "\n", code.env
        if rule.kind == EXPERIMENT or not rule.plain:
            add(1, "if opts is not None:")
            add(2, handover)
        if rule.kind == PASS_ON and rule.parents and not rule.gates:
            # it gives nothing and no gate blocks: only a cycle of prerequisites shows
            _cycle_check(code, rule)
            clean = False
            continue
        if rule.plain:
            depth = 1
            condition = _condition(rule, code)
            if condition != "True":
                add(1, f"if {condition}:")
                depth = 2
            add(depth, "m = mass")
        else:
            depth = _prelude(code, slot, rule)
        if rule.kind == FORCE:
            _force(code, slot, rule, pos, depth, clean)
        elif rule.kind == ROLLOUT:
            _rollout(code, slot, rule, pos, depth)
        elif rule.kind == EXPERIMENT:
            _experiment(code, slot, rule, pos, depth)
        else:  # PASS_ON: only its prerequisite gates act
            add(depth, "pass")
        if rule.kind != FORCE or not rule.plain:
            clean = False
    default = slot.default
    p = "1.0" if clean else f"mass + (passed.get({default!r}, 0.0) if passed else 0.0)"
    add(
        1,
        f"return Decision(slot={slot.name!r}, variant={default!r}, source='default', "
        f"propensity={p}, reason='no rule matched: default content', "
        f"payload={code.bind(slot.variants.get(default))})",
    )
    return "\n".join(code.lines) + "\n", code.env


def _cycle_check(code: _Code, rule: CompiledRule) -> None:
    """A rule that gives nothing, with prerequisites and no gate: what its :func:`_prelude`
    can end in is only the decision of a cycle (the chances it passes change nothing)."""
    add, d = code.add, 1
    applies = _condition(rule, code)
    if rule.filters:
        filters = _filters(code, rule)
        applies = filters if applies == "True" else f"{applies} and {filters}"
    if applies != "True":
        add(1, f"if {applies}:")
        d = 2
    add(d, f"if self._prerequisites(S, {code.bind(rule)}, attrs, None, stack) == CYCLIC:")
    add(d + 1, "return self._none(S, 'cyclicPrerequisite')")


def _prelude(code: _Code, slot: CompiledSlot, rule: CompiledRule) -> int:
    """What :meth:`trimtab.decide.Rules._prelude` does in serving before a rule with
    prerequisites or hash filters acts; returns the depth of the rule's body, where ``m`` is
    the mass with which it acts."""
    add, r = code.add, code.bind(rule)
    applies = _condition(rule, code)
    if rule.filters:
        filtered = _filters(code, rule)
        applies = filtered if applies == "True" else f"{applies} and {filtered}"
    if not rule.parents:
        add(1, f"if {applies}:")
        add(2, "m = mass")
        return 2
    d = 1
    if not rule.gates and applies != "True":
        # no cycles in serving: a rule its own condition rules out needs no prerequisite
        add(1, f"if {applies}:")
        d = 2
    add(d, f"state, gates, chance = self._prerequisites_served(S, {r}, attrs, stack)")
    add(d, "if state == CYCLIC:")
    add(d + 1, "return self._none(S, 'cyclicPrerequisite')")
    if rule.gates:
        blocked = slot.blocked
        add(d, "if state == GATE:")
        add(
            d + 1,
            f"p = mass * (1.0 - gates) + (passed.get({blocked!r}, 0.0) if passed else 0.0)",
        )
        # Rules._none for a failed gate, its fixed parts as constants
        gates = ", ".join(p.key for p in rule.parents if p.gate)
        reason = f"rule {rule.rule_id}: prerequisite gate on {gates} not met"
        add(
            d + 1,
            f"return Decision(slot={slot.name!r}, variant={blocked!r}, source='prerequisite', "
            f"rule_id={rule.rule_id!r}, propensity=p, reason={reason!r}, "
            f"payload={code.bind(slot.variants.get(blocked))})",
        )
        add(d, "blocked = mass * (1.0 - gates)")
        add(d, "m = mass * chance")
        add(d, "if blocked > 0.0:")
        add(d + 1, "passed = passed or {}")
        add(d + 1, f"passed[{blocked!r}] = passed.get({blocked!r}, 0.0) + blocked")
        add(d, "mass -= blocked")
    else:
        add(d, "m = mass * chance")  # no gate: nothing blocks, mass stays
    add(d, "if state == FAIL:")
    _pass_by(code, rule, applies, d + 1)
    add(d, f"elif {applies if rule.gates else 'True'}:")
    return d + 1


def _pass_by(code: _Code, rule: CompiledRule, applies: str, depth: int) -> None:
    """``passed, mass = self._pass_by(S, rule, attrs, m, mass, passed)`` (what the rule would
    have given each variant had its random prerequisites passed), written out for forces,
    rollouts and rules that give nothing (``applies`` is the rule's condition and filters,
    already checked when the rule has no gate)."""
    add, kind = code.add, rule.kind
    if kind not in (FORCE, ROLLOUT, PASS_ON):
        add(depth, "if m > 0.0:")
        r = code.bind(rule)
        add(depth + 1, f"passed, mass = self._pass_by(S, {r}, attrs, m, mass, passed)")
        return
    # what Rules._shares gives: a force takes all, a rollout its share when it can hash
    shares, taken = ({rule.force: 1.0}, 1.0) if kind == FORCE else (rule.shares, rule.taken)
    if kind == PASS_ON or taken <= 0.0:
        add(depth, "pass")  # it gives nothing: the walk goes on as it is
        return
    guard = "m > 0.0" if not rule.gates or applies == "True" else f"m > 0.0 and {applies}"
    add(depth, f"if {guard}:")
    d = depth + 1
    if kind == ROLLOUT:
        add(d, f"if self._hash_value({code.bind(rule)}, attrs, True) is not None:")
        d += 1
    add(d, "passed = passed or {}")
    for name, share in shares.items():
        add(d, f"passed[{name!r}] = passed.get({name!r}, 0.0) + m * {code.bind(share)}")
    add(d, f"mass -= m * {code.bind(taken)}")


def _filters(code: _Code, rule: CompiledRule) -> str:
    """``not self._filtered(rule, attrs)`` as one expression: every hash filter's attribute
    gives a hash value whose bucket is in one of the filter's ranges."""
    tests = []
    for f in rule.filters:
        key = (f.seed, f.version, f.attribute)
        if key in code.shared:
            # the first range reads the hash: (_n := …); NaN (no hash value) is in none
            ranges = " or ".join(
                f"{code.bind(lo)} <= {'(_n := ' + _hashed(key) + ')' if i == 0 else '_n'} "
                f"< {code.bind(hi)}"
                for i, (lo, hi) in enumerate(f.ranges)
            )
            tests.append(ranges or "False")
            continue
        ranges = (
            " or ".join(f"{code.bind(lo)} <= _n < {code.bind(hi)}" for lo, hi in f.ranges)
            or "False"
        )
        tests.append(
            f"(_h := hash_string(attrs.get({f.attribute!r}))) is not None and "
            f"(_n := bucket_hash({f.seed!r}, _h, {f.version!r})) is not None and ({ranges})"
        )
    return " and ".join(f"({t})" for t in tests)


def _written(rule: CompiledRule) -> bool:
    """Whether this module writes the rule out (else the loop takes over from it)."""
    if rule.kind in (FORCE, ROLLOUT, PASS_ON):
        return not rule.standalone and not rule.sticky_key
    return rule.kind == EXPERIMENT and rule.simple and len(rule.ranges) <= len(rule.variations)


def _condition(rule: CompiledRule, code: _Code) -> str:
    """A plain rule's condition as one expression (a plain rule has no hash filters)."""
    if rule.condition is None:
        return "True"
    code.env.update(rule.condition_env)
    return rule.condition_code


def _force(
    code: _Code, slot: CompiledSlot, rule: CompiledRule, pos: int, depth: int, clean: bool
) -> None:
    force = rule.force
    if rule.plain:
        p = "1.0" if clean else f"mass + (passed.get({force!r}, 0.0) if passed else 0.0)"
        code.add(depth, f"p = {p}")
    else:
        code.add(depth, f"p = m + (passed.get({force!r}, 0.0) if passed else 0.0)")
        code.add(depth, "if m < mass:")
        code.add(depth + 1, "pass")  # (when nothing below can show the variant)
        _rest(code, slot, pos + 1, force, "mass - m", depth + 1)
    _decision(code, slot, rule, force, "force", -1, depth)


def _rollout(code: _Code, slot: CompiledSlot, rule: CompiledRule, pos: int, depth: int) -> None:
    add, r, force = code.add, code.bind(rule), rule.force
    add(depth, f"value = attrs.get({rule.hash_attribute!r})")
    add(depth, "if value.__class__ is not str or not value:")
    add(depth + 1, f"value = self._hash_value({r}, attrs, True)")
    add(depth, "if value is not None:")
    add(depth + 1, f"n = bucket_hash({rule.seed!r}, value, {rule.hash_version!r})")
    add(depth + 1, "if n is not None:")
    d = depth + 2
    bounds = rule.bucket_range
    if bounds is None:
        inside = "False" if rule.coverage == 0.0 else f"n <= {code.bind(rule.coverage)}"
    else:
        inside = f"{code.bind(bounds[0])} <= n < {code.bind(bounds[1])}"
    taken = code.bind(rule.taken)
    add(d, f"if {inside}:")
    add(d + 1, f"p = m * {taken} + (passed.get({force!r}, 0.0) if passed else 0.0)")
    _rest(code, slot, pos + 1, force, f"mass - m * {taken}", d + 1)
    _decision(code, slot, rule, force, "force", -1, d + 1)
    if rule.taken > 0.0:
        add(d, "passed = passed or {}")
        add(d, f"passed[{force!r}] = passed.get({force!r}, 0.0) + m * {taken}")
        add(d, f"mass -= m * {taken}")


def _experiment(code: _Code, slot: CompiledSlot, rule: CompiledRule, pos: int, depth: int) -> None:
    """A plain experiment served without a GrowthBook context (no forcing to consider)."""
    add, taken = code.add, code.bind(rule.taken)
    add(depth, f"value = attrs.get({rule.hash_attribute!r})")
    add(depth, "if value.__class__ is not str or not value:")
    add(depth + 1, "value = hash_string(value)")
    add(depth, "if value is not None:")
    d = depth + 1
    namespace = rule.namespace
    if namespace is not None and not rule.filters:
        key = (rule.namespace_seed, 1, rule.hash_attribute)
        if key in code.shared:
            add(d, f"n = {_hashed(key)}")  # the value above is its hash value
            add(d, f"if {code.bind(namespace[1])} <= n < {code.bind(namespace[2])}:")
        else:
            add(d, f"n = bucket_hash({rule.namespace_seed!r}, value, 1)")
            add(
                d,
                f"if n is not None and {code.bind(namespace[1])} <= n < {code.bind(namespace[2])}:",
            )
        d += 1
    add(d, f"n = bucket_hash({rule.seed!r}, value, {rule.hash_version!r})")
    add(d, "if n is not None:")
    d += 1
    add(d, "pass")  # an experiment with no ranges takes nobody
    for index, (lo, hi) in enumerate(rule.ranges):
        variant = rule.variations[index]
        share = code.bind(rule.shares.get(variant, 0.0))
        add(d, f"{'if' if index == 0 else 'elif'} {code.bind(lo)} <= n < {code.bind(hi)}:")
        add(d + 1, f"p = m * {share} + (passed.get({variant!r}, 0.0) if passed else 0.0)")
        add(d + 1, f"if m * {taken} < mass:")
        add(d + 2, "pass")  # (when nothing below can show the variant)
        _rest(code, slot, pos + 1, variant, f"mass - m * {taken}", d + 2)
        _decision(code, slot, rule, variant, "experiment", index, d + 1)
    if rule.taken > 0.0:
        add(d, "else:" if rule.ranges else "if True:")
        add(d + 1, "passed = passed or {}")
        for name, amount in rule.shares.items():
            add(d + 1, f"passed[{name!r}] = passed.get({name!r}, 0.0) + m * {code.bind(amount)}")
        add(d + 1, f"mass -= m * {taken}")


def _rest(code: _Code, slot: CompiledSlot, start: int, variant: str, left: str, depth: int) -> None:
    """``p += self._rest(S, start, variant, left, attrs, stack)``, written out when the rules
    from ``start`` on are plain forces (the first that applies takes all that is left, else
    the default does): the same sum, without the walk of outcomes."""
    tail = slot.rules[start:]
    if not all(r.kind == FORCE and r.plain for r in tail):
        if all(r.kind in (FORCE, ROLLOUT, PASS_ON) and r.plain for r in tail):
            _rest_with_rollouts(code, slot, tail, variant, left, depth)
        else:
            code.add(depth, f"p += self._rest(S, {start}, {variant!r}, {left}, attrs, stack)")
        return
    branches: list[tuple[str, str]] = []
    for rule in tail:
        condition = _condition(rule, code)
        branches.append((condition, rule.force))
        if condition == "True":
            break
    else:
        branches.append(("True", slot.default))
    if all(taker != variant for _, taker in branches):
        return  # nothing below can show this variant: p stays as it is
    code.add(depth, f"rest = {left}")
    code.add(depth, "if rest > 0.0:")
    d = depth + 1
    for i, (condition, taker) in enumerate(branches):
        if condition == "True":
            opening = "else:" if i else "if True:"
        else:
            opening = f"{'elif' if i else 'if'} {condition}:"
        code.add(d, opening)
        code.add(d + 1, "p += rest" if taker == variant else "pass")


def _rest_with_rollouts(
    code: _Code,
    slot: CompiledSlot,
    tail: list[CompiledRule],
    variant: str,
    left: str,
    depth: int,
) -> None:
    """:func:`_rest` for plain forces, rollouts and rules that give nothing: what
    :meth:`trimtab.decide.Rules._outcomes` yields to ``variant``, added up in ``q`` in the same
    order (so ``p += q`` is the loop's sum to the bit), the rollouts' hashes treated as random:
    a rollout that applies and can hash gives its share and leaves the rest below it; the
    first force that applies takes all that is left."""
    acting = [r for r in tail if r.kind == FORCE or (r.kind == ROLLOUT and r.taken > 0.0)]
    if slot.default != variant:
        # the rules after the last that can show the variant only share out the rest
        while acting and acting[-1].force != variant:
            acting.pop()
        if not acting:
            return  # nothing below can show this variant: p stays as it is
    add = code.add
    add(depth, f"rest = {left}")
    add(depth, "if rest > 0.0:")
    d = depth + 1
    add(d, "q = 0.0")
    for rule in acting:  # (rules that give nothing and take nothing are left out)
        condition = _condition(rule, code)
        if rule.kind == ROLLOUT:
            # Rules._shares: a rollout picks only for a user with a hash value
            value = f"(_v := attrs.get({rule.hash_attribute!r})).__class__ is str and _v != ''"
            hashable = f"({value} or self._hash_value({code.bind(rule)}, attrs, True) is not None)"
            add(d, f"if {hashable if condition == 'True' else f'{condition} and {hashable}'}:")
            if rule.force == variant:
                add(d + 1, f"q += rest * {code.bind(rule.shares[rule.force])}")
            add(d + 1, f"rest -= rest * {code.bind(rule.taken)}")
            continue
        # a force takes all that is left: the rules after it are reached only without it
        if condition == "True":
            add(d, "q += rest" if rule.force == variant else "pass")
            break
        add(d, f"if {condition}:")
        add(d + 1, "q += rest" if rule.force == variant else "pass")
        add(d, "else:")
        d += 1
    else:
        # no rule took it: the default shows
        add(d, "q += rest" if slot.default == variant else "pass")
    add(depth + 1, "p += q")


def _decision(
    code: _Code,
    slot: CompiledSlot,
    rule: CompiledRule,
    variant: str,
    source: str,
    variation: int,
    depth: int,
) -> None:
    """``return`` the decision :meth:`trimtab.decide.Rules._made` builds, its fixed parts
    as constants (``p`` is the propensity, ``n`` the experiment's bucket)."""
    bind = code.bind
    if rule.kind == EXPERIMENT:
        head = f"{rule.reason_head}{variation} of {len(rule.variations)} (bucket "
        reason = f'{bind(head)} + f"{{n:.4f}}" + {bind(f") for {rule.condition_text}")}'
    else:
        reason = bind(rule.reason_head)
    if rule.shown_paths:
        pieces = []
        for i, (name, parts) in enumerate(rule.shown_paths):
            value = (
                f"attrs.get({name!r})" if len(parts) == 1 else f"walk_path(attrs, {bind(parts)})"
            )
            # show()'s commonest case, a value that is not a float, without the call
            shown = f"(repr(_s) if (_s := {value}).__class__ is not float else show(_s))"
            pieces.append(f"{bind((' (saw ' if i == 0 else ', ') + name + '=')} + {shown}")
        reason = f"{reason} + {' + '.join(pieces)} + ')'"
    why = (
        bind(rule.why_fixed) if rule.why_fixed is not None else f"explain({bind(rule.why)}, attrs)"
    )
    extra = f", experiment={rule.key!r}" if rule.key else ""
    if variation != -1:
        extra += f", variation={variation}"
    code.add(
        depth,
        f"return Decision(slot={slot.name!r}, variant={variant!r}, source={source!r}, "
        f"rule_id={rule.rule_id!r}, propensity=p, reason={reason}{extra}, "
        f"payload={bind(slot.variants.get(variant))}, why={why})",
    )


def spread_source(
    slot: CompiledSlot, shared: frozenset[HashKey] = frozenset()
) -> tuple[str, dict[str, Any]]:
    """Source of ``spread(self, attrs, stack) -> dict[str, float]``, the probability of each
    of the slot's variants for this user, the hashes treated as random
    (:meth:`trimtab.decide.Rules._spread`, which a prerequisite on the slot needs): forces,
    rollouts and plain experiments written out, the loop of
    :meth:`trimtab.decide.Rules._outcomes` from the first rule that is not; the hashes in
    ``shared`` as in :func:`walk_source`."""
    code = _Code({}, shared)
    add = code.add
    add(0, f"def spread(self, attrs, stack, S={code.bind(slot)}):")
    add(1, "out = {}")
    add(1, "mass = 1.0")
    for pos, rule in enumerate(slot.rules):
        kind = rule.kind
        if kind == PASS_ON and not rule.gates:
            continue  # it gives nothing and no gate of it blocks: the spread is as it was
        # hash filters are written out; sticky keys, prerequisites and run() are not
        filtered_only = not (rule.sticky_key or rule.parents or rule.standalone)
        if not filtered_only or not (
            kind in (FORCE, ROLLOUT) or (kind == EXPERIMENT and rule.simple)
        ):
            add(1, f"for name, p in self._outcomes(S, {pos}, mass, attrs, stack):")
            add(2, "out[name] = out.get(name, 0.0) + p")
            add(1, "return out")
            return "\n".join(code.lines) + "\n", code.env
        depth = 1
        condition = _condition(rule, code)
        if rule.filters:
            filters = _filters(code, rule)
            condition = filters if condition == "True" else f"{condition} and {filters}"
        if condition != "True":
            add(1, f"if {condition}:")
            depth = 2
        if kind == FORCE:  # takes all that is left
            add(depth, f"out[{rule.force!r}] = out.get({rule.force!r}, 0.0) + mass")
            add(depth, "return out")
            continue
        r = code.bind(rule)
        if kind == ROLLOUT:
            # a non-empty string is its own hash value: the call only for anything else
            value = f"(_v := attrs.get({rule.hash_attribute!r})).__class__ is str and _v != ''"
            add(depth, f"if {value} or self._hash_value({r}, attrs, True) is not None:")
        elif (
            rule.namespace is not None
            and not rule.filters
            and (key := (rule.namespace_seed, 1, rule.hash_attribute)) in shared
        ):
            # _experiment_hash: a hash value, inside the namespace (NaN: no hash value)
            lo, hi = rule.namespace[1], rule.namespace[2]
            add(depth, f"if {code.bind(lo)} <= {_hashed(key)} < {code.bind(hi)}:")
        elif rule.namespace is None or rule.filters:
            # _experiment_hash without a namespace to check: a hash value (a non-empty string
            # is its own; hash_string for anything else)
            value = f"(_v := attrs.get({rule.hash_attribute!r})).__class__ is str and _v != ''"
            add(depth, f"if {value} or hash_string(_v) is not None:")
        else:
            add(depth, f"if self._experiment_hash({r}, attrs, False) is not None:")
        for name, share in rule.shares.items():
            add(depth + 1, f"out[{name!r}] = out.get({name!r}, 0.0) + mass * {code.bind(share)}")
        add(depth + 1, f"mass -= mass * {code.bind(rule.taken)}")
        add(depth + 1, "if mass <= 0.0:")
        add(depth + 2, "return out")
    default = slot.default
    add(1, "if mass > 0.0:")
    add(2, f"out[{default!r}] = out.get({default!r}, 0.0) + mass")
    add(1, "return out")
    return "\n".join(code.lines) + "\n", code.env


def walk_function(
    slot: CompiledSlot, env: dict[str, Any], shared: frozenset[HashKey] = frozenset()
) -> Callable[..., Any]:
    """The compiled ``walk`` of :func:`walk_source`, its helpers taken from ``env``."""
    return _function(slot, "walk", walk_source(slot, shared), env)


def spread_function(
    slot: CompiledSlot, env: dict[str, Any], shared: frozenset[HashKey] = frozenset()
) -> Callable[..., Any]:
    """The compiled ``spread`` of :func:`spread_source`, its helpers taken from ``env``."""
    return _function(slot, "spread", spread_source(slot, shared), env)


def _function(
    slot: CompiledSlot, name: str, written: tuple[str, dict[str, Any]], env: dict[str, Any]
) -> Callable[..., Any]:
    source, constants = written
    # One namespace for all the functions written for an engine (constants have unique names;
    # each function is defined under a unique name, then taken out): the helpers they share
    # are in one place, not copied into a dictionary per function.
    unique = f"_f{next(_names)}"
    env.update(constants)
    exec(
        compile(
            source.replace(f"def {name}(", f"def {unique}(", 1),
            f"<{name} of {slot.name!r}>",
            "exec",
        ),
        env,
    )
    return env.pop(unique)  # type: ignore[no-any-return]
