"""The baseline: a generalised linear model, fitted with scikit-learn, served as one dot product.

Binary targets get an L2-regularised logistic regression, counts a Poisson regression, both on
standardised inputs. Every trained model is reported next to this baseline, and it can be
served itself (``algorithm: logistic``). The standardisation is folded into the weights, so
serving is ``link(x · w + b)``.

>>> import numpy as np
>>> Linear(np.array([2.0, 0.0]), -1.0, "identity").predict(np.array([1.0, 5.0]))
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


class LinearError(ValueError):
    """Weights that cannot be served."""


class Linear:
    def __init__(self, weights: np.ndarray, bias: float, link: str = "sigmoid") -> None:
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.link = link
        if self.weights.ndim != 1:
            raise LinearError("linear weights must be a vector")
        if not (np.all(np.isfinite(self.weights)) and math.isfinite(self.bias)):
            raise LinearError("linear weights must be finite")
        if link not in ("sigmoid", "exp", "identity"):
            raise LinearError(f"unknown link {link!r}")
        self.n_features = len(self.weights)

    def raw(self, x: np.ndarray) -> float:
        return float(x @ self.weights) + self.bias

    def predict(self, x: np.ndarray) -> float:
        raw = self.raw(x)
        if self.link == "sigmoid":
            return 1.0 / (1.0 + math.exp(-raw))
        if self.link == "exp":
            return math.exp(min(raw, 700.0))
        return raw

    def predict_many(self, x: np.ndarray) -> np.ndarray:
        raw = np.asarray(x, dtype=np.float64) @ self.weights + self.bias
        if self.link == "sigmoid":
            return 1.0 / (1.0 + np.exp(-raw))
        if self.link == "exp":
            return np.exp(np.minimum(raw, 700.0))
        return raw

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "bias": np.array(self.bias), "link": np.array(self.link)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Linear:
        try:
            return cls(arrays["weights"], float(arrays["bias"]), str(arrays["link"]))
        except KeyError as exc:
            raise LinearError(f"the linear arrays lack {exc.args[0]!r}") from None


def fit_linear(x: np.ndarray, y: np.ndarray, kind: str = "binary", c: float = 1.0):
    """Fit the baseline; returns the served :class:`Linear` and the scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegression, PoissonRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    if kind == "binary":
        estimator = LogisticRegression(C=c, max_iter=2000)
    else:
        estimator = PoissonRegressor(alpha=1.0 / (c * max(len(x), 1)), max_iter=1000)
    pipeline = make_pipeline(StandardScaler(), estimator).fit(x, y)
    scaler, model = pipeline[0], pipeline[1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    coef = np.ravel(model.coef_)
    intercept = float(np.ravel([model.intercept_])[0])
    weights = coef / scale
    bias = intercept - float((scaler.mean_ / scale) @ coef)
    return Linear(weights, bias, "sigmoid" if kind == "binary" else "exp"), pipeline


def library_predict(pipeline, x: np.ndarray, kind: str = "binary") -> np.ndarray:
    """scikit-learn's own predictions (the reference in tests)."""
    if kind == "binary":
        return pipeline.predict_proba(x)[:, 1]
    return pipeline.predict(x)
