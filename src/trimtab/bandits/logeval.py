"""Off-policy evaluation on trimtab's own logs: what would another policy have earned?

Every decision trimtab logs carries the variant, the exact probability it had of being chosen
and the attributes it saw; the tracker reports which ones were really shown (``exposure``).
That is all IPS-family estimators need. A **round** is one exposed decision of a slot and its
reward is attributed by :mod:`trimtab.attribution` — the very function the live learner and
experiment metrics use — so a policy is evaluated on the reward it learned from.

Candidate policies are functions of the logged attributes returning a distribution over the
slot's variants: :func:`always` (one variant), :func:`uniform`, :func:`rules` (the slot's rules
as the engine evaluates them, on the logged attributes), or :func:`logged` (the policy that
produced the log, whose IPS value is the observed mean reward — a sanity check).

The direct method and doubly robust use a reward model fitted on the rounds: per variant, a
ridge regression of the reward on the numeric attributes (:func:`fit_reward_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from trimtab import logschema
from trimtab.attribution import (
    Events,
    Reward,
    attribute,
    exposure_rounds,
    receive_time,
    reward_amount,
)
from trimtab.bandits import ope
from trimtab.decide import NOT_CHOSEN_SOURCES
from trimtab.events import Exposure, decode_one
from trimtab.patterns import kinds_for

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
    time: float = 0.0  # when the exposure was received (epoch ms)


def always(variant: str) -> Target:
    return lambda attrs, variants: {v: float(v == variant) for v in variants}


def uniform() -> Target:
    return lambda attrs, variants: {v: 1.0 / len(variants) for v in variants}


def rules(config: Any, slot: str) -> Target:
    """The slot's rules without its bandit policies, as the engine evaluates them, on each
    round's logged attributes (a user outside every rule gets the default)."""
    from trimtab.decide import Engine

    engine = Engine(config)  # no policies: a policy rule passes to the rules below it

    def target(attrs: Mapping[str, Any], variants: Sequence[str]) -> dict[str, float]:
        (decision,) = engine.decide_attrs(attrs, [slot])
        return {decision.variant: 1.0}

    return target


def logged(rounds_by_id: Mapping[str, Round]) -> Target:
    """The logging policy itself, known only on the logged actions (for the sanity check)."""

    def target(attrs: Mapping[str, Any], variants: Sequence[str]) -> dict[str, float]:
        r = rounds_by_id[attrs["__decision_id"]]
        return {r.variant: r.propensity}

    return target


def load_rounds(data_dir: str | Path, slot: str, reward: Reward | None = None) -> list[Round]:
    """The exposed decisions of ``slot`` with their attributed rewards, in time order.

    Rewards are credited by :func:`trimtab.attribution.attribute`, the function the live
    learner uses: pass the policy's own :class:`~trimtab.attribution.Reward` to evaluate on
    the reward it learns from (default: any click in the slot within an hour).
    """
    reward = reward or Reward(window_s=3600.0)
    data_dir = Path(data_dir)
    decisions = _decisions(data_dir, slot)
    amount = reward_amount(reward, slot)
    kinds = sorted({"exposure", *kinds_for([reward.event])})
    events = logschema.open_readonly(logschema.events_path(data_dir))
    try:
        rows = logschema.event_rows(events, kinds).fetchall()
    finally:
        events.close()
    users: dict[str, int] = {}
    x_user, x_id, x_time, x_seq = [], [], [], []
    e_user, e_time, e_seq, e_value = [], [], [], []
    for seq, user, _kind, received, ts, body in rows:
        event = decode_one(body)
        when = receive_time(received, ts)
        code = users.setdefault(user, len(users))
        if type(event) is Exposure:
            if event.slot == slot:
                x_user.append(code)
                x_id.append(event.decision_id)
                x_time.append(when)
                x_seq.append(seq)
            continue
        value = amount(event)
        if value is not None:
            e_user.append(code)
            e_time.append(when)
            e_seq.append(seq)
            e_value.append(value)
    kept, rounds = exposure_rounds(
        np.array(x_user, np.int64), np.array(x_id, object), np.array(x_time), np.array(x_seq)
    )
    credited = attribute(
        rounds,
        Events(np.array(e_user, np.int64), np.array(e_time), np.array(e_seq), np.array(e_value)),
        reward.window_s,
    )
    rewards = credited.rewards(reward.min_value)
    names = {code: user for user, code in users.items()}
    # None would mean every exposure starts a round (exposure_rounds always marks them)
    starts = rounds.starts if rounds.starts is not None else np.ones(len(rounds), dtype=bool)
    out: list[Round] = []
    for i, index in enumerate(kept):
        decision = decisions.get(x_id[index]) if starts[i] else None
        if decision is not None:
            d_id, variant, propensity, attrs = decision
            user = names[x_user[index]]
            out.append(Round(d_id, user, variant, propensity, attrs, rewards[i], x_time[index]))
    return out


def _decisions(data_dir: Path, slot: str) -> dict[str, tuple[str, str, float, dict[str, Any]]]:
    """decision id -> (id, variant, propensity, features) from every decision log in the dir."""
    out: dict[str, tuple[str, str, float, dict[str, Any]]] = {}
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    # Placeholders (no consent, degraded) and QA force links were shown by no policy: no
    # round to learn from.
    marks = ",".join("?" * len(NOT_CHOSEN_SOURCES))
    for path in logschema.decision_log_paths(data_dir):
        conn = logschema.open_readonly(path)
        try:
            for decision_id, variant, propensity, features in conn.execute(
                "SELECT decision_id, variant, propensity, features FROM decisions "
                f"WHERE slot = ? AND source NOT IN ({marks}) AND propensity > 0",
                (slot, *NOT_CHOSEN_SOURCES),
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
    rounds: Sequence[Round],
    variants: Sequence[str],
    target: Target,
    alpha: float = 0.05,
    reward_model: Callable[[Mapping[str, Any]], dict[str, float]] | None = None,
) -> dict[str, ope.Estimate]:
    """IPS, self-normalised IPS, direct method and doubly robust value of ``target``.

    DM and DR use ``reward_model`` (e.g. a registered model, :mod:`trimtab.models.reward`)
    when given, else :func:`fit_reward_model` fitted on the rounds.
    """
    if not rounds:
        raise ValueError("no exposed decisions for this slot in the logs")
    rewards = np.array([r.reward for r in rounds])
    propensities = np.array([r.propensity for r in rounds])
    dists = [target(r.features, variants) for r in rounds]
    pi_logged = np.array([d.get(r.variant, 0.0) for d, r in zip(dists, rounds, strict=True)])
    model = reward_model or fit_reward_model(rounds, variants)
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
