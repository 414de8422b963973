"""Simulator events are valid trimtab events reflecting latent interests; SlotEnv is a Gym env."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from trimtab.bandits.policies import LinUCB, LogisticThompson
from trimtab.events import Hover, decode_batch, encode
from trimtab.sim import Simulator, behaviour_features
from trimtab.sim.env import SlotEnv


def test_sessions_are_valid_events_in_time_order() -> None:
    sim = Simulator(seed=1, n_users=20)
    seen: set[str] = set()
    kinds: set[str] = set()
    for session in sim.sessions(30):
        decoded = decode_batch(encode(session))
        assert decoded.errors == []
        assert len(decoded.events) == len(session)
        assert len({e.user_id for e in session}) == 1
        assert len({e.session_id for e in session}) == 1
        ts = [e.ts for e in session]
        assert ts == sorted(ts)
        ids = {e.event_id for e in session}
        assert len(ids) == len(session) and not ids & seen
        seen |= ids
        kinds |= {e.__struct_config__.tag for e in session}
    assert {"context", "page_view", "scroll", "visible", "hover"} <= kinds


def test_same_seed_same_stream() -> None:
    first = [encode(s) for s in Simulator(seed=4, n_users=5).sessions(5)]
    second = [encode(s) for s in Simulator(seed=4, n_users=5).sessions(5)]
    third = [encode(s) for s in Simulator(seed=5, n_users=5).sessions(5)]
    assert first == second
    assert first != third


def test_hover_behaviour_reveals_the_top_interest() -> None:
    sim = Simulator(seed=2, n_users=60)
    hits = 0
    for visitor in sim.users:
        events = [e for _ in range(4) for e in sim.session(visitor, pages=3)]
        dwell = behaviour_features(events, sim.categories)[: len(sim.categories)]
        assert all(isinstance(e.user_id, str) for e in events if isinstance(e, Hover))
        hits += int(np.argmax(dwell) == np.argmax(visitor.interests))
    assert hits / len(sim.users) > 0.6  # chance would be 1/6


def test_click_model_prefers_the_favourite_category() -> None:
    sim = Simulator(seed=3, n_users=40)
    for visitor in sim.users:
        probs = [sim.click_probability(visitor, k) for k in range(len(sim.categories))]
        assert min(probs) > 0.0
        assert max(probs) <= 1.0
        assert int(np.argmax(probs)) == int(np.argmax(visitor.interests))


def test_respond_emits_exposure_and_click_events() -> None:
    sim = Simulator(seed=6, n_users=3)
    visitor = sim.users[0]
    favourite = int(np.argmax(visitor.interests))
    outcomes = [sim.respond(visitor, "s-x", "hero", "v1", favourite) for _ in range(300)]
    clicks = sum(clicked for clicked, _ in outcomes)
    assert 0 < clicks < 300
    for clicked, events in outcomes:
        tags = [e.__struct_config__.tag for e in events]
        assert tags == (["exposure", "click"] if clicked else ["exposure"])
    assert clicks / 300 == pytest.approx(sim.click_probability(visitor, favourite), abs=0.07)


def test_slot_env_passes_gymnasium_checker() -> None:
    check_env(SlotEnv(seed=0, n_users=30), skip_render_check=True)


def test_slot_env_rejects_steps_without_reset() -> None:
    env = SlotEnv(seed=0, n_users=5)
    with pytest.raises(RuntimeError):
        env.step(0)


@pytest.mark.parametrize("cls", [LinUCB, LogisticThompson], ids=["LinUCB", "LogisticThompson"])
def test_bandit_beats_uniform_random_on_the_env(cls: type) -> None:
    env = SlotEnv(seed=7, n_users=300)
    n_arms = int(env.action_space.n)
    dim = env.observation_space.shape[0] + 1
    policy = cls(n_arms, dim, seed=8, **({"alpha": 0.3} if cls is LinUCB else {}))
    policy_value, uniform_value, best_value = 0.0, 0.0, 0.0
    obs, _ = env.reset(seed=10)
    episodes = 2500
    for _ in range(episodes):
        x = np.concatenate([[1.0], obs])
        arm, propensity = policy.choose(x)
        _, reward, terminated, _, info = env.step(arm)
        assert terminated
        policy.update(x, arm, reward, propensity)
        policy_value += info["click_probability"]
        best_value += info["best_click_probability"]
        uniform_value += info["mean_click_probability"]  # uniform random, same visitor
        obs, _ = env.reset()
    assert policy_value > 1.2 * uniform_value
    assert policy_value < best_value
