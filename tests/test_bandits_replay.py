"""Progressive replay: exact for fixed policies, unbiased for learning ones, no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.bandits.policies import LinUCB
from trimtab.bandits.replay import replay


class _Fixed:
    """A non-learning policy with a fixed action distribution (records what it was shown)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs
        self.seen: list[float] = []

    def choose(self, context: np.ndarray, arms: None = None) -> tuple[int, float]:
        return int(np.argmax(self.probs)), float(self.probs.max())

    def probabilities(self, context: np.ndarray, arms: None = None) -> np.ndarray:
        return self.probs

    def update(self, context: np.ndarray, arm: int, reward: float, propensity: float) -> None:
        self.seen.append(reward)


def _uniform_log(seed: int, n: int, arms: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    contexts = np.column_stack([np.ones(n), rng.integers(0, 2, n)]).astype(float)
    actions = rng.integers(0, arms, n)
    # Arm 0 is good when the context flag is set, arm 1 otherwise.
    means = np.where(
        contexts[:, 1] == 1, np.where(actions == 0, 0.6, 0.1), np.where(actions == 1, 0.6, 0.1)
    )
    rewards = (rng.random(n) < means).astype(float)
    return contexts, actions, rewards, np.full(n, 1.0 / arms)


def test_fixed_policy_value_is_exact_ips() -> None:
    contexts, actions, rewards, p = _uniform_log(1, 3000, 3)
    probs = np.array([0.7, 0.2, 0.1])
    policy = _Fixed(probs)
    result = replay(policy, contexts, actions, rewards, p)
    np.testing.assert_allclose(result.target_probability, probs[actions])
    assert result.ips().value == pytest.approx(float(np.mean(probs[actions] * rewards / p)))
    assert policy.seen == rewards.tolist()  # learns from every logged round, in order
    assert len(result.choose_ns) == len(result.update_ns) == 3000


def test_learning_policy_beats_uniform_and_interval_covers_oracle() -> None:
    contexts, actions, rewards, p = _uniform_log(2, 6000, 3)
    result = replay(LinUCB(3, 2, alpha=0.1, seed=3), contexts, actions, rewards, p)
    uniform = rewards.mean()
    estimate = result.ips()
    assert estimate.lower > uniform
    assert estimate.value < 0.6 + 0.05  # cannot beat the oracle by more than noise
    assert result.snips().value == pytest.approx(estimate.value, abs=0.05)
