"""The event schema: valid events decode; a bad one is rejected alone, with index, path, reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trimtab.events import KINDS, BatchError, decode_batch, encode

BASE = {"user_id": "u1", "session_id": "s1", "ts": 1.75e12}

VALID = [
    {"kind": "page_view", "url": "https://x.test/a", "title": "A", "slots": ["hero"]},
    {"kind": "scroll", "depth": 0.5, "velocity": -320.5},
    {"kind": "hover", "element": "img-1", "element_kind": "image", "dwell_ms": 1200},
    {
        "kind": "visible",
        "element": "card-2",
        "category": "sport",
        "visible_ms": 1500,
        "fraction": 0.7,
    },
    {"kind": "click", "element": "btn", "element_kind": "filter"},
    {"kind": "custom", "name": "expand", "value": 3},
    {"kind": "consent", "purposes": {"analytics": True, "personalization": False}},
    {"kind": "context", "device": "mobile", "viewport_w": 390, "tz_offset_min": 60},
    {"kind": "exposure", "slot": "hero", "variant": "skim", "decision_id": "d1"},
]


def _event(i: int, **fields) -> dict:
    return {**BASE, "event_id": f"e{i}", **fields}


def test_every_kind_is_covered_by_the_valid_examples():
    assert {v["kind"] for v in VALID} == set(KINDS)


@pytest.mark.parametrize("fields", VALID, ids=[v["kind"] for v in VALID])
def test_valid_event_decodes_and_round_trips(fields):
    batch = json.dumps([_event(0, **fields)]).encode()
    result = decode_batch(batch, received_ms=123.0)
    assert result.errors == []
    (event,) = result.events
    assert event.__struct_config__.tag == fields["kind"]
    assert event.received == 123.0
    again = decode_batch(encode([event]), received_ms=123.0).events[0]
    assert again == event


BAD = [
    ({"kind": "scroll", "depth": 1.5}, "$[1].depth", "<= 1.0"),
    ({"kind": "scroll", "depth": "deep"}, "$[1].depth", "Expected `float`"),
    ({"kind": "hover", "element": "x"}, "$[1]", "missing required field `dwell_ms`"),
    ({"kind": "hover", "element": "x", "dwell_ms": -4}, "$[1].dwell_ms", ">= 0.0"),
    ({"kind": "teleport"}, "$[1].kind", "Invalid value 'teleport'"),
    ({"kind": "context", "device": "fridge"}, "$[1].device", "Invalid enum value 'fridge'"),
    ({"kind": "click", "element": ""}, "$[1].element", "length >= 1"),
]


@pytest.mark.parametrize(("fields", "path", "reason"), BAD, ids=[b[1] + b[2] for b in BAD])
def test_bad_event_is_rejected_alone_with_path_and_reason(fields, path, reason):
    good0 = _event(0, kind="click", element="a")
    bad = _event(1, **fields)
    good2 = _event(2, kind="scroll", depth=0.3)
    result = decode_batch(json.dumps([good0, bad, good2]).encode())
    assert [e.event_id for e in result.events] == ["e0", "e2"]
    (error,) = result.errors
    assert error.index == 1
    assert error.path == path
    assert reason in error.reason
    assert str(error).startswith("event 1: ")


def test_missing_identity_field_is_named():
    event = {"kind": "scroll", "event_id": "e", "session_id": "s", "ts": 1e12, "depth": 0.1}
    (error,) = decode_batch(json.dumps([event])).errors
    assert "user_id" in error.reason and error.path == "$[0]"


def test_non_object_element_is_rejected_alone():
    result = decode_batch(json.dumps([_event(0, kind="click", element="a"), 42, "x"]))
    assert len(result.events) == 1
    assert [e.index for e in result.errors] == [1, 2]


@pytest.mark.parametrize("body", [b"not json", b'{"kind": "scroll"}', b"[1, 2"])
def test_unusable_batch_raises_a_clear_error(body):
    with pytest.raises(BatchError) as info:
        decode_batch(body)
    assert "JSON" in str(info.value)


@given(
    depths=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=30),
    bad_at=st.sets(st.integers(min_value=0, max_value=29)),
)
def test_any_mix_keeps_exactly_the_valid_events(depths, bad_at):
    items = []
    for i, depth in enumerate(depths):
        items.append(_event(i, kind="scroll", depth=depth + 2 if i in bad_at else depth))
    result = decode_batch(json.dumps(items))
    kept = [e.event_id for e in result.events]
    assert kept == [f"e{i}" for i in range(len(depths)) if i not in bad_at]
    assert [e.index for e in result.errors] == sorted(i for i in bad_at if i < len(depths))


def test_every_kind_of_the_union_flows_through_the_derived_registries():
    """The union is the one list of kinds: features, patterns and metrics derive theirs from
    it, so a kind added to the union alone is dispatched, matched and measurable."""
    from trimtab.events import EVENT_TYPES
    from trimtab.experiments.spec import NUMERIC_FIELDS
    from trimtab.features import FeatureProcessor, FeatureSpec
    from trimtab.patterns import kinds_for, matcher

    assert tuple(t.__struct_config__.tag for t in EVENT_TYPES) == KINDS
    assert set(NUMERIC_FIELDS) == set(KINDS)
    assert kinds_for(["*"]) == set(KINDS)
    specs = [FeatureSpec(f"n_{k}", "event_count", event=k, scope="user") for k in KINDS]
    specs.append(FeatureSpec("any_then_any", "sequence", steps=("*", "*"), scope="user"))
    fp = FeatureProcessor(specs)
    batch = json.dumps([_event(i, **fields) for i, fields in enumerate(VALID)]).encode()
    events = decode_batch(batch).events
    assert len(events) == len(KINDS)
    fp.apply(events)
    attrs = fp.features_of("u1", "s1")
    for kind in KINDS:
        assert attrs[f"n_{kind}"] == 1, kind
        assert any(matcher(kind)(e) for e in events), kind
