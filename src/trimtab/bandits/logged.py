"""Loaders for logged bandit data: the Open Bandit Dataset and Vowpal Wabbit ``cb`` text.

They read files into flat numpy arrays (and token lists for VW) so that replay and off-policy
evaluation code never touches file formats.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OBD_USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


@dataclass(frozen=True)
class ObdLog:
    """One Open Bandit Dataset file: rows are (round, position) impressions in time order.

    ``position`` is 0-based; ``propensity`` is the logging policy's true probability of the
    item at that position; ``user_features`` holds the hashed categorical user features as
    strings, shape ``(n, 4)``; ``affinity`` the ``user-item_affinity_*`` columns ``(n, items)``.
    """

    item: np.ndarray
    position: np.ndarray
    click: np.ndarray
    propensity: np.ndarray
    user_features: np.ndarray
    affinity: np.ndarray
    n_items: int

    def __len__(self) -> int:
        return len(self.item)


def load_obd(root: Path | str, behavior: str = "random", campaign: str = "all") -> ObdLog:
    """Read ``<root>/<behavior>/<campaign>/<campaign>.csv[.gz]`` (e.g. ``random/all/all.csv``)."""
    base = Path(root) / behavior / campaign
    plain = base / f"{campaign}.csv"
    # The repository vendors the sample gzipped (tests/data/obd); the original layout is plain.
    with (
        open(plain, newline="")
        if plain.exists()
        else gzip.open(base / f"{campaign}.csv.gz", "rt", newline="")
    ) as fh:
        rows = list(csv.DictReader(fh))
    with open(base / "item_context.csv", newline="") as fh:
        n_items = sum(1 for _ in csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{base} has no rows")
    affinity_cols = sorted(
        (c for c in rows[0] if c.startswith("user-item_affinity_")),
        key=lambda c: int(c.rsplit("_", 1)[1]),
    )
    return ObdLog(
        item=np.array([int(r["item_id"]) for r in rows], dtype=np.intp),
        position=np.array([int(r["position"]) - 1 for r in rows], dtype=np.intp),
        click=np.array([float(r["click"]) for r in rows]),
        propensity=np.array([float(r["propensity_score"]) for r in rows]),
        user_features=np.array([[r[c] for c in OBD_USER_FEATURES] for r in rows]),
        affinity=np.array([[float(r[c]) for c in affinity_cols] for r in rows]),
        n_items=n_items,
    )


def one_hot_contexts(log: ObdLog, n_positions: int = 3) -> np.ndarray:
    """Context vectors ``[1, one-hot(user features), one-hot(position)]`` for every row.

    Category levels are sorted per feature, so the encoding is fixed for a given file.
    """
    blocks = [np.ones((len(log), 1))]
    for j in range(log.user_features.shape[1]):
        column = log.user_features[:, j]
        levels = np.unique(column)
        blocks.append((column[:, None] == levels[None, :]).astype(np.float64))
    blocks.append((log.position[:, None] == np.arange(n_positions)[None, :]).astype(np.float64))
    return np.hstack(blocks)


@dataclass(frozen=True)
class CbEvalLog:
    """Vowpal Wabbit ``cb`` evaluation rows: ``policy_action logged_action:cost:prob | tokens``.

    Actions are 1-based as in VW.
    """

    policy_action: np.ndarray
    logged_action: np.ndarray
    cost: np.ndarray
    probability: np.ndarray
    features: list[list[str]]

    def __len__(self) -> int:
        return len(self.policy_action)


def load_vw_cb_eval(path: Path | str) -> CbEvalLog:
    """Parse a VW ``--cb --eval`` file (one default namespace of unit-valued tokens)."""
    policy, logged, cost, prob, feats = [], [], [], [], []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            head, _, tail = line.partition("|")
            parts = head.split()
            if len(parts) != 2:
                raise ValueError(f"line {number}: expected 'policy_action action:cost:prob'")
            action, c, p = parts[1].split(":")
            policy.append(int(parts[0]))
            logged.append(int(action))
            cost.append(float(c))
            prob.append(float(p))
            feats.append(tail.split())
    return CbEvalLog(
        np.array(policy, dtype=np.intp),
        np.array(logged, dtype=np.intp),
        np.array(cost),
        np.array(prob),
        feats,
    )
