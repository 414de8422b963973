"""The console in real Chromium, against the demo served for real (uvicorn, loopback).

One browser context is the operator (logged in to /console), another a reader of the demo.
Screenshots of each tab go to artifacts/console-*.png.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inthread import serve_app
from trimtab.demo.server import build_app

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SECRET = "sk_console_test"
VIEW = {"width": 1300, "height": 900}


@pytest.fixture
def demo(tmp_path, monkeypatch) -> Iterator[tuple[str, Any]]:
    monkeypatch.setenv("TRIMTAB_SECRET_KEY", SECRET)
    app = build_app(data_dir=tmp_path / "demo")
    with serve_app(app) as url:
        yield url, app.state.collector


def log_in(browser, url: str, name: str = "ana", key: str = SECRET):
    context = browser.new_context(viewport=VIEW)
    page = context.new_page()
    page.goto(url + "/console")
    assert page.url.endswith("/console/login")  # no session: the login form
    page.fill("#name", name)
    page.fill("#key", key)
    page.click("#login")
    if key == SECRET:  # the console's script has run and the first live figures arrived
        page.wait_for_selector("body[data-ready]")
    return context, page


def read_articles(browser, url: str, n: int = 3):
    """A reader who accepts consent and reads n articles to the end."""
    index = urllib.request.urlopen(url + "/").read().decode()
    paths = list(dict.fromkeys(re.findall(r'href="(/article/[^"]+)"', index)))[:n]
    reader = browser.new_context(viewport={"width": 1280, "height": 800})
    page = reader.new_page()
    page.goto(url + paths[0])
    page.click("[data-consent-accept]")
    page.wait_for_selector('[data-tt-slot="cta"][data-tt-variant]', state="attached")
    for path in paths:
        page.goto(url + path)
        page.mouse.move(5, 400)
        for _ in range(25):
            page.mouse.wheel(0, 150)
            page.wait_for_timeout(60)
    return reader


def until(check, timeout_s: float = 30.0) -> None:
    """Poll from Python (the console's CSP forbids the eval behind wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_log_in_and_watch_a_reader_decided_live(demo, browser):
    url, _ = demo
    context, page = log_in(browser, url)
    page.wait_for_selector("body[data-ready]")  # the first live figures arrived (SSE)
    assert page.inner_text("#who") == "ana"
    # the session cookie: HttpOnly (no script reads it), SameSite=Strict, the console's path
    [cookie] = [c for c in context.cookies() if c["name"] == "tt_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert page.evaluate("document.cookie") == ""

    reader = read_articles(browser, url)
    row = page.wait_for_selector('#stream tr[data-slot="cta"]', timeout=15_000)
    assert "cta" in row.inner_text()
    # the deep-reader rule fired for the reader: the stream says so, with its reason
    page.wait_for_selector('#stream tr[data-source="force"]', timeout=15_000)
    assert "scrolled past 75%" in page.inner_text("#stream")
    until(lambda: page.inner_text("#t-pages").isdigit() and int(page.inner_text("#t-pages")) >= 1)
    shot(page, "live")

    for tab in ("slots", "bandits"):
        page.click(f"#tabs button[data-tab={tab}]")
        page.wait_for_selector(f"#{tab}-body .card")
        page.wait_for_timeout(300)
        shot(page, tab)
    assert "deep-reader" in page.inner_text("#slots-body")
    assert "rail-bandit" in page.inner_text("#bandits-body")

    # the visitor inspector: the reader's features by scope, events and decisions
    page.click("#tabs button[data-tab=live]")
    page.click("#stream a.user")
    page.wait_for_selector("#visitor-body table")
    text = page.inner_text("#visitor-body")
    assert "features: page" in text and "scroll_depth_max" in text
    assert "recent events" in text and "page_view" in text
    assert "decisions and why" in text and "deep-reader" in text
    shot(page, "visitor")
    reader.close()
    context.close()


def test_stop_an_experiment_with_confirmation_and_an_audit_entry(demo, browser):
    url, collector = demo
    context, page = log_in(browser, url, name="bob")
    page.click("#tabs button[data-tab=experiments]")
    card = page.wait_for_selector('.experiment[data-name="hero-copy-test"]')
    assert "running" in card.inner_text()
    # a metric with nothing to compare yet says why and shows no interval or p beside it
    cells = [
        [td.inner_text() for td in row.query_selector_all("td")]
        for row in card.query_selector_all("table tr")
    ]
    effects = [c for c in cells if len(c) == 6 and c[3] not in ("baseline", "")]
    unmeasured = [c for c in effects if not c[3].startswith(("+", "-", "−"))]
    assert unmeasured, cells  # no reader in an arm yet here
    assert all(c[4] == "" and c[5] == "" for c in unmeasured), unmeasured
    card.query_selector('button.action[data-action="stop"]').click()
    box = card.query_selector("span.confirm:not([hidden])")
    box.query_selector("input").fill("hero-copy")  # not the name: refused
    box.query_selector("button.confirm-go").click()
    page.wait_for_selector(".experiment .outcome.error")
    assert "confirm" in page.inner_text(".experiment .outcome")
    assert all(r.enabled for r in collector.runtime.config.slots["hero"].rules)

    box.query_selector("input").fill("hero-copy-test")
    box.query_selector("button.confirm-go").click()
    page.wait_for_selector('.experiment[data-name="hero-copy-test"] .status-stopped')
    rule = next(r for r in collector.runtime.config.slots["hero"].rules if r.key)
    assert rule.enabled is False  # served at once
    latest = collector.config_versions.store.latest()
    assert latest.who == "bob" and latest.note == "stopped experiment hero-copy-test"
    assert [c["path"] for c in latest.diff] == ["$.slots.hero.rules[1].enabled"]
    shot(page, "experiments")
    context.close()


def test_apply_a_config_change_then_roll_it_back(demo, browser):
    url, collector = demo
    context, page = log_in(browser, url)
    page.click("#tabs button[data-tab=config]")
    page.wait_for_selector('#config-history tr[data-version="1"]')
    text = page.input_value("#config-text")
    edited = text.replace('"default": "newsletter"', '"default": "subscribe_offer"', 1)
    assert edited != text
    page.fill("#config-text", edited)
    page.click("#config-dry")
    until(lambda: "would change" in page.inner_text("#config-out"))
    page.fill("#config-note", "offer by default")
    page.click("#config-apply")
    page.wait_for_selector('#config-history tr[data-version="2"]')
    assert collector.runtime.config.slots["cta"].default == "subscribe_offer"
    assert "offer by default" in page.inner_text('#config-history tr[data-version="2"]')

    row = page.query_selector('#config-history tr[data-version="1"]')
    row.query_selector('button.action[data-action="roll back"]').click()
    row.query_selector("span.confirm input").fill("1")
    row.query_selector("button.confirm-go").click()
    page.wait_for_selector('#config-history tr[data-version="3"]')
    assert collector.runtime.config.slots["cta"].default == "newsletter"
    latest = collector.config_versions.store.latest()
    assert latest.origin == "rollback" and latest.who == "ana"
    shot(page, "config")
    context.close()


def test_wrong_key_missing_csrf_and_stale_session_are_refused(demo, browser):
    url, collector = demo
    context, page = log_in(browser, url, key="sk_wrong")
    assert page.url.endswith("/console/login")
    assert "wrong key" in page.inner_text(".error")
    assert not [c for c in context.cookies() if c["name"] == "tt_console"]
    api = page.evaluate("fetch('/console/api/live').then(r => r.status)")
    assert api == 401
    context.close()

    context, page = log_in(browser, url)
    page.wait_for_selector("body[data-ready]")
    before = collector.config_versions.store.latest_number()
    # a state-changing request without the CSRF token is refused, and changes nothing
    status = page.evaluate(
        """fetch('/console/api/experiments/hero-copy-test/stop', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({confirm: 'hero-copy-test'})}).then(r => r.status)"""
    )
    assert status == 403
    wrong = page.evaluate(
        """fetch('/console/api/config/rollback', {method: 'POST',
             headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'},
             body: JSON.stringify({version: 1})}).then(r => r.status)"""
    )
    assert wrong == 403
    assert collector.config_versions.store.latest_number() == before
    # the page's own requests carry the token and work
    ok = page.evaluate(
        """fetch('/console/api/session').then(r => r.json()).then(s =>
             fetch('/console/api/config/validate', {method: 'POST', headers: {
               'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
               body: JSON.stringify({config: {site: {}}})}).then(r => r.json()))"""
    )
    # (validated: the token let it through; a config without slots is not valid)
    assert ok == {
        "valid": False,
        "errors": [{"path": "$.slots", "problem": "declare at least one slot"}],
    }

    # a stale session (idle too long) is refused like none: the open console goes to the login
    cookie = next(c for c in context.cookies() if c["name"] == "tt_console")["value"]
    sessions = collector.console.sessions
    sessions.revoke(sessions.get(cookie, SECRET).id)
    page.wait_for_url("**/console/login", timeout=10_000)
    assert page.evaluate("fetch('/console/api/live').then(r => r.status)") == 401
    context.close()


def test_time_to_first_render_is_marked(demo, browser):
    """The mark the benchmark reads: the first live figures on screen after navigation."""
    url, _ = demo
    context, page = log_in(browser, url)
    page.wait_for_selector("body[data-ready]")
    started = time.monotonic()
    page.reload()
    page.wait_for_selector("body[data-ready]")
    mark = page.evaluate("performance.getEntriesByName('tt-console-first-render')[0].startTime")
    assert 0 < mark < (time.monotonic() - started) * 1000 + 1
    context.close()
