"""Per-user metric values and per-arm sufficient statistics, computed with DuckDB.

The logged data live in SQLite (``events.sqlite``, ``decisions.sqlite`` in the data dir). DuckDB
cannot attach SQLite here (its extension would have to be downloaded), so :func:`load` reads the
rows with :mod:`sqlite3` in chunks, decodes the fields it needs from the event bodies with
msgspec, and inserts numpy columns into an in-memory DuckDB database. From there on everything
is SQL:

1. the experiment's **arms**: exposure events of its slots joined to the decision log on
   ``decision_id`` (exposures without one fall back to the user's decision for that slot and
   variant); a user's unit is their first exposure; a user exposed to two arms is excluded.
   On the way every exposure is accounted for (:class:`Integrity`): orphans (their decision
   is in no log), decisions of other rules, degraded and pre-consent decisions;
2. **per-user values** of each metric, credited by :func:`trimtab.attribution.attribute` —
   the function the live bandit learner and ``trimtab ope`` use — with the user's first
   exposure as the round: matching events from it on (within ``window_s`` when set, on the
   server's receive time) and, for CUPED, the same window before it;
3. **per-arm sums** (``n``, ``Σy``, ``Σy²``, ``Σxy``…) per period of first exposure, from
   which :func:`build_stat` builds the statistics of :mod:`trimtab.experiments.stats`.

Event patterns are matched by :func:`trimtab.patterns.matcher`: it runs once per
distinct event shape (kind, element, element kind, custom name and value), not once per event.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

if TYPE_CHECKING:
    import duckdb

from trimtab import logschema
from trimtab import patterns as patterns_module
from trimtab.attribution import Events, Reward, Rounds, attribute, locate
from trimtab.events import BY_KIND, Event
from trimtab.experiments.spec import ExperimentSpec, MetricSpec
from trimtab.experiments.stats import (
    CupedRatioStat,
    CupedStat,
    MeanStat,
    ProportionStat,
    RatioStat,
    Stat,
)
from trimtab.extras import require
from trimtab.logschema import DECISIONS_FILE, EVENTS_FILE

CHUNK_ROWS = 100_000
HOUR_MS = 3_600_000.0
DAY_MS = 24 * HOUR_MS

# (step, rows done, rows in total or None)
Progress = Callable[[str, int, int | None], None]

_EVENT_TYPES: dict[str, type[Event]] = dict(BY_KIND)
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


class _LeanEvent(msgspec.Struct):
    """The body fields every report reads; :func:`_lean_list` adds the numeric ones it needs."""

    element: str = ""
    element_kind: str = ""
    name: str = ""
    value: str | float | bool | None = None
    slot: str = ""
    variant: str = ""
    decision_id: str = ""


def _lean_list(numeric: Sequence[str]) -> types.GenericAlias:
    """``list[LeanEvent]``: a struct with only the body fields the report reads (unknown fields
    are skipped), built at run time for the metrics' numeric fields, so no static type names it.
    """
    fields = [(f, float | None, None) for f in numeric if f != "value"]
    lean = msgspec.defstruct("LeanEvent", fields, bases=(_LeanEvent,))
    return types.GenericAlias(list, (lean,))


# Sources a decision log uses for decisions made without live personalisation.
DEGRADED_SOURCES = ("degraded",)
PRE_CONSENT_SOURCES = ("no_consent",)
MAX_LISTED_ORPHANS = 50


class Integrity(msgspec.Struct, frozen=True):
    """Where every exposure of the experiment's slots went, and why some users are left out.

    ``orphan_exposures`` point at a decision found in no decision log (must be 0: the ids
    are listed, up to :data:`MAX_LISTED_ORPHANS`); ``unmatched_exposures`` carry no decision
    id and match none of the user's decisions. ``outside`` counts exposures of decisions
    other rules made on these slots, by ``rule (source)``; ``degraded_*`` and
    ``pre_consent_*`` count decisions made without live features or before consent, and
    their exposures — none of them counts in an arm. ``multi_arm`` counts users exposed to
    more than one arm by cause.
    """

    exposures: int = 0
    in_experiment: int = 0
    orphan_exposures: int = 0
    orphan_ids: list[str] = []
    unmatched_exposures: int = 0
    outside: dict[str, int] = {}
    degraded_decisions: int = 0
    degraded_exposures: int = 0
    pre_consent_decisions: int = 0
    pre_consent_exposures: int = 0
    multi_arm: dict[str, int] = {}


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
    integrity: Integrity = field(default_factory=Integrity)


def kinds_for(patterns: Iterable[str]) -> set[str]:
    """The event kinds a set of patterns can match, and exposures (which define units)."""
    return {"exposure", *patterns_module.kinds_for(patterns)}


def _columns(
    rows: list[tuple[Any, ...]], lean_list: types.GenericAlias, numeric: Sequence[str]
) -> dict[str, np.ndarray]:
    seqs, users, kinds, received, ts, bodies = zip(*rows, strict=True)
    decoded: list[_LeanEvent] = msgspec.json.decode(b"[" + b",".join(bodies) + b"]", type=lean_list)
    obj = np.array
    received_ms = np.asarray(received, dtype=np.float64)
    cols: dict[str, np.ndarray] = {
        "seq": np.asarray(seqs, dtype=np.int64),
        "user_id": obj(users, dtype=object),
        "kind": obj(kinds, dtype=object),
        # attribution.receive_time, column-wise: the server's clock, the browser's only for
        # events no server received
        "t": np.where(received_ms > 0.0, received_ms, np.asarray(ts, dtype=np.float64)),
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
        column = np.array(values, dtype=np.float64)  # None becomes NaN
        column[~np.isfinite(column)] = np.nan  # nothing non-finite reaches a statistic
        cols[f"f_{f}"] = column
    return cols


def _insert(con: duckdb.DuckDBPyConnection, table: str, cols: dict[str, np.ndarray]) -> None:
    con.register("chunk", cols)
    select = ", ".join(
        f"CASE WHEN isnan({c}) THEN NULL ELSE {c} END AS {c}" if c.startswith("f_") else c
        for c in cols
    )
    con.execute(f"INSERT INTO {table} SELECT {select} FROM chunk")
    con.unregister("chunk")


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
    con = require("duckdb", "reports", "experiment reports").connect()
    numeric = list(dict.fromkeys(numeric))
    patterns = list(dict.fromkeys(patterns))
    num_cols = "".join(f", f_{f} DOUBLE" for f in numeric)
    con.execute(
        "CREATE TABLE events (seq BIGINT, user_id VARCHAR, kind VARCHAR, t DOUBLE, "
        "element VARCHAR, element_kind VARCHAR, name VARCHAR, value_text VARCHAR, slot VARCHAR, "
        f"variant VARCHAR, decision_id VARCHAR{num_cols})"
    )
    con.execute(
        "CREATE TABLE decisions (decision_id VARCHAR, user_id VARCHAR, slot VARCHAR, "
        "variant VARCHAR, arm INTEGER, source VARCHAR, rule_id VARCHAR)"
    )
    data = LoadedData(con=con, patterns=patterns, numeric=numeric, arms=arms)

    # Every decision of the experiment's slots: the experiment's own become arms (the holdout,
    # when declared, arm ``arms``); the others (-1) let exposures of them be accounted for.
    marks = ",".join("?" * len(experiment.slots))
    where = f"slot IN ({marks})"
    arm_of = "CASE WHEN experiment = ? THEN variation"
    args: list[Any] = [experiment.key]
    if experiment.holdout:
        arm_of += f" WHEN experiment = ? OR rule_id = ? THEN {arms}"
        args += [experiment.holdout, experiment.holdout]
    arm_of += " ELSE -1 END"
    # one decision log per process: the embedded one and, scaled out, decisions-<host>-<pid>
    files = logschema.decision_log_paths(data_dir) or [data_dir / DECISIONS_FILE]
    sources = [logschema.open_readonly(path) for path in files]
    done = 0
    try:
        total = sum(
            src.execute(f"SELECT count(*) FROM decisions WHERE {where}", experiment.slots)
            .fetchone()[0]
            for src in sources
        )  # fmt: skip
        for src in sources:
            # source and rule only matter for the decisions of other rules (integrity checks)
            cur = src.execute(
                f"SELECT decision_id, user_id, slot, variant, {arm_of} AS arm, "
                "CASE WHEN experiment = ? THEN '' ELSE source END, "
                "CASE WHEN experiment = ? THEN '' ELSE rule_id END "
                f"FROM decisions WHERE {where}",
                [*args, experiment.key, experiment.key, *experiment.slots],
            )
            while rows := cur.fetchmany(CHUNK_ROWS):
                ids, users, slots, variants, arm, source, rule = zip(*rows, strict=True)
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
                        "source": obj(source, dtype=object),
                        "rule_id": obj(rule, dtype=object),
                    },
                )
                done += len(rows)
                report("decisions", done, total)
        data.counts["decisions"] = done
    finally:
        for src in sources:
            src.close()

    src = logschema.open_readonly(data_dir / EVENTS_FILE)
    try:
        kinds = sorted(kinds_for(patterns))
        total_rows = logschema.count_events(src, kinds)
        cur = logschema.event_rows(src, kinds)
        lean_list = _lean_list(numeric)
        done = 0
        while rows := cur.fetchmany(CHUNK_ROWS):
            _insert(con, "events", _columns(rows, lean_list, numeric))
            done += len(rows)
            report("events", done, total_rows)
        data.counts["events"] = done
    finally:
        src.close()
    data.rows_read = data.counts["decisions"] + data.counts["events"]
    _match_shapes(con, patterns)
    _find_units(data, experiment.slots)
    return data


def _match_shapes(con: duckdb.DuckDBPyConnection, patterns: Sequence[str]) -> None:
    """Table ``shapes``: one row per distinct event shape with a flag per pattern."""
    keys = ("kind", "element", "element_kind", "name", "value_text")
    shapes = con.execute(f"SELECT DISTINCT {', '.join(keys)} FROM events").fetchall()
    matchers = [patterns_module.matcher(p) for p in patterns]
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


def _find_units(data: LoadedData, slots: Sequence[str]) -> None:
    """Table ``units`` (user_id, code, arm, t0, s0): each user's only arm and first exposure
    (receive time and log position), and the :class:`Integrity` of the exposures."""
    con = data.con
    marks = ",".join("?" * len(slots))
    con.execute(
        f"""
        CREATE TABLE exposures AS
        SELECT x.seq, x.user_id, x.t, x.slot, x.variant, x.decision_id,
               d.decision_id IS NOT NULL AS logged, coalesce(d.arm, -1) AS arm,
               coalesce(d.source, '') AS source, coalesce(d.rule_id, '') AS rule_id
        FROM events x LEFT JOIN decisions d ON x.decision_id = d.decision_id
        WHERE x.kind = 'exposure' AND x.slot IN ({marks})
        """,
        list(slots),
    )
    # exposures without a decision id (older trackers): the user's experiment decision for
    # that slot and variant, when there is one
    con.execute(
        """
        CREATE TABLE exposed AS
        SELECT seq, user_id, t, arm, FALSE AS by_variant FROM exposures
        WHERE decision_id <> '' AND arm >= 0
        UNION ALL
        SELECT x.seq, x.user_id, x.t, d.arm, TRUE AS by_variant
        FROM exposures x
        JOIN (SELECT user_id, slot, variant, min(arm) AS arm FROM decisions WHERE arm >= 0
              GROUP BY user_id, slot, variant) d
          ON x.user_id = d.user_id AND x.slot = d.slot AND x.variant = d.variant
        WHERE x.decision_id = ''
        """
    )
    con.execute(
        """
        CREATE TABLE per_user AS
        SELECT user_id, count(DISTINCT arm) AS arms, min(arm) AS arm, min(t) AS t0,
               arg_min(seq, t) AS s0,
               count(DISTINCT arm) FILTER (WHERE arm < $arms) AS experiment_arms,
               bool_or(arm = $arms) AS holdout, bool_or(by_variant) AS by_variant
        FROM exposed GROUP BY user_id
        """,
        {"arms": data.arms},
    )
    ((data.multi_arm_users,),) = con.execute(
        "SELECT count(*) FROM per_user WHERE arms > 1"
    ).fetchall()
    causes = con.execute(
        """
        SELECT CASE WHEN by_variant THEN 'by_variant'
                    WHEN experiment_arms > 1 THEN 'reassigned'
                    ELSE 'holdout' END AS cause, count(*)
        FROM per_user WHERE arms > 1 GROUP BY cause
        """
    ).fetchall()
    con.execute(
        "CREATE TABLE units AS SELECT user_id, "
        "CAST(row_number() OVER (ORDER BY user_id) - 1 AS BIGINT) AS code, arm, t0, s0 "
        "FROM per_user WHERE arms = 1"
    )
    pre_consent = ",".join(repr(x) for x in PRE_CONSENT_SOURCES)
    degraded = ",".join(repr(x) for x in DEGRADED_SOURCES)
    ((total, in_experiment, orphans, unmatched, degraded_shown, pre_consent_shown),) = con.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE decision_id <> '' AND arm >= 0),
               count(*) FILTER (WHERE decision_id <> '' AND NOT logged),
               count(*) FILTER (WHERE decision_id = ''),
               count(*) FILTER (WHERE logged AND source IN ({degraded})),
               count(*) FILTER (WHERE logged AND source IN ({pre_consent}))
        FROM exposures
        """
    ).fetchall()
    ((by_variant,),) = con.execute("SELECT count(*) FROM exposed WHERE by_variant").fetchall()
    unmatched -= by_variant
    ((degraded_decided, pre_consent_decided),) = con.execute(
        f"SELECT count(*) FILTER (WHERE source IN ({degraded})), "
        f"count(*) FILTER (WHERE source IN ({pre_consent})) FROM decisions WHERE arm < 0"
    ).fetchall()
    orphan_ids = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT decision_id FROM exposures WHERE decision_id <> '' AND NOT logged "
            f"ORDER BY decision_id LIMIT {MAX_LISTED_ORPHANS}"
        ).fetchall()
    ]
    outside = {
        (f"{rule} ({source})" if rule else "no rule applied (default)"): n
        for rule, source, n in con.execute(
            "SELECT rule_id, source, count(*) FROM exposures "
            f"WHERE logged AND arm < 0 AND source NOT IN ({degraded},{pre_consent}) "
            "GROUP BY ALL ORDER BY 3 DESC"
        ).fetchall()
    }
    data.integrity = Integrity(
        exposures=total,
        in_experiment=in_experiment,
        orphan_exposures=orphans,
        orphan_ids=orphan_ids,
        unmatched_exposures=unmatched,
        outside=outside,
        degraded_decisions=degraded_decided,
        degraded_exposures=degraded_shown,
        pre_consent_decisions=pre_consent_decided,
        pre_consent_exposures=pre_consent_shown,
        multi_arm=dict(causes),
    )


