"""Declared features, applied incrementally: values, idempotence, ordering, persistence."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.events import Click, Context, Custom, Hover, PageView, Scroll, Visible
from trimtab.features import (
    MAX_SUM,
    FeatureConfigError,
    FeatureProcessor,
    FeatureSpec,
    SummedMap,
    decode_state,
    encode_state,
)

T0 = 1.75e12
SPECS = [
    FeatureSpec("scroll_depth_max", "scroll_depth_max"),
    FeatureSpec("scroll_velocity", "scroll_velocity", window=3),
    FeatureSpec("hover_ms_by_element", "hover_ms", by="element"),
    FeatureSpec("hover_ms_by_kind", "hover_ms", by="kind"),
    FeatureSpec("hover_ms_total", "hover_ms", scope="user"),
    FeatureSpec("visible_ms_by_element", "visible_ms", by="element"),
    FeatureSpec("visible_ms_by_category", "visible_ms", by="category"),
    FeatureSpec("clicks_by_kind", "click_count", by="kind"),
    FeatureSpec("time_on_page_s", "time_on_page"),
    FeatureSpec("interest", "interest", scope="user", half_life_s=60),
    FeatureSpec("filter_then_expand", "sequence", steps=("click:filter", "expand:*"), within_s=30),
    FeatureSpec("page_views", "event_count", event="page_view", scope="user"),
    FeatureSpec("adds", "event_count", event="add_to_cart"),
    FeatureSpec("plan", "last_value", event="plan", scope="user"),
]

_ids = iter(range(10**9))


def ev(cls, t: float = 0.0, user: str = "u", session: str = "s", **fields):
    return cls(event_id=f"e{next(_ids)}", user_id=user, session_id=session, ts=T0 + t, **fields)


def fresh() -> FeatureProcessor:
    return FeatureProcessor(SPECS)


def test_scroll_depth_is_a_maximum_and_velocity_a_recent_median():
    fp = fresh()
    depths = [0.2, 0.9, 0.4]
    fp.apply(
        ev(Scroll, i, depth=d, velocity=v)
        for i, (d, v) in enumerate(zip(depths, [100, -900, 300], strict=True))
    )
    fp.apply([ev(Scroll, 10, depth=0.5, velocity=5000), ev(Scroll, 11, depth=0.5, velocity=0)])
    f = fp.features_of("u", "s")
    assert f["scroll_depth_max"] == 0.9
    # window of 3 non-zero |velocity| samples: 900, 300, 5000 -> median 900
    assert f["scroll_velocity"] == 900


def test_hover_and_visible_sums_by_element_kind_and_category():
    fp = fresh()
    fp.apply(
        [
            ev(PageView, 0, page="/a", page_category="tech"),
            ev(Hover, 1, element="img1", element_kind="image", dwell_ms=1000),
            ev(Hover, 2, element="img1", element_kind="image", dwell_ms=2500),
            ev(Hover, 3, element="card", element_kind="card", dwell_ms=200),
            ev(Visible, 4, element="c1", category="sport", visible_ms=1200),
            ev(Visible, 5, element="c2", visible_ms=800),  # falls back to the page's category
        ]
    )
    f = fp.features_of("u", "s")
    assert f["hover_ms_by_element"] == {"img1": 3500, "card": 200}
    assert f["hover_ms_by_kind"] == {"image": 3500, "card": 200}
    assert f["hover_ms_total"] == 3700
    assert f["visible_ms_by_category"] == {"sport": 1200, "other": 800}
    assert f["page"] == "/a" and f["page_category"] == "tech"


def test_category_falls_back_to_page_category_on_the_event():
    fp = fresh()
    fp.apply([ev(Visible, 1, element="c2", visible_ms=800, page_category="travel")])
    assert fp.features_of("u", "s")["visible_ms_by_category"] == {"travel": 800}


def test_clicks_time_on_page_and_counts():
    fp = fresh()
    fp.apply(
        [
            ev(PageView, 0, page="/a"),
            ev(Click, 1000, element="f", element_kind="filter"),
            ev(Click, 2000, element="f", element_kind="filter"),
            ev(Custom, 2500, name="add_to_cart"),
            ev(Custom, 2600, name="plan", value="pro"),
            ev(Scroll, 12_000, depth=0.1),
        ]
    )
    f = fp.features_of("u", "s")
    assert f["clicks_by_kind"] == {"filter": 2}
    assert f["time_on_page_s"] == pytest.approx(12.0)
    assert f["page_views"] == 1 and f["adds"] == 1 and f["plan"] == "pro"
    fp.apply([ev(PageView, 20_000, page="/b"), ev(Scroll, 21_000, depth=0.1)])
    assert fp.features_of("u", "s")["time_on_page_s"] == pytest.approx(1.0)


def test_interest_decays_with_its_half_life():
    fp = fresh()
    fp.apply([ev(Click, 0, element="a", category="sport")])
    fp.apply([ev(Click, 60_000, element="b", category="tech")])  # one half-life later
    f = fp.features_of("u", "s")
    assert f["interest"]["sport"] == pytest.approx(2.5)
    assert f["interest"]["tech"] == pytest.approx(5.0)
    assert f["interest_top"] == "tech"
    assert f["interest_top_share"] == pytest.approx(5 / 7.5)


@pytest.mark.parametrize(
    ("gap_s", "expected"), [(5, True), (29.9, True), (31, False)], ids=["5s", "29.9s", "31s"]
)
def test_sequence_within_window(gap_s, expected):
    fp = fresh()
    fp.apply(
        [
            ev(Click, 0, element="f", element_kind="filter"),
            ev(Custom, gap_s * 1000, name="expand", value="row-3"),
        ]
    )
    assert fp.features_of("u", "s")["filter_then_expand"] is expected


def test_sequence_needs_order_and_restarts_from_a_later_first_step():
    fp = fresh()
    fp.apply([ev(Custom, 0, name="expand"), ev(Click, 1000, element="f", element_kind="filter")])
    assert fp.features_of("u", "s")["filter_then_expand"] is False
    # a later filter click restarts the window even though the first one expired
    fp.apply(
        [ev(Click, 50_000, element="f", element_kind="filter"), ev(Custom, 60_000, name="expand")]
    )
    assert fp.features_of("u", "s")["filter_then_expand"] is True


def test_context_attributes_and_local_hour():
    fp = fresh()
    fp.apply([ev(Context, 0, device="mobile", tz_offset_min=120, language="de")])
    # 1970-01-05 22:30 UTC is a Monday; +2 h is Tuesday 00:30 local
    now = (4 * 86400 + 22.5 * 3600) * 1000
    f = fp.features_of("u", "s", now_ms=now)
    assert f["device"] == "mobile" and f["language"] == "de"
    assert f["local_hour"] == 0 and f["day_of_week"] == 1
    assert f["returning"] is False and f["id"] == "u"


def test_second_session_makes_a_returning_visitor_and_user_scope_carries_over():
    fp = fresh()
    fp.apply([ev(PageView, 0, session="s1"), ev(Hover, 1, session="s1", element="x", dwell_ms=10)])
    fp.apply([ev(PageView, 100, session="s2")])
    f = fp.features_of("u", "s2")
    assert f["returning"] is True and f["page_views"] == 2 and f["hover_ms_total"] == 10
    assert "hover_ms_by_element" not in f  # session-scoped, belongs to s1


def _stream(seed_events: list[tuple[str, int, float]]):
    out = []
    for i, (user, kind, x) in enumerate(seed_events):
        common = {
            "event_id": f"{user}-{i}",
            "user_id": user,
            "session_id": f"{user}s",
            "ts": T0 + i,
        }
        if kind == 0:
            out.append(Scroll(**common, depth=x, velocity=x * 1000))
        elif kind == 1:
            out.append(
                Hover(**common, element=f"el{int(x * 3)}", element_kind="image", dwell_ms=x * 100)
            )
        elif kind == 2:
            out.append(Click(**common, element="f", element_kind="filter", category="tech"))
        else:
            out.append(Custom(**common, name="expand"))
    return out


events_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.floats(0, 1)),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, data=st.data())
def test_any_interleaving_of_users_gives_the_same_features(events, data):
    stream = _stream(events)
    in_order = fresh()
    for user in "abc":
        in_order.apply(e for e in stream if e.user_id == user)
    # any interleaving that keeps each user's own order
    queues = {u: [e for e in stream if e.user_id == u] for u in "abc"}
    mixed = []
    while any(queues.values()):
        user = data.draw(st.sampled_from([u for u in "abc" if queues[u]]))
        mixed.append(queues[user].pop(0))
    interleaved = fresh()
    for chunk_start in range(0, len(mixed), 7):
        interleaved.apply(mixed[chunk_start : chunk_start + 7])
    for user in "abc":
        assert interleaved.features_of(user, f"{user}s", now_ms=0) == in_order.features_of(
            user, f"{user}s", now_ms=0
        )


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, repeats=st.lists(st.integers(0, 39), max_size=20))
def test_applying_events_again_changes_nothing(events, repeats):
    stream = _stream(events)
    once = fresh()
    once.apply(stream)
    twice = fresh()
    twice.apply(stream)
    twice.apply([stream[i] for i in repeats if i < len(stream)])
    twice.apply(stream)
    for user in "abc":
        assert twice.features_of(user, f"{user}s", now_ms=0) == once.features_of(
            user, f"{user}s", now_ms=0
        )
    assert twice.duplicates == len(stream) + sum(1 for i in repeats if i < len(stream))


def test_state_survives_encoding():
    fp = fresh()
    fp.apply(_stream([("a", 0, 0.5), ("a", 1, 0.9), ("a", 2, 0.0), ("a", 3, 0.0)]))
    state = fp.states["a"]
    restored = decode_state(encode_state(state))
    assert restored == state
    other = fresh()
    other.states["a"] = restored
    assert other.features_of("a", "as", now_ms=0) == fp.features_of("a", "as", now_ms=0)
    assert not math.isnan(other.features_of("a", "as", now_ms=0)["scroll_velocity"])


SUMMED_SPECS = [
    FeatureSpec("hover_by_kind", "hover_ms", by="kind", scope="page"),
    FeatureSpec("hover_by_element", "hover_ms", by="element", scope="session"),
    FeatureSpec("visible_by_category", "visible_ms", by="category", scope="user"),
    FeatureSpec("clicks_by_kind", "click_count", by="kind", scope="page"),
    FeatureSpec("clicks_by_category", "click_count", by="category", scope="session"),
]
amounts = st.one_of(
    st.sampled_from([0.1, 0.2, 0.3, 1.0 / 3.0, 1e-9, 2.5]),
    st.floats(0.0, 3_600_000.0),
)


def _same_number(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from("abcd"), amounts, st.integers(0, 3)),
        max_size=80,
    )
)
def test_summed_maps_keep_exactly_the_sum_python_makes(steps):
    """Every map a by-key sum keeps carries ``sum(map.values())`` exactly (the same floats
    in the same order, ints staying ints), through page views and sessions that start maps
    afresh and a stored state that decodes them as plain dicts."""
    fp = FeatureProcessor(SUMMED_SPECS)
    session, t = "s0", 0.0
    for i, (kind, key, amount, repeat) in enumerate(steps):
        t += 1.0
        on = {"element": f"el-{key}", "element_kind": key, "category": f"c{key}"}
        if kind == 0:
            fp.apply([ev(PageView, t, session=session)])
        elif kind == 1:
            fp.apply(
                [ev(Hover, t, session=session, dwell_ms=amount, **on) for _ in range(1 + repeat)]
            )
            by_element = fp.states["u"].sessions[session].values["hover_by_element"]
            assert type(by_element) is SummedMap and f"el-{key}" in by_element
        elif kind == 2:
            fp.apply([ev(Visible, t, session=session, visible_ms=amount, **on)])
        elif kind == 3:
            fp.apply([ev(Click, t, session=session, **on) for _ in range(1 + repeat)])
        elif kind == 4:
            session = f"s{i}"
        elif kind == 5 and "u" in fp.states:  # stored and read back: plain dicts
            fp.states["u"] = decode_state(encode_state(fp.states["u"]))
        else:  # one entry near the cap: it stops at MAX_SUM, the sum goes on
            fp.apply([ev(Hover, t, session=session, dwell_ms=3_600_000.0, **on)])
            for table in _tables(fp):
                if type(table) is SummedMap and table:
                    table.add(next(iter(table)), MAX_SUM * 0.75)
        for table in _tables(fp):
            if type(table) is SummedMap:
                assert _same_number(table.total, sum(table.values())), table


def _tables(fp: FeatureProcessor) -> list[dict]:
    state = fp.states.get("u")
    if state is None:
        return []
    owners = [state, *state.sessions.values()]
    owners += [page for sess in state.sessions.values() for page in sess.pages.values()]
    names = [spec.name for spec in SUMMED_SPECS]
    return [owner.values[n] for owner in owners for n in names if n in owner.values]


def test_a_summed_map_stops_each_entry_at_the_cap_and_reads_as_a_dict():
    table = SummedMap()
    table.add("a", MAX_SUM * 0.75, 0.0)
    table.add("a", MAX_SUM * 0.75, 0.0)
    table.add("b", 2.0, 0.0)
    assert dict(table) == {"a": MAX_SUM, "b": 2.0} and table.total == MAX_SUM + 2.0
    counts = SummedMap()
    for key in "xyx":
        counts.add(key, 1, 0)
    assert counts == {"x": 2, "y": 1} and counts.total == 3 and type(counts.total) is int
    restored = decode_state(encode_state(fresh().states.setdefault("u", _user(counts))))
    assert type(restored.values["clicks"]) is dict and restored.values["clicks"] == counts


def _user(values: dict):
    from trimtab.features import UserState

    return UserState(user_id="u", values={"clicks": values})


def test_the_user_counts_reading_events_only_and_an_older_state_starts_at_zero():
    """What ``segments.min_events`` counts: behaviour with the content, not the visit's
    bookkeeping, page views, exposures or navigation; a replayed event is not counted again."""
    import msgspec

    from trimtab.events import Consent, Exposure

    fp = fresh()
    s = {"user_id": "r", "session_id": "rs", "ts": T0, "page_view_id": "pv"}
    chip = {"element": "chip", "element_kind": "nav", "nav": True}
    fp.apply(
        [
            Consent(event_id="1", purposes={"personalization": True}, **s),
            Context(event_id="2", device="desktop", **s),
            PageView(event_id="3", page="/a", **s),
            Exposure(event_id="4", slot="cta", variant="a", **s),
            Visible(event_id="5", visible_ms=1500, **chip, **s),
            Hover(event_id="6", dwell_ms=400, **chip, **s),
            Click(event_id="7", **chip, **s),
        ]
    )
    assert fp.states["r"].reading_events == 0
    reading = [
        Scroll(event_id="8", depth=0.3, **s),
        Visible(event_id="9", element="story", visible_ms=1000, **s),
        Hover(event_id="10", element="picture", dwell_ms=900, **s),
        Click(event_id="11", element="card", **s),
        Custom(event_id="12", name="expand", **s),
    ]
    fp.apply(reading + reading)
    assert fp.states["r"].reading_events == 5
    assert decode_state(encode_state(fp.states["r"])).reading_events == 5
    # a state persisted before the count was kept decodes, counting from zero
    old = msgspec.msgpack.encode({"user_id": "r", "seen": {"1": None}, "n_sessions": 1})
    assert decode_state(old).reading_events == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (FeatureSpec("x", "nope"), "unknown feature kind 'nope'"),
        (FeatureSpec("x", "hover_ms", by="colour"), "'by' must be"),
        (FeatureSpec("x", "sequence", steps=("click:a",)), "at least two steps"),
        (FeatureSpec("x", "event_count"), "needs 'event'"),
        (FeatureSpec("device", "scroll_depth_max"), "reserved"),
        (FeatureSpec("x", "time_on_page", scope="session"), "always page-scoped"),
        (FeatureSpec("x", "hover_ms", scope="tab"), "scope must be page, session or user"),  # type: ignore[arg-type]
        (FeatureSpec("x", "interest", min_evidence=-1), "min_evidence must be 0 or more"),
    ],
)
def test_invalid_declarations_are_refused(spec, message):
    with pytest.raises(FeatureConfigError, match=message):
        FeatureProcessor([spec])


def test_every_event_kind_can_be_applied_and_consent_is_recorded():
    from trimtab.events import AnyEvent, Consent, Exposure

    fp = fresh()
    kinds = {t.__struct_config__.tag for t in AnyEvent.__args__}
    sample = [
        ev(PageView, 0),
        ev(Scroll, 1, depth=0.1),
        ev(Hover, 2, element="x", dwell_ms=1),
        ev(Visible, 3, element="x", visible_ms=1),
        ev(Click, 4, element="x"),
        ev(Custom, 5, name="n"),
        ev(Consent, 6, purposes={"analytics": True}),
        ev(Context, 7),
        ev(Exposure, 8, slot="hero", variant="a"),
    ]
    assert {e.__struct_config__.tag for e in sample} == kinds
    assert fp.apply(sample) == {("u", "s")}
    assert fp.features_of("u", "s")["consent"] == {"analytics": True}


# -- scopes: page (reset by each page view), session, user -------------------------------------

PAGE_SPECS = [
    FeatureSpec("depth", "scroll_depth_max", scope="page"),
    FeatureSpec("depth_visit", "scroll_depth_max", scope="session"),
    FeatureSpec("image_ms", "hover_ms", by="kind", scope="page"),
    FeatureSpec("image_ms_visit", "hover_ms", by="kind", scope="session"),
    FeatureSpec("time_on_page_s", "time_on_page"),
    FeatureSpec("views", "event_count", event="page_view", scope="user"),
]


def pv(cls, t: float, view: str, **fields):
    return ev(cls, t, page_view_id=view, **fields)


def test_page_scope_starts_afresh_on_each_page_view_and_the_others_carry_on():
    fp = FeatureProcessor(PAGE_SPECS)
    fp.apply(
        [
            pv(PageView, 0, "v1", page="/a"),
            pv(Scroll, 1000, "v1", depth=1.0),
            pv(Hover, 2000, "v1", element="img", element_kind="image", dwell_ms=3400),
        ]
    )
    first = fp.features_of("u", "s", "v1")
    assert first["depth"] == 1.0 and first["image_ms"] == {"image": 3400}
    assert first["time_on_page_s"] == pytest.approx(2.0)
    # the next page is decided before any of its events: nothing of the first page shows
    opening = fp.features_of("u", "s", "v2")
    assert "depth" not in opening and "image_ms" not in opening and "time_on_page_s" not in opening
    assert opening["depth_visit"] == 1.0 and opening["image_ms_visit"] == {"image": 3400}
    fp.apply([pv(PageView, 60_000, "v2", page="/b"), pv(Scroll, 61_000, "v2", depth=0.3)])
    second = fp.features_of("u", "s", "v2")
    assert second["depth"] == 0.3 and "image_ms" not in second
    assert second["depth_visit"] == 1.0 and second["views"] == 2
    assert second["time_on_page_s"] == pytest.approx(1.0)
    assert fp.features_of("u", "s") == second  # no id: the session's latest page view


def test_a_late_event_of_the_previous_page_updates_that_page_only():
    fp = FeatureProcessor(PAGE_SPECS)
    fp.apply(
        [pv(PageView, 0, "v1"), pv(PageView, 10_000, "v2"), pv(Scroll, 11_000, "v2", depth=0.2)]
    )
    # the first page's last hover report arrives after the second page opened (a beacon)
    fp.apply([pv(Hover, 9_000, "v1", element="img", element_kind="image", dwell_ms=2000)])
    assert "image_ms" not in fp.features_of("u", "s", "v2")
    assert fp.features_of("u", "s")["depth"] == 0.2  # v2 is still the current page
    assert fp.features_of("u", "s", "v1")["image_ms"] == {"image": 2000}


def test_pages_of_a_session_are_bounded():
    fp = FeatureProcessor(PAGE_SPECS)
    fp.apply([pv(Scroll, i * 1000, f"v{i}", depth=0.1 * i) for i in range(1, 9)])
    pages = fp.states["u"].sessions["s"].pages
    assert list(pages) == ["v5", "v6", "v7", "v8"]
    assert fp.features_of("u", "s")["depth"] == pytest.approx(0.8)


def test_without_page_view_ids_page_view_events_start_pages():
    fp = FeatureProcessor(PAGE_SPECS)
    fp.apply([ev(PageView, 0), ev(Scroll, 500, depth=0.9)])
    assert fp.features_of("u", "s")["depth"] == 0.9
    fp.apply([ev(PageView, 1000), ev(Scroll, 1500, depth=0.1)])
    assert fp.features_of("u", "s")["depth"] == 0.1


def test_scopes_default_to_what_the_kind_means():
    fp = FeatureProcessor(
        [
            FeatureSpec("depth", "scroll_depth_max"),
            FeatureSpec("speed", "scroll_velocity"),
            FeatureSpec("dwell", "hover_ms"),
            FeatureSpec("interest", "interest"),
        ]
    )
    assert fp.scopes == {"depth": "page", "speed": "page", "dwell": "session", "interest": "user"}


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    depths=st.lists(st.tuples(st.sampled_from(["v1", "v2"]), st.floats(0, 1)), max_size=30),
)
def test_page_features_do_not_depend_on_how_two_pages_interleave(data, depths):
    """Two tabs (or a late beacon): each page's own features, whatever the arrival order."""
    opening = [pv(PageView, 0, "v1"), pv(PageView, 1, "v2")]
    stream = [pv(Scroll, 10 + i, view, depth=d) for i, (view, d) in enumerate(depths)]
    shuffled = data.draw(st.permutations(stream))
    ordered, mixed = FeatureProcessor(PAGE_SPECS), FeatureProcessor(PAGE_SPECS)
    ordered.apply(opening + stream)
    mixed.apply(opening + list(shuffled))
    for view in ("v1", "v2"):
        assert ordered.features_of("u", "s", view, now_ms=0) == mixed.features_of(
            "u", "s", view, now_ms=0
        )


