"""Sample-ratio mismatch: did traffic split the way the experiment said it would?

A chi-square goodness-of-fit test of the observed units per variant against the configured
weights, ``χ² = Σ (O_i - E_i)² / E_i`` with ``k - 1`` degrees of freedom. A mismatch almost
always means a bug in assignment or logging (bots, redirects, a variant that crashes), and
then every other number in the report is suspect — so the result says so loudly.

>>> r = srm_check([5000, 5000])
>>> r.ok, round(r.p_value, 3)
(True, 1.0)
>>> srm_check([5000, 4600]).ok
False
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from scipy.special import chdtrc

DEFAULT_THRESHOLD = 0.001


class SrmResult(msgspec.Struct, frozen=True):
    """The verdict of a sample-ratio-mismatch check.

    ``ok`` is False when ``p_value < threshold``; ``message`` is a sentence fit for a report.
    Variants with zero weight take no part in the test.
    """

    ok: bool
    p_value: float
    chi2: float
    dof: int
    observed: tuple[int, ...]
    observed_shares: tuple[float, ...]
    expected_shares: tuple[float, ...]
    threshold: float
    message: str


def _pct(shares: Sequence[float]) -> str:
    return " / ".join(f"{100 * s:.2f}%" for s in shares)


def srm_check(
    observed: Sequence[int],
    weights: Sequence[float] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> SrmResult:
    """Test observed units per variant against ``weights`` (equal split by default)."""
    counts = tuple(int(c) for c in observed)
    if weights is None:
        weights = [1.0] * len(counts)
    if len(weights) != len(counts):
        raise ValueError(f"{len(counts)} observed counts but {len(weights)} weights")
    if any(w < 0 for w in weights) or any(c < 0 for c in counts):
        raise ValueError("weights and counts must be non-negative")
    total_weight = float(sum(w for w in weights if w > 0))
    total = sum(c for c, w in zip(counts, weights, strict=True) if w > 0)
    expected_shares = tuple((w / total_weight if w > 0 else 0.0) for w in weights)
    observed_shares = tuple((c / total if total else 0.0) for c in counts)
    active = [(c, s) for c, s in zip(counts, expected_shares, strict=True) if s > 0]
    dof = len(active) - 1
    if total == 0 or dof < 1:
        return SrmResult(
            ok=True,
            p_value=1.0,
            chi2=0.0,
            dof=max(dof, 0),
            observed=counts,
            observed_shares=observed_shares,
            expected_shares=expected_shares,
            threshold=threshold,
            message="Sample ratio check skipped: not enough traffic or variants to test.",
        )
    chi2 = sum((c - s * total) ** 2 / (s * total) for c, s in active)
    p = float(chdtrc(dof, chi2))
    ok = p >= threshold
    if ok:
        message = (
            f"No sample ratio mismatch: observed {_pct(observed_shares)} vs expected "
            f"{_pct(expected_shares)} (p = {p:.3g})."
        )
    else:
        message = (
            f"SAMPLE RATIO MISMATCH: observed {_pct(observed_shares)} vs expected "
            f"{_pct(expected_shares)} (chi2 = {chi2:.1f}, p = {p:.2g} < {threshold:g}). "
            "Assignment or logging is broken; do not trust these results until it is fixed."
        )
    return SrmResult(
        ok=ok,
        p_value=p,
        chi2=chi2,
        dof=dof,
        observed=counts,
        observed_shares=observed_shares,
        expected_shares=expected_shares,
        threshold=threshold,
        message=message,
    )
