"""Shared-model poisoning (issue 11, item 1): no value a browser sends can make a sum infinite,
a share NaN, or move the bandit every visitor shares.

The attack the issue reports: four requests with only the public key sent hovers and
visibility reports of ~1e308 ms and events dated thousands of years ahead; sums overflowed to
inf, ``interest_share`` became NaN, the NaN reached the rail bandit and fresh readers got
``popular`` 139 times in 150 instead of 33, persisted across a restart. Here the same four
requests run against the demo site in-process (embedded runtime, real SQLite).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import yaml
from starlette.testclient import TestClient

from trimtab.bandits.serving import PolicySpec, ServedPolicy
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.events import Hover, PageView, decode_batch
from trimtab.features import MAX_SUM, FeatureProcessor, FeatureSpec
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[2] / "src" / "trimtab" / "demo" / "config.yaml"
KEY = "pk_demo"
YEAR_5100_MS = 1e14  # the schema's old upper bound, in the year ~5100
_n = iter(range(10**9))


def site(tmp_path: Path, **limits: Any) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update(secret_key="sk_test", consent="implied")
    # any id is taken (signed visitor ids not required): the attacker here may act as anyone,
    # a stronger attacker than the default allows
    data["identity"] = {"require_signed": False}
    if limits:
        data["limits"] = limits
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def event(kind: str, user: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "event_id": f"e{next(_n)}",
        "user_id": user,
        "session_id": f"{user}-s",
        "ts": time.time() * 1000,
        **fields,
    }


def all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(all_finite(v) for v in value)
    return True


# -- the schema's bounds ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "fields", "path"),
    [
        ("hover", {"element": "a", "dwell_ms": 1e308}, "dwell_ms"),
        ("hover", {"element": "a", "dwell_ms": -1}, "dwell_ms"),
        ("visible", {"element": "a", "visible_ms": 3_600_001}, "visible_ms"),
        ("scroll", {"depth": 0.5, "velocity": 1e30}, "velocity"),
        ("scroll", {"depth": 1.5}, "depth"),
        ("custom", {"name": "purchase", "value": 1e300}, "value"),
        ("custom", {"name": "note", "value": "x" * 5000}, "value"),
        ("page_view", {"slots": [f"s{i}" for i in range(65)]}, "slots"),
        ("consent", {"purposes": {f"p{i}": True for i in range(17)}}, "purposes"),
        ("context", {"viewport_w": 10**9}, "viewport_w"),
    ],
)
def test_every_browser_number_is_bounded_with_a_per_field_error(kind, fields, path):
    good = event("scroll", "u", depth=0.3)
    bad = event(kind, "u", **fields)
    result = decode_batch(json.dumps([good, bad, good | {"event_id": "other"}]))
    assert [e.event_id for e in result.events] == [good["event_id"], "other"]
    (error,) = result.errors
    assert error.index == 1 and error.path == f"$[1].{path}", error
    assert error.reason  # msgspec names the bound: "Expected `float` <= 3600000.0"


def test_events_outside_the_clock_skew_window_are_rejected_with_a_reason(tmp_path):
    runtime = Runtime(load_config(site(tmp_path)), tmp_path / "data")
    now = time.time() * 1000
    batch = [
        event("scroll", "u", depth=0.2),
        event("scroll", "u", depth=0.3, ts=YEAR_5100_MS),
        event("scroll", "u", depth=0.4, ts=now - 2 * 86_400_000),
        event("scroll", "u", depth=0.5, ts=now + 60_000),  # a minute fast: a normal clock
    ]
    with TestClient(create_app(runtime)) as client:
        r = client.post(f"/v1/events?key={KEY}", content=json.dumps(batch))
    runtime.close()
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    by_index = {x["index"]: x for x in body["rejected"]}
    assert sorted(by_index) == [1, 2]
    assert (
        by_index[1]["path"] == "$[1].ts" and "ahead of the server's clock" in by_index[1]["reason"]
    )
    assert by_index[2]["path"] == "$[2].ts" and "behind the server's clock" in by_index[2]["reason"]


def test_the_clock_skew_window_is_configurable(tmp_path):
    runtime = Runtime(
        load_config(site(tmp_path, clock_skew_past_s=60, clock_skew_future_s=1)),
        tmp_path / "data",
    )
    now = time.time() * 1000
    batch = [event("scroll", "u", depth=0.2, ts=now - 120_000), event("scroll", "u", depth=0.2)]
    with TestClient(create_app(runtime)) as client:
        body = client.post(f"/v1/events?key={KEY}", content=json.dumps(batch)).json()
    runtime.close()
    assert body["accepted"] == 1
    assert [x["path"] for x in body["rejected"]] == ["$[0].ts"]
    assert "at most 1 min allowed" in body["rejected"][0]["reason"]


def test_a_bad_clock_skew_setting_is_a_config_error(tmp_path):
    from trimtab.config import ConfigError

    with pytest.raises(ConfigError, match=r"\$\.limits\.clock_skew_past_s"):
        load_config(site(tmp_path, clock_skew_past_s=-1))


# -- features: sums never leave the finite -------------------------------------------------
def test_feature_sums_stop_at_a_finite_cap_even_for_unchecked_values():
    """Events built in code skip the schema; a sum still never becomes inf."""
    fp = FeatureProcessor(
        [FeatureSpec("hover_total", "hover_ms"), FeatureSpec("hover_by", "hover_ms", by="category")]
    )
    hovers = [
        Hover(
            event_id=f"h{i}",
            user_id="u",
            session_id="s",
            ts=1.7e12 + i,
            element="a",
            category="tech",
            dwell_ms=1e308,
        )
        for i in range(3)
    ]
    fp.apply(hovers)
    values = fp.features_of("u", "s")
    assert values["hover_total"] == MAX_SUM and values["hover_by"] == {"tech": MAX_SUM}


@pytest.mark.parametrize("anchor", [math.nan, YEAR_5100_MS])
def test_an_interest_state_poisoned_before_the_fix_is_started_afresh(anchor):
    """A NaN anchor, or one in the year 5100 (which froze the profile: every later signal
    weighed exp(−huge) = 0), is replaced by the next event's time."""
    fp = FeatureProcessor([FeatureSpec("interest", "interest")])
    view = PageView(event_id="p1", user_id="u", session_id="s", ts=1.7e12, page_category="tech")
    fp.apply([view])
    st = fp.states["u"].aux["interest"]
    st[0] = st[1] = anchor  # what a poisoned state persisted looks like
    fp.apply([msgspec.structs.replace(view, event_id="p2", ts=1.7e12 + 1, page_category="sport")])
    attrs = fp.features_of("u", "s")
    assert all_finite(attrs) and attrs["interest_share"] == {"sport": 1.0}
    fp.apply([msgspec.structs.replace(view, event_id="p3", ts=1.7e12 + 2, page_category="tech")])
    assert fp.features_of("u", "s")["interest_share"]["tech"] > 0.4  # it learns again


