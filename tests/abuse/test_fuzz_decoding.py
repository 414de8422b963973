"""Fuzzing the decoding of event batches and WebSocket messages with Hypothesis (issue 11).

Whatever the bytes, decoding ends in one of two ways: the valid events (every number within
its bound, every timestamp within the clock-skew window) with one reason per rejected element,
or a :class:`BatchError` / :class:`BadMessage` naming what is wrong. No other exception ever
escapes, and the live app answers every request with a 2xx or 4xx and every WebSocket message
with a message of its protocol.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from trimtab.collector import BadMessage, Envelope, Hello, create_app, decode_message
from trimtab.config import load_config
from trimtab.events import (
    KINDS,
    MAX_AMOUNT,
    MAX_DURATION_MS,
    MAX_VELOCITY,
    BatchError,
    Custom,
    Hover,
    Scroll,
    Visible,
    decode_batch,
)
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[2] / "src" / "trimtab" / "demo" / "config.yaml"
KEY = "pk_demo"
NOW = time.time() * 1000.0
PAST_MS, AHEAD_MS = 86_400_000.0, 300_000.0

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e308, -1e308, 1e14, 5e13, NOW, NOW + 1e9, NOW - 1e9, 3.6e6 + 1])
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=25,
)

VALID = {
    "page_view": {"slots": ["rail"], "url": "https://x/a?b=c"},
    "scroll": {"depth": 0.5, "velocity": 300},
    "hover": {"element": "a", "dwell_ms": 1200},
    "visible": {"element": "a", "visible_ms": 4000, "fraction": 0.7},
    "click": {"element": "a"},
    "custom": {"name": "purchase", "value": 12.5},
    "consent": {"purposes": {"analytics": True}},
    "context": {"device": "mobile", "viewport_w": 390},
    "exposure": {"slot": "rail", "variant": "tech"},
}
FIELDS = sorted({"kind", "event_id", "user_id", "session_id", "ts", "received"}.union(
    *(fields for fields in VALID.values())
))  # fmt: skip


@st.composite
def events(draw: st.DrawFn) -> Any:
    """A valid event with a few fields replaced, dropped or added — or any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    kind = draw(st.sampled_from(sorted(VALID)))
    event: dict[str, Any] = {
        "kind": kind,
        "event_id": f"e{draw(st.integers(0, 10**6))}",
        "user_id": "u",
        "session_id": "s",
        "ts": NOW + draw(st.floats(-2 * PAST_MS, 2 * AHEAD_MS)),
        **VALID[kind],
    }
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FIELDS) | st.text(max_size=8))
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(json_values)
    return event


def batches() -> st.SearchStrategy[bytes]:
    as_json = st.lists(events(), max_size=8).map(lambda items: json.dumps(items).encode())
    mangled = as_json.flatmap(
        lambda data: st.tuples(st.just(data), st.integers(0, max(len(data) - 1, 0)), st.binary())
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :])
    return as_json | mangled | st.binary(max_size=200)


def check_event_bounds(event: Any) -> None:
    assert NOW - PAST_MS <= event.ts <= NOW + AHEAD_MS
    for value in msgspec.structs.astuple(event):
        if isinstance(value, float):
            assert math.isfinite(value)
    if type(event) is Hover:
        assert 0 <= event.dwell_ms <= MAX_DURATION_MS
    elif type(event) is Visible:
        assert 0 <= event.visible_ms <= MAX_DURATION_MS
    elif type(event) is Scroll:
        assert abs(event.velocity) <= MAX_VELOCITY and 0 <= event.depth <= 1
    elif type(event) is Custom and isinstance(event.value, float):
        assert abs(event.value) <= MAX_AMOUNT


def batch_property(data: bytes) -> None:
    try:
        result = decode_batch(data, NOW, max_past_ms=PAST_MS, max_ahead_ms=AHEAD_MS)
    except BatchError as exc:
        assert str(exc)
        return
    items = json.loads(data.decode("utf-8", "replace"))  # a batch that decoded is an array
    assert isinstance(items, list)
    assert len(result.events) + len(result.errors) == len(items)
    for error in result.errors:
        assert error.reason and error.path.startswith(f"$[{error.index}]")
    for event in result.events:
        assert type(event).__struct_config__.tag in KINDS
        check_event_bounds(event)


test_batch_decoding_ends_in_events_or_a_named_rejection = settings(max_examples=400, deadline=None)(
    given(batches())(batch_property)
)
test_batch_decoding_long_run = pytest.mark.timeout(1800)(
    pytest.mark.slow(settings(max_examples=5_000, deadline=None)(given(batches())(batch_property)))
)


messages = (
    st.fixed_dictionaries(
        {"type": st.sampled_from(["hello", "events", "bye", ""]) | st.text(max_size=40)},
        optional={
            "user_id": json_values,
            "session_id": json_values,
            "slots": st.lists(st.text(max_size=140), max_size=40) | json_values,
            "page": json_values,
            "events": st.lists(events(), max_size=4) | json_values,
        },
    ).map(lambda m: json.dumps(m).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)


def message_property(data: bytes) -> None:
    for decoder, kind in ((Envelope, "envelope"), (Hello, "decide request")):
        try:
            decoded = decode_message(msgspec.json.Decoder(decoder), data)
        except BadMessage as exc:
            assert str(exc), kind
            continue
        assert len(decoded.slots) <= 1024 and all(len(s) <= 128 for s in decoded.slots)
        assert len(decoded.user_id) <= 128 and len(decoded.page) <= 2048


test_websocket_message_decoding_ends_in_a_message_or_a_named_rejection = settings(
    max_examples=400, deadline=None
)(given(messages)(message_property))
test_websocket_message_decoding_long_run = pytest.mark.timeout(1800)(
    pytest.mark.slow(settings(max_examples=5_000, deadline=None)(given(messages)(message_property)))
)


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update(consent="implied", rate_limit_per_s=1e6, rate_burst=1_000_000)
    data["limits"] = {"hello_rate_per_s": 1e6, "hello_burst": 1_000_000, "hello_cost": 0}
    (tmp / "site.yaml").write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(tmp / "site.yaml"), tmp / "data")
    app = create_app(runtime, flush_interval_s=0.05)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    runtime.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=batches())
def test_the_live_app_answers_any_batch_with_2xx_or_4xx(live_app, body):
    r = live_app.post(f"/v1/events?key={KEY}", content=body)
    assert r.status_code in (200, 400), r.text[:300]
    answer = r.json()
    assert ("accepted" in answer) if r.status_code == 200 else answer["error"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(messages, min_size=1, max_size=4))
def test_the_live_socket_answers_any_message_and_stays_open(live_app, frames):
    with live_app.websocket_connect(f"/v1/live?key={KEY}") as ws:
        for frame in frames:
            try:
                text = frame.decode()
            except UnicodeDecodeError:
                ws.send_bytes(frame)
                assert ws.receive_json()["type"] == "error"
                continue
            ws.send_text(text)
            answer = ws.receive_json()
            assert answer["type"] in ("error", "decisions", "ack"), answer
            if answer["type"] == "decisions":
                assert ws.receive_json()["type"] == "ack"
        # the socket still answers after all of it
        ws.send_text(json.dumps({"type": "ping"}))
        assert ws.receive_json() == {"type": "error", "reason": "unknown type 'ping'"}
