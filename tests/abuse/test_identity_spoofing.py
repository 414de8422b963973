"""Identity spoofing against a real `trimtab serve` (issue 11, item 8).

The attack report: with the public key and a visitor's raw id, anyone could read that
visitor's feature values from decision reasons, rewrite their profile and grant the consent
they refused. Here a victim (a signed visitor id, as the site's backend mints it) reads to the
end and refuses personalization; an attacker with the public key then tries each of those over
HTTP and WebSocket, with the raw id and with a forged signature. The victim's profile, consent
and event count are read back through the admin routes afterwards: untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from abuse_harness import KEY, Server, site_config, visitor
from websockets.asyncio.client import connect

from trimtab.identity import PREFIX


def _event(kind: str, user: str, **fields) -> dict:
    return {
        "kind": kind,
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "session_id": "s-victim",
        "ts": time.time() * 1000.0,
        **fields,
    }


async def _socket_attack(port: int, claimed: str) -> list[dict]:
    async with connect(f"ws://127.0.0.1:{port}/v1/live?key={KEY}") as ws:
        hello = {
            "type": "hello",
            "user_id": claimed,
            "session_id": "s-victim",
            "page": "/article/1",
            "page_category": "news",
            "slots": ["cta", "hero"],
            "events": [_event("consent", claimed, purposes={"analytics": True,
                                                            "personalization": True})],
        }  # fmt: skip
        await ws.send(json.dumps(hello))
        answers = [json.loads(await ws.recv()), json.loads(await ws.recv())]
        await ws.send(
            json.dumps({"type": "events", "events": [_event("scroll", claimed, depth=0.1)]})
        )
        answers.append(json.loads(await ws.recv()))
    return answers


def test_a_public_key_cannot_read_write_or_consent_for_another_visitor(tmp_path):
    server = Server(site_config(tmp_path, consent="required"), tmp_path / "data").start()
    victim = visitor("victim-7")
    forged = f"{PREFIX}victim-7.{'A' * 22}"
    try:
        mine = [
            _event("consent", victim, purposes={"analytics": True, "personalization": False}),
            _event("scroll", victim, depth=0.93, page_category="news"),
        ]
        status, _, body = server.request("POST", f"/v1/events?key={KEY}", json.dumps(mine).encode())
        assert status == 200 and body == {"accepted": 2, "rejected": []}, body
        before = server.features("victim-7", "s-victim")
        assert before["scroll_depth_max"] == 0.93

        for claimed in ("victim-7", forged):
            # write and consent over HTTP: refused, naming the field, nothing of the victim's
            attack = [
                _event("consent", claimed, purposes={"analytics": True, "personalization": True}),
                _event("scroll", claimed, depth=0.01),
            ]
            status, _, body = server.request(
                "POST", f"/v1/events?key={KEY}", json.dumps(attack).encode()
            )
            assert status == 200 and body["accepted"] == 0, body
            assert {r["path"] for r in body["rejected"]} == {"$[0].user_id", "$[1].user_id"}
            assert all("0.93" not in r["reason"] for r in body["rejected"])
            # read over HTTP: a decide as the victim is a decide as a new visitor
            request = {"user_id": claimed, "session_id": "s-victim", "slots": ["cta", "hero"],
                       "page": "/article/1", "page_category": "news"}  # fmt: skip
            status, _, answer = server.request(
                "POST", f"/v1/decide?key={KEY}", json.dumps(request).encode()
            )
            assert status == 200 and answer["visitor_id"].startswith(PREFIX), answer
            assert "0.93" not in json.dumps(answer) and "victim-7" not in answer["visitor_id"]
            # and over the socket: its consent and events land on the new visitor
            answers = asyncio.run(_socket_attack(server.port, claimed))
            assert answers[0]["visitor_id"] != victim and "0.93" not in json.dumps(answers)
            assert answers[1]["accepted"] == 1 and answers[2]["accepted"] == 1, answers

        after = server.features("victim-7", "s-victim")
        assert after["scroll_depth_max"] == 0.93
        assert after["consent"] == {"analytics": True, "personalization": False}  # not granted
        # the victim's own decide: no new id, and their refusal of personalization still holds
        request = {"user_id": victim, "session_id": "s-victim", "slots": ["cta"],
                   "page": "/article/1", "page_category": "news"}  # fmt: skip
        own = server.request("POST", f"/v1/decide?key={KEY}", json.dumps(request).encode())[2]
        assert "visitor_id" not in own
        assert own["decisions"][0]["source"] == "no_consent"  # they refused personalization
    finally:
        server.kill()
