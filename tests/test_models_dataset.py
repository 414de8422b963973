"""Training rows are point-in-time correct: features from the past only, outcomes from after."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import parse_config
from trimtab.events import Click, Exposure, PageView, Scroll
from trimtab.features import FeatureProcessor
from trimtab.models import dataset
from trimtab.models.spec import TargetDecl
from trimtab.patterns import matcher
from trimtab.sim.simulator import Simulator

CONFIG = parse_config(
    {
        "features": {
            "depth": {"kind": "scroll_depth_max"},
            "clicks": {"kind": "click_count", "by": "kind"},
            "page_views": {"kind": "event_count", "event": "page_view", "scope": "user"},
            "interest": {"kind": "interest", "scope": "user"},
        },
        "slots": {"cta": {"default": "a", "variants": {"a": {}, "b": {}}}},
    }
)
T0 = 1.75e12


def write_log(folder: Path, events) -> None:
    log = SqliteEventLog(folder / "events.sqlite")
    log.append_sync(list(events))
    log.close_sync()


def reference_attrs(events, row) -> dict:
    """Features from a fresh processor fed only this user's events up to the observation."""
    fp = FeatureProcessor(CONFIG.feature_specs())
    past = [e for e in events if e.user_id == row.user_id and e.ts <= row.ts]
    fp.apply(sorted(past, key=lambda e: e.ts))
    return fp.features_of(row.user_id, row.session_id, now_ms=row.ts)


def reference_label(events, row, target: TargetDecl, session_end: float) -> float:
    matches = matcher(target.event)
    later = sorted(
        (e for e in events if e.user_id == row.user_id and e.ts > row.ts), key=lambda e: e.ts
    )
    count = 0.0
    for e in later:
        if target.within == "session":
            if e.session_id != row.session_id or e.ts > session_end:
                continue
        elif target.within == "page":
            if e.session_id != row.session_id:
                continue
            if type(e) is PageView:
                break
        else:
            if e.ts > row.ts + float(target.within) * 1000.0:
                break
            if target.other_session and e.session_id == row.session_id:
                continue
        if matches(e):
            count += 1.0
    return min(count, 1.0) if target.type == "binary" else count


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 3000),  # seconds: ties happen
        st.sampled_from(["page_view", "scroll", "click_cta", "click_card"]),
        st.floats(0.0, 1.0),
    ),
    min_size=1,
    max_size=40,
)


def build_events(spec):
    out = []
    for i, (user, session, second, kind, depth) in enumerate(spec):
        base = {
            "event_id": f"e{i}",
            "user_id": user,
            "session_id": f"{user}-{session}",
            "ts": T0 + second * 1000.0,
            "page_category": "news",
        }
        if kind == "page_view":
            out.append(PageView(**base, page=f"/p{i}"))
        elif kind == "scroll":
            out.append(Scroll(**base, depth=depth, velocity=100.0))
        else:
            element_kind = kind.split("_")[1]
            out.append(Click(**base, element=f"x{i}", element_kind=element_kind))
    # a late event so some windows complete; the session timeout is 30 min
    out.append(PageView(event_id="end", user_id="u3", session_id="u3-z", ts=T0 + 9e6))
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=events_strategy,
    at=st.sampled_from(["page_view", "session_end"]),
    after_s=st.sampled_from([0.0, 5.0, 60.0]),
    target=st.sampled_from(
        [
            TargetDecl(event="click:cta", within="session"),
            TargetDecl(event="click:*", within="page", type="count"),
            TargetDecl(event="click:cta", within=600.0),
            TargetDecl(event="page_view", within=3000.0, other_session=True),
        ]
    ),
)
def test_rows_see_only_the_past_and_label_only_the_future(
    tmp_path_factory, spec, at, after_s, target
):
    folder = tmp_path_factory.mktemp("log")
    events = build_events(spec)
    write_log(folder, events)
    data = dataset.build(folder, CONFIG, at=at, target=target, after_s=after_s)
    ends: dict[tuple[str, str], float] = {}
    for e in events:
        key = (e.user_id, e.session_id)
        ends[key] = max(ends.get(key, 0.0), e.ts)
    expected_points = sum(
        1
        for e in events
        if (type(e) is PageView if at == "page_view" else ends[(e.user_id, e.session_id)] == e.ts)
    )
    assert len(data.rows) + data.censored == expected_points
    for row in data.rows:
        assert row.attrs == reference_attrs(events, row)
        assert row.label == reference_label(
            events, row, target, ends[(row.user_id, row.session_id)]
        )


