"""Policies in the live engine: stable choices, exact propensities, attributed rewards, safety."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest

from trimtab.bandits.policies import POLICIES
from trimtab.bandits.serving import GuardrailSpec, PolicySpec, RewardSpec, ServedPolicy
from trimtab.config import ConfigError, load_config, parse_config
from trimtab.events import Click, Exposure, Hover
from trimtab.runtime import Runtime
from trimtab.sim.drive import simulate

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
T0 = time.time() * 1000.0  # the decision clock is the wall clock (reset for every test)
_ids = iter(range(10**9))


@pytest.fixture(autouse=True)
def _now() -> None:
    """Events are dated from the test's start: a long suite must not age its decisions."""
    global T0
    T0 = time.time() * 1000.0


def spec(**kw) -> PolicySpec:
    base = {"name": "p", "type": "epsilon_greedy", "arms": ["a", "b", "c"], "features": ["x"]}
    return PolicySpec(**{**base, **kw})


def attrs(user: str, page: str = "/p", x: float = 0.5) -> dict:
    return {"id": user, "session_id": "s", "page": page, "x": x}


def ev(kind, user: str, t: float, **fields):
    return kind(event_id=f"e{next(_ids)}", user_id=user, session_id="s", ts=T0 + t, **fields)


def choose(served: ServedPolicy, user: str, page: str = "/p", x: float = 0.5, decision=""):
    return served.choose_for(attrs(user, page, x), served.arms, decision or f"d-{user}-{page}")


def shown(user: str, t: float, arm: str, page: str = "/p", **kw):
    """The tracker's exposure of a decision, received ``t`` ms after T0."""
    return ev(Exposure, user, t, slot="rail", variant=arm, decision_id=f"d-{user}-{page}", **kw)


def test_one_choice_per_page_view():
    served = ServedPolicy(spec(params={"epsilon": 0.5}), default="a", slot="rail", seed=3)
    first = choose(served, "u").arm
    assert all(choose(served, "u", decision=f"again-{i}").arm == first for i in range(20))
    others = {choose(served, "u", page=f"/p{i}").arm for i in range(40)}
    assert len(others) > 1  # a new page is a new decision


