"""The collector app in-process: keys, origins, limits, the batch route, the live loop, admin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
import pytest
import yaml
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
KEY = "pk_demo"


def make_app(tmp_path, **site_overrides):
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update({"secret_key": "sk_test", **site_overrides})
    # raw ids ("reader"): these tests are about the collector's loop; signed visitor ids, the
    # default, are tested in test_identity.py
    data["identity"] = {"require_signed": False}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    return create_app(runtime, flush_interval_s=0.05), runtime


_n = iter(range(10**9))


def event(kind: str, user="reader", session="s1", **fields) -> dict:
    return {
        "kind": kind,
        "event_id": f"e{next(_n)}",
        "user_id": user,
        "session_id": session,
        "ts": time.time() * 1000,
        **fields,
    }


CONSENT = {"purposes": {"analytics": True, "personalization": True}}


@pytest.fixture
def client(tmp_path):
    app, runtime = make_app(tmp_path)
    with TestClient(app) as c:
        yield c
    runtime.close()


def test_batch_keeps_valid_events_and_reports_each_rejection(client):
    batch = [
        event("consent", **CONSENT),
        event("scroll", depth=0.4),
        event("scroll", depth=4),
        event("hover", element="img"),
    ]
    r = client.post(f"/v1/events?key={KEY}", content=json.dumps(batch))
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    assert [(x["index"], x["path"]) for x in body["rejected"]] == [(2, "$[2].depth"), (3, "$[3]")]
    assert "dwell_ms" in body["rejected"][1]["reason"]


@pytest.mark.parametrize(
    ("url", "headers", "status", "reason"),
    [
        ("/v1/events", {}, 401, "missing site key"),
        ("/v1/events?key=pk_wrong", {}, 401, "unknown site key"),
    ],
)
def test_bad_keys_are_refused(client, url, headers, status, reason):
    r = client.post(url, content=b"[]", headers=headers)
    assert r.status_code == status and reason in r.json()["error"]


def test_origin_allow_list_and_cors(tmp_path):
    app, runtime = make_app(tmp_path, origins=["https://news.example"])
    with TestClient(app) as c:
        ok = c.post(
            f"/v1/events?key={KEY}", content=b"[]", headers={"origin": "https://news.example"}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://news.example"
        bad = c.post(
            f"/v1/events?key={KEY}", content=b"[]", headers={"origin": "https://evil.example"}
        )
        assert bad.status_code == 403 and "allow-list" in bad.json()["error"]
        pre = c.options(f"/v1/events?key={KEY}", headers={"origin": "https://news.example"})
        assert pre.status_code == 204
    runtime.close()


def test_body_size_limit_and_rate_limit(tmp_path):
    app, runtime = make_app(tmp_path, max_body_bytes=1000, rate_limit_per_s=1, rate_burst=3)
    with TestClient(app) as c:
        big = c.post(f"/v1/events?key={KEY}", content=b"[" + b" " * 2000 + b"]")
        assert big.status_code == 413
        statuses = [c.post(f"/v1/events?key={KEY}", content=b"[]").status_code for _ in range(4)]
        assert statuses[:2] == [200, 200] and statuses[-1] == 429
        limited = c.post(f"/v1/events?key={KEY}", content=b"[]")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    runtime.close()


def test_not_json_is_a_400(client):
    r = client.post(f"/v1/events?key={KEY}", content=b"{{nope")
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_without_consent_nothing_is_collected(client):
    r = client.post(f"/v1/events?key={KEY}", content=json.dumps([event("scroll", depth=0.9)]))
    assert r.json()["accepted"] == 0
    runtime = client.app.state.collector.runtime
    assert runtime.deployment.event_log.count() == 0


def test_decide_route_gives_defaults_without_personalization_consent(client):
    r = client.post(
        f"/v1/decide?key={KEY}",
        content=json.dumps({"user_id": "reader", "session_id": "s1", "slots": ["cta", "hero"]}),
    )
    decisions = {d["slot"]: d for d in r.json()["decisions"]}
    assert decisions["cta"]["variant"] == "newsletter"
    assert decisions["hero"]["source"] == "no_consent"
    assert decisions["hero"]["reason"].startswith("no personalization consent")


def test_live_loop_pushes_only_changed_slots(client):
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        client.post(f"/v1/events?key={KEY}", content=json.dumps([event("consent", **CONSENT)]))
        hello = {
            "type": "hello",
            "user_id": "reader",
            "session_id": "s1",
            "slots": ["cta", "review", "hero"],
            "page": "/article/3",
            "page_category": "science",
        }
        ws.send_text(json.dumps(hello))
        first = ws.receive_json()
        assert first["type"] == "decisions"
        shown = {d["slot"]: d["variant"] for d in first["decisions"]}
        assert shown["cta"] == "newsletter" and shown["review"] == "none"
        assert ws.receive_json() == {"type": "ack", "accepted": 0, "rejected": []}

        ws.send_text(json.dumps({"type": "events", "events": [event("scroll", depth=0.8)]}))
        push = ws.receive_json()
        assert push["type"] == "decisions"
        assert [(d["slot"], d["variant"]) for d in push["decisions"]] == [
            ("cta", "subscribe_offer")
        ]
        assert "scroll_depth_max=0.8" in push["decisions"][0]["reason"]
        ack = ws.receive_json()
        assert ack == {"type": "ack", "accepted": 1, "rejected": []}

        # nothing changes → no push, just the ack
        ws.send_text(json.dumps({"type": "events", "events": [event("scroll", depth=0.85)]}))
        assert ws.receive_json()["type"] == "ack"

        hover = event("hover", element="img-3", element_kind="image", dwell_ms=3200)
        ws.send_text(json.dumps({"type": "events", "events": [hover]}))
        push = ws.receive_json()
        assert [(d["slot"], d["variant"]) for d in push["decisions"]] == [("review", "detail")]
        assert ws.receive_json()["type"] == "ack"

        # events of another user on this socket are refused, the rest kept
        other = event("scroll", user="someone-else", depth=0.1)
        ws.send_text(json.dumps({"type": "events", "events": [other, event("scroll", depth=0.9)]}))
        ack = ws.receive_json()
        assert ack["accepted"] == 1 and ack["rejected"][0]["index"] == 0


def test_http_events_push_to_an_open_socket(client):
    client.post(f"/v1/events?key={KEY}", content=json.dumps([event("consent", **CONSENT)]))
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        ws.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "user_id": "reader",
                    "session_id": "s1",
                    "slots": ["cta"],
                    "page": "/a",
                    "page_category": "tech",
                }
            )
        )
        assert ws.receive_json()["type"] == "decisions"
        assert ws.receive_json()["type"] == "ack"
        client.post(f"/v1/events?key={KEY}", content=json.dumps([event("scroll", depth=0.9)]))
        push = ws.receive_json()
        assert push["decisions"][0]["variant"] == "subscribe_offer"


def test_live_socket_with_a_bad_key_is_closed_with_a_reason(client):
    with client.websocket_connect("/v1/live?key=nope") as ws:
        message = ws.receive_json()
        assert message["type"] == "error" and "unknown site key" in message["reason"]


def test_health_metrics_and_tracker(client):
    assert client.get("/health").json()["status"] == "ok"
    client.post(f"/v1/events?key={KEY}", content=json.dumps([event("consent", **CONSENT)]))
    metrics = client.get("/metrics").text
    assert 'trimtab_events_total{outcome="accepted"} 1.0' in metrics
    script = client.get("/t.js")
    assert script.status_code == 200 and "trimtab" in script.text
    assert script.headers["content-type"].startswith("text/javascript")


def test_admin_routes_need_the_secret_key(client):
    assert client.post("/v1/admin/reload").status_code == 401
    auth = {"authorization": "Bearer sk_test"}
    reloaded = client.post("/v1/admin/reload", headers=auth).json()
    assert set(reloaded["slots"]) == {"hero", "rail", "cta", "review"}
    client.post(
        f"/v1/events?key={KEY}",
        content=json.dumps([event("consent", **CONSENT), event("scroll", depth=0.3)]),
    )
    client.post(
        f"/v1/decide?key={KEY}",
        content=json.dumps({"user_id": "reader", "session_id": "s1", "slots": ["cta"]}),
    )
    records = msgspec.json.decode(
        client.get("/v1/admin/decisions?user_id=reader", headers=auth).content
    )
    assert records and records[0]["slot"] == "cta"
    assert records[0]["user_id"] != "reader"  # stored pseudonymously
    erased = client.delete("/v1/users/reader", headers=auth).json()
    assert erased["events"] == 2 and erased["decisions"] >= 1
    assert client.get("/v1/admin/decisions?user_id=reader", headers=auth).json() == []


def _admin_routes(app):
    """Every (method, path) the app serves under /v1/admin or /v1/users, path params filled."""
    from starlette.routing import Route

    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith(("/v1/admin", "/v1/users")):
            path = route.path.replace("{version:int}", "1").replace("{user_id:path}", "u1")
            path = path.replace("{name}", "m").replace("{plot}", "p.png")
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield method, path


@pytest.mark.parametrize("secret", ["sk_test", ""])
def test_every_admin_route_is_behind_the_guard(tmp_path, secret):
    """No admin handler runs without the key: 401 without it, 403 when the site has none."""
    app, runtime = make_app(tmp_path, secret_key=secret)
    seen = 0
    with TestClient(app) as c:
        for method, path in _admin_routes(app):
            for headers in ({}, {"authorization": "Bearer sk_wrong"}):
                answer = c.request(method, path, headers=headers, content=b"{}")
                expected = 401 if secret else 403
                assert answer.status_code == expected, (method, path, answer.text)
                assert "error" in answer.json()
            seen += 1
    runtime.close()
    assert seen >= 15  # collector, config and model admin routes


def test_config_file_changes_are_picked_up_and_bad_ones_refused(tmp_path):
    app, runtime = make_app(tmp_path)
    path = Path(runtime.config.source)
    decide = json.dumps({"user_id": "reader", "session_id": "s1", "slots": ["cta"]})
    with TestClient(app) as c:
        c.post(f"/v1/events?key={KEY}", content=json.dumps([event("consent", **CONSENT)]))

        def cta_variant() -> str:
            return c.post(f"/v1/decide?key={KEY}", content=decide).json()["decisions"][0]["variant"]

        assert cta_variant() == "newsletter"
        text = path.read_text()
        path.write_text(text.replace("default: newsletter", "default: subscribe_offer"))
        deadline = time.monotonic() + 5
        while cta_variant() != "subscribe_offer" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cta_variant() == "subscribe_offer"  # reloaded without a restart

        path.write_text(text.replace("default: newsletter", "default: nothing_like_it"))
        deadline = time.monotonic() + 5
        while c.get("/health").json()["status"] == "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        health = c.get("/health").json()
        assert health["status"] == "degraded"
        assert "$.slots.cta.default" in health["degraded"][0]
        assert cta_variant() == "subscribe_offer"  # the running config stays
    runtime.close()


def test_decide_route_has_the_same_limits_as_the_events_route(tmp_path):
    app, runtime = make_app(tmp_path, max_body_bytes=200, rate_limit_per_s=1, rate_burst=2)
    with TestClient(app) as c:
        big = json.dumps({"user_id": "u" * 300, "session_id": "s", "slots": ["cta"]})
        assert c.post(f"/v1/decide?key={KEY}", content=big).status_code == 413
        small = json.dumps({"user_id": "u", "session_id": "s", "slots": ["cta"]})
        statuses = [c.post(f"/v1/decide?key={KEY}", content=small).status_code for _ in range(3)]
        assert statuses[-1] == 429
        limited = c.post(f"/v1/decide?key={KEY}", content=small)
        assert limited.status_code == 429 and "retry-after" in limited.headers
        assert 'trimtab_requests_rejected_total{code="413"} 1.0' in c.get("/metrics").text
    runtime.close()


def test_oversized_websocket_message_is_refused_and_the_socket_stays_usable(tmp_path):
    app, runtime = make_app(tmp_path, max_body_bytes=2000)
    with TestClient(app) as c, c.websocket_connect(f"/v1/live?key={KEY}") as ws:
        ws.send_text(json.dumps({"type": "hello", "user_id": "r", "session_id": "s", "slots": []}))
        assert ws.receive_json()["type"] == "decisions"
        assert ws.receive_json()["type"] == "ack"
        ws.send_text(json.dumps({"type": "events", "events": [], "pad": "x" * 3000}))
        error = ws.receive_json()
        assert error["type"] == "error" and "larger than 2000 bytes" in error["reason"]
        ws.send_text(
            json.dumps(
                {"type": "events", "events": [event("scroll", user="r", session="s", depth=0.2)]}
            )
        )
        assert ws.receive_json()["type"] == "ack"
    runtime.close()
