"""OpenFeature: the OFREP server driven by the `openfeature-provider-ofrep` provider through the
real `openfeature-sdk` client against a running trimtab, and the native provider
(`trimtab.openfeature.TrimtabProvider`) through the same client in-process."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from served import Served
from trimtab.config import parse_config
from trimtab.flags import FlagError, FlagSet, attributes_of
from trimtab.openfeature import TrimtabProvider

KEY, SECRET = "pk_of", "sk_of"
CONFIG: dict[str, Any] = {
    "site": {"public_key": KEY, "rate_limit_per_s": 100000, "rate_burst": 100000},
    "features": {"scroll": {"kind": "scroll_depth_max"}},
    "slots": {
        "dark": {
            "default": "off",
            "variants": {"off": {"value": False}, "on": {"value": True}},
            "rules": [
                {"id": "pro-dark", "condition": {"plan": "pro"}, "force": "on"},
                {"id": "dark-rollout", "force": "on", "coverage": 0.25},
            ],
        },
        "hero": {
            "default": "plain",
            "variants": {"plain": {}, "bold": {}},
            "rules": [{"id": "always-bold-fr", "condition": {"country": "FR"}, "force": "bold"}],
        },
        "banner": {"default": "spring", "variants": {"spring": {}}, "rules": [{"force": "spring"}]},
        "seats": {
            "default": "one",
            "variants": {"one": {"value": 1}, "three": {"value": 3}},
            "rules": [{"id": "seats-test", "key": "seats-test", "variations": ["one", "three"]}],
        },
        "price": {
            "default": "low",
            "variants": {"low": {"value": 9.5}, "high": {"value": 12.5}},
            "rules": [{"id": "us-high", "condition": {"country": "US"}, "force": "high"}],
        },
        "layout": {
            "default": "grid",
            "variants": {"grid": {"value": {"cols": 3}}, "list": {"value": ["a", "b"]}},
            "rules": [{"id": "mobile-list", "condition": {"device": "mobile"}, "force": "list"}],
        },
        "deep": {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [{"condition": {"scroll": {"$gt": 0.5}}, "force": "b"}],
        },
        "rail": {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [{"id": "rail-bandit", "policy": {"type": "epsilon_greedy"}}],
        },
    },
}
TYPED = {
    "dark": "boolean",
    "hero": "string",
    "banner": "string",
    "seats": "integer",
    "price": "float",
    "layout": "object",
}
DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "string": "?",
    "integer": -1,
    "float": -1.0,
    "object": {},
}


def people(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [
        {
            "targetingKey": f"reader-{i}",
            "plan": rnd.choice(["pro", "free"]),
            "country": rnd.choice(["FR", "US", "DE"]),
            "device": rnd.choice(["mobile", "desktop"]),
        }
        for i in range(n)
    ]


def _context(person: dict[str, Any]) -> EvaluationContext:
    attrs = {k: v for k, v in person.items() if k != "targetingKey"}
    return EvaluationContext(person["targetingKey"], attrs)


def _details(client: Any, flag: str, kind: str, context: EvaluationContext | None) -> Any:
    return getattr(client, f"get_{kind}_details")(flag, DEFAULTS[kind], context)


def _check_against_engine(client: Any, crowd: list[dict[str, Any]]) -> set[str]:
    """Every typed flag for every person equals trimtab's engine; the reasons seen."""
    flags = FlagSet(parse_config(CONFIG))
    reasons = set()
    for person in crowd:
        context = _context(person)
        for flag, kind in TYPED.items():
            want = flags.evaluate(flag, attributes_of(person))
            got = _details(client, flag, kind, context)
            assert got.error_code is None, (flag, got.error_message)
            assert (got.value, got.variant, got.reason) == (want.value, want.variant, want.reason)
            assert got.flag_metadata["source"] == want.metadata["source"]
            reasons.add(str(got.reason))
    return reasons


@pytest.fixture
def native() -> Iterator[Any]:
    api.set_provider(TrimtabProvider(parse_config(CONFIG)), domain="native")
    yield api.get_client(domain="native")
    api.clear_providers()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("ofrep"), CONFIG, SECRET)
    yield server
    server.stop()


@pytest.fixture
def ofrep(served) -> Iterator[Any]:
    from openfeature.contrib.provider.ofrep import OFREPProvider

    provider = OFREPProvider(served.url, headers_factory=lambda: {"Authorization": f"Bearer {KEY}"})
    api.set_provider(provider, domain="ofrep")
    yield api.get_client(domain="ofrep")
    api.clear_providers()


