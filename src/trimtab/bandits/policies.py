"""Contextual bandit policies sharing one tiny protocol: ``choose`` and ``update``.

Every policy scores the eligible arms from a dense float64 context vector ``x`` (length ``dim``)
and returns the chosen arm with its *true* probability under the policy's own randomisation,
so that every logged decision can later be evaluated off-policy. An exploration floor mixes in
the uniform distribution with weight ``uniform_mix``: each eligible arm is chosen with
probability at least ``uniform_mix / n_eligible`` and no logged propensity is ever 0.

Models are linear and learned incrementally: each arm keeps the inverse of its ridge design
matrix ``A_a = λI + Σ x xᵀ`` stacked as one ``(arms, d, d)`` array; an update is one
Sherman–Morrison rank-one correction of one arm, ``A⁻¹ ← A⁻¹ − (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x)``
(O(d²), no refit), and a decision scores all arms in a few batched matrix products.

With ``arm_features`` (an ``(arms, m)`` array) the model is *shared* instead of disjoint: one
parameter vector over ``φ(x, a) = [x, z_a]``, so arms with similar features share evidence.
With ``shared=True`` the context itself has one row per arm (an ``(arms, d)`` array, each row
``φ(x, a)`` built by the caller, e.g. "the reader's interest in the category this arm shows"),
and one parameter vector scores every row: what is learned on one arm transfers to the others.

>>> import numpy as np
>>> policy = LinUCB(n_arms=3, dim=2, alpha=1.0, seed=7)
>>> x = np.array([1.0, 0.5])
>>> arm, p = policy.choose(x)
>>> 0 <= arm < 3 and 0.0 < p <= 1.0
True
>>> policy.update(x, arm, 1.0, p)
>>> restored = load_policy(policy.to_state())
>>> restored.choose(x) == policy.choose(x)
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec
import numpy as np

Arms = Sequence[int] | np.ndarray | None


@runtime_checkable
class Policy(Protocol):
    """What the decision engine needs from a bandit policy."""

    def choose(self, context: np.ndarray, arms: Arms = None) -> tuple[int, float]:
        """Pick one of ``arms`` (default: all) and return it with its probability."""
        ...

    def update(self, context: np.ndarray, arm: int, reward: float, propensity: float) -> None:
        """Learn from the reward observed for ``arm`` shown in ``context``."""
        ...


class ContextEncoder:
    """Turn a dict of named features into a context vector in a fixed, declared order.

    Missing features take ``default``; booleans become 0/1; with ``bias`` a constant 1.0 is
    prepended so linear policies learn an intercept per arm.

    >>> enc = ContextEncoder(["scroll_depth", "is_mobile"], bias=True)
    >>> enc.encode({"is_mobile": True, "unrelated": 3}).tolist()
    [1.0, 0.0, 1.0]
    >>> enc.dim
    3
    """

    def __init__(self, names: Sequence[str], bias: bool = True, default: float = 0.0) -> None:
        self.names = tuple(names)
        self.bias = bias
        self.default = float(default)
        self._offset = 1 if bias else 0
        self.dim = len(self.names) + self._offset

    def encode(self, features: Mapping[str, Any]) -> np.ndarray:
        out = np.empty(self.dim)
        if self.bias:
            out[0] = 1.0
        get = features.get
        default = self.default
        offset = self._offset
        for i, name in enumerate(self.names):
            value = get(name, default)
            out[i + offset] = default if value is None else float(value)
        return out


class _LinearPolicy:
    """Ridge-regression state shared by the linear policies.

    Disjoint: ``A_inv`` is ``(K, d, d)``, ``b`` and ``theta`` are ``(K, d)``.
    Shared (``arm_features`` given): ``A_inv`` is ``(1, D, D)`` with ``D = d + m``.
    """

    kind: ClassVar[str] = ""
    # Whether ``prior_mean`` is on the logit scale (a prior rate enters as its logit).
    logit_prior: ClassVar[bool] = False

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        ridge: float = 1.0,
        uniform_mix: float = 0.01,
        arm_features: np.ndarray | None = None,
        shared: bool = False,
        prior_mean: np.ndarray | None = None,
        seed: int | None = None,
    ) -> None:
        if n_arms < 1 or dim < 1:
            raise ValueError("n_arms and dim must be positive")
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError("uniform_mix must be in [0, 1]")
        if not ridge > 0.0:
            raise ValueError("ridge must be positive")
        self.n_arms = int(n_arms)
        self.dim = int(dim)
        self.ridge = float(ridge)
        self.uniform_mix = float(uniform_mix)
        self.arm_features = None if arm_features is None else np.asarray(arm_features, float)
        if self.arm_features is not None and self.arm_features.shape[0] != n_arms:
            raise ValueError("arm_features must have one row per arm")
        if shared and self.arm_features is not None:
            raise ValueError("per-arm contexts (shared) and arm_features exclude each other")
        self.shared = bool(shared)
        self.disjoint = self.arm_features is None and not self.shared
        width = dim + (0 if self.arm_features is None else self.arm_features.shape[1])
        models = n_arms if self.disjoint else 1
        self.A_inv = np.tile(np.eye(width) / self.ridge, (models, 1, 1))
        self.b = np.zeros((models, width))
        self.theta = np.zeros((models, width))
        if prior_mean is not None:
            prior = np.asarray(prior_mean, float)
            if prior.shape != self.theta.shape or not np.isfinite(prior).all():
                raise ValueError(f"prior_mean must be a finite array of shape {self.theta.shape}")
            self.theta[:] = prior
            self.b[:] = self.ridge * prior  # θ = A⁻¹b holds for the ridge prior N(θ₀, I/λ)
        self.rng = np.random.default_rng(seed)
        self._all = np.arange(self.n_arms)
        self._chol: np.ndarray | None = None  # Cholesky factor of the shared A⁻¹, until it moves

    # -- features -------------------------------------------------------------------------
    def _phi(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Shared model: the ``(len(idx), D)`` matrix of ``[x, z_a]`` rows (or, with per-arm
        contexts, the context's own rows)."""
        if self.shared:
            picked: np.ndarray = x[idx]
            return picked
        assert self.arm_features is not None
        z = self.arm_features[idx]
        return np.concatenate([np.broadcast_to(x, (len(idx), x.shape[0])), z], axis=1)

    def _mean_var(self, x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean ``θ_aᵀx`` and the quadratic form ``xᵀA_a⁻¹x`` for each eligible arm."""
        if self.disjoint:
            if len(idx) == self.n_arms:
                A_inv, theta = self.A_inv, self.theta
            else:
                A_inv, theta = self.A_inv[idx], self.theta[idx]
            Ax = A_inv @ x  # (k, d)
            return theta @ x, Ax @ x
        phi = self._phi(x, idx)
        return phi @ self.theta[0], ((phi @ self.A_inv[0]) * phi).sum(axis=1)

    def _rank_one(self, model: int, phi: np.ndarray, weight: float, target: float) -> None:
        """``A += w φφᵀ`` (Sherman–Morrison on the inverse) and ``b += target φ``."""
        A_inv = self.A_inv[model]
        Ap = A_inv @ phi
        A_inv -= np.outer(Ap, Ap) * (weight / (1.0 + weight * (phi @ Ap)))
        self.b[model] += target * phi
        self.theta[model] = A_inv @ self.b[model]
        self._chol = None

    def update(self, context: np.ndarray, arm: int, reward: float, propensity: float) -> None:
        """Ridge update of the chosen arm. ``propensity`` is accepted for the protocol only:
        these are on-policy learners and do not reweight what they observe."""
        if self.disjoint:
            self._rank_one(arm, context, 1.0, float(reward))
        else:
            phi = self._phi(context, np.array([arm]))[0]
            self._rank_one(0, phi, 1.0, float(reward))

    # -- choosing (each policy's own) ---------------------------------------------------------
    def choose(self, context: np.ndarray, arms: Arms = None) -> tuple[int, float]:
        """Pick one of ``arms`` (default: all) and return it with its exact probability."""
        raise NotImplementedError

    def probabilities(self, context: np.ndarray, arms: Arms = None) -> np.ndarray:
        """The action distribution over the eligible arms (exact, or Monte-Carlo for the
        samplers)."""
        raise NotImplementedError

    def expected(self, context: np.ndarray, arms: Arms = None) -> np.ndarray:
        """The posterior-mean score of each eligible arm: what the policy believes now,
        without exploration (the arm it would exploit is the argmax)."""
        return self._mean_var(context, self._eligible(arms))[0]

    # -- safety -----------------------------------------------------------------------------
    def finite(self) -> bool:
        """Whether every learned number is finite (nothing else may be saved or used)."""
        return bool(
            np.isfinite(self.A_inv).all() and np.isfinite(self.b).all()
            and np.isfinite(self.theta).all()
        )  # fmt: skip

    def snapshot(self, arm: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """A copy of the model an update of ``arm`` touches, for :meth:`rollback`."""
        model = arm if self.disjoint else 0
        return model, self.A_inv[model].copy(), self.b[model].copy(), self.theta[model].copy()

    def rollback(self, saved: tuple[int, np.ndarray, np.ndarray, np.ndarray]) -> None:
        model, A_inv, b, theta = saved
        self.A_inv[model], self.b[model], self.theta[model] = A_inv, b, theta
        self._chol = None

    # -- randomisation ----------------------------------------------------------------------
    def _eligible(self, arms: Arms) -> np.ndarray:
        return self._all if arms is None else np.asarray(arms, dtype=np.intp)

    def _greedy_with_floor(
        self, idx: np.ndarray, scores: np.ndarray, gamma: float
    ) -> tuple[int, float]:
        """Argmax (ties broken uniformly) mixed with the uniform distribution, weight ``gamma``."""
        k = len(idx)
        best = np.flatnonzero(scores == scores.max())
        if gamma > 0.0 and self.rng.random() < gamma:
            pick = int(self.rng.integers(k))
        else:
            pick = int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])
        p = gamma / k + ((1.0 - gamma) / len(best) if pick in best else 0.0)
        return int(idx[pick]), float(p)

    def _greedy_probabilities(self, scores: np.ndarray, eps: float) -> np.ndarray:
        k = len(scores)
        best = scores == scores.max()
        shares: np.ndarray = eps / k + (1.0 - eps) * best / best.sum()
        return shares

    # -- persistence ------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "n_arms": self.n_arms,
            "dim": self.dim,
            "ridge": self.ridge,
            "uniform_mix": self.uniform_mix,
            "shared": self.shared,
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"A_inv": self.A_inv, "b": self.b, "theta": self.theta}
        if self.arm_features is not None:
            out["arm_features"] = self.arm_features
        return out

    def to_state(self) -> bytes:
        """Serialise configuration, learned arrays and the RNG state (msgpack)."""
        state = {
            "kind": self.kind,
            "config": self._config(),
            "arrays": {
                k: [list(v.shape), v.astype(np.float64).tobytes()]
                for k, v in self._arrays().items()
            },
            # PCG64 state holds 128-bit integers, beyond msgpack's range: keep them as JSON.
            "rng": json.dumps(self.rng.bit_generator.state),
        }
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, data: bytes) -> _LinearPolicy:
        """Rebuild a policy saved by :meth:`to_state` (same arms, weights and RNG stream)."""
        state = msgspec.msgpack.decode(data)
        klass = POLICIES[state["kind"]]
        if cls is not _LinearPolicy and klass is not cls:
            raise ValueError(f"state is a {state['kind']}, not a {cls.kind}")
        arrays = {
            k: np.frombuffer(raw, dtype=np.float64).reshape(shape).copy()
            for k, (shape, raw) in state["arrays"].items()
        }
        policy = klass(**state["config"], arm_features=arrays.get("arm_features"))
        policy.A_inv, policy.b, policy.theta = arrays["A_inv"], arrays["b"], arrays["theta"]
        policy.rng.bit_generator.state = json.loads(state["rng"])
        return policy


class EpsilonGreedy(_LinearPolicy):
    """Greedy on per-arm ridge regression, exploring uniformly with probability ``epsilon``.

    ``P(a) = ε/k + (1-ε)·1[a ∈ argmax]/|argmax|``; the propensity returned is exactly this.
    """

    kind = "epsilon_greedy"

    def __init__(self, n_arms: int, dim: int, epsilon: float = 0.05, **kwargs: Any) -> None:
        super().__init__(n_arms, dim, **kwargs)
        self.epsilon = float(epsilon)
        self._eps = max(self.epsilon, self.uniform_mix)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "epsilon": self.epsilon}

    def choose(self, context: np.ndarray, arms: Arms = None) -> tuple[int, float]:
        idx = self._eligible(arms)
        mean, _ = self._mean_var(context, idx)
        return self._greedy_with_floor(idx, mean, self._eps)

    def probabilities(self, context: np.ndarray, arms: Arms = None) -> np.ndarray:
        """The exact action distribution over the eligible arms."""
        idx = self._eligible(arms)
        return self._greedy_probabilities(self._mean_var(context, idx)[0], self._eps)


class LinUCB(_LinearPolicy):
    """LinUCB (Li et al. 2010): ``argmax_a θ_aᵀx + α·sqrt(xᵀA_a⁻¹x)``, with a uniform floor.

    Deterministic apart from ties and the floor, so the propensity is
    ``γ/k + (1-γ)·1[a ∈ argmax]/|argmax|`` with ``γ = uniform_mix``.
    """

    kind = "linucb"

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(n_arms, dim, **kwargs)
        self.alpha = float(alpha)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "alpha": self.alpha}

    def _ucb(self, context: np.ndarray, idx: np.ndarray) -> np.ndarray:
        mean, var = self._mean_var(context, idx)
        bound: np.ndarray = mean + self.alpha * np.sqrt(np.maximum(var, 0.0))
        return bound

    def choose(self, context: np.ndarray, arms: Arms = None) -> tuple[int, float]:
        idx = self._eligible(arms)
        return self._greedy_with_floor(idx, self._ucb(context, idx), self.uniform_mix)

    def probabilities(self, context: np.ndarray, arms: Arms = None) -> np.ndarray:
        """The exact action distribution over the eligible arms."""
        idx = self._eligible(arms)
        return self._greedy_probabilities(self._ucb(context, idx), self.uniform_mix)


class _Thompson(_LinearPolicy):
    """Thompson sampling with a propensity that is exact for the policy's own randomisation.

    A decision draws ``n_draws`` posterior samples of every eligible arm's score, then plays
    the argmax of one of those draws picked uniformly (or, with probability ``γ``, a uniform
    arm). Given the draws, the probability of arm ``a`` is therefore exactly
    ``γ/k + (1-γ)·#{draws won by a}/n_draws``: that is the propensity returned. Conditioning on
    the policy's internal draws keeps IPS unbiased since they are independent of the reward.
    As ``n_draws`` grows this tends to the ordinary Thompson-sampling probability.
    """

    def __init__(
        self, n_arms: int, dim: int, scale: float = 1.0, n_draws: int = 32, **kwargs: Any
    ) -> None:
        super().__init__(n_arms, dim, **kwargs)
        self.scale = float(scale)
        self.n_draws = int(n_draws)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "scale": self.scale, "n_draws": self.n_draws}

    def _winners(self, context: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Index (into ``idx``) of the winning arm of each of the ``n_draws`` posterior draws."""
        k = len(idx)
        if self.disjoint:
            # Disjoint arms have independent posteriors: sample the score θ_aᵀx directly,
            # N(mean_a, scale²·xᵀA_a⁻¹x), instead of whole parameter vectors.
            mean, var = self._mean_var(context, idx)
            sd = self.scale * np.sqrt(np.maximum(var, 0.0))
            draws = mean + sd * self.rng.standard_normal((self.n_draws, k))
        else:
            phi = self._phi(context, idx)
            if self._chol is None:
                self._chol = np.linalg.cholesky(self.A_inv[0] + 1e-12 * np.eye(phi.shape[1]))
            chol = self._chol
            z = self.rng.standard_normal((phi.shape[1], self.n_draws))
            thetas = self.theta[0][:, None] + self.scale * (chol @ z)  # (D, n_draws)
            draws = (phi @ thetas).T
        winners: np.ndarray = draws.argmax(axis=1)
        return winners

    def choose(self, context: np.ndarray, arms: Arms = None) -> tuple[int, float]:
        idx = self._eligible(arms)
        k = len(idx)
        wins = np.bincount(self._winners(context, idx), minlength=k)
        gamma = self.uniform_mix
        rng = self.rng
        if gamma > 0.0 and rng.random() < gamma:
            pick = int(rng.integers(k))
        else:
            # Playing a uniformly chosen draw's winner == sampling arms ∝ their win counts.
            pick = int(np.searchsorted(np.cumsum(wins), rng.integers(self.n_draws), side="right"))
        return int(idx[pick]), float(gamma / k + (1.0 - gamma) * wins[pick] / self.n_draws)

    def probabilities(self, context: np.ndarray, arms: Arms = None) -> np.ndarray:
        """A fresh Monte Carlo estimate (``n_draws`` draws) of the action distribution."""
        idx = self._eligible(arms)
        k = len(idx)
        wins = np.bincount(self._winners(context, idx), minlength=k)
        return self.uniform_mix / k + (1.0 - self.uniform_mix) * wins / self.n_draws


class LinearThompson(_Thompson):
    """Linear Gaussian Thompson sampling (Agrawal & Goyal 2013).

    Posterior per arm ``θ_a ~ N(A_a⁻¹b_a, v²A_a⁻¹)`` with ``v = scale``; see :class:`_Thompson`
    for how the propensity is made exact.
    """

    kind = "linear_thompson"


class LogisticThompson(_Thompson):
    """Thompson sampling for Bernoulli rewards with an online Laplace approximation.

    Each arm keeps a Gaussian ``N(m_a, S_a)`` over the logistic weights. On ``(x, r)`` with
    ``p = σ(m_aᵀx)`` the Hessian of the log-likelihood gains ``p(1-p)xxᵀ``, so
    ``S_a ← (S_a⁻¹ + p(1-p)xxᵀ)⁻¹`` by Sherman–Morrison, then one Newton step
    ``m_a ← m_a + S_a x (r − p)``. Starting from the prior ``N(0, I/ridge)`` this is the
    incremental Laplace approximation (no refit per event). Scores ``m_aᵀx`` are sampled as in
    :class:`LinearThompson`; σ is monotone so the argmax is the same in probability space.
    """

    kind = "logistic_thompson"
    logit_prior: ClassVar[bool] = True

    def update(self, context: np.ndarray, arm: int, reward: float, propensity: float) -> None:
        if self.disjoint:
            model, phi = arm, context
        else:
            model, phi = 0, self._phi(context, np.array([arm]))[0]
        m = self.theta[model]
        p = 1.0 / (1.0 + np.exp(-float(phi @ m)))
        weight = max(p * (1.0 - p), 1e-6)
        S = self.A_inv[model]
        Sp = S @ phi
        S -= np.outer(Sp, Sp) * (weight / (1.0 + weight * (phi @ Sp)))
        m += (S @ phi) * (float(reward) - p)
        self._chol = None
        self.b[model] += float(reward) * phi  # kept for inspection only

    def predict_proba(self, context: np.ndarray, arms: Arms = None) -> np.ndarray:
        """Posterior-mean click probability ``σ(m_aᵀx)`` of each eligible arm."""
        mean, _ = self._mean_var(context, self._eligible(arms))
        proba: np.ndarray = 1.0 / (1.0 + np.exp(-mean))
        return proba


# The one registry of policy types: a config's ``policy.type`` names one of these (validated
# against this table) and saved states name theirs. A new policy is a subclass added here.
POLICIES: dict[str, type[_LinearPolicy]] = {
    k.kind: k for k in (EpsilonGreedy, LinUCB, LinearThompson, LogisticThompson)
}


def load_policy(data: bytes) -> _LinearPolicy:
    """Rebuild any policy of this module from :meth:`to_state` bytes."""
    return _LinearPolicy.from_state(data)
