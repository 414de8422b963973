"""One reward attribution for the live learner, `trimtab ope` and experiment metrics.

:func:`trimtab.attribution.attribute` is checked against a naive reference on random data
(Hypothesis), then one log made through the real runtime is credited by the three consumers —
the bandit learning live, off-policy evaluation reading the log, the experiment report — and
they must agree round for round.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab import attribution
from trimtab.attribution import Events, Reward, Rounds, attribute, exposure_rounds
from trimtab.bandits import logeval, serving
from trimtab.config import parse_config
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import Click, Custom, Exposure, Hover
from trimtab.experiments import metrics
from trimtab.experiments.report import analyze
from trimtab.experiments.spec import experiments_of, policy_rewards
from trimtab.runtime import Runtime


def test_rounds_windows_and_the_next_exposure():
    rounds = Rounds(user=np.array([0, 0, 1]), time=np.array([0.0, 10_000.0, 0.0]))
    events = Events(
        user=np.array([0, 0, 0, 1, 1, 1]),
        time=np.array([-1.0, 9_999.0, 10_000.0, 60_000.0, 60_001.0, 5.0]),
        value=np.array([1.0, 2.0, 4.0, 8.0, 16.0, math.inf]),
    )
    credited = attribute(rounds, events, window_s=60)
    # before the first round: nothing; 9.999 s: first round; at 10 s: the second round; user
    # 1: the window is inclusive (60 s counts, 60.001 s does not); an infinite amount counts
    # as an event but adds nothing
    assert credited.event_round.tolist() == [-1, 0, 1, 2, -1, 2]
    assert credited.count.tolist() == [1, 1, 2]
    assert credited.total.tolist() == [2.0, 4.0, 8.0]
    assert credited.maximum.tolist() == [2.0, 4.0, 8.0]
    assert credited.rewards(min_value=4.0).tolist() == [0.0, 1.0, 1.0]
    before = attribute(rounds, events, window_s=60, before=True)
    assert before.event_round.tolist() == [0, 1, -1, -1, -1, -1]


def test_events_received_together_keep_their_log_order():
    # exposure, click, second exposure, click: all stamped with one receive time
    rounds = Rounds(user=np.array([0, 0]), time=np.array([5.0, 5.0]), seq=np.array([1, 3]))
    events = Events(user=np.array([0, 0]), time=np.array([5.0, 5.0]), seq=np.array([2, 4]))
    assert attribute(rounds, events, window_s=1).event_round.tolist() == [0, 1]


def test_exposures_become_rounds_and_end_markers():
    users = np.array([0, 0, 0, 0, 0, 1])
    ids = np.array(["a", "a", "b", "a", "", "a"], dtype=object)
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 0.5])
    kept, rounds = exposure_rounds(users, ids, times)
    # "a" shown twice in a row is one round; "a" again after "b" only ends b's round
    assert kept.tolist() == [0, 5, 2, 3, 4]
    assert rounds.starts.tolist() == [True, False, True, False, True]


def _naive(r_user, r_time, r_start, e_user, e_time, e_value, window_s):
    """Per round, the credited events, by walking every event against every round."""
    out = [[] for _ in r_user]
    for eu, et, ev in zip(e_user, e_time, e_value, strict=True):
        best = None
        for i, (ru, rt) in enumerate(zip(r_user, r_time, strict=True)):
            if ru == eu and rt <= et and (best is None or rt >= r_time[best]):
                best = i  # ties: the later round in the given order (as seq says)
        if best is not None and r_start[best] and et - r_time[best] <= window_s * 1000:
            out[best].append(ev)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.booleans()), max_size=12),
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 60),
            st.sampled_from([1.0, 2.5, 0.0, math.nan, math.inf, -3.0]),
        ),
        max_size=30,
    ),
    st.sampled_from([None, 0.0, 5.0, 20.0]),
)
def test_attribute_matches_a_naive_reference(rounds, events, window_s):
    rounds = sorted(rounds, key=lambda r: r[1])
    r_user = [r[0] for r in rounds]
    r_time = [r[1] * 1000.0 for r in rounds]
    r_start = [r[2] for r in rounds]
    e_user = [e[0] for e in events]
    e_time = [e[1] * 1000.0 + 0.5 for e in events]  # never tied with a round
    e_value = [e[2] for e in events]
    credited = attribute(
        Rounds(np.array(r_user, np.int64), np.array(r_time), starts=np.array(r_start, bool)),
        Events(np.array(e_user, np.int64), np.array(e_time), value=np.array(e_value)),
        window_s,
    )
    expected = _naive(
        r_user, r_time, r_start, e_user, e_time, e_value, math.inf if window_s is None else window_s
    )
    for i, values in enumerate(expected):
        finite = [v for v in values if math.isfinite(v)]
        assert credited.count[i] == len(values)
        assert credited.total[i] == pytest.approx(sum(finite))
        assert credited.maximum[i] == (max(finite) if finite else 0.0)


def test_server_time_not_browser_time():
    spec = Reward(event="click:*", window_s=60)
    amount = attribution.reward_amount(spec, "rail")
    late = Click(
        event_id="c", user_id="u", session_id="s", ts=1.0e12, received=2.0e12, element="x",
        slot="rail",
    )  # fmt: skip
    assert attribution.event_time(late) == 2.0e12
    assert amount(late) == 1.0
    assert amount(Custom(event_id="p", user_id="u", session_id="s", ts=1, name="x")) is None


# -- the three consumers on one log --------------------------------------------------------------

SITE = {
    "slots": {
        "rail": {
            "default": "a",
            "variants": {"a": {}, "b": {}, "c": {}},
            "rules": [
                {"id": "rail-test", "key": "rail-test", "variations": ["a", "b"],
                 "coverage": 0.4, "hashVersion": 2},
                {"id": "p", "policy": {
                    "name": "p", "type": "epsilon_greedy", "arms": ["a", "b", "c"],
                    "features": [], "params": {"epsilon": 0.3},
                    "reward": {"event": "hover:*", "in_slot": True, "window_s": 60,
                               "min_value": 3000}}},
            ],
        }
    },
    "metrics": {"rail_reward": {"type": "reward", "policy": "p"}},
    "experiments": {"rail-test": {"metrics": ["rail_reward"]}},
}  # fmt: skip


def _one_log(where: Path, seed: int = 5) -> tuple[dict[str, float], set[str]]:
    """Users see the rail once or twice and hover it (or another slot) now and then; the
    learner learns live. Returns its (decision id -> reward) and the users with two pages."""
    config = parse_config(SITE, "site.yaml")
    runtime = Runtime(config, where)
    learner = runtime.policies["p"]
    learned: dict[str, float] = {}
    learner.on_update = lambda decision_id, reward: learned.__setitem__(decision_id, reward)
    rnd = random.Random(seed)
    now = time.time() * 1000.0
    twice: set[str] = set()
    n = 0

    def event(kind, user, at, **fields):
        nonlocal n
        n += 1
        return kind(
            event_id=f"e{n}", user_id=user, session_id="s", ts=at + rnd.uniform(-9e5, 9e5),
            received=at, **fields,
        )  # fmt: skip

    for i in range(400):
        user, t = f"user-{i}", now + i * 1000.0
        pages = 2 if rnd.random() < 0.3 else 1
        for page in range(pages):
            (d,) = runtime.engine.decide(user, "s", ["rail"], {"page": f"/{page}"})
            batch = [event(Exposure, user, t, slot="rail", variant=d.variant,
                           decision_id=d.decision_id)]  # fmt: skip
            for _ in range(rnd.randrange(4)):
                dt = rnd.choice([-5_000, 2_000, 30_000, 59_000, 75_000, 200_000])
                slot = rnd.choice(["rail", "rail", "hero"])
                dwell = rnd.choice([1000.0, 2000.0, 3500.0])
                batch.append(event(Hover, user, t + dt, element="card", slot=slot, dwell_ms=dwell))
            runtime.ingest(sorted(batch, key=lambda e: e.received))
            if page == 0 and pages == 2:
                twice.add(user)
                t += rnd.choice([20_000.0, 120_000.0])
        runtime.learn(now_ms=t - 61_000)  # windows close while the log goes on
    runtime.learn(now_ms=now + 10**8)
    runtime.close()
    return learned, twice


def test_learner_ope_and_experiment_metrics_agree_on_one_log(tmp_path):
    # one function, imported by all three
    assert serving.attribute is logeval.attribute is metrics.attribute is attribution.attribute
    learned, twice = _one_log(tmp_path)
    config = parse_config(SITE, "site.yaml")
    reward = policy_rewards(config)["p"][1]
    rounds = logeval.load_rounds(tmp_path, "rail", reward)
    ope = {r.decision_id: r.reward for r in rounds}
    log = SqliteDecisionLog(tmp_path / "decisions.sqlite")
    by_policy = {d.decision_id for d in log.iter_all() if d.rule_id == "p"} & set(ope)
    log.close_sync()
    # the learner learned from exactly the policy's exposed decisions, with OPE's rewards
    assert len(learned) > 150 and set(learned) == by_policy
    assert {d: ope[d] for d in learned} == learned
    assert 0 < sum(learned.values()) < len(learned)  # both outcomes occur
    # the experiment's reward metric: each user's first round, credited the same way
    spec = experiments_of(config).experiments["rail-test"]
    patterns: list[str] = []
    _, (part,) = metrics.metric_parts(
        "rail_reward", experiments_of(config).metrics, patterns, policy_rewards(config)
    )
    data = metrics.load(tmp_path, spec, patterns, part.fields(), arms=2)
    values = metrics.UnitValues(data, [part])
    per_user = dict(zip(values.users(), values.column(part, post=True), strict=True))
    first_round = {}
    for r in rounds:
        first_round.setdefault(r.user_id, r)
    single = [u for u in per_user if u not in twice]
    assert len(single) > 80
    for user in single:
        assert per_user[user] == first_round[user].reward, user
    # and the report's arm means are those per-user values
    report = analyze(config, "rail-test", tmp_path)
    metric = report.metrics[0]
    for arm in metric.comparison.variants:
        users = [u for u in per_user if first_round[u].variant == report.arms[arm.index].name]
        assert arm.n == len(users)
        assert arm.mean == pytest.approx(np.mean([per_user[u] for u in users]))


def test_one_round_per_user_takes_a_shortcut_with_the_same_result():
    """An experiment's rounds (one per user, numbered by user) are placed without a search;
    numbered otherwise, the same data go the general way: the credit must be identical."""
    rng = np.random.default_rng(8)
    n, m = 300, 3000
    r_time = rng.uniform(0, 1e6, n)
    e_user = rng.integers(0, n, m)
    e_time = rng.uniform(0, 1e6, m)
    e_time[:50] = r_time[e_user[:50]]  # exact ties with the round
    e_seq = rng.integers(0, 10, m)
    values = rng.uniform(0, 10, m)
    shortcut = attribute(
        Rounds(np.arange(n), r_time, np.full(n, 5)), Events(e_user, e_time, e_seq, values), 1e3
    )
    shuffled = rng.permutation(n)  # user u is now called shuffled[u]
    general = attribute(
        Rounds(shuffled, r_time, np.full(n, 5)),
        Events(shuffled[e_user], e_time, e_seq, values),
        1e3,
    )
    assert shortcut.count.tolist() == general.count.tolist()
    assert np.allclose(shortcut.total, general.total)
    for before in (True, False):
        a = attribute(
            Rounds(np.arange(n), r_time, np.full(n, 5)),
            Events(e_user, e_time, e_seq, values),
            200.0,
            before=before,
        )
        b = attribute(
            Rounds(shuffled, r_time, np.full(n, 5)),
            Events(shuffled[e_user], e_time, e_seq, values),
            200.0,
            before=before,
        )
        assert a.event_round.tolist() == b.event_round.tolist()
