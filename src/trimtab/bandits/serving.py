"""Bandit policies in the live engine: choose per page view, learn from attributed rewards.

A slot rule ``{policy: {...}}`` names a :class:`PolicySpec`. For each page view the policy picks
an arm once (re-decisions on the same page keep it, so the slot does not flicker) and logs its
exact propensity. The arm is confirmed when the tracker reports its ``exposure``; events that
match the reward pattern within ``window_s`` of the exposure credit it; when the window closes
the policy is updated once with the reward (0 if nothing came). Rewards thus flow from the
event stream into ``update`` online, with no batch job.

Safeguards:

- ``min_default_share``: that share of decisions shows the slot's default, whatever the policy
  would pick; it keeps a control group and the propensities stay exact:
  ``P(a) = (1 − s)·P_policy(a) + s·1[a = default]``.
- ``guardrail``: once both the policy's and the default share's decisions have
  ``min_samples`` exposures, a policy whose reward rate falls below ``min_ratio`` times the
  default's is switched off, and the slot falls back to its default (so does any error).

>>> spec = PolicySpec(name="rail", arms=["a", "b"], features=["depth"])
>>> served = ServedPolicy(spec, default="a", seed=1)
>>> attrs = {"id": "u", "session_id": "s", "page": "/x", "depth": 0.4}
>>> arm, p = served.choose_for(attrs, ["a", "b"])
>>> arm in ("a", "b") and 0 < p <= 1
True
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from trimtab.bandits.policies import (
    ContextEncoder,
    EpsilonGreedy,
    LinearThompson,
    LinUCB,
    LogisticThompson,
    load_policy,
)
from trimtab.events import AnyEvent, Custom, Exposure

POLICY_TYPES = {
    "epsilon_greedy": EpsilonGreedy,
    "linucb": LinUCB,
    "linear_thompson": LinearThompson,
    "logistic_thompson": LogisticThompson,
}


class RewardSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What counts as a reward: an event pattern (``kind:detail``), where, and how much."""

    event: str = "click:*"
    in_slot: bool = True  # only events on elements inside the policy's slot
    min_value: float = 0.0  # for dwell: visible_ms / dwell_ms that must add up within the window
    window_s: float = 600.0


class GuardrailSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    min_ratio: float = 0.8
    min_samples: int = 500


class PolicySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    type: Literal["epsilon_greedy", "linucb", "linear_thompson", "logistic_thompson"] = (
        "logistic_thompson"
    )
    arms: list[str] = []
    features: list[str] = []  # attribute paths; "name=value" is a one-hot indicator
    params: dict[str, float] = {}
    reward: RewardSpec = msgspec.field(default_factory=RewardSpec)
    min_default_share: float = 0.0
    guardrail: GuardrailSpec | None = None


class GuardrailTripped(RuntimeError):
    """The policy's reward rate fell below its guardrail; the default shows instead."""


@dataclass(slots=True)
class _Pending:
    """A decision waiting for its exposure and reward window."""

    x: np.ndarray
    arm: int
    propensity: float
    by_policy: bool
    decided_ms: float
    exposed_ms: float = 0.0
    value: float = 0.0


def _feature_reader(path: str):
    name, eq, wanted = path.partition("=")
    parts = name.split(".")

    def read(attrs: Mapping[str, Any]) -> float:
        value: Any = attrs
        for part in parts:
            if not isinstance(value, Mapping):
                return 0.0
            value = value.get(part)
        if eq:
            return 1.0 if value is not None and str(value) == wanted else 0.0
        if value is None or isinstance(value, (str, Mapping, list)):
            return 0.0
        return float(value)

    return read


