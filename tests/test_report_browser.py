"""The experiment report over a real browser run: every exposure refers to a logged decision.

Twenty fresh readers open the demo in real Chromium, accept the consent banner and read three
stories of one category (the hero experiment takes readers once their interest has evidence).
The demo is then stopped and `trimtab report`'s integrity checks read its logs: no orphan
exposure, no pre-consent decision shown, no reader in two arms, no sample-ratio alarm.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trimtab.config import load_config
from trimtab.demo import site
from trimtab.experiments.html import render_html
from trimtab.experiments.report import analyze, integrity_checks
from trimtab_bench.browser import PROBE, VIEWPORT, DemoProcess, config_without_segments

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
READERS = 20


def _stories() -> dict[str, list[str]]:
    by_category: dict[str, list[str]] = {}
    for article in site.load_articles():
        by_category.setdefault(article["category"], []).append(site.article_url(article))
    return {c: urls for c, urls in by_category.items() if len(urls) >= 3}


def test_twenty_fresh_readers_leave_no_orphan_exposure(browser, tmp_path):
    stories = _stories()
    categories = sorted(stories)
    config_path = config_without_segments(tmp_path)
    data = tmp_path / "data"
    with DemoProcess(data, config_path) as demo:
        for i in range(READERS):
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(PROBE)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            urls = stories[categories[i % len(categories)]][:3]
            page.goto(demo.url + urls[0])
            page.click("[data-consent-accept]")
            for n, url in enumerate(urls):
                if n:
                    page.goto(demo.url + url)
                page.wait_for_function(
                    "new Set(__probe.swaps.map(s => s.slot)).size >= 4", timeout=15_000
                )
                page.mouse.wheel(0, 600)  # a little reading
                page.wait_for_timeout(300)
            context.close()
            assert not errors, errors
    report = analyze(load_config(config_path), "hero-copy-test", data)
    checks = {c.name: c for c in integrity_checks(report)}
    i = report.integrity
    assert i.exposures >= 3 * READERS  # every page showed the hero
    assert i.in_experiment > 0 and report.users > 0  # readers with evidence are in the test
    assert i.orphan_exposures == 0, i.orphan_ids
    assert checks["orphan exposures"].status == "ok"
    assert i.pre_consent_exposures == 0 and i.degraded_exposures == 0
    assert report.multi_arm_users == 0
    assert checks["sample ratio"].status != "error"
    page = render_html(report)
    assert 'id="check-orphan-exposures"' in page and "orphan exposures</b>: 0 —" in page
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "report-after-browser-run.html"
    out.write_text(page, encoding="utf-8")
    shot = browser.new_page(viewport={"width": 1280, "height": 900})
    shot.goto(out.as_uri())
    shot.screenshot(path=str(ARTIFACTS / "report-after-browser-run.png"))
    shot.close()