# -- the native provider ----------------------------------------------------------------------


def test_native_provider_all_five_types_match_the_engine(native):
    reasons = _check_against_engine(native, people(1000))
    assert reasons == {"STATIC", "TARGETING_MATCH", "SPLIT", "DEFAULT"}


def test_native_provider_context_becomes_attributes(native):
    pro = native.get_boolean_details("dark", False, EvaluationContext("u1", {"plan": "pro"}))
    assert (pro.value, pro.variant, pro.reason) == (True, "on", "TARGETING_MATCH")
    assert pro.flag_metadata["ruleId"] == "pro-dark"
    layout = native.get_object_details("layout", {}, EvaluationContext("u1", {"device": "mobile"}))
    assert layout.value == ["a", "b"] and layout.variant == "list"
    price = native.get_float_details("price", 0.0, EvaluationContext("u1", {"country": "US"}))
    assert price.value == 12.5 and price.variant == "high"
    seats = native.get_integer_details("seats", 0, EvaluationContext("reader-7"))
    assert seats.value in (1, 3) and seats.reason == "SPLIT"
    assert seats.flag_metadata["experiment"] == "seats-test"


def test_native_provider_type_mismatch(native):
    context = EvaluationContext("u1")
    for flag, kind in [("hero", "boolean"), ("dark", "string"), ("price", "integer")]:
        got = _details(native, flag, kind, context)
        assert got.error_code == ErrorCode.TYPE_MISMATCH, (flag, kind)
        assert got.value == DEFAULTS[kind] and got.reason == "ERROR"
    # an integer is a number: a float flag may hold one
    assert native.get_float_value("seats", 0.0, EvaluationContext("u1")) in (1.0, 3.0)


def test_native_provider_errors(native):
    missing = native.get_string_details("nope", "fallback", EvaluationContext("u1"))
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND and missing.value == "fallback"
    rail = native.get_string_details("rail", "fallback", EvaluationContext("u1"))
    assert rail.error_code == ErrorCode.GENERAL and "learning policy" in rail.error_message
    deep = native.get_string_details("deep", "fallback", EvaluationContext("u1"))
    assert deep.error_code == ErrorCode.GENERAL and "scroll" in deep.error_message
    nokey = native.get_integer_details("seats", -1, EvaluationContext(None, {"plan": "pro"}))
    assert nokey.error_code == ErrorCode.TARGETING_KEY_MISSING and nokey.value == -1
    # a flag without hashing needs no targeting key
    assert native.get_string_value("hero", "?", EvaluationContext(None, {"country": "FR"})) == (
        "bold"
    )


def test_native_provider_follows_the_live_config():
    current = {"config": parse_config(CONFIG)}
    api.set_provider(TrimtabProvider(lambda: current["config"]), domain="live")
    client = api.get_client(domain="live")
    try:
        assert client.get_string_value("banner", "?", EvaluationContext("u1")) == "spring"
        changed = json.loads(json.dumps(CONFIG))
        changed["slots"]["banner"]["variants"]["autumn"] = {}
        changed["slots"]["banner"]["rules"] = [{"force": "autumn"}]
        current["config"] = parse_config(changed)
        assert client.get_string_value("banner", "?", EvaluationContext("u1")) == "autumn"
    finally:
        api.clear_providers()


def test_context_must_be_an_object():
    with pytest.raises(FlagError) as bad:
        attributes_of([1, 2])
    assert bad.value.code == "INVALID_CONTEXT"
    assert attributes_of({"targetingKey": 7, "a": 1}) == {"a": 1, "id": "7"}


# -- OFREP against a running trimtab ----------------------------------------------------------


def test_ofrep_provider_matches_the_engine(ofrep):
    reasons = _check_against_engine(ofrep, people(150, seed=8))
    assert {"TARGETING_MATCH", "SPLIT", "DEFAULT"} <= reasons


def test_ofrep_provider_errors(ofrep):
    context = EvaluationContext("u1")
    mismatch = ofrep.get_boolean_details("hero", False, context)
    assert mismatch.error_code == ErrorCode.TYPE_MISMATCH and mismatch.value is False
    missing = ofrep.get_string_details("nope", "fallback", context)
    assert missing.error_code == ErrorCode.FLAG_NOT_FOUND and missing.value == "fallback"
    rail = ofrep.get_string_details("rail", "fallback", context)
    assert rail.error_code == ErrorCode.GENERAL and "learning policy" in rail.error_message
    nokey = ofrep.get_integer_details("seats", -1, EvaluationContext(None, {"plan": "pro"}))
    assert nokey.error_code == ErrorCode.TARGETING_KEY_MISSING


