"""The live loop over a real collector (in-process): consent first, page views, stable slots."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
KEY = "pk_demo"
SLOTS = ["hero", "rail", "cta", "review"]
ACCEPT = {"analytics": True, "personalization": True}


def make_client(tmp_path: Path, **slot_overrides: dict[str, Any]):
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = "sk_test"
    # raw ids ("reader"): these tests are about the collector's loop; signed visitor ids, the
    # default, are tested in test_identity.py
    data["identity"] = {"require_signed": False}
    for slot, fields in slot_overrides.items():
        data["slots"][slot].update(fields)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    return TestClient(create_app(runtime, flush_interval_s=0.05)), runtime


@pytest.fixture
def live(tmp_path):
    client, runtime = make_client(tmp_path)
    with client:
        yield client, runtime
    runtime.close()


class Page:
    """One page view of one reader, as the tracker would speak for it."""

    def __init__(self, ws, user: str = "reader", session: str = "s1", category: str = "science"):
        self.ws, self.user, self.session, self.category = ws, user, session, category
        self.view = uuid.uuid4().hex[:12]
        self.shown: dict[str, dict[str, Any]] = {}
        self.triggers: dict[str, Any] = {}

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "event_id": uuid.uuid4().hex,
            "user_id": self.user,
            "session_id": self.session,
            "ts": time.time() * 1000,
            "page": "/article/x",
            "page_category": self.category,
            "page_view_id": self.view,
            **fields,
        }

    def hello(self, *events: dict[str, Any], slots: list[str] = SLOTS) -> list[dict[str, Any]]:
        self.ws.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "user_id": self.user,
                    "session_id": self.session,
                    "slots": slots,
                    "page": "/article/x",
                    "page_category": self.category,
                    "page_view_id": self.view,
                    "events": list(events),
                }
            )
        )
        answer = self.ws.receive_json()
        assert answer["type"] == "decisions", answer
        ack = self.ws.receive_json()
        assert ack == {"type": "ack", "accepted": len(events), "rejected": []}
        self.triggers = answer.get("triggers", {})
        return self._show(answer["decisions"])

    def send(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        """Send a batch; the decisions pushed before its ack (none when nothing changes)."""
        self.ws.send_text(json.dumps({"type": "events", "events": list(events)}))
        pushed: list[dict[str, Any]] = []
        while True:
            frame = self.ws.receive_json()
            if frame["type"] == "ack":
                assert frame["accepted"] == len(events), frame
                return self._show(pushed)
            assert frame["type"] == "decisions", frame
            pushed += frame["decisions"]

    def _show(self, decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for d in decisions:
            self.shown[d["slot"]] = d
        return decisions


def logged(runtime: Runtime) -> dict[str, Any]:
    runtime.decision_log.flush_sync()
    return {r.decision_id: r for r in runtime.decision_log.read(limit=10_000)}


def variants(decisions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["slot"], d["variant"]) for d in decisions]


def test_consent_in_the_hello_is_processed_before_the_first_decisions(live):
    client, runtime = live
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page = Page(ws)
        first = page.hello(page.event("consent", purposes=ACCEPT), page.event("page_view"))
        assert {d["source"] for d in first} & {"no_consent", "degraded"} == set()
        assert {d["decision_id"] for d in first} <= set(logged(runtime))


def test_consent_after_the_hello_resends_every_slot_with_new_logged_decisions(live):
    client, runtime = live
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page = Page(ws)
        statistics_only = {"analytics": True, "personalization": False}
        before = page.hello(
            page.event("consent", purposes=statistics_only), page.event("page_view")
        )
        assert {d["source"] for d in before} == {"no_consent"}
        # the pre-consent defaults are logged too (an exposure of them refers to a decision)
        # and belong to no experiment
        log = logged(runtime)
        assert all(log[d["decision_id"]].experiment == "" for d in before)
        after = page.send(page.event("consent", purposes=ACCEPT))
        assert sorted(d["slot"] for d in after) == sorted(SLOTS), "every slot is sent again"
        old_ids = {d["decision_id"] for d in before}
        assert all(d["decision_id"] not in old_ids for d in after)
        assert all(d["source"] not in ("no_consent", "degraded") for d in after)
        unchanged = [d for d in after if d["variant"] == "newsletter" or d["variant"] == "none"]
        assert unchanged, "slots whose variant stays the same are re-sent as well"
        log = logged(runtime)
        assert {d["decision_id"] for d in after} <= set(log)
        assert all(log[d["decision_id"]].source == d["source"] for d in after)


def test_the_next_page_opens_with_its_own_page_features(live):
    client, _ = live
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        first = Page(ws)
        first.hello(first.event("consent", purposes=ACCEPT), first.event("page_view"))
        moved = first.send(first.event("scroll", depth=1.0))
        assert ("cta", "subscribe_offer") in variants(moved)
        hover = first.event(
            "hover", element="img-x", element_kind="image", category="science", dwell_ms=4000
        )
        assert ("review", "detail") in variants(first.send(hover))
        second = Page(ws)  # the reader opens the next article (same session, new page view)
        opening = second.hello(second.event("page_view"))
        shown = dict(variants(opening))
        assert shown["cta"] == "newsletter" and shown["review"] == "none"
        assert not any("scroll_depth_max=1" in d["reason"] for d in opening)


def test_a_slot_never_falls_back_without_a_new_trigger(tmp_path):
    client, runtime = make_client(tmp_path, hero={"min_ms_between_changes": 0})
    with client, client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page = Page(ws)
        page.hello(page.event("consent", purposes=ACCEPT), page.event("page_view"))
        hero = page.shown["hero"]["variant"]
        assert hero in ("top_story", "for_you")
        moved = page.send(page.event("scroll", depth=0.3, velocity=6000))
        assert variants(moved) == [("hero", "skim")]  # fast-scroller: ranked first
        # the reader slows down: the median falls below 2,500 px/s, the rule stops applying...
        calm = [page.event("scroll", depth=0.3 + i / 100, velocity=400) for i in range(9)]
        assert page.send(*calm) == []  # ... and the hero stays: no trigger, no change
        assert page.shown["hero"]["variant"] == "skim"
        features = runtime.features_of(_stored(client, page.user), "s1", page.view)
        assert features["scroll_velocity"] < 2500
    runtime.close()


def _stored(client: TestClient, user: str) -> str:
    return client.app.state.collector.gate.user_id(user)


def test_changes_per_view_are_capped_and_a_held_change_goes_out_after_the_wait(tmp_path):
    client, runtime = make_client(
        tmp_path,
        cta={"max_changes_per_view": 0},
        hero={"min_ms_between_changes": 400},
    )
    # a second rule above fast-scroller gives the hero two triggers in a row
    runtime.config.slots["hero"].rules.insert(0, _rule("deep", {"scroll_depth_max": {"$gt": 0.9}}))
    runtime.reload(runtime.config)
    with client, client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page = Page(ws)
        page.hello(page.event("consent", purposes=ACCEPT), page.event("page_view"))
        moved = page.send(page.event("scroll", depth=0.5, velocity=6000))
        assert variants(moved) == [("hero", "skim")]
        # past 75 % the cta would change, but it may not change at all on this page view;
        # past 90 % the hero's higher rule applies, but only 400 ms after its last change
        assert page.send(page.event("scroll", depth=0.95, velocity=6000)) == []
        held_at = time.monotonic()
        pushed = ws.receive_json()  # the release loop sends it when the wait is over
        assert time.monotonic() - held_at > 0.2
        assert variants(pushed["decisions"]) == [("hero", "top_story")]
        assert pushed["decisions"][0]["rule_id"] == "deep"
        assert page.shown["cta"]["variant"] == "newsletter"
    runtime.close()


def _rule(rule_id: str, condition: dict[str, Any]):
    from trimtab.config import RuleDecl

    return RuleDecl(id=rule_id, condition=condition, force="top_story")


def test_a_reconnecting_page_keeps_what_it_shows(live):
    client, _ = live
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page = Page(ws)
        page.hello(page.event("consent", purposes=ACCEPT), page.event("page_view"))
        page.send(page.event("scroll", depth=1.0))
        before = {slot: d["decision_id"] for slot, d in page.shown.items()}
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page.ws = ws
        again = page.hello()
        assert {d["slot"]: d["decision_id"] for d in again} == before


def test_the_hello_answer_carries_the_pages_triggers(live):
    client, _ = live
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page = Page(ws)
        page.hello(page.event("consent", purposes=ACCEPT), page.event("page_view"))
        assert page.triggers["depth"] == [0.75]
        assert page.triggers["speed"] == [2500]
        assert page.triggers["dwell"] == [["kind", "image", 3000]]
        hover = page.event("hover", element="img", element_kind="image", dwell_ms=1000)
        page.send(hover)
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        page.ws = ws
        page.hello()
        assert page.triggers["dwell"] == [["kind", "image", 2000]]  # what is still missing


def test_decide_route_takes_the_first_events_too(live):
    client, runtime = live
    view = "v-http"
    body = {
        "user_id": "reader-http",
        "session_id": "s9",
        "slots": SLOTS,
        "page_view_id": view,
        "events": [
            {
                "kind": "consent",
                "event_id": "c1",
                "user_id": "reader-http",
                "session_id": "s9",
                "ts": time.time() * 1000,
                "page_view_id": view,
                "purposes": ACCEPT,
            }
        ],
    }
    answer = client.post(f"/v1/decide?key={KEY}", content=json.dumps(body)).json()
    assert answer["accepted"] == 1 and answer["rejected"] == []
    assert {d["source"] for d in answer["decisions"]} & {"no_consent"} == set()
    assert answer["triggers"]["depth"] == [0.75]
    assert {d["decision_id"] for d in answer["decisions"]} <= set(logged(runtime))


# -- segments: who the reader is, as the page opened ------------------------------------------
class Reader:
    """A reader's live features, set by the test; the hub decides on them with the demo's
    real rules (no collector: the segment is an attribute like the others)."""

    def __init__(self, extra_rules: list[dict[str, Any]] = ()) -> None:
        from trimtab.config import parse_config
        from trimtab.decide import Engine
        from trimtab.live import LiveHub

        data = yaml.safe_load(DEMO.read_text())
        data["site"]["secret_key"] = "sk_test"
        data["slots"]["cta"]["rules"][:0] = list(extra_rules)
        data["slots"]["cta"]["min_ms_between_changes"] = 0
        self.features: dict[str, Any] = {"id": "reader", "session_id": "s1"}
        self.engine = Engine(parse_config(data), lambda *_: dict(self.features))
        self.hub = LiveHub(lambda: self.engine)

    def open(self, view: str) -> tuple[Any, dict[str, Any]]:
        """A page view's hello: its connection and, per slot, its first decision."""
        from trimtab.live import LiveConnection

        conn = LiveConnection(
            "reader",
            "s1",
            ["cta", "review"],
            page="/article/x",
            page_category="science",
            page_view_id=view,
        )
        self.hub.recall(conn)
        self.hub.open(conn)
        return conn, {d.slot: d for d in self.hub.first(conn)}


