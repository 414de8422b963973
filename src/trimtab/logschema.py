"""The SQLite logs' layout, in one place: file names, tables, columns and their migrations.

A data directory holds one event log (``events.sqlite``, table ``events``) and one decision
log per writing process (``decisions.sqlite`` embedded, ``decisions-<host>-<pid>.sqlite`` when
scaled out, table ``decisions``). The writers (:mod:`trimtab.bus.sqlite`,
:mod:`trimtab.decisionlog`) create the tables through this module; the readers (reports,
off-policy evaluation, training sets) open the files and select rows through it.

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:")
>>> create_events_table(conn); create_decisions_table(conn)
>>> [c[1] for c in conn.execute("PRAGMA table_info(events)")] == list(EVENT_COLUMNS)
True
>>> list(event_rows(conn, ["click"]))
[]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

EVENTS_FILE = "events.sqlite"
DECISIONS_FILE = "decisions.sqlite"
DECISIONS_GLOB = "decisions*.sqlite"

EVENT_COLUMNS = ("seq", "event_id", "user_id", "session_id", "kind", "ts", "received", "body")
DECISION_COLUMNS = (
    "decision_id",
    "ts",
    "user_id",
    "session_id",
    "slot",
    "variant",
    "source",
    "rule_id",
    "experiment",
    "variation",
    "propensity",
    "reason",
    "features",
    "models",
)

# An event is logged once per (user, event id): a retried batch adds nothing, and one user
# reusing another's event id cannot keep their own event out of the log.
_EVENTS_TABLE = """
CREATE TABLE {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (user_id, event_id)
);
"""

_DECISIONS_TABLE = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    slot TEXT NOT NULL,
    variant TEXT NOT NULL,
    source TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    variation INTEGER NOT NULL,
    propensity REAL NOT NULL,
    reason TEXT NOT NULL,
    features BLOB NOT NULL,
    models TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions (user_id);
CREATE INDEX IF NOT EXISTS decisions_experiment ON decisions (experiment);
"""

INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (event_id, user_id, session_id, kind, ts, received, body) "
    "VALUES (?,?,?,?,?,?,?)"
)
INSERT_DECISION = (
    f"INSERT OR IGNORE INTO decisions VALUES ({','.join('?' * len(DECISION_COLUMNS))})"
)


def create_events_table(conn: sqlite3.Connection) -> None:
    """Create (or bring up to date) the event log's tables: ``events`` and the consumer
    groups' read ``cursors``."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()
    if row is not None and "UNIQUE (user_id, event_id)" not in row[0]:
        # Logs written before events were keyed by (user, event id): rebuild the table once.
        conn.executescript(
            "BEGIN IMMEDIATE;"
            "ALTER TABLE events RENAME TO events_old;"
            "DROP INDEX IF EXISTS events_user;"
            + _EVENTS_TABLE.format(name="events")
            + "INSERT INTO events SELECT * FROM events_old;"
            "DROP TABLE events_old;"
            "COMMIT;"
        )
    conn.executescript(
        _EVENTS_TABLE.format(name="IF NOT EXISTS events")
        + "CREATE INDEX IF NOT EXISTS events_user ON events (user_id);"
        "CREATE TABLE IF NOT EXISTS cursors (grp TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
    )


def create_decisions_table(conn: sqlite3.Connection) -> None:
    """Create (or bring up to date) a decision log's table."""
    conn.executescript(_DECISIONS_TABLE)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
    if "models" not in columns:  # a log written before decisions recorded model versions
        conn.execute("ALTER TABLE decisions ADD COLUMN models TEXT NOT NULL DEFAULT ''")


def events_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / EVENTS_FILE


def decision_log_paths(data_dir: str | Path) -> list[Path]:
    """Every decision log in a data directory (one per process that wrote decisions)."""
    return sorted(Path(data_dir).glob(DECISIONS_GLOB))


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to a log; a clear error when the file is not there."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is the data dir right?)")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def event_rows(conn: sqlite3.Connection, kinds: Iterable[str]) -> sqlite3.Cursor:
    """``(seq, user_id, kind, received, ts, body)`` of the events of ``kinds``, in log order."""
    kinds = list(kinds)
    marks = ",".join("?" * len(kinds))
    return conn.execute(
        f"SELECT seq, user_id, kind, received, ts, body FROM events WHERE kind IN ({marks}) "
        "ORDER BY seq",
        kinds,
    )


def count_events(conn: sqlite3.Connection, kinds: Iterable[str]) -> int:
    """How many events of ``kinds`` the log holds."""
    kinds = list(kinds)
    marks = ",".join("?" * len(kinds))
    return int(
        conn.execute(f"SELECT count(*) FROM events WHERE kind IN ({marks})", kinds).fetchone()[0]
    )
