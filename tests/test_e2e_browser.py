"""End to end in a real browser: Debian's Chromium, the real tracker, the real demo server.

The demo runs as its own process (``python -m trimtab.cli demo``) so a test can kill and
restart it. The test reads the server's event log (SQLite, WAL) directly to check what arrived.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from support import free_port

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARTICLE = "/article/"


class DemoServer:
    """`trimtab demo` in a subprocess on a free port, restartable on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "TRIMTAB_SECRET_KEY": "sk_e2e"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trimtab.cli",
                "demo",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180  # a first start fits the demo's reader segments
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("demo server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def events(self) -> list[dict]:
        """Every event in the server's log (read-only, while it runs)."""
        path = self.data_dir / "events.sqlite"
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()
        return [msgspec.json.decode(body) for (body,) in rows]


@pytest.fixture
def server(tmp_path) -> Iterator[DemoServer]:
    demo = DemoServer(tmp_path / "demo-data")
    demo.start()
    yield demo
    demo.stop()


def _article_path(server: DemoServer) -> str:
    html = urllib.request.urlopen(f"{server.url}/").read().decode()
    start = html.index(ARTICLE)
    return html[start : html.index('"', start)]


def _wait_for(predicate, timeout: float = 10.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_reading_adjusts_the_slots_live_and_everything_is_logged(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + _article_path(server))
    page.click("[data-consent-accept]")
    # the first decisions (after consent: a reader segment may already pick the cta's copy)
    page.wait_for_selector('[data-tt-slot="cta"][data-tt-variant]', state="attached")
    page.mouse.move(5, 400)  # off every slot, so swaps are not held back

    for _ in range(60):  # read down the article: a wheel notch every 150 ms (not a flick)
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(150)
        if page.evaluate("(scrollY + innerHeight) / document.body.scrollHeight > 0.85"):
            break
    page.wait_for_selector(
        '[data-tt-slot="cta"][data-tt-variant="subscribe_offer"]', state="attached", timeout=10_000
    )
    assert "Subscribe free for a month" in page.inner_text('[data-tt-slot="cta"]')

    page.evaluate("window.scrollTo(0, 0)")
    page.hover('img[data-tt-kind="image"]')
    page.wait_for_timeout(3300)  # rest on the picture for more than 3 s
    page.mouse.move(5, 790)
    page.wait_for_selector(
        '[data-tt-slot="review"][data-tt-variant="detail"]', state="attached", timeout=10_000
    )
    page.click('details[data-tt-kind="expand"] summary')

    # the "why am I seeing this" panel names the rule behind the offer
    page.click("#tt-why-toggle")
    assert "Because you read to the end of this article" in page.inner_text("#tt-why")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-article.png"), full_page=False)

    def arrived() -> list[dict] | None:
        events = server.events()
        kinds = {e["kind"] for e in events}
        exposed = {(e["slot"], e["variant"]) for e in events if e["kind"] == "exposure"}
        wanted = {"consent", "context", "page_view", "scroll", "hover", "click"}
        if wanted <= kinds and {("cta", "subscribe_offer"), ("review", "detail")} <= exposed:
            return events
        return None

    events = _wait_for(arrived, timeout=15)
    assert events, f"missing events; got kinds {sorted({e['kind'] for e in server.events()})}"
    depth = max(e["depth"] for e in events if e["kind"] == "scroll")
    assert depth > 0.75
    hovered = sum(
        e["dwell_ms"] for e in events if e["kind"] == "hover" and e["element_kind"] == "image"
    )
    assert hovered > 3000
    assert any(e["kind"] == "click" and e["element_kind"] == "expand" for e in events)
    # ids are pseudonymous in storage: the browser's own id never reaches the log
    raw_uid = page.evaluate("localStorage.getItem('tt_uid')")
    assert raw_uid and all(e["user_id"] != raw_uid for e in events)


def test_without_consent_no_request_leaves_the_page(server, browser):
    page = browser.new_page()
    requests: list[str] = []
    sockets: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(server.url + _article_path(server))
    page.wait_for_selector("#tt-consent:not([hidden])")
    page.mouse.move(5, 300)
    for _ in range(15):
        page.mouse.wheel(0, 500)
        page.wait_for_timeout(50)
    page.hover('img[data-tt-kind="image"]')
    page.wait_for_timeout(1500)
    page.click("[data-consent-decline]")
    page.wait_for_timeout(1500)
    tracking = [u for u in requests if "/v1/" in u]
    assert tracking == [] and sockets == []
    assert server.events() == []
    # the refusal itself is all that is kept (so the banner does not ask again): no identifier
    stored = page.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))")
    assert [k for k in stored if k.startswith("tt_")] == ["tt_consent"]
    assert page.evaluate("JSON.parse(localStorage.tt_consent).analytics") is False
    # the slots show their default content
    assert page.get_attribute('[data-tt-slot="cta"]', "data-tt-variant") is None
    assert "morning briefing" in page.inner_text('[data-tt-slot="cta"]')


