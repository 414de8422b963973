"""Per-user metric values and per-arm sufficient statistics, computed with DuckDB.

The logged data live in SQLite (``events.sqlite``, ``decisions.sqlite`` in the data dir). DuckDB
cannot attach SQLite here (its extension would have to be downloaded), so :func:`load` reads the
rows with :mod:`sqlite3` in chunks, decodes the fields it needs from the event bodies with
msgspec, and inserts numpy columns into an in-memory DuckDB database. From there on everything
is SQL:

1. the experiment's **arms**: exposure events joined to the experiment's decisions on
   ``decision_id`` (exposures without one fall back to the user's decision for that slot and
   variant); a user's unit is their first exposure; a user exposed to two arms is excluded;
2. **per-user values** of each metric: matching events from the first exposure on (within
   ``window_s`` when set) and, for CUPED, the same metric before it;
3. **per-arm sums** (``n``, ``Σy``, ``Σy²``, ``Σxy``…) per period of first exposure, from
   which :func:`arm_stats` builds the statistics of :mod:`trimtab.experiments.stats`.

Event patterns are matched by :func:`trimtab.features._token_matcher` itself: it runs once per
distinct event shape (kind, element, element kind, custom name and value), not once per event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np

from trimtab.events import KINDS, AnyEvent
from trimtab.experiments.spec import ExperimentSpec, MetricSpec
from trimtab.experiments.stats import (
    CupedRatioStat,
    CupedStat,
    MeanStat,
    ProportionStat,
    RatioStat,
    Stat,
)
from trimtab.features import _token_matcher

EVENTS_FILE = "events.sqlite"
DECISIONS_FILE = "decisions.sqlite"
CHUNK_ROWS = 100_000
HOUR_MS = 3_600_000.0
DAY_MS = 24 * HOUR_MS

# (step, rows done, rows in total or None)
Progress = Callable[[str, int, int | None], None]

_EVENT_TYPES: dict[str, type] = {t.__struct_config__.tag: t for t in AnyEvent.__args__}  # type: ignore[attr-defined]
# Placeholders for required fields when building one representative event per shape.
_FILLER: dict[str, Any] = {
    "event_id": "x",
    "user_id": "x",
    "session_id": "x",
    "ts": 1.0,
    "depth": 0.0,
    "dwell_ms": 0.0,
    "visible_ms": 0.0,
    "purposes": {},
    "slot": "x",
    "variant": "x",
}


def _lean_type(numeric: Sequence[str]) -> type:
    """A struct with only the body fields the report reads (unknown fields are skipped)."""
    fields: list[Any] = [
        ("element", str, ""),
        ("element_kind", str, ""),
        ("name", str, ""),
        ("value", str | float | bool | None, None),
        ("slot", str, ""),
        ("variant", str, ""),
        ("decision_id", str, ""),
    ]
    fields += [(f, float | None, None) for f in numeric if f != "value"]
    return msgspec.defstruct("LeanEvent", fields)


@dataclass
class LoadedData:
    """The experiment's rows in DuckDB: tables ``events``, ``shapes``, ``decisions``, ``units``."""

    con: duckdb.DuckDBPyConnection
    patterns: list[str]
    numeric: list[str]
    arms: int
    rows_read: int = 0
    multi_arm_users: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def kinds_for(patterns: Iterable[str]) -> set[str]:
    """The event kinds a set of patterns can match (custom names map to ``custom``)."""
    kinds: set[str] = {"exposure"}
    for pattern in patterns:
        head = pattern.partition(":")[0]
        if head == "*":
            return set(KINDS)
        kinds.add(head if head in KINDS else "custom")
    return kinds


def _columns(rows: list[tuple], lean: type, numeric: Sequence[str]) -> dict[str, np.ndarray]:
    users, kinds, ts, bodies = zip(*rows, strict=True)
    decoded = msgspec.json.decode(b"[" + b",".join(bodies) + b"]", type=list[lean])
    obj = np.array
    cols: dict[str, np.ndarray] = {
        "user_id": obj(users, dtype=object),
        "kind": obj(kinds, dtype=object),
        "ts": np.asarray(ts, dtype=np.float64),
        "element": obj([e.element for e in decoded], dtype=object),
        "element_kind": obj([e.element_kind for e in decoded], dtype=object),
        "name": obj([e.name for e in decoded], dtype=object),
        "value_text": obj(
            [str(e.value) if k == "custom" else "" for e, k in zip(decoded, kinds, strict=True)],
            dtype=object,
        ),
        "slot": obj([e.slot for e in decoded], dtype=object),
        "variant": obj([e.variant for e in decoded], dtype=object),
        "decision_id": obj([e.decision_id for e in decoded], dtype=object),
    }
    for f in numeric:
        if f == "value":
            values = [
                e.value if type(e.value) is float else None for e in decoded
            ]  # bools and strings are not numbers
        else:
            values = [getattr(e, f) for e in decoded]
        cols[f"f_{f}"] = np.array(values, dtype=np.float64)  # None becomes NaN
    return cols


