"""Policies in the live engine: stable choices, exact propensities, attributed rewards, safety."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trimtab.bandits.serving import GuardrailSpec, PolicySpec, RewardSpec, ServedPolicy
from trimtab.config import ConfigError, load_config, parse_config
from trimtab.events import Click, Exposure, Hover
from trimtab.runtime import Runtime
from trimtab.sim.drive import simulate

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
T0 = time.time() * 1000.0  # the decision clock is the wall clock
_ids = iter(range(10**9))


def spec(**kw) -> PolicySpec:
    base = {"name": "p", "type": "epsilon_greedy", "arms": ["a", "b", "c"], "features": ["x"]}
    return PolicySpec(**{**base, **kw})


def attrs(user: str, page: str = "/p", x: float = 0.5) -> dict:
    return {"id": user, "session_id": "s", "page": page, "x": x}


def ev(kind, user: str, t: float, **fields):
    return kind(event_id=f"e{next(_ids)}", user_id=user, session_id="s", ts=T0 + t, **fields)


def test_one_choice_per_page_view():
    served = ServedPolicy(spec(params={"epsilon": 0.5}), default="a", slot="rail", seed=3)
    first = served.choose_for(attrs("u"), served.arms)
    assert all(served.choose_for(attrs("u"), served.arms) == first for _ in range(20))
    others = {served.choose_for(attrs("u", page=f"/p{i}"), served.arms)[0] for i in range(40)}
    assert len(others) > 1  # a new page is a new decision


def test_default_share_propensities_match_frequencies():
    served = ServedPolicy(
        spec(params={"epsilon": 0.3}, min_default_share=0.2), default="a", slot="rail", seed=5
    )
    n = 6000
    seen: Counter = Counter()
    logged: dict[str, set[float]] = {}
    for i in range(n):
        arm, p = served.choose_for(attrs(f"u{i}"), served.arms)
        seen[arm] += 1
        logged.setdefault(arm, set()).add(round(p, 9))
    # untrained: all arms tie, P_policy = 1/3 each; the default gets the 20 % share on top
    expected = {"a": 0.2 + 0.8 / 3, "b": 0.8 / 3, "c": 0.8 / 3}
    for arm, p in expected.items():
        assert logged[arm] == {round(p, 9)}
        assert abs(seen[arm] / n - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_rewards_need_an_exposure_and_count_only_inside_the_window_and_slot():
    served = ServedPolicy(spec(reward=RewardSpec(event="click:*", window_s=60)), "a", "rail", 1)
    arm, _ = served.choose_for(attrs("u1"), served.arms)
    arm2, _ = served.choose_for(attrs("u2"), served.arms)
    arm3, _ = served.choose_for(attrs("u3"), served.arms)
    served.observe(
        [
            ev(Click, "u1", 0, element="x", slot="rail"),  # before the exposure: ignored
            ev(Exposure, "u1", 10, slot="rail", variant=arm),
            ev(Click, "u1", 20, element="x", slot="hero"),  # another slot: ignored
            ev(Exposure, "u2", 10, slot="rail", variant=arm2),
            ev(Click, "u2", 30, element="x", slot="rail"),  # counts
            # u3 is never exposed
        ]
    )
    before = served.policy.b.copy()
    assert served.expire(now_ms=T0 + 30_000) == 0  # windows still open
    assert served.expire(now_ms=T0 + 200_000) == 3
    assert served.updates == 2  # u1 (reward 0) and u2 (reward 1); u3 was never shown
    changed = np.flatnonzero(np.abs(served.policy.b - before).sum(axis=1))
    assert served.arms.index(arm2) in changed
    assert served.counts["policy"] == [2, 1.0]
    del arm3


def test_dwell_rewards_add_up_to_a_threshold():
    reward = RewardSpec(event="hover:*", min_value=3000, window_s=60)
    served = ServedPolicy(spec(reward=reward), "a", "rail", 2)
    arm, _ = served.choose_for(attrs("u"), served.arms)
    served.observe(
        [
            ev(Exposure, "u", 0, slot="rail", variant=arm),
            ev(Hover, "u", 1000, element="card", slot="rail", dwell_ms=1000),
            ev(Hover, "u", 4000, element="card", slot="rail", dwell_ms=2500),
        ]
    )
    served.expire(now_ms=T0 + 120_000)
    assert served.counts["policy"] == [1, 1.0]


def test_guardrail_falls_back_to_the_default():
    guard = GuardrailSpec(min_ratio=0.8, min_samples=50)
    served = ServedPolicy(
        # a policy that explores uniformly: a third of its picks are the clicked default
        spec(min_default_share=0.5, guardrail=guard, params={"epsilon": 1.0}),
        "a",
        "rail",
        4,
    )
    t = 0.0
    for i in range(600):
        arm, _ = served.choose_for(attrs(f"u{i}"), served.arms)
        t += 10
        batch = [ev(Exposure, f"u{i}", t, slot="rail", variant=arm)]
        if arm == "a":  # only the default rail ever gets clicked
            batch.append(ev(Click, f"u{i}", t + 1, element="x", slot="rail"))
        served.observe(batch)
        served.expire(now_ms=T0 + t + 10 * 60_000)
        if served.tripped:
            break
    assert served.tripped and "guardrail" in served.tripped
    data = {
        "slots": {
            "rail": {
                "default": "a",
                "variants": {"a": {}, "b": {}, "c": {}},
                "rules": [{"id": "p", "policy": {"name": "p", "arms": ["a", "b", "c"]}}],
            }
        }
    }
    from trimtab.decide import Engine

    (decision,) = Engine(parse_config(data, "<t>"), policies={"p": served}).decide_attrs(attrs("z"))
    assert (decision.variant, decision.source) == ("a", "default")
    assert "guardrail" in decision.reason


def test_policy_config_errors_name_the_path():
    data = {
        "slots": {
            "rail": {
                "default": "a",
                "variants": {"a": {}, "b": {}},
                "rules": [{"id": "p", "policy": {"arms": ["a", "z"]}}],
            }
        }
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml")
    assert info.value.path == "$.slots.rail.rules[0].policy.arms[1]"
    data["slots"]["rail"]["rules"][0]["policy"] = {"type": "ucb9000"}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "site.yaml")
    assert info.value.path == "$.slots.rail.rules[0].policy.type"
    data["slots"]["rail"]["rules"][0]["policy"] = {"params": {"alpha_typo": 1}}
    with pytest.raises(ConfigError, match="not accepted by logistic_thompson"):
        parse_config(data, "site.yaml")


def test_demo_bandit_learns_online_and_its_state_survives_a_restart(tmp_path):
    runtime = Runtime(load_config(DEMO), tmp_path)
    served = runtime.policies["rail-bandit"]
    result = simulate(runtime, sessions=400, seed=2, every=200)
    assert served.updates > 100  # rewards flowed into update() while the run went on
    first, last = result.snapshots[0].probabilities, result.snapshots[-1].probabilities
    assert first != last  # the arm probabilities moved as rewards arrived
    decisions = [d for d in runtime.decision_log.take_rows() if d[7] == "rail-bandit"]
    assert decisions and all(0 < row[10] <= 1 for row in decisions)
    state = served.to_state()
    runtime.close()
    again = Runtime(load_config(DEMO), tmp_path)
    assert again.policies["rail-bandit"].updates == served.updates
    assert again.policies["rail-bandit"].to_state() == state
    again.close()
