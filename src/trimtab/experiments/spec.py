"""Metric and experiment declarations in the site config, validated at start-up.

Metrics are named and reusable; experiments name the metrics they are judged on::

    metrics:
      cta_click: {type: binomial, event: "click:cta", window_s: 3600}
      clicks: {type: count, event: "click:*"}
      dwell: {type: mean, event: "hover:*", value: dwell_ms}
      depth: {type: mean, event: scroll, value: depth, aggregate: max}
      clicks_per_exposure: {type: ratio, numerator: clicks, denominator: exposures}
      exposures: {type: count, event: exposure}
      bounce: {type: binomial, event: bounce, guardrail: true, direction: increase}
      rail_reward: {type: reward, policy: rail-bandit}
    experiments:
      hero-copy-test:
        slots: [hero]
        metrics: [cta_click, clicks_per_exposure]
        guardrails: [bounce]
        cuped: true

Event patterns are the ``kind:detail`` tokens of feature sequences (``click:cta``,
``hover:*``; a custom event by its name, ``signup`` or ``signup:*``), matched by the same code.
``direction`` is the way a metric moving is *bad* (``decrease`` by default; ``increase`` for
a bounce or an error rate). A ``reward`` metric is a bandit policy's own reward — its event
pattern, slot, window and threshold, as declared in the policy — credited to each user's first
exposure by the same function the policy learns with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from trimtab.events import BY_KIND, KINDS
from trimtab.validation import ConfigError
from trimtab.validation import convert as _convert

Fail = Callable[[str, str], ConfigError]  # (path, problem) -> the error to raise

MetricType = Literal["binomial", "count", "mean", "ratio", "reward"]


# Numeric fields of each event kind that a ``mean`` metric may read.
def _numeric_fields(event_type: type[msgspec.Struct]) -> tuple[str, ...]:
    info = msgspec.inspect.type_info(event_type)
    assert isinstance(info, msgspec.inspect.StructType)  # an event type is a Struct
    numeric = (msgspec.inspect.FloatType, msgspec.inspect.IntType)
    names = [f.name for f in info.fields if isinstance(f.type, numeric)]
    if event_type.__struct_config__.tag == "custom":
        names.append("value")  # a custom event's value, when it is a number
    return tuple(n for n in names if n not in ("ts", "received"))


NUMERIC_FIELDS: dict[str, tuple[str, ...]] = {
    kind: _numeric_fields(t) for kind, t in BY_KIND.items()
}


class MetricSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One metric: what is measured per user after (and, for CUPED, before) exposure.

    * ``binomial`` — did the user do ``event`` (0/1);
    * ``count`` — how many ``event``;
    * ``mean`` — a numeric ``value`` field of ``event``, aggregated per user (``sum``,
      ``max``; ``mean`` is the mean per event, analysed as a ratio of sums);
    * ``ratio`` — ``numerator`` metric over ``denominator`` metric (delta method);
    * ``reward`` — the reward of the bandit ``policy`` (0/1, see :mod:`trimtab.attribution`).
    """

    type: MetricType
    event: str | list[str] = ""
    value: str = ""
    aggregate: Literal["sum", "max", "mean"] = "sum"
    numerator: str = ""
    denominator: str = ""
    policy: str = ""
    window_s: float | None = None
    guardrail: bool = False
    direction: Literal["increase", "decrease"] = "decrease"
    description: str = ""

    @property
    def patterns(self) -> tuple[str, ...]:
        return (self.event,) if isinstance(self.event, str) else tuple(self.event)

    @property
    def inverse(self) -> bool:
        """Lower is better (an increase is the bad direction)."""
        return self.direction == "increase"


class ExperimentSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """An experiment to report: its key in the slots' rules and the metrics that judge it.

    The same ``key`` on several slots' rules buckets a user into one variation index on all of
    them (a multivariate bundle); experiments with different keys cross (a factorial design)
    and are reported one by one. ``holdout`` names a rule id or experiment key on the same
    slots whose exposed users are reported as one more arm. ``expected_users`` tunes the
    sequential test (its expected final sample size).
    """

    key: str = ""
    slots: list[str] = []
    metrics: list[str] = []
    guardrails: list[str] = []
    cuped: bool = False
    sequential: bool = False
    alpha: float = 0.05
    holdout: str | None = None
    correction: Literal["holm", "bh"] | None = "holm"
    expected_users: int | None = None
    description: str = ""