def shown(decisions: dict[str, Any]) -> dict[str, str]:
    return {slot: d.variant for slot, d in decisions.items()}


def test_a_segment_assigned_while_the_page_is_open_is_not_a_trigger():
    reader = Reader()
    page, first = reader.open("pv1")
    assert shown(first) == {"cta": "newsletter", "review": "none"}
    reader.features.update(segment="deep-readers", segment_p=0.9)  # the 20th event, mid-page
    assert reader.hub.update(page) == []  # segment-deep-readers applies, but nothing moved
    # a real trigger still changes the slot, explained by what the reader did
    reader.features["scroll_depth_max"] = 0.9
    (offer,) = reader.hub.update(page)
    assert (offer.variant, offer.rule_id) == ("subscribe_offer", "deep-reader")
    assert offer.why == "Because you read to the end of this article"
    # the next article opens with its own page features and the segment the reader has now
    del reader.features["scroll_depth_max"]
    _, opened = reader.open("pv2")
    assert shown(opened) == {"cta": "readers_like_you", "review": "none"}
    assert opened["cta"].why == "Because readers like you (deep readers) read stories to the end"


def test_a_segment_is_not_a_trigger_even_for_a_rule_that_also_watches_the_page():
    both = {
        "id": "deep-segment",
        "why": "Because readers like you read to the end, as you just did",
        "condition": {"scroll_depth_max": {"$gt": 0.5}, "segment": "deep-readers"},
        "force": "readers_like_you",
    }
    reader = Reader([both])
    page, first = reader.open("pv1")
    reader.features["scroll_depth_max"] = 0.6  # past the rule's depth, no segment yet
    assert reader.hub.update(page) == []
    reader.features.update(segment="deep-readers", segment_p=0.9)
    assert reader.hub.update(page) == []  # the segment arrived; the reader did nothing new
    # a reconnect of the same page view keeps the segment it opened with
    reader.hub.close(page)
    again, answer = reader.open("pv1")
    assert answer == first
    assert again.pinned == {"segment": None, "segment_p": None, "_models": None}
    # the next page opens with it
    _, opened = reader.open("pv2")
    assert (opened["cta"].variant, opened["cta"].rule_id) == ("readers_like_you", "deep-segment")


