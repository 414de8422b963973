"""Progressive off-policy replay of a learning policy over logged bandit data.

For each logged round ``t`` in time order the policy, having learned from rounds ``< t`` only,
gives its action distribution ``π_t(·|x_t)``; the logged action's probability ``π_t(a_t|x_t)``
is recorded, then the policy learns from the logged ``(x_t, a_t, r_t)``. The recorded
probabilities feed :func:`trimtab.bandits.ope.ips` / ``snips``:
``V̂ = (1/n) Σ π_t(a_t|x_t) r_t / p_t`` is unbiased for the value of the sequence of policies
whenever the logging propensities ``p_t`` are right (Li et al. 2011 replay is the special case
of a deterministic policy under uniform logging). Using the whole distribution rather than
only the rounds where the policy's own choice matches the log keeps every round informative,
which matters with 80 arms and click rates near 0.4%.

The policy also makes its normal ``choose`` call on every round, so decision and update
latencies are measured on the real data shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trimtab.bandits import ope


class ReplayablePolicy(Protocol):
    def choose(self, context: np.ndarray, arms: None = None) -> tuple[int, float]: ...

    def probabilities(self, context: np.ndarray, arms: None = None) -> np.ndarray: ...

    def update(self, context: np.ndarray, arm: int, reward: float, propensity: float) -> None: ...


@dataclass(frozen=True)
class ReplayResult:
    """Per-round target probabilities of the logged actions, plus latency samples (ns)."""

    target_probability: np.ndarray
    rewards: np.ndarray
    logging_propensity: np.ndarray
    choose_ns: np.ndarray
    update_ns: np.ndarray

    def ips(self, alpha: float = 0.05) -> ope.Estimate:
        return ope.ips(self.rewards, self.logging_propensity, self.target_probability, alpha=alpha)

    def snips(self, alpha: float = 0.05) -> ope.Estimate:
        return ope.snips(
            self.rewards, self.logging_propensity, self.target_probability, alpha=alpha
        )


def replay(
    policy: ReplayablePolicy,
    contexts: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
) -> ReplayResult:
    """Run ``policy`` through the log in order (see module doc) and record what it would do."""
    n = len(actions)
    target = np.empty(n)
    choose_ns = np.empty(n, dtype=np.int64)
    update_ns = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for t in range(n):
        x = contexts[t]
        start = clock()
        policy.choose(x)
        choose_ns[t] = clock() - start
        target[t] = policy.probabilities(x)[actions[t]]
        start = clock()
        policy.update(x, int(actions[t]), float(rewards[t]), float(propensities[t]))
        update_ns[t] = clock() - start
    return ReplayResult(
        target, np.asarray(rewards, float), np.asarray(propensities, float), choose_ns, update_ns
    )
