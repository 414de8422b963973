"""Holdout metrics for classifiers and count regressions, with bootstrap intervals.

Classifiers: ROC AUC (Mann–Whitney, ties counted half), PR AUC (average precision over the
distinct thresholds, as scikit-learn computes it), log loss and Brier score, and a calibration
table (mean prediction vs observed rate per bin of equal size). Several classes: multiclass
log loss, accuracy and the macro one-vs-rest AUC. Regressions: MAE and RMSE.
Intervals are percentile bootstraps over rows (seeded); :func:`paired_auc_difference` resamples
the same rows for two models, so their AUC difference gets its own interval.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> auc(y, p)
0.75
>>> round(average_precision(y, p), 4)
0.8333
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

EPS = 1e-15


def auc(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    y = (np.asarray(y) > 0.5).astype(np.float64)
    if not y.sum():
        return float("nan")
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ys, ps = y[order], np.asarray(p)[order]
    distinct = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]
    tp = np.cumsum(ys)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean prediction vs observed rate in ``bins`` groups of (nearly) equal size."""
    order = np.argsort(np.asarray(p), kind="mergesort")
    out = []
    for part in np.array_split(order, min(bins, max(1, len(order)))):
        if len(part):
            out.append(
                {
                    "predicted": float(np.mean(np.asarray(p)[part])),
                    "observed": float(np.mean(np.asarray(y)[part])),
                    "n": len(part),
                }
            )
    return out


@dataclass(frozen=True)
class Interval:
    value: float
    lower: float
    upper: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.lower:.4f}, {self.upper:.4f}]"


def bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    p: np.ndarray,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """Percentile interval of ``statistic(y, p)`` over rows resampled with replacement."""
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        v = statistic(y[idx], p[idx])
        if v == v:
            values.append(v)
    value = statistic(y, p)
    if not values:
        return Interval(value, float("nan"), float("nan"))
    lower, upper = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return Interval(float(value), float(lower), float(upper))


def paired_auc_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> Interval:
    """AUC(a) − AUC(b) on the same rows, with a paired bootstrap interval."""
    y, p_a, p_b = np.asarray(y), np.asarray(p_a), np.asarray(p_b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        d = auc(y[idx], p_a[idx]) - auc(y[idx], p_b[idx])
        if d == d:
            diffs.append(d)
    value = auc(y, p_a) - auc(y, p_b)
    lower, upper = np.quantile(diffs, [0.025, 0.975]) if diffs else (float("nan"),) * 2
    return Interval(float(value), float(lower), float(upper))


def classifier_metrics(
    y: np.ndarray, p: np.ndarray, n_boot: int = 500, seed: int = 0
) -> dict[str, Any]:
    """AUC (with interval), PR AUC, log loss, Brier, base rate and the calibration table."""
    interval = bootstrap(auc, y, p, n_boot=n_boot, seed=seed)
    return {
        "auc": interval.value,
        "auc_ci": [interval.lower, interval.upper],
        "pr_auc": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "base_rate": float(np.mean(y)) if len(y) else float("nan"),
        "calibration": calibration(y, p),
    }


def regression_metrics(
    y: np.ndarray, p: np.ndarray, n_boot: int = 500, seed: int = 0
) -> dict[str, Any]:
    def mae(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))

    interval = bootstrap(mae, y, p, n_boot=n_boot, seed=seed)
    return {
        "mae": interval.value,
        "mae_ci": [interval.lower, interval.upper],
        "rmse": float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2))),
        "mean": float(np.mean(y)) if len(y) else float("nan"),
    }


def multiclass_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean −log of the probability given to the true class (``y`` holds class indices)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Share of rows whose most likely class is the true one."""
    return float(np.mean(np.argmax(np.asarray(p), axis=1) == np.asarray(y)))


def macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    """One-vs-rest AUC averaged over the classes present with both outcomes in ``y``."""
    y = np.asarray(y)
    p = np.asarray(p)
    values = [auc(y == k, p[:, k]) for k in range(p.shape[1])]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def multiclass_metrics(
    y: np.ndarray, p: np.ndarray, classes: list[str], n_boot: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Log loss, accuracy and macro one-vs-rest AUC (each with a bootstrap interval), the
    per-class AUC and share, the majority class's accuracy and a calibration table of the top
    class (its probability vs how often it was right)."""
    y = np.asarray(y, dtype=np.intp)
    p = np.asarray(p, dtype=np.float64)
    out: dict[str, Any] = {}
    for key, statistic in (
        ("log_loss", multiclass_log_loss),
        ("accuracy", accuracy),
        ("macro_auc", macro_auc),
    ):
        interval = bootstrap(statistic, y, p, n_boot=n_boot, seed=seed)
        out[key], out[f"{key}_ci"] = interval.value, [interval.lower, interval.upper]
    counts = np.bincount(y, minlength=p.shape[1])
    out["auc_by_class"] = {c: auc(y == k, p[:, k]) for k, c in enumerate(classes)}
    out["share_by_class"] = {c: float(counts[k] / max(len(y), 1)) for k, c in enumerate(classes)}
    out["majority_accuracy"] = float(counts.max() / max(len(y), 1))
    top = np.argmax(p, axis=1)
    out["calibration"] = calibration((top == y).astype(float), p[np.arange(len(y)), top])
    return out


__all__ = [
    "Interval",
    "accuracy",
    "asdict",
    "auc",
    "average_precision",
    "bootstrap",
    "brier",
    "calibration",
    "classifier_metrics",
    "log_loss",
    "macro_auc",
    "multiclass_log_loss",
    "multiclass_metrics",
    "paired_auc_difference",
    "regression_metrics",
]
