"""Simulated visitors with latent interests whose micro-behaviours follow from those interests.

Each visitor ``u`` has a latent interest distribution ``θ_u ~ Dirichlet(α)`` over content
categories, a device, a reading speed and a general click propensity ``c_u``. A session is a
few page views; pages are drawn from ``θ_u``; on a page the visitor scrolls (deeper and slower
on categories they like), may rest the pointer on the article's picture (longer on stories
they like), sees tiles of several categories, hovers on them with dwell times that grow with
interest, and sometimes clicks (then maybe adds to cart). Every action is a typed event of
:mod:`trimtab.events` carrying its page view id, so the simulator drives the real pipeline.

The reward model for a slot variant promoting category ``k`` is
``P(click | u, k) = clip(c_u · (floor + (1 − floor) · θ_uk / max_j θ_uj), 0, 1)``:
visitors click the variant of their favourite category most, never exactly zero.

>>> sim = Simulator(seed=1, n_users=3)
>>> session = next(iter(sim.sessions(1)))
>>> session[0].__struct_config__.tag, session[1].__struct_config__.tag
('context', 'page_view')
>>> len({e.event_id for e in session}) == len(session)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

from trimtab.events import (
    AnyEvent,
    Click,
    Context,
    Custom,
    Exposure,
    Hover,
    PageView,
    Scroll,
    Visible,
)

DEFAULT_CATEGORIES = ("politics", "tech", "science", "sport", "culture", "travel")
SLOTS = ("hero", "rail", "cta", "review")  # the slots of the demo's article pages
Device = Literal["mobile", "desktop", "tablet"]
DEVICES: tuple[Device, Device, Device] = ("mobile", "desktop", "tablet")
_VIEWPORTS: dict[Device, tuple[int, int]] = {
    "mobile": (390, 844),
    "desktop": (1440, 900),
    "tablet": (820, 1180),
}


class _Common(TypedDict):
    """The fields every simulated event carries (see :meth:`Simulator._base`)."""

    event_id: str
    user_id: str
    session_id: str
    ts: float


class _Where(TypedDict):
    page: str
    page_category: str
    page_view_id: str


class _Element(TypedDict):
    element: str
    element_kind: str


class _Tile(_Element):
    category: str


@dataclass(frozen=True)
class Visitor:
    """A simulated visitor's latent traits (what a policy must infer from behaviour)."""

    user_id: str
    interests: np.ndarray  # θ_u, sums to 1 over categories
    device: Device
    reading_speed: float  # multiplies dwell and visible times (< 1: skims)
    click_propensity: float  # c_u, click probability on a variant of their top category
    group: str = ""  # the latent reader group, when the population has groups
    depth: float = 1.0  # multiplies how far down a page they read
    scroll_speed: float = 1.0  # multiplies their scrolling speed
    local_hours: tuple[int, int] | None = None  # the local hours they read at


@dataclass(frozen=True)
class ReaderGroup:
    """A latent type of reader: what segments should find in the behaviour it produces.

    Visitors of a group prefer its ``favourites`` (Dirichlet weight ``favour`` on them, the
    population's ``concentration`` elsewhere), read at ``reading_speed`` (median of a
    log-normal), scroll ``depth`` times as far and ``scroll_speed`` times as fast, use the
    devices with ``devices`` probabilities (mobile, desktop, tablet) and, with ``local_hours``,
    visit only at those local hours.
    """

    name: str
    share: float
    favourites: tuple[str, ...]
    favour: float = 3.0
    reading_speed: float = 1.0
    depth: float = 1.0
    scroll_speed: float = 1.0
    devices: tuple[float, float, float] = (0.55, 0.38, 0.07)
    local_hours: tuple[int, int] | None = None


# Four kinds of reader of the demo's news site (used by segment tests, benchmarks and the demo).
READER_GROUPS = (
    ReaderGroup("deep-readers", 0.4, ("politics", "science"), favour=8.0, reading_speed=1.8,
                depth=1.6, scroll_speed=0.5, devices=(0.2, 0.7, 0.1)),
    ReaderGroup("late-evening-skimmers", 0.3, ("sport", "culture"), favour=8.0,
                reading_speed=0.4, depth=0.45, scroll_speed=2.5, devices=(0.9, 0.05, 0.05),
                local_hours=(21, 24)),
    ReaderGroup("tech-loyalists", 0.2, ("tech",), favour=6.0, reading_speed=1.0, depth=0.9,
                devices=(0.4, 0.55, 0.05)),
    ReaderGroup("travel-browsers", 0.1, ("travel",), favour=6.0, reading_speed=1.2, depth=0.75,
                devices=(0.3, 0.3, 0.4)),
)  # fmt: skip


