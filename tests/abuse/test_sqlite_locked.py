"""Another process holds a write lock on an embedded data file (issue 11, item 3).

A real second process takes SQLite's write lock (``BEGIN IMMEDIATE``) and holds it until the
test lets go. The server must keep answering (the lock may slow flushes, never the event
loop), say ``degraded`` while flushes fail, keep the failed flush's user states and decision
rows, never move the log position past states it did not store, and refuse (503 with
Retry-After) events it cannot log, instead of acknowledging and losing them.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from abuse_harness import Server, events_for, pseudonym, site_config, wait_for

# Holds SQLite's write lock on argv[1] until a line arrives on stdin.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA busy_timeout=10000")
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""
# The server's writer waits 5 s for a lock; a request stuck behind it would take that long.
# Answers must come well before (the loop never waits for the writer).
ANSWER_S = 2.5


class Locker:
    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self.process.wait(10)


def _visible_ms(features: dict) -> float:
    return sum((features.get("visible_ms_by_category") or {}).values())


def test_a_locked_state_file_slows_flushes_not_the_server_and_loses_nothing(tmp_path):
    config = site_config(tmp_path)
    data = tmp_path / "data"
    server = Server(config, data).start()
    users = [f"locked-{i}" for i in range(20)]
    sent: dict[str, list] = {u: [] for u in users}
    decided: set[str] = set()
    locker = None
    try:
        for user in users:
            batch = events_for(user, 10)
            assert server.post_events(batch)[0] == 200
            sent[user] += batch
        assert wait_for(lambda: server.health()["decisions_pending"] == 0, 10)

        locker = Locker(data / "state.sqlite")
        for user in users:  # every answer comes while the lock is held
            batch = events_for(user, 10)
            status, _, body = server.post_events(batch, timeout=ANSWER_S)
            assert status == 200 and body["accepted"] == 10
            sent[user] += batch
            decided |= {d["decision_id"] for d in server.decide(user)}
        assert wait_for(
            lambda: "state flush failing" in str(server.health(timeout=ANSWER_S)["degraded"]), 30
        ), server.health()
        health = server.health(timeout=ANSWER_S)
        assert health["status"] == "degraded"
        for user in users:  # still serving, from memory
            assert _visible_ms(server.features(user)) == 100.0 * 10
        locker.release()
        locker = None
        assert wait_for(lambda: server.health()["status"] == "ok", 30), server.health()
        assert server.health()["decisions_pending"] == 0

        server.kill()  # kill -9: only what was stored counts now
        server.start()
        for user in users:
            features = server.features(user)
            assert _visible_ms(features) == 100.0 * 10, (user, features)  # all 20 events
    finally:
        if locker is not None:
            locker.release()
        server.kill()

    conn = sqlite3.connect(data / "decisions.sqlite")
    stored = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
    conn.close()
    assert decided and decided <= stored  # decisions made during the lock were written
    conn = sqlite3.connect(data / "events.sqlite")
    logged = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    conn.close()
    assert {e.event_id for batch in sent.values() for e in batch} <= logged
    assert pseudonym(users[0]) != users[0]


def test_a_locked_event_log_is_a_503_with_retry_after_not_a_lost_event(tmp_path):
    config = site_config(tmp_path)
    data = tmp_path / "data"
    server = Server(config, data).start()
    try:
        first = events_for("logger", 5)
        assert server.post_events(first)[0] == 200
        locker = Locker(data / "events.sqlite")
        refused = events_for("logger", 5)
        try:
            status, headers, body = server.post_events(refused, timeout=ANSWER_S)
            assert status == 503, body
            assert int(headers["retry-after"]) > 0
            assert "not stored" in body["error"]
            health = server.health(timeout=ANSWER_S)
            assert health["status"] == "degraded"
            assert any("event log not writable" in r for r in health["degraded"])
        finally:
            locker.release()
        assert server.post_events(refused)[0] == 200  # the tracker sends it again
        assert wait_for(lambda: server.health()["status"] == "ok", 10)
        features = server.features("logger")
        assert features["scroll_depth_max"] > 0
    finally:
        server.kill()
    conn = sqlite3.connect(data / "events.sqlite")
    logged = [r[0] for r in conn.execute("SELECT event_id FROM events")]
    conn.close()
    assert sorted(logged) == sorted(e.event_id for e in first + refused)  # each once
