"""The bandit benchmark on a slice of the real OBD logs: rows, intervals and peer adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trimtab.bandits.logged import load_obd, one_hot_contexts
from trimtab_bench import bandits

OBD = Path(__file__).resolve().parent / "data" / "obd"


def test_run_returns_rows_for_logged_and_trimtab_policies() -> None:
    rows = bandits.run(OBD, "men", peers=False, limit=1500, synthetic_rounds=200, render=False)
    by_name = {row["policy"]: row for row in rows}
    random_log = load_obd(OBD, "random", "men")
    bts_log = load_obd(OBD, "bts", "men")
    assert by_name["random (logged)"]["ctr"] == pytest.approx(random_log.click[:1500].mean())
    assert by_name["Bernoulli TS (logged, bts)"]["ctr"] == pytest.approx(bts_log.click.mean())
    trimtab_rows = [row for row in rows if row["library"] == "trimtab"]
    assert {r["policy"] for r in trimtab_rows} == set(bandits.trimtab_policies(34, 10, 0))
    for row in trimtab_rows:
        assert row["n"] == 1500
        assert row["lower"] <= row["ctr"] <= row["upper"]
        assert row["choose_us"] > 0 and row["update_us"] > 0
    assert all(r["synthetic_choose_us"] for r in trimtab_rows if "shared" not in r["policy"])


def test_vw_adapter_gives_probabilities_of_logged_actions() -> None:
    pytest.importorskip("vowpalwabbit")
    log = load_obd(OBD, "random", "men")
    n = 200
    shared = [
        bandits._vw_shared(f, int(p))
        for f, p in zip(log.user_features[:n], log.position[:n], strict=True)
    ]
    target, predict_ns, learn_ns = bandits.run_vw(
        "--cb_explore_adf --epsilon 0.2 -q ua",
        shared,
        log.item[:n],
        log.click[:n],
        log.propensity[:n],
        log.n_items,
        seed=0,
    )
    assert target.shape == (n,)
    assert np.all(target >= 0.2 / log.n_items - 1e-6) and np.all(target <= 1.0)
    assert len(predict_ns) == len(learn_ns) == n


def test_mabwiser_adapter_indicator_probabilities() -> None:
    pytest.importorskip("mabwiser")
    log = load_obd(OBD, "random", "men")
    n = 150
    contexts = one_hot_contexts(log)[:n]
    target, _, _ = bandits.run_mabwiser(
        "LinUCB", contexts, log.item[:n], log.click[:n], log.n_items, 0
    )
    assert target[0] == pytest.approx(1.0 / log.n_items)
    assert set(np.unique(target[1:])) <= {0.0, 1.0}
