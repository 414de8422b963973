"""An online sparse linear regressor for reward (cost) models, e.g. the ``q̂`` of doubly robust.

The update rule is normalised adaptive gradient descent with an importance-invariant step, the
defaults of Vowpal Wabbit's learner, which makes the doubly robust estimates of ``vw --cb
--eval`` reproducible with our own code. Per feature ``j`` it keeps the weight ``w_j``, the sum
of squared gradients ``G_j`` and the largest ``|x_j|`` seen, ``N_j``. For an example with
features ``x``, target ``y``, importance weight ``h`` and prediction ``ŷ = clip(wᵀx)``:

* ``G_j += h · (2(ŷ − y))² · x_j²``; when ``|x_j| > N_j`` the weight is rescaled by
  ``N_j/|x_j|`` and ``N_j = |x_j|``;
* per-feature rate ``ρ_j = 1 / (sqrt(G_j) · N_j)``;
* global normaliser ``u = sqrt(Σh / Σ h·Σ_j x_j²/N_j²)`` (over all examples so far);
* ``s = u · Σ_j x_j² ρ_j``, and the invariant step (the closed form of infinitely many small
  squared-loss steps with total weight ``η h``):
  ``Δ = (y − ŷ) · (1 − exp(−2 η h s)) / s``;
* ``w_j += Δ · u · x_j · ρ_j``.

Arms get disjoint weights (keys are ``(arm, feature)``) plus a per-arm constant feature.

>>> model = AdaptiveRegressor(learning_rate=0.5)
>>> model.predict(["a", "b"], arm=1)
0.0
>>> before = model.learn(["a", "b"], arm=1, target=1.0)
>>> 0.0 < model.predict(["a", "b"], arm=1) <= 1.0
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_CONSTANT = "\x00constant"


class AdaptiveRegressor:
    """Online squared-loss linear regression over sparse named features, one model per arm.

    Predictions are clipped to ``[low, high]`` (the range of targets, as costs are in [0, 1]).
    """

    def __init__(self, learning_rate: float = 0.5, low: float = 0.0, high: float = 1.0) -> None:
        self.learning_rate = learning_rate
        self.low = low
        self.high = high
        self._w: dict[tuple[int, str], float] = {}
        self._g: dict[tuple[int, str], float] = {}
        self._n: dict[tuple[int, str], float] = {}
        self._total_weight = 0.0
        self._total_norm = 0.0

    @staticmethod
    def _items(features: Iterable[str] | Mapping[str, float]) -> list[tuple[str, float]]:
        if isinstance(features, Mapping):
            items = [(k, float(v)) for k, v in features.items()]
        else:
            items = [(k, 1.0) for k in features]
        items.append((_CONSTANT, 1.0))
        return items

    def _raw(self, items: list[tuple[str, float]], arm: int) -> float:
        w = self._w
        return sum(w.get((arm, k), 0.0) * v for k, v in items)

    def predict(self, features: Iterable[str] | Mapping[str, float], arm: int = 0) -> float:
        """``clip(wᵀx)`` for this arm."""
        return min(max(self._raw(self._items(features), arm), self.low), self.high)

    def learn(
        self,
        features: Iterable[str] | Mapping[str, float],
        arm: int = 0,
        target: float = 0.0,
        weight: float = 1.0,
    ) -> float:
        """One importance-weighted update; returns the prediction made *before* it."""
        items = self._items(features)
        pred = min(max(self._raw(items, arm), self.low), self.high)
        error = pred - target
        if error == 0.0 or weight <= 0.0:
            return pred
        g2 = weight * 4.0 * error * error
        w, g, n = self._w, self._g, self._n
        norm_x = 0.0
        per_update = 0.0
        rates: list[tuple[tuple[int, str], float, float]] = []
        for name, x in items:
            key = (arm, name)
            x2 = x * x
            g[key] = g.get(key, 0.0) + g2 * x2
            scale = n.get(key, 0.0)
            if abs(x) > scale:
                if scale > 0.0 and key in w:
                    w[key] *= scale / abs(x)
                scale = n[key] = abs(x)
            norm_x += x2 / (scale * scale)
            rate = 1.0 / (math.sqrt(g[key]) * scale)
            per_update += x2 * rate
            rates.append((key, x, rate))
        self._total_weight += weight
        self._total_norm += weight * norm_x
        multiplier = math.sqrt(self._total_weight / self._total_norm)
        per_update *= multiplier
        step = self.learning_rate * weight
        delta = -error * (1.0 - math.exp(-2.0 * step * per_update)) / per_update
        for key, x, rate in rates:
            w[key] = w.get(key, 0.0) + delta * multiplier * x * rate
        return pred


def progressive_predictions(
    features: Iterable[Iterable[str] | Mapping[str, float]],
    logged_actions: Iterable[int],
    targets: Iterable[float],
    weights: Iterable[float],
    n_actions: int,
    model: AdaptiveRegressor | None = None,
) -> list[list[float]]:
    """Predict every action's reward for each round, *then* learn from the logged one.

    Row ``i`` holds ``q̂(x_i, a)`` for ``a = 0..n_actions-1`` made from rounds ``< i`` only
    (progressive validation), which keeps a doubly robust estimate honest. ``weights`` are
    the importance weights of the updates (``1/p_i`` for a cost model fitted on logged data).
    """
    model = model or AdaptiveRegressor()
    out: list[list[float]] = []
    for x, action, target, weight in zip(features, logged_actions, targets, weights, strict=True):
        items = list(x) if not isinstance(x, Mapping) else x
        row = [model.predict(items, a) for a in range(n_actions)]
        model.learn(items, action, target, weight)
        out.append(row)
    return out
