"""The decision engine: rule order, sources, propensities, reasons, reload, GrowthBook parity."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.config import parse_config
from trimtab.decide import Engine, PolicyChoice, describe_condition
from trimtab_bench.core import bench_attributes, bench_rules


def engine_for(rules: list[dict], default: str = "a", variants=("a", "b", "c")) -> Engine:
    data = {
        "slots": {
            "hero": {
                "default": default,
                "variants": {v: {"html": v.upper()} for v in variants},
                "rules": rules,
            }
        }
    }
    return Engine(parse_config(data, "<test>"))


def decide(engine: Engine, **attrs):
    attrs.setdefault("id", "user-1")
    (decision,) = engine.decide_attrs(attrs, ["hero"])
    return decision


def test_default_when_nothing_matches():
    engine = engine_for([{"id": "deep", "condition": {"depth": {"$gt": 0.75}}, "force": "b"}])
    d = decide(engine, depth=0.5)
    assert (d.variant, d.source, d.propensity, d.payload) == ("a", "default", 1.0, {"html": "A"})


def test_force_rule_with_reason_showing_what_it_saw():
    engine = engine_for([{"id": "deep", "condition": {"depth": {"$gt": 0.75}}, "force": "b"}])
    d = decide(engine, depth=0.82)
    assert (d.variant, d.source, d.rule_id, d.propensity) == ("b", "force", "deep", 1.0)
    assert "depth > 0.75" in d.reason and "saw depth=0.82" in d.reason


def test_first_matching_rule_wins():
    engine = engine_for(
        [
            {"id": "one", "condition": {"x": 1}, "force": "b"},
            {"id": "two", "condition": {"x": {"$gte": 1}}, "force": "c"},
        ]
    )
    assert decide(engine, x=1).rule_id == "one"
    assert decide(engine, x=2).rule_id == "two"


def test_rule_without_hash_attribute_is_skipped():
    engine = engine_for([{"id": "t", "variations": ["b", "c"], "hashAttribute": "company"}])
    d = decide(engine)
    assert d.source == "default"


def _frequencies(engine: Engine, n: int, **attrs) -> tuple[Counter, dict[str, set[float]]]:
    seen: Counter = Counter()
    propensities: dict[str, set[float]] = {}
    for i in range(n):
        d = decide(engine, **{**attrs, "id": f"u{i}"})
        seen[d.variant] += 1
        propensities.setdefault(d.variant, set()).add(round(d.propensity, 9))
    return seen, propensities


def test_propensities_match_the_observed_frequencies():
    """Rollout 20% → b, then a 50/50 experiment over a/c with 80% coverage, then default a."""
    engine = engine_for(
        [
            {"id": "roll", "force": "b", "coverage": 0.2, "hashVersion": 2},
            {"id": "exp", "key": "e1", "variations": ["a", "c"], "coverage": 0.8, "hashVersion": 2},
        ]
    )
    n = 20_000
    seen, propensities = _frequencies(engine, n)
    expected = {"b": 0.2, "c": 0.8 * 0.8 * 0.5, "a": 0.8 * 0.8 * 0.5 + 0.8 * 0.2}
    for variant, p in expected.items():
        # every decision of a variant logs the same, exact marginal probability
        assert propensities[variant] == {round(p, 9)}
        # and it matches how often the variant is really chosen (4 standard errors)
        se = (p * (1 - p) / n) ** 0.5
        assert abs(seen[variant] / n - p) < 4 * se, (variant, seen[variant] / n, p)


def test_force_after_a_missed_rollout_has_the_missed_share_as_propensity():
    engine = engine_for(
        [
            {"id": "roll", "force": "b", "coverage": 0.3, "hashVersion": 2},
            {"id": "all", "force": "c"},
        ]
    )
    _, propensities = _frequencies(engine, 4000)
    assert propensities == {"b": {0.3}, "c": {0.7}}


def test_namespace_excludes_users_deterministically():
    engine = engine_for(
        [{"id": "t", "key": "t", "variations": ["b", "c"], "namespace": ["ns", 0, 0.5]}]
    )
    seen, propensities = _frequencies(engine, 4000)
    in_test = seen["b"] + seen["c"]
    assert 0.45 < in_test / 4000 < 0.55
    # outside the namespace the default is certain; inside, each arm has half
    assert propensities["a"] == {1.0} and propensities["b"] == {0.5}


class FixedPolicy:
    """A stand-in chooser with a known distribution: its pick is drawn from ``dist``."""

    def __init__(self, dist: dict[str, float], seed: int = 0) -> None:
        self.dist = dist
        self.rng = random.Random(seed)
        self.ids: list[str] = []

    def choose_for(self, attrs, arms, decision_id=""):
        self.ids.append(decision_id)
        arm = self.rng.choices(list(self.dist), weights=list(self.dist.values()))[0]
        return PolicyChoice(arm, self.dist[arm], "exploit", "picked for you", "numbers")

    def shares(self, attrs, arms):
        return dict(self.dist)


def test_policy_rule_uses_the_policy_and_falls_back_when_it_fails():
    class Broken:
        def choose_for(self, attrs, arms, decision_id=""):
            raise RuntimeError("model unavailable")

        def shares(self, attrs, arms):
            raise RuntimeError("model unavailable")

    data = {
        "slots": {
            "hero": {
                "default": "a",
                "variants": {"a": {}, "b": {}, "c": {}},
                "rules": [{"id": "bandit", "policy": {"name": "p1", "arms": ["a", "b"]}}],
            }
        }
    }
    config = parse_config(data, "<test>")
    fixed = FixedPolicy({"b": 1.0})
    d = Engine(config, policies={"p1": fixed}).decide_attrs({"id": "u"})[0]
    assert (d.variant, d.source, d.propensity) == ("b", "policy", 1.0)
    assert (d.reason, d.detail.split(";")[0]) == ("picked for you", "numbers")
    assert fixed.ids == [d.decision_id]  # the policy knows the id its exposure will carry
    d = Engine(config, policies={"p1": Broken()}).decide_attrs({"id": "u"})[0]
    assert (d.variant, d.source) == ("a", "default")
    assert "model unavailable" in d.reason


def test_a_policy_with_coverage_splits_users_and_propensities_stay_exact():
    """Half the users (by hash) get the policy, the others fall through to the rules below;
    each logged propensity is the probability of its variant with the hash treated as random,
    so the observed frequencies match them for each kind of visitor."""
    data = {
        "slots": {
            "hero": {
                "default": "a",
                "variants": {"a": {}, "b": {}, "c": {}},
                "rules": [
                    {"id": "bandit", "coverage": 0.5, "hashVersion": 2,
                     "policy": {"name": "p1", "arms": ["a", "b", "c"]}},
                    {"id": "fans", "condition": {"fan": True}, "force": "c"},
                ],
            }
        }
    }  # fmt: skip
    config = parse_config(data, "<test>")
    engine = Engine(config, policies={"p1": FixedPolicy({"a": 0.2, "b": 0.7, "c": 0.1})})
    n = 6000
    for fan in (True, False):
        seen: Counter = Counter()
        logged: dict[str, set[float]] = {}
        for i in range(n):
            d = engine.decide_attrs({"id": f"user-{fan}-{i}", "fan": fan}, ["hero"])[0]
            seen[d.variant] += 1
            logged.setdefault(d.variant, set()).add(round(d.propensity, 9))
        rules = {"c": 1.0} if fan else {"a": 1.0}
        expected = {
            v: 0.5 * p + 0.5 * rules.get(v, 0.0) for v, p in {"a": 0.2, "b": 0.7, "c": 0.1}.items()
        }
        for variant, p in expected.items():
            assert logged[variant] == {round(p, 9)}, (fan, variant)
            assert abs(seen[variant] / n - p) < 4 * (p * (1 - p) / n) ** 0.5, (fan, variant)


def test_a_random_rule_before_a_policy_counts_the_policy_in_propensities():
    data = {
        "slots": {
            "hero": {
                "default": "a",
                "variants": {"a": {}, "b": {}, "c": {}},
                "rules": [
                    {"id": "roll", "force": "b", "coverage": 0.3},
                    {"id": "bandit", "policy": {"name": "p1", "arms": ["a", "b", "c"]}},
                ],
            }
        }
    }
    engine = Engine(parse_config(data, "<t>"), policies={"p1": FixedPolicy({"b": 0.5, "c": 0.5})})
    props = {d.variant: d.propensity for i in range(200)
             for d in engine.decide_attrs({"id": f"u{i}"}, ["hero"])}  # fmt: skip
    assert props["b"] == pytest.approx(0.3 + 0.7 * 0.5)
    assert props["c"] == pytest.approx(0.7 * 0.5)


def test_reload_swaps_rules_without_a_new_engine():
    engine = engine_for([{"id": "r", "condition": {"x": 1}, "force": "b"}])
    assert decide(engine, x=1).variant == "b"
    engine.reload(engine_for([{"id": "r", "condition": {"x": 1}, "force": "c"}]).config)
    assert decide(engine, x=1).variant == "c"


def test_decisions_are_logged_with_the_attributes_they_saw():
    logged = []
    config = engine_for([]).config
    engine = Engine(config, log=lambda decisions, attrs: logged.append((decisions, attrs)))
    engine.decide_attrs({"id": "u", "depth": 0.3})
    ((decisions, attrs),) = logged
    assert decisions[0].slot == "hero" and attrs["depth"] == 0.3
    assert decisions[0].decision_id


def test_describe_condition_is_readable():
    text = describe_condition({"device": "mobile", "local_hour": {"$gte": 21}})
    assert text == "device = 'mobile' and local_hour ≥ 21"


def test_same_choices_as_the_growthbook_sdk_on_the_benchmark_rules():
    growthbook = pytest.importorskip("growthbook")
    config_data, gb_features = bench_rules()
    engine = Engine(parse_config(config_data, "<bench>"))
    gb = growthbook.GrowthBook(features=gb_features)
    checked = 0
    for attrs in bench_attributes(400, seed=5):
        gb.set_attributes(attrs)
        for d in engine.decide_attrs(attrs):
            result = gb.eval_feature(d.slot)
            assert result.value == d.variant, (attrs["id"], d.slot, d.reason)
            expected_source = {"defaultValue": "default"}.get(result.source, result.source)
            assert expected_source == d.source
            checked += 1
    assert checked == 1200


@settings(max_examples=50, deadline=None)
@given(
    coverage=st.floats(0.05, 1.0),
    weights=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    version=st.sampled_from([1, 2]),
    depth=st.floats(0, 1),
)
def test_random_rules_agree_with_growthbook(coverage, weights, version, depth):
    growthbook = pytest.importorskip("growthbook")
    total = sum(weights)
    norm = [w / total for w in weights]
    norm[-1] = 1.0 - sum(norm[:-1])
    variants = [f"v{i}" for i in range(len(weights))]
    rules = [
        {
            "condition": {"depth": {"$gt": 0.5}},
            "force": "v1",
            "coverage": coverage,
            "hashVersion": version,
        },
        {
            "key": "k",
            "variations": variants,
            "weights": norm,
            "coverage": coverage,
            "hashVersion": version,
        },
    ]
    engine = engine_for(rules, default="v0", variants=variants)
    gb = growthbook.GrowthBook(features={"hero": {"defaultValue": "v0", "rules": rules}})
    rnd = random.Random(int(coverage * 1e6))
    for _ in range(20):
        attrs = {"id": f"u{rnd.randrange(10**6)}", "depth": depth}
        gb.set_attributes(attrs)
        assert decide(engine, **attrs).variant == gb.eval_feature("hero").value


def test_sticky_experiment_keeps_the_assignment_when_weights_change(tmp_path):
    from trimtab.runtime import Runtime

    def config(weights, bucket_version=0):
        return parse_config(
            {
                "slots": {
                    "hero": {
                        "default": "a",
                        "variants": {"a": {}, "b": {}},
                        "rules": [
                            {
                                "id": "t",
                                "key": "hero-test",
                                "variations": ["a", "b"],
                                "weights": weights,
                                "sticky": True,
                                "bucketVersion": bucket_version,
                            }
                        ],
                    }
                }
            },
            "<test>",
        )

    rt = Runtime(config([0.5, 0.5]), tmp_path)
    first = {f"u{i}": rt.decide(f"u{i}", "s")[0] for i in range(200)}
    rt.flush()
    rt.reload(config([0.0, 1.0]))  # everyone would now get b...
    for user, before in first.items():
        again = rt.decide(user, "s")[0]
        assert again.variant == before.variant  # ...but assignments stick
        assert again.propensity == before.propensity == 0.5
        assert "sticky" in again.reason
    rt.close()
    restarted = Runtime(config([0.0, 1.0]), tmp_path)  # and survive a restart
    assert all(restarted.decide(u, "s")[0].variant == d.variant for u, d in first.items())
    restarted.reload(config([0.0, 1.0], bucket_version=1))  # a new bucket version re-buckets
    assert {restarted.decide(u, "s")[0].variant for u in first} == {"b"}
    restarted.close()


def test_sticky_is_only_for_experiments():
    from trimtab.config import ConfigError

    data = {
        "slots": {
            "hero": {
                "default": "a",
                "variants": {"a": {}, "b": {}},
                "rules": [{"force": "b", "sticky": True}],
            }
        }
    }
    with pytest.raises(ConfigError, match="only experiment rules can be sticky"):
        parse_config(data, "<test>")


def test_global_holdout_sees_defaults_and_propensities_stay_exact():
    data = {
        "site": {"holdout": 0.1},
        "slots": {
            "hero": {
                "default": "a",
                "variants": {"a": {}, "b": {}},
                "rules": [{"id": "t", "key": "t", "variations": ["a", "b"], "hashVersion": 2}],
            }
        },
    }
    engine = Engine(parse_config(data, "<test>"))
    n = 20_000
    counts: Counter = Counter()
    by_source: dict[str, set[float]] = {}
    for i in range(n):
        d = engine.decide_attrs({"id": f"user-{i}"})[0]
        counts[(d.source, d.variant)] += 1
        by_source.setdefault(f"{d.source}:{d.variant}", set()).add(round(d.propensity, 9))
    held = counts[("holdout", "a")]
    assert abs(held / n - 0.1) < 4 * (0.1 * 0.9 / n) ** 0.5
    # P(a) = 0.1 + 0.9 * 0.5 for everyone who sees a; P(b) = 0.9 * 0.5
    assert by_source["holdout:a"] == by_source["experiment:a"] == {0.55}
    assert by_source["experiment:b"] == {0.45}
    seen_a = (counts[("holdout", "a")] + counts[("experiment", "a")]) / n
    assert abs(seen_a - 0.55) < 4 * (0.55 * 0.45 / n) ** 0.5


def test_a_rollout_to_zero_percent_includes_nobody_as_in_growthbook():
    from growthbook import GrowthBook

    from trimtab.targeting import hash as gb_hash

    # users whose bucket is exactly 0: `n <= coverage` would include them
    zero = [f"z{i}" for i in range(40_000) if gb_hash("hero", f"z{i}", 1) == 0.0][:5]
    assert zero
    engine = engine_for([{"id": "none", "force": "b", "coverage": 0.0}])
    features = {"hero": {"defaultValue": "a", "rules": [{"force": "b", "coverage": 0}]}}
    for user in zero:
        assert decide(engine, id=user).variant == "a"
        assert (
            GrowthBook(features=features, attributes={"id": user}).eval_feature("hero").value == "a"
        )


def test_a_random_prerequisite_gives_exact_propensities():
    """Parent: a 50/50 experiment off/on. Child: `b` when the parent is on (a gate on the
    parent not being off... first), else a 40 % rollout of `c`, else `a`."""
    data = {
        "slots": {
            "parent": {
                "default": "off",
                "variants": {"off": {}, "on": {}},
                "rules": [{"key": "p", "variations": ["off", "on"], "hashVersion": 2}],
            },
            "hero": {
                "default": "a",
                "variants": {"a": {}, "b": {}, "c": {}},
                "rules": [
                    {
                        "parentConditions": [{"id": "parent", "condition": {"value": "on"}}],
                        "force": "b",
                    },
                    {"force": "c", "coverage": 0.4, "hashVersion": 2},
                ],
            },
        }
    }
    engine = Engine(parse_config(data, "<test>"))
    n = 20_000
    seen, propensities = _frequencies(engine, n)
    expected = {"b": 0.5, "c": 0.5 * 0.4, "a": 0.5 * 0.6}
    for variant, p in expected.items():
        assert propensities[variant] == {round(p, 9)}
        se = (p * (1 - p) / n) ** 0.5
        assert abs(seen[variant] / n - p) < 4 * se, (variant, seen[variant] / n, p)


def test_prerequisite_config_errors_name_the_field():
    from trimtab.config import ConfigError

    def slots(parent_id: str, extra: dict | None = None) -> dict:
        return {
            "slots": {
                "a": {
                    "default": "x",
                    "variants": {"x": {}},
                    "rules": [{"parentConditions": [{"id": parent_id}], "force": "x"}],
                },
                "b": {"default": "x", "variants": {"x": {}}, **(extra or {})},
            }
        }

    with pytest.raises(ConfigError, match=r"rules\[0\]\.parentConditions\[0\]\.id: no slot"):
        parse_config(slots("nope"))
    cyclic = slots("b", {"rules": [{"parentConditions": [{"id": "a"}], "force": "x"}]})
    with pytest.raises(ConfigError, match="prerequisites form a cycle"):
        parse_config(cyclic)
