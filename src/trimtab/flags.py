"""Slots as feature flags, for OpenFeature (the OFREP server and the native provider).

A flag is a slot with a GrowthBook form (:mod:`trimtab.gbpayload`): its value is the shown
variant's ``value`` (or the variant's name), its variant is the variant's name. trimtab's own
engine decides it from the evaluation context alone: ``targetingKey`` is the ``id`` attribute,
every other context field an attribute of the same name. No live features are read and nothing
is logged (``/v1/decide`` does both). Slots decided by a learning policy or by live attributes
are not flags: evaluating one is an error that says why.

>>> from trimtab.config import parse_config
>>> flags = FlagSet(parse_config({"slots": {"dark": {"default": "off", "variants": {
...     "off": {"value": False}, "on": {"value": True}},
...     "rules": [{"condition": {"plan": "pro"}, "force": "on"}]}}}))
>>> r = flags.evaluate("dark", attributes_of({"targetingKey": "u1", "plan": "pro"}))
>>> r.value, r.variant, r.reason
(True, 'on', 'TARGETING_MATCH')
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from trimtab.config import SiteConfig
from trimtab.decide import EXPERIMENT, FORCE, ROLLOUT, Decision, Engine, Options
from trimtab.gbpayload import exclusions, variant_value
from trimtab.otel import evaluation

# OpenFeature error codes (https://openfeature.dev/specification/types#error-code)
FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
INVALID_CONTEXT = "INVALID_CONTEXT"
PARSE_ERROR = "PARSE_ERROR"
GENERAL = "GENERAL"


class FlagError(Exception):
    """A flag that could not be evaluated: an OpenFeature error code and the reason."""

    def __init__(self, key: str, code: str, details: str) -> None:
        self.key, self.code, self.details = key, code, details
        super().__init__(f"{key}: {code}: {details}")


@dataclass(frozen=True, slots=True)
class FlagResult:
    key: str
    value: Any
    variant: str
    reason: str  # STATIC | TARGETING_MATCH | SPLIT | DEFAULT
    metadata: dict[str, bool | int | float | str] = field(default_factory=dict)


def attributes_of(context: Any) -> dict[str, Any]:
    """trimtab attributes from an OpenFeature evaluation context (``targetingKey`` → ``id``)."""
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise FlagError("", INVALID_CONTEXT, "context: expected an object of attributes")
    attrs = {str(k): v for k, v in context.items() if k != "targetingKey"}
    key = context.get("targetingKey")
    if key is not None:
        if not isinstance(key, str | int):
            raise FlagError("", INVALID_CONTEXT, "context.targetingKey: expected a string")
        attrs["id"] = str(key)
    return attrs


class FlagSet:
    """One config's flags and a non-logging engine deciding them."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.excluded = exclusions(config)
        self.keys = [name for name in config.slots if name not in self.excluded]
        self.engine = Engine(config)
        self._needs_id = {name: self._hashes_id(name) for name in self.keys}
        self.set_id = config.site.id
        self.version = config_version(config)

    def _hashes_id(self, name: str) -> bool:
        if self.config.site.holdout > 0.0:
            return True
        return any(
            r.kind in (ROLLOUT, EXPERIMENT) and r.hash_attribute == "id"
            for r in self.engine.slots[name].rules
        )

    def evaluate(
        self,
        key: str,
        attrs: dict[str, Any],
        require_key: bool = True,
        forced: Mapping[str, Any] | None = None,
        url: str = "",
    ) -> FlagResult:
        """One flag for these attributes (a ``feature_flag.evaluation`` span, see
        :mod:`trimtab.otel`); raises :class:`FlagError`. Without ``require_key`` a user with
        no id is decided as GrowthBook does: the rules that bucket by id pass them by.
        ``forced`` (experiment key -> variation) and ``url`` (``?key=index``) force experiment
        variations, as a GrowthBook SDK's ``forcedVariations`` and URL do."""
        with evaluation(key, self.set_id, self.version) as span:
            try:
                result = self._evaluate(key, attrs, require_key, forced, url)
            except FlagError as exc:
                span.error(exc.code, exc.details)
                raise
            span.result(result.variant, result.reason)
            return result

    def _evaluate(
        self,
        key: str,
        attrs: dict[str, Any],
        require_key: bool,
        forced: Mapping[str, Any] | None = None,
        url: str = "",
    ) -> FlagResult:
        if key in self.excluded:
            raise FlagError(key, GENERAL, f"slot {key!r} is not a flag: {self.excluded[key]}")
        if key not in self.config.slots:
            raise FlagError(key, FLAG_NOT_FOUND, f"no slot named {key!r}")
        if require_key and self._needs_id[key] and attrs.get("id") in (None, ""):
            raise FlagError(
                key, TARGETING_KEY_MISSING, f"{key!r} buckets users: give a targetingKey"
            )
        if forced or url:
            opts = Options(forced=forced or {}, url=url)
            (decision,) = self.engine.decide_attrs(dict(attrs), [key], opts)
            result = self._result(decision)
            if opts.trace is not None and decision.source == "experiment" and not opts.trace[3]:
                result.metadata["forced"] = True  # no hash used: nothing for the SDK to track
            return result
        (decision,) = self.engine.decide_attrs(dict(attrs), [key])
        return self._result(decision)

    def evaluate_all(self, attrs: dict[str, Any]) -> list[FlagResult | FlagError]:
        out: list[FlagResult | FlagError] = []
        for key in self.config.slots:
            try:
                out.append(self.evaluate(key, attrs))
            except FlagError as exc:
                out.append(exc)
        return out

    def _result(self, d: Decision) -> FlagResult:
        slot = self.config.slots[d.slot]
        metadata: dict[str, bool | int | float | str] = {
            "source": d.source,
            "propensity": d.propensity,
        }
        if d.rule_id:
            metadata["ruleId"] = d.rule_id
        if d.experiment:
            metadata["experiment"] = d.experiment
            metadata["variation"] = d.variation
        return FlagResult(
            key=d.slot,
            value=variant_value(slot, d.variant),
            variant=d.variant,
            reason=self._reason(d),
            metadata=metadata,
        )

    def _reason(self, d: Decision) -> str:
        if d.source == "default":
            return "DEFAULT"
        if d.source in ("experiment", "holdout"):
            return "SPLIT"
        if d.source == "force":
            rule = next(r for r in self.engine.slots[d.slot].rules if r.rule_id == d.rule_id)
            if rule.kind == ROLLOUT:
                return "SPLIT"
            if rule.kind == FORCE and rule.condition is None:
                return "STATIC"
            return "TARGETING_MATCH"
        return "UNKNOWN"


def config_version(config: SiteConfig) -> str:
    """A short digest of the slots and the holdout: equal configs decide alike."""
    raw = msgspec.json.encode([config.slots, config.site.holdout, config.site.holdout_seed])
    return hashlib.sha256(raw).hexdigest()[:16]


class LiveFlags:
    """The :class:`FlagSet` of a config that may change (``current`` returns the live one)."""

    def __init__(self, current: Callable[[], SiteConfig]) -> None:
        self._current = current
        self._flags: FlagSet | None = None

    def get(self) -> FlagSet:
        config = self._current()
        flags = self._flags
        if flags is None or flags.config is not config:
            flags = self._flags = FlagSet(config)
        return flags
