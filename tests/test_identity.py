"""Signed visitor ids through the collector's API (issue 11, item 8): with only the public key,
nobody can write to, read from or consent for another visitor's profile.

The app is the real collector over the demo config with its defaults (signed ids required).
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.identity import PREFIX, VisitorIds, sign_visitor_id, visitor_of
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
KEY = "pk_demo"

SECRET = "sk_test"
VICTIM = sign_visitor_id(SECRET, "victim")  # minted by the site's backend
FORGED = f"{PREFIX}victim.{'A' * 22}"
GRANT = {"purposes": {"analytics": True, "personalization": True}}
_n = iter(range(10**9))


def event(kind: str, user: str, session: str = "s1", **fields) -> dict:
    return {
        "kind": kind,
        "event_id": f"e{next(_n)}",
        "user_id": user,
        "session_id": session,
        "ts": time.time() * 1000,
        **fields,
    }


def make_client(tmp_path, secret: str | None = SECRET, **identity):
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = secret or ""
    if identity:
        data["identity"] = identity
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    return TestClient(create_app(runtime, flush_interval_s=0.05)), runtime


@pytest.fixture
def client(tmp_path):
    client, runtime = make_client(tmp_path)
    with client:
        sent = post(
            client,
            [
                event("consent", VICTIM, **GRANT),
                event("scroll", VICTIM, depth=0.9),
            ],
        )
        assert sent == {"accepted": 2, "rejected": []}
        yield client
    runtime.close()


def post(client, events: list[dict]) -> dict:
    r = client.post(f"/v1/events?key={KEY}", content=json.dumps(events))
    assert r.status_code == 200, r.text
    return r.json()


def decide(client, user: str, session: str = "s1") -> dict:
    body = {
        "user_id": user,
        "session_id": session,
        "slots": ["cta", "hero"],
        "page": "/article/1",
        "page_category": "news",
    }
    r = client.post(f"/v1/decide?key={KEY}", content=json.dumps(body))
    assert r.status_code == 200, r.text
    return r.json()


def features(client, user: str) -> dict:
    r = client.get(
        "/v1/admin/features",
        params={"user_id": user, "session_id": "s1"},
        headers={"authorization": f"Bearer {SECRET}"},
    )
    return r.json()


def test_the_owner_of_a_visitor_id_reads_and_writes_their_profile(client):
    answer = decide(client, VICTIM)
    cta = {d["slot"]: d for d in answer["decisions"]}["cta"]
    assert cta["variant"] == "subscribe_offer", (cta, features(client, VICTIM))
    assert "scroll_depth_max=0.9" in cta["reason"]
    assert "visitor_id" not in answer  # a valid id is kept, not replaced


@pytest.mark.parametrize(
    ("claimed", "reason"),
    [
        ("victim", "not a signed visitor id"),
        (FORGED, "signature does not match"),
        (sign_visitor_id("sk_other_site", "victim"), "signature does not match"),
        ("vid.v1.victim", "malformed visitor id"),
    ],
)
def test_unsigned_or_forged_ids_cannot_write_or_consent(client, claimed, reason):
    runtime = client.app.state.collector.runtime
    before = runtime.deployment.event_log.count()
    refused = [
        event("consent", claimed, purposes={"analytics": False, "personalization": False}),
        event("scroll", claimed, depth=0.1),
    ]
    own = sign_visitor_id(SECRET, "someone")
    answer = post(client, [*refused, event("consent", own, **GRANT)])
    assert answer["accepted"] == 1  # the valid event of the same batch is kept
    assert [(r["index"], r["path"]) for r in answer["rejected"]] == [
        (0, "$[0].user_id"),
        (1, "$[1].user_id"),
    ]
    assert all(reason in r["reason"] for r in answer["rejected"])
    assert all("victim" not in r["reason"] for r in answer["rejected"])  # nothing of theirs
    assert runtime.deployment.event_log.count() == before + 1
    # the victim's consent and profile are untouched: still personalized, still deep
    assert features(client, VICTIM)["consent"] == GRANT["purposes"]
    assert features(client, "victim")["scroll_depth_max"] == 0.9  # admin: by visitor part


@pytest.mark.parametrize("claimed", ["victim", FORGED, ""])
def test_decide_with_an_unsigned_or_forged_id_acts_as_a_new_visitor(client, claimed):
    answer = decide(client, claimed)
    issued = answer["visitor_id"]
    assert issued.startswith(PREFIX) and visitor_of(issued) != "victim"
    assert VisitorIds.from_secret(SECRET).problem(issued) is None
    text = json.dumps(answer["decisions"])
    assert "0.9" not in text and "subscribe_offer" not in text  # nothing of the victim's
    assert {d["source"] for d in answer["decisions"]} == {"no_consent"}


def test_a_socket_hello_without_a_valid_id_gets_one_and_its_events_are_its_own(client):
    runtime = client.app.state.collector.runtime
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        hello = {
            "type": "hello",
            "user_id": "victim",  # a placeholder (or a stolen raw id): replaced
            "session_id": "s1",
            "slots": ["cta"],
            "events": [event("consent", "victim", **GRANT)],
        }
        ws.send_text(json.dumps(hello))
        answer = ws.receive_json()
        issued = answer["visitor_id"]
        assert issued.startswith(PREFIX) and "0.9" not in json.dumps(answer)
        assert ws.receive_json() == {"type": "ack", "accepted": 1, "rejected": []}
        # the page's events, under its placeholder or its new id: stored as the new visitor
        batch = [event("scroll", "victim", depth=0.3), event("scroll", issued, depth=0.4)]
        ws.send_text(json.dumps({"type": "events", "events": batch}))
        while (message := ws.receive_json())["type"] != "ack":
            pass
        assert message == {"type": "ack", "accepted": 2, "rejected": []}
        # someone else's valid id on this socket is refused
        ws.send_text(json.dumps({"type": "events", "events": [event("scroll", VICTIM, depth=0)]}))
        refused = ws.receive_json()
        assert refused["accepted"] == 0 and "does not match" in refused["rejected"][0]["reason"]
    runtime.decision_log.flush_sync()
    assert features(client, issued)["scroll_depth_max"] == 0.4
    assert features(client, VICTIM)["scroll_depth_max"] == 0.9  # untouched


def _first_hello(client, placeholder: str, session: str, events: list[dict]) -> str:
    with client.websocket_connect(f"/v1/live?key={KEY}") as ws:
        hello = {"type": "hello", "user_id": placeholder, "session_id": session,
                 "slots": ["cta"], "events": events}  # fmt: skip
        ws.send_text(json.dumps(hello))
        issued = ws.receive_json()["visitor_id"]
        while (message := ws.receive_json())["type"] != "ack":
            pass
        assert message["accepted"] == len(events), message
    return issued


def test_a_first_hello_sent_again_after_a_restart_stores_its_events_once(tmp_path):
    # The server stores a page's first events, then dies before its answer (the new id)
    # reaches the page; the page says the same hello to the next server.
    placeholder, session = "1x2c3v4b5n6m7a8s9d0f1g2h3j", "k4l5z6x7c8v9b0n1m2q3w4e5r6"
    first = [
        event("consent", placeholder, session, **GRANT),
        event("page_view", placeholder, session),
        event("scroll", placeholder, session, depth=0.5),
    ]
    issued = []
    for _ in range(2):
        client, runtime = make_client(tmp_path)
        with client:
            issued.append(_first_hello(client, placeholder, session, first))
        runtime.close()
    assert issued[0] == issued[1] and VisitorIds.from_secret(SECRET).problem(issued[0]) is None
    client, runtime = make_client(tmp_path)
    with client:
        # another tab of the same page (its own session) is another visitor until it hears back
        other_tab = _first_hello(client, placeholder, "z" * 26, [])
        assert other_tab not in issued
        erased = client.delete(
            f"/v1/users/{visitor_of(issued[0])}", headers={"authorization": f"Bearer {SECRET}"}
        )
        assert erased.status_code == 200 and erased.json()["events"] == len(first)
    runtime.close()


def test_only_the_trackers_own_placeholder_gets_the_same_id_again(client):
    # a guessable claim (a raw account id) must not lead anyone to the same visitor twice
    session = "k4l5z6x7c8v9b0n1m2q3w4e5r6"
    assert _first_hello(client, "victim", session, []) != _first_hello(
        client, "victim", session, []
    )
    placeholder = "1x2c3v4b5n6m7a8s9d0f1g2h3j"
    assert _first_hello(client, placeholder, "s1", []) != _first_hello(
        client, placeholder, "s1", []
    )
    assert decide(client, placeholder, session)["visitor_id"] == _first_hello(
        client, placeholder, session, []
    )


def test_erasure_by_the_visitor_part_erases_the_signed_profile(client):
    headers = {"authorization": f"Bearer {SECRET}"}
    r = client.delete("/v1/users/victim", headers=headers)
    assert r.status_code == 200 and r.json()["events"] == 2
    assert "scroll_depth_max" not in features(client, VICTIM)


def test_raw_ids_are_taken_when_signing_is_not_required(tmp_path):
    client, runtime = make_client(tmp_path, require_signed=False)
    with client:
        assert post(client, [event("consent", "reader", **GRANT)])["accepted"] == 1
        answer = decide(client, "reader")
        assert "visitor_id" not in answer
        assert {d["source"] for d in answer["decisions"]} != {"no_consent"}
        assert decide(client, "")["visitor_id"].startswith(PREFIX)  # never a shared "" profile
    runtime.close()


def test_without_a_secret_key_ids_are_signed_with_a_key_kept_in_the_data_dir(tmp_path):
    os.environ.pop("TRIMTAB_SECRET_KEY", None)
    client, runtime = make_client(tmp_path, secret=None)
    with client:
        issued = decide(client, "")["visitor_id"]
        assert post(client, [event("consent", issued, **GRANT)])["accepted"] == 1
    runtime.close()
    key = tmp_path / "data" / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = VisitorIds.from_data_dir(tmp_path / "data")  # the next process: the same key
    assert again.problem(issued) is None
    assert VisitorIds.from_data_dir(tmp_path / "elsewhere").problem(issued) is not None


def test_sign_visitor_id_checks_its_input():
    assert visitor_of(sign_visitor_id(SECRET, "account 42/ü")) == "account 42/ü"
    assert visitor_of(sign_visitor_id(SECRET)).isascii()  # random when not given
    for bad in ("", "x" * 97, "tab\there"):
        with pytest.raises(ValueError):
            sign_visitor_id(SECRET, bad)


def test_remembering_valid_ids_never_lets_a_forged_one_through():
    """Valid ids are remembered (a batch carries its id once per event); the memory holds only
    ids whose signature matched under this key, and stays bounded."""
    ids = VisitorIds(VisitorIds.from_secret(SECRET)._key, cache_size=2)
    assert [ids.problem(VICTIM) for _ in range(3)] == [None, None, None]
    # a forgery of the remembered id, and the victim's id as another site signs it
    for forged in (FORGED, VICTIM[:-1] + ("A" if VICTIM[-1] != "A" else "B")):
        assert ids.problem(forged) == "user_id: the visitor id signature does not match"
    assert VisitorIds.from_secret("sk_other_site").problem(VICTIM) is not None
    assert set(ids._verified) == {VICTIM}  # refused ids are not remembered
    others = [sign_visitor_id(SECRET, f"reader-{n}") for n in range(5)]
    assert all(ids.problem(vid) is None for vid in others)
    assert len(ids._verified) <= 2  # bounded: cleared when full, then checked in full again
    assert ids.problem(VICTIM) is None and ids.problem(FORGED) is not None
