"""The console's server side without a browser: login, cookie, CSRF, the live feed, erasure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.console.auth import Sessions
from trimtab.identity import sign_visitor_id
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
SECRET = "sk_console"


def make(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = SECRET
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    return create_app(runtime, flush_interval_s=0.05), runtime


def login(client, key=SECRET, name="ana"):
    return client.post(
        "/console/login",
        content=f"name={name}&key={key}",
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )


def test_login_sets_a_strict_httponly_cookie_and_wrong_keys_are_limited(tmp_path):
    app, runtime = make(tmp_path)
    with TestClient(app) as client:
        assert client.get("/console", follow_redirects=False).headers["location"] == (
            "/console/login"
        )
        wrong = login(client, key="nope")
        assert wrong.status_code == 401 and "wrong key" in wrong.text
        assert "set-cookie" not in wrong.headers
        ok = login(client)
        assert ok.status_code == 303 and ok.headers["location"] == "/console"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        page = client.get("/console")
        assert (
            page.status_code == 200
            and "script-src 'self'" in page.headers["content-security-policy"]
        )
        session = client.get("/console/api/session").json()
        assert session["name"] == "ana" and len(session["csrf"]) > 20
        # a forged Origin cannot log in (login CSRF)
        forged = client.post(
            "/console/login",
            content=f"name=x&key={SECRET}",
            headers={"origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert forged.status_code == 403
    runtime.close()


def test_too_many_wrong_keys_from_one_address_are_refused_for_a_while():
    sessions = Sessions(failures_per_minute=3)
    for _ in range(3):
        assert sessions.login("bad", SECRET, "x", "10.0.0.1") == "wrong key"
    assert sessions.login(SECRET, SECRET, "x", "10.0.0.1").startswith("too many")
    assert not isinstance(sessions.login(SECRET, SECRET, "x", "10.0.0.2"), str)


def test_sessions_are_signed_expire_and_are_revoked(monkeypatch):
    sessions = Sessions(idle_s=60, max_age_s=3600)
    session = sessions.login(SECRET, SECRET, "ana", "c")
    assert not isinstance(session, str)
    again = sessions.get(session.token, SECRET)
    assert again is not None and (again.id, again.name, again.csrf) == (
        session.id,
        "ana",
        session.csrf,
    )
    assert sessions.get(session.token, "sk_rotated") is None  # a new secret key ends it
    body, _, signature = session.token.rpartition(".")
    forged = body.replace(body[:4], "AAAA") + "." + signature
    assert sessions.get(forged, SECRET) is None
    # idle too long: refused, unless it is the open live stream asking
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    assert sessions.get(session.token, SECRET) is None
    assert sessions.get(session.token, SECRET, idle=False) is not None
    renewed = sessions.renewed(again, SECRET)  # a request renews the cookie
    assert sessions.get(renewed, SECRET) is not None
    sessions.logout(again)
    assert sessions.get(renewed, SECRET) is None


def test_a_session_works_on_every_process_of_the_site(tmp_path):
    """Two workers (two apps, one secret key): logged in on one, accepted by the other."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, first_runtime = make(tmp_path / "a")
    second, second_runtime = make(tmp_path / "b")
    with TestClient(first) as a, TestClient(second) as b:
        login(a)
        cookie = a.cookies.get("tt_console")
        assert cookie
        b.cookies.set("tt_console", cookie, path="/console")
        assert b.get("/console/api/session").json()["name"] == "ana"
        csrf = a.get("/console/api/session").json()["csrf"]
        checked = b.post(
            "/console/api/config/validate",
            content=json.dumps({"config": {"site": {}}}),
            headers={"x-csrf-token": csrf},
        )
        assert checked.status_code == 422  # through the guard (the config lacks slots)
    first_runtime.close()
    second_runtime.close()


