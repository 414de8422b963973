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
