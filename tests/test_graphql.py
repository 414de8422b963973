"""GraphQL at /graphql against a running server: real queries over HTTP, a subscription over a
real WebSocket (graphql-transport-ws) that receives a decision made by a real decide request,
the secret-key guard, and the depth, cost and alias limits."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from served import served
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.gql.schema import MAX_COST, MAX_DEPTH
from trimtab.identity import sign_visitor_id
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
SECRET = "sk_graphql"
AUTH = {"Authorization": f"Bearer {SECRET}"}
PROTOCOL = "graphql-transport-ws"
WAIT_S = 30.0  # upper bound for "eventually"; never a performance assertion


@pytest.fixture
def server(tmp_path):
    """The demo site on a real server (uvicorn in a thread): its base URL."""
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = SECRET
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    app = create_app(runtime, flush_interval_s=0.05)
    with served(app) as url:
        yield url
    runtime.close()


def gql(url: str, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
    headers = kw.pop("headers", AUTH)
    body = {"query": query, "variables": variables or {}}
    return httpx.post(f"{url}/graphql", json=body, headers=headers, timeout=WAIT_S, **kw)


def data_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


def errors_of(response: httpx.Response) -> list[str]:
    answer = response.json()
    assert answer.get("data") is None, answer
    return [e["message"] for e in answer["errors"]]


def page_events(user: str, session: str, depth: float) -> list[dict[str, Any]]:
    now = time.time() * 1000
    base = {"user_id": user, "session_id": session}
    return [
        {"kind": "consent", "event_id": f"{session}-c", "ts": now, **base,
         "purposes": {"analytics": True, "personalization": True}},
        {"kind": "page_view", "event_id": f"{session}-p", "ts": now + 1, **base,
         "page_view_id": "pv1", "url": "https://news.example/a", "page_category": "tech"},
        {"kind": "scroll", "event_id": f"{session}-s", "ts": now + 2, **base,
         "page_view_id": "pv1", "depth": depth, "velocity": 300.0},
    ]  # fmt: skip


def decide(url: str, user: str, session: str, slots: list[str], events: list[Any]) -> Any:
    r = httpx.post(
        f"{url}/v1/decide?key=pk_demo",
        json={"user_id": user, "session_id": session, "slots": slots, "events": events,
              "page_view_id": "pv1", "page_category": "tech"},
        timeout=WAIT_S,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json().get("accepted") == len(events), r.json()
    return r.json()


def test_slots_rules_and_experiments_with_their_results(server):
    answer = data_of(
        gql(
            server,
            """{
              slots { name default variants { name payload } rules {
                id kind enabled condition force key variations weights hashAttribute policy sticky
                declaration } }
              slot(name: "cta") { name default rules { id why } }
              missing: slot(name: "nope") { name }
              experiments { name key slots status variations reportProblem
                report { users sequential arms { name users weight } sampleRatio { ok message }
                  integrity { name status message }
                  metrics { name guardrail verdicts arms { name n baseline effect ci error } } } }
            }""",
        )
    )
    slots = {s["name"]: s for s in answer["slots"]}
    assert set(slots) == {"hero", "rail", "cta", "review"}
    hero = slots["hero"]
    assert hero["default"] == "top_story"
    variants = {v["name"]: v["payload"] for v in hero["variants"]}
    assert set(variants) == {"top_story", "for_you", "skim"}
    assert "Today" in variants["top_story"]["html"]
    fast, test = hero["rules"]
    assert fast["id"] == "fast-scroller" and fast["kind"] == "force" and fast["force"] == "skim"
    assert fast["condition"] == {"scroll_velocity": {"$gt": 2500}}
    assert test["kind"] == "experiment" and test["variations"] == ["top_story", "for_you"]
    assert test["weights"] == [0.5, 0.5] and test["key"] == "hero-copy-test"
    assert test["declaration"]["hashVersion"] == 2 and test["sticky"] is False
    bandit = next(r for r in slots["rail"]["rules"] if r["id"] == "rail-bandit")
    assert bandit["kind"] == "policy" and bandit["policy"]["type"] == "logistic_thompson"
    assert answer["slot"]["rules"][0]["why"] == "Because you read to the end of this article"
    assert answer["missing"] is None

    (experiment,) = answer["experiments"]
    assert experiment["name"] == "hero-copy-test" and experiment["status"] == "running"
    assert experiment["slots"] == ["hero"] and experiment["variations"] == ["top_story", "for_you"]
    report = experiment["report"]
    assert report is not None, experiment["reportProblem"]
    assert [a["name"] for a in report["arms"]] == ["top_story", "for_you"]
    assert report["users"] == 0  # nobody exposed yet
    metrics = {m["name"]: m for m in report["metrics"]}
    assert set(metrics) == {"cta_click", "card_clicks_per_exposure", "image_dwell", "scroll_depth"}
    assert metrics["scroll_depth"]["guardrail"] is True
    # no data: the report's sentence says why, and no effect is made up
    errors = [a["error"] for m in report["metrics"] for a in m["arms"] if a["error"]]
    assert errors and all(" " in e for e in errors), errors
    assert all(a["n"] == 0 for m in report["metrics"] for a in m["arms"])
    assert any("sample ratio" in c["name"].lower() for c in report["integrity"])


def test_a_visitors_features_and_decisions_after_real_events(server):
    reader = sign_visitor_id(SECRET, "reader")  # as the site's backend mints it
    decide(server, reader, "s1", ["cta", "hero"], page_events(reader, "s1", 0.9))
    answer = data_of(
        gql(
            server,
            """query ($id: String!) { visitor(id: $id) {
                 id sessionId known sessions features { name scope value }
                 decisions(limit: 10) { decisionId slot variant source ruleId userId }
                 cta: decisions(slot: "cta") { variant reason } } }""",
            {"id": reader},
        )
    )
    visitor = answer["visitor"]
    assert visitor["known"] is True and visitor["sessionId"] == "s1"
    assert visitor["id"].startswith("p") and "reader" not in visitor["id"]  # pseudonymous
    features = {f["name"]: f for f in visitor["features"]}
    assert features["scroll_depth_max"]["value"] == pytest.approx(0.9)
    assert features["scroll_depth_max"]["scope"] == "page"
    assert features["page_views"]["value"] >= 1
    decided = {d["slot"]: d for d in visitor["decisions"]}
    assert set(decided) == {"cta", "hero"}
    assert all(d["userId"] == visitor["id"] and d["decisionId"] for d in visitor["decisions"])
    assert [d["variant"] for d in visitor["cta"]] == [decided["cta"]["variant"]]

    # the same visitor by its stored id, and a visitor nobody has seen
    again = data_of(
        gql(
            server,
            "query ($id: String!) { visitor(id: $id, stored: true) { known } "
            'nobody: visitor(id: "nobody") { known sessions features { name } } }',
            {"id": visitor["id"]},
        )
    )
    assert again["visitor"]["known"] is True
    assert again["nobody"]["known"] is False and again["nobody"]["sessions"] == 0

    # a page size or an id out of bounds is refused, naming the argument
    refused = gql(server, '{ visitor(id: "x") { decisions(limit: 100000) { slot } } }')
    assert any("'limit' must be between 1 and 200" in m for m in errors_of(refused))
    long_id = gql(server, "query ($id: String!) { visitor(id: $id) { id } }", {"id": "u" * 300})
    assert any("'id' must be 1 to 256 characters" in m for m in errors_of(long_id))


def test_the_secret_key_guards_http(server):
    query = "{ slots { name } }"
    missing = gql(server, query, headers={})
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
    wrong = gql(server, query, headers={"Authorization": "Bearer sk_wrong"})
    assert wrong.status_code == 401
    odd = gql(
        server, query, headers={"Authorization": "Bearer sk_wröng".encode()}
    )  # non-ASCII: 401
    assert odd.status_code == 401
    assert httpx.get(f"{server}/graphql?query={{slots{{name}}}}", headers=AUTH).status_code == 405
    huge = httpx.post(
        f"{server}/graphql", content=b"{" + b" " * 300_000 + b"}", headers=AUTH, timeout=WAIT_S
    )
    assert huge.status_code == 413 and "max_body_bytes" in huge.json()["error"]
    deep = b"[" * 5000 + b"]" * 5000
    as_json = {**AUTH, "Content-Type": "application/json"}
    for body, field in (
        (b"null", '"query"'),
        (b'{"query": 3}', "$.query"),
        (b'{"query": "{ slots { name } }", "variables": []}', "$.variables"),
        (b"{", "not JSON"),
        (deep, "nested too deeply"),
        (b"\xff\xfe", "not JSON"),
    ):
        bad = httpx.post(f"{server}/graphql", content=body, headers=as_json, timeout=WAIT_S)
        assert bad.status_code == 400 and field in bad.json()["error"], bad.text
    text = httpx.post(f"{server}/graphql", content=b"{ slots { name } }", headers=AUTH)
    assert text.status_code == 400 and "application/json" in text.json()["error"]
    nested = "{" + " slots {" * 400 + " name" + " }" * 400 + " }"  # graphql-core stops early
    assert any("nested too deeply" in m for m in errors_of(gql(server, nested)))
    assert data_of(gql(server, query))["slots"]


def test_too_deep_too_costly_and_too_many_aliases_are_refused_before_running(server, caplog):
    deep = '{ visitor(id: "x") ' + "{ decisions { visitor " * 5 + "{ id }" + " } }" * 5 + " }"
    messages = errors_of(gql(server, deep))
    assert any(f"exceeds maximum operation depth of {MAX_DEPTH}" in m for m in messages), messages

    costly = """query ($n: Int!) { visitor(id: "x") { decisions(limit: $n) {
                  visitor { decisions(limit: 200) { slot } } } } }"""
    messages = errors_of(gql(server, costly, {"n": 5}))
    assert any(f"exceeds the limit of {MAX_COST}" in m for m in messages), messages
    # the same shape with small literal pages is cheap enough, and runs
    cheap = (
        '{ visitor(id: "x") { decisions(limit: 5) { visitor { decisions(limit: 5) { slot } } } } }'
    )
    assert data_of(gql(server, cheap))["visitor"]["decisions"] == []

    aliased = "{ " + " ".join(f"a{i}: slots {{ name }}" for i in range(30)) + " }"
    messages = errors_of(gql(server, aliased))
    assert any("aliases" in m for m in messages), messages

    tokens = "{ slots { " + "name " * 3000 + "} }"
    messages = errors_of(gql(server, tokens))
    assert any("token" in m.lower() for m in messages), messages
    # the client's mistakes are answered, not logged as the server's errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    counted = series(server, "trimtab_graphql_operations_total")
    assert counted[(("operation", "query"), ("outcome", "refused"))] == 3
    # past the token limit the document is not parsed: its type is not known
    assert counted[(("operation", "unknown"), ("outcome", "refused"))] == 1
    assert counted[(("operation", "query"), ("outcome", "ok"))] == 1


def series(url: str, prefix: str) -> dict[Any, float]:
    """Prometheus samples of ``/metrics`` whose name starts with ``prefix``: by labels when
    the prefix is one metric's name, else by (name, labels)."""
    text = httpx.get(f"{url}/metrics", timeout=WAIT_S).text
    out: dict[Any, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(prefix) or sample.name.endswith("_created"):
                continue
            labels = tuple(sorted(sample.labels.items()))
            out[labels if sample.name == prefix else (sample.name, labels)] = sample.value
    return out


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/graphql"


async def receive(ws: Any) -> dict[str, Any]:
    """The next protocol message that is not a ping."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        if message["type"] == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            continue
        return message


async def subscribe(ws: Any, id: str, query: str, variables: Any = None) -> None:
    payload = {"query": query, "variables": variables or {}}
    await ws.send(json.dumps({"id": id, "type": "subscribe", "payload": payload}))


async def test_a_subscription_streams_the_decision_a_real_decide_makes(server):
    reader = sign_visitor_id(SECRET, "subscriber")
    async with connect(ws_url(server), subprotocols=[PROTOCOL]) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {SECRET}"}}))  # fmt: skip
        assert (await receive(ws))["type"] == "connection_ack"
        subscription = """subscription ($user: String!) {
            decisions(slot: "cta", userId: $user) {
              seq decisionId slot variant source ruleId userId propensity
              visitor { id known } } }"""
        await subscribe(ws, "1", subscription, {"user": reader})
        await asyncio.sleep(0.3)  # the subscription is running before the decision is made
        answer = await asyncio.to_thread(
            decide, server, reader, "s1", ["hero", "cta"], page_events(reader, "s1", 0.95)
        )
        sent = next(d for d in answer["decisions"] if d["slot"] == "cta")
        message = await receive(ws)
        assert message["type"] == "next" and message["id"] == "1", message
        got = message["payload"]["data"]["decisions"]
        assert got["slot"] == "cta" and got["variant"] == sent["variant"]
        assert got["decisionId"] == sent["decision_id"]
        assert got["source"] == sent["source"] and got["ruleId"] == sent["rule_id"]
        assert got["propensity"] == pytest.approx(sent["propensity"])
        assert got["visitor"]["known"] is True and got["visitor"]["id"] == got["userId"]
        # the hero decision of the same request is filtered out; another visitor's too
        other = sign_visitor_id(SECRET, "someone-else")
        await asyncio.to_thread(decide, server, other, "s2", ["cta"], page_events(other, "s2", 0.2))
        await asyncio.sleep(0.5)  # a few looks at the feed: a wrong match would be sent now
        gauges = await asyncio.to_thread(series, server, "trimtab_graphql_")
        assert gauges[("trimtab_graphql_subscriptions", ())] == 1
        assert gauges[("trimtab_graphql_sockets", ())] == 1
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"  # nothing else was queued for us
        gauges = await asyncio.to_thread(series, server, "trimtab_graphql_")
        assert gauges[("trimtab_graphql_subscriptions", ())] == 0


async def test_websocket_needs_the_key_and_bounds_operations(server):
    # no key in connection_init: closed with the protocol's 4403
    async with connect(ws_url(server), subprotocols=[PROTOCOL]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # a wrong key in the handshake header and none in the payload: the same
    wrong = {"Authorization": "Bearer sk_wrong"}
    async with connect(ws_url(server), subprotocols=[PROTOCOL], additional_headers=wrong) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    # a page on another origin cannot open it (cross-site WebSocket hijacking)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(ws_url(server), subprotocols=[PROTOCOL], origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    # subscribing before connection_init: 4401
    async with connect(ws_url(server), subprotocols=[PROTOCOL]) as ws:
        await subscribe(ws, "1", "subscription { decisions { slot } }")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # the key in the handshake header (a non-browser client); at most 5 operations per socket
    async with connect(ws_url(server), subprotocols=[PROTOCOL], additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert (await receive(ws))["type"] == "connection_ack"
        for i in range(6):
            await subscribe(ws, str(i), "subscription { decisions { slot } }")
        refused = await receive(ws)
        assert refused["type"] == "error" and refused["id"] == "5"
        assert "limit" in refused["payload"][0]["message"].lower()
        await ws.send(json.dumps({"id": "0", "type": "complete"}))
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        # arguments are bounded in a subscription too
        await subscribe(ws, "long", "subscription ($u: String!) { decisions(userId: $u) { slot } }",
                        {"u": "u" * 300})  # fmt: skip
        answer = await receive(ws)
        assert answer["id"] == "long", answer
        assert "'userId' must be 1 to 256" in json.dumps(answer["payload"]), answer
        assert answer["type"] == "next"  # an error in the stream, then it completes
        assert await receive(ws) == {"id": "long", "type": "complete"}
        # a query over the socket is limited like one over HTTP
        deep = 'query { visitor(id: "x") ' + "{ decisions { visitor " * 5 + "{ id }"
        deep += " } }" * 5 + " }"
        await subscribe(ws, "q", deep)
        answer = await receive(ws)
        assert answer["id"] == "q" and answer["type"] == "error", answer
        assert "maximum operation depth" in answer["payload"][0]["message"]


async def test_a_new_secret_key_ends_open_subscriptions(server, tmp_path):
    async with connect(ws_url(server), subprotocols=[PROTOCOL], additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert (await receive(ws))["type"] == "connection_ack"
        await subscribe(ws, "1", "subscription { decisions { slot } }")
        path = tmp_path / "site.yaml"
        data = yaml.safe_load(path.read_text())
        data["site"]["secret_key"] = "sk_rotated"
        path.write_text(yaml.safe_dump(data))  # the server notices the file and reloads it
        assert await receive(ws) == {"id": "1", "type": "complete"}
    assert gql(server, "{ slots { name } }").status_code == 401
    rotated = {"Authorization": "Bearer sk_rotated"}
    assert data_of(gql(server, "{ slots { name } }", headers=rotated))["slots"]


def test_without_the_extra_the_route_names_it(tmp_path):
    """strawberry not installed: /graphql answers 501 naming the extra; the rest serves."""
    code = f"""
import sys
sys.modules["strawberry"] = None
from starlette.testclient import TestClient
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime
runtime = Runtime(load_config({str(DEMO)!r}), {str(tmp_path / "data")!r})
with TestClient(create_app(runtime)) as client:
    r = client.post("/graphql", json={{"query": "{{ slots {{ name }} }}"}})
    print(r.status_code, r.json()["error"])
    print(client.get("/health").status_code)
runtime.close()
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    first, health = result.stdout.strip().splitlines()
    assert first.startswith("501 ") and "pip install 'trimtab[graphql]'" in first, first
    assert health == "200"


@pytest.mark.redis
def test_scaled_any_process_answers_a_visitors_features(
    tmp_path, redis_url, namespace, monkeypatch
):
    """Two `trimtab serve` processes on the shared Redis state and bus and one data directory
    (as `serve --workers 2`): the visitor's events and decision go to one; GraphQL on the
    other sees their features and the decision (from the other's decision log); only the
    process that made it streams it."""
    from served import Served
    from support import drop_namespace

    bus = f"{redis_url}?prefix={namespace}"
    monkeypatch.setenv("TRIMTAB_STATE", bus)
    monkeypatch.setenv("TRIMTAB_BUS", bus)
    config = yaml.safe_load(DEMO.read_text())
    first = Served(tmp_path, config, SECRET)
    second = None
    try:
        second = Served(tmp_path, config, SECRET)  # the same config file and data directory
        health = httpx.get(f"{second.url}/health").json()
        assert health["state"].startswith("redis://") and health["bus"].startswith("redis://")
        reader = sign_visitor_id(SECRET, "scaled-reader")
        made = decide(first.url, reader, "s1", ["cta"], page_events(reader, "s1", 0.85))
        query = """query ($id: String!) { visitor(id: $id) {
                     known features { name value } decisions { decisionId slot } } }"""
        deadline = time.monotonic() + WAIT_S
        while True:  # the first process writes its state and log within its flush interval
            visitor = data_of(gql(second.url, query, {"id": reader}))["visitor"]
            if (visitor["known"] and visitor["decisions"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        features = {f["name"]: f["value"] for f in visitor["features"]}
        assert visitor["known"] and features["scroll_depth_max"] == pytest.approx(0.85)
        assert features["consent"] == {"analytics": True, "personalization": True}
        assert visitor["decisions"] == [
            {"decisionId": made["decisions"][0]["decision_id"], "slot": "cta"}
        ]
        # the decision was made (and is streamed) by the first process, not the second
        recent = "{ recentDecisions { slot userId } }"
        assert [d["slot"] for d in data_of(gql(first.url, recent))["recentDecisions"]] == ["cta"]
        assert data_of(gql(second.url, recent))["recentDecisions"] == []
    finally:
        first.stop()
        if second is not None:
            second.stop()
        drop_namespace(bus, namespace, tmp_path)


def test_the_published_schema_is_the_one_served():
    """docs/schema.graphql (for codegen and review) is the schema /graphql serves; after a
    change: python -c "from trimtab.gql.schema import build_schema; print(build_schema())"."""
    from trimtab.gql.schema import build_schema

    published = (Path(__file__).resolve().parents[1] / "docs" / "schema.graphql").read_text()
    assert published == str(build_schema()) + "\n"


def test_a_rule_is_named_by_what_it_does():
    """A rule with neither force, variations nor a policy only gates (its prerequisites
    act): it must not be reported as a force."""
    from trimtab.config import RuleDecl
    from trimtab.gql.schema import _rule

    gate = RuleDecl(id="only-gates", parent_conditions=[])
    assert _rule(gate).kind == "gate"
    assert _rule(RuleDecl(id="f", force="bold")).kind == "force"
    assert _rule(RuleDecl(id="e", key="k", variations=["a", "b"])).kind == "experiment"