def test_the_label_event_itself_is_never_in_the_features(tmp_path: Path):
    """A click right after the observation is the label, not a feature (and vice versa)."""
    s = {"user_id": "u", "session_id": "s", "page_category": "news"}
    events = [
        PageView(event_id="p", ts=T0, page="/a", **s),
        Click(event_id="c1", ts=T0 + 5_000, element="b", element_kind="cta", **s),
        Click(event_id="c2", ts=T0 + 5_001, element="b", element_kind="cta", **s),
        PageView(event_id="late", user_id="v", session_id="w", ts=T0 + 1e8),
    ]
    write_log(tmp_path, events)
    target = TargetDecl(event="click:cta", within="session", type="count")
    data = dataset.build(tmp_path, CONFIG, at="page_view", target=target, after_s=5.0)
    row = next(r for r in data.rows if r.user_id == "u")
    assert row.attrs["clicks"] == {"cta": 1}  # the click at exactly 5 s is in the past
    assert row.label == 1.0  # only the click after it is the outcome


def test_unfinished_windows_are_censored_not_labelled_zero(tmp_path: Path):
    s = {"user_id": "u", "session_id": "s", "page_category": "news"}
    events = [
        PageView(event_id="p1", ts=T0, page="/a", **s),
        Scroll(event_id="x", ts=T0 + 1000, depth=0.5, **s),
    ]
    write_log(tmp_path, events)
    data = dataset.build(
        tmp_path, CONFIG, at="page_view", target=TargetDecl(event="click:*", within=3600.0)
    )
    assert data.rows == [] and data.censored == 1


def test_exposure_rows_use_the_logged_decision_and_the_variant(tmp_path: Path):
    from trimtab.decide import Decision
    from trimtab.decisionlog import SqliteDecisionLog

    log = SqliteDecisionLog(tmp_path / "decisions.sqlite")
    d = Decision(slot="cta", variant="b", source="policy", propensity=0.25, decision_id="d1")
    log.record([d], {"id": "u", "session_id": "s", "device": "mobile", "depth": 0.3})
    log.close_sync()
    s = {"user_id": "u", "session_id": "s"}
    events = [
        Exposure(event_id="x", ts=T0, slot="cta", variant="b", decision_id="d1", **s),
        Click(event_id="c", ts=T0 + 2000, element="cta-b", element_kind="cta", slot="cta", **s),
        Exposure(event_id="y", ts=T0 + 3000, slot="cta", variant="a", decision_id="unknown", **s),
        PageView(event_id="late", user_id="v", session_id="w", ts=T0 + 1e8),
    ]
    write_log(tmp_path, events)
    data = dataset.build(
        tmp_path,
        CONFIG,
        at="exposure",
        slot="cta",
        target=TargetDecl(event="click:cta", within=60.0),
    )
    assert len(data.rows) == 1
    row = data.rows[0]
    assert (row.label, row.propensity, row.decision_id) == (1.0, 0.25, "d1")
    assert (
        row.attrs["variant"] == "b" and row.attrs["device"] == "mobile" and row.attrs["item"] == {}
    )
    assert data.skipped == {"exposure without a logged decision": 1}


def test_simulated_log_rows_match_a_fresh_processor(tmp_path: Path):
    """On realistic traffic too: every row equals a replay of that user's past alone."""
    sim = Simulator(seed=4, n_users=30)
    events = [e for session in sim.sessions(60) for e in session]
    write_log(tmp_path, events)
    target = TargetDecl(event="click:card", within="session")
    data = dataset.build(tmp_path, CONFIG, at="page_view", target=target, after_s=3.0)
    assert len(data.rows) > 50
    ends: dict[tuple[str, str], float] = {}
    for e in events:
        ends[(e.user_id, e.session_id)] = max(ends.get((e.user_id, e.session_id), 0.0), e.ts)
    for row in data.rows[::5]:
        assert row.attrs == reference_attrs(events, row)
        assert row.label == reference_label(
            events, row, target, ends[(row.user_id, row.session_id)]
        )


def test_missing_or_empty_logs_are_clear_errors(tmp_path: Path):
    with pytest.raises(dataset.DatasetError, match="no event log"):
        dataset.build(tmp_path, CONFIG, at="page_view", target=TargetDecl(event="click:*"))
    write_log(tmp_path, [])
    with pytest.raises(dataset.DatasetError, match="empty"):
        dataset.build(tmp_path, CONFIG, at="page_view", target=TargetDecl(event="click:*"))
