"""Micro-segments: recover the simulator's latent reader groups, keep ids across refits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from typer.testing import CliRunner

from support import simulated_events
from trimtab.bus.sqlite import SqliteEventLog
from trimtab.cli import app
from trimtab.config import load_config, parse_config
from trimtab.models.columns import Columns, parse_columns
from trimtab.models.registry import Registry
from trimtab.models.segments import SegmentModel, SegmentsError, fit, register
from trimtab.sim.simulator import READER_GROUPS, Simulator

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
# Reading style over the whole visit (the demo's scroll features are per page).
VISIT_FEATURES = {
    "visit_scroll_velocity": {"kind": "scroll_velocity", "scope": "session", "window": 25},
    "visit_depth": {"kind": "scroll_depth_max", "scope": "session"},
    "taste": {"kind": "interest", "scope": "user", "half_life_s": 86400},
}
SEGMENTS = {
    "features": [
        "log(visit_scroll_velocity)",
        "visit_depth",
        "taste_share.politics",
        "taste_share.tech",
        "taste_share.science",
        "taste_share.sport",
        "taste_share.culture",
        "taste_share.travel",
        "device=mobile",
        "local_hour",
    ],
    "k": [2, 8],
    "conversion": "click:*",
}


def simulated(folder: Path, seed: int, sessions: int = 3000) -> dict[str, str]:
    """A grouped population's log in ``folder``; returns user → latent group."""
    sim = Simulator(seed=seed, n_users=1200, groups=READER_GROUPS)
    log = SqliteEventLog(folder / "events.sqlite")
    for events in sim.sessions(sessions):
        log.append_sync(events)
    log.close_sync()
    return {v.user_id: v.group for v in sim.users}


def site(names: dict[str, str] | None = None):
    import yaml

    data = yaml.safe_load(DEMO.read_text())
    data["features"].update(VISIT_FEATURES)
    data["segments"] = {**SEGMENTS, **({"names": names} if names else {})}
    return parse_config(data, "demo+segments")


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg1")
    groups = simulated(folder, seed=1)
    result = fit(site(), folder)
    return folder, groups, result


def test_segments_recover_the_latent_reader_groups(first):
    _, groups, result = first
    truth = [groups[u] for u in result.users]
    ari = adjusted_rand_score(truth, result.labels)
    assert ari >= 0.8, (
        f"adjusted Rand index {ari:.3f} (k={result.chosen.k}, {result.chosen.algorithm})"
    )
    assert {c.algorithm for c in result.candidates} == {"gmm", "kmeans", "hdbscan"}
    assert result.chosen.k == len(READER_GROUPS)
    sizes = [s["size"] for s in result.report["segments"]]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == result.rows  # s1 is the biggest
    for seg in result.report["segments"]:
        lo, hi = seg["conversion_ci"]
        assert lo <= seg["conversion"] <= hi and len(seg["defining"]) == 3


def test_ids_stay_with_the_same_readers_across_refits(first, tmp_path):
    _, groups, result = first
    registry_dir = tmp_path / "models"
    info, plots = register(result, site(), registry_dir, stage="live")
    assert all(p.stat().st_size > 10_000 for p in plots)
    old_ids = _majority(result, groups)
    later = tmp_path / "later"
    later.mkdir()
    later_groups = simulated(later, seed=2)  # another population of the same kinds of reader
    previous = SegmentModel.from_file(*Registry(registry_dir).load(info))
    refit = fit(site(), later, previous=previous, algorithm="kmeans")
    assert _majority(refit, later_groups) == old_ids
    assert all(how.startswith("kept") for how in refit.matched.values())
    fresh = fit(
        site(), later, algorithm="kmeans"
    )  # without the previous version, ids are only ordered by size
    assert sorted(fresh.model.ids) == sorted(refit.model.ids)


def _majority(result, groups) -> dict[str, str]:
    """latent group → the segment id most of its rows got."""
    out = {}
    for group in {g.name for g in READER_GROUPS}:
        ids = [result.model.ids[j] for u, j in zip(result.users, result.labels, strict=True)
               if groups[u] == group]  # fmt: skip
        out[group] = Counter(ids).most_common(1)[0][0]
    return out