def test_tracker_reconnects_after_the_server_restarts_and_loses_nothing(server, browser):
    page = browser.new_page()
    page.goto(server.url + _article_path(server))
    page.click("[data-consent-accept]")
    assert _wait_for(lambda: page.evaluate("trimtab.state().ws") == "open", timeout=10)
    # The page holds the signed id the server issued and its first events are acknowledged.
    # (A kill between storing a first hello's events and its answer reaching the page makes the
    # next server issue another fresh id for the same events: they are then stored twice, under
    # two visitors. Known, in the stop-17 note; this test is about reconnecting, not that.)
    assert _wait_for(
        lambda: page.evaluate(
            "(s => s.user_id.startsWith('vid.') && s.unacked === 0)(trimtab.state())"
        ),
        timeout=10,
    )

    server.kill()
    page.mouse.move(5, 300)
    for _ in range(10):  # read on while the server is down
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(80)
    page.evaluate("trimtab.track('while_down', 1)")
    page.wait_for_timeout(1500)
    server.start()

    def delivered() -> bool:
        return any(e["kind"] == "custom" and e["name"] == "while_down" for e in server.events())

    assert _wait_for(delivered, timeout=40), "events queued while the server was down never arrived"
    assert _wait_for(lambda: page.evaluate("trimtab.state().ws") == "open", timeout=40)
    assert page.evaluate("trimtab.state().reconnects") >= 1
    ids = [e["event_id"] for e in server.events()]
    assert len(ids) == len(set(ids))  # nothing logged twice


def test_demo_home_page_screenshot(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/")
    page.click("[data-consent-accept]")
    page.wait_for_selector('[data-tt-slot="hero"][data-tt-variant]', state="attached")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "demo-home.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("TRIMTAB_UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(path, Path(__file__).resolve().parents[1] / "docs" / "demo.png")


def test_the_tracker_gets_a_signed_visitor_id_and_keeps_it_across_page_loads(server, browser):
    """Signed ids are required (the default): the first hello hands the page a visitor id, the
    tracker keeps it in localStorage and says hello with it on the next page; a forged one is
    replaced, and nothing is ever stored under it."""
    from trimtab.privacy import PrivacyGate

    stored_as = PrivacyGate(salt=b"sk_e2e").user_id  # the demo's salt is its secret key
    context = browser.new_context()
    page = context.new_page()
    hellos: list[dict] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent",
            lambda frame: (
                hellos.append(msgspec.json.decode(frame)) if '"hello"' in str(frame) else None
            ),
        ),
    )
    path = _article_path(server)
    page.goto(server.url + path)
    page.click("[data-consent-accept]")
    vid = _wait_for(
        lambda: (
            (page.evaluate("localStorage.getItem('tt_uid')") or "").startswith("vid.v1.")
            and page.evaluate("localStorage.getItem('tt_uid')")
        )
    )
    assert vid and page.evaluate("trimtab.state().user_id") == vid
    first_placeholder = hellos[0]["user_id"]
    assert not first_placeholder.startswith("vid.")  # the first contact had no visitor id yet
    page.evaluate("trimtab.track('first_page', 1); trimtab.flush()")

    page.goto(server.url + "/")  # the next page load: the same visitor id, no new one
    page.wait_for_selector('[data-tt-slot="hero"][data-tt-variant]', state="attached")
    page.evaluate("trimtab.track('second_page', 2); trimtab.flush()")
    assert page.evaluate("localStorage.getItem('tt_uid')") == vid
    assert _wait_for(lambda: len(hellos) >= 2)
    assert hellos[-1]["user_id"] == vid

    def names() -> set[str]:
        return {e["name"] for e in server.events() if e["kind"] == "custom"}

    assert _wait_for(lambda: {"first_page", "second_page"} <= names(), timeout=15)
    users = {e["user_id"] for e in server.events()}
    assert users == {stored_as(vid)}  # the first page's events too (sent before the id came)

    # a forged id (someone else's visitor part, a made-up signature) is replaced, never used
    forged = "vid.v1.somebody-else." + "A" * 22
    page.evaluate(f"localStorage.setItem('tt_uid', '{forged}')")
    page.reload()
    fresh = _wait_for(
        lambda: (
            page.evaluate("localStorage.getItem('tt_uid')") not in (forged, vid)
            and page.evaluate("localStorage.getItem('tt_uid')")
        )
    )
    assert fresh and fresh.startswith("vid.v1.")
    page.evaluate("trimtab.track('after_forgery', 3); trimtab.flush()")
    assert _wait_for(lambda: "after_forgery" in names(), timeout=15), page.evaluate(
        "JSON.stringify(trimtab.state())"
    )
    users = {e["user_id"] for e in server.events()}
    assert stored_as(forged) not in users and stored_as("somebody-else") not in users
    assert stored_as(fresh) in users
    context.close()
