"""The baseline: a generalised linear model, fitted with scikit-learn, served as one dot product.

Binary targets get an L2-regularised logistic regression, classes a multinomial one (softmax),
counts a Poisson regression, all on standardised inputs. Every trained model is reported next
to this baseline, and it can be served itself (``algorithm: logistic``). The standardisation is
folded into the weights, so serving is ``link(x · w + b)``.

>>> import numpy as np
>>> Linear(np.array([2.0, 0.0]), -1.0, "identity").predict(np.array([1.0, 5.0]))
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from trimtab.models.links import LINKS, Linked


class LinearError(ValueError):
    """Weights that cannot be served."""


class Linear(Linked):
    """``link(x · w + b)``; with a weight matrix (inputs × classes) and a bias per class, the
    multinomial model: ``softmax(x W + b)``."""

    def __init__(self, weights: np.ndarray, bias: Any, link: str = "sigmoid") -> None:
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.link = link
        self.bias: np.ndarray | float
        if link == "softmax":
            self.bias = np.ascontiguousarray(bias, dtype=np.float64).ravel()
            if self.weights.ndim != 2 or self.weights.shape[1] != len(self.bias):
                raise LinearError("a multinomial model takes inputs × classes weights")
            if len(self.bias) < 2:
                raise LinearError("a multinomial model needs two classes or more")
            finite_bias = bool(np.all(np.isfinite(self.bias)))
        else:
            self.bias = float(bias)
            if self.weights.ndim != 1:
                raise LinearError("linear weights must be a vector")
            finite_bias = math.isfinite(self.bias)
        if not (np.all(np.isfinite(self.weights)) and finite_bias):
            raise LinearError("linear weights must be finite")
        if link not in LINKS:
            raise LinearError(f"unknown link {link!r}")
        self.n_features = len(self.weights)
        self.n_outputs = self.weights.shape[1] if self.weights.ndim == 2 else 1

    def raw(self, x: np.ndarray) -> Any:
        if self.n_outputs > 1:
            return x @ self.weights + self.bias
        return float(x @ self.weights) + self.bias

    def raw_many(self, x: np.ndarray) -> np.ndarray:
        raw: np.ndarray = np.asarray(x, dtype=np.float64) @ self.weights + self.bias
        return raw

    def layers(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """One layer (inputs × outputs, bias per output), for the compiled scorer."""
        w = self.weights if self.weights.ndim == 2 else self.weights[:, None]
        return [w], [np.atleast_1d(np.asarray(self.bias, dtype=np.float64))]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "bias": np.array(self.bias), "link": np.array(self.link)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Linear:
        try:
            link = str(arrays["link"])
            bias = arrays["bias"] if link == "softmax" else float(arrays["bias"])
            return cls(arrays["weights"], bias, link)
        except KeyError as exc:
            raise LinearError(f"the linear arrays lack {exc.args[0]!r}") from None


def fit_linear(
    x: np.ndarray, y: np.ndarray, kind: str = "binary", c: float = 1.0
) -> tuple[Linear, Any]:
    """Fit the baseline; returns the served :class:`Linear` and the scikit-learn pipeline
    (scikit-learn is untyped)."""
    from sklearn.linear_model import LogisticRegression, PoissonRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    if kind in ("binary", "multiclass"):  # lbfgs: multinomial for several classes
        estimator = LogisticRegression(C=c, max_iter=2000)
    else:
        estimator = PoissonRegressor(alpha=1.0 / (c * max(len(x), 1)), max_iter=1000)
    pipeline = make_pipeline(StandardScaler(), estimator).fit(x, y)
    scaler, model = pipeline[0], pipeline[1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    if kind == "multiclass":
        coef_m = np.asarray(model.coef_, dtype=np.float64).T  # inputs × classes
        weights_m = coef_m / scale[:, None]
        bias_m = np.asarray(model.intercept_, dtype=np.float64) - (scaler.mean_ / scale) @ coef_m
        return Linear(weights_m, bias_m, "softmax"), pipeline
    coef = np.ravel(model.coef_)
    intercept = float(np.ravel([model.intercept_])[0])
    weights = coef / scale
    bias = intercept - float((scaler.mean_ / scale) @ coef)
    return Linear(weights, bias, "sigmoid" if kind == "binary" else "exp"), pipeline


def library_predict(pipeline: Any, x: np.ndarray, kind: str = "binary") -> np.ndarray:
    """scikit-learn's own predictions (the reference in tests) from a :func:`fit_linear`
    pipeline."""
    predicted: np.ndarray
    if kind == "binary":
        predicted = pipeline.predict_proba(x)[:, 1]
    elif kind == "multiclass":
        predicted = pipeline.predict_proba(x)
    else:
        predicted = pipeline.predict(x)
    return predicted
