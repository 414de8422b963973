"""Plots for model and segment reports (matplotlib, written as PNG files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def _pyplot() -> ModuleType:
    from trimtab.extras import require

    matplotlib = require("matplotlib", "reports", "plots")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "reports", "plots")


def calibration_plot(
    path: str | Path,
    title: str,
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    predictions: Mapping[str, np.ndarray],
    count: bool = False,
) -> Path:
    """Reliability diagram (mean prediction vs observed per bin) with the prediction spread."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6.4, 6.4), height_ratios=[3, 1], sharex=True, layout="constrained"
    )
    high = 0.0
    for label, bins in curves.items():
        x = [b["predicted"] for b in bins]
        y = [b["observed"] for b in bins]
        high = max(high, *x, *y)
        top.plot(x, y, marker="o", label=label)
    high = high * 1.05 or 1.0
    top.plot([0, high], [0, high], color="grey", linestyle="--", linewidth=1, label="perfect")
    top.set_ylabel("observed mean" if count else "observed rate")
    top.set_xlim(0, high)
    top.set_ylim(0, high)
    top.set_title(title)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    for label, values in predictions.items():
        bottom.hist(values, bins=40, range=(0, high), alpha=0.5, label=label)
    bottom.set_xlabel("predicted mean" if count else "predicted probability")
    bottom.set_ylabel("rows")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def segment_plots(folder: str | Path, report: Mapping[str, Any]) -> list[Path]:
    """Sizes and conversion per segment (with intervals), and each segment's profile."""
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    segs = report["segments"]
    labels = [s["label"] for s in segs]
    out = []

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    left.barh(labels, [s["share"] * 100 for s in segs], color="#4c78a8")
    left.set_xlabel("% of rows")
    left.set_title("segment sizes")
    left.invert_yaxis()
    rates = [s["conversion"] * 100 for s in segs]
    errs = np.array(
        [
            [max(0.0, s["conversion"] - s["conversion_ci"][0]) * 100 for s in segs],
            [max(0.0, s["conversion_ci"][1] - s["conversion"]) * 100 for s in segs],
        ]
    )
    right.barh(labels, rates, xerr=errs, color="#f58518", capsize=3)
    right.axvline(report["overall_conversion"] * 100, color="grey", linestyle="--", label="all")
    right.set_xlabel(f"% converting ({report['conversion_event']}), 95% interval")
    right.set_title("conversion per segment")
    right.invert_yaxis()
    right.legend(loc="lower right")
    path = folder / "segments.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)

    features = report["features"]
    z = np.array([s["z"] for s in segs])
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.55 * len(features) + 2.5), 0.5 * len(segs) + 2.2), layout="constrained"
    )
    limit = max(1.0, float(np.abs(z).max())) if z.size else 1.0
    image = ax.imshow(z, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(features)), features, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            ax.text(j, i, f"{z[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="segment mean − overall, in SDs")
    ax.set_title("what defines each segment")
    path = folder / "profiles.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)

    if report.get("projection"):
        proj = report["projection"]
        fig, ax = plt.subplots(figsize=(6.4, 5.2), layout="constrained")
        points = np.array(proj["points"])
        assigned = np.array(proj["labels"])
        for label in labels:
            mask = assigned == label
            if mask.any():
                ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.5, label=label)
        ax.set_xlabel("first principal component")
        ax.set_ylabel("second principal component")
        ax.set_title("rows in the first two principal components")
        ax.legend(markerscale=3, fontsize=8)
        path = folder / "projection.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out