def test_default_share_propensities_match_frequencies():
    served = ServedPolicy(
        spec(params={"epsilon": 0.3}, min_default_share=0.2), default="a", slot="rail", seed=5
    )
    n = 6000
    seen: Counter = Counter()
    logged: dict[str, set[float]] = {}
    for i in range(n):
        choice = choose(served, f"u{i}")
        seen[choice.arm] += 1
        logged.setdefault(choice.arm, set()).add(round(choice.propensity, 9))
    # untrained: all arms tie, P_policy = 1/3 each; the default gets the 20 % share on top
    expected = {"a": 0.2 + 0.8 / 3, "b": 0.8 / 3, "c": 0.8 / 3}
    for arm, p in expected.items():
        assert logged[arm] == {round(p, 9)}
        assert abs(seen[arm] / n - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_reasons_say_in_plain_words_whether_the_policy_explores_or_exploits():
    served = ServedPolicy(
        spec(params={"epsilon": 0.5}, min_default_share=0.2), default="a", slot="rail", seed=9
    )
    for _ in range(300):  # teach it that "c" gets clicked
        served.policy.update(served.encode(attrs("t")), 2, 1.0, 1.0)
    modes: Counter = Counter()
    for i in range(600):
        choice = choose(served, f"u{i}")
        modes[choice.mode] += 1
        best = "c"
        if choice.mode == "exploit":
            assert choice.arm == best and "clicked it most" in choice.reason
        elif choice.mode == "explore":
            assert choice.arm != best and "learn" in choice.reason
        else:
            assert choice.arm == "a" and "standard" in choice.reason
        assert "p=" not in choice.reason and "probability" in choice.detail
    # ε = 0.5 over 3 arms: a third of the policy's picks explore; 20 % are the control share
    assert modes["control"] / 600 == pytest.approx(0.2, abs=0.05)
    assert modes["explore"] / 600 == pytest.approx(0.8 / 3, abs=0.05)


def test_rewards_need_an_exposure_and_count_only_inside_the_window_and_slot():
    served = ServedPolicy(spec(reward=RewardSpec(event="click:*", window_s=60)), "a", "rail", 1)
    arm = choose(served, "u1").arm
    arm2 = choose(served, "u2").arm
    choose(served, "u3")
    served.observe(
        [
            ev(Click, "u1", 0, element="x", slot="rail"),  # before the exposure: ignored
            shown("u1", 10, arm),
            ev(Click, "u1", 20, element="x", slot="hero"),  # another slot: ignored
            shown("u2", 10, arm2),
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


def test_the_next_exposure_in_the_slot_ends_the_round():
    """A click after the rail moved on to another decision (a rule's, say) is not credited
    to the policy's earlier pick: it belongs to what was on screen."""
    served = ServedPolicy(spec(reward=RewardSpec(event="click:*", window_s=600)), "a", "rail", 1)
    arm = choose(served, "u").arm
    served.observe(
        [
            shown("u", 0, arm),
            shown("u", 0, arm),  # the same decision shown again changes nothing
            ev(Exposure, "u", 5_000, slot="rail", variant="b", decision_id="a-rule-decision"),
            ev(Click, "u", 6_000, element="x", slot="rail"),
        ]
    )
    served.expire(now_ms=T0 + 10_000)  # ended by the other exposure: closes before its window
    assert served.counts["policy"] == [1, 0.0]


def test_windows_run_on_the_server_clock_not_the_browser_clock():
    served = ServedPolicy(spec(reward=RewardSpec(event="click:*", window_s=60)), "a", "rail", 1)
    arm = choose(served, "u").arm
    arm2 = choose(served, "v").arm
    served.observe(
        [
            shown("u", 0, arm, received=T0),
            # the browser claims 1 s later, the server got it 2 minutes later: too late
            ev(Click, "u", 1_000, element="x", slot="rail", received=T0 + 120_000),
            shown("v", 0, arm2, received=T0),
            # the browser claims a day later, the server got it 5 s later: it counts
            ev(Click, "v", 86_400_000, element="x", slot="rail", received=T0 + 5_000),
        ]
    )
    served.expire(now_ms=T0 + 500_000)
    assert served.counts["policy"] == [2, 1.0]


def test_dwell_rewards_add_up_to_a_threshold():
    reward = RewardSpec(event="hover:*", min_value=3000, window_s=60)
    served = ServedPolicy(spec(reward=reward), "a", "rail", 2)
    arm = choose(served, "u").arm
    served.observe(
        [
            shown("u", 0, arm),
            ev(Hover, "u", 1000, element="card", slot="rail", dwell_ms=1000),
            ev(Hover, "u", 4000, element="card", slot="rail", dwell_ms=2500),
        ]
    )
    served.expire(now_ms=T0 + 120_000)
    assert served.counts["policy"] == [1, 1.0]


def test_non_finite_values_never_reach_the_shared_model():
    """One visitor sending NaN / infinite features and dwell times cannot poison the policy
    every visitor shares: contexts are clipped, non-finite amounts bring nothing, and the
    saved state holds only finite numbers."""
    reward = RewardSpec(event="hover:*", min_value=3000, window_s=60)
    served = ServedPolicy(
        spec(type="logistic_thompson", reward=reward, features=["x", "y"]), "a", "rail", 4
    )
    evil = {"id": "evil", "session_id": "s", "page": "/p", "x": float("nan"), "y": float("inf")}
    x = served.encode(evil)
    assert np.isfinite(x).all() and np.abs(x).max() <= served.spec.clip
    for i in range(50):
        attack = {**evil, "page": f"/p{i}"}
        choice = served.choose_for(attack, served.arms, f"evil-{i}")
        served.observe(
            [
                ev(Exposure, "evil", 10 * i, slot="rail", variant=choice.arm,
                   decision_id=f"evil-{i}"),
                ev(Hover, "evil", 10 * i + 1, element="c", slot="rail", dwell_ms=float("inf")),
            ]
        )  # fmt: skip
    served.expire(now_ms=T0 + 10**7)
    assert served.policy.finite()
    assert served.counts["policy"][1] == 0.0  # an infinite dwell is no dwell at all
    restored = ServedPolicy(served.spec, "a", "rail")
    assert restored.restore(served.to_state())
    # a state someone tampered with to hold a NaN is refused: the policy starts afresh
    good = msgspec.msgpack.decode(served.to_state())
    served.policy.theta[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        served.to_state()
    tampered = msgspec.msgpack.encode({**good, "policy": served.policy.to_state()})
    fresh = ServedPolicy(served.spec, "a", "rail")
    assert not fresh.restore(tampered) and fresh.updates == 0


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
        arm = choose(served, f"u{i}").arm
        t += 10
        batch = [shown(f"u{i}", t, arm)]
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
    reader = {"id": "r", "session_id": "s", "page": "/", "page_category": "tech"}
    before = served.policy.expected(served.encode(reader)).copy()
    simulate(runtime, sessions=400, seed=2, every=200)
    assert served.updates > 100  # rewards flowed into update() while the run went on
    # the posterior means (exact, not a sampled estimate) moved as rewards arrived
    after = served.policy.expected(served.encode(reader))
    assert not np.allclose(before, after)
    decisions = [d for d in runtime.decision_log.take_rows() if d[7] == "rail-bandit"]
    assert decisions and all(0 < row[10] <= 1 for row in decisions)
    state = served.to_state()
    runtime.close()
    again = Runtime(load_config(DEMO), tmp_path)
    assert again.policies["rail-bandit"].updates == served.updates
    assert again.policies["rail-bandit"].to_state() == state
    again.close()


def test_a_session_long_choice_keeps_its_arm_on_every_page():
    served = ServedPolicy(
        spec(params={"epsilon": 1.0}, choose_per="session"), default="a", slot="rail", seed=7
    )
    for user in range(30):
        arms = {choose(served, f"u{user}", page=f"/p{i}").arm for i in range(6)}
        assert len(arms) == 1
    per_page = ServedPolicy(spec(params={"epsilon": 1.0}), default="a", slot="rail", seed=7)
    assert len({choose(per_page, "u", page=f"/p{i}").arm for i in range(30)}) > 1


def test_batch_learning_holds_rewards_until_the_period_ends():
    reward = RewardSpec(event="click:*", window_s=60)
    served = ServedPolicy(spec(reward=reward, learn_every_s=3600), "a", "rail", 1)
    hour = 3_600_000.0
    start = (T0 // hour + 1) * hour  # the top of the next hour
    served.clock = lambda: start + 1_000
    served.expire(now_ms=start + 1_000)  # sets the next boundary: start + 1 h
    arm = choose(served, "u").arm
    served.observe(
        [
            ev(Exposure, "u", 0, slot="rail", variant=arm, decision_id="d-u-/p",
               received=start + 2_000),
            ev(Click, "u", 0, element="x", slot="rail", received=start + 3_000),
        ]
    )  # fmt: skip
    served.expire(now_ms=start + 120_000)  # the round closed, the batch waits
    assert served.updates == 0
    served.expire(now_ms=start + hour + 5)
    assert served.updates == 1 and served.counts["policy"] == [1, 1.0]


def test_credit_learns_from_rounds_attributed_elsewhere():
    served = ServedPolicy(spec(), "a", "rail", 1)
    choose(served, "u", decision="d1")
    assert served.credit("d1", 1.0) and served.updates == 1
    assert not served.credit("unknown", 1.0)


def test_one_visitor_cannot_outweigh_everyone_else():
    """A visitor opening 200 pages and clicking every one is learned from 30 times an hour."""
    served = ServedPolicy(spec(reward=RewardSpec(event="click:*", window_s=1)), "a", "rail", 3)
    served.clock = lambda: T0
    for i in range(200):
        arm = choose(served, "greedy", page=f"/p{i}").arm
        served.observe(
            [
                shown("greedy", 10 * i, arm, page=f"/p{i}", received=T0 + 10 * i),
                ev(Click, "greedy", 10 * i + 1, element="x", slot="rail", received=T0 + 10 * i + 1),
            ]
        )
    served.expire(now_ms=T0 + 60_000)
    assert served.updates == 30 and served.capped == 170
    arm = choose(served, "someone-else").arm
    served.observe([shown("someone-else", 0, arm, received=T0)])
    served.expire(now_ms=T0 + 120_000)
    assert served.updates == 31  # other visitors still count


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_every_registered_policy_is_a_policy_type_a_config_may_name(kind):
    spec = msgspec.convert({"name": "p", "type": kind}, PolicySpec)
    assert POLICIES[spec.type].kind == kind
    with pytest.raises(msgspec.ValidationError, match="type"):
        msgspec.convert({"name": "p", "type": kind + "_typo"}, PolicySpec)
