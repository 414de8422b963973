"""Off-policy evaluation: what would a target policy have earned on logged decisions?

Each logged round ``i`` has a context ``x_i``, the logged action ``a_i`` chosen with probability
``p_i = μ(a_i|x_i)`` by the logging policy and the reward ``r_i``. For a target policy ``π``
write ``w_i = π(a_i|x_i) / p_i`` (the importance weight). The estimators:

* IPS (inverse propensity scoring): ``V̂ = (1/n) Σ w_i r_i`` — unbiased when ``p_i > 0``
  wherever ``π`` puts mass.
* SNIPS (self-normalised IPS): ``V̂ = Σ w_i r_i / Σ w_i`` — slightly biased, much lower
  variance when weights are large.
* DM (direct method): ``V̂ = (1/n) Σ_i Σ_a π(a|x_i) q̂(x_i, a)`` with a reward model ``q̂``.
* DR (doubly robust): ``V̂ = (1/n) Σ [ Σ_a π(a|x_i) q̂(x_i, a) + w_i (r_i − q̂(x_i, a_i)) ]`` —
  unbiased if either the propensities or the reward model are right.

Everything works on flat arrays so the caller decides where predictions come from. Each
estimator returns an :class:`Estimate` with a confidence interval, either the normal
approximation over the per-round terms (delta method for SNIPS) or a percentile bootstrap.

>>> import numpy as np
>>> rewards = np.array([1.0, 0.0, 1.0, 0.0])
>>> logging = np.full(4, 0.5)
>>> target = np.array([1.0, 1.0, 0.0, 0.0])
>>> ips(rewards, logging, target).value
0.5
>>> snips(rewards, logging, target).value
0.5
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec
import numpy as np
from scipy import stats

CI = Literal["normal", "bootstrap"]


class Estimate(msgspec.Struct, frozen=True):
    """A policy value estimate with its ``1 - alpha`` confidence interval."""

    method: str
    value: float
    lower: float
    upper: float
    std_err: float
    n: int


def _as_arrays(*arrays: np.ndarray | list[float]) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = len(out[0])
    if any(a.shape != (n,) for a in out):
        raise ValueError("all inputs must be 1-D arrays of the same length")
    if n == 0:
        raise ValueError("no rounds to evaluate")
    return out


def _check_propensities(p: np.ndarray) -> None:
    if np.any(p <= 0.0) or np.any(p > 1.0):
        raise ValueError("logging propensities must be in (0, 1]")


def _mean_estimate(
    method: str, terms: np.ndarray, alpha: float, ci: CI, n_boot: int, seed: int
) -> Estimate:
    """Estimate the mean of per-round terms, with a normal or bootstrap interval."""
    n = len(terms)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    if ci == "normal":
        z = float(stats.norm.ppf(1.0 - alpha / 2.0))
        return Estimate(method, value, value - z * se, value + z * se, se, n)
    return _bootstrap(
        method, value, se, n, lambda idx: float(terms[idx].mean()), alpha, n_boot, seed
    )


def _bootstrap(
    method: str,
    value: float,
    se: float,
    n: int,
    statistic: Callable[[np.ndarray], float],
    alpha: float,
    n_boot: int,
    seed: int,
) -> Estimate:
    rng = np.random.default_rng(seed)
    boots = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    lower, upper = np.quantile(boots, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Estimate(method, value, float(lower), float(upper), se, n)


def ips(
    rewards: np.ndarray,
    logging_propensities: np.ndarray,
    target_probabilities: np.ndarray,
    *,
    alpha: float = 0.05,
    ci: CI = "normal",
    n_boot: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Inverse propensity scoring, ``(1/n) Σ π(a_i|x_i) r_i / p_i``."""
    r, p, pi = _as_arrays(rewards, logging_propensities, target_probabilities)
    _check_propensities(p)
    return _mean_estimate("ips", pi / p * r, alpha, ci, n_boot, seed)


def snips(
    rewards: np.ndarray,
    logging_propensities: np.ndarray,
    target_probabilities: np.ndarray,
    *,
    alpha: float = 0.05,
    ci: CI = "normal",
    n_boot: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Self-normalised IPS, ``Σ w_i r_i / Σ w_i``.

    The normal interval uses the delta method for a ratio of means:
    ``Var ≈ (1/n) · mean((w_i (r_i − V̂))²) / mean(w)²``.
    """
    r, p, pi = _as_arrays(rewards, logging_propensities, target_probabilities)
    _check_propensities(p)
    w = pi / p
    total = w.sum()
    if total <= 0.0:
        raise ValueError("the target policy puts no mass on any logged action")
    value = float((w * r).sum() / total)
    n = len(r)
    se = float(np.sqrt(np.mean((w * (r - value)) ** 2) / n) / w.mean())
    if ci == "normal":
        z = float(stats.norm.ppf(1.0 - alpha / 2.0))
        return Estimate("snips", value, value - z * se, value + z * se, se, n)

    def ratio(idx: np.ndarray) -> float:
        ws = w[idx].sum()
        return float((w[idx] * r[idx]).sum() / ws) if ws > 0 else value

    return _bootstrap("snips", value, se, n, ratio, alpha, n_boot, seed)


def direct_method(
    expected_reward_target: np.ndarray,
    *,
    alpha: float = 0.05,
    ci: CI = "normal",
    n_boot: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Direct method from ``Σ_a π(a|x_i) q̂(x_i, a)`` per round (see :func:`expected_reward`).

    The interval reflects only the sampling of contexts, not the reward model's own error.
    """
    (q,) = _as_arrays(expected_reward_target)
    return _mean_estimate("dm", q, alpha, ci, n_boot, seed)


def doubly_robust(
    rewards: np.ndarray,
    logging_propensities: np.ndarray,
    target_probabilities: np.ndarray,
    reward_hat_logged: np.ndarray,
    expected_reward_target: np.ndarray,
    *,
    alpha: float = 0.05,
    ci: CI = "normal",
    n_boot: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Doubly robust: ``(1/n) Σ [ q̂_π(x_i) + π(a_i|x_i)/p_i · (r_i − q̂(x_i, a_i)) ]``.

    ``reward_hat_logged[i] = q̂(x_i, a_i)``; ``expected_reward_target[i] = Σ_a π(a|x_i) q̂(x_i, a)``.
    """
    r, p, pi, q_logged, q_target = _as_arrays(
        rewards,
        logging_propensities,
        target_probabilities,
        reward_hat_logged,
        expected_reward_target,
    )
    _check_propensities(p)
    terms = q_target + pi / p * (r - q_logged)
    return _mean_estimate("dr", terms, alpha, ci, n_boot, seed)


def expected_reward(action_probabilities: np.ndarray, reward_hat: np.ndarray) -> np.ndarray:
    """``Σ_a π(a|x_i) q̂(x_i, a)`` for ``(n, arms)`` arrays of probabilities and predictions."""
    pi = np.asarray(action_probabilities, dtype=np.float64)
    q = np.asarray(reward_hat, dtype=np.float64)
    if pi.shape != q.shape or pi.ndim != 2:
        raise ValueError("action_probabilities and reward_hat must both be (n, arms)")
    expected: np.ndarray = np.einsum("na,na->n", pi, q)
    return expected
