"""Experiment metrics from logged data: known effects are found, SRM and double exposure caught.

Data are written by :func:`trimtab_bench.stats.synthesize` with known rates; a second set of
tests checks the DuckDB per-user values against a plain-Python computation over the same events,
using the feature module's pattern matcher as the reference.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import parse_config
from trimtab.decide import Decision
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import Click, Custom, Exposure, Hover, Scroll
from trimtab.experiments.metrics import DECISIONS_FILE, EVENTS_FILE
from trimtab.experiments.report import analyze
from trimtab.patterns import matcher
from trimtab_bench.stats import BENCH_CONFIG, synthesize


def config_with(**experiment) -> object:
    data = copy.deepcopy(BENCH_CONFIG)
    data["experiments"]["hero-copy-test"].update(experiment)
    return parse_config(data, "<test>")


@pytest.fixture(scope="module")
def known_effect(tmp_path_factory) -> Path:
    """4,000 users per arm; B converts at 12 % vs A 8 %; B hovers 30 % more; 7 double-exposed."""
    where = tmp_path_factory.mktemp("known")
    synthesize(
        where,
        users_per_arm=(4000, 4000),
        conversion=(0.08, 0.12),
        activity_lift=(0.0, 0.3),
        activity_mean=4.0,  # activity varies a lot between users: pre and post correlate
        both_arms=7,
        seed=11,
    )
    return where


def _metric(report, name):
    return next(m for m in report.metrics if m.name == name)


def test_a_known_conversion_lift_is_found_with_the_right_sign(known_effect):
    report = analyze(config_with(cuped=False), "hero-copy-test", known_effect)
    metric = _metric(report, "cta_click")
    a, b = metric.comparison.variants
    assert (a.n, b.n) == (4000, 4000)
    assert b.relative is not None and b.absolute is not None
    assert b.absolute.ci[0] <= 0.12 - 0.08 <= b.absolute.ci[1]
    assert b.relative.ci[0] <= 0.12 / 0.08 - 1 <= b.relative.ci[1]
    assert b.relative.ci[0] > 0
    assert metric.verdicts == ["baseline", "better"]
    # the rates themselves are close to the truth (3 binomial standard errors)
    assert abs(a.mean - 0.08) < 3 * (0.08 * 0.92 / 4000) ** 0.5
    assert abs(b.mean - 0.12) < 3 * (0.12 * 0.88 / 4000) ** 0.5


def test_users_exposed_to_both_arms_are_counted_and_excluded(known_effect):
    report = analyze(config_with(), "hero-copy-test", known_effect)
    assert report.multi_arm_users == 7
    assert report.users == 8000
    assert [a.users for a in report.arms] == [4000, 4000]


def test_cuped_narrows_the_interval_when_pre_behaviour_correlates(known_effect):
    plain = _metric(
        analyze(config_with(cuped=False), "hero-copy-test", known_effect), "image_hovers"
    )
    cuped = _metric(
        analyze(config_with(cuped=True), "hero-copy-test", known_effect), "image_hovers"
    )
    width = [
        m.comparison.variants[1].relative.ci[1] - m.comparison.variants[1].relative.ci[0]
        for m in (plain, cuped)
    ]
    assert width[1] < 0.9 * width[0]
    for m in (plain, cuped):  # both still cover the true 30 % lift
        ci = m.comparison.variants[1].relative.ci
        assert ci[0] <= 0.3 <= ci[1]


def test_a_55_45_split_raises_the_sample_ratio_alarm(tmp_path):
    synthesize(tmp_path, users_per_arm=(11000, 9000), conversion=(0.1, 0.1), activity_mean=0.2)
    report = analyze(config_with(), "hero-copy-test", tmp_path)
    assert not report.srm.ok
    assert "SAMPLE RATIO MISMATCH" in report.srm.message
    assert report.srm.observed == (11000, 9000)


def test_a_balanced_split_passes_the_sample_ratio_check(known_effect):
    assert analyze(config_with(), "hero-copy-test", known_effect).srm.ok


def test_sequential_verdicts_use_the_always_valid_interval(known_effect):
    report = analyze(config_with(sequential=True), "hero-copy-test", known_effect)
    b = _metric(report, "cta_click").comparison.variants[1]
    assert b.sequential is not None and b.relative is not None
    assert b.sequential.ci[1] - b.sequential.ci[0] > b.relative.ci[1] - b.relative.ci[0]
    history = _metric(report, "cta_click").over_time
    assert history and history[-1].users == [4000, 4000]
    assert history[-1].effects[1] is not None
    assert history[-1].effects[1][1] == pytest.approx(b.sequential.ci[0])


def test_unknown_experiment_is_a_key_error(known_effect):
    with pytest.raises(KeyError, match="not declared"):
        analyze(config_with(), "ghost", known_effect)


# -- per-user values against a plain-Python reference ---------------------------------------

REF_CONFIG = {
    "slots": {
        "hero": {
            "default": "a",
            "variants": {"a": {}, "b": {}, "c": {}},
            "rules": [{"key": "t", "variations": ["a", "b", "c"]}],
        }
    },
    "metrics": {
        "clicked_cta": {"type": "binomial", "event": "click:cta", "window_s": 60},
        "clicks": {"type": "count", "event": ["click:*", "signup"]},
        "dwell": {"type": "mean", "event": "hover:image", "value": "dwell_ms"},
        "dwell_per_hover": {
            "type": "mean",
            "event": "hover:*",
            "value": "dwell_ms",
            "aggregate": "mean",
        },
        "depth": {"type": "mean", "event": "scroll", "value": "depth", "aggregate": "max"},
        "basket": {"type": "mean", "event": "purchase", "value": "value"},
        "clicks_per_exposure": {"type": "ratio", "numerator": "clicks", "denominator": "shown"},
        "shown": {"type": "count", "event": "exposure"},
    },
    "experiments": {
        "t": {
            "metrics": ["clicked_cta", "clicks", "dwell", "dwell_per_hover", "depth", "basket"],
            "guardrails": ["clicks_per_exposure"],
            "cuped": True,
        }
    },
}


def _decision(arm: int, decision_id: str) -> Decision:
    return Decision(
        slot="hero",
        variant="abc"[arm],
        source="experiment",
        experiment="t",
        variation=arm,
        decision_id=decision_id,
    )


def _random_log(where: Path, seed: int) -> list:
    """Random users, decisions, exposures and behaviour through the real log classes."""
    rnd = random.Random(seed)
    events: list = []
    log = SqliteDecisionLog(where / DECISIONS_FILE)
    for i in range(60):
        u = f"u{i}"
        arm = rnd.randrange(3)
        t0 = 1.75e12 + rnd.uniform(0, 3.6e6)
        log.record([_decision(arm, f"d{i}")], {"id": u})
        common = {"user_id": u, "session_id": "s", "page": "/"}
        with_id = rnd.random() < 0.7  # some exposures come without a decision id
        events.append(
            Exposure(
                event_id=f"x{i}", ts=t0, slot="hero", variant="abc"[arm],
                decision_id=f"d{i}" if with_id else "", **common,
            )
        )  # fmt: skip
        if rnd.random() < 0.1:  # exposed again later, to another arm: excluded
            events.append(
                Exposure(
                    event_id=f"y{i}", ts=t0 + 5000, slot="hero", variant="abc"[(arm + 1) % 3],
                    decision_id=f"e{i}", **common,
                )
            )  # fmt: skip
            log.record([_decision((arm + 1) % 3, f"e{i}")], {"id": u})
        for j in range(rnd.randrange(12)):
            ts = t0 + rnd.uniform(-120_000, 120_000)
            eid = f"{u}-{j}"
            r = rnd.random()
            if r < 0.3:
                kind = rnd.choice(["cta", "card", "link"])
                events.append(Click(event_id=eid, ts=ts, element=f"{kind}-1", element_kind=kind,
                                    **common))  # fmt: skip
            elif r < 0.55:
                kind = rnd.choice(["image", "card"])
                dwell = rnd.uniform(0, 900)
                events.append(Hover(event_id=eid, ts=ts, element="img", dwell_ms=dwell,
                                    element_kind=kind, **common))  # fmt: skip
            elif r < 0.75:
                events.append(Scroll(event_id=eid, ts=ts, depth=rnd.random(), **common))
            elif r < 0.9:
                value = rnd.choice([12.5, 30.0, "big", True])
                events.append(Custom(event_id=eid, ts=ts, name="purchase", value=value, **common))
            else:
                events.append(Custom(event_id=eid, ts=ts, name="signup", **common))
    log.close_sync()
    SqliteEventLog(where / EVENTS_FILE).append_sync(events)
    return events


def _reference(events: list, spec: dict) -> dict[str, dict[int, list]]:
    """Per metric and arm, the list of per-user post-exposure values, computed naively."""
    arms: dict[str, set[int]] = {}
    first: dict[str, float] = {}
    for e in events:
        if type(e) is Exposure:
            arm = "abc".index(e.variant)
            arms.setdefault(e.user_id, set()).add(arm)
            first[e.user_id] = min(first.get(e.user_id, e.ts), e.ts)
    units = {u: next(iter(a)) for u, a in arms.items() if len(a) == 1}
    out: dict[str, dict[int, list]] = {}
    for name in spec["experiments"]["t"]["metrics"]:
        m = spec["metrics"][name]
        patterns = [m["event"]] if isinstance(m["event"], str) else m["event"]
        matchers = [matcher(p) for p in patterns]
        window = m.get("window_s")
        per_arm: dict[int, list] = {0: [], 1: [], 2: []}
        for u, arm in units.items():
            t0 = first[u]
            hits = [
                e
                for e in events
                if e.user_id == u
                and any(f(e) for f in matchers)
                and e.ts >= t0
                and (window is None or e.ts <= t0 + window * 1000)
            ]
            field = m.get("value")
            values = []
            if field:
                for e in hits:
                    v = getattr(e, field)
                    if isinstance(v, float) and not isinstance(v, bool):
                        values.append(v)
            if m["type"] == "binomial":
                per_arm[arm].append(float(bool(hits)))
            elif m["type"] == "count":
                per_arm[arm].append(float(len(hits)))
            elif m.get("aggregate") == "max":
                per_arm[arm].append(max(values, default=0.0))
            elif m.get("aggregate") == "mean":
                per_arm[arm].append((sum(values), len(values)))
            else:
                per_arm[arm].append(sum(values))
        out[name] = per_arm
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duckdb_values_match_a_plain_python_reference(tmp_path, seed):
    events = _random_log(tmp_path, seed)
    config = parse_config(copy.deepcopy(REF_CONFIG), "<ref>")
    report = analyze(config, "t", tmp_path)
    expected = _reference(events, REF_CONFIG)
    for metric in report.metrics:
        if metric.name not in expected:
            continue
        for v in metric.comparison.variants:
            values = expected[metric.name][v.index]
            assert v.n == len(values), metric.name
            if metric.name == "dwell_per_hover":
                total = sum(s for s, _ in values)
                count = sum(c for _, c in values)
                assert v.mean == pytest.approx(total / count if count else 0.0)
            else:
                assert v.mean == pytest.approx(sum(values) / len(values) if values else 0.0)
    assert report.multi_arm_users == sum(1 for e in events if e.event_id.startswith("y"))
