"""The demo's segments: fitted once on simulated readers, named in its config, used by its rules."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from trimtab.config import load_config
from trimtab.demo.server import DEMO_CONFIG, build_app
from trimtab.features import FeatureProcessor
from trimtab.identity import sign_visitor_id
from trimtab.models.bootstrap import ensure_segments
from trimtab.models.live import LiveModels
from trimtab.sim.simulator import READER_GROUPS, Simulator


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    fitted = ensure_segments(load_config(DEMO_CONFIG), folder)  # what `trimtab demo` fits
    assert fitted is not None and fitted.stage == "live" and "simulated" in fitted.note
    assert ensure_segments(load_config(DEMO_CONFIG), folder) is None  # only the first run fits
    return folder


def test_the_names_in_the_demo_config_fit_the_readers_they_name(demo_dir):
    """New simulated readers of each kind land in the segment the config names after them."""
    config = load_config(DEMO_CONFIG)
    fp = FeatureProcessor(config.feature_specs())
    live = LiveModels(config, demo_dir / "models")
    fp.derived.append(live.read)
    sim = Simulator(seed=99, n_users=400, groups=READER_GROUPS)
    landed: dict[str, Counter] = {g.name: Counter() for g in READER_GROUPS}
    group = {v.user_id: v.group for v in sim.users}
    for visit in sim.sessions(600):
        fp.apply(visit)
        last = visit[-1]
        attrs = fp.features_of(last.user_id, last.session_id, now_ms=last.ts)
        landed[group[last.user_id]][attrs.get("segment") or "(unsure)"] += 1
    for name, counts in landed.items():
        top, n = counts.most_common(1)[0]
        assert top == name and n >= 0.7 * sum(counts.values()), (name, counts)


READER = sign_visitor_id("sk_demo", "reader")  # as the demo site's backend would mint it


def _event(kind: str, i: int, ts: float, **fields) -> dict:
    return {
        "kind": kind,
        "event_id": f"e{i}",
        "user_id": READER,
        "session_id": "s1",
        "ts": ts,
        **fields,
    }


def test_a_deep_reader_gets_the_readers_like_you_offer_on_the_next_article(demo_dir):
    app = build_app(data_dir=demo_dir, flush_s=0.05)
    t = time.time() * 1000
    on_page = {"page": "/article/politics-1", "page_category": "politics"}
    events = [
        _event("consent", 0, t, purposes={"analytics": True, "personalization": True}),
        _event("context", 1, t + 1, device="desktop", viewport_w=1440, viewport_h=900),
        _event("page_view", 2, t + 2, **on_page),
    ]
    for j in range(12):  # a slow, thorough read to the end, eyes on politics and science
        at = t + 3000 * (j + 1)
        events.append(
            _event("scroll", 10 + j, at, depth=min(1.0, 0.1 + j * 0.08), velocity=260.0, **on_page)
        )
        category = "politics" if j % 2 else "science"
        events.append(
            _event(
                "visible",
                40 + j,
                at + 500,
                element=f"card-{j}",
                element_kind="card",
                category=category,
                visible_ms=2500.0,
                **on_page,
            )
        )
    next_page = {"page": "/article/science-2", "page_category": "science"}
    events.append(_event("page_view", 90, t + 40_000, **next_page))
    with TestClient(app) as client:
        sent = client.post("/v1/events?key=pk_demo", content=json.dumps(events))
        assert sent.status_code == 200, sent.text
        answer = client.post(
            "/v1/decide?key=pk_demo",
            content=json.dumps(
                {"user_id": READER, "session_id": "s1", "slots": ["cta"], **next_page}
            ),
        ).json()
        cta = answer["decisions"][0]
        assert cta["variant"] == "readers_like_you", cta
        assert cta["rule_id"] == "segment-deep-readers"
        assert "readers like you (segment 'deep readers')" in cta["reason"]
        assert "segment='deep-readers'" in cta["reason"]
        headers = {"Authorization": "Bearer sk_demo"}
        segments = client.get("/v1/admin/segments", headers=headers).json()
        named = {s["id"]: s["name"] for s in segments["report"]["segments"]}
        assert named == {
            "s1": "deep-readers",
            "s2": "late-evening-skimmers",
            "s3": "tech-loyalists",
            "s4": "travel-browsers",
        }
        logged = client.get("/v1/admin/decisions?user_id=reader", headers=headers).json()
        assert any('"segments"' in row["models"] for row in logged)


@pytest.mark.browser
def test_in_chromium_a_deep_reader_sees_the_segment_offer_and_why(demo_dir, browser, tmp_path):
    """Real Chromium, the real tracker: read three politics/science stories to the end, open a
    fourth; its call to action is the deep readers' one and the reason names the segment."""
    import threading

    import uvicorn

    from support import free_port
    from trimtab.demo import site

    articles = [a for a in site.load_articles() if a["category"] in ("politics", "science")]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(data_dir=demo_dir, flush_s=0.05),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ws="websockets-sansio",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        for i, article in enumerate(articles[:3]):
            page.goto(f"http://127.0.0.1:{port}/article/{article['slug']}")
            if i == 0:  # the banner shows once the tracker is wired
                page.locator("[data-consent-accept]").click(timeout=10_000)
            page.mouse.move(640, 400)
            for _ in range(40):  # slow, steady reading down to the end
                page.mouse.wheel(0, 60)
                page.wait_for_timeout(200)
            page.wait_for_timeout(1200)
        page.goto(f"http://127.0.0.1:{port}/article/{articles[3]['slug']}")
        cta = page.locator('[data-tt-slot="cta"]')
        cta.get_by_text("Readers like you keep us going").wait_for(timeout=10_000)
        cta.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "segment-offer.png"))
        headers = {"Authorization": "Bearer sk_demo"}
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/admin/decisions?limit=50", headers=headers
        )
        rows = json.loads(urllib.request.urlopen(request, timeout=5).read())
        offer = next(r for r in rows if r["slot"] == "cta" and r["variant"] == "readers_like_you")
        assert "readers like you (segment 'deep readers')" in offer["reason"]
        assert json.loads(offer["models"])["segments"]["p"] >= 0.6
    finally:
        page.close()
        server.should_exit = True
        thread.join(timeout=10)
