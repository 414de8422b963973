"""The embedded pipeline: durable log, persisted features, crash recovery, logged decisions."""

from __future__ import annotations

import contextlib
from pathlib import Path

from trimtab.config import load_config
from trimtab.features import FeatureProcessor
from trimtab.runtime import Runtime
from trimtab.sim.synthetic import synthetic_events

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


def test_restart_keeps_features(tmp_path):
    config = load_config(DEMO)
    events = synthetic_events(3000, users=40, seed=2)
    rt = Runtime(config, tmp_path)
    rt.ingest(events)
    before = {u: rt.features_of(u, f"{u}-s") for u in ("u1", "u2", "u3")}
    rt.close()
    again = Runtime(config, tmp_path)
    assert again.replayed == 0  # everything was flushed on close
    for user, features in before.items():
        now = again.features_of(user, f"{user}-s")
        features.pop("local_hour"), now.pop("local_hour")
        assert now == features
    again.close()


def test_crash_before_flush_is_recovered_from_the_log_without_double_counting(tmp_path):
    config = load_config(DEMO)
    events = synthetic_events(4000, users=30, seed=3)
    reference = FeatureProcessor(config.feature_specs())
    reference.apply(events)

    rt = Runtime(config, tmp_path)
    rt.ingest(events[:1500])
    rt.flush()  # states for the first 1500 are durable
    rt.ingest(events[1500:])
    # simulate a crash: nothing after the flush is persisted except the event log itself
    rt.deployment.event_log.close_sync()
    rt.deployment.state_store.close_sync()

    recovered = Runtime(config, tmp_path)
    assert recovered.replayed == 2500
    for user in {e.user_id for e in events}:
        got = recovered.features_of(user, f"{user}-s")
        want = reference.features_of(user, f"{user}-s")
        got.pop("local_hour"), want.pop("local_hour")
        assert got == want, user
    # the log holds every event exactly once, even though a retry re-sent some
    recovered.ingest(events[:100])
    assert recovered.deployment.event_log.count() == len(events)
    recovered.close()


def test_every_decision_is_logged_with_its_features(tmp_path):
    rt = Runtime(load_config(DEMO), tmp_path)
    events = synthetic_events(50, users=1, seed=4)
    rt.ingest(events)
    decisions = rt.decide("u0", "u0-s", ["hero", "cta"])
    rt.flush()
    records = rt.decision_log.read("u0")
    assert {r.decision_id for r in records} == {d.decision_id for d in decisions}
    for record in records:
        assert record.features["id"] == "u0"
        assert "scroll_depth_max" in record.features
        assert 0 < record.propensity <= 1
    rt.close()


def test_erase_removes_the_user_from_every_store(tmp_path):
    rt = Runtime(load_config(DEMO), tmp_path)
    rt.ingest(synthetic_events(200, users=2, seed=5))
    rt.decide("u0", "u0-s")
    rt.flush()
    counts = rt.erase("u0")
    assert counts["state"] == 1 and counts["events"] > 0 and counts["decisions"] > 0
    assert rt.state_of("u0") is None
    assert rt.decision_log.read("u0") == []
    assert all(e.user_id != "u0" for e in rt.deployment.event_log.iter_all())
    assert rt.state_of("u1") is not None
    rt.close()


def test_reload_keeps_state_and_applies_new_rules(tmp_path):
    source = DEMO.read_text()
    path = tmp_path / "site.yaml"
    path.write_text(source)
    rt = Runtime(load_config(path), tmp_path / "data")
    rt.ingest(synthetic_events(300, users=1, seed=6))
    before = rt.features_of("u0", "u0-s")
    path.write_text(source.replace("default: newsletter", "default: subscribe_offer"))
    rt.reload()
    assert rt.config.slots["cta"].default == "subscribe_offer"
    after = rt.features_of("u0", "u0-s")
    before.pop("local_hour"), after.pop("local_hour")
    assert after == before
    rt.close()


async def test_a_flush_cut_short_by_shutdown_still_stores_every_state(tmp_path):
    """Stopping cancels the flush loop; a write it had handed to the thread pool must still
    land (or be written again), never be dropped while the log position moves past it."""
    import asyncio
    import time as clock

    config = load_config(DEMO)
    rt = Runtime(config, tmp_path)
    events = synthetic_events(600, users=50, seed=7)
    rt.ingest(events)
    # Keep every worker of the default thread pool busy, so the flush's write waits queued.
    busy = [asyncio.to_thread(clock.sleep, 0.5) for _ in range(64)]
    sleepers = asyncio.gather(*busy)
    await asyncio.sleep(0.05)
    flush = asyncio.create_task(rt.flush_async())
    await asyncio.sleep(0.05)
    flush.cancel()  # what stop() does to the flush loop
    with contextlib.suppress(asyncio.CancelledError):
        await flush
    await sleepers
    await rt.stop()  # the final flush
    stored = rt.deployment.state_store.get_many_sync({e.user_id for e in events})
    assert set(stored) == {e.user_id for e in events}
    assert rt.deployment.event_log.cursor("features") == rt.deployment.event_log.max_seq()
    rt.close()


async def test_a_reader_of_the_decision_log_sees_decisions_a_running_flush_holds(tmp_path):
    """The flush takes the buffered rows on the loop and writes them in a thread; a reader
    asking meanwhile (the admin decisions route) must wait for them, not read without them."""
    import asyncio
    import threading

    config = load_config(DEMO)
    rt = Runtime(config, tmp_path)
    rt.ingest(synthetic_events(200, users=5, seed=1))
    rt.decide("u0", "u0-s", ["hero", "cta"])
    log = rt.decision_log
    release = threading.Event()
    write = log.write_rows

    def held_write(rows):
        release.wait(5)  # a slow disk: the rows are taken but not yet in the table
        return write(rows)

    log.write_rows = held_write  # type: ignore[method-assign]  # slow the flush's write only
    flush = asyncio.create_task(rt.flush_async())
    await asyncio.sleep(0.05)
    log.write_rows = write  # type: ignore[method-assign]  # the reader's own write is quick
    reader = asyncio.create_task(rt.decisions_written())
    await asyncio.sleep(0.1)
    assert not reader.done()  # waits for the flush under way
    release.set()
    await flush
    await reader
    assert {r.slot for r in log.read("u0")} == {"hero", "cta"}
    rt.close()
