"""One Runtime over either deployment: the same health, the same erasure and compaction path,
a close() for both (embedded on SQLite; scaled on the real Redis, in this process)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from support import drop_namespace
from trimtab.config import load_config
from trimtab.runtime import Runtime
from trimtab.scaled import Scaled
from trimtab.sim.synthetic import synthetic_events

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


@pytest.fixture
def scaled_urls(redis_url, tmp_path):
    prefix = f"ttpipe{uuid.uuid4().hex[:8]}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    yield url
    drop_namespace(url, prefix, tmp_path)


@pytest.mark.redis
def test_both_deployments_report_the_same_health_and_close_without_starting(tmp_path, scaled_urls):
    config = load_config(DEMO)
    embedded = Runtime(config, tmp_path / "embedded")
    scaled = Runtime(config, tmp_path / "scaled", Scaled(scaled_urls, scaled_urls))
    assert (embedded.deployment.kind, scaled.deployment.kind) == ("embedded", "scaled")
    assert not embedded.deployment.shared and scaled.deployment.shared
    mine, theirs = embedded.health(), scaled.health()
    assert set(mine) <= set(theirs)  # the scaled one adds its bus figures
    assert mine["degraded"] == theirs["degraded"] == ""
    assert theirs["state"].startswith("redis://") and mine["state"] == "sqlite"
    for runtime in (embedded, scaled):
        runtime.close()
        runtime.close()  # twice is harmless


@pytest.mark.redis
async def test_a_scaled_erasure_is_compacted_by_the_one_flush_loop(tmp_path, scaled_urls):
    config = load_config(DEMO)
    runtime = Runtime(config, tmp_path, Scaled(scaled_urls, scaled_urls, run_processor=False))
    await runtime.start(0.05)
    events = synthetic_events(60, users=2, seed=11)
    changed = await runtime.accept(events)
    assert {user for user, _ in changed} == {"u0", "u1"}
    runtime.decide("u0", "u0-s")
    counts = await runtime.erase_async("u0")
    assert counts["state"] == 1 and counts["events"] > 0
    assert runtime.health()["erasure_compaction_pending"]
    for _ in range(200):  # the flush loop compacts about a second after the erasure
        if not runtime.health()["erasure_compaction_pending"]:
            break
        await asyncio.sleep(0.05)
    health = runtime.health()
    assert not health["erasure_compaction_pending"] and health["degraded"] == ""
    assert await runtime.accept(synthetic_events(5, users=1, seed=12)) == set()  # u0: erased
    await runtime.stop()
    runtime.close()
    assert runtime.state_of("u0") is None and runtime.state_of("u1") is not None
