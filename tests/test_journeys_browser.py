"""Reader journeys on the demo, in real Chromium at 1280×800: one per kind of reader.

Each journey asserts the exact sequence of variants every slot shows on every page (the
tracker's ``swap`` events, recorded in the page) and that nothing changes without a new
trigger: after the last trigger the reader lingers and every sequence stays as it was. The
demo runs as its own process (``trimtab demo``) with a fresh data directory per module, without
its reader segments (the journeys check the page's own triggers — see
``trimtab_bench.browser.config_without_segments``), except the last journey: the shipped demo
as ``make demo`` runs it, segments and their rules included (:func:`shipped`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from trimtab.demo import site
from trimtab_bench.browser import (
    PROBE,
    VIEWPORT,
    DemoProcess,
    config_without_segments,
    interest_readers,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
DEMO_CONFIG = ROOT / "src" / "trimtab" / "demo" / "config.yaml"
ARTICLES = site.load_articles()
SPORT = [site.article_url(a) for a in ARTICLES if a["category"] == "sport"]
OTHER = [site.article_url(a) for a in ARTICLES if a["category"] not in ("sport", "politics")]
SCIENCE = [site.article_url(a) for a in ARTICLES if a["category"] == "science"]
GPC = (
    "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', "
    "{get: () => true, configurable: true})"
)
LINGER_MS = 2500  # after the last trigger: nothing may change while the reader stays


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    folder = tmp_path_factory.mktemp("journeys")
    with DemoProcess(folder / "data", config_without_segments(folder)) as server:
        yield server


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """The demo as ``make demo`` serves it: its own config, reader segments fitted at start."""
    folder = tmp_path_factory.mktemp("shipped")
    with DemoProcess(folder / "data", segments=True) as server:
        yield server


class Reader:
    """One reader in a fresh browser context; what each page's slots showed, page by page."""

    def __init__(self, browser: Any, demo: DemoProcess, init: tuple[str, ...] = ()) -> None:
        self.demo = demo
        self.context = browser.new_context(viewport=VIEWPORT)
        for script in (*init, PROBE):
            self.context.add_init_script(script)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda w: self.requests.append(w.url))
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str, slots: int = 4) -> None:
        self.page.goto(self.demo.url + path)
        self.page.wait_for_function("window.trimtab && trimtab.state && trimtab.state().revealed")
        if slots:
            self.rendered(slots)

    def rendered(self, slots: int) -> None:
        self.page.wait_for_function(
            f"new Set(__probe.swaps.map(s => s.slot)).size >= {slots}", timeout=15_000
        )

    def swaps(self) -> list[dict[str, Any]]:
        return self.page.evaluate("__probe.swaps")

    def shown(self) -> dict[str, list[str]]:
        """Per slot, every variant it showed on this page, in order."""
        out: dict[str, list[str]] = {}
        for s in self.swaps():
            out.setdefault(s["slot"], []).append(s["variant"])
        return out

    def wait_for(self, slot: str, variant: str) -> dict[str, Any]:
        self.page.wait_for_function(
            "([slot, v]) => __probe.swaps.some(s => s.slot === slot && s.variant === v)",
            arg=[slot, variant],
            timeout=10_000,
        )
        return next(s for s in self.swaps() if s["slot"] == slot and s["variant"] == variant)

    def linger(self) -> dict[str, list[str]]:
        """Stay without doing anything new; what the slots showed must not move meanwhile."""
        before = self.shown()
        self.page.wait_for_timeout(LINGER_MS)
        after = self.shown()
        assert after == before, f"changed without a trigger: {before} -> {after}"
        return after

    def calm_read_to(self, depth: float) -> None:
        """Wheel down one notch every 150 ms, pointer off every slot, until ``depth``."""
        self.page.mouse.move(5, 400)
        for _ in range(120):
            if (
                self.page.evaluate(
                    "(scrollY + innerHeight) / document.documentElement.scrollHeight"
                )
                >= depth
            ):
                return
            self.page.mouse.wheel(0, 80)
            self.page.wait_for_timeout(150)

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def reader(browser: Any, demo: DemoProcess) -> Iterator[Reader]:
    r = Reader(browser, demo)
    yield r
    r.close()


