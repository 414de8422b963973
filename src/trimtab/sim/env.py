"""A Gymnasium environment: one slot decision per episode for a simulated visitor.

``reset`` draws a visitor and simulates a short browsing session; the observation is
:func:`~trimtab.sim.simulator.behaviour_features` of that session (what the live feature
processor would see, not the latent interests). ``step(action)`` shows variant ``action`` —
variant ``i`` promotes category ``variant_categories[i]`` — and the reward is the click (0/1).
Episodes end after the one decision: the environment is a contextual bandit, so any policy
(or an RL agent) can be trained and compared offline on it.

>>> env = SlotEnv(seed=3, n_users=50)
>>> obs, info = env.reset(seed=3)
>>> obs.shape == env.observation_space.shape
True
>>> _, reward, terminated, truncated, info = env.step(0)
>>> terminated, reward in (0.0, 1.0), 0.0 < info["click_probability"] <= 1.0
(True, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trimtab.extras import missing

try:
    import gymnasium as gym
    from gymnasium import spaces
except ModuleNotFoundError as exc:
    raise missing(exc, "sim", "the simulator's Gymnasium environment") from None

from trimtab.sim.simulator import DEFAULT_CATEGORIES, Simulator, Visitor, behaviour_features


class SlotEnv(gym.Env[np.ndarray, np.int64]):
    """Choose the variant of one page slot for a visitor described by their behaviour."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        seed: int = 0,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
        n_users: int = 500,
        variant_categories: Sequence[int] | None = None,
        pages: int = 2,
    ) -> None:
        self.categories = tuple(categories)
        self.n_users = n_users
        self.pages = pages
        self.variant_categories = tuple(
            range(len(self.categories)) if variant_categories is None else variant_categories
        )
        self._population_seed = seed
        self.simulator = Simulator(seed=seed, categories=self.categories, n_users=n_users)
        k = len(self.categories)
        self._observation_size = 3 * k + 2
        self.observation_space = spaces.Box(
            0.0, 1.0, shape=(self._observation_size,), dtype=np.float64
        )
        self.action_space = spaces.Discrete(len(self.variant_categories))
        self._visitor: Visitor | None = None
        self._session_id = ""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # The population is fixed by the constructor's seed; episodes draw from self.np_random.
        self.simulator.rng = self.np_random
        if seed is not None:
            self.simulator.rewind()  # a seeded episode is fully reproducible, ids and times too
        visitor = self.simulator.pick_user()
        events = self.simulator.session(visitor, pages=self.pages)
        self._visitor = visitor
        self._session_id = events[0].session_id
        obs = behaviour_features(events, self.categories)
        return obs, {"user_id": visitor.user_id, "events": events}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._visitor is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"invalid action {action!r}")
        visitor = self._visitor
        category = self.variant_categories[int(action)]
        clicked, events = self.simulator.respond(
            visitor, self._session_id, "hero", f"v{int(action)}", category
        )
        probabilities = [
            self.simulator.click_probability(visitor, c) for c in self.variant_categories
        ]
        info: dict[str, Any] = {
            "click_probability": probabilities[int(action)],
            "best_click_probability": max(probabilities),
            "mean_click_probability": float(np.mean(probabilities)),
            "events": events,
        }
        self._visitor = None
        obs = np.zeros(self._observation_size, dtype=np.float64)
        return obs, float(clicked), True, False, info
