"""Bandit policies in the live engine: choose per page view, learn from attributed rewards.

A slot rule ``{policy: {...}}`` names a :class:`PolicySpec`. For each page view the policy picks
an arm once (re-decisions on the same page keep it, so the slot does not flicker) and logs its
exact propensity. The tracker's ``exposure`` (carrying the decision id) starts the decision's
round; events credit it exactly as :mod:`trimtab.attribution` says — the same function
``trimtab ope`` and ``trimtab report`` use — and when the round's window closes (or the user's
next exposure in the slot ends it) the policy is updated once with the reward. Rewards flow
from the event stream into ``update`` online, with no batch job.

Context: ``features`` are attribute paths read once per decision (``name=value`` is a one-hot
indicator) and learned per arm; ``arm_features`` are read once per arm with ``{arm}`` replaced
by the arm's name (``interest_share.{arm}``: how much of the reader's attention went to the
category this arm shows) and learned by one model shared by every arm, so what is learned on
one arm helps all the others. Every value is clipped to ``±clip`` and NaN reads as 0: one
visitor's malformed or extreme value cannot swing a model every visitor shares, and nothing
non-finite is learned or saved.

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
>>> choice = served.choose_for(attrs, ["a", "b"], "d1")
>>> choice.arm in ("a", "b") and 0 < choice.propensity <= 1
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np

from trimtab.attribution import Events, Reward, Rounds, attribute, event_time, reward_amount
from trimtab.bandits.policies import POLICIES, load_policy
from trimtab.decide import PolicyChoice
from trimtab.events import AnyEvent, Exposure
from trimtab.targeting import walk_path
from trimtab.validation import ConfigError, convert

SESSION_IDLE_MS = 30 * 60 * 1000.0  # a session ends after this long without a decision

if TYPE_CHECKING:
    from trimtab.config import RuleDecl, SlotDecl

    PolicyType = str
else:  # the names of the one registry, checked by msgspec where the config names one
    PolicyType = Literal[tuple(POLICIES)]

RewardSpec = Reward  # the reward of a policy is the one attribution definition


class GuardrailSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    min_ratio: float = 0.8
    min_samples: int = 500


class PolicySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    type: PolicyType = "logistic_thompson"
    arms: list[str] = []
    features: list[str] = []  # attribute paths, one model per arm; "name=value" is an indicator
    arm_features: list[str] = []  # read per arm ("{arm}" = its name), one model for all arms
    clip: float = 10.0  # every context value is clipped to ±clip (NaN reads as 0)
    # Policy parameters (uniform_mix, scale, ridge…), plus prior_rate: the reward rate the
    # untrained model expects of every arm (default: none, i.e. 50 % for logistic models).
    params: dict[str, float] = {}
    reward: Reward = msgspec.field(default_factory=Reward)
    min_default_share: float = 0.0
    guardrail: GuardrailSpec | None = None
    # "page": choose afresh on every page view, with what the reader did so far (in-session);
    # "session": choose on the session's first page and keep it, as an assignment would.
    choose_per: Literal["page", "session"] = "page"
    # 0: learn from each round as soon as it closes; > 0: hold the closed rounds and learn
    # from them together once per this many seconds (batch reweighting, for comparison).
    learn_every_s: float = 0.0
    # At most this many rounds of one user are learned from per hour (0: no cap), so no single
    # visitor — however many pages they open and click — can outweigh everyone else.
    max_rounds_per_user_hour: int = 30


class GuardrailTripped(RuntimeError):
    """The policy's reward rate fell below its guardrail; the default shows instead."""


@dataclass(slots=True)
class _Choice:
    """One page view's pick: what the policy saw and did (shared by its decision ids)."""

    x: np.ndarray
    arm: int
    propensity: float
    by_policy: bool
    decided_ms: float
    used_ms: float = 0.0  # the latest decision that reused it
    ids: list[str] = field(default_factory=list)
    started: set[str] = field(default_factory=set)  # its decision ids whose round began
    explained: PolicyChoice | None = None