def test_navigation_is_not_interest_and_interest_needs_evidence():
    fp = FeatureProcessor([FeatureSpec("interest", "interest", min_evidence=2)])
    chips = [
        ev(Visible, 1, element=f"chip-{c}", category=c, visible_ms=60_000, nav=True)
        for c in ("politics", "tech", "sport")
    ]
    fp.apply([ev(PageView, 0, page_category="sport"), *chips])
    f = fp.features_of("u", "s")
    assert f["interest_pages"] == 1 and "interest_top" not in f  # one page: no claim yet
    fp.apply([ev(PageView, 10, page_category="sport"), ev(Click, 11, element="x", nav=True)])
    f = fp.features_of("u", "s")
    assert f["interest_pages"] == 2
    assert f["interest_top"] == "sport" and list(f["interest_share"]) == ["sport"]


def test_derived_readers_get_what_own_features_builds():
    fp = FeatureProcessor([FeatureSpec("depth", "scroll_depth_max")])
    fp.apply(
        [
            PageView(event_id="p", user_id="u", session_id="s", ts=1.7e12, page_view_id="v"),
            Scroll(
                event_id="e",
                user_id="u",
                session_id="s",
                ts=1.7e12 + 5,
                page_view_id="v",
                depth=0.6,
            ),
        ]
    )
    seen: list[tuple[object, str, dict]] = []

    def derive(user, page_view_id, attrs):
        seen.append((user, page_view_id, dict(attrs)))
        attrs["score"] = 0.5

    fp.derived.append(derive)
    user, page_view_id, attrs = fp.own_features("u", "s", now_ms=1.7e12 + 10)
    assert user is fp.states["u"] and page_view_id == "v"
    assert attrs["depth"] == 0.6 and "score" not in attrs  # before the derived readers
    full = fp.features_of("u", "s", now_ms=1.7e12 + 10)
    assert seen == [(fp.states["u"], "v", attrs)]
    assert full == {**attrs, "score": 0.5}
    assert fp.own_features("nobody", "s")[0] is None
