"""Off-policy estimators against the Open Bandit Pipeline and Vowpal Wabbit reference outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trimtab.bandits import ope
from trimtab.bandits.logged import load_obd, load_vw_cb_eval
from trimtab.bandits.regression import AdaptiveRegressor, progressive_predictions

DATA = Path(__file__).resolve().parent / "data"
OBD = DATA / "obd"
VW = DATA / "vw"
OBP_REFERENCE = json.loads((OBD / "obp_reference_ope.json").read_text())


def _vw_reference() -> tuple[float, float]:
    """IPS from the data README statement and DR from the CLI's ``average loss`` line."""
    text = (VW / "rcv1_cb_eval.stderr").read_text()
    loss = next(line for line in text.splitlines() if line.startswith("average loss"))
    return 0.506, float(loss.split("=")[1])


@pytest.mark.parametrize("campaign", sorted(OBP_REFERENCE))
def test_obd_ipw_and_snipw_match_open_bandit_pipeline(campaign: str) -> None:
    reference = OBP_REFERENCE[campaign]
    log = load_obd(OBD, reference["behavior_policy"], campaign)
    assert len(log) == reference["n_rounds"]
    dist = np.asarray(reference["eval_action_dist_per_item_position"])
    assert dist.shape == (reference["n_actions"], reference["len_list"])
    target = dist[log.item, log.position]
    assert ope.ips(log.click, log.propensity, target).value == pytest.approx(
        reference["ipw"], abs=1e-6
    )
    assert ope.snips(log.click, log.propensity, target).value == pytest.approx(
        reference["snipw"], abs=1e-6
    )


@pytest.mark.parametrize("campaign", sorted(OBP_REFERENCE))
def test_obd_on_policy_ctr_of_the_sample(campaign: str) -> None:
    """IPS of the logging policy itself is its CTR (weights are all 1)."""
    reference = OBP_REFERENCE[campaign]
    log = load_obd(OBD, "random", campaign)
    estimate = ope.ips(log.click, log.propensity, log.propensity)
    assert estimate.value == pytest.approx(log.click.mean())
    if campaign == "all":
        assert estimate.value == pytest.approx(reference["on_policy_random_ctr_small_sample"])
        bts = load_obd(OBD, "bts", campaign)
        assert bts.click.mean() == pytest.approx(reference["on_policy_bts_ctr_small_sample"])


def test_vw_rcv1_ips_and_dr() -> None:
    ips_reference, dr_reference = _vw_reference()
    log = load_vw_cb_eval(VW / "rcv1_cb_eval")
    target = (log.policy_action == log.logged_action).astype(float)
    assert ope.ips(log.cost, log.probability, target).value == pytest.approx(
        ips_reference, abs=1e-9
    )
    # VW's DR reward model: a per-action cost regressor learned online (predict, then learn on
    # the logged action with importance weight 1/p), normalised adaptive invariant updates.
    q = np.asarray(
        progressive_predictions(
            log.features, log.logged_action - 1, log.cost, 1.0 / log.probability, n_actions=2
        )
    )
    rows = np.arange(len(log))
    dr = ope.doubly_robust(
        log.cost,
        log.probability,
        target,
        q[rows, log.logged_action - 1],
        q[rows, log.policy_action - 1],
    )
    assert dr.value == pytest.approx(dr_reference, abs=1e-3)
    assert dr.lower < dr.value < dr.upper


def _synthetic(seed: int, n: int = 4000, arms: int = 4) -> dict[str, np.ndarray]:
    """Uniform logging, a known target policy and Bernoulli rewards with known means."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.1, 0.6, size=(n, arms))
    logged = rng.integers(0, arms, n)
    pi = rng.dirichlet(np.ones(arms), size=n)
    rewards = (rng.random(n) < means[np.arange(n), logged]).astype(float)
    return {
        "means": means,
        "logged": logged,
        "pi": pi,
        "rewards": rewards,
        "p": np.full(n, 1.0 / arms),
        "truth": float((pi * means).sum(axis=1).mean()),
    }


@pytest.mark.parametrize("ci", ["normal", "bootstrap"])
def test_estimators_cover_the_true_value(ci: str) -> None:
    data = _synthetic(1)
    rows = np.arange(len(data["rewards"]))
    target = data["pi"][rows, data["logged"]]
    noisy_model = np.clip(data["means"] + 0.1, 0, 1)  # deliberately biased reward model
    kwargs = {"ci": ci, "n_boot": 300, "seed": 2}
    estimates = [
        ope.ips(data["rewards"], data["p"], target, **kwargs),
        ope.snips(data["rewards"], data["p"], target, **kwargs),
        ope.doubly_robust(
            data["rewards"],
            data["p"],
            target,
            noisy_model[rows, data["logged"]],
            ope.expected_reward(data["pi"], noisy_model),
            **kwargs,
        ),
    ]
    for estimate in estimates:
        assert estimate.lower <= data["truth"] <= estimate.upper, estimate
        assert estimate.upper - estimate.lower < 0.1
    dm = ope.direct_method(ope.expected_reward(data["pi"], noisy_model), **kwargs)
    assert dm.value == pytest.approx(data["truth"] + 0.1, abs=0.01)  # DM inherits model bias


def test_dr_with_a_perfect_model_has_smaller_error_than_ips() -> None:
    data = _synthetic(3)
    rows = np.arange(len(data["rewards"]))
    target = data["pi"][rows, data["logged"]]
    dr = ope.doubly_robust(
        data["rewards"],
        data["p"],
        target,
        data["means"][rows, data["logged"]],
        ope.expected_reward(data["pi"], data["means"]),
    )
    ips = ope.ips(data["rewards"], data["p"], target)
    assert dr.std_err < ips.std_err


def test_interval_narrows_with_confidence_level() -> None:
    data = _synthetic(4, n=500)
    target = data["pi"][np.arange(500), data["logged"]]
    wide = ope.ips(data["rewards"], data["p"], target, alpha=0.01)
    narrow = ope.ips(data["rewards"], data["p"], target, alpha=0.2)
    assert wide.lower < narrow.lower < narrow.value < narrow.upper < wide.upper


@pytest.mark.parametrize(
    ("p", "error"), [([0.5, 0.0], "propensities"), ([0.5, 1.5], "propensities")]
)
def test_rejects_invalid_propensities(p: list[float], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ope.ips([1.0, 0.0], p, [1.0, 1.0])


def test_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        ope.snips([1.0, 0.0], [0.5], [1.0, 1.0])


def test_regressor_learns_a_linear_cost() -> None:
    rng = np.random.default_rng(5)
    model = AdaptiveRegressor()
    for _ in range(3000):
        a, b = rng.random(2)
        model.learn({"a": a, "b": b}, arm=0, target=0.2 + 0.5 * a + 0.2 * b)
    assert model.predict({"a": 0.5, "b": 0.5}, arm=0) == pytest.approx(0.55, abs=0.05)
    assert model.predict({"a": 0.5, "b": 0.5}, arm=1) == 0.0
