"""trimtab.walkcode: a slot's walk written out as code decides exactly as the engine's loop.

Every slot is decided both ways for many users (the same decision: variant, source, rule,
propensity to the last bit, reason, why, payload; the same spread of probabilities over its
variants, which prerequisites use): the benchmark's rules, the real-world-shaped
payload (prerequisites, gates, namespaces, hash filters, saved groups) and every feature of
GrowthBook's conformance suite served without an SDK context.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trimtab.config import parse_config
from trimtab.decide import Engine, Rules
from trimtab.gbeval import compile_features
from trimtab.gbpayload import import_payload
from trimtab.walkcode import walk_source
from trimtab_bench.core import bench_attributes, bench_rules
from trimtab_bench.realworld import realworld_attributes, realworld_payload

CASES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "data" / "growthbook" / "cases.json").read_text("utf-8")
)


def both_ways(rules: Rules, attrs: dict[str, Any]) -> int:
    """Decide every slot through its written-out walk and through the loop; assert they
    agree; return how many decisions were compared."""
    for slot in rules.slots.values():
        written = rules._decide_slot(slot, attrs)
        looped = rules._walk(slot, attrs)
        assert written == looped, (slot.name, attrs)
        spread: dict[str, float] = {}
        for name, p in rules._outcomes(slot, 0, 1.0, attrs, ()):
            spread[name] = spread.get(name, 0.0) + p
        assert rules._spread(slot, attrs, ()) == spread, (slot.name, attrs)
    return len(rules.slots)


def test_the_benchmark_rules_decide_alike() -> None:
    engine = Engine(parse_config(bench_rules()[0], "<bench>"))
    compared = sum(both_ways(engine, attrs) for attrs in bench_attributes(1500, seed=21))
    assert compared == 4500


def test_the_real_world_payload_decides_alike() -> None:
    engine = Engine(parse_config(import_payload(realworld_payload()), "<realworld>"))
    seen = set()
    for attrs in realworld_attributes(600, seed=23):
        both_ways(engine, attrs)
        for served in engine.decide_attrs(attrs):
            # served with the per-call memo of prerequisites (parents' decisions and chances)
            alone = engine._walk(engine.slots[served.slot], attrs)
            alone.decision_id = served.decision_id
            assert served == alone, (served.slot, attrs)
            seen.add(served.source)
    # the walk met forces, rollouts, experiments, defaults and failed gates
    assert {"force", "experiment", "default", "prerequisite"} <= seen


@pytest.mark.parametrize("case", CASES["feature"], ids=lambda case: case[0])
def test_growthbook_features_decide_alike(case: list[Any]) -> None:
    _, context, _, _ = case
    features = context.get("features") or {}
    rules = Rules(compile_features(features, context.get("savedGroups")))
    assert both_ways(rules, dict(context.get("attributes") or {})) == len(features)


def test_the_written_walk_hands_over_to_the_loop_where_it_must() -> None:
    engine = Engine(
        parse_config(
            {
                "slots": {
                    "hero": {
                        "default": "a",
                        "variants": {"a": {}, "b": {}},
                        "rules": [
                            {"id": "f", "condition": {"device": "mobile"}, "force": "b"},
                            {"id": "s", "key": "s", "variations": ["a", "b"], "sticky": True},
                        ],
                    }
                }
            },
            "<test>",
        )
    )
    source, _ = walk_source(engine.slots["hero"])
    assert "return self._walk(S, attrs, opts, stack, 1, mass, passed)" in source
    assert "(attrs.get('device') == 'mobile')" in source  # the condition is inlined


def test_shared_hashes_are_the_namespaces_and_filter_layers_used_twice() -> None:
    engine = Engine(parse_config(import_payload(realworld_payload()), "<realworld>"))
    assert engine._shared_hashes == {
        ("__checkout", 1, "id"),
        ("__onboarding", 1, "id"),
        ("layer-1", 2, "id"),
    }


def _layered_engine() -> Engine:
    """Two experiments in one namespace, two behind one hash-filter layer, a rollout and a
    force below a random pick (so the written walk adds up what the rules below give)."""
    experiment: dict[str, Any] = {"variations": ["a", "b"], "hashVersion": 2}
    layer = [{"attribute": "id", "seed": "layer", "hashVersion": 2, "ranges": [[0.0, 0.7]]}]
    slots: dict[str, Any] = {}
    for i in range(2):
        slots[f"ns{i}"] = {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [{"key": f"ns{i}", "namespace": ["n", 0.5 * i, 0.5 * i + 0.5], **experiment}],
        }
        slots[f"layer{i}"] = {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [
                {"key": f"layer{i}", "filters": layer, "coverage": 0.6, **experiment},
                {"id": "r", "force": "b", "coverage": 0.3, "seed": f"r{i}"},
                {"id": "m", "condition": {"mobile": True}, "force": "b"},
            ],
        }
    return Engine(parse_config({"slots": slots}, "<layers>"))


@pytest.mark.parametrize(
    "user", ["u1", "u-22", "", 17, 0, "é-ü", None, "u333"], ids=lambda user: repr(user)
)
def test_a_shared_hash_is_computed_once_a_call_and_decides_as_the_loop(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trimtab.decide

    engine = _layered_engine()
    assert engine._shared_hashes == {("__n", 1, "id"), ("layer", 2, "id")}
    computed: list[tuple[str, Any, int]] = []
    hash_once = trimtab.decide.bucket_hash

    def counted(seed: str, value: Any, version: int) -> float | None:
        computed.append((seed, value, version))
        return hash_once(seed, value, version)

    monkeypatch.setattr(trimtab.decide, "bucket_hash", counted)
    for mobile in (False, True):
        attrs: dict[str, Any] = (
            {"mobile": mobile} if user is None else {"id": user, "mobile": mobile}
        )
        computed.clear()
        served = engine.decide_attrs(attrs)
        shared = [c for c in computed if c[0] in ("__n", "layer")]
        assert len(shared) == len(set(shared)) <= 2  # each at most once in the call
        for d in served:
            alone = engine._walk(engine.slots[d.slot], attrs)
            alone.decision_id = d.decision_id
            assert d == alone, (d.slot, attrs)
    source, _ = walk_source(engine.slots["layer0"], engine._shared_hashes)
    assert "self._rest(" not in source  # the rollout and force below are written out