def test_live_assignment_equals_scikit_learn():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (300, 3)), rng.normal(4, 0.5, (300, 3)) * [1, 50, 0.01]]
    cols = Columns(parse_columns(["a", "b", "c"]))
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / scale
    gmm = GaussianMixture(3, covariance_type="full", random_state=0).fit(z)
    model = SegmentModel(cols, ["s1", "s2", "s3"], mean, scale, gmm.means_,
                         gmm.precisions_cholesky_, gmm.weights_)  # fmt: skip
    best, p = model.assign_many(x)
    expected = gmm.predict_proba(z)
    assert np.array_equal(best, expected.argmax(axis=1))
    assert np.max(np.abs(p - expected.max(axis=1))) <= 1e-9
    seg, p0 = model.assign({"a": x[5, 0], "b": x[5, 1], "c": x[5, 2]})
    assert seg == model.ids[best[5]] and abs(p0 - p[5]) <= 1e-12
    assert np.max(np.abs(model.posterior(x[5]) - expected[5])) <= 1e-9
    km = MiniBatchKMeans(2, n_init=3, random_state=0).fit(z)
    from trimtab.models.segments import _spherical

    _, prec, _ = _spherical(z, km.labels_, 2, shared=True)
    nearest = SegmentModel(cols, ["s1", "s2"], mean, scale, km.cluster_centers_, prec,
                           np.full(2, 0.5))  # fmt: skip
    assert np.array_equal(nearest.assign_many(x)[0], km.predict(z))


def test_bad_inputs_are_refused():
    with pytest.raises(SegmentsError, match="array shapes"):
        SegmentModel(Columns(parse_columns(["a"])), ["s1"], np.zeros(1), np.ones(1),
                     np.zeros((1, 2)), np.ones((1, 2, 2)), np.ones(1))  # fmt: skip
    with pytest.raises(SegmentsError, match="non-finite"):
        SegmentModel(Columns(parse_columns(["a"])), ["s1"], np.array([np.nan]), np.ones(1),
                     np.zeros((1, 1)), np.ones((1, 1, 1)), np.ones(1))  # fmt: skip
    model = SegmentModel(Columns(parse_columns(["a"])), ["s1"], np.zeros(1), np.ones(1),
                         np.zeros((1, 1)), np.ones((1, 1, 1)), np.ones(1))  # fmt: skip
    assert model.assign({"a": float("inf")}) is None and model.assign({"a": 2.0})[0] == "s1"


def test_fit_and_show_commands(first, tmp_path):
    import shutil

    import yaml

    folder, _, _ = first
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(folder / "events.sqlite", data_dir / "events.sqlite")
    config = yaml.safe_load(DEMO.read_text())
    config["features"].update(VISIT_FEATURES)
    config["segments"] = {**SEGMENTS, "names": {"s1": "deep-readers"}, "algorithm": "kmeans"}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    done = runner.invoke(app, ["segments", "fit", str(path), "--data-dir", str(data_dir), "--live"])
    assert done.exit_code == 0, done.output
    assert "segments v1 (kmeans, k=4, live)" in done.output and "deep-readers" in done.output
    shown = runner.invoke(app, ["segments", "show", str(path), "--data-dir", str(data_dir)])
    assert shown.exit_code == 0 and "segments v1 (kmeans, live)" in shown.output
    assert "conversion" in shown.output and "profiles.png" in shown.output
    again = runner.invoke(app, ["segments", "fit", str(path), "--data-dir", str(data_dir)])
    assert (
        "ids matched to v1" in again.output and "segments v2 (kmeans, k=4, shadow)" in again.output
    )
    bad = dict(config, segments={**config["segments"], "names": {"seg1": "x"}})
    path.write_text(yaml.safe_dump(bad))
    refused = runner.invoke(app, ["segments", "show", str(path), "--data-dir", str(data_dir)])
    assert (
        refused.exit_code == 2
        and "$.segments.names.seg1: segment ids look like s1" in refused.output
    )
    assert json.loads(json.dumps(load_config(DEMO).segments)) == load_config(DEMO).segments