def _insert(con: duckdb.DuckDBPyConnection, table: str, cols: dict[str, np.ndarray]) -> None:
    con.register("chunk", cols)
    select = ", ".join(
        f"CASE WHEN isnan({c}) THEN NULL ELSE {c} END AS {c}" if c.startswith("f_") else c
        for c in cols
    )
    con.execute(f"INSERT INTO {table} SELECT {select} FROM chunk")
    con.unregister("chunk")


def _open_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is the data dir right?)")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def load(
    data_dir: str | Path,
    experiment: ExperimentSpec,
    patterns: Sequence[str],
    numeric: Sequence[str],
    arms: int,
    progress: Progress | None = None,
) -> LoadedData:
    """Read what ``experiment`` needs from ``data_dir`` into DuckDB and find its units.

    ``arms`` is the number of variations; a holdout, when declared, becomes arm ``arms``.
    """
    data_dir = Path(data_dir)
    report = progress or (lambda step, done, total: None)
    con = duckdb.connect()
    numeric = list(dict.fromkeys(numeric))
    patterns = list(dict.fromkeys(patterns))
    num_cols = "".join(f", f_{f} DOUBLE" for f in numeric)
    con.execute(
        "CREATE TABLE events (user_id VARCHAR, kind VARCHAR, ts DOUBLE, element VARCHAR, "
        "element_kind VARCHAR, name VARCHAR, value_text VARCHAR, slot VARCHAR, variant VARCHAR, "
        f"decision_id VARCHAR{num_cols})"
    )
    con.execute(
        "CREATE TABLE decisions (decision_id VARCHAR, user_id VARCHAR, slot VARCHAR, "
        "variant VARCHAR, arm INTEGER)"
    )
    data = LoadedData(con=con, patterns=patterns, numeric=numeric, arms=arms)

    holdout = experiment.holdout or ""
    marks = ",".join("?" * len(experiment.slots))
    where = f"slot IN ({marks}) AND (experiment = ? OR experiment = ? OR rule_id = ?)"
    args = [*experiment.slots, experiment.key, holdout, holdout]
    # one decision log per process: the embedded one and, scaled out, decisions-<host>-<pid>
    files = sorted(data_dir.glob("decisions*.sqlite")) or [data_dir / DECISIONS_FILE]
    sources = [_open_readonly(path) for path in files]
    done = 0
    try:
        total = sum(
            src.execute(f"SELECT count(*) FROM decisions WHERE {where}", args).fetchone()[0]
            for src in sources
        )
        for src in sources:
            cur = src.execute(
                "SELECT decision_id, user_id, slot, variant, "
                f"CASE WHEN experiment = ? THEN variation ELSE {arms} END "
                f"FROM decisions WHERE {where}",
                [experiment.key, *args],
            )
            while rows := cur.fetchmany(CHUNK_ROWS):
                ids, users, slots, variants, arm = zip(*rows, strict=True)
                obj = np.array
                _insert(
                    con,
                    "decisions",
                    {
                        "decision_id": obj(ids, dtype=object),
                        "user_id": obj(users, dtype=object),
                        "slot": obj(slots, dtype=object),
                        "variant": obj(variants, dtype=object),
                        "arm": np.asarray(arm, dtype=np.int32),
                    },
                )
                done += len(rows)
                report("decisions", done, total)
        data.counts["decisions"] = done
    finally:
        for src in sources:
            src.close()

    src = _open_readonly(data_dir / EVENTS_FILE)
    try:
        kinds = sorted(kinds_for(patterns))
        marks = ",".join("?" * len(kinds))
        total = src.execute(f"SELECT count(*) FROM events WHERE kind IN ({marks})", kinds)
        total_rows = total.fetchone()[0]
        cur = src.execute(
            f"SELECT user_id, kind, ts, body FROM events WHERE kind IN ({marks})", kinds
        )
        lean = _lean_type(numeric)
        done = 0
        while rows := cur.fetchmany(CHUNK_ROWS):
            _insert(con, "events", _columns(rows, lean, numeric))
            done += len(rows)
            report("events", done, total_rows)
        data.counts["events"] = done
    finally:
        src.close()
    data.rows_read = data.counts["decisions"] + data.counts["events"]
    _match_shapes(con, patterns)
    _find_units(data)
    return data


