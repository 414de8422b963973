"""`trimtab demo`: the demo news site and the collector in one process.

The site's pages come from :mod:`trimtab.demo.site`; the collector (events, live loop, decide)
from :mod:`trimtab.collector`. The rail's variants in the demo config are structured
(``{rail: tech}``); :func:`render_payload` turns them into the rail's HTML for the page it
will be shown on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from trimtab.collector import create_app
from trimtab.config import SiteConfig, load_config
from trimtab.decide import Decision
from trimtab.demo import site
from trimtab.runtime import Runtime

DEMO_CONFIG = Path(__file__).parent / "config.yaml"
DEMO_SECRET = "sk_demo"


def render_payload(decision: Decision, page: dict[str, Any]) -> dict[str, Any] | None:
    """Expand structured payloads (``{"rail": "tech"}``) into HTML for the current page."""
    payload = decision.payload
    if payload and "rail" in payload:
        path = page.get("page") or ""
        exclude = path.rsplit("/", 1)[-1] if path.startswith("/article/") else ""
        return {**payload, "html": site.render_rail(None, payload["rail"], exclude=exclude)}
    return payload


class CachedStatic(StaticFiles):
    """The site's static files, cacheable for an hour: a reader's next page does not fetch its
    stylesheet and pictures again (nor compete with its live socket for the server)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def build_app(
    config: SiteConfig | None = None, data_dir: str | Path = "var/demo", flush_s: float = 0.2
) -> Starlette:
    """The demo site with its collector, over the embedded stores in ``data_dir``."""
    os.environ.setdefault("TRIMTAB_SECRET_KEY", DEMO_SECRET)
    config = config or load_config(DEMO_CONFIG)
    runtime = Runtime(config, data_dir)
    articles = site.load_articles()

    def page_options() -> dict[str, str]:
        s = runtime.config.site
        return {"site_key": s.public_key, "consent_mode": s.consent}

    async def index(request: Request) -> Response:
        category = request.query_params.get("cat")
        if category not in site.CATEGORIES:
            category = None
        return HTMLResponse(site.render_index(articles, category=category, **page_options()))

    async def article(request: Request) -> Response:
        found = site.article_by_slug(request.path_params["slug"])
        if found is None:
            return HTMLResponse("<h1>Not found</h1>", status_code=404)
        return HTMLResponse(site.render_article(found, articles, **page_options()))

    routes = [
        Route("/", index),
        Route("/article/{slug}", article),
        Mount("/static", CachedStatic(directory=site.static_dir()), name="static"),
    ]
    return create_app(runtime, render=render_payload, extra_routes=routes, flush_interval_s=flush_s)
