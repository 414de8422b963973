"""docs/integrate.md, followed for real: a small site that is not the demo, in real Chromium.

"The Garden Shop" is a Starlette app of its own on its own origin. It renders its pages with
the server-side client (trimtab.client: the first variant is in the HTML, no flicker), loads
/t.js from a separate trimtab server started from the `trimtab init` scaffold, has a
single-page section (history navigation) and a login (identify).
"""

from __future__ import annotations

import html
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from inthread import serve_app
from support import free_port
from trimtab.client import TrimtabClient, reader_id, sign_visitor_id
from trimtab.collector import create_app
from trimtab.config import parse_config
from trimtab.identity import visitor_of
from trimtab.qa import force_token
from trimtab.runtime import Runtime
from trimtab.scaffold import scaffold

pytestmark = pytest.mark.browser

SECRET = "sk_garden"
APP_SECRET = "garden-accounts-key"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def shop(trimtab_url: str, public_key: str) -> Starlette:
    """The site: its own pages, trimtab added as docs/integrate.md says."""
    client = TrimtabClient(trimtab_url, public_key, timeout_s=0.5)

    def visitor(request: Request) -> tuple[str, str]:
        account = request.cookies.get("account")
        # signed visitor ids, minted with trimtab's secret key (docs/integrate.md, Identity)
        if account:
            uid = sign_visitor_id(SECRET, reader_id(APP_SECRET, account))
        else:
            uid = request.cookies.get("uid", "")
        fresh = sign_visitor_id(SECRET, "anon-" + secrets.token_hex(8))
        return uid or fresh, request.cookies.get("sid", "s-1")

    def page(request: Request, body: str, title: str) -> Response:
        uid, sid = visitor(request)
        decided = client.decide(
            uid,
            sid,
            ["cta"],
            page=request.url.path,
            fallback={"cta": "standard"},
            force=request.query_params.get("tt_force", ""),
        )
        cta = decided["cta"]
        content = cta.html or "<a href='/subscribe'>Subscribe</a>"
        text = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>.tt-hide [data-tt-slot]{{visibility:hidden}}</style></head><body>
<nav><a href="/">Home</a> <a href="/app">Planner</a> <a href="/login">Log in</a></nav>
<button id="accept">Accept cookies</button>
<main id="main">{body}</main>
<div data-tt-slot="cta" data-tt-variant="{cta.variant}"
 data-rendered-by="{cta.source}">{content}</div>
<footer style="height:300px">The Garden Shop</footer>
<script>window.trimtab = [(t) => t.identify({uid!r})];</script>
<script src="{trimtab_url}/t.js" data-key="{public_key}" data-endpoint="{trimtab_url}"></script>
<script>document.getElementById('accept').onclick = () =>
  trimtab.consent({{analytics: true, personalization: true}});</script>
</body></html>"""
        response = HTMLResponse(text)
        if not request.cookies.get("uid") and not request.cookies.get("account"):
            response.set_cookie("uid", uid)
        return response

    article = "".join(f"<p>{'Roses want sun and patience. ' * 30}</p>" for _ in range(12))

    async def home(request: Request) -> Response:
        return page(request, f"<h1>Growing roses</h1>{article}", "Roses")

    async def planner(request: Request) -> Response:
        body = """<h1 id="title">Planner</h1><a id="to-two" href="/app/two">Next week</a>
<script>document.getElementById('to-two').onclick = (e) => {
  e.preventDefault();
  history.pushState({}, '', '/app/two');
  document.getElementById('title').textContent = 'Planner: next week';
};</script>"""
        return page(request, body, "Planner")

    async def login(request: Request) -> Response:
        response = RedirectResponse("/", 303)
        response.set_cookie("account", "alice")
        return response

    return Starlette(
        routes=[Route("/", home), Route("/app", planner), Route("/app/{rest}", planner),
                Route("/login", login)]
    )  # fmt: skip


@pytest.fixture
def garden(tmp_path, monkeypatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("TRIMTAB_SECRET_KEY", SECRET)
    site_port = free_port()
    site_url = f"http://127.0.0.1:{site_port}"
    text = scaffold("garden", "The Garden Shop", [site_url], str(tmp_path / "data"))
    (tmp_path / "trimtab.yaml").write_text(text)
    config = parse_config(yaml.safe_load(text), str(tmp_path / "trimtab.yaml"))
    runtime = Runtime(config, tmp_path / "data")
    app = create_app(runtime, flush_interval_s=0.05)
    with (
        serve_app(app) as trimtab_url,
        serve_app(shop(trimtab_url, config.site.public_key), port=site_port) as url,
    ):
        yield {"url": url, "runtime": runtime, "gate": app.state.collector.gate}


def events_of(runtime: Runtime) -> list[Any]:
    return [e for _, e in runtime.deployment.event_log.read_sync(0, 100_000)]


def until(check, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_a_site_of_its_own_renders_decides_adjusts_and_follows_spa_and_login(garden, browser):
    url, runtime = garden["url"], garden["runtime"]
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.goto(url + "/")
    # rendered on the server by the client: the default, decided by trimtab (not a fallback)
    slot = page.query_selector('[data-tt-slot="cta"]')
    assert slot.get_attribute("data-tt-variant") == "standard"
    assert slot.get_attribute("data-rendered-by") != "fallback"

    page.click("#accept")
    page.mouse.move(5, 300)
    for _ in range(60):
        page.mouse.wheel(0, 200)
        page.wait_for_timeout(80)
        if page.evaluate("(scrollY + innerHeight) / document.body.scrollHeight > 0.9"):
            break
    # the scaffold's rule: past 75 % the cta turns into its template variant, filled
    page.wait_for_selector('[data-tt-slot="cta"][data-tt-variant="engaged"]', state="attached")
    assert page.inner_text('[data-tt-slot="cta"]') == "You read to the end. Subscribe?"
    uid = page.evaluate("trimtab.state().user_id")
    # the site's own id (identify), shared with server decide, signed
    assert visitor_of(uid).startswith("anon-") and uid.startswith("vid.v1.")

    # single-page navigation: a new page view, with its own id, said hello anew
    page.goto(url + "/app")
    first_view = page.evaluate("trimtab.state().page_view_id")
    page.click("#to-two")
    until(lambda: page.evaluate("trimtab.state().page_view_id") != first_view)
    second_view = page.evaluate("trimtab.state().page_view_id")
    stored = garden["gate"].user_id(uid)  # pseudonymous in storage
    views = until(
        lambda: [
            e for e in events_of(runtime)
            if type(e).__name__ == "PageView" and e.user_id == stored and e.page == "/app/two"
        ]
    )  # fmt: skip
    assert views and views[-1].page_view_id == second_view != first_view

    # logging in: the account's opaque id, the same the server-side client decides for
    page.goto(url + "/login")
    account = sign_visitor_id(SECRET, reader_id(APP_SECRET, "alice"))
    assert until(lambda: page.evaluate("trimtab.state().user_id") == account)
    page.mouse.wheel(0, 400)
    page.evaluate("trimtab.flush()")
    alice = garden["gate"].user_id(account)
    found = until(lambda: any(e.user_id == alice for e in events_of(runtime)))
    assert found, "no event of the identified reader arrived"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "integrate-garden.png"))

    # a QA link rendered on the server: no script needed for the forced variant
    token = force_token(SECRET, {"cta": "engaged"}, time.time() + 60)
    forced = context.new_page()
    forced.goto(f"{url}/?tt_force={token}")
    raw = forced.content()
    assert re.search(r'data-tt-variant="engaged" data-rendered-by="qa"', raw), html.unescape(raw)[
        :300
    ]
    context.close()