def _match_shapes(con: duckdb.DuckDBPyConnection, patterns: Sequence[str]) -> None:
    """Table ``shapes``: one row per distinct event shape with a flag per pattern."""
    keys = ("kind", "element", "element_kind", "name", "value_text")
    shapes = con.execute(f"SELECT DISTINCT {', '.join(keys)} FROM events").fetchall()
    matchers = [_token_matcher(p) for p in patterns]
    cols: dict[str, list[Any]] = {k: [] for k in keys}
    flags: list[list[bool]] = [[] for _ in patterns]
    for shape in shapes:
        for k, v in zip(keys, shape, strict=True):
            cols[k].append(v)
        kind, element, element_kind, name, value_text = shape
        cls = _EVENT_TYPES.get(kind)
        event = None
        if cls is not None:
            given = {
                **_FILLER,
                "element": element,
                "element_kind": element_kind,
                "name": name,
                "value": value_text,
            }
            event = cls(**{k: v for k, v in given.items() if k in cls.__struct_fields__})
        for j, match in enumerate(matchers):
            flags[j].append(event is not None and bool(match(event)))
    arrays: dict[str, np.ndarray] = {k: np.array(v, dtype=object) for k, v in cols.items()}
    for j, f in enumerate(flags):
        arrays[f"p{j}"] = np.array(f, dtype=bool)
    con.register("shape_rows", arrays)
    con.execute("CREATE TABLE shapes AS SELECT * FROM shape_rows")
    con.unregister("shape_rows")
    con.execute(f"CREATE VIEW ev AS SELECT * FROM events JOIN shapes USING ({', '.join(keys)})")


def _find_units(data: LoadedData) -> None:
    """Table ``units`` (user_id, arm, t0): each user's only arm and first exposure time."""
    con = data.con
    con.execute(
        """
        CREATE TABLE exposed AS
        SELECT x.user_id, x.ts, d.arm
        FROM events x JOIN decisions d ON x.decision_id = d.decision_id
        WHERE x.kind = 'exposure' AND x.decision_id <> ''
        UNION ALL
        SELECT x.user_id, x.ts, d.arm
        FROM events x
        JOIN (SELECT user_id, slot, variant, min(arm) AS arm FROM decisions
              GROUP BY user_id, slot, variant) d
          ON x.user_id = d.user_id AND x.slot = d.slot AND x.variant = d.variant
        WHERE x.kind = 'exposure' AND x.decision_id = ''
        """
    )
    con.execute(
        """
        CREATE TABLE per_user AS
        SELECT user_id, count(DISTINCT arm) AS arms, min(arm) AS arm, min(ts) AS t0
        FROM exposed GROUP BY user_id
        """
    )
    data.multi_arm_users = con.execute("SELECT count(*) FROM per_user WHERE arms > 1").fetchone()[0]
    con.execute("CREATE TABLE units AS SELECT user_id, arm, t0 FROM per_user WHERE arms = 1")


# -- per-user values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One per-user column of a metric: an aggregate of matching events in a window."""

    agg: str  # any | count | sum | max | nvalues
    flags: tuple[int, ...]  # pattern indexes, OR-ed
    field: str = ""
    window_ms: float | None = None


def metric_parts(
    name: str, metrics: dict[str, MetricSpec], patterns: list[str]
) -> tuple[str, list[Part]]:
    """The shape of a metric's statistic (``proportion``, ``mean`` or ``ratio``) and its parts.

    ``patterns`` collects every pattern used (their index is the flag column ``p{i}``).
    """
    m = metrics[name]
    if m.type == "ratio":
        window = None if m.window_s is None else m.window_s * 1000.0
        num = _single_part(metrics[m.numerator], patterns, window)
        den = _single_part(metrics[m.denominator], patterns, window)
        return "ratio", [num, den]
    if m.type == "mean" and m.aggregate == "mean":
        base = _single_part(msgspec.structs.replace(m, aggregate="sum"), patterns, None)
        return "ratio", [base, Part("nvalues", base.flags, m.value, base.window_ms)]
    part = _single_part(m, patterns, None)
    return ("proportion" if m.type == "binomial" else "mean"), [part]


def _single_part(m: MetricSpec, patterns: list[str], window_ms: float | None) -> Part:
    flags = []
    for p in m.patterns:
        if p not in patterns:
            patterns.append(p)
        flags.append(patterns.index(p))
    if window_ms is None and m.window_s is not None:
        window_ms = m.window_s * 1000.0
    agg = {"binomial": "any", "count": "count", "mean": m.aggregate}[m.type]
    return Part(agg, tuple(flags), m.value if m.type == "mean" else "", window_ms)


