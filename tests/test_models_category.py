"""Category targets ("next category read"): the first matching event's field names the class;
LightGBM, the MLP and the logistic baseline learn the classes, are judged by multiclass log
loss, accuracy and macro AUC, are served compiled exactly like the libraries' own predict, and
live rules see the most likely class and the probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from support import simulated_events
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import ConfigError, parse_config
from trimtab.events import Click, PageView
from trimtab.features import FeatureProcessor
from trimtab.models import dataset
from trimtab.models.live import LiveModels
from trimtab.models.registry import Registry
from trimtab.models.spec import TargetDecl
from trimtab.models.train import TrainError, train
from trimtab.sim.simulator import DEFAULT_CATEGORIES, Simulator

FEATURES = {
    "scroll_depth_max": {"kind": "scroll_depth_max"},
    "visible_ms_by_category": {"kind": "visible_ms", "by": "category"},
    "interest": {"kind": "interest", "scope": "user"},
    "page_views": {"kind": "event_count", "event": "page_view", "scope": "user"},
}
NEXT_CATEGORY = {
    "at": "page_view",
    "after_s": 3,
    "target": {"event": "click:card", "within": "session", "type": "category", "by": "category"},
    "features": [
        "scroll_depth_max",
        "log(sum(visible_ms_by_category))",
        *(f"interest_share.{c}" for c in DEFAULT_CATEGORIES),
        "page_views",
        "device=*",
    ],
    "params": {"lightgbm": {"n_estimators": 100}, "mlp": {"epochs": 6}},
}


def site(model=None, **extra):
    return parse_config(
        {
            "features": FEATURES,
            "slots": {"rail": {"default": "a", "variants": {"a": {}, "b": {}}}},
            "models": {"next_category": model or NEXT_CATEGORY},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """Simulated visits to train on (each test gets a copy: ``data_dir``, in conftest)."""
    return simulated_events(tmp_path_factory.mktemp("logs"), seed=12, sessions=1200)


def test_the_first_matching_event_names_the_class(tmp_path):
    s = {"user_id": "u", "session_id": "s"}
    t0 = 1.75e12
    events = [
        PageView(event_id="p1", ts=t0, page="/a", **s),
        Click(
            event_id="c0", ts=t0 + 1_000, element="x", element_kind="card", category="sport", **s
        ),
        Click(event_id="c1", ts=t0 + 5_000, element="y", element_kind="card", category="tech", **s),
        Click(
            event_id="c2", ts=t0 + 6_000, element="z", element_kind="card", category="travel", **s
        ),
        PageView(event_id="p2", ts=t0 + 7_000, page="/b", **s),  # nothing follows: left out
        PageView(event_id="end", user_id="z", session_id="z", ts=t0 + 1e8),
    ]
    log = SqliteEventLog(tmp_path / "events.sqlite")
    log.append_sync(events)
    log.close_sync()
    target = TargetDecl(event="click:card", type="category", by="category")
    data = dataset.build(tmp_path, site(), at="page_view", target=target, after_s=3)
    assert [(r.user_id, r.label) for r in data.rows] == [("u", "tech")]  # not sport: before
    assert data.skipped["no event named a class in the window"] == 1  # p2
    assert data.censored == 1  # the last view: its visit is not over in the data


@pytest.mark.parametrize("algorithm", ["lightgbm", "mlp", "logistic"])
def test_category_models_learn_the_next_category(data_dir, algorithm):
    result = train(site(), "next_category", data_dir, algorithm=algorithm, n_boot=50)
    classes = result.scorer.classes
    assert len(classes) >= 4 and set(classes) <= set(DEFAULT_CATEGORIES)
    assert result.compiled_max_diff <= (1e-6 if algorithm == "mlp" else 1e-9)
    for metrics in (result.metrics, result.baseline):
        assert metrics["macro_auc"] > 0.55  # readers' tastes predict what they open next
        lo, hi = metrics["macro_auc_ci"]
        assert lo <= metrics["macro_auc"] <= hi
        assert metrics["log_loss"] < math.log(len(classes))  # better than knowing nothing
        assert 0 < metrics["accuracy"] <= 1
        assert set(metrics["auc_by_class"]) == set(classes)
        assert abs(sum(metrics["share_by_class"].values()) - 1) < 1e-9
    x_test, y_test = result.test
    probabilities = result.scorer.model.predict_many(x_test)
    assert probabilities.shape == (len(y_test), len(classes))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    version = result.version
    assert version.metrics["macro_auc"] == result.metrics["macro_auc"]
    registry = Registry(data_dir / "models")
    assert (registry.root / version.plots[0]).stat().st_size > 10_000


def test_live_rules_see_the_most_likely_class_and_the_probabilities(data_dir):
    result = train(site(), "next_category", data_dir, stage="live", n_boot=20)
    config = site()
    live = LiveModels(config, data_dir / "models", check_every_s=0.0)
    assert live.errors == {} and "next_category" in live.live
    processor = FeatureProcessor(config.feature_specs())
    processor.derived.append(live.read)
    sim = Simulator(seed=99, n_users=20)
    visits = {}
    for events in sim.sessions(20):
        processor.apply(events)
        visits[events[0].user_id] = events[0].session_id
    seen = 0
    for user, session in visits.items():
        attrs = processor.features_of(user, session)
        by_class = attrs["next_category_p_by_class"]
        assert set(by_class) == set(result.scorer.classes)
        assert abs(sum(by_class.values()) - 1) < 1e-9
        assert attrs["next_category"] == max(by_class, key=by_class.get)
        assert attrs["next_category_p"] == by_class[attrs["next_category"]]
        record = json.loads(attrs["_models"])["next_category"]
        assert record["class"] == attrs["next_category"] and record["v"] == 1
        # the same values from numpy alone (the server without a C compiler)
        numpy_scores = result.scorer.score_numpy(attrs)
        assert np.max(np.abs(np.array(numpy_scores) - list(by_class.values()))) <= 1e-9
        seen += 1
    assert seen == len(visits) >= 10


def test_category_targets_are_checked_in_the_config():
    bad_field = {**NEXT_CATEGORY, "target": {"event": "click:card", "type": "category"}}
    with pytest.raises(ConfigError, match=r"next_category\.target\.by"):
        site(bad_field)
    with pytest.raises(ConfigError, match="only a category target"):
        site({**NEXT_CATEGORY, "target": {"event": "click:card", "by": "category"}})
    clash = {**FEATURES, "next_category_p": {"kind": "scroll_depth_max"}}
    with pytest.raises(ConfigError, match="next_category_p"):
        parse_config(
            {
                "features": clash,
                "slots": {"rail": {"default": "a", "variants": {"a": {}}}},
                "models": {"next_category": NEXT_CATEGORY},
            }
        )


def test_one_class_is_refused(data_dir):
    one = {**NEXT_CATEGORY, "target": {**NEXT_CATEGORY["target"], "by": "element_kind"}}
    with pytest.raises(TrainError) as caught:
        train(site(one), "next_category", data_dir)
    assert "only one class in the training rows" in str(caught.value)
    assert "'card'" in str(caught.value)