# -- per-user values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One per-user column of a metric: an aggregate of matching events in a window.

    ``reward`` (with the ``slot`` it belongs to) makes the column a policy's reward: 1 when
    the events it credits to the user's first exposure reach its threshold.
    """

    agg: str  # any | count | sum | max | nvalues | reward
    flags: tuple[int, ...]  # pattern indexes, OR-ed
    field: str = ""
    window_ms: float | None = None
    reward: Reward | None = None
    slot: str = ""

    def fields(self) -> list[str]:
        """The numeric event fields this column reads."""
        if self.reward is not None:
            return [self.reward.value] if self.reward.value else list(NATURAL_FIELDS)
        return [self.field] if self.field else []


# The fields behind attribution.natural_amount: a hover's dwell, a visibility's time, the
# number a custom event carries.
NATURAL_FIELDS = ("dwell_ms", "visible_ms", "value")


def metric_parts(
    name: str,
    metrics: dict[str, MetricSpec],
    patterns: list[str],
    rewards: dict[str, tuple[str, Reward]] | None = None,
) -> tuple[str, list[Part]]:
    """The shape of a metric's statistic (``proportion``, ``mean`` or ``ratio``) and its parts.

    ``patterns`` collects every pattern used (their index is the flag column ``p{i}``);
    ``rewards`` maps policy names to their slot and reward, for ``reward`` metrics.
    """
    m = metrics[name]
    if m.type == "reward":
        slot, reward = (rewards or {})[m.policy]
        if reward.event not in patterns:
            patterns.append(reward.event)
        flags = (patterns.index(reward.event),)
        return "proportion", [
            Part("reward", flags, "", reward.window_s * 1000.0, reward=reward, slot=slot)
        ]
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


class UnitValues:
    """Per-user columns, credited by :func:`trimtab.attribution.attribute` with each user's
    first exposure as the round (after it, or before it for CUPED).

    The units' candidate events (any pattern) are read and placed among the rounds once;
    each column then picks its events (its patterns, its slot for a reward) and amounts.
    """

    def __init__(self, data: LoadedData, parts: Sequence[Part]) -> None:
        self.con = data.con
        units = self.con.execute("SELECT code, arm, t0, s0 FROM units ORDER BY code").fetchnumpy()
        self.arm = np.asarray(units["arm"], np.int64)
        self.t0 = np.asarray(units["t0"], np.float64)
        self.rounds = Rounds(
            user=np.asarray(units["code"], np.int64),
            time=self.t0,
            seq=np.asarray(units["s0"], np.int64),
        )
        # read only what these parts use: their pattern flags and fields, kind and slot for
        # rewards (strings are the costly columns)
        used = sorted({i for part in parts for i in part.flags})
        fields = sorted({f for part in parts for f in part.fields()})
        rewards = any(part.reward is not None for part in parts)
        flags = [f"e.p{i}" for i in used]
        columns = ["u.code", "e.t", "e.seq", *flags, *(f"e.f_{f}" for f in fields)]
        if rewards:
            columns += ["e.kind", "e.slot"]
        rows = self.con.execute(
            f"SELECT {', '.join(columns)} FROM ev e JOIN units u USING (user_id) "
            f"WHERE {' OR '.join(flags) or 'FALSE'}"
        ).fetchnumpy()
        self.rows = {k.removeprefix("e.").removeprefix("u."): v for k, v in rows.items()}
        self.events = Events(
            user=np.asarray(self.rows["code"], np.int64),
            time=np.asarray(self.rows["t"], np.float64),
            seq=np.asarray(self.rows["seq"], np.int64),
        )
        self.located = locate(self.rounds, self.events)

    def users(self) -> list[str]:
        """The unit users, in the order of every column."""
        rows = self.con.execute("SELECT user_id FROM units ORDER BY code").fetchall()
        return [row[0] for row in rows]

    def _field(self, name: str) -> np.ndarray:
        return np.ma.filled(np.ma.asarray(self.rows[f"f_{name}"], dtype=np.float64), np.nan)

    def _selection(self, part: Part) -> tuple[np.ndarray, np.ndarray | None]:
        """The events a part counts (its patterns; its slot for a reward) and their amounts."""
        n = len(self.events)
        mask = np.zeros(n, bool)
        for i in part.flags:
            mask |= np.asarray(self.rows[f"p{i}"], bool)
        reward = part.reward
        if reward is None:
            return mask, (self._field(part.field) if part.field else None)
        kind = np.asarray(self.rows["kind"], dtype=object)
        if reward.in_slot:
            mask &= (np.asarray(self.rows["slot"], dtype=object) == part.slot) | (kind == "custom")
        if reward.value:
            return mask, self._field(reward.value)
        amount = np.ones(n)  # attribution.natural_amount, column-wise
        for event_kind, name in (("hover", "dwell_ms"), ("visible", "visible_ms")):
            where = kind == event_kind
            amount[where] = self._field(name)[where]
        custom = (kind == "custom") & ~np.isnan(self._field("value"))
        amount[custom] = self._field("value")[custom]
        return mask, amount

    def column(self, part: Part, post: bool) -> np.ndarray:
        window_s = None if part.window_ms is None else part.window_ms / 1000.0
        mask, amounts = self._selection(part)
        events = Events(self.events.user, self.events.time, self.events.seq, amounts)
        credited = attribute(
            self.rounds,
            events,
            window_s,
            before=not post,
            located=self.located,
            only=mask,
            maximum=part.agg == "max",
        )
        if part.agg == "reward":
            assert part.reward is not None
            return credited.rewards(part.reward.min_value)
        if part.agg == "any":
            return (credited.count > 0).astype(np.float64)
        if part.agg == "count":
            return credited.count.astype(np.float64)
        if part.agg == "nvalues":
            return credited.values.astype(np.float64)
        return credited.total if part.agg == "sum" else credited.maximum


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
    values = UnitValues(data, [p for _, parts in metric_shapes.values() for p in parts])
    table: dict[str, np.ndarray] = {
        "arm": values.arm,
        "period": np.floor((values.t0 - origin_ms) / period_ms).astype(np.int64),
    }
    per_metric: dict[str, list[str]] = {}
    for i, (name, (_, parts)) in enumerate(metric_shapes.items()):
        cols: list[str] = []
        for k, part in enumerate(parts):
            table[f"m{i}_y{k}"] = values.column(part, post=True)
            cols.append(f"m{i}_y{k}")
        if cuped:
            for k, part in enumerate(parts):
                table[f"m{i}_x{k}"] = values.column(part, post=False)
                cols.append(f"m{i}_x{k}")
        per_metric[name] = cols
    con.execute("DROP TABLE IF EXISTS uv")
    con.register("uv_rows", table)
    con.execute("CREATE TABLE uv AS SELECT * FROM uv_rows")
    con.unregister("uv_rows")
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