def test_a_page_keeps_the_segment_it_opened_with_when_the_reader_is_reassigned():
    reader = Reader()
    reader.features.update(segment="deep-readers", segment_p=0.8)
    page, first = reader.open("pv1")
    assert first["cta"].variant == "readers_like_you"
    reader.features.update(segment="late-evening-skimmers", segment_p=0.7)
    assert reader.hub.update(page) == []
    logged: list[Any] = []
    reader.engine.log = lambda decisions, attrs: logged.append(attrs)
    reader.hub.update(page)
    assert logged[-1]["segment"] == "deep-readers"  # what this page view decides on
    _, opened = reader.open("pv2")
    assert opened["cta"].variant == "newsletter"  # no longer a deep reader: the next page says so


def test_the_decision_log_records_the_segment_the_page_decided_on():
    """The model record logged with a later decision on an open page names the held segment
    (its id and posterior), next to the scores of now; not the reader's current segment."""
    reader = Reader()
    held = {"v": 3, "id": "s1", "p": 0.8}
    reader.features.update(
        segment="deep-readers",
        segment_p=0.8,
        _models=json.dumps({"segments": held, "p_subscribe": {"v": 1, "score": 0.1}}),
    )
    page, _ = reader.open("pv1")
    logged: list[Any] = []
    reader.engine.log = lambda decisions, attrs: logged.append(dict(attrs))
    reader.features.update(
        segment="late-evening-skimmers",
        segment_p=0.7,
        _models=json.dumps(
            {"segments": {"v": 3, "id": "s2", "p": 0.7}, "p_subscribe": {"v": 1, "score": 0.4}}
        ),
    )
    reader.hub.update(page)
    record = json.loads(logged[-1]["_models"])
    assert (logged[-1]["segment"], logged[-1]["segment_p"]) == ("deep-readers", 0.8)
    assert record == {"segments": held, "p_subscribe": {"v": 1, "score": 0.4}}
    # a page opened before any segment was assigned records none, though one exists now
    reader.features.pop("_models")
    reader.features.pop("segment")
    reader.features.pop("segment_p")
    bare, _ = reader.open("pv2")
    reader.features.update(
        segment="deep-readers", segment_p=0.9, _models=json.dumps({"segments": held})
    )
    reader.hub.update(bare)
    assert "segment" not in logged[-1] and "_models" not in logged[-1]
