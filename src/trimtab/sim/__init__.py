"""Simulated visitors with micro-behaviours, for demos, benchmarks and offline learning."""

from trimtab.sim.simulator import DEFAULT_CATEGORIES, Simulator, Visitor, behaviour_features

__all__ = ["DEFAULT_CATEGORIES", "Simulator", "Visitor", "behaviour_features"]
