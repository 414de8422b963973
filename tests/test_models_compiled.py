"""Served models give the library's own predictions: trees to 1e-9, the MLP to 1e-6."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from trimtab.models.linear import Linear, fit_linear, library_predict
from trimtab.models.mlp import MLP, torch_predict, train_mlp
from trimtab.models.trees import TreeEnsemble, TreeModelError


def data(seed: int = 0, n: int = 3000, d: int = 12):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    x[rng.random(x.shape) < 0.3] = 0.0
    y = ((x[:, 0] + x[:, 1] * x[:, 2] + rng.random(n) * 0.5) > 1.0).astype(float)
    counts = rng.poisson(1.0 + 2.0 * x[:, 0])
    return x, y, counts.astype(float)


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary"},
        {"objective": "binary", "zero_as_missing": True},
        {"objective": "binary", "num_leaves": 64, "min_child_samples": 5},
        {"objective": "regression"},
        {"objective": "poisson"},
        {"objective": "binary", "use_missing": False},
    ],
)
def test_compiled_trees_equal_lightgbm_predict(params):
    x, y, counts = data()
    train_x = x.copy()
    if params.get("zero_as_missing") or params == {"objective": "binary"}:
        train_x[np.random.default_rng(1).random(x.shape) < 0.05] = np.nan  # NaN-aware splits
    target = y if params["objective"] == "binary" else counts
    booster = lgb.train(
        {"verbose": -1, "num_threads": 1, "deterministic": True, **params},
        lgb.Dataset(train_x, target),
        num_boost_round=120,
    )
    trees = TreeEnsemble.from_lightgbm(booster)
    assert trees.n_trees >= 100
    query, _, _ = data(seed=2, n=2000)
    query[np.random.default_rng(3).random(query.shape) < 0.03] = np.nan
    expected = booster.predict(query)
    assert np.max(np.abs(trees.predict_many(query) - expected)) <= 1e-9
    one_by_one = np.array([trees.predict(row) for row in query[:300]])
    assert np.max(np.abs(one_by_one - expected[:300])) <= 1e-9
    raw = booster.predict(query, raw_score=True)
    assert np.max(np.abs(trees.raw_many(query) - raw)) <= 1e-9
    again = TreeEnsemble.from_arrays(trees.to_arrays())
    assert np.array_equal(again.predict_many(query), trees.predict_many(query))


def test_the_sklearn_wrapper_compiles_too():
    x, y, _ = data()
    model = lgb.LGBMClassifier(n_estimators=100, verbose=-1, n_jobs=1).fit(x, y)
    trees = TreeEnsemble.from_lightgbm(model)
    assert np.max(np.abs(trees.predict_many(x[:500]) - model.predict_proba(x[:500])[:, 1])) <= 1e-9


def test_what_cannot_be_served_is_refused():
    x, y, _ = data()
    ova = lgb.train(
        {"objective": "multiclassova", "num_class": 3, "verbose": -1},
        lgb.Dataset(x, (x[:, 0] * 3).astype(int)),
        num_boost_round=3,
    )
    with pytest.raises(TreeModelError, match="multiclassova"):
        TreeEnsemble.from_lightgbm(ova)
    wide = lgb.train(
        {"objective": "binary", "num_leaves": 100, "min_data_in_leaf": 2, "verbose": -1},
        lgb.Dataset(np.random.default_rng(0).random((5000, 5)), np.arange(5000) % 2),
        num_boost_round=2,
    )
    with pytest.raises(TreeModelError, match="≤ 64"):
        TreeEnsemble.from_lightgbm(wide)
    cats = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_per_group": 1, "cat_smooth": 0},
        lgb.Dataset(np.c_[(np.arange(3000) % 7), x[:, :2]], y, categorical_feature=[0]),
        num_boost_round=5,
    )
    if "==" in str(cats.dump_model()):
        with pytest.raises(TreeModelError, match="categorical"):
            TreeEnsemble.from_lightgbm(cats)
    arrays = TreeEnsemble.from_lightgbm(
        lgb.train({"verbose": -1}, lgb.Dataset(x, y), 3)
    ).to_arrays()
    arrays["feature"] = arrays["feature"] + 100
    with pytest.raises(TreeModelError, match="outside"):
        TreeEnsemble.from_arrays(arrays)


@pytest.mark.parametrize("kind", ["binary", "count"])
def test_mlp_numpy_forward_equals_torch(kind):
    x, y, counts = data(n=2000)
    target = y if kind == "binary" else counts
    served, net = train_mlp(x, target, kind, hidden=(16, 8), epochs=5, seed=1)
    query, _, _ = data(seed=5, n=1000)
    expected = torch_predict(net, query, kind)
    assert np.max(np.abs(served.predict_many(query) - expected)) <= 1e-6
    one_by_one = np.array([served.predict(row) for row in query[:200]])
    assert np.max(np.abs(one_by_one - expected[:200])) <= 1e-6
    again = MLP.from_arrays(served.to_arrays())
    assert np.array_equal(again.predict_many(query), served.predict_many(query))


@pytest.mark.parametrize("kind", ["binary", "count"])
def test_linear_baseline_equals_scikit_learn(kind):
    x, y, counts = data()
    target = y if kind == "binary" else counts
    served, pipeline = fit_linear(x, target, kind)
    expected = library_predict(pipeline, x, kind)
    assert np.max(np.abs(served.predict_many(x) - expected)) <= 1e-9
    assert abs(served.predict(x[7]) - expected[7]) <= 1e-9
    assert Linear.from_arrays(served.to_arrays()).predict(x[7]) == served.predict(x[7])