def events_of(demo: DemoProcess) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{demo.data_dir / 'events.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [json.loads(body) for (body,) in rows]


def test_deep_reader_gets_the_offer_and_the_next_article_opens_with_defaults(reader):
    reader.open(OTHER[0], slots=0)
    reader.page.click("[data-consent-accept]")
    reader.rendered(4)
    first = reader.shown()
    rail = first["rail"]
    assert first == {"hero": ["top_story"], "review": ["none"], "cta": ["newsletter"], "rail": rail}
    reader.calm_read_to(0.97)
    offer = reader.wait_for("cta", "subscribe_offer")
    assert offer["rule"] == "deep-reader"
    assert reader.linger() == {
        "hero": ["top_story"],  # calm reading is not "in a hurry"
        "review": ["none"],
        "cta": ["newsletter", "subscribe_offer"],
        "rail": rail,  # chosen when the page opened; never moves
    }
    reader.open(OTHER[1])
    opened = reader.linger()
    assert {k: v for k, v in opened.items() if k != "rail"} == {
        "hero": ["top_story"],
        "review": ["none"],
        "cta": ["newsletter"],  # this page has not been read to the end
    }
    assert len(opened["rail"]) == 1
    assert all("scroll_depth_max=1" not in s.get("reason", "") for s in reader.swaps())


def test_skimmer_gets_the_short_version_once_and_no_read_to_the_end_offer(reader):
    reader.open(OTHER[2], slots=0)
    reader.page.click("[data-consent-accept]")
    reader.rendered(4)
    reader.page.mouse.move(5, 400)
    for _ in range(16):  # flick through to the end: 250 px every 30 ms
        reader.page.mouse.wheel(0, 250)
        reader.page.wait_for_timeout(30)
    skim = reader.wait_for("hero", "skim")
    assert skim["rule"] == "fast-scroller"
    shown = reader.linger()
    assert shown["hero"] == ["top_story", "skim"]
    assert shown["cta"] == ["newsletter"]  # past 75 %, but flicking is not reading to the end
    assert shown["review"] == ["none"] and len(shown["rail"]) == 1
    assert reader.page.evaluate("(scrollY + innerHeight) / document.body.scrollHeight") > 0.75


def test_image_lingerer_sees_the_detail_box_on_screen_next_to_the_picture(reader):
    reader.open(OTHER[3], slots=0)
    reader.page.click("[data-consent-accept]")
    reader.rendered(4)
    image = reader.page.locator('img[data-tt-kind="image"]')
    image.scroll_into_view_if_needed()
    reader.page.wait_for_timeout(300)
    image.hover()
    detail = reader.wait_for("review", "detail")
    assert detail["rule"] == "image-dwell"
    # the pointer has not left the picture, and the box is on screen, on the picture's corner
    assert reader.page.evaluate("document.querySelector('img[data-tt-kind=image]:hover') !== null")
    box = reader.page.locator(".tt-review").bounding_box()
    picture = image.bounding_box()
    assert box is not None and picture is not None
    assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"]
    assert picture["x"] <= box["x"] and box["x"] + box["width"] <= picture["x"] + picture["width"]
    assert picture["y"] <= box["y"] <= picture["y"] + picture["height"]
    ARTIFACTS.mkdir(exist_ok=True)
    reader.page.screenshot(path=str(ARTIFACTS / "journey-image-lingerer.png"))
    shown = reader.linger()
    assert shown["review"] == ["none", "detail"]
    assert shown["hero"] == ["top_story"] and shown["cta"] == ["newsletter"]


def test_category_loyalist_gets_the_category_rail_from_the_third_story_on(browser, demo):
    # half of the demo's readers (by hash) get the rail's bandit; this one gets the rules
    (visitor,) = interest_readers(1)
    reader = Reader(browser, demo, init=(f"localStorage.setItem('tt_uid', '{visitor}')",))
    try:
        _loyalist(reader)
    finally:
        reader.close()


def _loyalist(reader: Reader) -> None:
    reader.open(SPORT[0], slots=0)
    reader.page.click("[data-consent-accept]")
    rails, heroes = [], []
    for n, story in enumerate(SPORT[:4]):
        if n:
            reader.open(story)
        else:
            reader.rendered(4)
        reader.page.mouse.move(5, 400)
        reader.page.mouse.wheel(0, 300)  # some of the story on screen for a while
        shown = reader.linger()
        assert all(len(variants) == 1 for variants in shown.values()), shown  # no changes
        swaps = {s["slot"]: s for s in reader.swaps()}
        rails.append((swaps["rail"]["variant"], swaps["rail"]["rule"]))
        heroes.append(swaps["hero"])
    # the third story opens with the sport rail (its first render: nothing flips later)
    assert rails[2:] == [("sport", "interest-sport"), ("sport", "interest-sport")]
    assert all(rule != "interest-sport" for _, rule in rails[:2])  # no claim before evidence
    # "For you" only with evidence, as an arm of the hero test; before, everyone's default
    assert [h["source"] for h in heroes[:2]] == ["default", "default"]
    assert {h["source"] for h in heroes[2:]} == {"experiment"}


def test_first_time_visitor_is_told_nothing_about_interests(reader):
    reader.open("/", slots=0)
    reader.page.click("[data-consent-accept]")
    reader.rendered(2)
    shown = reader.linger()
    assert shown["hero"] == ["top_story"] and len(shown["rail"]) == 1
    # nothing claims to know what this reader reads: no "For you", no interest rule
    swaps = reader.swaps()
    assert all("what you read" not in s["why"].lower() for s in swaps), swaps
    assert all(not s["rule"].startswith("interest-") for s in swaps), swaps
    toggle = reader.page.locator("#tt-why-toggle")
    if any(s["why"] for s in swaps):  # a bandit's trial is explained as one
        toggle.click()
        panel = reader.page.locator("#tt-why").inner_text()
        assert "what you read" not in panel.lower() and "For you" not in panel
    else:  # nothing adjusted: nothing to explain, no button
        assert toggle.is_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    reader.page.screenshot(path=str(ARTIFACTS / "journey-first-visit.png"))


def test_decliner_is_not_tracked_nor_asked_again(reader):
    reader.open(OTHER[4], slots=0)
    reader.page.click("[data-consent-decline]")
    reader.calm_read_to(0.97)
    reader.page.hover('img[data-tt-kind="image"]')
    reader.page.wait_for_timeout(3500)
    reader.open(OTHER[5], slots=0)
    reader.page.wait_for_timeout(500)
    assert reader.page.locator("#tt-consent").is_hidden()
    assert reader.swaps() == []
    assert [u for u in reader.requests if "/v1/" in u] == []
    assert reader.page.locator('[data-tt-slot="cta"]').get_attribute("data-tt-variant") is None


def test_global_privacy_control_means_no_implied_consent(browser, tmp_path):
    data = yaml.safe_load(config_without_segments(tmp_path).read_text())
    data["site"]["consent"] = "implied"
    config = tmp_path / "implied.yaml"
    config.write_text(yaml.safe_dump(data))
    with DemoProcess(tmp_path / "data", config) as implied:
        signalled = Reader(browser, implied, init=(GPC,))
        try:
            signalled.open(OTHER[0], slots=0)
            signalled.calm_read_to(0.97)
            signalled.page.wait_for_timeout(500)
            assert signalled.swaps() == []
            assert [u for u in signalled.requests if "/v1/" in u] == []
            assert signalled.page.locator("#tt-consent").is_visible()  # asked, not assumed
        finally:
            signalled.close()
        plain = Reader(browser, implied)
        try:
            plain.open(OTHER[0])  # no signal: implied consent applies, the slots are decided
            assert len(plain.shown()) == 4
        finally:
            plain.close()
        # only the reader without the signal was recorded
        assert len({e["user_id"] for e in events_of(implied)}) == 1


def test_after_accept_every_slot_shows_a_logged_post_consent_decision(reader, demo):
    """Issue 10: no decision made without consent is exposed as a personalised one."""
    reader.open(OTHER[0], slots=0)
    reader.page.wait_for_timeout(300)
    assert reader.swaps() == []  # nothing decided before consent
    reader.page.click("[data-consent-accept]")
    reader.rendered(4)
    reader.page.mouse.move(5, 400)
    reader.page.wait_for_timeout(1500)  # exposures reported
    user = reader.page.evaluate("trimtab.state().user_id")
    logged = {d["decision_id"]: d for d in demo.get(f"/v1/admin/decisions?user_id={user}")}
    shown = reader.swaps()
    assert len({s["slot"] for s in shown}) == 4
    for s in shown:
        assert s["id"] in logged, f"{s['slot']}: decision {s['id']} is not in the decision log"
        assert logged[s["id"]]["source"] not in ("no_consent", "degraded")
        assert s["source"] == logged[s["id"]]["source"]

    def exposures() -> list[dict[str, Any]]:
        stored = {d["user_id"] for d in logged.values()}
        return [e for e in events_of(demo) if e["kind"] == "exposure" and e["user_id"] in stored]

    reader.calm_read_to(0.97)  # every slot comes on screen: each reports its exposure
    reader.page.wait_for_timeout(1500)
    logged = {d["decision_id"]: d for d in demo.get(f"/v1/admin/decisions?user_id={user}")}
    exposed = exposures()
    assert {e["slot"] for e in exposed} == {"hero", "rail", "cta"}  # review is empty: unseen
    orphans = [e["decision_id"] for e in exposed if e["decision_id"] not in logged]
    assert orphans == []
    assert all(logged[e["decision_id"]]["source"] != "no_consent" for e in exposed)


def test_on_the_shipped_demo_a_segment_never_flips_a_slot_and_the_next_article_opens_afresh(
    browser: Any, shipped: DemoProcess
) -> None:
    """Segments on: a new reader is put in a kind of reader while reading their first
    article, once ``segments.min_events`` reading events are in (not on opening it: page
    views, consent, exposures and the masthead do not count). That changes nothing there;
    reading to the end does. The next article opens with its page's own defaults and the
    segment's offer, explained as "readers like you"; nothing moves while the reader stays."""
    reader = Reader(browser, shipped)
    try:
        reader.open(SCIENCE[0], slots=0)
        reader.page.click("[data-consent-accept]")
        reader.rendered(4)
        state = reader.page.evaluate("trimtab.state()")
        about = f"/v1/admin/features?user_id={state['user_id']}&session_id={state['session_id']}"
        opened_first = shipped.get(about)
        assert opened_first.get("segment") == "", opened_first.get("_models")  # no evidence yet
        reader.calm_read_to(0.6)  # short of the 75 % the deep-reader rule watches
        shown = reader.linger()
        assert all(len(variants) == 1 for variants in shown.values()), shown  # no flip
        assert shown["cta"] == ["newsletter"]
        reader.calm_read_to(0.97)  # a trigger: the page is read to the end
        offer = reader.wait_for("cta", "subscribe_offer")
        assert offer["rule"] == "deep-reader"
        done = reader.linger()
        features = shipped.get(about)  # assigned on this page, while it was read
        assert features.get("segment") == "deep-readers", features.get("_models")
        assert done["cta"] == ["newsletter", "subscribe_offer"]  # the segment flipped nothing
        assert {slot: v for slot, v in done.items() if slot != "cta"} == {
            slot: v for slot, v in shown.items() if slot != "cta"
        }
        reader.open(SCIENCE[1])
        opened = reader.linger()
        assert all(len(variants) == 1 for variants in opened.values()), opened
        assert opened["hero"] == ["top_story"] and opened["review"] == ["none"]
        cta = next(s for s in reader.swaps() if s["slot"] == "cta")
        # not "You read to the end" (that was the other page): the segment's offer, said so
        assert (cta["variant"], cta["rule"]) == ("readers_like_you", "segment-deep-readers")
        assert cta["why"] == "Because readers like you (deep readers) read stories to the end"
        assert all("scroll_depth_max" not in s["reason"] for s in reader.swaps())
        # (without scrolling to the offer: on a short story that reads it to the end)
        reader.page.locator("#tt-why-toggle").click()
        assert cta["why"] in reader.page.locator("#tt-why").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        reader.page.screenshot(path=str(ARTIFACTS / "journey-shipped-segment.png"))
        assert reader.shown() == opened  # opening the panel is not a trigger either
    finally:
        reader.close()
