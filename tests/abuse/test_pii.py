"""Personal data is scrubbed before anything is stored (issue 11, item 7).

Every way personal data reached the stores is sent through the real HTTP and WebSocket API of
a `trimtab serve` process: the page of consent events (granted and refused), the page sent with
decide and hello (query string and fragment), e-mails and phone numbers written with
percent-encodings in paths, free-text element, category and custom fields. Afterwards every
file of the data directory (event log, state, decision log, their write-ahead logs) is grepped
byte for byte for each piece of personal data: none is found, while the harmless values sent
beside them (the control) are.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import yaml
from abuse_harness import KEY, Server, grep_bytes, site_config, visitor, wait_for
from websockets.asyncio.client import connect

# Each piece of personal data, in every spelling that could reach a file.
EMAIL = "pii.ann.7@example.com"
PHONE = "+44 20 7946 0958"
NEEDLES = [
    "pii.ann.7",  # the e-mail's local part: found whatever the encoding of the @
    "pii.bob.8",
    "pii.carol.9",
    "pii.dave.10",
    "pii.erin.11",
    "pii.frank.12",
    "pii.gina.13",
    "pii.hank.14",
    "pii-token-s3cr3t",  # a query parameter that is not on the allow-list
    "pii-fragment-x9",
    "denied-page-zz",  # the page of a refused consent
    "+44 20 7946 0958",
    "%2B44%2020%207946%200958",
    "+442079460958",
    "442079460958",
]
CONTROL = ["gardening-cat", "/kept/path-ok", "page=2", "card-ok-1"]


def _event(kind: str, user: str, **fields) -> dict:
    return {
        "kind": kind,
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "session_id": "s-pii",
        "ts": time.time() * 1000.0,
        **fields,
    }


def _config(tmp_path):
    path = site_config(tmp_path, consent="required")
    data = yaml.safe_load(path.read_text())
    data["site"]["keep_query_params"] = ["page"]
    path.write_text(yaml.safe_dump(data))
    return path


GRANT = {"purposes": {"analytics": True, "personalization": True}}


async def _hello(port: int, user: str) -> list[dict]:
    """A WebSocket hello whose page carries personal data, then one batch on the socket."""
    answers = []
    url = f"ws://127.0.0.1:{port}/v1/live?key={KEY}"
    async with connect(url) as ws:
        page = "/ws/page?email=pii.carol.9%40example.com#pii-fragment-x9"
        hello = {
            "type": "hello",
            "user_id": user,
            "session_id": "s-pii",
            "page": page,
            "page_category": "pii.dave.10@example.com",
            "slots": ["hero", "rail", "cta"],
            "events": [_event("consent", user, page=page, **GRANT)],
        }
        await ws.send(json.dumps(hello))
        answers.append(json.loads(await ws.recv()))
        answers.append(json.loads(await ws.recv()))
        batch = [
            _event("click", user, element="pii.erin.11@example.com", category="gardening-cat",
                   page="/ws/u/pii.erin.11%2540example.com"),
        ]  # fmt: skip
        await ws.send(json.dumps({"type": "events", "events": batch}))
        answers.append(json.loads(await ws.recv()))
    return answers


def test_no_personal_data_reaches_any_store(tmp_path):
    data = tmp_path / "data"
    server = Server(_config(tmp_path), data).start()
    # signed visitor ids (required by default); the socket's page starts with a placeholder id
    # and is handed a visitor id in the hello answer
    user, refuser, ws_user = visitor("reader-pii"), visitor("refuser-pii"), "placeholder-pii"
    try:
        batch = [
            _event("consent", user, page=f"/welcome?email={EMAIL}", **GRANT),
            _event("page_view", user, page="/kept/path-ok?page=2&t=pii-token-s3cr3t",
                   url="https://site.test/kept/path-ok?page=2&t=pii-token-s3cr3t#pii-fragment-x9",
                   referrer="https://mail.test/inbox?u=pii.bob.8@example.com",
                   title=f"Orders of {EMAIL}", page_category="gardening-cat"),
            _event("scroll", user, depth=0.4, page="/u/pii.bob.8%40example.com/profile"),
            _event("scroll", user, depth=0.5, page="/u/pii.frank.12%2540example.com"),
            _event("scroll", user, depth=0.6, page="/call/%2B44%2020%207946%200958"),
            _event("scroll", user, depth=0.7, page="/call/+442079460958"),
            _event("hover", user, element="card-ok-1", category="pii.gina.13@example.com",
                   element_kind=PHONE, dwell_ms=1200.0),
            _event("visible", user, element="pii.hank.14@example.com", category=EMAIL,
                   visible_ms=900.0, page_category="pii.hank.14@example.com"),
            _event("custom", user, name="sent-pii.hank.14@example.com", value=f"call {PHONE}"),
            _event("consent", refuser, page="/denied-page-zz?e=pii.ann.7@example.com",
                   page_category="denied-page-zz",
                   purposes={"analytics": False, "personalization": False}),
        ]  # fmt: skip
        status, _, body = server.request(
            "POST", f"/v1/events?key={KEY}", json.dumps(batch).encode()
        )
        assert status == 200 and body["rejected"] == [], body
        assert body["accepted"] == len(batch)  # all kept: scrubbed, not refused

        decide = {
            "user_id": user,
            "session_id": "s-pii",
            "slots": ["hero", "rail", "cta"],
            "page": "/decide/page?email=pii.ann.7@example.com&page=2#pii-fragment-x9",
            "page_category": EMAIL,
        }
        status, _, answer = server.request(
            "POST", f"/v1/decide?key={KEY}", json.dumps(decide).encode()
        )
        assert status == 200 and len(answer["decisions"]) == 3, answer

        answers = asyncio.run(_hello(server.port, ws_user))
        assert answers[0]["type"] == "decisions" and answers[1]["type"] == "ack", answers
        assert answers[0]["visitor_id"].startswith("vid.v1."), answers
        assert answers[2] == {"type": "ack", "accepted": 1, "rejected": []}, answers

        # what the rules see: the interest keys never hold the e-mail
        features = server.features(user, "s-pii")
        interest = json.dumps(features)
        assert "gardening-cat" in interest
        assert "@" not in interest and "pii." not in interest, interest
        assert wait_for(lambda: server.health()["decisions_pending"] == 0, 10)
        found = grep_bytes([data], NEEDLES)
        server.stop()  # the last flush writes the states: grep again after it
        found.update(grep_bytes([data], NEEDLES))
        control = grep_bytes([data], CONTROL)
    finally:
        server.kill()
    assert found == {}, found
    assert sorted(control) == sorted(CONTROL)  # the grep finds what was stored beside them
    grepped = sorted(p.name for p in data.rglob("*") if p.is_file())
    print("grepped:", grepped)
