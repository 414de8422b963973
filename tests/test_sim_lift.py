"""The lift report: four ways to serve a slot on the same readers, with off-policy estimates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trimtab.attribution import Reward
from trimtab.bandits.logeval import Round
from trimtab.bandits.serving import PolicySpec, ServedPolicy, policy_specs
from trimtab.cli import app
from trimtab.config import load_config
from trimtab.sim import lift

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


def test_each_strategy_serves_the_slot_its_own_way():
    site = load_config(DEMO)
    configs = lift.strategy_configs(site, "rail")
    rules = {name: config.slots["rail"].rules for name, config in configs.items()}
    (bandit,) = rules["in-session"]
    assert bandit.policy is not None and bandit.coverage is None  # every reader
    (batch,) = policy_specs(configs["hourly batch"].slots)[0:1]
    assert (batch[2].choose_per, batch[2].learn_every_s) == ("session", 3600.0)
    assert batch[2].arm_features == policy_specs(site.slots)[0][2].arm_features
    assert rules["static default"] == []
    assert [r.id for r in rules["hand rules"]] == [
        r.id for r in site.slots["rail"].rules if r.policy is None
    ]
    (_, _, uniform) = policy_specs(configs["uniform log"].slots)[0]
    assert uniform.type == "epsilon_greedy" and uniform.min_default_share == 0.0
    # the other slots are untouched
    assert configs["hand rules"].slots["hero"] == site.slots["hero"]


def test_replay_counts_only_the_rounds_whose_pick_matches_the_log():
    rng = np.random.default_rng(4)
    arms = ["a", "b", "c", "d"]
    rounds = []
    for i in range(4000):
        attrs = {"id": f"u{i}", "session_id": "s", "page": "/", "x": float(rng.random())}
        variant = arms[int(rng.integers(4))]  # logged uniformly
        # "b" is clicked when x is high: a learner can find it
        reward = float(rng.random() < (0.6 if variant == "b" and attrs["x"] > 0.5 else 0.05))
        rounds.append(Round(f"d{i}", f"u{i}", variant, 0.25, attrs, reward, 1.0e12 + 1000 * i))
    spec = PolicySpec(name="p", type="epsilon_greedy", arms=arms, features=["x"],
                      params={"epsilon": 1.0})  # fmt: skip
    uniform = lift.replay(ServedPolicy(spec, "a", "rail", seed=1), rounds, arms)
    assert len(uniform) == pytest.approx(1000, abs=90)  # a uniform pick matches 1 in 4
    truth = np.mean([r.reward for r in rounds])
    assert np.mean(uniform) == pytest.approx(truth, abs=0.03)
    learner = PolicySpec(name="p", type="epsilon_greedy", arms=arms, features=["x"],
                         params={"epsilon": 0.1}, reward=Reward(window_s=60))  # fmt: skip
    learned = lift.replay(ServedPolicy(learner, "a", "rail", seed=1), rounds, arms)
    assert np.mean(learned) > 2 * np.mean(uniform)  # it learned from the rounds it counted


ARMS = ["a", "b", "c", "d"]


def _reader(rng: np.random.Generator, i: int, pages: int) -> tuple[dict, int]:
    """Round ``i``'s attributes (session ``i // pages``) and the reader's favourite arm."""
    session = i // pages
    favourite = int(np.random.default_rng([7, session]).integers(len(ARMS)))
    share = {arm: (0.6 if k == favourite else 0.1) + 0.1 * float(rng.random())
             for k, arm in enumerate(ARMS)}  # fmt: skip
    attrs = {"id": f"u{session}", "session_id": f"s{session}", "page": f"/{i}", "share": share}
    return attrs, favourite


def _p_click(arm: int, favourite: int) -> float:
    return 0.3 if arm == favourite else 0.05


def _live(spec: PolicySpec, seed: int, n: int, pages: int) -> float:
    """On-policy truth: the learner serves ``n`` rounds one second apart and learns from each
    once its window closes; the mean true click probability of what it showed."""
    rng = np.random.default_rng([seed, 1])
    served = ServedPolicy(spec, "a", "rail", seed=seed)
    clock = [1.0e12]
    served.clock = lambda: clock[0]
    due: list[tuple[float, str, float]] = []
    values = []
    for i in range(n):
        clock[0] = 1.0e12 + 1000.0 * i
        while due and due[0][0] <= clock[0]:
            served.credit(*due.pop(0)[1:])
        attrs, favourite = _reader(rng, i, pages)
        choice = served.choose_for(attrs, ARMS, f"d{i}")
        p = _p_click(ARMS.index(choice.arm), favourite)
        values.append(p)
        due.append((clock[0] + served.window_ms, f"d{i}", float(rng.random() < p)))
    return float(np.mean(values))


def _uniform_log(seed: int, n: int, pages: int) -> list[Round]:
    """``len(ARMS) × n`` uniformly logged rounds, ``len(ARMS)`` times as frequent."""
    rng = np.random.default_rng([seed, 2])
    rounds = []
    for i in range(len(ARMS) * n):
        attrs, favourite = _reader(rng, i, pages)
        arm = int(rng.integers(len(ARMS)))
        reward = float(rng.random() < _p_click(arm, favourite))
        when = 1.0e12 + 1000.0 * i / len(ARMS)
        rounds.append(Round(f"d{i}", attrs["id"], ARMS[arm], 0.25, attrs, reward, when))
    return rounds


@pytest.mark.parametrize("choose_per", ["page", "session"])
def test_replay_of_a_learning_bandit_is_unbiased_where_the_truth_is_known(choose_per):
    """Issue 10: the replay estimate of a learner (per page, or per session as the hourly
    batch bandit) against its on-policy value, paired over 24 seeds: the interval of the
    difference holds 0 and is narrow enough to see a bias of 2 click-rate points."""
    spec = PolicySpec(name="p", type="logistic_thompson", arms=ARMS,
                      arm_features=["share.{arm}"], choose_per=choose_per,
                      params={"prior_rate": 0.1, "uniform_mix": 0.02},
                      reward=Reward(window_s=60), max_rounds_per_user_hour=0)  # fmt: skip
    n, pages = 600, 3
    differences, live_values = [], []
    for seed in range(24):
        live = _live(spec, seed, n, pages)
        log = _uniform_log(seed, n, pages)
        served = ServedPolicy(spec, "a", "rail", seed=seed)
        counted = lift.replay(served, log, ARMS)
        differences.append(float(np.mean(counted)) - live)
        live_values.append(live)
    d = np.array(differences)
    half = 2.07 * d.std(ddof=1) / np.sqrt(len(d))  # t(23) 97.5 %
    assert abs(d.mean()) <= half, (d.mean(), half)
    assert half < 0.02  # precise enough to see a 2-point bias
    assert np.mean(live_values) > 0.15  # the learner learned (uniform: 0.1125)


def test_compare_prints_the_lift_table(tmp_path):
    args = ["simulate", "--compare", "--sessions", "150", "--users", "100"]
    result = CliRunner(env={"COLUMNS": "160"}).invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for label in lift.LABELS.values():
        assert label in result.output
    assert "clicks per 1,000 sessions" in result.output and "off-policy estimate" in result.output
    assert (tmp_path / "seed-0" / "uniform-log" / "events.sqlite").exists()


def test_lift_rows_pair_estimate_and_truth_by_seed():
    """The paired difference removes what the seeds share; one seed uses its own errors."""
    shift = {"in-session": 5.0, "hourly batch": -3.0, "static default": 0.0, "hand rules": 40.0}
    results = []
    for seed, level in enumerate((300.0, 320.0, 340.0)):  # seeds differ a lot, pairs do not
        r = lift.SeedResult(seed)
        for name in lift.STRATEGIES:
            r.truth[name], r.truth_se[name] = level, 4.0
            r.estimate[name] = level + shift[name] + (seed - 1) * 0.5
            r.estimate_se[name], r.ctr[name], r.rounds[name] = 4.0, 0.1, 100
        results.append(r)
    rows = {row.strategy: row for row in lift.lift_rows(results)}
    assert rows["in-session"].difference[0] == pytest.approx(5.0)
    # The seeds' spread (±20) would hide a 40-click bias; the paired interval does not.
    assert rows["hand rules"].inside and not rows["hand rules"].agrees
    assert rows["static default"].agrees and rows["static default"].inside
    assert rows["in-session"].rounds == 300
    (single,) = [lift.lift_rows(results[:1])[0]]
    low, high = single.difference[1:]
    assert high - low == pytest.approx(2 * lift.Z95 * math.hypot(4.0, 4.0))