def test_writes_need_the_csrf_token_and_the_feed_sees_decisions(tmp_path):
    app, runtime = make(tmp_path)
    with TestClient(app) as client:
        login(client)
        csrf = client.get("/console/api/session").json()["csrf"]
        body = json.dumps({"confirm": "hero-copy-test"})
        refused = client.post("/console/api/experiments/hero-copy-test/stop", content=body)
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
        done = client.post(
            "/console/api/experiments/hero-copy-test/stop",
            content=body,
            headers={"x-csrf-token": csrf},
        )
        assert done.status_code == 200 and done.json()["who"] == "ana"
        again = client.post(
            "/console/api/experiments/hero-copy-test/start",
            content=json.dumps({"confirm": "wrong"}),
            headers={"x-csrf-token": csrf},
        )
        assert again.status_code == 400 and "confirm" in again.json()["error"]

        now = time.time() * 1000
        reader = sign_visitor_id(SECRET, "reader")  # as the site's backend mints it
        batch = [
            {"kind": "consent", "event_id": "c", "user_id": reader, "session_id": "s", "ts": now,
             "purposes": {"analytics": True, "personalization": True}},
        ]  # fmt: skip
        client.post(
            "/v1/decide?key=pk_demo",
            json={"user_id": reader, "session_id": "s", "slots": ["cta"], "events": batch},
        )
        live = client.get("/console/api/live").json()
        assert any(d["slot"] == "cta" for d in live["decisions"])
        stored = live["decisions"][-1]["user"]
        assert client.get(f"/console/api/visitor?user_id={stored}").json()["events"]

        assert client.post("/v1/events?key=pk_wrong", content=b"[]").status_code == 401
        time.sleep(1.0)  # the figures are computed at most once a second
        stats = client.get("/console/api/live").json()["stats"]
        assert stats["errors"] >= 1 and stats["rejected_by_code"].get("401", 0) >= 1
        assert stats["decisions"] >= 1 and stats["open_pages"] == 0

        # erasure: nothing of the visitor stays in the console's memory
        erased = client.delete("/v1/users/reader", headers={"authorization": f"Bearer {SECRET}"})
        assert erased.status_code == 200
        live = client.get("/console/api/live").json()
        assert all(d["user"] != stored for d in live["decisions"])
        assert stored not in app.state.collector.feed.visitors
    runtime.close()


def test_the_experiments_tab_speaks_sentences_and_shows_the_reports_integrity_checks(tmp_path):
    """No raw statistics codes (`ZERO_NEGATIVE_VARIANCE`); the report's integrity checks."""
    app, runtime = make(tmp_path)
    with TestClient(app) as client:
        login(client)
        experiments = client.get("/console/api/experiments").json()["experiments"]
        report = next(x for x in experiments if x["name"] == "hero-copy-test")["report"]
        assert report is not None, "a running experiment with no traffic still has a report"
        errors = [a["error"] for m in report["metrics"] for a in m["arms"] if a["error"]]
        assert errors, "nobody exposed yet: the effects cannot be computed"
        assert all(e == e.lower() and " " in e for e in errors), errors  # sentences, not codes
        names = [c["name"] for c in report["integrity"]]
        assert names and len(names) == len(set(names))
        assert all(
            c["status"] in ("ok", "warn", "error") and c["message"] for c in report["integrity"]
        )
        assert any("sample ratio" in name.lower() for name in names), names
        assert any("orphan" in name.lower() for name in names), names
    runtime.close()


def test_the_bandits_tab_reads_the_served_policies(tmp_path):
    """Each declared policy as served: its updates and guardrail state, read from the
    pipeline's ``policies`` (a served policy's counts change what the tab shows)."""
    app, runtime = make(tmp_path)
    with TestClient(app) as client:
        login(client)
        shown = client.get("/console/api/bandits").json()["bandits"]
        assert shown and all(b["updates"] == 0 for b in shown)
        name = shown[0]["name"]
        served = runtime.policies[name]
        served.updates = 7
        served.counts["control"] = [4, 1.0]
        served.tripped = "policy below control"
        again = {b["name"]: b for b in client.get("/console/api/bandits").json()["bandits"]}
        assert again[name]["updates"] == 7
        assert again[name]["guardrail"]["tripped"] == "policy below control"
        assert again[name]["guardrail"]["control"] is not None
    runtime.close()
