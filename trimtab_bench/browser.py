"""`trimtab bench browser`: reader action → change visible, in real Chromium on the demo.

The demo site runs as ``trimtab demo`` in its own process (:class:`DemoProcess`: a loopback
port, the demo config without its reader segments (:func:`config_without_segments`), a fresh
data directory); Debian's Chromium, driven by Playwright, plays
readers who have already accepted the consent banner. For each trigger, every trial is a fresh
reader (a new browser context, so a new visitor id); times are taken *in the page*:

- **scroll past 75 %**: reading down with the wheel (100 px every 150 ms), from the first
  ``scroll`` event whose position is past 75 % of the page (the crossing) to the ``cta`` slot
  holding its new content (the tracker's ``swap`` event);
- **image dwell 3 s**: from 3 s after the pointer entered the picture (the rule is "more than
  3 s") to the ``review`` slot holding the detail box — the pointer still on the picture;
- **third story of a category**: from the third sport story's first contentful paint to its
  ``rail`` holding the sport rail (0 when it was there at first paint: the slots stay hidden
  for up to 300 ms until their first decision, so the reader never sees another rail first).
  The time from leaving the second story (``location`` set, as a link click does) is reported
  too: page load, tracker, WebSocket and first decision included. The demo gives half of its
  readers to the rail's bandit and half to the interest rules; this trigger is the interest
  rules', so its readers are drawn from their half (:func:`interest_readers`).

The pointer stays off the slots, so no swap is held by the tracker's pointer guard; a trial
whose change does not come within its deadline is counted as missing, never dropped silently.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import CHROMIUM, launch_chromium

SECRET = "sk_bench"
VIEWPORT = {"width": 1280, "height": 800}
CONSENTED = (
    "try { localStorage.setItem('tt_consent', "
    "JSON.stringify({analytics: true, personalization: true})); } catch (e) {}"
)
# Recorded in the page: every swap (slot, variant, time) and the reader's actions.
PROBE = """
window.__probe = {swaps: [], cross: null, enter: null};
(window.trimtab = window.trimtab || []).push(function (tt) {
  tt.on('swap', function (el, d) {
    __probe.swaps.push({slot: d.slot, variant: d.variant, rule: d.rule_id, source: d.source,
                        id: d.decision_id, reason: d.reason, why: d.why || '',
                        t: performance.now(),
                        epoch: performance.timeOrigin + performance.now()});
  });
});
addEventListener('scroll', function () {
  var h = document.documentElement.scrollHeight;
  if (__probe.cross === null && (scrollY + innerHeight) / h > 0.75)
    __probe.cross = performance.now();
}, {passive: true});
document.addEventListener('pointerenter', function (e) {
  if (__probe.enter === null && e.target.dataset && e.target.dataset.ttKind === 'image')
    __probe.enter = performance.now();
}, true);
"""


class DemoProcess:
    """``trimtab demo`` in its own process on a free loopback port (so the browser driver in
    this process never competes with the server for the interpreter); with ``segments``, as
    ``make demo`` runs it (``--segments``: reader segments fitted at the first start)."""

    def __init__(
        self, data_dir: str | Path, config: str | Path | None = None, segments: bool = False
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.segments = segments
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DemoProcess:
        from trimtab_bench.live import free_port

        self.port = free_port()
        command = [sys.executable, "-m", "trimtab.cli", "demo", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        if self.segments:
            command.append("--segments")
        env = {**os.environ, "TRIMTAB_SECRET_KEY": SECRET}
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 180  # a first start fits the demo's reader segments
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the demo server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def get(self, path: str) -> Any:
        """An admin route's JSON answer (the secret key the process was started with)."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {SECRET}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium through Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class TriggerResult:
    """Latencies of one trigger, in milliseconds, and the trials that never changed.

    ``from_action_ms`` (third story only): from leaving the previous page, page load included.
    """

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    missing: int = 0
    from_action_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p95_ms(self) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(0.95 * len(xs)))] if xs else float("nan")

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms) if self.latencies_ms else float("nan")


def config_without_segments(into: Path) -> Path:
    """The demo config without its reader segments (``segments:`` and the rules on
    ``segment``), written under ``into``.

    Segments are fitted on simulated readers at the demo's first start and assign even a
    brand-new visitor to a kind of reader; the journeys and this benchmark time and check the
    triggers of the page itself, so they run without them.
    """
    import yaml

    from trimtab.demo.server import DEMO_CONFIG

    data = yaml.safe_load(Path(DEMO_CONFIG).read_text(encoding="utf-8"))
    data.pop("segments", None)
    for slot in data["slots"].values():
        slot["rules"] = [
            r for r in slot.get("rules", []) if "segment" not in str(r.get("condition"))
        ]
    path = Path(into) / "demo-without-segments.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def interest_readers(count: int, category: str = "sport") -> list[str]:
    """Signed visitor ids (as the browser keeps them) whose rail the demo's interest rules
    choose.

    The demo gives half of its readers, by hash, to the rail's bandit (``rail-bandit``,
    ``coverage: 0.5``) and the other half to the hand-written interest rules: the category
    rail on the third story is the interest rules' trigger, so its trials are readers of that
    half. Found with the demo's own engine and the collector's pseudonymisation under
    :data:`SECRET`.
    """
    import msgspec

    from trimtab.bandits.serving import serve_policies
    from trimtab.config import load_config
    from trimtab.decide import Engine
    from trimtab.demo.server import DEMO_CONFIG
    from trimtab.identity import sign_visitor_id
    from trimtab.privacy import PrivacyGate

    config = load_config(DEMO_CONFIG)
    config.slots = {
        name: msgspec.structs.replace(
            slot, rules=[r for r in slot.rules if "segment" not in str(r.condition)]
        )
        for name, slot in config.slots.items()
    }
    engine = Engine(config, policies=serve_policies(config.slots, {}))
    gate = PrivacyGate(salt=SECRET.encode())
    found: list[str] = []
    n = 0
    while len(found) < count:
        raw = f"interest-reader-{n}"
        n += 1
        attrs = {
            "id": gate.user_id(raw),
            "session_id": "s",
            "interest_top": category,
            "interest_top_share": 1.0,
            "page_views": 3,
            "device": "desktop",
            "local_hour": 12,
        }
        (rail,) = engine.decide_attrs(attrs, ["rail"])
        if rail.rule_id == f"interest-{category}":
            found.append(sign_visitor_id(SECRET, raw))  # signed ids are required by default
    return found