@dataclass(slots=True)
class _Timeline:
    """A user's exposures of the slot and candidate reward events, while a round is open."""

    rounds: list[tuple[float, int, str]] = field(default_factory=list)  # time, seq, our id or ""
    events: list[tuple[float, int, float]] = field(default_factory=list)  # time, seq, amount
    last_shown: str = ""  # the decision id the user was shown last in the slot


def _feature_reader(path: str) -> Callable[[Mapping[str, Any]], float]:
    name, eq, wanted = path.partition("=")
    parts = name.split(".")

    def read(attrs: Mapping[str, Any]) -> float:
        value = walk_path(attrs, parts)
        if eq:
            return 1.0 if value is not None and str(value) == wanted else 0.0
        if value is None or isinstance(value, (str, Mapping, list)):
            return 0.0
        return float(value)

    return read


class ServedPolicy:
    """One named policy serving one slot, with its reward bookkeeping."""

    def __init__(self, spec: PolicySpec, default: str, slot: str = "", seed: int | None = None):
        if not spec.clip > 0.0:
            raise ValueError("clip must be a positive number")
        if not spec.learn_every_s >= 0.0:
            raise ValueError("learn_every_s must be 0 or more")
        if spec.max_rounds_per_user_hour < 0:
            raise ValueError("max_rounds_per_user_hour must be 0 or more")
        self.spec = spec
        self.default = default
        self.slot = slot
        self.arms = list(spec.arms)
        k = len(self.arms)
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        self._readers = [_feature_reader(f) for f in spec.features]
        self._arm_readers = [
            [_feature_reader(f.replace("{arm}", arm)) for f in spec.arm_features]
            for arm in self.arms
        ]
        self.shared = bool(spec.arm_features)
        self._eye = np.eye(k)
        width = 1 + len(spec.features)  # intercept + per-arm features
        self.dim = k * width + len(spec.arm_features) if self.shared else width
        # numbers from the config by name; the policy's constructor rejects a name it does not take
        params: dict[str, Any] = {key: float(v) for key, v in spec.params.items()}
        prior_rate = params.pop("prior_rate", None)
        if "n_draws" in params:
            params["n_draws"] = int(params["n_draws"])
        self.policy = POLICIES[spec.type](
            k, self.dim, seed=seed, shared=self.shared, prior_mean=self._prior(prior_rate), **params
        )
        self.rng = np.random.default_rng(None if seed is None else seed + 1)
        self.amount = reward_amount(spec.reward, slot)
        self.window_ms = spec.reward.window_s * 1000.0
        self.choices: dict[tuple[str, str, str], _Choice] = {}  # per page view
        self.decisions: dict[str, tuple[str, str, str]] = {}  # decision id -> page view
        self.timelines: dict[str, _Timeline] = {}
        self._seq = 0
        # The server clock in ms (a simulation substitutes its own).
        self.clock: Callable[[], float] = lambda: time.time() * 1000.0
        # exposures and rewards of policy-chosen vs default-share decisions (the guardrail)
        self.counts = {"policy": [0, 0.0], "control": [0, 0.0]}
        self.tripped = ""
        self.updates = 0
        self.rejected = 0  # rounds not learned from because their numbers were not finite
        self.capped = 0  # rounds not learned from: their user had reached the hourly cap
        self._per_user: dict[str, tuple[int, int]] = {}  # user -> (hour, rounds learned)
        # Called with (decision id, reward) after each update: an audit trail for tests and tools.
        self.on_update: Callable[[str, float], None] | None = None
        self._held: list[tuple[_Choice, float, str]] = []  # closed rounds awaiting a batch
        self._next_batch_ms = 0.0
        # A choice is forgotten once unused this long (a session-long one lives with the session).
        self._keep_ms = self.window_ms
        if spec.choose_per == "session":
            self._keep_ms = max(self.window_ms, SESSION_IDLE_MS)

    def _prior(self, rate: float | None) -> np.ndarray | None:
        """The untrained model's weights: every arm's intercept at ``rate`` (logit for
        logistic models), everything else 0."""
        if rate is None:
            return None
        if not 0.0 < rate < 1.0:
            raise ValueError("prior_rate must be between 0 and 1")
        level = math.log(rate / (1.0 - rate)) if POLICIES[self.spec.type].logit_prior else rate
        k, width = len(self.arms), 1 + len(self.spec.features)
        if self.shared:
            mean = np.zeros((1, self.dim))
            mean[0, [a * width for a in range(k)]] = level
        else:
            mean = np.zeros((k, self.dim))
            mean[:, 0] = level
        return mean

    # -- choosing -----------------------------------------------------------------------
    def encode(self, attrs: Mapping[str, Any]) -> np.ndarray:
        """The context: a vector (one model per arm) or one row per arm (shared model)."""
        clip = self.spec.clip
        x: np.ndarray = np.empty(len(self._readers) + 1)
        x[0] = 1.0
        for i, read in enumerate(self._readers, 1):
            x[i] = read(attrs)
        if self.shared:
            k, width = len(self.arms), len(x)
            rows = np.zeros((k, self.dim))
            rows[:, : k * width] = np.kron(self._eye, x)
            per_arm = rows[:, k * width :]
            for a, readers in enumerate(self._arm_readers):
                for j, read in enumerate(readers):
                    per_arm[a, j] = read(attrs)
            x = rows
        np.clip(x, -clip, clip, out=x)  # ±inf become ±clip
        x[np.isnan(x)] = 0.0
        return x

    def choose_for(
        self, attrs: Mapping[str, Any], arms: list[str], decision_id: str = ""
    ) -> PolicyChoice:
        """The arm for this page view (chosen once per page), its exact propensity and why."""
        if self.tripped:
            raise GuardrailTripped(self.tripped)
        page = (
            str(attrs.get("id", "")),
            str(attrs.get("session_id", "")),
            ""
            if self.spec.choose_per == "session"
            else str(attrs.get("page_view_id") or attrs.get("page", "")),
        )
        known = self.choices.get(page)
        if known is None:
            known = self.choices[page] = self._choose(attrs)
        known.used_ms = self.clock()
        if decision_id:
            known.ids.append(decision_id)
            self.decisions[decision_id] = page
        if known.explained is None:
            known.explained = self._explain(known)
        return known.explained

    def _choose(self, attrs: Mapping[str, Any]) -> _Choice:
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
        return _Choice(x, arm, p, by_policy, self.clock())

    def _explain(self, choice: _Choice) -> PolicyChoice:
        """Plain words for the reader, the numbers kept apart for whoever wants them.

        The policy *exploits* when it shows the one arm it now believes best for this context
        (highest posterior mean); anything else — including a pick among arms it cannot yet
        tell apart — is *exploring*.
        """
        arm = self.arms[choice.arm]
        means = self.policy.expected(choice.x)
        top = np.flatnonzero(means >= means.max() - 1e-12)
        best = self.arms[int(top[0])] if len(top) == 1 else ""
        technical = (
            f"policy {self.spec.name} ({self.spec.type}) chose {arm} with probability "
            f"{choice.propensity:.3f}; "
            + (f"its favourite here is {best}" if best else "it has no favourite here yet")
        )
        if not choice.by_policy:
            share = self.spec.min_default_share
            return PolicyChoice(
                arm,
                choice.propensity,
                "control",
                "The standard choice: some readers always get it, so we can check that "
                "personalising really helps",
                f"{technical} (the {share:.0%} control share keeps the default)",
            )
        if arm == best:
            return PolicyChoice(
                arm,
                choice.propensity,
                "exploit",
                "Picked because readers like you have clicked it most",
                f"{technical} (exploiting what it has learned)",
            )
        return PolicyChoice(
            arm,
            choice.propensity,
            "explore",
            "Something different, shown now and then so the picks keep learning what readers like",
            f"{technical} (exploring)",
        )

    def shares(self, attrs: Mapping[str, Any], arms: list[str]) -> dict[str, float]:
        """The probability of each arm were the policy asked now (one fresh estimate for
        sampling policies); the default alone once the guardrail tripped."""
        if self.tripped:
            return {self.default: 1.0}
        return self.probabilities(attrs, rounds=1)

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
        """Follow exposures of the slot and keep the events that may credit an open round.

        The streaming side of :func:`trimtab.attribution.attribute`: rounds start at the first
        exposure of one of this policy's decisions; any exposure of another decision ends the
        user's open round; candidate events are kept until :meth:`expire` closes the round.
        """
        slot, amount = self.slot, self.amount
        for e in events:
            self._seq += 1
            if type(e) is Exposure:
                if e.slot != slot:
                    continue
                line = self.timelines.get(e.user_id)
                shown = e.decision_id
                if line is not None and shown and shown == line.last_shown:
                    continue  # the same decision shown again: nothing changes
                page = self.decisions.get(shown) if shown else None
                choice = self.choices.get(page) if page is not None else None
                ours = choice is not None and shown not in choice.started
                if line is None:
                    if not ours:
                        continue  # no round of ours to end, none to start
                    line = self.timelines[e.user_id] = _Timeline()
                line.last_shown = shown
                line.rounds.append((event_time(e), self._seq, shown if ours else ""))
                if ours:
                    assert choice is not None
                    choice.started.add(shown)
                continue
            line = self.timelines.get(e.user_id)
            if line is None:
                continue
            value = amount(e)
            if value is not None:
                line.events.append((event_time(e), self._seq, value))

    def expire(self, now_ms: float | None = None) -> int:
        """Close the rounds that ended: one ``update`` per round, with its attributed reward.

        Returns how many page views' choices were retired (their last round closed, or never
        shown within the window).
        """
        now = self.clock() if now_ms is None else now_ms
        window = self.window_ms
        if self.spec.learn_every_s > 0.0:
            self._learn_held(now)
        closing: list[str] = []
        for user, line in self.timelines.items():
            last = len(line.rounds) - 1
            if any(
                shown and (i < last or now - t >= window)
                for i, (t, _, shown) in enumerate(line.rounds)
            ):
                closing.append(user)
        if closing:
            self._close(closing, now)
        retired = 0
        for page, choice in list(self.choices.items()):
            if now - max(choice.decided_ms, choice.used_ms) < self._keep_ms or self._open(choice):
                continue
            del self.choices[page]
            for decision_id in choice.ids:
                self.decisions.pop(decision_id, None)
            retired += 1
        self._check_guardrail()
        return retired

    def _open(self, choice: _Choice) -> bool:
        """Whether a round of this choice is still waiting for its window to close."""
        for decision_id in choice.ids:
            user = self.decisions.get(decision_id, ("",))[0]
            line = self.timelines.get(user)
            if line is not None and any(shown == decision_id for _, _, shown in line.rounds):
                return True
        return False

    def _close(self, users: list[str], now: float) -> None:
        """Attribute the closing users' rounds in one call and learn from each of ours."""
        r_user: list[int] = []
        r_time: list[float] = []
        r_seq: list[int] = []
        r_id: list[str] = []
        e_user: list[int] = []
        e_time: list[float] = []
        e_seq: list[int] = []
        e_value: list[float] = []
        per_user: list[range] = []  # each user's rounds, by position
        for code, user in enumerate(users):
            line = self.timelines[user]
            per_user.append(range(len(r_id), len(r_id) + len(line.rounds)))
            for t, seq, shown in line.rounds:
                r_user.append(code)
                r_time.append(t)
                r_seq.append(seq)
                r_id.append(shown)
            for t, seq, value in line.events:
                e_user.append(code)
                e_time.append(t)
                e_seq.append(seq)
                e_value.append(value)
        starts = np.array([bool(s) for s in r_id])
        credited = attribute(
            Rounds(np.array(r_user), np.array(r_time), np.array(r_seq), starts),
            Events(np.array(e_user), np.array(e_time), np.array(e_seq), np.array(e_value)),
            self.spec.reward.window_s,
        )
        rewards = credited.rewards(self.spec.reward.min_value)
        for code, user in enumerate(users):
            positions = per_user[code]
            first_open = None
            for i in positions:
                shown = r_id[i]
                if not shown:
                    continue
                if i == positions[-1] and now - r_time[i] < self.window_ms:
                    first_open = i  # the user's last round, its window still open
                    continue
                page = self.decisions.get(shown)
                choice = self.choices.get(page) if page is not None else None
                if choice is not None:
                    self._learn(choice, float(rewards[i]), shown)
            # keep only what the open round still needs
            if first_open is None:
                del self.timelines[user]
                continue
            line = self.timelines[user]
            start = (r_time[first_open], r_seq[first_open])
            line.rounds = [r for r in line.rounds if (r[0], r[1]) >= start]
            line.events = [ev for ev in line.events if (ev[0], ev[1]) >= start]

    def credit(self, decision_id: str, reward: float) -> bool:
        """Learn from one of this policy's decisions whose round was attributed elsewhere
        (a replay over logged rounds); False when the decision is unknown or retired."""
        page = self.decisions.get(decision_id)
        choice = self.choices.get(page) if page is not None else None
        if choice is None:
            return False
        self._learn(choice, reward, decision_id)
        return True

    def _learn_held(self, now: float) -> None:
        """Batch mode: at each period boundary, learn from every round closed before it."""
        period = self.spec.learn_every_s * 1000.0
        if not self._next_batch_ms:
            self._next_batch_ms = (math.floor(now / period) + 1) * period
        if now < self._next_batch_ms:
            return
        held, self._held = self._held, []
        for choice, reward, decision_id in held:
            self._update(choice, reward, decision_id)
        self._next_batch_ms = (math.floor(now / period) + 1) * period

    def _learn(self, choice: _Choice, reward: float, decision_id: str) -> None:
        """Learn from one closed round, now or (batch mode) at the next period boundary."""
        if not self._within_cap(decision_id):
            self.capped += 1
            return
        if self.spec.learn_every_s > 0.0:
            self._held.append((choice, reward, decision_id))
        else:
            self._update(choice, reward, decision_id)

    def _within_cap(self, decision_id: str) -> bool:
        """Count the round against its user's hourly allowance; False once it is spent."""
        cap = self.spec.max_rounds_per_user_hour
        page = self.decisions.get(decision_id)
        if not cap or page is None:
            return True
        hour = int(self.clock() // 3_600_000)
        if len(self._per_user) > 200_000:  # forget users of earlier hours
            self._per_user = {u: v for u, v in self._per_user.items() if v[0] == hour}
        seen_hour, count = self._per_user.get(page[0], (hour, 0))
        if seen_hour != hour:
            count = 0
        if count >= cap:
            return False
        self._per_user[page[0]] = (hour, count + 1)
        return True

    def _update(self, choice: _Choice, reward: float, decision_id: str) -> None:
        """One update (the round of ``decision_id``); anything that would leave a non-finite
        weight is undone and counted."""
        if not (np.isfinite(choice.x).all() and math.isfinite(reward)):
            self.rejected += 1  # clipped contexts and 0/1 rewards make this unreachable
            return
        saved = self.policy.snapshot(choice.arm)
        self.policy.update(choice.x, choice.arm, reward, choice.propensity)
        if not self.policy.finite():
            self.policy.rollback(saved)
            self.rejected += 1
            return
        self.updates += 1
        if self.on_update is not None:
            self.on_update(decision_id, reward)
        group = self.counts["policy" if choice.by_policy else "control"]
        group[0] += 1
        group[1] += reward

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
        """The learned state, for the store. Refuses to serialise anything non-finite."""
        if not self.policy.finite():
            raise ValueError(f"policy {self.spec.name}: non-finite weights, not saved")
        return msgspec.msgpack.encode(
            {
                "policy": self.policy.to_state(),
                "counts": self.counts,
                "tripped": self.tripped,
                "updates": self.updates,
                "arms": self.arms,
                "features": list(self.spec.features),
                "arm_features": list(self.spec.arm_features),
                "type": self.spec.type,
            }
        )

    def restore(self, blob: bytes) -> bool:
        """Load learned state saved by :meth:`to_state` if it fits this spec; True if it did.

        A state whose arms, features or type differ, or holding a non-finite number, is
        ignored: the policy starts afresh rather than from something it cannot trust.
        """
        state = msgspec.msgpack.decode(blob)
        if (
            state["arms"],
            state["features"],
            state.get("arm_features", []),
            state["type"],
        ) != (self.arms, list(self.spec.features), list(self.spec.arm_features), self.spec.type):
            return False  # arms or features changed: the old model no longer applies
        policy = load_policy(state["policy"])
        counts = {k: [int(v[0]), float(v[1])] for k, v in state["counts"].items()}
        if not policy.finite() or not all(math.isfinite(v[1]) for v in counts.values()):
            return False
        self.policy = policy
        self.counts = counts
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
            policy.choices, policy.decisions = old.choices, old.decisions
            policy.timelines, policy._seq = old.timelines, old._seq
        elif POLICY_KEY + spec.name in stored:
            policy.restore(stored[POLICY_KEY + spec.name])
        served[spec.name] = policy
    return served


# ------------------------------------------------------------------ the config's policy rules


def check_policy_names(source: str, slots: Mapping[str, SlotDecl]) -> None:
    """A policy name identifies one learner (its state is saved under it): one rule each."""
    first: dict[str, str] = {}
    for slot_name, _, spec in policy_specs(slots):
        if spec.name in first:
            raise ConfigError(
                source,
                f"$.slots.{slot_name}.rules",
                f"policy name {spec.name!r} is already used by a rule of slot "
                f"{first[spec.name]!r}: give each policy rule its own name (or id)",
            )
        first[spec.name] = slot_name


def check_policy_rule(source: str, at: str, rule: RuleDecl, slot: SlotDecl) -> None:
    """Validate a slot's ``policy`` rule (at ``at``); :class:`ConfigError` names the path."""
    declared = ", ".join(slot.variants) or "none"
    data = dict(rule.policy or {})
    data.setdefault("name", rule.id or "policy")
    data.setdefault("arms", list(slot.variants))
    spec = convert(data, PolicySpec, at, source)
    if len(spec.arms) < 2:
        raise ConfigError(source, f"{at}.arms", "a policy needs at least two arms")
    for j, arm in enumerate(spec.arms):
        if arm not in slot.variants:
            raise ConfigError(
                source, f"{at}.arms[{j}]", f"variant {arm!r} is not declared (declared: {declared})"
            )
    if not 0.0 <= spec.min_default_share < 1.0:
        raise ConfigError(source, f"{at}.min_default_share", "must be at least 0 and below 1")
    if spec.min_default_share > 0 and slot.default not in spec.arms:
        raise ConfigError(
            source, f"{at}.min_default_share", f"the default {slot.default!r} is not an arm"
        )
    if not spec.clip > 0.0:
        raise ConfigError(source, f"{at}.clip", "must be a positive number")
    for j, path in enumerate(spec.arm_features):
        if "{arm}" not in path:
            raise ConfigError(
                source, f"{at}.arm_features[{j}]", "an arm feature names {arm} (e.g. x.{arm})"
            )
    try:
        ServedPolicy(spec, slot.default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, f"{at}.params", f"not accepted by {spec.type}: {exc}") from None
