"""Contextual bandits: policies with logged propensities, and off-policy evaluation."""

from trimtab.bandits.policies import (
    ContextEncoder,
    EpsilonGreedy,
    LinearThompson,
    LinUCB,
    LogisticThompson,
    Policy,
    load_policy,
)

__all__ = [
    "ContextEncoder",
    "EpsilonGreedy",
    "LinUCB",
    "LinearThompson",
    "LogisticThompson",
    "Policy",
    "load_policy",
]
