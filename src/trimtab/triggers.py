"""Triggers: the thresholds a site's rules watch, told to the tracker so it sends at once.

The tracker batches ordinary events (up to a second); a reader who crosses a threshold a rule
watches should not wait for the batch. :func:`watched` reads every enabled rule's condition
once per config and collects what can be crossed in the page:

- ``depth``: ``scroll_depth_max`` lower bounds (``$gt``, ``$gte``);
- ``speed``: ``scroll_velocity`` lower bounds;
- ``dwell``: ``hover_ms`` lower bounds, with the feature's ``by`` and the key the condition
  names (``hover_ms_by_kind.image > 3000`` watches hovers on elements of kind ``image``);
- ``events``: ``kind:detail`` patterns whose event changes a watched value at once — the last
  step of a sequence, the event an ``event_count`` or ``last_value`` counts, the clicks a
  ``click_count`` counts.

:func:`for_page` turns them into what a hello answer carries. Thresholds are "send when the
value is above": a ``$gte`` bound becomes a hair below it. A dwell threshold becomes the dwell
still missing on this page view (the tracker counts dwell from the hello on), so the tracker
sends its hover report just past it — while the pointer is still there.

>>> from trimtab.config import parse_config
>>> config = parse_config({
...     "features": {"depth": {"kind": "scroll_depth_max"},
...                  "dwell": {"kind": "hover_ms", "by": "kind"}},
...     "slots": {"cta": {"default": "a", "variants": {"a": {}, "b": {}}, "rules": [
...         {"condition": {"depth": {"$gt": 0.75}}, "force": "b"},
...         {"condition": {"dwell.image": {"$gt": 3000}}, "force": "b"}]}}})
>>> for_page(watched(config), {"dwell": {"image": 1200.0}})
{'depth': [0.75], 'speed': [], 'dwell': [['kind', 'image', 1800.0]], 'events': []}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from trimtab.config import SiteConfig
from trimtab.features import FeatureSpec

_EPSILON = {"depth": 1e-4, "speed": 0.5, "dwell": 0.5}


@dataclass
class Watch:
    """What a config's rules watch (see the module docstring)."""

    depth: set[float] = field(default_factory=set)
    speed: set[float] = field(default_factory=set)
    # (feature name, by, key, threshold): the value to exceed
    dwell: set[tuple[str, str, str, float]] = field(default_factory=set)
    events: set[str] = field(default_factory=set)


def _bounds(condition: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(attribute path, test) for every attribute a GrowthBook condition tests."""
    for key, value in condition.items():
        if key in ("$and", "$or", "$nor"):
            for sub in value:
                yield from _bounds(sub)
        elif key == "$not":
            yield from _bounds(value)
        elif not key.startswith("$"):
            yield key, value


def _lower(test: Any, kind: str) -> float | None:
    """The value a test needs to be exceeded, if it is a lower bound."""
    if not isinstance(test, Mapping):
        return None
    for op, bound in test.items():
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            continue
        if op == "$gt":
            return float(bound)
        if op == "$gte":
            return float(bound) - _EPSILON[kind]
    return None


def watched(config: SiteConfig) -> Watch:
    """Every threshold and event pattern the config's enabled rules watch."""
    features: dict[str, FeatureSpec] = {s.name: s for s in config.feature_specs()}
    watch = Watch()
    for slot in config.slots.values():
        for rule in slot.rules:
            if not rule.enabled or not rule.condition:
                continue
            for path, test in _bounds(rule.condition):
                name, _, key = path.partition(".")
                spec = features.get(name)
                if spec is not None:
                    _watch(watch, spec, key, test)
    return watch


def _watch(watch: Watch, spec: FeatureSpec, key: str, test: Any) -> None:
    kind = spec.kind
    if kind == "scroll_depth_max" and (bound := _lower(test, "depth")) is not None:
        watch.depth.add(bound)
    elif kind == "scroll_velocity" and (bound := _lower(test, "speed")) is not None:
        watch.speed.add(bound)
    elif kind == "hover_ms" and (bound := _lower(test, "dwell")) is not None:
        if spec.by == "total" or key:
            watch.dwell.add((spec.name, spec.by, key, bound))
    elif kind == "sequence":
        watch.events.add(spec.steps[-1])
    elif kind in ("event_count", "last_value"):
        watch.events.add(spec.event)
    elif kind == "click_count":
        if spec.by in ("kind", "element") and key:
            watch.events.add(f"click:{key}")
        else:
            watch.events.add("click")


def for_page(watch: Watch, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The triggers of one page view, as a hello answer carries them (docs/protocol.md).

    ``attrs`` are the features when the page says hello: a dwell already past its threshold
    is left out, and the others count only what is still missing.
    """
    dwell = []
    for name, by, key, bound in sorted(watch.dwell):
        value = attrs.get(name)
        if by != "total":
            value = value.get(key) if isinstance(value, Mapping) else None
        done = float(value) if isinstance(value, (int, float)) else 0.0
        if done <= bound:
            dwell.append([by, key, bound - done])
    return {
        "depth": sorted(watch.depth),
        "speed": sorted(watch.speed),
        "dwell": dwell,
        "events": sorted(watch.events),
    }