class ExperimentsConfig(msgspec.Struct, frozen=True):
    """The validated ``metrics`` and ``experiments`` sections."""

    metrics: dict[str, MetricSpec]
    experiments: dict[str, ExperimentSpec]


def check(config: Any, source: str) -> ExperimentsConfig:
    """Validate the config's ``metrics`` and ``experiments``; raise ``ConfigError`` naming the path.

    Returns the typed declarations, with each experiment's ``key`` and ``slots`` filled in.
    """

    def fail(path: str, problem: str) -> ConfigError:
        return ConfigError(source, path, problem)

    metrics: dict[str, MetricSpec] = {}
    for name, raw in (config.metrics or {}).items():
        metrics[str(name)] = _convert(
            raw, MetricSpec, f"$.metrics.{name}", source, field_in_path=True
        )
    policies = set(policy_rewards(config))
    for name, m in metrics.items():
        _check_metric(name, m, metrics, fail)
        if m.type == "reward" and m.policy not in policies:
            known = ", ".join(sorted(policies)) or "none"
            raise fail(f"$.metrics.{name}.policy", f"policy {m.policy!r} is not declared ({known})")

    experiments: dict[str, ExperimentSpec] = {}
    for name, raw in (config.experiments or {}).items():
        where = f"$.experiments.{name}"
        spec = _convert(
            raw if raw is not None else {}, ExperimentSpec, where, source, field_in_path=True
        )
        experiments[str(name)] = _check_experiment(str(name), spec, config, metrics, where, fail)
    return ExperimentsConfig(metrics=metrics, experiments=experiments)


def policy_rewards(config: Any) -> dict[str, tuple[str, Any]]:
    """Policy name -> (its slot, its :class:`~trimtab.attribution.Reward`), for reward metrics."""
    from trimtab.bandits.serving import policy_specs

    return {spec.name: (slot, spec.reward) for slot, _, spec in policy_specs(config.slots)}


def experiments_of(config: Any) -> ExperimentsConfig:
    """The typed declarations of an already loaded :class:`~trimtab.config.SiteConfig`."""
    return check(config, config.source or "<config>")


def _check_pattern(pattern: str, where: str, fail: Fail) -> None:
    if not pattern.partition(":")[0]:
        raise fail(where, f"event pattern {pattern!r} needs a kind (kind:detail, e.g. click:cta)")


def _check_metric(name: str, m: MetricSpec, metrics: dict[str, MetricSpec], fail: Fail) -> None:
    where = f"$.metrics.{name}"
    if m.window_s is not None and m.window_s <= 0:
        raise fail(f"{where}.window_s", "must be a positive number of seconds")
    if m.type == "ratio":
        if m.event or m.value:
            raise fail(where, "a ratio metric takes numerator and denominator, not event/value")
        for part in ("numerator", "denominator"):
            ref = getattr(m, part)
            if not ref:
                raise fail(f"{where}.{part}", "a ratio metric needs a numerator and a denominator")
            if ref not in metrics:
                known = ", ".join(sorted(metrics)) or "none"
                raise fail(f"{where}.{part}", f"metric {ref!r} is not declared ({known})")
            other = metrics[ref]
            if other.type == "reward":
                raise fail(f"{where}.{part}", f"{ref!r} is a reward; use a sum or count")
            if other.type == "ratio" or (other.type == "mean" and other.aggregate == "mean"):
                raise fail(f"{where}.{part}", f"{ref!r} is itself a ratio; use a sum or count")
        return
    if m.type == "reward":
        if m.event or m.value or m.window_s is not None:
            raise fail(where, "a reward metric takes its event, window and threshold from policy")
        if not m.policy:
            raise fail(f"{where}.policy", "name the bandit policy whose reward this is")
        return
    if m.policy:
        raise fail(f"{where}.policy", f"policy belongs to reward metrics, not {m.type}")
    if m.numerator or m.denominator:
        raise fail(where, f"numerator/denominator belong to ratio metrics, not {m.type}")
    patterns = m.patterns
    if not patterns or not all(patterns):
        raise fail(f"{where}.event", "an event pattern is required (kind:detail, e.g. click:cta)")
    for i, pattern in enumerate(patterns):
        at = f"{where}.event" if isinstance(m.event, str) else f"{where}.event[{i}]"
        _check_pattern(pattern, at, fail)
    if m.type == "mean":
        if not m.value:
            raise fail(f"{where}.value", "a mean metric needs the numeric event field to read")
        for pattern in patterns:
            head = pattern.partition(":")[0]
            kinds = KINDS if head == "*" else ((head,) if head in KINDS else ("custom",))
            if not any(m.value in NUMERIC_FIELDS[k] for k in kinds):
                at = f"{where}.value"
                have = ", ".join(NUMERIC_FIELDS[kinds[0]]) or "none"
                raise fail(at, f"{pattern!r} events have no numeric field {m.value!r} ({have})")
    elif m.value:
        raise fail(f"{where}.value", f"value belongs to mean metrics, not {m.type}")


