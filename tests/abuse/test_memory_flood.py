"""A flood of new ids keeps the server's memory bounded and loses no state (issue 11, item 9).

Each id sends one consent event that denies analytics: the one kind of event always kept (the
choice is on record), so every id becomes a user state. Beyond ``max_users_in_memory`` the
states already stored are evicted; they are all still in the store afterwards.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from abuse_harness import Server, site_config, wait_for

from trimtab.events import Consent

BATCH = 250


def _rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def flood(server: Server, ids: int) -> None:
    now = time.time() * 1000.0
    for start in range(0, ids, BATCH):
        batch = [
            Consent(event_id=f"c{n}", user_id=f"flood-{n}", session_id="s", ts=now,
                    purposes={"analytics": False, "personalization": False})
            for n in range(start, min(ids, start + BATCH))
        ]  # fmt: skip
        status, _, body = server.post_events(batch, 30)  # under signed visitor ids
        assert status == 200 and body["rejected"] == [], body


def run_flood(tmp_path: Path, ids: int, bound: int) -> dict[str, float]:
    config = site_config(tmp_path, consent="required", max_users_in_memory=bound)
    data = tmp_path / "data"
    server = Server(config, data).start()
    try:
        assert server.process is not None
        flood(server, 2 * BATCH)  # warm up (imports, first allocations)
        before, _ = _rss_mb(server.process.pid)
        flood(server, ids)
        assert wait_for(lambda: server.health()["users_in_memory"] <= bound, 30)
        after, peak = _rss_mb(server.process.pid)
        health = server.health()
    finally:
        server.stop()
    conn = sqlite3.connect(data / "state.sqlite")
    stored = conn.execute("SELECT count(*) FROM user_state").fetchone()[0]
    conn.close()
    figures = {
        "ids": ids,
        "bound": bound,
        "users_in_memory": health["users_in_memory"],
        "stored": stored,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "peak_mb": peak,
    }
    print(f"\nflood of {ids:,} ids, bound {bound:,}: {figures}")
    assert stored >= ids  # evicted, never lost: every id's state is in the store
    return figures


def test_a_flood_of_ids_stays_within_the_bound_and_loses_no_state(tmp_path):
    figures = run_flood(tmp_path, ids=30_000, bound=3_000)
    assert figures["users_in_memory"] <= 3_000
    assert figures["rss_after_mb"] - figures["rss_before_mb"] < 100


@pytest.mark.slow
def test_a_300k_id_flood_stays_bounded(tmp_path):
    """The attack of the report (300,000 denied-consent ids added 447 MB), with the default
    bound of 50,000 users in memory."""
    figures = run_flood(tmp_path, ids=300_000, bound=50_000)
    assert figures["users_in_memory"] <= 50_000
    assert figures["rss_after_mb"] - figures["rss_before_mb"] < 200
