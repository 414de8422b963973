"""Plots of a simulation run: how a bandit's arm probabilities move as rewards arrive."""

from __future__ import annotations

from pathlib import Path

from trimtab.extras import missing
from trimtab.sim.drive import SimulationResult

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ModuleNotFoundError as exc:
    raise missing(exc, "reports", "plots") from None


def plot_arms(result: SimulationResult, path: str | Path) -> Path:
    """One panel per reference visitor: each arm's probability against sessions run."""
    profiles = list(result.snapshots[0].probabilities)
    fig, axes = plt.subplots(1, len(profiles), figsize=(6 * len(profiles), 4), sharey=True)
    axes = [axes] if len(profiles) == 1 else list(axes)
    x = [s.sessions for s in result.snapshots]
    for ax, name in zip(axes, profiles, strict=True):
        arms = list(result.snapshots[0].probabilities[name])
        for arm in arms:
            ax.plot(x, [s.probabilities[name][arm] for s in result.snapshots], label=arm)
        ax.set_title(f"{result.policy}: {name}")
        ax.set_xlabel("simulated sessions")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability of showing the arm")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
