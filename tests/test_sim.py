"""Simulator events are valid trimtab events reflecting latent interests; SlotEnv is a Gym env."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

from trimtab import patterns
from trimtab.bandits.policies import LinUCB, LogisticThompson
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.cli import app
from trimtab.config import load_config
from trimtab.events import Hover, PageView, Scroll, decode_batch, encode
from trimtab.experiments.report import analyze
from trimtab.experiments.spec import experiments_of
from trimtab.runtime import Runtime
from trimtab.sim import Simulator, behaviour_features, summary
from trimtab.sim.drive import REFERENCE_START_MS, Shown, SimulationResult, run_starts, simulate
from trimtab.sim.env import SlotEnv

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


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


# -- driving the demo config: every metric has data, the bandit is measured fairly ----------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """1,500 sessions of the demo through the real runtime (the logs stay for the checks)."""
    where = tmp_path_factory.mktemp("demo-sim")
    runtime = Runtime(load_config(DEMO), where)
    result = simulate(runtime, sessions=1500, seed=3, users=900, every=500)
    runtime.close()
    return where, result


def test_every_event_kind_the_demo_metrics_use_is_generated(demo_run):
    where, _ = demo_run
    config = load_config(DEMO)
    declared = experiments_of(config)
    log = SqliteEventLog(where / "events.sqlite")
    events = list(log.iter_all())
    log.close_sync()
    for name, metric in declared.metrics.items():
        if metric.type == "ratio":
            continue  # made of two other metrics
        for pattern in metric.patterns:
            matches = patterns.matcher(pattern)
            assert any(matches(e) for e in events), (name, pattern)
    # image hovers long enough to open the review box (the image-dwell rule's 3 s)
    images = [e for e in events if type(e) is Hover and e.element_kind == "image"]
    assert images and any(e.dwell_ms > 3000 for e in images)
    # every page's events carry its page view id, one per page view
    views = [e for e in events if type(e) is PageView]
    assert len({e.page_view_id for e in views}) == len(views)
    assert all(e.page_view_id for e in events if type(e) in (Scroll, Hover))


def test_every_metric_of_the_demo_experiment_has_data(demo_run):
    where, _ = demo_run
    report = analyze(load_config(DEMO), "hero-copy-test", where)
    assert report.integrity.orphan_exposures == 0
    assert report.srm.ok and report.multi_arm_users == 0
    for metric in report.metrics:
        for variant in metric.comparison.variants:
            assert variant.n > 100, metric.name
            assert variant.mean > 0, metric.name  # someone did it in every arm
        assert "no data" not in metric.verdicts, metric.name


def test_the_bandit_and_the_rules_serve_the_same_kind_of_readers(demo_run):
    _, result = demo_run
    groups = {s.group for s in result.shown}
    assert {"policy", "rules", "default"} <= groups
    rates = summary.group_rates([result])
    # coverage 0.5 by hash: the bandit's decisions (with its control share) are about half
    served = rates["policy"].decisions + rates["default"].decisions
    assert 0.4 < served / (served + rates["rules"].decisions) < 0.6
    # its control share shows the default, 10 % of its decisions
    assert 0.06 < rates["default"].decisions / served < 0.14
    assert all(s.variant == "popular" for s in result.shown if s.group == "default")
    # readers are split by hash, not by what they read: each side sees every kind of reader
    for group in ("policy", "rules"):
        readers = Counter(s.reader for s in result.shown if s.group == group)
        assert len(readers) == 6 and min(readers.values()) > 0.08 * sum(readers.values())


def test_summaries_over_runs_use_the_spread_between_seeds():
    def run(seed: int, policy: int, rules: int) -> SimulationResult:
        shown = [Shown(1, "policy", "sport", "sport", i < policy, 0.1) for i in range(1000)]
        shown += [Shown(1, "rules", "sport", "sport", i < rules, 0.1) for i in range(1000)]
        shown += [Shown(1, "default", "sport", "popular", i < 50, 0.05) for i in range(1000)]
        return SimulationResult("rail", "p", sessions=10, seed=seed, shown=shown)

    runs = [run(0, 120, 100), run(1, 130, 104), run(2, 125, 98)]
    rates = summary.group_rates(runs)
    assert rates["policy"].mean == pytest.approx(0.125)
    assert rates["policy"].lower < 0.125 < rates["policy"].upper
    difference, ratio = summary.verdicts(runs)
    assert difference.holds and difference.estimate == pytest.approx(0.125 - 0.1007, abs=1e-4)
    assert ratio.holds and ratio.estimate == pytest.approx(2.5)
    expected = summary.group_rates(runs, expected=True)  # p_click 0.1 / 0.1 / 0.05 above
    assert expected["policy"].mean == pytest.approx(0.1) and expected["default"].clicks == 150
    assert summary.verdicts(runs, expected=True)[1].estimate == pytest.approx(2.0)
    worse = summary.verdicts([run(0, 90, 100), run(1, 95, 104), run(2, 92, 98)])
    assert not worse[0].holds
    assert summary.wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_simulate_command_prints_the_comparison(tmp_path):
    args = ["simulate", "--sessions", "300", "--users", "200", "--seeds", "2"]
    args += ["--data-dir", str(tmp_path), "--plot", str(tmp_path / "arms.png")]
    result = CliRunner(env={"COLUMNS": "160"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bandit vs rules on the same readers" in result.output
    assert "hand rules" in result.output and "95 % CI (seeds)" in result.output
    assert "bandit − rules" in result.output and "bandit / default" in result.output
    assert "what the bandit shows each kind of reader" in result.output
    assert (tmp_path / "seed-0" / "events.sqlite").exists()
    assert (tmp_path / "seed-1" / "events.sqlite").exists()


def test_a_simulation_is_the_same_at_any_wall_clock_time(tmp_path, monkeypatch):
    """Outcomes depend on the simulated start, never on when the simulation is run or how
    often it is snapshotted."""
    outcomes = []
    for k, wall in enumerate((1.80e9, 1.80e9 + 13.5 * 3600)):  # two times of day
        monkeypatch.setattr(time, "time", lambda wall=wall: wall)
        runtime = Runtime(load_config(DEMO), tmp_path / str(k))
        run = simulate(runtime, sessions=150, seed=2, users=80, every=150)
        runtime.close()
        outcomes.append([(s.group, s.variant, s.clicked) for s in run.shown])
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) > 150
    # nor on how often it is looked at: snapshots leave the bandit's random draws alone
    runtime = Runtime(load_config(DEMO), tmp_path / "watched")
    watched = simulate(runtime, sessions=150, seed=2, users=80, every=10)
    runtime.close()
    assert len(watched.snapshots) == 15
    assert [(s.group, s.variant, s.clicked) for s in watched.shown] == outcomes[0]
    late = Runtime(load_config(DEMO), tmp_path / "late")
    evening = simulate(late, sessions=150, seed=2, users=80, every=150,
                       start_ms=REFERENCE_START_MS + 21.5 * 3_600_000)  # fmt: skip
    late.close()
    # 21:30 UTC is late evening for most simulated readers: the time-of-day rule fires
    assert sum(s.group == "other" for s in evening.shown) > sum(
        g == "other" for g, _, _ in outcomes[0]
    )


def test_simulate_rejects_a_start_it_cannot_read(tmp_path):
    args = ["simulate", "--sessions", "10", "--users", "10", "--start", "25:00"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--start" in result.output and "HH:MM" in result.output


@pytest.mark.slow
def test_the_demo_bandit_earns_its_place_over_five_seeds_and_starts(tmp_path):
    """Issue 10: the bandit clicks at least as well as the hand rules on the same readers and
    at least 1.2 × the default, as a mean over five seeds (none of them the one it was set
    up on), and shows sport readers sport."""
    # The hour of day decides which time-of-day rules fire, so a start is part of a run: the
    # five runs start spread over the day (00:00, 04:48, 09:36, 14:24, 19:12 UTC of a fixed
    # date), the same at whatever time the test runs, and the mean holds across the day.
    runs = []
    for seed, start_ms in zip(range(1, 6), run_starts(5), strict=True):
        runtime = Runtime(load_config(DEMO), tmp_path / str(seed))
        runs.append(
            simulate(runtime, sessions=4000, seed=seed, users=2000, every=4000, start_ms=start_ms)
        )
        runtime.close()
    # what the bandit's picks were worth (the simulator's click probabilities): significant
    difference, ratio = summary.verdicts(runs, expected=True)
    assert difference.holds and difference.lower > 0, difference
    assert ratio.holds and ratio.lower >= 1.2, ratio
    # and the clicks the readers really made: at least as good, at least 1.2 × on average
    observed_difference, observed_ratio = summary.verdicts(runs)
    assert observed_difference.holds and observed_ratio.holds, (observed_difference, observed_ratio)
    shares = summary.arm_shares(runs)
    for reader, per in shares.items():
        assert max(per, key=per.__getitem__) == reader, (reader, per)
