"""`trimtab bench stats`: the experiment report over a million exposures, and A/A peeking.

:func:`synthesize` writes an experiment's decisions, exposures and behaviour straight into the
embedded SQLite logs of a data dir (vectorised draws, ``executemany`` in large transactions),
with known effects: each arm has a conversion rate (a ``click:cta`` after exposure) and an
activity lift (``hover:image`` events, whose pre-exposure count is correlated with the
post-exposure one through a per-user Gamma activity, so CUPED has something to work with).
Tests use it at small sizes; the benchmark at 1,000,000 exposures.

:func:`run` then times :func:`trimtab.experiments.report.analyze` end to end and runs
:func:`trimtab.experiments.stats.aa_simulation` (2,000 A/A experiments peeked at 20 times).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trimtab.bus.sqlite import SqliteEventLog
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.experiments.metrics import DECISIONS_FILE, EVENTS_FILE

START_MS = 1.75e12
WRITE_CHUNK = 200_000

Progress = Callable[[str, int, int | None], None]

BENCH_CONFIG: dict[str, Any] = {
    "site": {"id": "bench"},
    "slots": {
        "hero": {
            "default": "top_story",
            "variants": {"top_story": {}, "for_you": {}},
            "rules": [
                {
                    "id": "hero-copy-test",
                    "key": "hero-copy-test",
                    "variations": ["top_story", "for_you"],
                    "weights": [0.5, 0.5],
                }
            ],
        }
    },
    "metrics": {
        "cta_click": {"type": "binomial", "event": "click:cta"},
        "image_hovers": {"type": "count", "event": "hover:image"},
        "dwell": {"type": "mean", "event": "hover:*", "value": "dwell_ms"},
        "hovers_per_exposure": {
            "type": "ratio",
            "numerator": "image_hovers",
            "denominator": "exposures",
        },
        "exposures": {"type": "count", "event": "exposure"},
    },
    "experiments": {
        "hero-copy-test": {
            "metrics": ["cta_click", "image_hovers", "dwell", "hovers_per_exposure"],
            "cuped": True,
        }
    },
}


@dataclass(frozen=True)
class Synthetic:
    """What :func:`synthesize` wrote."""

    users: int
    exposures: int
    events: int
    decisions: int
    both_arms: int


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


def _create_schema(data_dir: Path) -> None:
    """Let the real log classes create their tables, so the layout is the production one."""
    SqliteEventLog(data_dir / EVENTS_FILE)._conn.close()
    SqliteDecisionLog(data_dir / DECISIONS_FILE)._conn.close()


def _write(conn: sqlite3.Connection, sql: str, rows: list[tuple], tick: Callable[[int], None]):
    for i in range(0, len(rows), WRITE_CHUNK):
        part = rows[i : i + WRITE_CHUNK]
        conn.execute("BEGIN")
        conn.executemany(sql, part)
        conn.execute("COMMIT")
        tick(len(part))


def synthesize(
    data_dir: str | Path,
    *,
    users_per_arm: Sequence[int] = (4000, 4000),
    conversion: Sequence[float] = (0.08, 0.12),
    activity_lift: Sequence[float] | None = None,
    activity_mean: float = 1.0,
    both_arms: int = 0,
    span_hours: float = 48.0,
    key: str = "hero-copy-test",
    slot: str = "hero",
    variations: Sequence[str] = ("top_story", "for_you"),
    seed: int = 7,
    progress: Progress | None = None,
) -> Synthetic:
    """Write one experiment's logs into ``data_dir`` (created; existing logs are appended to).

    Arm ``a`` gets ``users_per_arm[a]`` users, converting at ``conversion[a]``; each user's
    activity ``λ ~ Gamma(2, activity_mean/2)`` drives ``Poisson(λ)`` image hovers in the hour
    before exposure and ``Poisson(λ (1 + activity_lift[a]))`` in the hour after.
    ``both_arms`` extra users are exposed to the first two arms (they must be excluded).
    """
    report = progress or (lambda step, done, total: None)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    _create_schema(data_dir)
    rng = np.random.default_rng(seed)
    k = len(users_per_arm)
    lift = list(activity_lift) if activity_lift is not None else [0.0] * k
    arm = np.repeat(np.arange(k), users_per_arm)
    n = arm.size
    t0 = START_MS + rng.uniform(0.0, span_hours * 3_600_000.0, n)
    activity = rng.gamma(2.0, activity_mean / 2.0, n)
    converted = rng.random(n) < np.asarray(conversion)[arm]
    pre_hovers = rng.poisson(activity)
    post_hovers = rng.poisson(activity * (1.0 + np.asarray(lift)[arm]))

    decisions: list[tuple] = []
    events: list[tuple] = []

    def exposure(u: str, variation: int, ts: float, tag: str) -> None:
        did = f"d{u}{tag}"
        variant = variations[variation]
        decisions.append(
            (did, ts - 50.0, u, f"s{u}", slot, variant, "experiment", key, key, variation,
             1.0 / k, "", b"{}")
        )  # fmt: skip
        body = (
            f'{{"kind":"exposure","event_id":"x{u}{tag}","user_id":"{u}","session_id":"s{u}",'
            f'"ts":{ts!r},"slot":"{slot}","variant":"{variant}","decision_id":"{did}"}}'
        )
        events.append((f"x{u}{tag}", u, f"s{u}", "exposure", ts, ts, body.encode()))

    def hover(u: str, j: int, ts: float, dwell: float) -> None:
        body = (
            f'{{"kind":"hover","event_id":"h{u}-{j}","user_id":"{u}","session_id":"s{u}",'
            f'"ts":{ts!r},"element":"img-{j % 7}","element_kind":"image","dwell_ms":{dwell!r}}}'
        )
        events.append((f"h{u}-{j}", u, f"s{u}", "hover", ts, ts, body.encode()))

    offsets = rng.uniform(1_000.0, 3_600_000.0, int(pre_hovers.sum() + post_hovers.sum()))
    dwells = np.round(rng.gamma(2.0, 400.0, offsets.size), 1)
    click_at = rng.uniform(1_000.0, 600_000.0, n)
    o = 0
    for i in range(n):
        u = f"u{i}"
        ts = float(t0[i])
        exposure(u, int(arm[i]), ts, "")
        for j in range(int(pre_hovers[i]) + int(post_hovers[i])):
            sign = -1.0 if j < pre_hovers[i] else 1.0
            hover(u, j, ts + sign * float(offsets[o]), float(dwells[o]))
            o += 1
        if converted[i]:
            at = ts + float(click_at[i])
            body = (
                f'{{"kind":"click","event_id":"c{u}","user_id":"{u}","session_id":"s{u}",'
                f'"ts":{at!r},"element":"cta-1","element_kind":"cta","category":""}}'
            )
            events.append((f"c{u}", u, f"s{u}", "click", at, at, body.encode()))
        if i % 100_000 == 99_999:
            report("generate", i + 1, n + both_arms)
    for i in range(both_arms):
        u = f"b{i}"
        ts = START_MS + float(rng.uniform(0.0, span_hours * 3_600_000.0))
        exposure(u, 0, ts, "a")
        exposure(u, 1, ts + 60_000.0, "b")
    report("generate", n + both_arms, n + both_arms)

    total = len(events) + len(decisions)
    written = 0

    def tick(rows: int) -> None:
        nonlocal written
        written += rows
        report("write", written, total)

    conn = _writer(data_dir / DECISIONS_FILE)
    try:
        _write(
            conn,
            "INSERT INTO decisions (decision_id, ts, user_id, session_id, slot, variant, source, "
            "rule_id, experiment, variation, propensity, reason, features) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            decisions,
            tick,
        )
    finally:
        conn.close()
    conn = _writer(data_dir / EVENTS_FILE)
    try:
        _write(
            conn,
            "INSERT INTO events (event_id, user_id, session_id, kind, ts, received, body) "
            "VALUES (?,?,?,?,?,?,?)",
            events,
            tick,
        )
    finally:
        conn.close()
    return Synthetic(
        users=n + both_arms,
        exposures=n + 2 * both_arms,
        events=len(events),
        decisions=len(decisions),
        both_arms=both_arms,
    )


@dataclass(frozen=True)
class StatsBenchResult:
    """The figures of `trimtab bench stats` (seconds; rows are decisions + events read)."""

    exposures: int
    events: int
    decisions: int
    generate_s: float
    report_s: float
    rows_read: int
    rows_per_s: float
    html_s: float | None
    aa: dict[str, float | int]
    aa_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(
    exposures: int = 1_000_000,
    *,
    aa_experiments: int = 2000,
    html: bool = True,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> StatsBenchResult:
    """Generate ``exposures`` users' logs, time the report on them, then run the A/A study."""
    from trimtab.config import parse_config
    from trimtab.experiments.report import analyze
    from trimtab.experiments.stats import aa_simulation

    config = parse_config(BENCH_CONFIG, "<bench>")
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-stats-") as tmp:
        where = Path(data_dir) if data_dir is not None else Path(tmp)
        half = exposures // 2
        started = time.perf_counter()
        made = synthesize(
            where,
            users_per_arm=(half, exposures - half),
            conversion=(0.10, 0.104),
            activity_lift=(0.0, 0.01),
            activity_mean=0.5,
            span_hours=24 * 14,
            progress=progress,
        )
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        report = analyze(config, "hero-copy-test", where, progress=progress)
        report_s = time.perf_counter() - started
        html_s = None
        if html:
            from trimtab.experiments.html import render_html

            started = time.perf_counter()
            render_html(report)
            html_s = time.perf_counter() - started
    started = time.perf_counter()
    aa = aa_simulation(n_experiments=aa_experiments)
    aa_s = time.perf_counter() - started
    return StatsBenchResult(
        exposures=made.exposures,
        events=made.events,
        decisions=made.decisions,
        generate_s=generate_s,
        report_s=report_s,
        rows_read=report.rows_read,
        rows_per_s=report.rows_read / report_s if report_s else float("inf"),
        html_s=html_s,
        aa=aa,
        aa_s=aa_s,
    )