# -- bad input: refused naming the field and the reason, nothing registered ----------------
@pytest.fixture(scope="module")
def few(tmp_path_factory) -> Path:
    """12 visits: too few rows to look for 2+ segments."""
    return simulated_events(tmp_path_factory.mktemp("few"), seed=5, sessions=12, users=12)


@pytest.fixture(scope="module")
def enough(tmp_path_factory) -> Path:
    """40 visits: enough rows to get past the window check."""
    return simulated_events(tmp_path_factory.mktemp("enough"), seed=5, sessions=40, users=40)


def config_path(folder: Path) -> Path:
    """The :func:`site` config as a file, for the CLI."""
    import yaml

    config = yaml.safe_load(DEMO.read_text())
    config["features"].update(VISIT_FEATURES)
    config["segments"] = SEGMENTS
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_too_small_and_empty_windows_are_refused_naming_the_window(few, enough):
    with pytest.raises(SegmentsError) as caught:
        fit(site(), few)
    assert (caught.value.where, str(caught.value).split(" (")[0]) == (
        "window",
        "segments: window: 12 session_end rows are too few to find 2+ segments",
    )
    assert "need ≥ 20" in str(caught.value) and "--since" not in str(caught.value)
    with pytest.raises(SegmentsError) as caught:
        fit(site(), enough, since_ms=4e12)  # a window after every visit
    message = str(caught.value)
    assert message.startswith("segments: window: 0 session_end rows are too few")
    assert message.endswith("; widen --since/--until")
    with pytest.raises(SegmentsError, match=r"^segments: window: 0 .*widen --since/--until$"):
        fit(site(), enough, until_ms=1.0)  # a window before every visit
    assert not (few / "models").exists() and not (enough / "models").exists()


def test_segments_fit_command_refuses_a_small_or_empty_window_in_one_line(few, enough, tmp_path):
    path = config_path(tmp_path)
    runner = CliRunner()
    for data, extra in ((few, []), (enough, ["--since", "2100-01-01"])):
        done = runner.invoke(app, ["segments", "fit", str(path), "--data-dir", str(data), *extra])
        assert done.exit_code == 2, done.output
        lines = done.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("refused segments: window: "), lines
        assert "rows are too few to find 2+ segments" in lines[0]
        assert not (data / "models").exists()


def test_non_finite_feature_values_are_refused_naming_the_column(enough, tmp_path, monkeypatch):
    """The event schema bounds every number, so no log replays to NaN today; a value that
    got through anyway (an older log, a future feature kind) is injected between the replay
    and the clustering — the real ``dataset.build`` runs, then one row is spoiled."""
    from trimtab.models import dataset

    real_build = dataset.build

    def spoiled(*args, **kwargs):
        data = real_build(*args, **kwargs)
        data.rows[3].attrs["visit_depth"] = float("nan")
        data.rows[7].attrs["visit_depth"] = float("inf")
        data.rows[9].attrs["local_hour"] = float("-inf")
        return data

    monkeypatch.setattr(dataset, "build", spoiled)
    with pytest.raises(SegmentsError) as caught:
        fit(site(), enough)
    message = str(caught.value)
    # the first declared column holding one (visit_depth comes before local_hour), its count
    assert caught.value.where == "features[visit_depth]"
    assert message.startswith("segments: features[visit_depth]: 2 rows hold NaN or infinite")
    assert "(first: user " in message and "drop the column" in message
    assert not (enough / "models").exists()
    done = CliRunner().invoke(
        app, ["segments", "fit", str(config_path(tmp_path)), "--data-dir", str(enough)]
    )
    assert done.exit_code == 2, done.output
    assert done.output.startswith("refused segments: features[visit_depth]: 2 rows hold NaN")
    assert len(done.output.strip().splitlines()) == 1
    assert not (enough / "models").exists()
