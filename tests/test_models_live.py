"""Scores and segments as live attributes: rules, the decision log, shadows, the admin API."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import yaml
from starlette.testclient import TestClient
from typer.testing import CliRunner

from trimtab.cli import app as cli
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.events import Consent, Context, Exposure, Hover, PageView, Scroll, Visible
from trimtab.models.columns import Columns, parse_columns
from trimtab.models.linear import Linear
from trimtab.models.registry import Registry
from trimtab.models.segments import SegmentModel
from trimtab.runtime import Runtime

CONFIG = {
    "site": {"secret_key": "sk_test", "public_key": "pk_test", "consent": "implied"},
    "features": {
        "scroll_depth_max": {"kind": "scroll_depth_max"},
        "scroll_velocity": {"kind": "scroll_velocity"},
    },
    "slots": {
        "cta": {
            "default": "newsletter",
            "variants": {"newsletter": {}, "offer": {}},
            "rules": [
                {
                    "id": "likely-subscriber",
                    "condition": {"p_subscribe": {"$gt": 0.5}},
                    "force": "offer",
                }
            ],
        },
        "rail": {
            "default": "popular",
            "variants": {"popular": {}, "short": {}},
            "rules": [
                {
                    "id": "skimmers",
                    "description": "readers like you (segment 'late-evening skimmers') skim",
                    "condition": {"segment": "late-evening-skimmers"},
                    "force": "short",
                }
            ],
        },
    },
    "models": {
        "p_subscribe": {
            "target": {"event": "click:cta"},
            "features": ["scroll_depth_max"],
            "algorithm": "logistic",
        }
    },
    "segments": {
        "features": ["scroll_velocity"],
        "names": {"s1": "deep-readers", "s2": "late-evening-skimmers"},
    },
}


def register_models(root: Path, weight: float = 10.0, stage: str = "live") -> None:
    """A logistic model p = σ(weight·(depth − 0.5)) and two velocity segments, by hand."""
    registry = Registry(root)
    cols = Columns(parse_columns(["scroll_depth_max"]))
    meta = {"columns": cols.describe(), "target": "binary"}
    model = Linear(np.array([weight]), -weight / 2, "sigmoid")
    registry.add("p_subscribe", "logistic", model.to_arrays(), meta, stage=stage)
    seg_cols = Columns(parse_columns(["scroll_velocity"]))
    segments = SegmentModel(
        seg_cols,
        ["s1", "s2"],
        mean=np.array([1500.0]),
        scale=np.array([1000.0]),
        means=np.array([[-1.0], [1.5]]),
        prec_chol=np.array([[[2.0]], [[2.0]]]),
        weights=np.array([0.5, 0.5]),
    )
    registry.add(
        "segments",
        "kmeans",
        segments.to_arrays(),
        {"columns": seg_cols.describe(), "report": {"segments": [{"id": "s1"}, {"id": "s2"}]}},
        stage="live",
    )


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def load_config_text(config: dict, tmp_path: Path):
    """``config`` written beside the test's site config and loaded (a config reload)."""
    path = tmp_path / "site-reloaded.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def reader(user: str, depth: float, velocity: float, t0: float) -> list:
    s = {"user_id": user, "session_id": f"{user}-s", "page_category": "news"}
    return [
        Context(event_id=f"{user}-c", ts=t0, device="mobile", **s),
        PageView(event_id=f"{user}-p", ts=t0 + 1, page="/a", **s),
        Scroll(event_id=f"{user}-s1", ts=t0 + 2, depth=depth, velocity=velocity, **s),
    ]