def _rules_with_key(slot: Any, slot_name: str, key: str) -> list[Any]:
    return [r for r in slot.rules if r.variations is not None and (r.key or slot_name) == key]


def _check_experiment(
    name: str,
    spec: ExperimentSpec,
    config: Any,
    metrics: dict[str, MetricSpec],
    where: str,
    fail: Fail,
) -> ExperimentSpec:
    key = spec.key or name
    slots = list(spec.slots)
    if not slots:
        slots = [s for s, decl in config.slots.items() if _rules_with_key(decl, s, key)]
        if not slots:
            raise fail(f"{where}.key", f"no slot rule runs experiment key {key!r}")
    shape: tuple[int, tuple[float, ...] | None] | None = None
    for i, slot_name in enumerate(slots):
        at = f"{where}.slots[{i}]"
        decl = config.slots.get(slot_name)
        if decl is None:
            known = ", ".join(config.slots) or "none"
            raise fail(at, f"slot {slot_name!r} is not declared ({known})")
        rules = _rules_with_key(decl, slot_name, key)
        if not rules:
            raise fail(at, f"slot {slot_name!r} has no rule with experiment key {key!r}")
        rule = rules[0]
        this = (len(rule.variations), tuple(rule.weights) if rule.weights else None)
        if shape is not None and this != shape:
            raise fail(
                at,
                f"slot {slot_name!r} splits {key!r} differently from {slots[0]!r}: a bundle "
                "needs the same number of variations and the same weights on every slot",
            )
        shape = this
    listed = [(f"{where}.metrics[{i}]", m) for i, m in enumerate(spec.metrics)]
    listed += [(f"{where}.guardrails[{i}]", m) for i, m in enumerate(spec.guardrails)]
    if not listed:
        raise fail(f"{where}.metrics", "list at least one metric")
    seen: set[str] = set()
    for at, metric in listed:
        if metric not in metrics:
            known = ", ".join(sorted(metrics)) or "none"
            raise fail(at, f"metric {metric!r} is not declared ({known})")
        if metric in seen:
            raise fail(at, f"metric {metric!r} is listed twice")
        seen.add(metric)
    if not 0.0 < spec.alpha < 0.5:
        raise fail(f"{where}.alpha", "must be between 0 and 0.5")
    if spec.expected_users is not None and spec.expected_users < 2:
        raise fail(f"{where}.expected_users", "must be at least 2")
    if spec.holdout is not None:
        names: set[str] = set()
        for slot_name in slots:
            own = _rules_with_key(config.slots[slot_name], slot_name, key)
            for r in config.slots[slot_name].rules:
                if not any(r is o for o in own):
                    names.update(x for x in (r.id, r.key) if x)
        if spec.holdout not in names:
            known = ", ".join(sorted(names)) or "none"
            raise fail(
                f"{where}.holdout",
                f"{spec.holdout!r} is not a rule id or experiment key on these slots ({known})",
            )
    return msgspec.structs.replace(spec, key=key, slots=slots)
