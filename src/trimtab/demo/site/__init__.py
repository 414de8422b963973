"""The demo news site: articles, page templates and static assets (no web framework here).

"The Daily Trim" is a small fictional news site used by ``trimtab demo`` to show a media company
reacting to scroll and hover in real time. This module loads its articles and renders its pages
with :class:`string.Template`; the server mounts :func:`static_dir` at ``/static`` and serves
``/`` (:func:`render_index`), ``/article/<slug>`` (:func:`render_article`) and the tracker at
``/t.js``.

Pages carry the slots ``hero``, ``rail``, ``cta`` (articles) and ``review`` (articles), each with
default content, and mark images, cards, links, filters and expanders with ``data-tt-id``,
``data-tt-kind`` and ``data-tt-cat``.

>>> articles = load_articles()
>>> sorted({a["category"] for a in articles}) == sorted(CATEGORIES)
True
>>> 'data-tt-slot="review"' in render_article(articles[0])
True
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from string import Template
from typing import Any

SITE_NAME = "The Daily Trim"
CATEGORIES: tuple[str, ...] = ("politics", "tech", "science", "sport", "culture", "travel")
HOME_URL = "/"
ARTICLE_URL = "/article/{slug}"
STATIC_URL = "/static"
TRACKER_SRC = "/t.js"

_HERE = Path(__file__).resolve().parent

# The hero slot's default content: the same copy as the demo config's ``top_story`` variant.
HERO_DEFAULT = "<strong>Today</strong> The stories everyone is talking about"
CTA_DEFAULT = (
    "<p>Get the morning briefing in your inbox.</p>"
    '<button data-tt-id="cta-newsletter" data-tt-kind="cta">Sign up</button>'
)
RAIL_TITLES = {"popular": "Popular now", "short": "Short reads"}

# "How we cover ..." explainers behind each article's expandable box (data-tt-kind="expand").
COVERAGE = {
    "politics": "Our politics desk reports from the assembly and the regions. We name our "
    "sources whenever we can and say why when we cannot.",
    "tech": "Our technology writers test the products they review and never accept payment "
    "or loans from the companies they cover.",
    "science": "Science stories are read by a second specialist before publication. We link "
    "to the study and say whether it was peer reviewed.",
    "sport": "Our sport reporters are at the ground for every match we rate. Player ratings "
    "are the reporter's own and are never edited for balance.",
    "culture": "Reviewers pay for their own tickets where tickets are sold. Stars reflect the "
    "reviewer's view on the night they attended.",
    "travel": "Our travel writers pay their own way. When a trip was hosted, we say so at the "
    "top of the story.",
}


def site_dir() -> Path:
    """The directory holding ``articles.json``, ``templates/`` and ``static/``."""
    return _HERE


def static_dir() -> Path:
    """The static assets (``site.css``, ``img/*.svg``), to be mounted at ``/static``."""
    return _HERE / "static"


@functools.cache
def _articles() -> tuple[dict[str, Any], ...]:
    data = json.loads((_HERE / "articles.json").read_text(encoding="utf-8"))
    return tuple(data["articles"])


def load_articles() -> list[dict[str, Any]]:
    """Every article, newest first (dicts: slug, title, dek, category, author, paragraphs, ...)."""
    return [dict(a) for a in _articles()]


def article_by_slug(slug: str) -> dict[str, Any] | None:
    """The article with this slug, or ``None``."""
    return next((dict(a) for a in _articles() if a["slug"] == slug), None)


@functools.cache
def _template(name: str) -> Template:
    return Template((_HERE / "templates" / name).read_text(encoding="utf-8"))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def article_url(article: dict[str, Any]) -> str:
    """The page address of an article."""
    return ARTICLE_URL.format(slug=article["slug"])


def render_card(
    article: dict[str, Any], *, static_url: str = STATIC_URL, small: bool = False
) -> str:
    """One article card: a link marked as a ``card`` of the article's category."""
    cat = article["category"]
    short = '<span class="badge">Short read</span>' if article.get("short") else ""
    dek = "" if small else f'<p class="card-dek">{_e(article["dek"])}</p>'
    return (
        f'<a class="card{" card-small" if small else ""}" href="{_e(article_url(article))}" '
        f'data-tt-id="card-{_e(article["slug"])}" data-tt-kind="card" data-tt-cat="{cat}">'
        f'<img src="{static_url}/{_e(article["image"])}" alt="" loading="lazy" width="640" '
        f'height="360"><span class="card-body"><span class="kicker kicker-{cat}">{cat}</span>'
        f"<strong>{_e(article['title'])}</strong>{dek}"
        f'<span class="meta">{article["reading_minutes"]} min read {short}</span></span></a>'
    )


def rail_articles(
    articles: list[dict[str, Any]], which: str = "popular", *, exclude: str = "", limit: int = 4
) -> list[dict[str, Any]]:
    """The articles of a recommendation rail: ``popular``, ``short`` or a category name."""
    pool = [a for a in articles if a["slug"] != exclude]
    if which == "short":
        pool = [a for a in pool if a.get("short")]
    elif which in CATEGORIES:
        pool = [a for a in pool if a["category"] == which]
    return sorted(pool, key=lambda a: -a["popularity"])[:limit]


def render_rail(
    articles: list[dict[str, Any]] | None = None,
    which: str = "popular",
    *,
    exclude: str = "",
    limit: int = 4,
    static_url: str = STATIC_URL,
) -> str:
    """The inner HTML of the ``rail`` slot; usable as a rail variant's ``payload.html``."""
    chosen = rail_articles(
        load_articles() if articles is None else articles, which, exclude=exclude, limit=limit
    )
    title = RAIL_TITLES.get(which) or f"More {which}"
    cards = "".join(render_card(a, static_url=static_url, small=True) for a in chosen)
    return f'<h2 class="rail-title">{_e(title)}</h2><div class="rail-cards">{cards}</div>'


def _page(
    *,
    title: str,
    description: str,
    page_category: str,
    main: str,
    site_key: str,
    consent_mode: str,
    tracker_src: str,
    static_url: str,
) -> str:
    filters = "".join(
        f'<a class="chip" href="{HOME_URL}?cat={c}" data-tt-id="filter-{c}" data-tt-kind="filter"'
        f' data-tt-cat="{c}">{c.capitalize()}</a>'
        for c in CATEGORIES
    )
    return _template("layout.html").substitute(
        title=_e(title),
        description=_e(description),
        page_category=_e(page_category),
        site_name=_e(SITE_NAME),
        site_key=_e(site_key),
        consent_mode=_e(consent_mode),
        tracker_src=_e(tracker_src),
        static=_e(static_url),
        home=HOME_URL,
        filters=filters,
        main=main,
    )


def render_index(
    articles: list[dict[str, Any]] | None = None,
    *,
    category: str | None = None,
    site_key: str = "pk_demo",
    consent_mode: str = "required",
    tracker_src: str = TRACKER_SRC,
    static_url: str = STATIC_URL,
) -> str:
    """The home page (optionally filtered to one category): hero banner, lead story, grid, rail."""
    articles = load_articles() if articles is None else articles
    shown = [a for a in articles if category in (None, a["category"])] or articles
    lead, rest = shown[0], shown[1:]
    main = _template("index.html").substitute(
        hero=HERO_DEFAULT,
        heading=_e(category.capitalize() if category else "Latest"),
        lead_url=_e(article_url(lead)),
        lead_slug=_e(lead["slug"]),
        lead_cat=lead["category"],
        lead_image=f"{static_url}/{_e(lead['image'])}",
        lead_alt=_e(lead["image_alt"]),
        lead_title=_e(lead["title"]),
        lead_dek=_e(lead["dek"]),
        lead_meta=_e(f"By {lead['author']} · {lead['reading_minutes']} min read"),
        cards="".join(render_card(a, static_url=static_url) for a in rest),
        # Same as the server's rendering of the ``popular`` rail variant on the home page.
        rail=render_rail(articles, "popular", static_url=static_url),
    )
    return _page(
        title=f"{category.capitalize()} · {SITE_NAME}" if category else SITE_NAME,
        description="Independent news, adjusted to how you read.",
        page_category=category or "",
        main=main,
        site_key=site_key,
        consent_mode=consent_mode,
        tracker_src=tracker_src,
        static_url=static_url,
    )


def render_article(
    article: dict[str, Any],
    articles: list[dict[str, Any]] | None = None,
    *,
    site_key: str = "pk_demo",
    consent_mode: str = "required",
    tracker_src: str = TRACKER_SRC,
    static_url: str = STATIC_URL,
) -> str:
    """An article page: top banner, image with the review slot, body, CTA and rail slots."""
    articles = load_articles() if articles is None else articles
    paragraphs = [f"<p>{_e(p)}</p>" for p in article["paragraphs"]]
    split = min(3, len(paragraphs))
    cat = article["category"]
    main = _template("article.html").substitute(
        hero=HERO_DEFAULT,
        slug=_e(article["slug"]),
        cat=cat,
        cat_label=cat.capitalize(),
        title=_e(article["title"]),
        dek=_e(article["dek"]),
        author=_e(article["author"]),
        author_slug=_e(article["author"].lower().replace(" ", "-")),
        date=_e(article["published"]),
        minutes=article["reading_minutes"],
        image=f"{static_url}/{_e(article['image'])}",
        image_alt=_e(article["image_alt"]),
        caption=_e(article["caption"]),
        body_top="".join(paragraphs[:split]),
        body_rest="".join(paragraphs[split:]),
        coverage=_e(COVERAGE[cat]),
        cta=CTA_DEFAULT,
        rail=render_rail(articles, "popular", exclude=article["slug"], static_url=static_url),
    )
    return _page(
        title=f"{article['title']} · {SITE_NAME}",
        description=article["dek"],
        page_category=cat,
        main=main,
        site_key=site_key,
        consent_mode=consent_mode,
        tracker_src=tracker_src,
        static_url=static_url,
    )