def test_rules_see_scores_and_segments_and_the_log_records_versions(tmp_path):
    register_models(tmp_path / "data" / "models")
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    try:
        t0 = time.time() * 1000
        runtime.ingest(reader("deep", 0.9, 300.0, t0))
        runtime.ingest(reader("skim", 0.2, 4000.0, t0))
        deep = {d.slot: d for d in runtime.decide("deep", "deep-s")}
        skim = {d.slot: d for d in runtime.decide("skim", "skim-s")}
        assert deep["cta"].variant == "offer" and skim["cta"].variant == "newsletter"
        assert "p_subscribe=0.982" in deep["cta"].reason
        assert (deep["rail"].variant, skim["rail"].variant) == ("popular", "short")
        assert skim["rail"].reason.startswith(
            "rule skimmers: readers like you (segment 'late-evening skimmers') skim "
            "(saw segment='late-evening-skimmers')"
        )
        attrs = runtime.features_of("skim", "skim-s")
        assert attrs["segment"] == "late-evening-skimmers" and attrs["segment_p"] > 0.99
        runtime.flush()
        rows = runtime.decision_log.read("deep")
        assert rows and all(r.models for r in rows)
        record = json.loads(rows[0].models)
        assert record["p_subscribe"] == {"v": 1, "score": round(1 / (1 + np.exp(-4.0)), 6)}
        assert record["segments"]["v"] == 1 and record["segments"]["id"] == "s1"
    finally:
        runtime.close()


def test_no_segment_is_claimed_before_min_events_of_reading(tmp_path):
    """``min_events`` counts reading: 20 events that are not (the visit's bookkeeping, page
    views, exposures, the masthead's navigation) leave the reader without a segment; enough
    scrolling, hovering and looking at content gives one."""
    register_models(tmp_path / "data" / "models")
    path = config_file(tmp_path)
    text = path.read_text().replace("segments:\n", "segments:\n  min_events: 4\n", 1)
    path.write_text(text)
    runtime = Runtime(load_config(path), tmp_path / "data")
    try:
        t0 = time.time() * 1000
        s = {"user_id": "new", "session_id": "new-s", "page_category": "news"}
        chip = {"element": "chip", "element_kind": "nav", "nav": True}
        not_reading = [
            *(
                Consent(event_id=f"c{i}", ts=t0 + i, purposes={"analytics": True}, **s)
                for i in range(3)
            ),
            *(Context(event_id=f"x{i}", ts=t0 + i, device="mobile", **s) for i in range(3)),
            *(PageView(event_id=f"p{i}", ts=t0 + i, page=f"/{i}", **s) for i in range(4)),
            *(
                Exposure(event_id=f"e{i}", ts=t0 + i, slot="cta", variant="a", **s)
                for i in range(4)
            ),
            *(Visible(event_id=f"v{i}", ts=t0 + i, visible_ms=1000, **chip, **s) for i in range(3)),
            *(Hover(event_id=f"h{i}", ts=t0 + i, dwell_ms=500, **chip, **s) for i in range(3)),
        ]
        assert len(not_reading) == 20
        runtime.ingest(not_reading)
        attrs = runtime.features_of("new", "new-s")
        assert attrs["segment"] == "" and "segment_p" not in attrs
        assert "0 reading events so far" in attrs["_models"]
        reading = [
            Scroll(event_id="r1", ts=t0 + 30, depth=0.2, velocity=4000.0, **s),
            Visible(event_id="r2", ts=t0 + 31, element="story", visible_ms=1000, **s),
            Hover(event_id="r3", ts=t0 + 32, element="picture", dwell_ms=800, **s),
        ]
        runtime.ingest(reading)
        attrs = runtime.features_of("new", "new-s")
        assert attrs["segment"] == "" and "3 reading events so far" in attrs["_models"]
        runtime.ingest([Scroll(event_id="r4", ts=t0 + 40, depth=0.3, velocity=4000.0, **s)])
        assert runtime.features_of("new", "new-s")["segment"] == "late-evening-skimmers"
    finally:
        runtime.close()


def cached_users(models) -> set[str]:
    """Users whose scores are kept: compiled slots, or the numpy path's entries."""
    return set(models._slots) | {key[0] for key in models._cache}


def test_erasure_drops_cached_scores(tmp_path):
    register_models(tmp_path / "data" / "models")
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    try:
        runtime.ingest(reader("gone", 0.9, 300.0, time.time() * 1000))
        runtime.decide("gone", "gone-s")
        assert "gone" in cached_users(runtime.models)
        runtime.erase("gone")
        assert "gone" not in cached_users(runtime.models)
    finally:
        runtime.close()


