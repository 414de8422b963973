"""Policies: valid propensities, learning, persistence, eligibility and the feature encoder."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.bandits.policies import (
    ContextEncoder,
    EpsilonGreedy,
    LinearThompson,
    LinUCB,
    LogisticThompson,
    Policy,
    load_policy,
)

POLICIES = [
    (EpsilonGreedy, {"epsilon": 0.1}),
    (LinUCB, {"alpha": 0.5}),
    (LinearThompson, {"scale": 0.3}),
    (LogisticThompson, {"scale": 1.0}),
]
IDS = [cls.__name__ for cls, _ in POLICIES]


def _world(seed: int, n_arms: int = 5, dim: int = 4) -> tuple[np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng, rng.normal(size=(n_arms, dim))


def _click_probability(true_theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(true_theta @ x) * 1.5))


def _context(rng: np.random.Generator, dim: int) -> np.ndarray:
    x = rng.normal(size=dim)
    x[0] = 1.0
    return x


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_satisfies_protocol(cls: type, kwargs: dict) -> None:
    assert isinstance(cls(3, 2, **kwargs), Policy)


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_learns_better_than_uniform(cls: type, kwargs: dict) -> None:
    rng, theta = _world(1)
    policy = cls(theta.shape[0], theta.shape[1], seed=2, **kwargs)
    earned, uniform = 0.0, 0.0
    for _ in range(3000):
        x = _context(rng, theta.shape[1])
        probs = _click_probability(theta, x)
        arm, propensity = policy.choose(x)
        reward = float(rng.random() < probs[arm])
        policy.update(x, arm, reward, propensity)
        earned += probs[arm]
        uniform += probs.mean()
    assert earned > uniform * 1.15


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_propensities_are_the_true_choice_probabilities(cls: type, kwargs: dict) -> None:
    """E[1{A=a}/p(A)] = 1 for every arm iff the logged propensities are the real ones."""
    rng, theta = _world(3, n_arms=3, dim=3)
    policy = cls(3, 3, seed=4, uniform_mix=0.3, **kwargs)
    for _ in range(50):  # a little learning so the arms differ
        x = _context(rng, 3)
        arm, p = policy.choose(x)
        policy.update(x, arm, float(rng.random() < _click_probability(theta, x)[arm]), p)
    x = _context(rng, 3)
    totals = np.zeros(3)
    n = 6000
    for _ in range(n):
        arm, p = policy.choose(x)
        assert 0.3 / 3 - 1e-12 <= p <= 1.0
        totals[arm] += 1.0 / p
    np.testing.assert_allclose(totals / n, 1.0, atol=0.15)


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_probabilities_form_a_distribution_with_the_floor(cls: type, kwargs: dict) -> None:
    rng, _ = _world(5, n_arms=6, dim=3)
    policy = cls(6, 3, seed=1, uniform_mix=0.06, **kwargs)
    for _ in range(30):
        x = _context(rng, 3)
        arm, p = policy.choose(x)
        policy.update(x, arm, float(rng.random() < 0.3), p)
    probs = policy.probabilities(_context(rng, 3))
    assert probs.shape == (6,)
    assert probs.sum() == pytest.approx(1.0)
    assert probs.min() >= 0.01 - 1e-12


@pytest.mark.parametrize("cls", [EpsilonGreedy, LinUCB], ids=["EpsilonGreedy", "LinUCB"])
def test_deterministic_policies_report_their_exact_probability(cls: type) -> None:
    rng, _ = _world(6, n_arms=4, dim=3)
    policy = cls(4, 3, seed=3)
    for _ in range(20):
        x = _context(rng, 3)
        arm, p = policy.choose(x)
        assert p == pytest.approx(policy.probabilities(x)[arm])
        policy.update(x, arm, float(rng.random() < 0.5), p)


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_restored_policy_chooses_identically(cls: type, kwargs: dict) -> None:
    rng, theta = _world(7, n_arms=8, dim=5)
    policy = cls(8, 5, seed=11, **kwargs)
    for _ in range(200):
        x = _context(rng, 5)
        arm, p = policy.choose(x)
        policy.update(x, arm, float(rng.random() < _click_probability(theta, x)[arm]), p)
    restored = load_policy(policy.to_state())
    assert type(restored) is cls
    np.testing.assert_array_equal(restored.A_inv, policy.A_inv)
    for _ in range(100):
        x = _context(rng, 5)
        assert restored.choose(x) == policy.choose(x)


def test_from_state_refuses_another_kind() -> None:
    with pytest.raises(ValueError, match="linucb"):
        EpsilonGreedy.from_state(LinUCB(2, 2).to_state())


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_only_eligible_arms_are_chosen(cls: type, kwargs: dict) -> None:
    rng, _ = _world(8, n_arms=10, dim=3)
    policy = cls(10, 3, seed=5, **kwargs)
    eligible = [2, 7, 9]
    for _ in range(200):
        x = _context(rng, 3)
        arm, p = policy.choose(x, eligible)
        assert arm in eligible
        assert p >= policy.uniform_mix / len(eligible)
        policy.update(x, arm, float(arm == 7), p)
    probs = policy.probabilities(_context(rng, 3), eligible)
    assert int(np.argmax(probs)) == eligible.index(7)


def test_sherman_morrison_matches_the_direct_inverse() -> None:
    rng, _ = _world(9, n_arms=2, dim=4)
    policy = LinUCB(2, 4, ridge=2.0)
    xs = rng.normal(size=(30, 4))
    rewards = rng.random(30)
    for x, r in zip(xs, rewards, strict=True):
        policy.update(x, 1, float(r), 0.5)
    A = 2.0 * np.eye(4) + xs.T @ xs
    np.testing.assert_allclose(policy.A_inv[1], np.linalg.inv(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(policy.theta[1], np.linalg.solve(A, xs.T @ rewards), rtol=1e-9)
    np.testing.assert_array_equal(policy.A_inv[0], np.eye(4) / 2.0)


@pytest.mark.parametrize(("cls", "kwargs"), POLICIES, ids=IDS)
def test_shared_model_over_arm_features_learns(cls: type, kwargs: dict) -> None:
    """Arms described by features: reward depends on the arm's features only."""
    rng = np.random.default_rng(10)
    arm_features = rng.normal(size=(12, 3))
    weights = np.array([1.5, -1.0, 0.5])
    policy = cls(12, 2, arm_features=arm_features, seed=6, **kwargs)
    means = 1.0 / (1.0 + np.exp(-(arm_features @ weights)))
    earned = 0.0
    for _ in range(1500):
        x = np.array([1.0, rng.normal()])
        arm, p = policy.choose(x)
        assert 0.0 < p <= 1.0
        policy.update(x, arm, float(rng.random() < means[arm]), p)
        earned += means[arm]
    assert earned / 1500 > means.mean() + 0.5 * (means.max() - means.mean())
    assert type(load_policy(policy.to_state())) is cls


def test_logistic_thompson_posterior_mean_tracks_click_rate() -> None:
    rng = np.random.default_rng(12)
    policy = LogisticThompson(1, 1, ridge=1.0)
    for _ in range(4000):
        policy.update(np.array([1.0]), 0, float(rng.random() < 0.2), 1.0)
    assert policy.predict_proba(np.array([1.0]))[0] == pytest.approx(0.2, abs=0.03)


def test_context_encoder_fixed_order() -> None:
    enc = ContextEncoder(["b", "a", "c"], bias=False, default=-1.0)
    np.testing.assert_array_equal(enc.encode({"a": 2, "b": True, "x": 9}), [1.0, 2.0, -1.0])
    assert enc.encode({}).dtype == np.float64
    assert ContextEncoder(["a"]).encode({"a": None}).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "kwargs", [{"n_arms": 0, "dim": 2}, {"n_arms": 2, "dim": 2, "uniform_mix": 2.0}]
)
def test_rejects_bad_configuration(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LinUCB(**kwargs)
