"""A synthetic event stream: a plausible mix of behaviour events over many users.

What a busy site sends, without a site: for load tests, benchmarks and the tests of every
part that consumes events (features, logs, buses, stores). Seeded, so a stream is the same on
every run.

>>> events = synthetic_events(200, users=10)
>>> len(events), len({e.user_id for e in events}) <= 10
(200, True)
>>> events == synthetic_events(200, users=10)
True
"""

from __future__ import annotations

import random
from typing import Any

from trimtab.events import AnyEvent, Click, Hover, PageView, Scroll, Visible

CATEGORIES = ("politics", "tech", "science", "sport", "culture", "travel")
ELEMENT_KINDS = ("image", "card", "link", "filter", "expand")


def synthetic_events(n: int, users: int, seed: int = 7, t0: float = 1.75e12) -> list[AnyEvent]:
    """A plausible mix of behaviour events over many users (what a busy site sends).

    Every event carries its page view's id, as the tracker sends it; a page_view starts a new
    one (the random draws are those of the stream before page views had ids).
    """
    rnd = random.Random(seed)
    out: list[AnyEvent] = []
    views: dict[str, int] = {}
    for i in range(n):
        u = f"u{rnd.randrange(users)}"
        common: dict[str, Any] = {
            "event_id": f"e{i}",
            "user_id": u,
            "session_id": f"{u}-s",
            "ts": t0 + i * 5.0,
        }
        cat = rnd.choice(CATEGORIES)
        r = rnd.random()
        if r >= 0.95:
            views[u] = views.get(u, 0) + 1
        common["page_view_id"] = f"{u}-v{views.get(u, 0)}"
        if r < 0.4:
            out.append(Scroll(**common, depth=rnd.random(), velocity=rnd.uniform(-2000, 2000)))
        elif r < 0.6:
            el = f"el{rnd.randrange(40)}"
            kind = rnd.choice(ELEMENT_KINDS)
            out.append(Hover(**common, element=el, element_kind=kind, category=cat, dwell_ms=400))
        elif r < 0.8:
            el = f"el{rnd.randrange(40)}"
            out.append(
                Visible(**common, element=el, element_kind="card", category=cat, visible_ms=1500)
            )
        elif r < 0.95:
            el = f"el{rnd.randrange(40)}"
            out.append(
                Click(**common, element=el, element_kind=rnd.choice(ELEMENT_KINDS), category=cat)
            )
        else:
            out.append(PageView(**common, page=f"/a/{rnd.randrange(40)}", page_category=cat))
    return out
