"""Multiple-comparison corrections for many variants or metrics at once.

* Holm (step-down Bonferroni) controls the family-wise error rate: with p-values sorted
  ``p₍₁₎ ≤ … ≤ p₍ₘ₎``, ``p̃₍ᵢ₎ = max_{j≤i} min(1, (m - j + 1) p₍ⱼ₎)``.
* Benjamini–Hochberg controls the false discovery rate:
  ``p̃₍ᵢ₎ = min_{j≥i} min(1, m p₍ⱼ₎ / j)``.

Adjusted p-values come back in the input order; reject where ``p̃ < α``.

>>> holm([0.01, 0.04, 0.03]).round(3).tolist()
[0.03, 0.06, 0.06]
>>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
[0.03, 0.04, 0.04]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np


def _as_array(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError("p-values must be a flat sequence")
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError("p-values must lie in [0, 1]")
    return p


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values."""
    p = _as_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values)."""
    p = _as_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust_p_values(
    p_values: Sequence[float] | np.ndarray, method: Literal["holm", "bh"] = "holm"
) -> np.ndarray:
    """Adjust with ``"holm"`` (family-wise error) or ``"bh"`` (false discovery rate)."""
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)
    raise ValueError(f"unknown correction {method!r}; use 'holm' or 'bh'")
