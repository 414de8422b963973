"""The compiled scorer (C, built on first use) gives what the libraries' own predict gives —
trees to 1e-9, networks to 1e-6 — reads the same vector as ``Columns.vector``, and trimtab falls
back to numpy, with the same results, when it cannot be built."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.features import SummedMap
from trimtab.models import native
from trimtab.models.columns import Columns, parse_columns
from trimtab.models.linear import fit_linear, library_predict
from trimtab.models.mlp import torch_predict, train_mlp
from trimtab.models.scorer import Scorer
from trimtab.models.trees import TreeEnsemble

pytestmark = pytest.mark.skipif(
    native.load() is None, reason=f"no compiled scorer here: {native.status()}"
)
D = 8
NAMES = [f"f{j}" for j in range(D)]


def data(seed: int = 0, n: int = 3000, classes: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, D))
    x[rng.random(x.shape) < 0.3] = 0.0
    signal = x[:, 0] + x[:, 1] * x[:, 2] + rng.random(n) * 0.5
    if classes:
        return x, np.minimum((signal * classes / 2.0).astype(int), classes - 1)
    return x, (signal > 1.0).astype(float)


def scorer(model, kind: str = "binary") -> Scorer:
    classes = [f"c{j}" for j in range(getattr(model, "n_outputs", 1))]
    meta = {"classes": classes} if len(classes) > 1 else {}
    s = Scorer("m", 1, "lightgbm", Columns(parse_columns(NAMES)), model, kind, meta)
    assert s.compiled is not None
    return s


def attrs_of(row: np.ndarray) -> dict:
    return {name: float(v) for name, v in zip(NAMES, row, strict=True)}


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary"},
        {"objective": "binary", "zero_as_missing": True},
        {"objective": "binary", "num_leaves": 64, "min_child_samples": 5},
        {"objective": "regression"},
        {"objective": "poisson"},
        {"objective": "multiclass", "num_class": 4},
    ],
)
def test_compiled_trees_equal_booster_predict(params):
    classes = params.get("num_class", 0)
    x, y = data(classes=classes)
    if params["objective"] == "poisson":
        y = np.random.default_rng(4).poisson(1 + 2 * x[:, 0]).astype(float)
    train_x = x.copy()
    train_x[np.random.default_rng(1).random(x.shape) < 0.05] = np.nan  # NaN-aware splits
    booster = lgb.train(
        {"verbose": -1, "num_threads": 1, "deterministic": True, **params},
        lgb.Dataset(train_x, y),
        num_boost_round=110,
    )
    trees = TreeEnsemble.from_lightgbm(booster)
    compiled = scorer(trees, "multiclass" if classes else "binary")
    query, _ = data(seed=2, n=1500)
    query[np.random.default_rng(3).random(query.shape) < 0.03] = np.nan
    expected = booster.predict(query)
    walked = np.array([compiled.compiled.predict(row.tolist()) for row in query])
    assert np.max(np.abs(walked - expected)) <= 1e-9
    finite = ~np.isnan(query).any(axis=1)
    scored = np.array([compiled.score(attrs_of(row)) for row in query[finite]])
    assert np.max(np.abs(scored - expected[finite])) <= 1e-9
    assert compiled.score(attrs_of(query[~finite][0])) is None  # NaN input: not scored
    # the numpy form agrees too (it serves when there is no compiler)
    assert np.max(np.abs(trees.predict_many(query) - expected)) <= 1e-9
    again = TreeEnsemble.from_arrays(trees.to_arrays())
    assert np.array_equal(again.predict_many(query), trees.predict_many(query))


@pytest.mark.parametrize("kind", ["binary", "count", "multiclass"])
def test_compiled_mlp_equals_torch(kind):
    x, y = data(n=2000, classes=3 if kind == "multiclass" else 0)
    if kind == "count":
        y = np.random.default_rng(4).poisson(1 + 2 * x[:, 0]).astype(float)
    served, net = train_mlp(x, y, kind, hidden=(16, 8), epochs=4, seed=1)
    compiled = scorer(served, kind)
    query, _ = data(seed=5, n=800)
    expected = torch_predict(net, query, kind)
    got = np.array([compiled.score(attrs_of(row)) for row in query])
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-6
    assert np.max(np.abs(served.predict_many(query) - expected)) <= 1e-6


@pytest.mark.parametrize("kind", ["binary", "count", "multiclass"])
def test_compiled_linear_equals_scikit_learn(kind):
    x, y = data(classes=3 if kind == "multiclass" else 0)
    if kind == "count":
        y = np.random.default_rng(4).poisson(1 + 2 * x[:, 0]).astype(float)
    served, pipeline = fit_linear(x, y, kind)
    compiled = scorer(served, kind)
    expected = library_predict(pipeline, x[:500], kind)
    got = np.array([compiled.score(attrs_of(row)) for row in x[:500]])
    assert np.max(np.abs(got - expected)) <= 1e-9


def test_score_all_reads_shared_columns_once_and_equals_each_model():
    x, y = data(n=2000)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 100)
    trees = scorer(TreeEnsemble.from_lightgbm(booster))
    served, _ = fit_linear(x, y, "binary")
    linear = scorer(served)
    other = Scorer("o", 1, "logistic", Columns(parse_columns(NAMES[::-1])), served)
    assert native.reader_ops(trees.columns) is native.reader_ops(linear.columns)
    bundle = (trees.compiled, linear.compiled, other.compiled)
    for row in x[:300]:
        attrs = attrs_of(row)
        got = native.score_all(bundle, attrs)
        assert got == [trees.score(attrs), linear.score(attrs), other.score(attrs)]
    assert native.score_all(bundle, {"f0": float("nan")}) == [None, None, None]
    with pytest.raises(TypeError):
        native.score_all((trees.compiled, "not a model"), {})


# -- the reader --------------------------------------------------------------------------------
DECLARED = [
    "a",
    "m.k",
    "log(a)",
    "log(m.k)",
    "sum(m)",
    "log(sum(m))",
    "d=mobile",
    "d=*",
    "m.k=x",
    "n.$d",  # a `$` path: read in Python by the compiled reader too
    "p.q.r",  # three keys: likewise
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["mobile", "desktop", "x", "", "1"]),
    st.floats(-1e3, 1e3).map(np.float64),
)
values = st.one_of(
    scalars,
    st.dictionaries(st.sampled_from(["k", "x", "mobile", "q"]), scalars, max_size=3),
    st.lists(scalars, max_size=2),
)
attributes = st.dictionaries(st.sampled_from(["a", "m", "d", "n", "p", "z"]), values, max_size=6)


@settings(max_examples=400, deadline=None)
@given(attributes, st.booleans())
def test_compiled_reader_reads_what_columns_read(attrs, nested):
    if nested:
        attrs["p"] = {"q": {"r": attrs.get("a")}}
    columns = Columns(
        parse_columns(DECLARED), levels={"d=*": ["desktop", "mobile", "1", "True", "true"]}
    )
    weights = np.zeros(len(columns))
    from trimtab.models.linear import Linear

    model = native.compile_model(columns, Linear(weights, 0.0, "identity"))
    assert model is not None
    expected = columns.vector(attrs)
    got = model.vector(attrs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == e or (g != g and e != e), (attrs, got, expected)
    if isinstance(attrs.get("m"), dict):  # the same map keeping its sum (numbers only)
        try:
            attrs["m"] = SummedMap(attrs["m"])
        except TypeError:
            return
        got = model.vector(attrs)  # sum(m) from the kept total; Columns walks the map
        for g, e in zip(got, expected, strict=True):
            assert g == e or (g != g and e != e), (attrs, got, expected)


@pytest.mark.parametrize(
    "counts",
    [
        {"card": 3, "nav": 1},  # click_count's maps: ints, summed in C
        {"k": 2**53, "x": 1},  # the sum needs rounding to a double: as float(int) rounds it
        {"k": 2**53 + 1, "x": 2**53 + 1, "q": -3},
        {"k": 2**62, "x": 2**62},  # beyond the C sum's range: Python's exact sum
        {"k": 2**70, "x": -(2**70), "q": 5},
        {"k": -7, "x": True},  # a bool among ints: Python
        {"k": 3, "x": 0.5},  # mixed: Python
        {"k": 0},
    ],
)
def test_the_compiled_reader_sums_counts_as_python_sums_them(counts):
    columns = Columns(parse_columns(["sum(m)", "log(sum(m))"]))
    from trimtab.models.linear import Linear

    model = native.compile_model(columns, Linear(np.zeros(len(columns)), 0.0, "identity"))
    assert model is not None
    got = model.vector({"m": counts})
    assert got == columns.vector({"m": counts})
    assert got[0] == float(sum(counts.values()))
    assert model.vector({"m": SummedMap(counts)}) == got  # the kept sum, read in C


def test_the_compiled_reader_takes_any_mapping_through_python():
    from collections import OrderedDict
    from types import MappingProxyType

    columns = Columns(parse_columns(DECLARED), levels={"d=*": ["desktop", "mobile"]})
    from trimtab.models.linear import Linear

    model = native.compile_model(columns, Linear(np.zeros(len(columns)), 0.0, "identity"))
    attrs = {"a": 2.0, "m": {"k": "x", "q": 1.5}, "d": "mobile", "n": {"mobile": 3}}
    for wrapped in (
        OrderedDict(attrs),
        MappingProxyType(attrs),
        {**attrs, "m": OrderedDict(attrs["m"])},
    ):
        assert model.vector(wrapped) == columns.vector(wrapped)


def test_live_models_score_the_same_in_one_compiled_call_and_one_by_one(tmp_path):
    """LiveModels scores every served model in one call; without the compiled scorer (no
    compiler) each one is scored with numpy: the attributes must not differ."""
    from trimtab.config import parse_config
    from trimtab.models.live import LiveModels
    from trimtab.models.registry import Registry

    x, y = data(n=2000)
    config = parse_config(
        {
            "features": {f: {"kind": "scroll_depth_max"} for f in NAMES},
            "slots": {"s": {"default": "a", "variants": {"a": {}}}},
            "models": {
                "p_trees": {"target": {"event": "click:*"}, "features": NAMES},
                "p_linear": {"target": {"event": "click:*"}, "features": NAMES},
            },
        }
    )
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 100)
    served, _ = fit_linear(x, y, "binary")
    registry = Registry(tmp_path)
    meta = {"columns": Columns(parse_columns(NAMES)).describe(), "target": "binary"}
    registry.add("p_trees", "lightgbm", TreeEnsemble.from_lightgbm(booster).to_arrays(), meta,
                 stage="live")  # fmt: skip
    registry.add("p_linear", "logistic", served.to_arrays(), meta, stage="shadow")
    live = LiveModels(config, tmp_path, check_every_s=3600.0)
    assert live._bundle is not None  # one compiled object for both models
    together = [live.compute(attrs_of(row)) for row in x[:200]]
    live._bundle = None
    one_by_one = [live.compute(attrs_of(row)) for row in x[:200]]
    assert together == one_by_one  # each model's own compiled call
    for scorer in (*live.live.values(), *live.shadow.values()):
        scorer.compiled = None  # as on a server without a compiler
    with_numpy = [live.compute(attrs_of(row)) for row in x[:200]]
    for a, b in zip(together, with_numpy, strict=True):
        assert abs(a["p_trees"] - b["p_trees"]) <= 1e-12
        shadow_a = json.loads(a["_models"])["p_linear~shadow"]["score"]
        assert abs(shadow_a - json.loads(b["_models"])["p_linear~shadow"]["score"]) <= 1e-6


def test_the_compiled_bundle_writes_what_python_writes(tmp_path):
    """The bundle (union reader, every model, attributes and the log record written in C)
    against the reference model by model with numpy: segments named and under min_p, a
    multiclass model, a shadow model, inputs that are not finite, too few events."""
    from trimtab.config import parse_config
    from trimtab.models.live import LiveModels
    from trimtab.models.registry import Registry
    from trimtab.models.segments import SegmentModel

    x, y = data(n=2000)
    _, classes = data(n=2000, classes=3)
    seg_cols = ["f1", "f0", "d=mobile"]  # overlaps the models' columns, in another order
    features = [*NAMES, "d=*"]
    config = parse_config(
        {
            "features": {f: {"kind": "scroll_depth_max"} for f in NAMES},
            "slots": {"s": {"default": "a", "variants": {"a": {}}}},
            "models": {
                "p_trees": {"target": {"event": "click:*"}, "features": features},
                "next_cat": {
                    "target": {"event": "click:*", "type": "category", "by": "category"},
                    "features": features,
                },
                "p_mlp": {"target": {"event": "click:*"}, "features": features},
            },
            "segments": {
                "features": seg_cols,
                "names": {"s1": "déjà lus"},  # non-ASCII: the record is still valid JSON
                "min_p": 0.6,
                "min_events": 3,
            },
        }
    )
    levels = {"d=*": ["desktop", "mobile"]}
    cols = Columns(parse_columns(features), levels)
    xd = np.hstack([x, np.eye(2)[np.arange(len(x)) % 2]])
    registry = Registry(tmp_path)
    meta = {"columns": cols.describe(), "target": "binary"}
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(xd, y), 100)
    registry.add("p_trees", "lightgbm", TreeEnsemble.from_lightgbm(booster).to_arrays(), meta,
                 stage="live")  # fmt: skip
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(xd, classes), 40
    )
    registry.add("next_cat", "lightgbm", TreeEnsemble.from_lightgbm(multi).to_arrays(),
                 {**meta, "target": "category", "classes": ["tech", "sport", "x\"y"]},
                 stage="live")  # fmt: skip
    mlp, _ = train_mlp(xd, y, "binary", hidden=(8,), epochs=2)
    registry.add("p_mlp", "mlp", mlp.to_arrays(), meta, stage="shadow")
    rng = np.random.default_rng(0)
    k, d = 3, len(seg_cols)
    segments = SegmentModel(
        Columns(parse_columns(seg_cols)),
        ["s1", "s2", "s3"],
        np.full(d, 0.5),
        np.full(d, 0.3),
        rng.normal(size=(k, d)),
        np.stack([np.eye(d) for _ in range(k)]),
        np.ones(k),
        version=2,
    )
    registry.add("segments", "segments", segments.to_arrays(),
                 {"columns": segments.columns.describe()}, stage="live")  # fmt: skip
    live = LiveModels(config, tmp_path, check_every_s=3600.0)
    assert live._bundle is not None and not live.errors, live.errors
    seen = {"segment": set(), "skipped": 0, "unscored": 0}
    for j, row in enumerate(xd[:600]):
        attrs = {**attrs_of(row[:D]), "d": ("mobile", "desktop", "tablet")[j % 3]}
        if j % 17 == 0:
            attrs[NAMES[j % D]] = (float("nan"), float("inf"))[j % 2]
        events = (None, 2, 50)[j % 3]
        got, want = live.compute(attrs, events), live.compute_reference(attrs, events)
        record, expected = json.loads(got.pop("_models")), json.loads(want.pop("_models"))
        assert record == expected, (attrs, record, expected)
        assert got.keys() == want.keys()
        for key, value in got.items():
            if key == "p_trees" or key == "next_cat_p":
                assert abs(value - want[key]) <= 1e-9
            elif key == "next_cat_p_by_class":
                assert value.keys() == want[key].keys()
                assert all(abs(value[c] - want[key][c]) <= 1e-9 for c in value)
            elif key == "segment_p":
                assert abs(value - want[key]) <= 1e-9
            else:
                assert value == want[key], key
        seen["segment"].add(got.get("segment"))
        seen["skipped"] += "skipped" in record.get("segments", {})
        seen["unscored"] += "skipped" in record.get("p_trees", {})
    assert {"déjà lus", ""} <= seen["segment"] and seen["skipped"] and seen["unscored"]


def test_live_read_keeps_each_users_scores_until_their_features_change(tmp_path, monkeypatch):
    """LiveModels.read keeps one compiled slot per user, evaluated into in place: what it adds
    equals a fresh compute on the same attributes (values, key order, the record's bytes) at
    every read; it re-scores exactly when an event was applied to the user or the page view,
    session or local hour differs, and never otherwise; erasure drops the slot; the slots
    stay within MAX_CACHED."""
    from trimtab.config import parse_config
    from trimtab.events import PageView, Scroll
    from trimtab.features import FeatureProcessor
    from trimtab.models import live as live_module
    from trimtab.models.linear import Linear
    from trimtab.models.live import LiveModels
    from trimtab.models.registry import Registry
    from trimtab.models.segments import SegmentModel

    features = ["depth", "log(speed)", "local_hour"]
    config = parse_config(
        {
            "features": {
                "depth": {"kind": "scroll_depth_max", "scope": "page"},
                "speed": {"kind": "scroll_velocity", "scope": "session"},
            },
            "slots": {"s": {"default": "a", "variants": {"a": {}}}},
            "models": {"p": {"target": {"event": "click:*"}, "features": features}},
            "segments": {"features": ["log(speed)"], "min_events": 2, "names": {"s1": "slow"}},
        }
    )
    registry = Registry(tmp_path)
    model = Linear(np.array([3.0, 0.2, 0.05]), -1.0, "sigmoid")
    meta = {"columns": Columns(parse_columns(features)).describe(), "target": "binary"}
    registry.add("p", "logistic", model.to_arrays(), meta, stage="live")
    seg_cols = Columns(parse_columns(["log(speed)"]))
    segments = SegmentModel(seg_cols, ["s1", "s2"], np.array([5.0]), np.array([1.0]),
                            np.array([[-1.0], [1.0]]), np.array([[[2.0]], [[2.0]]]),
                            np.array([0.5, 0.5]))  # fmt: skip
    registry.add("segments", "kmeans", segments.to_arrays(),
                 {"columns": seg_cols.describe()}, stage="live")  # fmt: skip
    live = LiveModels(config, tmp_path, check_every_s=3600.0)
    fresh = LiveModels(config, tmp_path, check_every_s=3600.0)  # computes, keeps nothing
    assert live._bundle is not None and fresh._bundle is not None, live.errors
    processor = FeatureProcessor(config.feature_specs())
    processor.derived.append(live.read)
    rng = np.random.default_rng(5)
    users = [f"u{j}" for j in range(6)]
    read_at: dict[str, tuple] = {}  # user -> what their last read was computed from
    id_forms = ("a", "é", "a" * 60)
    t0, rescored, reads = 1.7e12, 0, 0
    for step in range(3000):
        user = users[int(rng.integers(len(users)))]
        # ids kept in the slot inline (short ASCII) and as objects (non-ASCII, long)
        session = f"{user}-{id_forms[int(rng.integers(3)) if rng.random() < 0.2 else 0]}"
        view = f"v-{id_forms[int(rng.integers(3)) if rng.random() < 0.2 else 0]}"
        if rng.random() < 0.4:
            kind = PageView if rng.random() < 0.1 else Scroll
            speed = float(rng.choice([0.0, 50.0, 900.0, 3e4]))
            extra = {"depth": float(rng.random()), "velocity": speed}
            event = kind(event_id=f"e{step}", user_id=user, session_id=session,
                         page_view_id=view, ts=t0 + step,
                         **(extra if kind is Scroll else {}))  # fmt: skip
            processor.apply([event])
            continue
        if rng.random() < 0.02:
            processor.forget(user)
            live.forget(user)
            read_at.pop(user, None)
            assert user not in live._slots
        now = t0 + 3_600_000.0 * int(rng.random() < 0.1)  # the local hour moves now and then
        state, _, attrs = processor.own_features(user, session, view, now_ms=now)
        stamp = (next(reversed(state.seen)) if state else None, session, view, attrs["local_hour"])
        before = live.scored
        got = processor.features_of(user, session, view, now_ms=now)
        events = state.reading_events if state is not None else 0
        want = {**attrs, **fresh.compute(attrs, events)}
        assert list(got.items()) == list(want.items())  # the record's text included
        expected = read_at.get(user) != stamp
        assert live.scored - before == int(expected), (step, read_at.get(user), stamp)
        rescored += expected
        reads += 1
        read_at[user] = stamp
    assert rescored > 200 and reads - rescored > 200, (rescored, reads)
    assert "0 reading events so far" in fresh.compute({}, 0)["_models"]
    monkeypatch.setattr(live_module, "MAX_CACHED", 4)
    for j in range(10):
        processor.features_of(f"many{j}", "s", now_ms=t0)
        assert len(live._slots) <= 4


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 0.5, 1.0, -2.25, 0.1234565, 0.0000005, 0.0000015, 2.5e-7, -4e-7, 1.0000005,
     0.00004, 3.0e-12, 123456.7890125, 9.99e8, 1.5e9, 7.0e15, 1e300, 0.3, 2.0 / 3.0,
     1.2345675, 0.9999996, 0.9999995],
)  # fmt: skip
def test_the_log_record_rounds_scores_as_python_rounds_them(tmp_path, value):
    """The record written in C keeps round(score, 6) (JSON value, not necessarily the text)."""
    from trimtab.config import parse_config
    from trimtab.models.linear import Linear
    from trimtab.models.live import LiveModels
    from trimtab.models.registry import Registry

    config = parse_config(
        {
            "features": {"a": {"kind": "scroll_depth_max"}},
            "slots": {"s": {"default": "a", "variants": {"a": {}}}},
            "models": {"v": {"target": {"event": "click:*", "type": "count"}, "features": ["a"]}},
        }
    )
    meta = {"columns": Columns(parse_columns(["a"])).describe(), "target": "count"}
    identity = Linear(np.array([1.0]), 0.0, "identity")
    Registry(tmp_path).add("v", "logistic", identity.to_arrays(), meta, stage="live")
    live = LiveModels(config, tmp_path, check_every_s=3600.0)
    assert live._bundle is not None, live.errors
    got = live.compute({"a": value})
    assert got["v"] == value
    logged = json.loads(got["_models"])["v"]["score"]
    want = round(got["v"], 6)
    assert logged == want and math.copysign(1.0, logged) == math.copysign(1.0, want)
    rng = np.random.default_rng(7)
    for v in np.concatenate([rng.normal(size=300), rng.normal(size=300) * 1e-5]):
        assert json.loads(live.compute({"a": float(v)})["_models"])["v"]["score"] == round(v, 6)


def test_the_segments_compiled_assignment_equals_numpy(tmp_path):
    from trimtab.models.segments import SegmentModel

    rng = np.random.default_rng(0)
    k, d = 4, 5
    columns = Columns(parse_columns([f"c{j}" for j in range(d)]))
    prec = np.stack([np.triu(rng.random((d, d))) + np.eye(d) for _ in range(k)])
    model = SegmentModel(
        columns,
        [f"s{j + 1}" for j in range(k)],
        rng.random(d),
        rng.random(d) + 0.5,
        rng.normal(size=(k, d)),
        prec,
        rng.random(k) + 0.1,
    )
    assert model.compiled is not None
    x = rng.normal(size=(500, d))
    best, p = model.assign_many(x)
    for row, b, q in zip(x, best, p, strict=True):
        attrs = {f"c{j}": float(v) for j, v in enumerate(row)}
        seg, prob = model.assign(attrs)
        assert seg == model.ids[b] and abs(prob - q) <= 1e-9
        assert model.assign_numpy(attrs)[0] == seg
    assert model.assign({"c0": float("inf")}) is None


# -- no compiler -------------------------------------------------------------------------------
SNIPPET = """
import numpy as np
from trimtab.features import SummedMap
from trimtab.models import native
from trimtab.models.columns import Columns, parse_columns
from trimtab.models.linear import Linear
from trimtab.models.scorer import Scorer
s = Scorer("m", 1, "logistic", Columns(parse_columns(["a"])), Linear(np.array([2.0]), -1.0))
print(native.status(), s.compiled is None, round(s.score({"a": 0.5}), 6))
"""


@pytest.mark.parametrize(
    "env, says",
    [({"TRIMTAB_NATIVE": "0"}, "numpy (TRIMTAB_NATIVE=0)"), ({"CC": "/bin/false"}, "numpy (")],
)
def test_without_a_compiler_numpy_serves_the_same_scores(tmp_path, env, says):
    run = subprocess.run(
        [sys.executable, "-c", SNIPPET],
        env={**os.environ, "TRIMTAB_CACHE_DIR": str(tmp_path / "cache"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(says)
    assert run.stdout.strip().endswith("True 0.5")  # sigmoid(0) from numpy
    assert "live scoring uses numpy" in run.stderr or env.get("TRIMTAB_NATIVE") == "0"


def test_a_fresh_cache_builds_the_extension_once(tmp_path):
    target = tmp_path / "_fastscore-test.so"
    assert native.build(target) == target and target.stat().st_size > 0
    mtime = target.stat().st_mtime_ns
    assert native.build(target) == target and target.stat().st_mtime_ns == mtime
