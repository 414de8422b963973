"""Site config validation: a broken config names the file, the path and the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from trimtab.config import ConfigError, load_config, parse_config

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_config_is_valid():
    config = load_config(DEMO)
    assert set(config.slots) == {"hero", "rail", "cta", "review"}
    assert config.source == str(DEMO)
    assert len(config.feature_specs()) == len(config.features)


def _break(path: list, value) -> dict:
    data = copy.deepcopy(demo_data())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


BROKEN = [
    (
        ["slots", "hero", "default"],
        "headline",
        "$.slots.hero.default",
        "'headline' is not declared",
    ),
    (["slots", "cta", "rules", 0, "force"], "banner", "$.slots.cta.rules[0].force", "'banner'"),
    (
        ["slots", "cta", "rules", 0, "condition"],
        {"scroll_depth_max": {"$gtx": 0.75}},
        "$.slots.cta.rules[0].condition.scroll_depth_max.$gtx",
        "unknown operator",
    ),
    (
        ["slots", "hero", "rules", 1, "weights"],
        [0.5, 0.2],
        "$.slots.hero.rules[1].weights",
        "sum to 1",
    ),
    (
        ["slots", "hero", "rules", 1, "variations"],
        ["top_story", "nope"],
        "$.slots.hero.rules[1].variations[1]",
        "'nope' is not declared",
    ),
    (
        ["slots", "hero", "rules", 0, "coverage"],
        1.5,
        "$.slots.hero.rules[0].coverage",
        "between 0 and 1",
    ),
    (
        ["slots", "hero", "rules", 0, "hashVersion"],
        3,
        "$.slots.hero.rules[0].hashVersion",
        "1 or 2",
    ),
    (
        ["slots", "hero", "rules", 0, "colour"],
        "red",
        "$.slots.hero.rules[0]",
        "unknown field `colour`",
    ),
    (
        ["features", "scroll_depth_max", "kind"],
        "depthiness",
        "$.features.scroll_depth_max.kind",
        "unknown kind",
    ),
    (
        ["features", "interest", "scope"],
        "planet",
        "$.features.interest.scope",
        "Invalid enum value 'planet'",
    ),
    (["site", "consent"], "maybe", "$.site.consent", "'maybe'"),
    (["slots", "review", "rules", 0, "force"], None, "$.slots.review.rules[0]", "exactly one of"),
]


@pytest.mark.parametrize(("path", "value", "where", "problem"), BROKEN, ids=[b[2] for b in BROKEN])
def test_broken_config_names_file_path_and_problem(tmp_path, path, value, where, problem):
    file = tmp_path / "site.yaml"
    file.write_text(yaml.safe_dump(_break(path, value)))
    with pytest.raises(ConfigError) as info:
        load_config(file)
    error = info.value
    assert error.file == str(file)
    assert error.path == where
    assert problem in error.problem
    assert str(error).startswith(f"{file}: {where}: ")


def test_unparseable_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("slots: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_toml_config_is_accepted(tmp_path):
    file = tmp_path / "site.toml"
    file.write_text(
        """
[features.depth]
kind = "scroll_depth_max"

[slots.hero]
default = "a"
variants = { a = { html = "A" }, b = { html = "B" } }
rules = [ { id = "deep", condition = { depth = { "$gt" = 0.5 } }, force = "b" } ]
"""
    )
    config = load_config(file)
    assert config.slots["hero"].rules[0].force == "b"


def test_duplicate_rule_ids_are_refused():
    data = demo_data()
    data["slots"]["rail"]["rules"][1]["id"] = "late-evening-mobile"
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.yaml")
    assert info.value.path == "$.slots.rail.rules[1].id"


def test_secret_key_comes_from_the_environment(monkeypatch):
    config = parse_config(demo_data(), "demo")
    monkeypatch.setenv("TRIMTAB_SECRET_KEY", "sk_test")
    assert config.secret_key() == "sk_test"


def test_one_policy_name_in_two_slots_is_refused_and_distinct_names_decide(tmp_path):
    """Two slots serving bandits under one name validated, then every decide raised KeyError."""
    from trimtab.runtime import Runtime

    data = demo_data()
    bandit = copy.deepcopy(next(r for r in data["slots"]["rail"]["rules"] if "policy" in r))
    data["slots"]["rail2"] = {
        "default": "popular",
        "variants": data["slots"]["rail"]["variants"],
        "rules": [bandit],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.yaml")
    assert info.value.path == "$.slots.rail2.rules"
    assert "'rail-bandit' is already used by a rule of slot 'rail'" in str(info.value)

    bandit["id"] = "rail2-bandit"
    bandit["policy"]["name"] = "rail2-bandit"
    runtime = Runtime(parse_config(data, "x.yaml"), tmp_path)
    try:
        decisions = runtime.decide("u1", "s1")
    finally:
        runtime.close()
    by_slot = {d.slot: d for d in decisions}
    assert set(by_slot) == set(data["slots"])
    assert by_slot["rail2"].variant in data["slots"]["rail"]["variants"]


def test_the_demo_config_states_the_scope_of_every_feature():
    demo = yaml.safe_load(DEMO.read_text())
    assert all(f.get("scope") in ("page", "session", "user") for f in demo["features"].values())
    scopes = load_config(DEMO).feature_specs()
    page = {s.name for s in scopes if s.resolved_scope == "page"}
    assert {"scroll_depth_max", "hover_ms_by_kind", "time_on_page_s"} <= page
