"""Training rows from what trimtab already logs: features as they were, outcomes that followed.

The event log is replayed in time order through the site's own
:class:`~trimtab.features.FeatureProcessor` — the code that computes live features — and the
attributes are snapshotted at each **observation point**:

* ``page_view`` — ``after_s`` seconds after each page view (one row per page view);
* ``session_end`` — at the last event of each visit (one row per visit);
* ``exposure`` — at each exposure of a slot; the attributes are the ones the decision log
  recorded when that variant was decided (what the live engine saw), plus ``slot``,
  ``variant`` and the variant's payload under ``item``.

The **label** counts events matching the target pattern strictly *after* the observation,
within its window (the page, the visit, or a number of seconds; ``other_session`` for a later
visit) — or, for a ``category`` target, takes the class named by the first of them (rows
where none follows are left out and counted in ``skipped``). A snapshot at time ``t`` holds
every event with ``ts ≤ t`` and none after, so no outcome can leak into the features it is
predicted from (``tests/test_models_dataset.py`` checks this against a fresh processor fed
only the earlier events). Rows whose window is not over by the end of the data are left out
(*censored*), so a late observation is never labelled 0 for lack of time.

Scaled deployments: ``trimtab export`` copies the bus into ``events.sqlite``; put the
processes' ``decisions-*.sqlite`` beside it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

from trimtab import logschema
from trimtab.events import AnyEvent, Exposure, PageView, decode_one
from trimtab.features import SESSION_TIMEOUT_MS, FeatureProcessor
from trimtab.models.columns import as_text
from trimtab.models.spec import TargetDecl
from trimtab.patterns import matcher

Progress = Callable[[int, int], None]
INF = math.inf


class DatasetError(ValueError):
    """The logs cannot give training rows (missing files, an empty window)."""


@dataclass(slots=True)
class Row:
    """One observation: who, when, what was known then, and what followed."""

    user_id: str
    session_id: str
    ts: float
    attrs: dict[str, Any]
    # the outcome: 1.0/0.0 (binary), a count, or for category targets the class's name (None
    # until an event names it)
    label: float | str | None = 0.0
    deadline: float = INF
    decision_id: str = ""
    propensity: float = 0.0


@dataclass
class Dataset:
    rows: list[Row]
    events: int
    censored: int
    first_ms: float
    last_ms: float
    observed_from: float = 0.0
    observed_to: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)


def build(
    data_dir: str | Path,
    config: Any,
    *,
    at: str,
    target: TargetDecl,
    after_s: float = 0.0,
    slot: str = "",
    keys: Iterable[str] | None = None,
    since_ms: float | None = None,
    until_ms: float | None = None,
    past: bool = False,
    progress: Progress | None = None,
) -> Dataset:
    """Observation rows of the logs in ``data_dir`` (see the module docstring).

    ``keys`` limits the stored attributes to these top-level names (memory on big logs);
    ``since_ms``/``until_ms`` keep observations in that time window (earlier events still
    shape the features). With ``past`` the label describes the visit *so far* (target
    events of the same session up to the observation) — for reports such as conversion per
    segment, never for training a prediction.
    """
    data_dir = Path(data_dir)
    path = logschema.events_path(data_dir)
    if not path.is_file():
        raise DatasetError(f"no event log at {path} (scaled deployments: trimtab export first)")
    keep = set(keys) if keys is not None else None
    conn = logschema.open_readonly(path)
    try:
        total, first, last = conn.execute(
            "SELECT count(*), min(ts), max(ts) FROM events"
        ).fetchone()
        if not total:
            raise DatasetError(f"the event log {path} is empty")
        ends = {
            (u, s): t
            for u, s, t in conn.execute(
                "SELECT user_id, session_id, max(ts) FROM events GROUP BY user_id, session_id"
            )
        }
        rows = conn.execute("SELECT ts, body FROM events ORDER BY ts, seq")
        builder = _Builder(config, at, target, after_s, slot, keep, ends, last)
        builder.past = {} if past else None
        if at == "exposure":
            builder.decisions = _decisions(data_dir, slot)
        builder.window = (since_ms if since_ms is not None else -INF, until_ms or INF)
        for done, (ts, body) in enumerate(rows, 1):
            builder.step(ts, decode_one(body))
            if progress is not None and done % 20_000 == 0:
                progress(done, total)
        builder.finish()
        if progress is not None:
            progress(total, total)
    finally:
        conn.close()
    out = builder.rows
    observed = [r.ts for r in out]
    return Dataset(
        rows=out,
        events=total,
        censored=builder.censored,
        first_ms=first,
        last_ms=last,
        observed_from=min(observed) if observed else 0.0,
        observed_to=max(observed) if observed else 0.0,
        skipped=builder.skipped,
    )


class _Builder:
    """The replay's state: the processor, snapshots due, rows waiting for their outcome."""

    def __init__(
        self,
        config: Any,
        at: str,
        target: TargetDecl,
        after_s: float,
        slot: str,
        keep: set[str] | None,
        ends: dict[tuple[str, str], float],
        data_end: float,
    ) -> None:
        self.processor = FeatureProcessor(config.feature_specs())
        self.payloads = {name: s.variants for name, s in config.slots.items()}
        self.at, self.target, self.slot, self.keep = at, target, slot, keep
        self.after_ms = after_s * 1000.0
        self.ends, self.data_end = ends, data_end
        self.matches = matcher(target.event)
        within = target.within
        self.window_ms = None if isinstance(within, str) else float(within) * 1000.0
        self.due: list[tuple[float, int, Row]] = []  # snapshots to take, by time
        self.open: dict[str, list[Row]] = {}  # user -> rows collecting their outcome
        self.rows: list[Row] = []
        self.censored = 0
        self.decisions: dict[str, tuple[dict[str, Any], float]] = {}
        self.window = (-INF, INF)
        self.skipped: dict[str, int] = {}
        self.past: dict[tuple[str, str], float] | None = None
        self._n = 0

    def step(self, ts: float, event: AnyEvent) -> None:
        due = self.due
        while due and due[0][0] < ts:  # everything up to the observation time is applied
            self._snapshot(heapq.heappop(due)[2])
        user = event.user_id
        past = self.past
        if past is not None:
            if self.matches(event):
                key = (user, event.session_id)
                past[key] = past.get(key, 0.0) + 1.0
        else:
            waiting = self.open.get(user)
            if waiting:
                self._outcomes(waiting, ts, event)
        self.processor.apply((event,))
        if self.at == "page_view":
            if type(event) is PageView:
                self._observe(event, ts + self.after_ms)
        elif self.at == "session_end":
            if self.ends.get((user, event.session_id)) == ts:
                self._observe(event, ts)
        elif type(event) is Exposure and (self.slot in ("*", event.slot)):
            self._exposure(event, ts)

    def _observe(self, event: AnyEvent, t: float) -> None:
        lo, hi = self.window
        if not lo <= t < hi:
            return
        row = Row(event.user_id, event.session_id, t, {})
        self._n += 1
        heapq.heappush(self.due, (t, self._n, row))

    def _exposure(self, event: Exposure, ts: float) -> None:
        lo, hi = self.window
        if not lo <= ts < hi:
            return
        logged = self.decisions.get(event.decision_id)
        if logged is None:
            self.skipped["exposure without a logged decision"] = (
                self.skipped.get("exposure without a logged decision", 0) + 1
            )
            return
        attrs, propensity = logged
        attrs = dict(attrs)
        attrs["slot"] = event.slot
        attrs["variant"] = event.variant
        attrs["item"] = self.payloads.get(event.slot, {}).get(event.variant) or {}
        row = Row(event.user_id, event.session_id, ts, self._project(attrs))
        row.decision_id, row.propensity = event.decision_id, propensity
        self._open(row)

    def _snapshot(self, row: Row) -> None:
        attrs = self.processor.features_of(row.user_id, row.session_id, now_ms=row.ts)
        row.attrs = self._project(attrs)
        self._open(row)

    def _project(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """A copy of the attributes (nested maps too: the state keeps changing after)."""
        keep = self.keep
        return {k: _copy(v) for k, v in attrs.items() if keep is None or k in keep}

    def _open(self, row: Row) -> None:
        if self.target.type == "category":
            row.label = None  # the class, once an event names it
        if self.past is not None:
            count = self.past.get((row.user_id, row.session_id), 0.0)
            row.label = min(count, 1.0) if self.target.type == "binary" else count
            self.rows.append(row)
            return
        within = self.target.within
        session_end = self.ends.get((row.user_id, row.session_id), row.ts)
        if self.window_ms is not None:
            row.deadline = row.ts + self.window_ms
            complete = row.deadline <= self.data_end
        else:  # the page or the visit: over once the visit has timed out
            row.deadline = session_end if within == "session" else INF
            complete = session_end + SESSION_TIMEOUT_MS <= self.data_end
        if not complete:
            self.censored += 1
            return
        self.rows.append(row)
        if row.deadline > row.ts or within == "page":
            self.open.setdefault(row.user_id, []).append(row)

    def _outcomes(self, waiting: list[Row], ts: float, event: AnyEvent) -> None:
        target = self.target
        page = target.within == "page"
        binary = target.type == "binary"
        category = target.type == "category"
        keep: list[Row] = []
        hit: bool | None = None
        for row in waiting:
            if ts > row.deadline:
                continue  # its window is over
            same = event.session_id == row.session_id
            if page and same and type(event) is PageView and ts > row.ts:
                continue  # the next page view closes a page window
            keep.append(row)
            if ts <= row.ts or (binary and row.label) or (category and row.label is not None):
                continue
            if target.other_session:
                if same:
                    continue  # a later visit is asked for
            elif self.window_ms is None and not same:
                continue  # the page or the visit: this session only
            if hit is None:
                hit = self.matches(event)
            if hit:
                if category:
                    named = getattr(event, target.by, None)
                    if named is not None and named != "":
                        row.label = as_text(named)
                else:
                    # not a category target: the label is a number
                    row.label = 1.0 if binary else cast(float, row.label) + 1.0
        if len(keep) != len(waiting):
            if keep:
                self.open[event.user_id] = keep
            else:
                del self.open[event.user_id]

    def finish(self) -> None:
        while self.due:
            self._snapshot(heapq.heappop(self.due)[2])
        if self.target.type == "category" and self.past is None:
            named = [r for r in self.rows if r.label is not None]
            if len(named) != len(self.rows):
                self.skipped["no event named a class in the window"] = len(self.rows) - len(named)
            self.rows = named
        self.rows.sort(key=lambda r: r.ts)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):  # a SummedMap too (copied as a plain dict): never shared
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _decisions(data_dir: Path, slot: str) -> dict[str, tuple[dict[str, Any], float]]:
    """decision id -> (logged attributes, propensity), from every decision log in the folder."""
    out: dict[str, tuple[dict[str, Any], float]] = {}
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    for path in logschema.decision_log_paths(data_dir):
        conn = logschema.open_readonly(path)
        try:
            query = "SELECT decision_id, propensity, features FROM decisions WHERE source != ?"
            args: tuple[str, ...] = ("degraded",)
            if slot != "*":
                query += " AND slot = ?"
                args = ("degraded", slot)
            for decision_id, propensity, features in conn.execute(query, args):
                out[decision_id] = (decode(features), propensity)
        finally:
            conn.close()
    return out


def iter_events(data_dir: str | Path) -> Iterator[tuple[float, AnyEvent]]:
    """Every logged event with its time, in time order."""
    conn = logschema.open_readonly(logschema.events_path(data_dir))
    try:
        for ts, body in conn.execute("SELECT ts, body FROM events ORDER BY ts, seq"):
            yield ts, decode_one(body)
    finally:
        conn.close()
