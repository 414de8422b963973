"""Observability conventions: Prometheus names in base units, `_total` counters, no per-user
labels; OpenTelemetry `feature_flag.evaluation` spans with the semantic-convention attributes,
read back through the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from trimtab.collector import create_app
from trimtab.config import load_config, parse_config
from trimtab.flags import FlagError, FlagSet
from trimtab.runtime import Runtime

KEY = "pk_metrics"
CONFIG = {
    "site": {"public_key": KEY, "secret_key": "sk_metrics", "consent": "implied", "id": "shop"},
    "features": {"depth": {"kind": "scroll_depth_max"}},
    "slots": {
        "hero": {
            "default": "plain",
            "variants": {"plain": {}, "bold": {}},
            "rules": [
                {"id": "fr-bold", "condition": {"country": "FR"}, "force": "bold"},
                {"id": "hero-test", "key": "hero-test", "variations": ["plain", "bold"]},
            ],
        },
        "deep": {
            "default": "a",
            "variants": {"a": {}, "b": {}},
            "rules": [{"id": "deep", "condition": {"depth": {"$gt": 0.5}}, "force": "b"}],
        },
    },
}
# labels that would make one series per visitor, session, page or request
PER_USER = {"user", "user_id", "id", "session", "session_id", "page_view_id", "decision_id"}
PER_USER |= {"ip", "client", "targeting_key", "url", "page"}
TIME_OR_SIZE = re.compile(
    r"_(ms|us|ns|millis|milliseconds|micros|minutes|hours|kb|mb|kib|mib)(_|$)"
)


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    runtime = Runtime(load_config(path), tmp_path / "data")
    with TestClient(create_app(runtime, flush_interval_s=0.05)) as c:
        yield c
    runtime.close()


def _traffic(client: TestClient, users: range) -> None:
    for i in users:
        user = f"visitor-{i}"
        batch = [
            {
                "kind": "scroll",
                "event_id": f"e{i}",
                "user_id": user,
                "session_id": f"s{i}",
                "ts": time.time() * 1000,
                "depth": 0.5,
            }
        ]
        client.post(f"/v1/events?key={KEY}", content=json.dumps(batch))
        client.post(
            f"/v1/decide?key={KEY}",
            content=json.dumps({"user_id": user, "session_id": f"s{i}", "slots": ["hero"]}),
        )
        context = {"context": {"targetingKey": user, "country": "FR" if i % 2 else "US"}}
        client.post("/ofrep/v1/evaluate/flags/hero", json=context, headers={"X-API-Key": KEY})
        client.post("/ofrep/v1/evaluate/flags", json=context, headers={"X-API-Key": KEY})
        client.post(f"/api/eval/{KEY}", json={"attributes": {"id": user}})
    client.post("/v1/events?key=pk_wrong", content=b"[]")
    client.post(f"/v1/events?key={KEY}", content=b"x" * 300_000)


def _series(client: TestClient) -> set[tuple[str, tuple]]:
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metric_names_follow_the_conventions(client):
    _traffic(client, range(5))
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    names = {f.name for f in families}
    assert {"trimtab_events", "trimtab_requests_rejected", "trimtab_flag_evaluations"} <= names
    for family in families:
        assert family.name.startswith("trimtab_"), family.name
        assert not TIME_OR_SIZE.search(family.name), f"{family.name}: not in base units"
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_bytes")), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            assert not set(sample.labels) & PER_USER, (sample.name, sample.labels)
    text = client.get("/metrics").text
    assert 'trimtab_requests_rejected_total{code="401"} 1.0' in text
    assert 'trimtab_requests_rejected_total{code="413"} 1.0' in text
    assert 'trimtab_flag_evaluations_total{interface="ofrep",reason="error"}' in text
    assert re.search(
        r'trimtab_flag_evaluations_total\{interface="growthbook",reason="split"\} 5', text
    )


def test_series_do_not_grow_with_visitors(client):
    _traffic(client, range(0, 10))
    before = _series(client)
    _traffic(client, range(10, 40))
    after = _series(client)
    assert after == before  # 30 more visitors: values change, never the set of series


# -- OpenTelemetry ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another tracer provider was set first"
    yield exporter
    exporter.clear()
    provider.shutdown()  # later tests record nothing more


def test_flag_evaluation_spans_carry_the_semantic_conventions(spans):
    spans.clear()
    flags = FlagSet(parse_config(CONFIG))
    flags.evaluate("hero", {"id": "u1", "country": "FR"})
    flags.evaluate("hero", {"id": "u2", "country": "US"})
    with pytest.raises(FlagError):
        flags.evaluate("nope", {"id": "u1"})
    with pytest.raises(FlagError):
        flags.evaluate("hero", {"country": "US"})
    done = spans.get_finished_spans()
    assert [s.name for s in done] == ["feature_flag.evaluation"] * 4
    fr, us, missing, nokey = (dict(s.attributes) for s in done)
    assert fr == {
        "feature_flag.key": "hero",
        "feature_flag.provider.name": "trimtab",
        "feature_flag.set.id": "shop",
        "feature_flag.version": flags.version,
        "feature_flag.result.variant": "bold",
        "feature_flag.result.reason": "targeting_match",
    }
    assert us["feature_flag.result.reason"] == "split"
    assert us["feature_flag.result.variant"] in ("plain", "bold")
    assert missing["error.type"] == "flag_not_found"
    assert missing["feature_flag.result.reason"] == "error"
    assert "nope" in missing["feature_flag.error.message"]
    assert nokey["error.type"] == "targeting_key_missing"
    assert done[2].status.is_ok is False
    for attributes in (fr, us, missing, nokey):
        assert "feature_flag.context.id" not in attributes  # visitor ids stay out


def test_spans_from_the_served_routes(spans, client):
    spans.clear()
    context = {"context": {"targetingKey": "v", "country": "FR"}}
    client.post("/ofrep/v1/evaluate/flags/hero", json=context, headers={"X-API-Key": KEY})
    client.post(f"/api/eval/{KEY}", json={"attributes": {"id": "v", "country": "FR"}})
    keys = [dict(s.attributes)["feature_flag.key"] for s in spans.get_finished_spans()]
    assert keys == ["hero", "hero"]
