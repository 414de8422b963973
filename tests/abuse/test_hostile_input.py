"""Hostile input to the collector in-process (issue 11, items 5, 9 and 10): hello floods,
Global Privacy Control, and input that once gave a 500 or a dropped socket.

Every failure must be a clean 4xx (or a WebSocket error message naming the reason), never a
500 and never a socket closed without a word.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.identity import sign_visitor_id
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[2] / "src" / "trimtab" / "demo" / "config.yaml"
KEY = "pk_demo"
SECRET = "sk_test"
ADMIN = {"Authorization": f"Bearer {SECRET}"}
_n = iter(range(10**9))


def make(tmp_path: Path, site: dict[str, Any] | None = None, **limits: Any):
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update(secret_key=SECRET, consent="implied", **(site or {}))
    if limits:
        data["limits"] = limits
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    return create_app(runtime, flush_interval_s=0.05), runtime


@pytest.fixture
def app(tmp_path):
    app, runtime = make(tmp_path)
    yield app
    runtime.close()


def visitor(user: str) -> str:
    """A user's signed visitor id (required by default), as the site's backend mints it."""
    return sign_visitor_id(SECRET, user) if user and not user.startswith("vid.") else user


def event(kind: str, user: str = "u1", **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "event_id": f"e{next(_n)}",
        "user_id": visitor(user),
        "session_id": "s",
        "ts": time.time() * 1000,
        **fields,
    }


def hello(user: str = "u1", slots: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "type": "hello",
        "user_id": visitor(user),
        "session_id": "s",
        "slots": slots or ["rail"],
        **more,
    }


def decision_rows(app, user: str) -> int:
    collector = app.state.collector
    collector.runtime.decision_log.flush_sync()
    return len(collector.runtime.decision_log.read(collector.gate.user_id(user), 100_000))


# -- item 5: hello floods ---------------------------------------------------------------------
def test_a_socket_flooding_hellos_is_stopped_at_the_bound_and_told_why(tmp_path):
    app, runtime = make(tmp_path, hello_rate_per_s=0.01, hello_burst=3)
    # 200 slot names per hello, most of them unknown or repeated, as the attack sent
    names = ["rail", "hero", "cta", "rail", *[f"fake-{i}" for i in range(28)]]
    try:
        with TestClient(app) as client, client.websocket_connect(f"/v1/live?key={KEY}") as ws:
            answers = []
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(50):
                    ws.send_text(json.dumps(hello("flood", names)))
                    answers.append(ws.receive_json())
                    if answers[-1]["type"] == "decisions":
                        answers.append(ws.receive_json())  # its ack
        assert closed.value.code == 4429
        decided = [a for a in answers if a["type"] == "decisions"]
        assert len(decided) == 3  # the burst, then the socket is closed
        assert answers[-1] == {
            "type": "error",
            "reason": "too many hellos: at most 0.01 per second",
        }
        # only the three known slots are decided, each once: three rows per hello
        assert {d["slot"] for d in decided[0]["decisions"]} == {"rail", "hero", "cta"}
        assert decision_rows(app, "flood") == 3 * 3
    finally:
        runtime.close()


def test_a_hello_naming_too_many_slots_is_refused_with_the_limit(tmp_path):
    app, runtime = make(tmp_path, max_slots_per_hello=4)
    try:
        with TestClient(app) as client:
            with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
                ws.send_text(json.dumps(hello("many", [f"s{i}" for i in range(5)])))
                error = ws.receive_json()
                assert error["type"] == "error"
                assert "at most 4 allowed (limits.max_slots_per_hello)" in error["reason"]
                ws.send_text(json.dumps(hello("many", ["rail"])))  # the socket is still usable
                assert ws.receive_json()["type"] == "decisions"
            r = client.post(
                f"/v1/decide?key={KEY}",
                content=json.dumps(hello("many", [f"s{i}" for i in range(5)])),
            )
            assert r.status_code == 400 and "limits.max_slots_per_hello" in r.json()["error"]
            long_name = client.post(
                f"/v1/decide?key={KEY}", content=json.dumps(hello("many", ["x" * 129]))
            )
            assert long_name.status_code == 400 and "$.slots[0]" in long_name.json()["error"]
        assert decision_rows(app, "many") == 1
    finally:
        runtime.close()


def test_hellos_also_cost_the_clients_rate_limit(tmp_path):
    app, runtime = make(tmp_path, {"rate_limit_per_s": 0.01, "rate_burst": 10}, hello_cost=5)
    try:
        with TestClient(app) as client, client.websocket_connect(f"/v1/live?key={KEY}") as ws:
            ws.send_text(json.dumps(hello("c1")))
            assert ws.receive_json()["type"] == "decisions"
            ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.send_text(json.dumps(hello("c1")))  # the burst of 10 is spent by 1 + 5
                assert ws.receive_json() == {
                    "type": "error",
                    "reason": "rate limit exceeded for this key and client",
                }
                ws.receive_json()
        assert closed.value.code == 4429
    finally:
        runtime.close()


# -- item 9: Global Privacy Control --------------------------------------------------------
def test_sec_gpc_withholds_implied_consent_but_not_an_explicit_choice(app):
    gpc = {"Sec-GPC": "1"}
    with TestClient(app) as client:
        plain = client.post(
            f"/v1/events?key={KEY}", content=json.dumps([event("click", "a", element="x")])
        )
        assert plain.json()["accepted"] == 1
        refused = client.post(
            f"/v1/events?key={KEY}",
            content=json.dumps([event("click", "b", element="x")]),
            headers=gpc,
        )
        assert refused.status_code == 200 and refused.json()["accepted"] == 0
        decided = client.post(
            f"/v1/decide?key={KEY}", content=json.dumps(hello("b")), headers=gpc
        ).json()["decisions"]
        assert {d["source"] for d in decided} == {"no_consent"}
        # an explicit grant from the same browser counts
        granted = client.post(
            f"/v1/events?key={KEY}",
            content=json.dumps(
                [
                    event("consent", "c", purposes={"analytics": True, "personalization": True}),
                    event("click", "c", element="x"),
                ]
            ),
            headers=gpc,
        )
        assert granted.json()["accepted"] == 2
        with client.websocket_connect(f"/v1/live?key={KEY}", headers=gpc) as ws:
            ws.send_text(json.dumps(hello("d", events=[event("click", "d", element="x")])))
            first = ws.receive_json()
            assert {d["source"] for d in first["decisions"]} == {"no_consent"}
            assert ws.receive_json() == {"type": "ack", "accepted": 0, "rejected": []}


# -- item 10: 4xx, never a 500 --------------------------------------------------------------
DEEP = b"[" * 1000 + b"]" * 1000
HOSTILE_BODIES = [
    DEEP,
    b'{"user_id":' + DEEP + b"}",
    b'[{"kind":"click","event_id":"\xff\xfe","user_id":"u","session_id":"s"}]',
    b"\xff\xfe\xfd",
    '[{"kind":"click","ünïcödé":"x","event_id":"e","user_id":"u","session_id":"s"}]'.encode(),
    b"",
    b"null",
    b'{"type":"hello"}',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
@pytest.mark.parametrize("route", ["/v1/events", "/v1/decide"])
def test_hostile_bodies_get_a_4xx_with_a_reason(app, route, body):
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(f"{route}?key={KEY}", content=body)
    assert 400 <= r.status_code < 500 or (route == "/v1/events" and r.status_code == 200)
    if r.status_code != 200:
        assert r.json()["error"]


def test_every_route_answers_bad_query_parameters_and_odd_keys_with_a_4xx(app):
    with TestClient(app, raise_server_exceptions=False) as client:
        paths = sorted(
            {
                route.path.replace("{user_id:path}", "x/y").replace("{", "").replace("}", "")
                for route in app.routes
                if hasattr(route, "methods")
            }
        )
        assert "/v1/admin/decisions" in paths
        hostile_queries = [
            "limit=abc",
            "limit=-5",
            "limit=99999999999999999999",
            "key=pk_démo",
            "user_id=%FF%FE&session_id=%00",
            "reset=%F0%9F",
        ]
        for path in paths:
            for query in hostile_queries:
                for method in ("GET", "POST", "DELETE"):
                    for headers in (ADMIN, {"Authorization": "Bearer sk_tést".encode()}):
                        r = client.request(
                            method, f"{path}?{query}", headers=headers, content=b"[]"
                        )
                        assert r.status_code < 500, (method, path, query, r.text[:200])
        r = client.get("/v1/admin/decisions?limit=abc", headers=ADMIN)
        assert r.status_code == 400 and "'limit' must be an integer" in r.json()["error"]
        r = client.post("/v1/events?key=pk_démo", content=b"[]")
        assert r.status_code == 401


def test_websocket_hostile_frames_get_an_error_message_and_the_socket_stays(app):
    with TestClient(app) as client, client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        ws.send_bytes(b"\x00\x01binary")
        assert ws.receive_json() == {
            "type": "error",
            "reason": "binary frames are not accepted: send JSON text",
        }
        ws.send_text("[" * 1000 + "]" * 1000)
        assert ws.receive_json()["reason"] == "bad message: Expected `object`, got `array`"
        ws.send_text('{"type":"events","events":' + "[" * 1000 + "]" * 1000 + "}")
        assert ws.receive_json()["reason"] == "bad message: nested too deeply"
        ws.send_text(json.dumps({"type": "hello", "user_id": "u" * 500, "session_id": "s"}))
        assert "$.user_id" in ws.receive_json()["reason"]
        ws.send_text(json.dumps({"tÿpe": "hello"}))
        assert ws.receive_json()["type"] == "error"
        ws.send_text(json.dumps(hello("ok")))  # still open, still answering
        assert ws.receive_json()["type"] == "decisions"