def _part_sql(part: Part, post: bool) -> str:
    match = " OR ".join(f"e.p{i}" for i in part.flags)
    if post:
        when = "e.ts >= u.t0"
        if part.window_ms is not None:
            when += f" AND e.ts <= u.t0 + {part.window_ms!r}"
    else:
        when = "e.ts < u.t0"
        if part.window_ms is not None:
            when += f" AND e.ts >= u.t0 - {part.window_ms!r}"
    cond = f"({match}) AND {when}"
    value = f"e.f_{part.field}"
    if part.agg == "any":
        return f"CAST(count(*) FILTER (WHERE {cond}) > 0 AS DOUBLE)"
    if part.agg == "count":
        return f"CAST(count(*) FILTER (WHERE {cond}) AS DOUBLE)"
    if part.agg == "nvalues":
        return f"CAST(count({value}) FILTER (WHERE {cond}) AS DOUBLE)"
    return f"coalesce({part.agg}({value}) FILTER (WHERE {cond}), 0.0)"


def arm_sums(
    data: LoadedData,
    metric_shapes: dict[str, tuple[str, list[Part]]],
    *,
    cuped: bool,
    period_ms: float,
    origin_ms: float,
) -> dict[str, dict[tuple[int, int], dict[str, float]]]:
    """Per metric, per (arm, period of first exposure): ``n`` and sums of columns and products.

    Column ``y{k}`` is part ``k`` after exposure and ``x{k}`` before (CUPED only); products are
    named ``a*b``.
    """
    con = data.con
    select: list[str] = []
    per_metric: dict[str, list[str]] = {}
    for i, (name, (_, parts)) in enumerate(metric_shapes.items()):
        cols: list[str] = []
        for k, part in enumerate(parts):
            select.append(f"{_part_sql(part, True)} AS m{i}_y{k}")
            cols.append(f"m{i}_y{k}")
        if cuped:
            for k, part in enumerate(parts):
                select.append(f"{_part_sql(part, False)} AS m{i}_x{k}")
                cols.append(f"m{i}_x{k}")
        per_metric[name] = cols
    con.execute("DROP TABLE IF EXISTS uv")
    con.execute(
        f"""
        CREATE TABLE uv AS
        SELECT u.user_id, u.arm,
               CAST(floor((u.t0 - {origin_ms!r}) / {period_ms!r}) AS INTEGER) AS period,
               {", ".join(select)}
        FROM units u LEFT JOIN ev e ON e.user_id = u.user_id
        GROUP BY u.user_id, u.arm, u.t0
        """
    )
    aggs = ["count(*) AS n"]
    names: list[tuple[str, str, str]] = [("", "n", "n")]
    for metric, cols in per_metric.items():
        for a_i, a in enumerate(cols):
            aggs.append(f"sum({a})")
            names.append((metric, a, a))
            for b in cols[a_i:]:
                aggs.append(f"sum({a} * {b})")
                names.append((metric, f"{a}*{b}", ""))
    rows = con.execute(
        f"SELECT arm, period, {', '.join(aggs)} FROM uv GROUP BY arm, period ORDER BY arm, period"
    ).fetchall()
    out: dict[str, dict[tuple[int, int], dict[str, float]]] = {m: {} for m in per_metric}
    for row in rows:
        cell = (int(row[0]), int(row[1]))
        n = float(row[2])
        for (metric, key, _), value in zip(names[1:], row[3:], strict=True):
            prefix = key.split("_", 1)[0] + "_"
            target = out[metric].setdefault(cell, {"n": n})
            target[key.replace(prefix, "")] = float(value or 0.0)
    return out


def build_stat(kind: str, sums: dict[str, float], cuped: bool) -> Stat:
    """A statistic from :func:`arm_sums` cells (``y0``, ``y0*y0``, ``x0``… keys)."""
    n = int(sums["n"])

    def s(key: str) -> float:
        return sums.get(key, 0.0)

    def moment(col: str, proportion: bool = False) -> MeanStat | ProportionStat:
        if proportion:
            return ProportionStat(n=n, sum=s(col))
        return MeanStat(n=n, sum=s(col), sum_squares=s(f"{col}*{col}"))

    if kind in ("proportion", "mean"):
        prop = kind == "proportion"
        post = moment("y0", prop)
        if not cuped:
            return post
        return CupedStat(n=n, post=post, pre=moment("x0", prop), sum_products=s("y0*x0"))
    if not cuped:
        return RatioStat(
            n=n, numerator=moment("y0"), denominator=moment("y1"), sum_products=s("y0*y1")
        )
    return CupedRatioStat(
        n=n,
        m_post=moment("y0"),
        d_post=moment("y1"),
        m_pre=moment("x0"),
        d_pre=moment("x1"),
        m_post_m_pre=s("y0*x0"),
        d_post_d_pre=s("y1*x1"),
        m_pre_d_pre=s("x0*x1"),
        m_post_d_post=s("y0*y1"),
        m_post_d_pre=s("y0*x1"),
        m_pre_d_post=s("y1*x0"),
    )


def empty_sums() -> dict[str, float]:
    return {"n": 0.0}
