"""A/A simulation: why peeking needs sequential testing.

Thousands of experiments where both arms are identical (conversion rate ``p``) are analysed
after every batch of visitors, as someone refreshing a dashboard would. An experiment counts
as a false positive if *any* look declares a significant relative effect. The fixed-horizon
Welch test, valid at one pre-planned look, rejects far more often than ``α`` when peeked at;
the sequential confidence sequence stays below ``α``. Everything is vectorised, using the same
formula functions as the per-variant tests.

>>> r = aa_simulation(n_experiments=200, looks=5, seed=1)
>>> sorted(k for k in r if k.endswith("_fpr"))
['fixed_final_look_fpr', 'fixed_peeking_fpr', 'sequential_peeking_fpr']
"""

from __future__ import annotations

import math

import numpy as np

from .frequentist import two_sided_p_values, welch_dof
from .moments import relative_variance
from .sequential import halfwidth_two_sided, sequential_rho

DEFAULT_SEED = 20240611


def significance_paths(
    conversions_a: np.ndarray,
    conversions_b: np.ndarray,
    n_per_arm: np.ndarray,
    *,
    alpha: float,
    rho: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-horizon and sequential significance of the relative effect at every look.

    ``conversions_*`` are cumulative successes shaped ``(experiments, looks)``; ``n_per_arm``
    the cumulative units per arm at each look. Returns two boolean arrays of that shape.
    """
    n = np.broadcast_to(np.asarray(n_per_arm, dtype=float), conversions_a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a = conversions_a / n
        mean_b = conversions_b / n
        var_a = mean_a * (1.0 - mean_a)
        var_b = mean_b * (1.0 - mean_b)
        estimate = (mean_b - mean_a) / mean_a
        stddev = np.sqrt(relative_variance(mean_a, var_a, n, mean_b, var_b, n))
        dof = welch_dof(var_a, n, var_b, n)
        valid = (var_a > 0) & (var_b > 0) & (stddev > 0)
        fixed = valid & (two_sided_p_values(estimate, stddev, dof) < alpha)
        half = halfwidth_two_sided(stddev, 2.0 * n, rho, alpha)
        sequential = valid & (np.abs(estimate) > half)
    return fixed, sequential


def aa_simulation(
    n_experiments: int = 2000,
    looks: int = 20,
    batch_size: int = 250,
    *,
    p: float = 0.1,
    alpha: float = 0.05,
    tuning: float | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, float | int]:
    """False-positive rates of the fixed and sequential tests under continuous peeking.

    Each look adds ``batch_size`` visitors to each arm. ``tuning`` (the sequential test's
    expected sample size) defaults to the final total sample size. ``noise_margin`` is three
    binomial standard errors of a rate ``alpha`` over ``n_experiments``.
    """
    if n_experiments < 1 or looks < 1 or batch_size < 1:
        raise ValueError("n_experiments, looks and batch_size must be positive")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(batch_size, p, size=(2, n_experiments, looks))
    cumulative = np.cumsum(draws, axis=2)
    n_per_arm = batch_size * np.arange(1, looks + 1)
    total = 2 * batch_size * looks
    tuning_value = float(tuning if tuning is not None else total)
    rho = sequential_rho(alpha, tuning_value)
    fixed, sequential = significance_paths(
        cumulative[0], cumulative[1], n_per_arm, alpha=alpha, rho=rho
    )
    return {
        "n_experiments": n_experiments,
        "looks": looks,
        "batch_size": batch_size,
        "p": p,
        "alpha": alpha,
        "tuning": tuning_value,
        "seed": seed,
        "fixed_final_look_fpr": float(fixed[:, -1].mean()),
        "fixed_peeking_fpr": float(fixed.any(axis=1).mean()),
        "sequential_peeking_fpr": float(sequential.any(axis=1).mean()),
        "noise_margin": 3.0 * math.sqrt(alpha * (1.0 - alpha) / n_experiments),
    }
