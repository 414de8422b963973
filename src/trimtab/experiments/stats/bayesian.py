"""Bayesian analysis with GrowthBook's Gaussian effect model.

The data give an approximately normal likelihood for the effect, ``Δ̂ ~ N(Δ, se²)`` (the same
estimate and standard error as the frequentist test). With a Gaussian prior ``N(m₀, v₀)`` the
posterior is normal with

    precision = 1/se² + 1/v₀,     mean = (Δ̂/se² + m₀/v₀) / precision

and an improper (flat) prior leaves ``N(Δ̂, se²)``. From the posterior ``N(μ, s²)``:

* chance to win ``P(Δ > 0) = Φ(μ/s)`` (``P(Δ < 0)`` for inverse metrics, where lower is better);
* risk (expected loss) of shipping control ``E[max(Δ, 0)] = μ Φ(μ/s) + s φ(μ/s)`` and of
  shipping the treatment ``E[max(-Δ, 0)] = -μ Φ(-μ/s) + s φ(μ/s)``;
* the equal-tailed credible interval ``μ ± z_{1-α/2} s``.

Priors are stated on the relative scale by default (``prior_type="relative"``) and rescaled by
the baseline mean when the analysis is absolute, and the other way round.

>>> from trimtab.experiments.stats.statistics import ProportionStat
>>> r = bayesian_test(ProportionStat(100, 49), ProportionStat(100, 51))
>>> round(r.chance_to_win, 3), [round(x, 4) for x in r.risk]
(0.609, [0.0814, 0.0406])
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
from scipy.special import ndtr, ndtri

from .cuped import with_theta
from .moments import BASELINE_ZERO, effect_moments
from .statistics import Stat

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GaussianPrior(msgspec.Struct, frozen=True):
    """Prior on the effect: ``N(mean, variance)`` when ``proper``, flat otherwise."""

    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


class BayesianResult(msgspec.Struct, frozen=True):
    """Posterior summary of the effect of a variant against the baseline.

    ``risk`` is ``(risk of choosing control, risk of choosing the treatment)``, in the unit of
    the effect (relative or absolute). ``error`` names why the data could not be analysed; the
    result is then neutral (chance to win 0.5, zero risk).
    """

    expected: float
    ci: tuple[float, float]
    stddev: float
    chance_to_win: float
    risk: tuple[float, float]
    relative: bool = True
    error: str | None = None


def risk(mu: float, sigma: float) -> tuple[float, float]:
    """Expected loss ``(E[max(Δ,0)], E[max(-Δ,0)])`` for ``Δ ~ N(mu, sigma²)``.

    Closed form, so a tiny ``sigma`` (``|mu/sigma|`` in the millions) gives ``(mu, 0)`` or
    ``(0, -mu)`` without overflow.
    """
    if sigma <= 0:
        return (max(mu, 0.0), max(-mu, 0.0))
    z = mu / sigma
    density = sigma * _INV_SQRT_2PI * math.exp(-0.5 * z * z) if abs(z) < 40 else 0.0
    return (mu * float(ndtr(z)) + density, -mu * float(ndtr(-z)) + density)


def neutral_bayesian(error: str | None, relative: bool) -> BayesianResult:
    return BayesianResult(
        expected=0.0,
        ci=(0.0, 0.0),
        stddev=0.0,
        chance_to_win=0.5,
        risk=(0.0, 0.0),
        relative=relative,
        error=error,
    )


def _scaled_prior(
    prior: GaussianPrior, prior_type: str, relative: bool, baseline: float
) -> GaussianPrior | None:
    if relative and prior_type == "absolute":
        if baseline == 0:
            return None if prior.proper else prior
        return GaussianPrior(prior.mean / abs(baseline), prior.variance / baseline**2, prior.proper)
    if not relative and prior_type == "relative":
        if prior.proper and baseline == 0:
            return None
        return GaussianPrior(prior.mean * abs(baseline), prior.variance * baseline**2, prior.proper)
    return prior


def bayesian_test(
    a: Stat,
    b: Stat,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    prior: GaussianPrior | None = None,
    prior_type: Literal["relative", "absolute"] = "relative",
    inverse: bool = False,
) -> BayesianResult:
    """Posterior of the effect of ``b`` against ``a`` under the Gaussian effect model."""
    a, b = with_theta(a, b)
    m = effect_moments(a, b, relative)
    if m.error is not None:
        return neutral_bayesian(m.error, relative)
    p = _scaled_prior(prior or GaussianPrior(), prior_type, relative, a.unadjusted_mean)
    if p is None:
        return neutral_bayesian(BASELINE_ZERO, relative)
    data_variance = m.stddev**2
    precision = 1.0 / data_variance + (1.0 / p.variance if p.proper else 0.0)
    if p.proper:
        mean = (m.estimate / data_variance + p.mean / p.variance) / precision
    else:
        mean = m.estimate
    sd = math.sqrt(1.0 / precision)
    win = float(ndtr(-(0.0 - mean) / sd))
    loss = risk(mean, sd)
    ci = (float(ndtri(alpha / 2) * sd + mean), float(ndtri(1.0 - alpha / 2) * sd + mean))
    return BayesianResult(
        expected=mean,
        ci=ci,
        stddev=sd,
        chance_to_win=1.0 - win if inverse else win,
        risk=(loss[1], loss[0]) if inverse else loss,
        relative=relative,
    )