class Simulator:
    """A population of visitors and the event streams they produce.

    ``concentration`` is the Dirichlet α: small values give visitors with one or two strong
    interests. All randomness comes from one seeded generator, so a seed fixes everything.
    """

    def __init__(
        self,
        seed: int = 0,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
        n_users: int = 1000,
        *,
        concentration: float = 0.4,
        base_click: tuple[float, float] = (0.04, 0.25),
        interest_floor: float = 0.1,
        start_ms: float = 1.75e12,
        groups: Sequence[ReaderGroup] | None = None,
        session_gap_ms: float = 60_000.0,
    ) -> None:
        if n_users < 1 or len(categories) < 2:
            raise ValueError("need at least one user and two categories")
        self.rng = np.random.default_rng(seed)
        self.categories = tuple(categories)
        self.interest_floor = interest_floor
        self.start_ms = start_ms
        self.clock_ms = start_ms
        self.session_gap_ms = session_gap_ms  # mean time between two sessions starting
        self._session_counter = 0
        rng = self.rng
        k = len(self.categories)
        if groups:
            self.users = self._grouped(groups, n_users, concentration, base_click)
            return
        self.users = [
            Visitor(
                user_id=f"u{i}",
                interests=rng.dirichlet(np.full(k, concentration)),
                device=DEVICES[int(rng.choice(3, p=[0.55, 0.38, 0.07]))],
                reading_speed=float(rng.lognormal(0.0, 0.35)),
                click_propensity=float(rng.uniform(*base_click)),
            )
            for i in range(n_users)
        ]

    def _grouped(
        self,
        groups: Sequence[ReaderGroup],
        n_users: int,
        concentration: float,
        base_click: tuple[float, float],
    ) -> list[Visitor]:
        rng = self.rng
        shares = np.array([g.share for g in groups], dtype=np.float64)
        users = []
        for i, g in enumerate(rng.choice(len(groups), n_users, p=shares / shares.sum())):
            group = groups[int(g)]
            alpha = np.array(
                [group.favour if c in group.favourites else concentration for c in self.categories]
            )
            users.append(
                Visitor(
                    user_id=f"u{i}",
                    interests=rng.dirichlet(alpha),
                    device=DEVICES[int(rng.choice(3, p=group.devices))],
                    reading_speed=float(group.reading_speed * rng.lognormal(0.0, 0.25)),
                    click_propensity=float(rng.uniform(*base_click)),
                    group=group.name,
                    depth=group.depth,
                    scroll_speed=group.scroll_speed,
                    local_hours=group.local_hours,
                )
            )
        return users

    def rewind(self) -> None:
        """Restart the simulated clock and session numbering (same population)."""
        self.clock_ms = self.start_ms
        self._session_counter = 0

    # -- reward model -------------------------------------------------------------------------
    def click_probability(self, visitor: Visitor, category: int) -> float:
        """``P(click)`` on a variant promoting ``categories[category]`` (see module doc)."""
        theta = visitor.interests
        relative = theta[category] / theta.max()
        floor = self.interest_floor
        return float(min(1.0, visitor.click_propensity * (floor + (1.0 - floor) * relative)))

    def respond(
        self, visitor: Visitor, session_id: str, slot: str, variant: str, category: int
    ) -> tuple[bool, list[AnyEvent]]:
        """Show ``variant`` (promoting ``category``) in ``slot``: the exposure and maybe a click."""
        base = self._base(visitor, session_id)
        events: list[AnyEvent] = [Exposure(**base(), slot=slot, variant=variant)]
        clicked = bool(self.rng.random() < self.click_probability(visitor, category))
        if clicked:
            self.clock_ms += float(self.rng.gamma(2.0, 900.0))
            events.append(
                Click(
                    **base(),
                    element=slot,
                    element_kind="slot",
                    category=self.categories[category],
                )
            )
        return clicked, events

    # -- event streams ------------------------------------------------------------------------
    def pick_user(self) -> Visitor:
        return self.users[int(self.rng.integers(len(self.users)))]

    def sessions(self, n_sessions: int | None = None) -> Iterator[list[AnyEvent]]:
        """Yield sessions (lists of events in time order) of random visitors, forever by default."""
        made = 0
        while n_sessions is None or made < n_sessions:
            yield self.session(self.pick_user())
            made += 1

    def session(self, visitor: Visitor, pages: int | None = None) -> list[AnyEvent]:
        """One visit: a context event, then ``pages`` page views with their micro-behaviours."""
        rng = self.rng
        self._session_counter += 1
        session_id = f"s{self._session_counter}"
        self.clock_ms += float(rng.exponential(self.session_gap_ms))
        base = self._base(visitor, session_id)
        width, height = _VIEWPORTS[visitor.device]
        events: list[AnyEvent] = [
            Context(
                **base(),
                device=visitor.device,
                viewport_w=width,
                viewport_h=height,
                language="en",
                tz_offset_min=self._tz_offset(visitor),
            )
        ]
        n_pages = int(pages if pages is not None else 1 + rng.poisson(2.0))
        for number in range(n_pages):
            events.extend(self._page(visitor, base, number))
        return events

    def _tz_offset(self, visitor: Visitor) -> int:
        """A time zone (minutes east of UTC) putting this visit in the visitor's local hours."""
        offset = int(self.rng.choice([-300, 0, 60, 120]))
        if visitor.local_hours is None:
            return offset
        first, last = visitor.local_hours
        wanted = float(self.rng.uniform(first, last))
        utc_hour = (self.clock_ms / 3_600_000.0) % 24.0
        minutes = round((wanted - utc_hour) * 60.0) % 1440
        return minutes - 1440 if minutes > 840 else minutes

    def _base(self, visitor: Visitor, session_id: str) -> Callable[[], _Common]:
        """A factory of the common event fields: unique ids, advancing clock."""
        counter = iter(range(1_000_000))

        def fields() -> _Common:
            self.clock_ms += 1.0
            return {
                "event_id": f"{session_id}-{next(counter)}-{int(self.clock_ms)}",
                "user_id": visitor.user_id,
                "session_id": session_id,
                "ts": self.clock_ms,
            }

        return fields

    def _page(self, visitor: Visitor, base: Callable[[], _Common], number: int) -> list[AnyEvent]:
        rng = self.rng
        cats = self.categories
        k = len(cats)
        theta = visitor.interests
        page_cat = int(rng.choice(k, p=theta))
        like = theta[page_cat] / theta.max()  # 0..1, how much this page suits the visitor
        page = f"/{cats[page_cat]}/{int(rng.integers(1, 500))}"
        view_id = f"{self._session_counter}-{number}"
        where = _Where(page=page, page_category=cats[page_cat], page_view_id=view_id)
        events: list[AnyEvent] = [
            PageView(**base(), **where, url=f"https://example.test{page}", slots=list(SLOTS))
        ]
        # Scrolling: liked pages are read deeper and more slowly.
        target_depth = float(np.clip(rng.beta(1.0 + 4.0 * like, 2.0) * visitor.depth, 0.05, 1.0))
        depth = 0.0
        while depth < target_depth:
            step = float(rng.uniform(0.08, 0.3))
            depth = min(target_depth, depth + step)
            speed = float(rng.lognormal(np.log(900.0 * (1.3 - like) * visitor.scroll_speed), 0.4))
            self.clock_ms += float(rng.exponential(2500.0 * visitor.reading_speed * (0.3 + like)))
            events.append(Scroll(**base(), **where, depth=round(depth, 4), velocity=speed))
        # The article's picture: liked stories hold the pointer longer (3 s opens the detail).
        if rng.random() < 0.3 + 0.4 * like:
            dwell = float(rng.gamma(2.0, 700.0 * visitor.reading_speed * (0.4 + like)))
            self.clock_ms += dwell
            image = _Element(element=f"img-{number}", element_kind="image")
            events.append(
                Hover(**base(), **where, **image, category=cats[page_cat], dwell_ms=round(dwell, 1))
            )
        # Tiles: the page shows a few tiles of mixed categories (half from the page's own).
        for j in range(int(rng.integers(3, 7))):
            tile_cat = page_cat if rng.random() < 0.5 else int(rng.integers(k))
            interest = theta[tile_cat] / theta.max()
            element = f"tile-{number}-{j}"
            tile = _Tile(element=element, element_kind="card", category=cats[tile_cat])
            visible_ms = float(rng.gamma(2.0, 600.0 * visitor.reading_speed * (0.5 + interest)))
            events.append(Visible(**base(), **where, **tile, visible_ms=round(visible_ms, 1)))
            if rng.random() < 0.15 + 0.6 * interest:
                dwell = float(rng.gamma(2.0, 350.0 * visitor.reading_speed * (0.2 + interest)))
                self.clock_ms += dwell
                events.append(Hover(**base(), **where, **tile, dwell_ms=round(dwell, 1)))
                if rng.random() < 0.5 * visitor.click_propensity * (0.1 + interest):
                    events.append(Click(**base(), **where, **tile))
                    if rng.random() < 0.2:
                        events.append(Custom(**base(), **where, name="add_to_cart", value=1.0))
        return events