def _fresh_page(browser: Any, visitor: str | None = None) -> tuple[Any, Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(CONSENTED)
    if visitor is not None:
        context.add_init_script(f"localStorage.setItem('tt_uid', {json.dumps(visitor)});")
    context.add_init_script(PROBE)
    return context, context.new_page()


def _swap(page: Any, slot: str, variant: str, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for s in page.evaluate("__probe.swaps"):
            if s["slot"] == slot and s["variant"] == variant:
                return s
        page.wait_for_timeout(20)
    return None


def _rendered(page: Any) -> None:
    page.wait_for_function("__probe.swaps.some(s => s.slot === 'cta')", timeout=15_000)


def scroll_trial(browser: Any, base: str, article: str) -> float | None:
    """Read down an article with the wheel until the offer replaces the newsletter box."""
    context, page = _fresh_page(browser)
    try:
        page.goto(base + article)
        _rendered(page)
        page.mouse.move(5, 400)  # off every slot
        for _ in range(120):  # reading: a wheel notch every 150 ms (a flick is not reading)
            page.mouse.wheel(0, 100)
            page.wait_for_timeout(150)
            if page.evaluate("__probe.cross !== null"):
                break
        swap = _swap(page, "cta", "subscribe_offer", 5.0)
        cross = page.evaluate("__probe.cross")
        return None if swap is None or cross is None else swap["t"] - cross
    finally:
        context.close()


def dwell_trial(browser: Any, base: str, article: str) -> float | None:
    """Rest the pointer on the article's picture until the detail box appears."""
    context, page = _fresh_page(browser)
    try:
        page.goto(base + article)
        _rendered(page)
        page.hover('img[data-tt-kind="image"]')
        swap = _swap(page, "review", "detail", 6.0)
        enter = page.evaluate("__probe.enter")
        return None if swap is None or enter is None else swap["t"] - (enter + 3000.0)
    finally:
        context.close()


def third_story_trial(
    browser: Any, base: str, stories: list[str], visitor: str
) -> tuple[float, float] | None:
    """Open three stories of one category; the third opens with that category's rail.

    Returns (ms from the third page's first contentful paint, ms from leaving the second
    page) to the rail's sport content; the first is 0 when the rail was ready at first paint.
    """
    context, page = _fresh_page(browser, visitor)
    try:
        for story in stories[:2]:
            page.goto(base + story)
            _rendered(page)
            page.wait_for_timeout(1200)  # read a little: some of the story is on screen
        left = page.evaluate(
            "s => { const t = performance.timeOrigin + performance.now(); location.href = s;"
            " return t; }",
            stories[2],
        )
        page.wait_for_url("**" + stories[2])
        page.wait_for_function("window.__probe !== undefined")
        swap = _swap(page, "rail", "sport", 5.0)
        if swap is None:
            return None
        paint = page.wait_for_function(
            "() => { const p = performance.getEntriesByName('first-contentful-paint')[0];"
            " return p ? p.startTime : null; }",
            timeout=5_000,
        ).json_value()
        return max(0.0, swap["t"] - paint), swap["epoch"] - left
    finally:
        context.close()


def _record(
    result: TriggerResult,
    latency: float | None,
    i: int,
    progress: Callable[[str, int], None] | None,
) -> None:
    if latency is None:
        result.missing += 1
    else:
        result.latencies_ms.append(latency)
    if progress is not None:
        progress(result.name, i + 1)


def run(
    trials: int = 30, progress: Callable[[str, int], None] | None = None
) -> list[TriggerResult]:
    """Every trigger, ``trials`` fresh readers each, against a demo in its own process."""
    from trimtab.demo import site

    articles = site.load_articles()
    sport = [site.article_url(a) for a in articles if a["category"] == "sport"]
    others = [site.article_url(a) for a in articles if a["category"] != "sport"]
    visitors = interest_readers(trials)
    results = [
        TriggerResult("scroll past 75 %"),
        TriggerResult("image dwell 3 s"),
        TriggerResult("third story of a category"),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="trimtab-bench-browser-") as tmp,
        DemoProcess(Path(tmp) / "data", config_without_segments(Path(tmp))) as demo,
        chromium() as browser,
    ):
        for i in range(trials):
            article = others[i % len(others)]
            for result, latency in (
                (results[0], scroll_trial(browser, demo.url, article)),
                (results[1], dwell_trial(browser, demo.url, article)),
            ):
                _record(result, latency, i, progress)
            stories = [sport[(i + k) % len(sport)] for k in range(3)]
            third = third_story_trial(browser, demo.url, stories, visitors[i])
            if third is not None:
                results[2].from_action_ms.append(third[1])
            _record(results[2], None if third is None else third[0], i, progress)
    return results