def test_scores_are_computed_once_per_feature_update(tmp_path):
    register_models(tmp_path / "data" / "models")
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    try:
        t0 = time.time() * 1000
        runtime.ingest(reader("u", 0.3, 300.0, t0))
        for _ in range(5):
            runtime.decide("u", "u-s")
        assert runtime.models.scored == 1
        before = runtime.features_of("u", "u-s")["p_subscribe"]
        runtime.ingest(
            [
                Scroll(
                    event_id="more",
                    user_id="u",
                    session_id="u-s",
                    ts=t0 + 10,
                    depth=0.95,
                    velocity=300.0,
                )
            ]
        )
        after = runtime.features_of("u", "u-s")["p_subscribe"]
        assert runtime.models.scored == 2 and after > 0.9 > 0.2 > before
    finally:
        runtime.close()


def test_shadow_scores_are_logged_but_invisible_to_rules(tmp_path):
    root = tmp_path / "data" / "models"
    register_models(root, weight=10.0, stage="live")
    registry = Registry(root)
    cols = Columns(parse_columns(["scroll_depth_max"]))
    always = Linear(np.array([0.0]), 9.0, "sigmoid")  # p ≈ 0.9999 for everyone
    registry.add(
        "p_subscribe",
        "logistic",
        always.to_arrays(),
        {"columns": cols.describe(), "target": "binary"},
        stage="shadow",
    )
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    try:
        runtime.ingest(reader("u", 0.1, 300.0, time.time() * 1000))
        cta = next(d for d in runtime.decide("u", "u-s") if d.slot == "cta")
        assert cta.variant == "newsletter"  # the live score (low) decides, not the shadow
        record = json.loads(runtime.features_of("u", "u-s")["_models"])
        assert (
            record["p_subscribe~shadow"]["v"] == 2 and record["p_subscribe~shadow"]["score"] > 0.99
        )
        assert record["p_subscribe"]["score"] < 0.05
    finally:
        runtime.close()


def test_promotion_and_rollback_reach_a_running_engine(tmp_path):
    root = tmp_path / "data" / "models"
    register_models(root, weight=10.0)
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    runtime.models.check_every_s = 0.0
    try:
        runtime.ingest(reader("u", 0.6, 300.0, time.time() * 1000))
        assert runtime.features_of("u", "u-s")["p_subscribe"] > 0.5
        cols = Columns(parse_columns(["scroll_depth_max"]))
        flipped = Linear(np.array([-10.0]), 5.0, "sigmoid")
        meta = {"columns": cols.describe(), "target": "binary"}
        Registry(root).add("p_subscribe", "logistic", flipped.to_arrays(), meta, stage="live")
        assert runtime.features_of("u", "u-s")["p_subscribe"] < 0.5
        Registry(root).rollback("p_subscribe")
        assert runtime.features_of("u", "u-s")["p_subscribe"] > 0.5
    finally:
        runtime.close()


def test_admin_api_shows_models_and_segments_and_moves_stages(tmp_path):
    register_models(tmp_path / "data" / "models")
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    headers = {"Authorization": "Bearer sk_test"}
    with TestClient(create_app(runtime, flush_interval_s=0.05)) as client:
        assert client.get("/v1/admin/models").status_code == 401
        body = client.get("/v1/admin/models", headers=headers).json()
        assert body["serving"]["live"] == {"p_subscribe": 1}
        assert body["serving"]["segments"]["segments"][1] == {
            "id": "s2",
            "name": "late-evening-skimmers",
        }
        assert [v["stage"] for v in body["versions"]["p_subscribe"]] == ["live"]
        segments = client.get("/v1/admin/segments", headers=headers).json()
        assert segments["serving"]["version"] == 1 and segments["features"] == ["scroll_velocity"]
        assert segments["report"]["segments"][0]["name"] == "deep-readers"
        moved = client.post(
            "/v1/admin/models/p_subscribe/stage",
            json={"version": 1, "stage": "shadow"},
            headers=headers,
        )
        assert moved.status_code == 200 and moved.json()["stage"] == "shadow"
        body = client.get("/v1/admin/models", headers=headers).json()
        assert body["serving"]["live"] == {} and body["serving"]["shadow"] == {"p_subscribe": 1}
        bad = client.post(
            "/v1/admin/models/p_subscribe/stage",
            json={"version": 7, "stage": "live"},
            headers=headers,
        )
        assert bad.status_code == 404 and "no version 7" in bad.json()["error"]
        assert (
            client.post("/v1/admin/models/p_subscribe/rollback", headers=headers).status_code == 200
        )
        assert (
            client.get("/v1/admin/models/p_subscribe/v1/../x.png", headers=headers).status_code
            == 404
        )
    runtime.close()


