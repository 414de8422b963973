"""The SQLite logs' layout: tables created in one place, and older logs brought up to date."""

from __future__ import annotations

import sqlite3

from trimtab.logschema import (
    DECISION_COLUMNS,
    EVENT_COLUMNS,
    create_decisions_table,
    create_events_table,
)


def test_an_event_log_without_the_user_event_key_is_rebuilt_with_its_rows():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
        "user_id TEXT NOT NULL, session_id TEXT NOT NULL, kind TEXT NOT NULL, ts REAL NOT NULL, "
        "received REAL NOT NULL, body BLOB NOT NULL, UNIQUE (event_id))"
    )
    conn.execute("INSERT INTO events VALUES (1, 'e1', 'u1', 's', 'click', 1, 2, x'7b7d')")
    create_events_table(conn)
    assert conn.execute("SELECT * FROM events").fetchall() == [
        (1, "e1", "u1", "s", "click", 1.0, 2.0, b"{}")
    ]
    # another user may now reuse the event id; the same user may not
    conn.execute("INSERT OR IGNORE INTO events VALUES (2, 'e1', 'u2', 's', 'click', 1, 2, '')")
    conn.execute("INSERT OR IGNORE INTO events VALUES (3, 'e1', 'u1', 's', 'click', 1, 2, '')")
    assert [r[0] for r in conn.execute("SELECT seq FROM events")] == [1, 2]
    assert [c[1] for c in conn.execute("PRAGMA table_info(events)")] == list(EVENT_COLUMNS)


def test_a_decision_log_without_model_versions_gains_the_column():
    conn = sqlite3.connect(":memory:")
    columns = ", ".join(f"{c} TEXT" for c in DECISION_COLUMNS if c != "models")
    conn.execute(f"CREATE TABLE decisions ({columns})")
    create_decisions_table(conn)
    assert [c[1] for c in conn.execute("PRAGMA table_info(decisions)")] == list(DECISION_COLUMNS)
