"""The Open Bandit Dataset through trimtab's logs: faithful conversion, training, OPE with a
registered reward model."""

from __future__ import annotations

import csv
import gzip
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trimtab.bandits import logeval
from trimtab.cli import app
from trimtab.config import load_config
from trimtab.models.obd import write_logs
from trimtab.models.reward import RewardModel, load_scorer
from trimtab.models.train import train

OBD = Path(__file__).parent / "data" / "obd"


@pytest.fixture(scope="module")
def men(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("obd")
    return folder, write_logs(OBD, folder, behaviors=("random",), campaigns=("men",))


def test_every_row_becomes_a_decision_an_exposure_and_maybe_a_click(men):
    folder, config_path = men
    with gzip.open(OBD / "random" / "men" / "men.csv.gz", "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    events = sqlite3.connect(folder / "events.sqlite")
    kinds = dict(events.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    assert kinds == {"exposure": len(rows), "click": sum(r["click"] == "1" for r in rows)}
    decisions = sqlite3.connect(folder / "decisions.sqlite")
    logged = dict(decisions.execute("SELECT decision_id, propensity FROM decisions").fetchall())
    assert len(logged) == len(rows)
    assert logged["random-men-17"] == float(rows[17]["propensity_score"])
    config = load_config(config_path)
    assert len(config.slots["men"].variants) == 34
    assert config.slots["men"].variants["men-3"]["item_feature_1"]


def test_click_model_trains_and_serves_as_the_ope_reward_model(men):
    folder, config_path = men
    config = load_config(config_path)
    result = train(config, "click", folder, algorithm="logistic", stage="live", n_boot=50)
    assert result.rows_test > 2000 and 0.0 < result.metrics["auc"] < 1.0
    assert result.compiled_max_diff <= 1e-9
    from trimtab.attribution import Reward

    rounds = logeval.load_rounds(folder, "men", Reward(event="click:*", window_s=60.0))
    assert len(rounds) == 10_000 and sum(r.reward for r in rounds) == 46
    variants = list(config.slots["men"].variants)
    scorer, info = load_scorer(folder / "models", "click")
    assert info.version == result.version.version
    q = RewardModel(scorer, "men", variants, config.slots["men"].variants)
    q.prefetch([r.features for r in rounds[:50]])
    one = q(rounds[3].features)
    assert set(one) == set(variants) and all(0 < v < 1 for v in one.values())
    # what the model says for the logged variant is what it says for that exposure row
    row = {
        **rounds[3].features,
        "slot": "men",
        "variant": rounds[3].variant,
        "item": config.slots["men"].variants[rounds[3].variant],
    }
    assert abs(one[rounds[3].variant] - scorer.score(row)) < 1e-12
    estimates = logeval.evaluate(rounds, variants, logeval.uniform(), reward_model=q)
    observed = np.mean([r.reward for r in rounds])
    assert abs(estimates["DR"].value - observed) < 0.01  # uniform logging: DR ≈ the mean reward
    assert estimates["DM"].lower <= estimates["DM"].value <= estimates["DM"].upper
    done = CliRunner().invoke(
        app,
        [
            "ope",
            str(config_path),
            "--slot",
            "men",
            "--data-dir",
            str(folder),
            "--window-s",
            "60",
            "--reward-model",
            "click",
            "--target",
            "uniform",
        ],
    )
    assert done.exit_code == 0, done.output
    assert f"DM/DR reward model: click v{info.version} (logistic" in done.output
    missing = CliRunner().invoke(
        app,
        [
            "ope",
            str(config_path),
            "--slot",
            "men",
            "--data-dir",
            str(folder),
            "--reward-model",
            "nope",
        ],
    )
    assert missing.exit_code == 2 and "no model 'nope'" in missing.output
