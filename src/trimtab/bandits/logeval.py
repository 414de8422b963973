"""Off-policy evaluation on trimtab's own logs: what would another policy have earned?

Every decision trimtab logs carries the variant, the exact probability it had of being chosen
and the attributes it saw; the tracker reports which ones were really shown (``exposure``).
That is all IPS-family estimators need. A **round** is one exposed decision of a slot; its
reward is 1 when an event matching the reward pattern follows the exposure — before the
slot's next exposure to the same user and within ``window_s`` — else 0.

Candidate policies are functions of the logged attributes returning a distribution over the
slot's variants: :func:`always` (one variant), :func:`uniform`, or :func:`logged` (the policy
that produced the log, whose IPS value is the observed mean reward — a sanity check).

The direct method and doubly robust use a reward model fitted on the rounds: per variant, a
ridge regression of the reward on the numeric attributes (:func:`fit_reward_model`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from trimtab.bandits import ope

Target = Callable[[Mapping[str, Any], Sequence[str]], dict[str, float]]


@dataclass(frozen=True)
class Round:
    """One exposed decision with its outcome."""

    decision_id: str
    user_id: str
    variant: str
    propensity: float
    features: dict[str, Any]
    reward: float


def always(variant: str) -> Target:
    return lambda attrs, variants: {v: float(v == variant) for v in variants}


def uniform() -> Target:
    return lambda attrs, variants: {v: 1.0 / len(variants) for v in variants}


def logged(rounds_by_id: Mapping[str, Round]) -> Target:
    """The logging policy itself, known only on the logged actions (for the sanity check)."""

    def target(attrs: Mapping[str, Any], variants: Sequence[str]) -> dict[str, float]:
        r = rounds_by_id[attrs["__decision_id"]]
        return {r.variant: r.propensity}

    return target


def load_rounds(
    data_dir: str | Path,
    slot: str,
    reward_event: str = "click:*",
    in_slot: bool = True,
    window_s: float = 3600.0,
) -> list[Round]:
    """The exposed decisions of ``slot`` with their attributed rewards, in time order."""
    from trimtab.features import _token_matcher  # the pattern syntax of features and metrics

    data_dir = Path(data_dir)
    matches = _token_matcher(reward_event)
    decisions = _decisions(data_dir, slot)
    events = sqlite3.connect(f"file:{data_dir / 'events.sqlite'}?mode=ro", uri=True)
    try:
        rows = events.execute("SELECT user_id, kind, ts, body FROM events ORDER BY ts").fetchall()
    finally:
        events.close()
    from trimtab.events import decode_one

    open_round: dict[str, list[Any]] = {}  # user -> [decision row, exposure ts, reward]
    rounds: list[Round] = []
    window_ms = window_s * 1000.0

    def close(user: str) -> None:
        item = open_round.pop(user, None)
        if item is not None:
            d, _, reward = item
            rounds.append(Round(d[0], user, d[1], d[2], d[3], reward))

    for user, kind, ts, body in rows:
        if kind == "exposure":
            event = decode_one(body)
            if event.slot != slot or event.decision_id not in decisions:
                continue
            close(user)
            open_round[user] = [decisions[event.decision_id], ts, 0.0]
            continue
        item = open_round.get(user)
        if item is None or item[2] or ts - item[1] > window_ms:
            continue
        event = decode_one(body)
        if in_slot and getattr(event, "slot", slot) != slot:
            continue
        if matches(event):
            item[2] = 1.0
    for user in list(open_round):
        close(user)
    return rounds


def _decisions(data_dir: Path, slot: str) -> dict[str, tuple[str, str, float, dict[str, Any]]]:
    """decision id -> (id, variant, propensity, features) from every decision log in the dir."""
    out: dict[str, tuple[str, str, float, dict[str, Any]]] = {}
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    for path in sorted(data_dir.glob("decisions*.sqlite")):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for decision_id, variant, propensity, features in conn.execute(
                "SELECT decision_id, variant, propensity, features FROM decisions "
                "WHERE slot = ? AND source != 'degraded' AND propensity > 0",
                (slot,),
            ):
                attrs = decode(features)
                attrs["__decision_id"] = decision_id
                out[decision_id] = (decision_id, variant, propensity, attrs)
        finally:
            conn.close()
    return out


def numeric_vector(attrs: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
    out = np.zeros(len(names) + 1)
    out[0] = 1.0
    for i, name in enumerate(names, 1):
        value = attrs.get(name)
        if isinstance(value, bool | int | float):
            out[i] = float(value)
    return out


def fit_reward_model(
    rounds: Sequence[Round], variants: Sequence[str], ridge: float = 1.0
) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """q̂(x, a): per variant, ridge regression of reward on the numeric attributes, clipped
    to [0, 1]; variants with no rounds get the overall mean."""
    names = sorted(
        {k for r in rounds for k, v in r.features.items() if isinstance(v, bool | int | float)}
        - {"local_hour", "day_of_week"}
    )
    overall = float(np.mean([r.reward for r in rounds])) if rounds else 0.0
    weights: dict[str, np.ndarray | None] = {}
    for variant in variants:
        mine = [r for r in rounds if r.variant == variant]
        if len(mine) < 5:
            weights[variant] = None
            continue
        x = np.array([numeric_vector(r.features, names) for r in mine])
        y = np.array([r.reward for r in mine])
        scale = np.maximum(np.abs(x).max(axis=0), 1e-9)
        xs = x / scale
        w = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ y) / scale
        weights[variant] = w

    def predict(attrs: Mapping[str, Any]) -> dict[str, float]:
        x = numeric_vector(attrs, names)
        return {
            v: overall if w is None else float(np.clip(x @ w, 0.0, 1.0)) for v, w in weights.items()
        }

    return predict


def evaluate(
    rounds: Sequence[Round], variants: Sequence[str], target: Target, alpha: float = 0.05
) -> dict[str, ope.Estimate]:
    """IPS, self-normalised IPS, direct method and doubly robust value of ``target``."""
    if not rounds:
        raise ValueError("no exposed decisions for this slot in the logs")
    rewards = np.array([r.reward for r in rounds])
    propensities = np.array([r.propensity for r in rounds])
    dists = [target(r.features, variants) for r in rounds]
    pi_logged = np.array([d.get(r.variant, 0.0) for d, r in zip(dists, rounds, strict=True)])
    model = fit_reward_model(rounds, variants)
    q = [model(r.features) for r in rounds]
    q_logged = np.array([qi[r.variant] for qi, r in zip(q, rounds, strict=True)])
    q_target = np.array(
        [sum(p * qi.get(v, 0.0) for v, p in d.items()) for d, qi in zip(dists, q, strict=True)]
    )
    return {
        "IPS": ope.ips(rewards, propensities, pi_logged, alpha=alpha),
        "SNIPS": ope.snips(rewards, propensities, pi_logged, alpha=alpha),
        "DM": ope.direct_method(q_target, alpha=alpha),
        "DR": ope.doubly_robust(rewards, propensities, pi_logged, q_logged, q_target, alpha=alpha),
    }