def test_ofrep_wrong_key_is_unauthorized(served):
    from openfeature.contrib.provider.ofrep import OFREPProvider

    api.set_provider(
        OFREPProvider(served.url, headers_factory=lambda: {"X-API-Key": "pk_wrong"}), domain="bad"
    )
    try:
        got = api.get_client(domain="bad").get_boolean_details(
            "dark", False, EvaluationContext("u")
        )
        assert got.error_code == ErrorCode.GENERAL and got.error_message == "unauthorized"
    finally:
        api.clear_providers()


def test_ofrep_single_flag_wire_format(served):
    url = f"{served.url}/ofrep/v1/evaluate/flags"
    auth = {"X-API-Key": KEY}
    ok = httpx.post(
        f"{url}/price", json={"context": {"targetingKey": "u", "country": "US"}}, headers=auth
    )
    assert ok.status_code == 200
    assert ok.json() == {
        "key": "price",
        "value": 12.5,
        "variant": "high",
        "reason": "TARGETING_MATCH",
        "metadata": {"source": "force", "propensity": 1.0, "ruleId": "us-high"},
    }
    notjson = httpx.post(f"{url}/price", content=b"{oops", headers=auth)
    assert notjson.status_code == 400
    assert notjson.json()["errorCode"] == "PARSE_ERROR" and notjson.json()["key"] == "price"
    badctx = httpx.post(f"{url}/price", json={"context": [1]}, headers=auth)
    assert badctx.status_code == 400 and badctx.json()["errorCode"] == "INVALID_CONTEXT"
    nokey = httpx.post(f"{url}/price", json={"context": {}})
    assert nokey.status_code == 401
    missing = httpx.post(f"{url}/nope", json={}, headers=auth)
    assert missing.status_code == 404 and missing.json()["errorCode"] == "FLAG_NOT_FOUND"


def test_ofrep_bulk_etag_and_errors(served):
    url = f"{served.url}/ofrep/v1/evaluate/flags"
    auth = {"Authorization": f"Bearer {KEY}"}
    context = {"context": {"targetingKey": "reader-3", "country": "FR", "device": "mobile"}}
    first = httpx.post(url, json=context, headers=auth)
    assert first.status_code == 200
    flags = {f["key"]: f for f in first.json()["flags"]}
    assert set(flags) == set(CONFIG["slots"])
    assert flags["hero"]["value"] == "bold" and flags["layout"]["value"] == ["a", "b"]
    assert flags["rail"]["errorCode"] == "GENERAL" and "policy" in flags["rail"]["errorDetails"]
    assert flags["deep"]["errorCode"] == "GENERAL"
    etag = first.headers["etag"]
    again = httpx.post(url, json=context, headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    other = httpx.post(
        url, json={"context": {"targetingKey": "reader-3", "country": "US"}}, headers=auth
    )
    assert other.status_code == 200 and other.headers["etag"] != etag
    broken = httpx.post(url, content=b"[", headers=auth)
    assert broken.status_code == 400 and broken.json()["errorCode"] == "PARSE_ERROR"


def test_ofrep_rate_limit_429_with_retry_after(tmp_path):
    from openfeature.contrib.provider.ofrep import OFREPProvider

    limited = json.loads(json.dumps(CONFIG))
    limited["site"].update({"rate_limit_per_s": 0.2, "rate_burst": 2})
    server = Served(tmp_path, limited, SECRET)
    try:
        url = f"{server.url}/ofrep/v1/evaluate/flags/hero"
        statuses = []
        for _ in range(4):
            r = httpx.post(url, json={"context": {"targetingKey": "u"}}, headers={"X-API-Key": KEY})
            statuses.append(r.status_code)
        assert statuses[:2] == [200, 200] and statuses[-1] == 429
        assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
        # the provider pauses until Retry-After and says why
        provider = OFREPProvider(server.url, headers_factory=lambda: {"X-API-Key": KEY})
        api.set_provider(provider, domain="limited")
        got = api.get_client(domain="limited").get_string_details(
            "hero", "?", EvaluationContext("u")
        )
        assert got.error_code == ErrorCode.GENERAL and "Rate limited" in got.error_message
        assert provider.retry_after is not None
    finally:
        api.clear_providers()
        server.stop()
