"""`trimtab train`: holdout metrics next to the baseline, the registry, and bad input refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from support import simulated_events
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.cli import app
from trimtab.config import parse_config
from trimtab.events import Hover, PageView
from trimtab.features import FeatureProcessor
from trimtab.models.live import LiveModels
from trimtab.models.registry import Registry, RegistryError
from trimtab.models.train import TrainError, train
from trimtab.sim.simulator import Simulator

FEATURES = {
    "scroll_depth_max": {"kind": "scroll_depth_max"},
    "scroll_velocity": {"kind": "scroll_velocity"},
    "hover_ms_by_kind": {"kind": "hover_ms", "by": "kind"},
    "visible_ms_by_category": {"kind": "visible_ms", "by": "category"},
    "interest": {"kind": "interest", "scope": "user"},
    "page_views": {"kind": "event_count", "event": "page_view", "scope": "user"},
}
MODEL = {
    "at": "page_view",
    "after_s": 3,
    "target": {"event": "click:card", "within": "session"},
    "features": [
        "scroll_depth_max",
        "log(scroll_velocity)",
        "log(sum(hover_ms_by_kind))",
        "log(sum(visible_ms_by_category))",
        "interest_top_share",
        "page_views",
        "device=*",
    ],
    "params": {"n_estimators": 100},
}


def site(**models):
    return parse_config(
        {
            "features": FEATURES,
            "slots": {"cta": {"default": "a", "variants": {"a": {}, "b": {}}}},
            "models": models or {"p_card": MODEL},
        }
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """Simulated visits to train on (each test gets a copy: ``data_dir``, in conftest)."""
    return simulated_events(tmp_path_factory.mktemp("logs"), seed=11, sessions=900)


def test_training_reports_metrics_next_to_the_baseline_and_registers(data_dir):
    result = train(site(), "p_card", data_dir, n_boot=100)
    assert 0.19 < result.rows_test / (result.rows_train + result.rows_test) < 0.21
    assert result.window["train_to"] == result.window["test_from"]
    assert result.window["train_from"] < result.window["test_from"] <= result.window["test_to"]
    for metrics in (result.metrics, result.baseline):
        assert 0.5 < metrics["auc"] < 1.0
        lo, hi = metrics["auc_ci"]
        assert lo < metrics["auc"] < hi
        assert 0 < metrics["brier"] < 0.5 and metrics["log_loss"] > 0 and 0 < metrics["pr_auc"] <= 1
    assert result.compiled_max_diff <= 1e-9
    version = result.version
    assert (version.version, version.stage, version.kind) == (1, "shadow", "lightgbm")
    assert version.metrics["auc"] == result.metrics["auc"]
    assert version.baseline["auc"] == result.baseline["auc"]
    assert len(version.config_hash) == 12 and version.window == result.window
    registry = Registry(data_dir / "models")
    assert (registry.root / version.plots[0]).stat().st_size > 10_000  # the calibration plot
    assert (registry.folder("p_card", 1) / "native.lgb.txt").read_text().startswith("tree")
    # the served file scores like the trained model, attribute dict in, number out
    meta, arrays = registry.load(version)
    from trimtab.models.scorer import Scorer

    served = Scorer.from_file(meta, arrays)
    x_test, _ = result.test
    assert (
        np.max(np.abs(served.model.predict_many(x_test) - result.scorer.model.predict_many(x_test)))
        == 0
    )


def test_holdout_is_later_in_time_than_training(data_dir):
    result = train(site(), "p_card", data_dir, stage=None, n_boot=50)
    assert result.version is None
    assert result.window["train_to"] <= result.window["test_from"]


@pytest.mark.parametrize("algorithm", ["mlp", "logistic"])
def test_other_algorithms(data_dir, algorithm):
    result = train(site(), "p_card", data_dir, algorithm=algorithm, n_boot=50)
    assert result.version.kind == algorithm
    assert result.compiled_max_diff <= (1e-6 if algorithm == "mlp" else 1e-9)
    assert result.metrics["auc"] > 0.5


def test_count_targets_are_regressions_with_mae(data_dir):
    model = {**MODEL, "target": {"event": "click:*", "within": "session", "type": "count"}}
    result = train(site(clicks_next=model), "clicks_next", data_dir, n_boot=50)
    assert result.metrics["mae"] > 0 and result.baseline["mae"] > 0
    assert result.compiled_max_diff <= 1e-9


def test_a_target_with_one_class_is_refused(data_dir):
    model = {**MODEL, "target": {"event": "click:never", "within": "session"}}
    with pytest.raises(TrainError) as caught:
        train(site(p_never=model), "p_never", data_dir)
    message = str(caught.value)
    assert message.startswith("model p_never: target (click:never")
    assert "only one class in the training rows" in message and "all 0" in message
    assert not (data_dir / "models").exists()


def test_an_empty_window_is_refused(data_dir):
    with pytest.raises(
        TrainError, match=r"model p_card: window: no page_view observations.*--since"
    ):
        train(site(), "p_card", data_dir, since_ms=4e12)


def test_a_log_holding_values_beyond_todays_bounds_trains_on_them_clamped(tmp_path):
    """Written by a version that accepted a 1e308 ms dwell: read back within the bound (one
    hour), so the sums stay finite and the model trains instead of failing on the column."""
    events = []
    for i in range(100):
        s = {"user_id": f"u{i}", "session_id": f"s{i}", "page_category": "news"}
        events.append(PageView(event_id=f"p{i}", ts=1.75e12 + i * 1e6, page="/a", **s))
        for j in range(2):  # two huge dwells once overflowed the sum to infinity
            events.append(
                Hover(event_id=f"h{i}-{j}", ts=1.75e12 + i * 1e6 + 10 + j, element="img",
                      element_kind="image", dwell_ms=1e308 if i == 7 else 100.0, **s)
            )  # fmt: skip
    events.append(PageView(event_id="end", user_id="z", session_id="z", ts=1.76e12))
    log = SqliteEventLog(tmp_path / "events.sqlite")
    log.append_sync(events)
    stored = {e.event_id: e for e in log.iter_all()}
    log.close_sync()
    assert stored["h7-0"].dwell_ms == 3_600_000.0 and stored["h8-0"].dwell_ms == 100.0
    # training gets past the finite check (this data then has no positive label to learn)
    model = {**MODEL, "target": {"event": "hover:*", "within": 3600}}
    with pytest.raises(TrainError, match="only one class") as caught:
        train(site(p_h=model), "p_h", tmp_path)
    assert "NaN or infinite" not in str(caught.value)


def test_non_finite_features_are_refused_with_the_column():
    from trimtab.models.columns import Columns, parse_columns
    from trimtab.models.dataset import Row
    from trimtab.models.train import _check_finite

    cols = Columns(parse_columns(["a", "b"]))
    x = np.array([[1.0, 2.0], [3.0, np.inf], [np.nan, np.nan]])
    rows = [Row(f"u{i}", "s", 1.75e12 + i, {}) for i in range(3)]
    with pytest.raises(TrainError) as caught:
        _check_finite("p_h", cols, x, rows)
    # the first column holding one, and the first row of it
    assert str(caught.value).startswith(f"model p_h: features[{cols.names[0]}]: 1 rows hold ")
    assert "NaN or infinite values (first: user u2" in str(caught.value)


def test_unknown_model_names_the_declared_ones(data_dir):
    with pytest.raises(TrainError, match=r"model nope: \$.models: not declared .*p_card"):
        train(site(), "nope", data_dir)


def test_stages_and_rollback():
    import tempfile

    registry = Registry(tempfile.mkdtemp())
    for _ in range(3):
        registry.add("m", "logistic", {"w": np.zeros(1)}, {"features": ["a"]}, stage="shadow")
    assert [v.stage for v in registry.versions("m")] == ["retired", "retired", "shadow"]
    registry.set_stage("m", 1, "live")
    registry.set_stage("m", 2, "live")
    assert [v.stage for v in registry.versions("m")] == ["retired", "live", "shadow"]
    assert registry.rollback("m").version == 1
    assert registry.in_stage("live")["m"].version == 1
    assert registry.in_stage("shadow")["m"].version == 3
    with pytest.raises(RegistryError, match="no version 9"):
        registry.set_stage("m", 9, "live")
    with pytest.raises(RegistryError, match="stage must be"):
        registry.set_stage("m", 1, "prod")
    fresh = Registry(tempfile.mkdtemp())
    fresh.add("n", "logistic", {"w": np.zeros(1)}, {}, stage="live")
    with pytest.raises(RegistryError, match="no earlier live version"):
        fresh.rollback("n")


def test_a_model_file_that_does_not_match_is_refused_and_the_last_good_keeps_serving(
    data_dir, caplog
):
    config = site()
    good = train(config, "p_card", data_dir, stage="live", n_boot=20).version
    fp = FeatureProcessor(config.feature_specs())
    live = LiveModels(config, data_dir / "models", check_every_s=0.0)
    fp.derived.append(live.read)
    sim = Simulator(seed=3, n_users=5)
    session = next(iter(sim.sessions(1)))
    fp.apply(session)
    user, sess = session[0].user_id, session[0].session_id
    before = fp.features_of(user, sess)["p_card"]
    assert 0.0 < before < 1.0
    # v2 trained on other features, then promoted under a config that declares the old ones
    other = site(p_card={**MODEL, "features": ["scroll_depth_max", "page_views"]})
    wrong = train(other, "p_card", data_dir, stage="shadow", n_boot=20).version
    caplog.set_level(logging.ERROR, "trimtab.models")
    Registry(data_dir / "models").set_stage("p_card", wrong.version, "live")
    attrs = fp.features_of(user, sess)
    assert attrs["p_card"] == before and live.live["p_card"].version == good.version
    refusal = live.status()["refused"]["p_card:live"]
    assert refusal.startswith("model p_card v2 (live): features ['scroll_depth_max', 'page_views']")
    assert "do not match the config's" in refusal and "retrain" in refusal
    assert "refused model p_card v2 (live)" in caplog.text and "still serving v1" in caplog.text
    # a damaged file: refused too, the good version still serves
    v3 = train(config, "p_card", data_dir, stage="shadow", n_boot=20).version
    path = Registry(data_dir / "models").root / v3.file
    path.write_bytes(path.read_bytes()[:200])
    Registry(data_dir / "models").set_stage("p_card", v3.version, "live")
    assert fp.features_of(user, sess)["p_card"] == before
    assert "cannot read" in live.status()["refused"]["p_card:live"]
    # and rolling back to the good one clears the refusal
    Registry(data_dir / "models").set_stage("p_card", good.version, "live")
    fp.features_of(user, sess)
    assert "p_card:live" not in live.status()["refused"]


def test_train_command_prints_metrics_and_refuses_clearly(data_dir, tmp_path):
    config = tmp_path / "site.json"
    config.write_text(
        json.dumps(
            {
                "features": FEATURES,
                "slots": {"cta": {"default": "a", "variants": {"a": {}, "b": {}}}},
                "models": {
                    "p_card": MODEL,
                    "p_never": {**MODEL, "target": {"event": "click:never"}},
                },
            }
        )
    )
    yaml_config = tmp_path / "site.yaml"
    yaml_config.write_text(config.read_text())  # JSON is YAML
    runner = CliRunner()
    done = runner.invoke(app, ["train", str(yaml_config), "p_card", "--data-dir", str(data_dir)])
    assert done.exit_code == 0, done.output
    assert "p_card v1 (lightgbm, shadow)" in done.output
    assert "AUC" in done.output and "logistic baseline" in done.output
    assert "calibration plot:" in done.output
    listed = runner.invoke(app, ["models", "list", str(yaml_config), "--data-dir", str(data_dir)])
    assert "p_card" in listed.output and "shadow" in listed.output
    promoted = runner.invoke(
        app, ["models", "promote", "p_card", "1", str(yaml_config), "--data-dir", str(data_dir)]
    )
    assert "p_card v1 is now live" in promoted.output
    refused = runner.invoke(
        app, ["train", str(yaml_config), "p_never", "--data-dir", str(data_dir)]
    )
    assert refused.exit_code == 2
    assert "model p_never: target (click:never" in refused.output


def test_a_returns_within_7_days_target_trains_end_to_end(tmp_path):
    """docs/models.md's "returns within 7 days" (``other_session`` with ``within: 604800``):
    visits spread over four weeks, so some readers come back within a week and some do not;
    the rows of the last week (their week not over) are left out, and the registered version
    is served live under the same declaration."""
    sim = Simulator(seed=11, n_users=200, session_gap_ms=6e6)  # 400 visits over ~four weeks
    log = SqliteEventLog(tmp_path / "events.sqlite")
    for events in sim.sessions(400):
        log.append_sync(events)
    log.close_sync()
    week_s = 7 * 24 * 3600
    model = {
        **MODEL,
        "at": "session_end",
        "after_s": 0,
        "target": {"event": "page_view", "within": week_s, "other_session": True},
    }
    config = site(p_return=model)
    result = train(config, "p_return", tmp_path, stage="live", n_boot=20)
    _, y_test = result.test
    assert 0.1 < float(np.mean(y_test)) < 0.9  # both outcomes occur in the holdout
    assert result.window["test_to"] + week_s * 1000 <= result.window["data_to"]  # censored
    assert result.rows_train + result.rows_test < 400  # the last week's visits left out
    assert np.isfinite(result.metrics["auc"]) and np.isfinite(result.baseline["auc"])
    assert 0 < result.metrics["brier"] < 0.5 and result.compiled_max_diff <= 1e-9
    assert (result.version.version, result.version.stage) == (1, "live")
    live = LiveModels(config, tmp_path / "models")
    assert live.live["p_return"].version == 1 and live.status()["refused"] == {}