def test_an_interest_state_a_day_behind_is_kept():
    """An event up to a day late (within the clock-skew window) is ordinary, not poison."""
    fp = FeatureProcessor([FeatureSpec("interest", "interest")])
    now = 1.7e12
    view = PageView(event_id="p1", user_id="u", session_id="s", ts=now, page_category="tech")
    late = msgspec.structs.replace(view, event_id="p2", ts=now - 86_000_000, page_category="sport")
    fp.apply([view, late])
    assert set(fp.features_of("u", "s")["interest_share"]) == {"tech", "sport"}


# -- learners: nothing non-finite is learned, saved or loaded ------------------------------
def test_a_policy_never_saves_nor_loads_a_non_finite_state():
    spec = PolicySpec(name="rail", arms=["a", "b"], arm_features=["x.{arm}"])
    served = ServedPolicy(spec, default="a", seed=3)
    good = served.to_state()
    served.policy.theta[0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        served.to_state()
    # a state written before the fix, holding a NaN, is refused on load: the policy starts
    # afresh instead
    state = msgspec.msgpack.decode(good)
    inner = msgspec.msgpack.decode(state["policy"])
    for _, (shape, raw) in inner["arrays"].items():
        weights = np.frombuffer(raw).copy()
        weights[0] = math.nan
        inner["arrays"][_] = [shape, weights.tobytes()]
    state["policy"] = msgspec.msgpack.encode(inner)
    fresh = ServedPolicy(spec, default="a", seed=3)
    assert fresh.restore(msgspec.msgpack.encode(state)) is False
    assert fresh.policy.finite()
    assert fresh.restore(good) is True


def _fresh_shares(runtime: Runtime, rounds: int = 400) -> dict[str, float]:
    served = runtime.policies["rail-bandit"]
    attrs = runtime.features_of("fresh-reader", "fresh-s")
    attrs["page"] = "/"
    return served.probabilities(attrs, rounds=rounds)


def _attack(tmp_path: Path, poisoned: bool) -> dict[str, Any]:
    """The issue's four requests (``poisoned``), or the same requests without the poisoned
    events (an ordinary reader who was shown the rail and clicked it), from the same start:
    the bandit's random draws are seeded alike in both runs."""
    config = load_config(site(tmp_path))
    runtime = Runtime(config, tmp_path / "data")
    served = runtime.policies["rail-bandit"]
    served.policy.rng = np.random.default_rng(7)
    served.rng = np.random.default_rng(8)
    app = create_app(runtime, flush_interval_s=0.05)
    stored_id = app.state.collector.gate.user_id
    out: dict[str, Any] = {}
    with TestClient(app) as client:
        out["before"] = _fresh_shares(runtime)
        # The attacker needs an id the bandit serves (half the readers, by hash): decide
        # requests until one is.
        for i in range(64):
            attacker = f"attacker-{i}"
            r = client.post(
                f"/v1/decide?key={KEY}",
                content=json.dumps(
                    {"user_id": attacker, "session_id": f"{attacker}-s", "slots": ["rail"]}
                ),
            )
            (rail,) = r.json()["decisions"]
            if rail["rule_id"] == "rail-bandit":
                break
        else:
            pytest.fail("no attacker id in the bandit's half")
        poison = [
            [
                event(
                    "hover", attacker, element="r1", category="tech", slot="rail", dwell_ms=1e308
                ),
                event(
                    "hover", attacker, element="r1", category="tech", slot="rail", dwell_ms=1e308
                ),
            ],
            [
                event(
                    "visible",
                    attacker,
                    element="r2",
                    category="politics",
                    slot="rail",
                    visible_ms=1e308,
                ),
                event("page_view", attacker, page="/x", page_category="sport", ts=YEAR_5100_MS),
            ],
            [
                event(
                    "hover",
                    attacker,
                    element="r3",
                    category="culture",
                    slot="rail",
                    dwell_ms=5e307,
                    ts=YEAR_5100_MS,
                ),
                event("scroll", attacker, depth=0.9, velocity=1e300),
            ],
            [],
        ]
        ordinary = [
            [
                event(
                    "exposure",
                    attacker,
                    slot="rail",
                    variant=rail["variant"],
                    decision_id=rail["decision_id"],
                )
            ],
            [],
            [],
            [event("click", attacker, element="r1", category="tech", slot="rail")],
        ]
        rejected: list[dict[str, Any]] = []
        for bad, good in zip(poison, ordinary, strict=True):
            batch = [*good, *bad] if poisoned else good
            r = client.post(f"/v1/events?key={KEY}", content=json.dumps(batch))
            assert r.status_code == 200
            rejected += r.json()["rejected"]
        out["rejected"] = rejected
        # the reward window closes: the bandit learns from the attacker's round
        runtime.learn(now_ms=time.time() * 1000 + 301_000)
        served = runtime.policies["rail-bandit"]
        out["updates"], out["refused"] = served.updates, served.rejected
        out["finite"] = served.policy.finite()
        out["features"] = runtime.features_of(stored_id(attacker), f"{attacker}-s")
        out["theta"] = served.policy.theta.copy()
        out["after"] = _fresh_shares(runtime)
    runtime.close()
    # after a restart the saved bandit loads (it would be refused if it held a NaN)
    again = Runtime(config, tmp_path / "data")
    try:
        restored = again.policies["rail-bandit"]
        out["restored_updates"] = restored.updates
        out["restored_theta"] = restored.policy.theta.copy()
    finally:
        again.close()
    return out


def test_four_public_key_requests_cannot_change_what_fresh_readers_get(tmp_path):
    """The issue's attack, request for request: the poisoned values change nothing.

    The bandit ends exactly where it ends when the same reader is shown the rail and clicks
    it with nothing poisoned: same weights, same choices for fresh readers (the issue saw
    `popular` go from 33 to 139 of 150 fresh readers), the same state after a restart.
    """
    attacked = _attack(tmp_path / "attacked", poisoned=True)
    control = _attack(tmp_path / "control", poisoned=False)
    # every poisoned value was refused, naming its field; the ordinary events were kept
    fields = sorted({x["path"].rpartition(".")[2] for x in attacked["rejected"]})
    assert fields == ["dwell_ms", "ts", "velocity", "visible_ms"]
    assert len(attacked["rejected"]) == 6 and control["rejected"] == []
    assert all_finite(attacked["features"])
    assert attacked["finite"] and attacked["refused"] == 0
    assert attacked["updates"] == control["updates"] == 1  # the one ordinary round
    np.testing.assert_array_equal(attacked["theta"], control["theta"])
    assert attacked["after"] == control["after"]
    assert attacked["restored_updates"] == 1
    np.testing.assert_array_equal(attacked["restored_theta"], attacked["theta"])