def test_decide_command_serves_the_registry(tmp_path):
    register_models(tmp_path / "data" / "models")
    events = tmp_path / "events.json"
    s = {"user_id": "r", "session_id": "s"}
    events.write_text(
        json.dumps(
            [
                {
                    "kind": "scroll",
                    "event_id": "a",
                    "ts": 1.764e12,
                    "depth": 0.3,
                    "velocity": 4200,
                    **s,
                },
            ]
        )
    )
    done = CliRunner().invoke(
        cli,
        [
            "decide",
            str(config_file(tmp_path)),
            "--user",
            "r",
            "--session",
            "s",
            "--events",
            str(events),
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    rail = next(d for d in json.loads(done.output) if d["slot"] == "rail")
    assert rail["variant"] == "short" and "late-evening skimmers" in rail["reason"]


def test_segments_and_scores_are_bandit_context(tmp_path):
    from trimtab.bandits.serving import PolicySpec, ServedPolicy

    register_models(tmp_path / "data" / "models")
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    try:
        runtime.ingest(reader("skim", 0.2, 4000.0, time.time() * 1000))
        attrs = runtime.features_of("skim", "skim-s")
        spec = PolicySpec(
            name="rail",
            arms=["popular", "short"],
            features=["segment=late-evening-skimmers", "segment_p", "p_subscribe"],
        )
        x = ServedPolicy(spec, default="popular").encode(attrs)
        assert x[1] == 1.0 and x[2] == attrs["segment_p"] > 0.99
        assert x[3] == attrs["p_subscribe"] < 0.1
    finally:
        runtime.close()


def test_a_segments_file_that_does_not_match_is_refused_and_the_last_good_keeps_serving(
    tmp_path, caplog
):
    """The segments half of issue 13's "Bad input": a segments version fitted on other
    features (or a damaged file) made live under a config that declares ``scroll_velocity``
    is refused with a message naming the segmentation, the field and the reason; readers keep
    the segment the last good version gave them, and the admin API shows the refusal."""
    root = tmp_path / "data" / "models"
    register_models(root)
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    runtime.models.check_every_s = 0.0
    try:
        t0 = time.time() * 1000
        runtime.ingest(reader("skim", 0.2, 4000.0, t0))
        runtime.ingest(reader("deep", 0.9, 300.0, t0))
        before = {u: runtime.features_of(u, f"{u}-s")["segment"] for u in ("skim", "deep")}
        assert before == {"skim": "late-evening-skimmers", "deep": "deep-readers"}
        # v2 clusters on scroll depth: it would put both readers in one segment, s1
        depth = Columns(parse_columns(["scroll_depth_max"]))
        one_segment = SegmentModel(depth, ["s1"], mean=np.array([0.5]), scale=np.array([0.2]),
                                   means=np.array([[0.0]]), prec_chol=np.array([[[1.0]]]),
                                   weights=np.array([1.0]))  # fmt: skip
        caplog.set_level(logging.ERROR, "trimtab.models")
        registry = Registry(root)
        wrong = registry.add("segments", "kmeans", one_segment.to_arrays(),
                             {"columns": depth.describe()}, stage="live")  # fmt: skip
        assert wrong.version == 2
        after = {u: runtime.features_of(u, f"{u}-s")["segment"] for u in ("skim", "deep")}
        assert after == before and runtime.models.segments.version == 1
        status = runtime.models.status()
        assert status["segments"]["version"] == 1
        refusal = status["refused"]["segments"]
        assert refusal.startswith("segments v2 (live): features: ['scroll_depth_max']")
        assert "do not match the config's ['scroll_velocity']" in refusal
        assert "refused segments v2" in caplog.text and "still serving segments v1" in caplog.text
        record = json.loads(runtime.features_of("skim", "skim-s")["_models"])
        assert record["segments"]["v"] == 1  # the decision log names the version that served
        headers = {"Authorization": "Bearer sk_test"}
        with TestClient(create_app(runtime, flush_interval_s=0.05)) as client:
            body = client.get("/v1/admin/models", headers=headers).json()
            assert body["serving"]["refused"]["segments"] == refusal
            assert body["serving"]["segments"]["version"] == 1
            served = client.get("/v1/admin/segments", headers=headers).json()
            assert served["serving"]["version"] == 1 and served["refused"] == refusal
        # a damaged file of the declared features: refused too, v1 still serves
        velocity = Columns(parse_columns(["scroll_velocity"]))
        damaged = registry.add("segments", "kmeans", one_segment.to_arrays(),
                               {"columns": velocity.describe()}, stage="live")  # fmt: skip
        path = registry.root / damaged.file
        path.write_bytes(path.read_bytes()[:200])
        assert runtime.features_of("skim", "skim-s")["segment"] == "late-evening-skimmers"
        refusal = runtime.models.status()["refused"]["segments"]
        assert refusal.startswith("segments v3 (live): cannot read ")
        # rolling back to the good version clears the refusal
        registry.set_stage("segments", 1, "live")
        assert runtime.features_of("deep", "deep-s")["segment"] == "deep-readers"
        assert "segments" not in runtime.models.status()["refused"]
    finally:
        runtime.close()


def test_a_config_reload_keeps_the_last_good_model_when_the_marked_one_is_refused(tmp_path):
    """Issue 13's "the live engine keeps serving the last good model" across a config reload
    too: a reload re-checks what the registry marks; a version it refuses leaves the one served
    before in place while that one still fits the config, and a model or segmentation whose
    declaration the new config changes stops serving."""
    root = tmp_path / "data" / "models"
    register_models(root)
    runtime = Runtime(load_config(config_file(tmp_path)), tmp_path / "data")
    runtime.models.check_every_s = 3600.0  # nothing reloads but the config reload
    try:
        t0 = time.time() * 1000
        runtime.ingest(reader("deep", 0.9, 300.0, t0))
        first = runtime.features_of("deep", "deep-s")
        assert first["p_subscribe"] > 0.9 and first["segment"] == "deep-readers"
        # v2 of p_subscribe, live, trained on another feature: the registry marks it, the
        # config refuses it
        registry = Registry(root)
        cols = Columns(parse_columns(["scroll_velocity"]))
        registry.add("p_subscribe", "logistic", Linear(np.array([1.0]), 0.0, "sigmoid")
                     .to_arrays(), {"columns": cols.describe(), "target": "binary"},
                     stage="live")  # fmt: skip
        renamed = {**CONFIG, "segments": {**CONFIG["segments"], "names": {"s1": "deep-divers"}}}
        runtime.reload(load_config_text(renamed, tmp_path))
        again = runtime.features_of("deep", "deep-s")
        assert again["p_subscribe"] == first["p_subscribe"]  # v1 still serves
        assert json.loads(again["_models"])["p_subscribe"]["v"] == 1
        assert runtime.models.status()["refused"]["p_subscribe:live"].startswith(
            "model p_subscribe v2 (live): features ['scroll_velocity']"
        )
        assert again["segment"] == "deep-divers"  # the new names reach the compiled bundle
        # a config that declares p_subscribe on scroll_velocity: v1 no longer fits and goes,
        # v2 fits and serves
        redeclared = {
            **CONFIG,
            "models": {"p_subscribe": {**CONFIG["models"]["p_subscribe"],
                                       "features": ["scroll_velocity"]}},
        }  # fmt: skip
        runtime.reload(load_config_text(redeclared, tmp_path))
        served = runtime.features_of("deep", "deep-s")
        assert json.loads(served["_models"])["p_subscribe"]["v"] == 2
        assert served["p_subscribe"] != first["p_subscribe"]
        assert "p_subscribe:live" not in runtime.models.status()["refused"]
        # and declared on scroll_depth_max again, v2 is refused and v1 is not brought back
        # (it is no longer served, nor marked live): nothing serves p_subscribe
        runtime.reload(load_config_text(CONFIG, tmp_path))
        assert "p_subscribe" not in runtime.features_of("deep", "deep-s")
        assert "p_subscribe:live" in runtime.models.status()["refused"]
    finally:
        runtime.close()
