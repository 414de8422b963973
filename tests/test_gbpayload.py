"""GrowthBook payloads in and out of trimtab: `trimtab import growthbook`, `export growthbook`.

The feature cases of GrowthBook's SDK suite (tests/data/growthbook/cases.json) are the data: each
case whose payload trimtab can take is imported, decided by trimtab's engine, exported again and
evaluated by the PyPI GrowthBook SDK; both must give the case's expected value. The others must
be refused with the field that holds what trimtab cannot do.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from trimtab.cli import app
from trimtab.config import ConfigError, parse_config
from trimtab.decide import Engine
from trimtab.gbpayload import PayloadError, export_payload, import_payload, variant_value

CASES = json.loads(
    (Path(__file__).parent / "data" / "growthbook" / "cases.json").read_text(encoding="utf-8")
)["feature"]
# what a case may carry besides the payload and the attributes: not part of an export
CONTEXT_ONLY = {"forcedVariations", "savedGroups", "contextualBandits"}
PAYLOAD_CASES = [c for c in CASES if not set(c[1]) & CONTEXT_ONLY]
REFUSED_FIELDS = {
    "parentConditions",  # only a cycle of prerequisites
    "minBucketVersion",
    "contextualVariations",
    "hashVersion",
    "$inGroup",
}


def _import(case: list[Any]) -> Any:
    _, context, _, _ = case
    data = import_payload({"features": context.get("features", {})})
    return parse_config(data, "<case>")


def _importable(case: list[Any]) -> bool:
    try:
        _import(case)
    except (PayloadError, ConfigError):
        return False
    return True


IMPORTABLE = [c for c in PAYLOAD_CASES if _importable(c)]
NOT_IMPORTABLE = [c for c in PAYLOAD_CASES if not _importable(c)]


def test_the_suite_is_mostly_importable():
    assert len(IMPORTABLE) >= 25
    assert len(IMPORTABLE) + len(NOT_IMPORTABLE) == len(PAYLOAD_CASES)


@pytest.mark.parametrize("case", IMPORTABLE, ids=[c[0] for c in IMPORTABLE])
def test_imported_case_decides_as_growthbook_and_round_trips(case):
    from growthbook import GrowthBook

    name, context, key, expected = case
    config = _import(case)
    attrs = dict(context.get("attributes", {}))
    (decision,) = Engine(config).decide_attrs(dict(attrs), [key])
    assert variant_value(config.slots[key], decision.variant) == expected["value"], name

    payload = export_payload(config)
    gb = GrowthBook(features=payload["features"], attributes=dict(attrs))
    assert gb.eval_feature(key).value == expected["value"], name

    # import(export(config)) is the same config, so a second export is the same payload
    again = parse_config(import_payload(payload), "<again>")
    assert export_payload(again) == payload


@pytest.mark.parametrize("case", NOT_IMPORTABLE, ids=[c[0] for c in NOT_IMPORTABLE])
def test_unsupported_case_is_refused_naming_the_field(case):
    with pytest.raises((PayloadError, ConfigError)) as refused:
        _import(case)
    message = str(refused.value)
    assert any(field in message for field in REFUSED_FIELDS), message


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (
            {
                "features": {
                    "f": {
                        "defaultValue": 1,
                        "rules": [
                            {"variations": [1, 2], "bucketVersion": 2, "minBucketVersion": 1}
                        ],
                    }
                }
            },
            "minBucketVersion",
        ),
        (
            {"features": {"f": {"defaultValue": 1, "rules": [{"force": 2, "tracks": [{}]}]}}},
            "tracks",
        ),
        (
            {"features": {"f": {"defaultValue": 1}}, "contextualBandits": {"b": {}}},
            "contextualBandits",
        ),
        ({"encryptedFeatures": "abc"}, "encryptedFeatures"),
        ({"features": {"f": {"defaultValue": 1, "project": "x"}}}, "project"),
        ({"features": {"f": {"defaultValue": 1, "rules": [{"force": 2, "colour": 1}]}}}, "colour"),
        (
            {
                "features": {
                    "f": {
                        "defaultValue": 0,
                        "rules": [{"variations": [0, 1], "meta": [{"key": "a"}, {"colour": 1}]}],
                    }
                }
            },
            "meta[1].colour",
        ),
    ],
)
def test_unsupported_fields_are_named(payload, field):
    with pytest.raises(PayloadError) as refused:
        import_payload(payload)
    assert refused.value.path.endswith(field)


GB_ONLY_PAYLOAD: dict[str, Any] = {
    "savedGroups": {"staff": ["u3", "u7", "u11"]},
    "features": {
        "parent": {
            "defaultValue": "off",
            "rules": [{"key": "p", "variations": ["off", "on"], "hashVersion": 2}],
        },
        "child": {
            "defaultValue": 0,
            "rules": [
                {
                    "parentConditions": [
                        {"id": "parent", "condition": {"value": "on"}, "gate": True}
                    ]
                },
                {"condition": {"id": {"$inGroup": "staff"}}, "force": 9},
                {
                    "key": "c",
                    "variations": [1, 2, 3],
                    "filters": [
                        {"attribute": "id", "seed": "ns", "hashVersion": 2, "ranges": [[0, 0.7]]}
                    ],
                    "meta": [{"key": "a"}, {"key": "b", "passthrough": True}, {"key": "c"}],
                    "hashAttribute": "device",
                    "fallbackAttribute": "id",
                },
                {"force": 5, "coverage": 0.5, "fallbackAttribute": "id", "hashAttribute": "device"},
                {"key": "r", "variations": [6, 7], "ranges": [[0, 0.2], [0.2, 0.9]]},
            ],
        },
    },
}


def test_prerequisites_filters_saved_groups_meta_and_fallbacks_import_and_decide_as_growthbook():
    from growthbook import GrowthBook

    config = parse_config(import_payload(GB_ONLY_PAYLOAD), "<gb>")
    assert config.saved_groups == {"staff": ["u3", "u7", "u11"]}
    engine = Engine(config)
    payload = export_payload(config)
    seen = set()
    for i in range(400):
        attrs = {"id": f"u{i}"} if i % 2 else {"id": f"u{i}", "device": f"d{i % 7}"}
        for features in (GB_ONLY_PAYLOAD, payload):
            gb = GrowthBook(
                features=features["features"], attributes=attrs, savedGroups=features["savedGroups"]
            )
            for key in ("parent", "child"):
                (d,) = engine.decide_attrs(dict(attrs), [key])
                value = variant_value(config.slots[key], d.variant)
                assert value == gb.eval_feature(key).value, (key, attrs, d.reason)
                seen.add((key, json.dumps(value)))
    # every rule decided someone: the gate (null), the group, the experiment, the rollout...
    assert {("child", v) for v in ("null", "9", "1", "3", "5", "6", "7", "0")} <= seen


def test_empty_prerequisites_and_filters_are_taken():
    data = import_payload(
        {
            "features": {
                "f": {
                    "defaultValue": False,
                    "rules": [{"force": True, "parentConditions": [], "filters": []}],
                }
            },
            "experiments": [],
            "dateUpdated": "2026-01-01T00:00:00Z",
        }
    )
    assert data["slots"]["f"]["rules"] == [{"force": "true"}]
    assert data["slots"]["f"]["variants"] == {"false": {"value": False}, "true": {"value": True}}


def test_variant_names_from_values_and_meta():
    data = import_payload(
        {
            "features": {
                "hero": {
                    "defaultValue": {"title": "A"},
                    "rules": [
                        {
                            "key": "t",
                            "variations": [{"title": "A"}, {"title": "B"}, "true"],
                            "meta": [{"key": "control"}, {"key": "1"}, {}],
                        },
                        {"force": True},
                    ],
                }
            }
        }
    )
    slot = data["slots"]["hero"]
    # a meta key names a variant unless it is GrowthBook's numeric default; the string "true"
    # and the boolean true are different values, so they get different names
    assert slot["variants"] == {
        "control": {"value": {"title": "A"}},
        "v1": {"value": {"title": "B"}},
        "true": {},
        "true-2": {"value": True},
    }
    assert slot["default"] == "control"
    assert slot["rules"][0]["variations"] == ["control", "v1", "true"]
    assert slot["rules"][1]["force"] == "true-2"


def test_cli_import_then_export_round_trip(tmp_path):
    source = {
        "features": {
            "checkout": {
                "defaultValue": False,
                "rules": [
                    {"condition": {"country": "FR"}, "force": True},
                    {
                        "key": "checkout-test",
                        "variations": [False, True],
                        "weights": [0.4, 0.6],
                        "coverage": 0.5,
                        "hashAttribute": "id",
                    },
                ],
            }
        }
    }
    given = tmp_path / "payload.json"
    given.write_text(json.dumps(source))
    runner = CliRunner()
    imported = runner.invoke(
        app, ["import", "growthbook", str(given), "-o", str(tmp_path / "c.yaml")]
    )
    assert imported.exit_code == 0, imported.output
    config = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert config["slots"]["checkout"]["default"] == "false"
    exported = runner.invoke(app, ["export", "growthbook", str(tmp_path / "c.yaml")])
    assert exported.exit_code == 0, exported.output
    payload = json.loads(exported.stdout)
    rules = payload["features"]["checkout"]["rules"]
    assert payload["features"]["checkout"]["defaultValue"] is False
    assert rules[0] == {"condition": {"country": "FR"}, "force": True}
    assert rules[1]["variations"] == [False, True] and rules[1]["weights"] == [0.4, 0.6]
    assert rules[1]["coverage"] == 0.5 and rules[1]["seed"] == "checkout-test"

    from growthbook import GrowthBook

    for i in range(300):
        attrs = {"id": f"u{i}", "country": "FR" if i % 3 == 0 else "US"}
        original = GrowthBook(features=source["features"], attributes=attrs)
        back = GrowthBook(features=payload["features"], attributes=attrs)
        assert back.eval_feature("checkout").value == original.eval_feature("checkout").value


def test_cli_import_refusal_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"features": {"f": {"rules": [{"force": 1, "contextualBanditRef": "b"}]}}})
    )
    result = CliRunner().invoke(app, ["import", "growthbook", str(bad)])
    assert result.exit_code == 2
    assert "$.features.f.rules[0].contextualBanditRef" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_export_names_left_out_slots(tmp_path):
    config = {
        "slots": {
            "ok": {"default": "a", "variants": {"a": {}, "b": {}}},
            "bandit": {
                "default": "a",
                "variants": {"a": {}, "b": {}},
                "rules": [{"id": "p", "policy": {"type": "epsilon_greedy"}}],
            },
        }
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["export", "growthbook", str(path)])
    assert result.exit_code == 0
    assert "left out bandit" in result.stderr
    assert set(json.loads(result.stdout)["features"]) == {"ok"}
    unknown = CliRunner().invoke(app, ["export", "launchdarkly", str(path)])
    assert unknown.exit_code == 2 and "unknown target" in unknown.output


# -- any config: the exported payload decides as trimtab's engine -----------------------------

VARIANTS = ["a", "b", "c"]
_fraction = st.sampled_from([0.0, 0.001, 0.1, 0.25, 0.3, 0.5, 0.999, 1.0]) | st.floats(0, 1)
_condition = st.sampled_from(
    [None, {"country": "FR"}, {"plan": {"$in": ["pro", "team"]}}, {"age": {"$gt": 30}}]
)


@st.composite
def _rule(draw: Any, i: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"r{i}"}
    condition = draw(_condition)
    if condition:
        rule["condition"] = condition
    kind = draw(st.sampled_from(["force", "rollout", "range", "experiment"]))
    rule["hashVersion"] = draw(st.sampled_from([1, 2]))
    rule["hashAttribute"] = draw(st.sampled_from(["id", "id", "company"]))
    if draw(st.booleans()):
        rule["seed"] = draw(st.sampled_from(["s1", "s2"]))
    if kind == "force":
        return {k: v for k, v in rule.items() if k in ("id", "condition")} | {
            "force": draw(st.sampled_from(VARIANTS))
        }
    if kind == "rollout":
        return rule | {"force": draw(st.sampled_from(VARIANTS)), "coverage": draw(_fraction)}
    if kind == "range":
        lo, hi = sorted([draw(_fraction), draw(_fraction)])
        return rule | {"force": draw(st.sampled_from(VARIANTS)), "range": [lo, hi]}
    n = draw(st.integers(2, 3))
    rule |= {"key": f"exp{i}", "variations": draw(st.permutations(VARIANTS))[:n]}
    if draw(st.booleans()):
        raw = [draw(st.integers(1, 9)) for _ in range(n)]
        rule["weights"] = [w / sum(raw) for w in raw[:-1]]
        rule["weights"].append(1.0 - sum(rule["weights"]))
    if draw(st.booleans()):
        rule["coverage"] = draw(_fraction)
    if draw(st.booleans()):
        lo, hi = sorted([draw(_fraction), draw(_fraction)])
        rule["namespace"] = ["ns", lo, hi]
    return rule


@st.composite
def _config(draw: Any) -> dict[str, Any]:
    slots = {}
    for s in range(draw(st.integers(1, 3))):
        rules = [draw(_rule(i)) for i in range(draw(st.integers(0, 4)))]
        variants: dict[str, Any] = {"a": {}, "b": {"value": True}, "c": {"value": 2.5}}
        slots[f"slot{s}"] = {"default": "a", "variants": variants, "rules": rules}
    holdout = draw(st.sampled_from([0.0, 0.0, 0.05, 0.5]))
    return {"site": {"holdout": holdout}, "slots": slots}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config())
def test_any_exported_config_decides_as_the_engine(data):
    from growthbook import GrowthBook

    config = parse_config(data, "<generated>")
    engine = Engine(config)
    features = export_payload(config)["features"]
    rnd = random.Random(len(json.dumps(data)))
    for i in range(150):
        attrs: dict[str, Any] = {
            "id": f"u{i}" if i % 17 else "",
            "country": rnd.choice(["FR", "US"]),
            "plan": rnd.choice(["pro", "free", "team"]),
            "age": rnd.randrange(18, 60),
        }
        if i % 5:
            attrs["company"] = f"co{rnd.randrange(50)}"
        gb = GrowthBook(features=features, attributes=dict(attrs))
        for d in engine.decide_attrs(dict(attrs)):
            want = variant_value(config.slots[d.slot], d.variant)
            assert gb.eval_feature(d.slot).value == want, (d.slot, attrs, d.reason)
