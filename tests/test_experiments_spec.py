"""Metric and experiment declarations: valid ones load, broken ones name the exact path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from trimtab.config import ConfigError, load_config, parse_config
from trimtab.experiments.spec import NUMERIC_FIELDS, experiments_of

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_declares_a_reportable_experiment():
    config = load_config(DEMO)
    declared = experiments_of(config)
    spec = declared.experiments["hero-copy-test"]
    assert spec.key == "hero-copy-test"
    assert spec.slots == ["hero"]
    for name in [*spec.metrics, *spec.guardrails]:
        assert name in declared.metrics


def _with(path: list, value) -> dict:
    data = copy.deepcopy(demo_data())
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


_DELETE = object()
EXP = ["experiments", "hero-copy-test"]

BROKEN = [
    ([*EXP, "metrics"], ["cta_click", "nope"], "$.experiments.hero-copy-test.metrics[1]", "nope"),
    ([*EXP, "guardrails"], ["missing"], "$.experiments.hero-copy-test.guardrails[0]", "missing"),
    (
        [*EXP, "metrics"],
        ["cta_click", "cta_click"],
        "$.experiments.hero-copy-test.metrics[1]",
        "twice",
    ),
    ([*EXP, "slots"], ["footer"], "$.experiments.hero-copy-test.slots[0]", "'footer'"),
    ([*EXP, "slots"], ["cta"], "$.experiments.hero-copy-test.slots[0]", "no rule with"),
    ([*EXP, "alpha"], 0.7, "$.experiments.hero-copy-test.alpha", "between 0 and 0.5"),
    ([*EXP, "correction"], "bonferroni", "$.experiments.hero-copy-test.correction", "enum"),
    ([*EXP, "holdout"], "ghost", "$.experiments.hero-copy-test.holdout", "'ghost'"),
    ([*EXP, "colour"], "red", "$.experiments.hero-copy-test.colour", "unknown field"),
    ([*EXP, "key"], "other-test", "$.experiments.hero-copy-test.slots[0]", "other-test"),
    (["metrics", "cta_click", "type"], "median", "$.metrics.cta_click.type", "enum"),
    (["metrics", "cta_click", "window_s"], -5, "$.metrics.cta_click.window_s", "positive"),
    (["metrics", "cta_click", "event"], "", "$.metrics.cta_click.event", "pattern"),
    (["metrics", "cta_click", "event"], ":cta", "$.metrics.cta_click.event", "needs a kind"),
    (["metrics", "cta_click", "value"], "depth", "$.metrics.cta_click.value", "mean metrics"),
    (["metrics", "image_dwell", "value"], _DELETE, "$.metrics.image_dwell.value", "numeric"),
    (["metrics", "image_dwell", "value"], "depth", "$.metrics.image_dwell.value", "dwell_ms"),
    (["metrics", "image_dwell", "aggregate"], "p99", "$.metrics.image_dwell.aggregate", ""),
    (
        ["metrics", "card_clicks_per_exposure", "numerator"],
        "ghost",
        "$.metrics.card_clicks_per_exposure.numerator",
        "'ghost' is not declared",
    ),
    (
        ["metrics", "card_clicks_per_exposure", "denominator"],
        "card_clicks_per_exposure",
        "$.metrics.card_clicks_per_exposure.denominator",
        "itself a ratio",
    ),
    (["metrics", "exposures", "numerator"], "cta_click", "$.metrics.exposures", "ratio metrics"),
    (["metrics", "cta_click", "direction"], "up", "$.metrics.cta_click.direction", "enum"),
]


@pytest.mark.parametrize(("path", "value", "where", "problem"), BROKEN)
def test_broken_declarations_name_the_path(path, value, where, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(_with(path, value), "site.yaml")
    assert info.value.file == "site.yaml"
    assert info.value.path == where
    assert problem in info.value.problem


def test_slots_are_inferred_from_the_key():
    data = _with([*EXP, "slots"], _DELETE)
    spec = experiments_of(parse_config(data, "site.yaml")).experiments["hero-copy-test"]
    assert spec.slots == ["hero"]


def test_an_experiment_key_no_rule_runs_is_an_error():
    data = _with([*EXP, "slots"], _DELETE)
    data["experiments"]["hero-copy-test"]["key"] = "ghost-test"
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml")
    assert info.value.path == "$.experiments.hero-copy-test.key"


def _bundle(variations: list[str], weights: list[float] | None) -> dict:
    data = copy.deepcopy(demo_data())
    data["slots"]["cta"]["rules"].append(
        {"key": "hero-copy-test", "variations": variations, "weights": weights}
    )
    data["experiments"]["hero-copy-test"]["slots"] = ["hero", "cta"]
    return data


def test_a_bundle_over_two_slots_is_accepted():
    data = _bundle(["newsletter", "subscribe_offer"], [0.5, 0.5])
    spec = experiments_of(parse_config(data, "site.yaml")).experiments["hero-copy-test"]
    assert spec.slots == ["hero", "cta"]


def test_a_bundle_must_split_every_slot_the_same_way():
    data = _bundle(["newsletter", "subscribe_offer"], [0.2, 0.8])
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml")
    assert info.value.path == "$.experiments.hero-copy-test.slots[1]"
    assert "same number of variations" in info.value.problem


def test_holdout_may_name_another_rule_on_the_slot():
    data = _with([*EXP, "holdout"], "fast-scroller")
    spec = experiments_of(parse_config(data, "site.yaml")).experiments["hero-copy-test"]
    assert spec.holdout == "fast-scroller"


@pytest.mark.parametrize("kind", sorted(NUMERIC_FIELDS))
def test_every_numeric_field_is_accepted_for_its_kind(kind):
    for field in NUMERIC_FIELDS[kind]:
        pattern = kind if kind != "custom" else "purchase"
        data = _with(["metrics", "image_dwell"], {"type": "mean", "event": pattern, "value": field})
        declared = experiments_of(parse_config(data, "site.yaml"))
        assert declared.metrics["image_dwell"].value == field