def behaviour_features(events: Sequence[AnyEvent], categories: Sequence[str]) -> np.ndarray:
    """What a feature processor could observe: a fixed-order vector from one event stream.

    ``[hover-dwell share per category (k), visible-time share per category (k),
    click share per category (k), max scroll depth, is_mobile]`` — shares are 0 when nothing
    was seen. This is the observation of :class:`trimtab.sim.env.SlotEnv`.
    """
    k = len(categories)
    index = {c: i for i, c in enumerate(categories)}
    hover = np.zeros(k)
    visible = np.zeros(k)
    clicks = np.zeros(k)
    depth = 0.0
    mobile = 0.0
    for event in events:
        if isinstance(event, Hover) and event.category in index:
            hover[index[event.category]] += event.dwell_ms
        elif isinstance(event, Visible) and event.category in index:
            visible[index[event.category]] += event.visible_ms
        elif isinstance(event, Click) and event.category in index:
            clicks[index[event.category]] += 1.0
        elif isinstance(event, Scroll):
            depth = max(depth, event.depth)
        elif isinstance(event, Context):
            mobile = 1.0 if event.device == "mobile" else 0.0
    shares = [v / v.sum() if v.sum() > 0 else v for v in (hover, visible, clicks)]
    return np.concatenate([*shares, [depth, mobile]])
