"""GrowthBook-compatible endpoints, driven by unmodified GrowthBook SDKs against a running trimtab.

The PyPI ``growthbook`` package runs in this process; the npm ``@growthbook/growthbook`` JS SDK
runs under the machine's Node.js (installed into ``tests/js/node_modules`` by the ``node_sdk``
fixture on first use). Both must make the assignments trimtab's own engine makes, and a config
change (admin reload) must reach a subscribed SDK while it runs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from served import Served
from trimtab.config import parse_config
from trimtab.decide import Engine
from trimtab.gbapi import build_snapshot, etag_matches, remote_eval
from trimtab.gbpayload import export_payload, variant_value

JS_DIR = Path(__file__).parent / "js"
SECRET = "sk_gbapi"
KEY = "pk_gbapi"
WAIT_S = 30.0  # upper bound for "eventually"; never a performance assertion

CONFIG: dict[str, Any] = {
    "site": {
        "public_key": KEY,
        "secret_key": "env:TRIMTAB_SECRET_KEY",
        "holdout": 0.05,
        "rate_limit_per_s": 100000,
        "rate_burst": 100000,
    },
    "features": {"scroll": {"kind": "scroll_depth_max"}},
    "slots": {
        "hero": {
            "default": "plain",
            "variants": {"plain": {}, "bold": {}, "urgent": {"value": "Last chance"}},
            "rules": [
                {
                    "id": "eu-mobile",
                    "condition": {"device": "mobile", "country": {"$in": ["FR", "DE"]}},
                    "force": "bold",
                },
                {
                    "id": "pro-rollout",
                    "condition": {"plan": "pro"},
                    "force": "urgent",
                    "coverage": 0.3,
                },
                {
                    "id": "hero-test",
                    "key": "hero-test",
                    "variations": ["plain", "bold", "urgent"],
                    "weights": [0.2, 0.3, 0.5],
                    "coverage": 0.8,
                    "hashVersion": 2,
                },
            ],
        },
        "checkout": {
            "default": "off",
            "variants": {"off": {"value": False}, "on": {"value": True}},
            "rules": [
                {"id": "band", "force": "on", "range": [0.1, 0.4], "seed": "s1"},
                {
                    "id": "ns-test",
                    "key": "ns-test",
                    "variations": ["off", "on"],
                    "namespace": ["checkout", 0, 0.5],
                },
            ],
        },
        "price": {
            "default": "p10",
            "variants": {"p10": {"value": 10}, "p12": {"value": 12.5}},
            "rules": [
                {
                    "id": "price-test",
                    "key": "price-test",
                    "variations": ["p10", "p12"],
                    "hashAttribute": "company",
                    "sticky": True,
                    "bucketVersion": 1,
                },
            ],
        },
        "deep": {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [{"id": "deep-readers", "condition": {"scroll": {"$gt": 0.5}}, "force": "b"}],
        },
        "rail": {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [{"id": "rail-bandit", "policy": {"type": "epsilon_greedy"}}],
        },
    },
}
SHARED = ["hero", "checkout", "price"]


def users(n: int, seed: int = 5) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        attrs: dict[str, Any] = {
            "id": f"user-{i}",
            "device": rnd.choice(["mobile", "desktop", "tablet"]),
            "country": rnd.choice(["FR", "DE", "US", "JP"]),
            "plan": rnd.choice(["pro", "free"]),
        }
        if rnd.random() < 0.8:
            attrs["company"] = f"co-{rnd.randrange(300)}"
        out.append(attrs)
    return out


def engine_values(config_data: dict[str, Any], people: list[dict[str, Any]]) -> list[dict]:
    """What trimtab's own engine shows each user, as GrowthBook feature values."""
    config = parse_config(config_data)
    engine = Engine(config)
    return [
        {
            d.slot: variant_value(config.slots[d.slot], d.variant)
            for d in engine.decide_attrs(dict(a), SHARED)
        }
        for a in people
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("gbapi"), CONFIG, SECRET)
    yield server
    server.stop()