class ServedPolicy:
    """One named policy serving one slot, with its reward bookkeeping."""

    def __init__(self, spec: PolicySpec, default: str, slot: str = "", seed: int | None = None):
        from trimtab.features import _token_matcher  # the pattern syntax features use

        self.spec = spec
        self.default = default
        self.slot = slot
        self.arms = list(spec.arms)
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        self._readers = [_feature_reader(f) for f in spec.features]
        self.encoder = ContextEncoder(spec.features, bias=True)
        params = {k: float(v) for k, v in spec.params.items()}
        if "n_draws" in params:
            params["n_draws"] = int(params["n_draws"])
        self.policy = POLICY_TYPES[spec.type](len(self.arms), self.encoder.dim, seed=seed, **params)
        self.rng = np.random.default_rng(None if seed is None else seed + 1)
        self.matches = _token_matcher(spec.reward.event)
        self.pending: dict[tuple[str, str, str], _Pending] = {}
        self.by_user: dict[str, tuple[str, str, str]] = {}
        # exposures and rewards of policy-chosen vs default-share decisions (the guardrail)
        self.counts = {"policy": [0, 0.0], "control": [0, 0.0]}
        self.tripped = ""
        self.updates = 0

    # -- choosing -----------------------------------------------------------------------
    def encode(self, attrs: Mapping[str, Any]) -> np.ndarray:
        x = np.empty(len(self._readers) + 1)
        x[0] = 1.0
        for i, read in enumerate(self._readers, 1):
            x[i] = read(attrs)
        return x

    def choose_for(self, attrs: Mapping[str, Any], arms: list[str]) -> tuple[str, float]:
        """The arm for this page view (chosen once per page), with its exact propensity."""
        if self.tripped:
            raise GuardrailTripped(self.tripped)
        key = (
            str(attrs.get("id", "")),
            str(attrs.get("session_id", "")),
            str(attrs.get("page", "")),
        )
        known = self.pending.get(key)
        if known is not None:
            return self.arms[known.arm], known.propensity
        x = self.encode(attrs)
        share = self.spec.min_default_share
        default_index = self._index.get(self.default)
        if share > 0.0 and default_index is not None and self.rng.random() < share:
            probs = self.policy.probabilities(x)
            arm, by_policy = default_index, False
            p = share + (1.0 - share) * float(probs[default_index])
        else:
            arm, p_policy = self.policy.choose(x)
            by_policy = True
            p = (1.0 - share) * p_policy + (share if arm == default_index else 0.0)
        self.pending[key] = _Pending(x, arm, p, by_policy, time.time() * 1000.0)
        self.by_user[key[0]] = key
        return self.arms[arm], p

    def probabilities(self, attrs: Mapping[str, Any], rounds: int = 16) -> dict[str, float]:
        """The action distribution this policy would use for these attributes now.

        Sampling policies estimate it by Monte Carlo; ``rounds`` estimates are averaged so a
        report shows the policy's drift rather than sampling noise (not used when deciding).
        """
        x = self.encode(attrs)
        probs = np.mean([self.policy.probabilities(x) for _ in range(rounds)], axis=0)
        share = self.spec.min_default_share
        out = {arm: (1.0 - share) * float(p) for arm, p in zip(self.arms, probs, strict=True)}
        if self.default in out:
            out[self.default] += share
        return out

    # -- learning -----------------------------------------------------------------------
    def observe(self, events: Iterable[AnyEvent]) -> None:
        """Confirm exposures and credit rewards from a batch of (gated) events."""
        reward = self.spec.reward
        for e in events:
            key = self.by_user.get(e.user_id)
            if key is None:
                continue
            pending = self.pending.get(key)
            if pending is None:
                continue
            if type(e) is Exposure:
                if e.slot == self.slot and self.arms[pending.arm] == e.variant:
                    pending.exposed_ms = pending.exposed_ms or e.ts
                continue
            if not pending.exposed_ms or e.ts < pending.exposed_ms:
                continue
            if e.ts - pending.exposed_ms > reward.window_s * 1000.0:
                continue
            if reward.in_slot and getattr(e, "slot", "") != self.slot and type(e) is not Custom:
                continue
            if self.matches(e):
                pending.value += float(
                    getattr(e, "dwell_ms", 0.0) or getattr(e, "visible_ms", 0.0) or 1.0
                )

    def expire(self, now_ms: float | None = None) -> int:
        """Close reward windows that have ended: one ``update`` per exposed decision."""
        now = time.time() * 1000.0 if now_ms is None else now_ms
        window = self.spec.reward.window_s * 1000.0
        done = []
        for key, p in self.pending.items():
            if p.exposed_ms and now - p.exposed_ms >= window:
                done.append(key)
            elif not p.exposed_ms and now - p.decided_ms >= window:
                done.append(key)  # never shown: nothing to learn
        threshold = max(self.spec.reward.min_value, 1e-12)
        for key in done:
            p = self.pending.pop(key)
            if self.by_user.get(key[0]) == key:
                del self.by_user[key[0]]
            if not p.exposed_ms:
                continue
            reward = 1.0 if p.value >= threshold else 0.0
            self.policy.update(p.x, p.arm, reward, p.propensity)
            self.updates += 1
            group = self.counts["policy" if p.by_policy else "control"]
            group[0] += 1
            group[1] += reward
        self._check_guardrail()
        return len(done)

    def _check_guardrail(self) -> None:
        guard = self.spec.guardrail
        if guard is None or self.tripped:
            return
        (n_pol, r_pol), (n_ctl, r_ctl) = self.counts["policy"], self.counts["control"]
        if n_pol < guard.min_samples or n_ctl < guard.min_samples:
            return
        rate_pol, rate_ctl = r_pol / n_pol, r_ctl / n_ctl
        if rate_pol < guard.min_ratio * rate_ctl:
            self.tripped = (
                f"guardrail: reward rate {rate_pol:.2%} under {guard.min_ratio:.0%} of the "
                f"default's {rate_ctl:.2%} after {n_pol} exposures"
            )

    # -- persistence --------------------------------------------------------------------
    def to_state(self) -> bytes:
        return msgspec.msgpack.encode(
            {
                "policy": self.policy.to_state(),
                "counts": self.counts,
                "tripped": self.tripped,
                "updates": self.updates,
                "arms": self.arms,
                "features": list(self.spec.features),
                "type": self.spec.type,
            }
        )

    def restore(self, blob: bytes) -> bool:
        """Load learned state saved by :meth:`to_state` if it fits this spec; True if it did."""
        state = msgspec.msgpack.decode(blob)
        if (state["arms"], state["features"], state["type"]) != (
            self.arms,
            list(self.spec.features),
            self.spec.type,
        ):
            return False  # arms or features changed: the old model no longer applies
        self.policy = load_policy(state["policy"])
        self.counts = {k: list(v) for k, v in state["counts"].items()}
        self.tripped = state["tripped"]
        self.updates = state["updates"]
        return True


