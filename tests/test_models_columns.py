"""Feature columns: how models read attributes, and the declarations refused."""

from __future__ import annotations

import math

import pytest

from trimtab.config import ConfigError, parse_config
from trimtab.models.columns import ColumnError, Columns, parse_columns

ATTRS = {
    "depth": 0.5,
    "count": 3,
    "returning": True,
    "device": "mobile",
    "dwell": {"image": 1000.0, "card": 500.0, "label": "x"},
    "share": {"sport": 0.25},
    "variant": "b",
    "affinity": {"b": 2.0},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("depth", 0.5),
        ("count", 3.0),
        ("returning", 1.0),
        ("device", 0.0),  # text is not a number
        ("missing", 0.0),
        ("dwell.image", 1000.0),
        ("share.sport", 0.25),
        ("share.politics", 0.0),
        ("device.x", 0.0),  # not a map
        ("device=mobile", 1.0),
        ("device=tablet", 0.0),
        ("returning=true", 1.0),
        ("count=3", 1.0),
        ("sum(dwell)", 1500.0),
        ("log(depth)", math.log1p(0.5)),
        ("log(sum(dwell))", math.log1p(1500.0)),
        ("log(dwell.card)", math.log1p(500.0)),
        ("affinity.$variant", 2.0),
    ],
)
def test_column_values(text, expected):
    assert Columns(parse_columns([text])).vector(ATTRS) == [pytest.approx(expected, abs=0)]


def test_one_hot_levels_come_from_training_rows_only():
    cols = Columns.learn(parse_columns(["device=*"]), [{"device": "mobile"}, {"device": "desktop"}])
    assert cols.names == ["device=desktop", "device=mobile"]
    assert cols.vector({"device": "tablet"}) == [0.0, 0.0]  # unseen in training: all zero
    again = Columns.from_description(cols.describe())
    assert again.vector({"device": "mobile"}) == [0.0, 1.0]


def test_non_finite_values_are_kept_for_the_caller_to_refuse():
    cols = Columns(parse_columns(["x", "log(x)"]))
    values = cols.vector({"x": float("nan")})
    assert all(v != v for v in values)


@pytest.mark.parametrize(
    ("texts", "reason"),
    [
        ([""], "non-empty"),
        (["a..b"], "not an attribute path"),
        (["log(a=b)"], "take a number"),
        (["a="], "path=value"),
        (["a", "a"], "declared twice"),
    ],
)
def test_bad_declarations(texts, reason):
    with pytest.raises(ColumnError, match=reason):
        parse_columns(texts)


def test_config_errors_name_the_path():
    base = {"slots": {"s": {"default": "a", "variants": {"a": {}}}}}
    model = {"target": {"event": "click:*"}, "features": ["depth"]}
    cases = [
        ({"models": {"p": {**model, "features": ["a..b"]}}}, "$.models.p.features[0]"),
        ({"models": {"segment": model}}, "$.models.segment"),
        ({"models": {"p": {**model, "algorithm": "xgboost"}}}, "$.models.p.algorithm"),
        ({"models": {"p": {**model, "at": "exposure"}}}, "$.models.p.slot"),
        ({"models": {"p": {**model, "features": ["segment"]}}}, "$.models.p.features[0]"),
        ({"models": {"p": model, "q": {**model, "features": ["p"]}}}, "$.models.q.features[0]"),
        ({"segments": {"features": ["x"], "k": [1, 3]}}, "$.segments.k"),
        ({"segments": {"features": ["x"], "names": {"s1": "a", "s2": "a"}}}, "$.segments.names.s2"),
        (
            {
                "models": {
                    "p": {
                        **model,
                        "target": {"event": "click:*", "within": "page", "other_session": True},
                    }
                }
            },
            "$.models.p.target.other_session",
        ),
    ]
    for extra, path in cases:
        with pytest.raises(ConfigError) as caught:
            parse_config({**base, **extra}, "site.yaml")
        assert caught.value.path == path, (extra, str(caught.value))