@pytest.fixture
def own_served(tmp_path) -> Iterator[Served]:
    server = Served(tmp_path, CONFIG, SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """The GrowthBook JS SDK installed under tests/js (npm install on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the GrowthBook JS SDK tests")
        pytest.skip("node/npm not installed")
    if not (JS_DIR / "node_modules" / "@growthbook" / "growthbook" / "package.json").exists():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=600,
        )
    return JS_DIR / "gb_sdk.mjs"


@pytest.fixture
def growthbook_sdk() -> Iterator[Any]:
    """The PyPI SDK with its process-wide feature cache emptied before and after."""
    from growthbook import feature_repo

    feature_repo.clear_cache()
    yield feature_repo
    feature_repo.clear_cache()


def run_node(script: Path, *args: str, people: Any, tmp_path: Path) -> dict[str, Any]:
    data = tmp_path / "input.json"
    data.write_text(json.dumps(people))
    out = subprocess.run(
        ["node", str(script), *args, str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the payload ------------------------------------------------------------------------------


def test_payload_names_the_slots_growthbook_cannot_express():
    payload = export_payload(parse_config(CONFIG))
    assert sorted(payload["features"]) == sorted(SHARED)
    excluded = payload["trimtab"]["excluded"]
    assert set(excluded) == {"deep", "rail"}
    assert "scroll" in excluded["deep"] and "live attributes" in excluded["deep"]
    assert "epsilon_greedy" in excluded["rail"] and "policy" in excluded["rail"]


def test_growthbook_python_sdk_on_the_payload_matches_the_engine_in_process():
    from growthbook import GrowthBook

    people = users(3000, seed=9)
    features = export_payload(parse_config(CONFIG))["features"]
    want = engine_values(CONFIG, people)
    got = []
    for attrs in people:
        gb = GrowthBook(features=features, attributes=attrs)
        got.append({key: gb.get_feature_value(key, None) for key in SHARED})
    assert got == want
    # the rules were exercised: every variant of every slot appears
    for slot in SHARED:
        assert len({json.dumps(v[slot]) for v in want}) == len(CONFIG["slots"][slot]["variants"])


def test_a_rule_hashing_on_a_live_attribute_is_left_out():
    data = json.loads(json.dumps(CONFIG))
    data["slots"]["hero"]["rules"][2]["hashAttribute"] = "scroll"
    assert "scroll" in export_payload(parse_config(data))["trimtab"]["excluded"]["hero"]


def test_browsers_may_read_the_payload_and_its_headers(tmp_path):
    from starlette.testclient import TestClient

    from trimtab.collector import create_app
    from trimtab.runtime import Runtime

    data = json.loads(json.dumps(CONFIG))
    data["site"]["origins"] = ["https://shop.example"]
    runtime = Runtime(parse_config(data), tmp_path / "data")
    try:
        with TestClient(create_app(runtime)) as client:
            url = f"/api/features/{KEY}"
            ok = client.get(url, headers={"Origin": "https://shop.example"})
            assert ok.headers["access-control-allow-origin"] == "https://shop.example"
            exposed = ok.headers["access-control-expose-headers"].lower()
            assert "x-sse-support" in exposed and "etag" in exposed
            other = client.get(url, headers={"Origin": "https://evil.example"})
            assert other.status_code == 403 and "allow-list" in other.json()["error"]
            preflight = client.options(
                f"/api/eval/{KEY}",
                headers={
                    "Origin": "https://shop.example",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert preflight.status_code == 204
            assert "POST" in preflight.headers["access-control-allow-methods"]
    finally:
        runtime.close()


def test_etag_matching():
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc", "x"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')
    assert not etag_matches(None, '"abc"')
    assert etag_matches('"abc"', 'W/"abc"')


def test_etag_is_the_features_not_the_date():
    config = parse_config(CONFIG)
    early, late = build_snapshot(config, now=1.0e9), build_snapshot(config, now=2.0e9)
    assert early.body != late.body and early.etag == late.etag
    changed = parse_config({**CONFIG, "site": {**CONFIG["site"], "holdout": 0.1}})
    assert build_snapshot(changed).etag != early.etag


def test_remote_eval_carries_tracking_for_experiment_decisions():
    snap = build_snapshot(parse_config(CONFIG))
    tracked = 0
    for attrs in users(200):
        answer = remote_eval(snap, attrs)
        assert set(answer["features"]) == set(SHARED)
        for feature in answer["features"].values():
            for rule in feature.get("rules", []):
                (track,) = rule["tracks"]
                assert track["result"]["value"] == rule["force"] == feature["defaultValue"]
                assert (
                    track["experiment"]["variations"][track["result"]["variationId"]]
                    == (rule["force"])
                )
                tracked += 1
    assert tracked > 100


def test_remote_eval_honours_forced_variations_and_the_url():
    config = parse_config(
        {
            "slots": {
                "t": {
                    "default": "a",
                    "variants": {"a": {}, "b": {"value": 2}, "c": {}},
                    "rules": [{"key": "exp", "variations": ["a", "b", "c"]}],
                }
            }
        }
    )
    snap = build_snapshot(config)
    slot = config.slots["t"]
    for attrs in users(40, seed=5):
        hashed = remote_eval(snap, attrs)["features"]["t"]
        assert len(hashed["rules"][0]["tracks"]) == 1  # a hashed assignment is tracked
        for index, variant in enumerate(["a", "b", "c"]):
            for answer in (
                remote_eval(snap, attrs, forced={"exp": index}),
                remote_eval(snap, attrs, url=f"https://x.test/p?exp={index}"),
            ):
                assert answer["features"]["t"] == {"defaultValue": variant_value(slot, variant)}
        # an index naming no variation enrols nobody: the default shows
        assert remote_eval(snap, attrs, forced={"exp": 7})["features"]["t"] == {"defaultValue": "a"}


# -- against a running trimtab ----------------------------------------------------------------


def test_features_endpoint_etag_304_and_refusals(served):
    url = f"{served.url}/api/features/{KEY}"
    first = httpx.get(url)
    assert first.status_code == 200
    assert first.headers["x-sse-support"] == "enabled"
    etag = first.headers["etag"]
    body = first.json()
    assert sorted(body["features"]) == sorted(SHARED)
    assert set(body["trimtab"]["excluded"]) == {"deep", "rail"}
    again = httpx.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    stale = httpx.get(url, headers={"If-None-Match": '"not-this-one"'})
    assert stale.status_code == 200 and stale.headers["etag"] == etag
    wrong = httpx.get(f"{served.url}/api/features/pk_wrong")
    assert wrong.status_code == 401 and "site key" in wrong.json()["error"]
    bad = httpx.post(f"{served.url}/api/eval/{KEY}", json={"attributes": [1, 2]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("attributes:")
    notjson = httpx.post(f"{served.url}/api/eval/{KEY}", content=b"{nope")
    assert notjson.status_code == 400 and notjson.json()["error"].startswith("body:")


def test_python_sdk_against_trimtab_assigns_like_the_engine(served, growthbook_sdk):
    from growthbook import GrowthBook

    people = users(1500)
    want = engine_values(CONFIG, people)
    gb = GrowthBook(api_host=served.url, client_key=KEY)
    gb.load_features()
    assert sorted(gb.get_features()) == sorted(SHARED)
    got = []
    for attrs in people:
        gb.set_attributes(attrs)
        got.append({key: gb.get_feature_value(key, None) for key in SHARED})
    assert got == want


def test_python_sdk_remote_eval_against_trimtab(served, growthbook_sdk):
    from growthbook import GrowthBook

    people = users(150, seed=21)
    want = engine_values(CONFIG, people)
    for attrs, expected in zip(people, want, strict=True):
        gb = GrowthBook(api_host=served.url, client_key=KEY, remote_eval=True, attributes=attrs)
        assert {key: gb.get_feature_value(key, None) for key in SHARED} == expected
        gb.destroy()


def _changed(config: dict[str, Any]) -> dict[str, Any]:
    """The config with a new first rule on `hero`: everyone sees `urgent`."""
    new = json.loads(json.dumps(config))
    new["slots"]["hero"]["rules"].insert(0, {"id": "everyone", "force": "urgent"})
    new["site"]["holdout"] = 0.0
    return new


def test_python_sdk_streaming_sees_a_reload(own_served, growthbook_sdk):
    from growthbook import GrowthBook

    attrs = users(1)[0]
    gb = GrowthBook(api_host=own_served.url, client_key=KEY, attributes=attrs, streaming=True)
    try:
        before = gb.get_feature_value("hero", None)
        assert before == engine_values(CONFIG, [attrs])[0]["hero"]
        assert before != "Last chance"
        time.sleep(0.5)  # let the stream connect: a change before it would be fetched, not pushed
        own_served.reload(_changed(CONFIG))
        deadline = time.monotonic() + WAIT_S
        while gb.get_feature_value("hero", None) != "Last chance":
            assert time.monotonic() < deadline, "the reload never reached the SDK"
            time.sleep(0.05)
    finally:
        gb.stop_auto_refresh(timeout=5)
        gb.destroy()


def test_js_sdk_against_trimtab_assigns_like_the_engine(served, node_sdk, tmp_path):
    people = users(1500)
    out = run_node(node_sdk, "assign", served.url, KEY, people=people, tmp_path=tmp_path)
    assert out["values"] == engine_values(CONFIG, people)


def test_js_sdk_remote_eval_against_trimtab(served, node_sdk, tmp_path):
    people = users(150, seed=33)
    out = run_node(node_sdk, "remote", served.url, KEY, people=people, tmp_path=tmp_path)
    assert out["values"] == engine_values(CONFIG, people)
    # each experiment decision reached the SDK's tracking callback, with its variant
    config = parse_config(CONFIG)
    engine = Engine(config)
    for attrs, seen in zip(people, out["tracked"], strict=True):
        experiments = [
            [d.experiment, d.variant]
            for d in engine.decide_attrs(dict(attrs), SHARED)
            if d.source == "experiment"
        ]
        assert sorted(seen) == sorted(experiments)


def test_js_sdk_streaming_sees_a_reload(own_served, node_sdk, tmp_path):
    attrs = users(1)[0]
    data = tmp_path / "user.json"
    data.write_text(json.dumps(attrs))
    proc = subprocess.Popen(
        ["node", str(node_sdk), "stream", own_served.url, KEY, str(data), "hero"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first == engine_values(CONFIG, [attrs])[0]["hero"] != "Last chance"
        time.sleep(0.5)  # the stream opens after the first fetch
        own_served.reload(_changed(CONFIG))
        assert json.loads(proc.stdout.readline()) == "Last chance"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