def policy_specs(slots: Mapping[str, Any]) -> list[tuple[str, str, PolicySpec]]:
    """Every (slot, default, spec) declared by the config's policy rules."""
    out = []
    for slot_name, slot in slots.items():
        for rule in slot.rules:
            if rule.policy is not None:
                data = dict(rule.policy)
                data.setdefault("name", rule.id or f"{slot_name}-policy")
                data.setdefault("arms", list(slot.variants))
                out.append((slot_name, slot.default, msgspec.convert(data, PolicySpec)))
    return out


POLICY_KEY = "__policy__:"  # policy states share the state store, under reserved keys


def serve_policies(
    slots: Mapping[str, Any],
    current: Mapping[str, ServedPolicy],
    stored: Mapping[str, bytes] | None = None,
) -> dict[str, ServedPolicy]:
    """Policies for a (re)loaded config, keeping what each has learned.

    A policy whose arms, features and type are unchanged keeps its model and open reward
    windows (``current``), or else picks up its saved state (``stored``, keyed
    ``POLICY_KEY + name``); a changed one starts afresh.
    """
    served: dict[str, ServedPolicy] = {}
    stored = stored or {}
    for slot, default, spec in policy_specs(slots):
        policy = ServedPolicy(spec, default, slot)
        old = current.get(spec.name)
        if old is not None and policy.restore(old.to_state()):
            policy.pending, policy.by_user = old.pending, old.by_user
        elif POLICY_KEY + spec.name in stored:
            policy.restore(stored[POLICY_KEY + spec.name])
        served[spec.name] = policy
    return served
