"""An experiment's report: every declared metric, every arm against the baseline, SRM first.

:func:`analyze` reads the data dir (:mod:`trimtab.experiments.metrics`), builds one sufficient
statistic per arm and metric, and runs :func:`~trimtab.experiments.stats.compare_variants` on
them: once on all users, and once per hour or day of first exposure, cumulatively, for the
plots. The :class:`Report` is plain data (msgspec Structs, JSON-encodable); the terminal table
and the HTML page are renderings of it.

A verdict uses the sequential (always-valid) interval when the experiment says
``sequential: true`` (safe to look every day), otherwise the fixed-horizon test with the
multiple-comparison-adjusted p-value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from trimtab.experiments.metrics import (
    DAY_MS,
    HOUR_MS,
    Integrity,
    LoadedData,
    Part,
    Progress,
    arm_sums,
    build_stat,
    load,
    metric_parts,
)
from trimtab.experiments.spec import ExperimentSpec, MetricSpec, experiments_of, policy_rewards
from trimtab.experiments.stats import Comparison, SrmResult, compare_variants, srm_check
from trimtab.experiments.stats.frequentist import FrequentistResult
from trimtab.experiments.stats.sequential import DEFAULT_TUNING

if TYPE_CHECKING:
    from trimtab.config import SiteConfig

# Data spanning more than this is plotted by day, otherwise by hour.
HOURLY_SPAN_MS = 3 * DAY_MS

Verdict = Literal["baseline", "better", "worse", "inconclusive", "no data"]


class Arm(msgspec.Struct, frozen=True):
    """One arm: a variation index of the experiment (or the holdout)."""

    index: int
    name: str
    weight: float
    users: int
    holdout: bool = False


class TimePoint(msgspec.Struct, frozen=True):
    """Cumulative figures up to the end of one period of first exposure.

    ``effects[i]`` is arm ``i``'s relative effect ``(estimate, lower, upper)`` against the
    baseline, ``None`` for the baseline or when it cannot be computed yet.
    """

    start_ms: float
    users: list[int]
    effects: list[tuple[float, float, float] | None] = []


class MetricReport(msgspec.Struct, frozen=True):
    """One metric's comparison, verdict per arm and history."""

    name: str
    type: str
    description: str
    guardrail: bool
    direction: str
    cuped: bool
    comparison: Comparison
    verdicts: list[Verdict]
    over_time: list[TimePoint]

    @property
    def violated(self) -> bool:
        """A guardrail some arm moved significantly the bad way."""
        return self.guardrail and "worse" in self.verdicts


class Report(msgspec.Struct, frozen=True):
    """Everything ``trimtab report`` shows for one experiment."""

    experiment: str
    key: str
    slots: list[str]
    arms: list[Arm]
    multi_arm_users: int
    srm: SrmResult
    integrity: Integrity
    alpha: float
    sequential: bool
    correction: str | None
    granularity: Literal["hour", "day"]
    start_ms: float
    end_ms: float
    exposures_over_time: list[TimePoint]
    metrics: list[MetricReport]
    rows_read: int

    @property
    def users(self) -> int:
        return sum(a.users for a in self.arms)


def arm_layout(config: SiteConfig, spec: ExperimentSpec) -> tuple[list[str], list[float]]:
    """Arm names and configured weights of an experiment, read from its slots' rules.

    A bundle over several slots names each arm by the variant it shows in every slot.
    """
    per_slot: list[list[str]] = []
    weights: list[float] | None = None
    for slot_name in spec.slots:
        slot = config.slots[slot_name]
        rule = next(
            r for r in slot.rules if r.variations is not None and (r.key or slot_name) == spec.key
        )
        per_slot.append(list(rule.variations or []))
        if weights is None:
            count = len(rule.variations or [])
            weights = list(rule.weights) if rule.weights else [1.0 / count] * count
    names = []
    for i in range(len(per_slot[0])):
        if len(per_slot) == 1:
            names.append(per_slot[0][i])
        else:
            names.append(
                " + ".join(f"{s}={v[i]}" for s, v in zip(spec.slots, per_slot, strict=True))
            )
    return names, weights or []


def _interval(result: FrequentistResult | None) -> tuple[float, float, float] | None:
    if result is None or result.error is not None:
        return None
    return (result.expected, result.ci[0], result.ci[1])


def _verdicts(c: Comparison, spec: ExperimentSpec, metric: MetricSpec) -> list[Verdict]:
    out: list[Verdict] = []
    for v in c.variants:
        if v.is_baseline:
            out.append("baseline")
            continue
        test = v.sequential if spec.sequential else v.relative
        if test is None or test.error is not None:
            out.append("no data")
            continue
        if spec.sequential:
            up, down = test.ci[0] > 0, test.ci[1] < 0
        else:
            p = v.p_value_adjusted if v.p_value_adjusted is not None else test.p_value
            significant = p is not None and p < spec.alpha
            up, down = significant and test.expected > 0, significant and test.expected < 0
        if not (up or down):
            out.append("inconclusive")
        elif up == (metric.direction == "decrease"):
            out.append("better")
        else:
            out.append("worse")
    return out


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def analyze(
    config: SiteConfig,
    experiment: str,
    data_dir: str | Path | None = None,
    *,
    progress: Progress | None = None,
) -> Report:
    """Analyse ``experiment`` (its name in the config's ``experiments``) over ``data_dir``.

    ``data_dir`` defaults to the config's ``storage.data_dir``. Raises ``KeyError`` for an
    undeclared experiment and ``FileNotFoundError`` when the data dir has no logs.
    """
    declared = experiments_of(config)
    if experiment not in declared.experiments:
        known = ", ".join(declared.experiments) or "none"
        raise KeyError(f"experiment {experiment!r} is not declared (declared: {known})")
    spec = declared.experiments[experiment]
    metrics = declared.metrics
    names, weights = arm_layout(config, spec)
    arms = len(names)
    if spec.holdout:
        names.append(f"holdout ({spec.holdout})")
        weights.append(0.0)
    listed = [*spec.metrics, *spec.guardrails]
    patterns: list[str] = []
    rewards = policy_rewards(config)
    shapes: dict[str, tuple[str, list[Part]]] = {
        m: metric_parts(m, metrics, patterns, rewards) for m in listed
    }
    numeric = [f for _, parts in shapes.values() for p in parts for f in p.fields()]
    data = load(
        data_dir or config.storage.data_dir, spec, patterns, numeric, arms, progress=progress
    )
    return _analyze_loaded(data, spec, experiment, metrics, shapes, names, weights)


def _analyze_loaded(
    data: LoadedData,
    spec: ExperimentSpec,
    experiment: str,
    metrics: dict[str, MetricSpec],
    shapes: dict[str, tuple[str, list[Part]]],
    names: list[str],
    weights: list[float],
) -> Report:
    con = data.con
    k = len(names)
    ((lo, hi),) = con.execute("SELECT min(t0), max(t0) FROM units").fetchall()
    lo = lo if lo is not None else 0.0
    hi = hi if hi is not None else lo
    period_ms = HOUR_MS if hi - lo <= HOURLY_SPAN_MS else DAY_MS
    origin = math.floor(lo / period_ms) * period_ms
    periods = int((hi - origin) // period_ms) + 1
    sums = arm_sums(data, shapes, cuped=spec.cuped, period_ms=period_ms, origin_ms=origin)
    counts = con.execute("SELECT arm, count(*) FROM units GROUP BY arm").fetchall()
    users = [0] * k
    for arm, n in counts:
        if 0 <= arm < k:
            users[arm] = int(n)
    by_period = con.execute(
        f"SELECT arm, CAST(floor((t0 - {origin!r}) / {period_ms!r}) AS INTEGER), count(*) "
        "FROM units GROUP BY ALL"
    ).fetchall()
    grid = [[0] * k for _ in range(periods)]
    for arm, p, n in by_period:
        if 0 <= arm < k and 0 <= p < periods:
            grid[p][arm] = int(n)
    exposures: list[TimePoint] = []
    running = [0] * k
    for p in range(periods):
        running = [a + b for a, b in zip(running, grid[p], strict=True)]
        exposures.append(TimePoint(start_ms=origin + p * period_ms, users=list(running)))

    options = {
        "names": names,
        "weights": weights,
        "alpha": spec.alpha,
        "correction": spec.correction,
        "tuning": float(spec.expected_users or DEFAULT_TUNING),
    }
    reports: list[MetricReport] = []
    for name, (kind, _) in shapes.items():
        metric = metrics[name]
        cells = sums[name]
        cumulative = [{"n": 0.0} for _ in range(k)]
        history: list[TimePoint] = []
        for p in range(periods):
            for arm in range(k):
                if (arm, p) in cells:
                    cumulative[arm] = _add(cumulative[arm], cells[(arm, p)])
            if p < periods - 1 and not any((arm, p) in cells for arm in range(k)):
                continue
            stats = [build_stat(kind, c, spec.cuped) for c in cumulative]
            effects: list[tuple[float, float, float] | None] = [None] * k
            if all(s.n >= 2 for s in stats):
                c = compare_variants(stats, inverse=metric.inverse, **options)  # type: ignore[arg-type]  # loose **options
                for v in c.variants:
                    if not v.is_baseline:
                        effects[v.index] = _interval(
                            v.sequential if spec.sequential else v.relative
                        )
            history.append(
                TimePoint(
                    start_ms=origin + p * period_ms,
                    users=[int(s.n) for s in stats],
                    effects=effects,
                )
            )
        final = [build_stat(kind, c, spec.cuped) for c in cumulative]
        comparison = compare_variants(final, inverse=metric.inverse, **options)  # type: ignore[arg-type]  # loose **options
        reports.append(
            MetricReport(
                name=name,
                type=metric.type,
                description=metric.description,
                guardrail=metric.guardrail or name in spec.guardrails,
                direction=metric.direction,
                cuped=spec.cuped,
                comparison=comparison,
                verdicts=_verdicts(comparison, spec, metric),
                over_time=history,
            )
        )
    return Report(
        experiment=experiment,
        key=spec.key,
        slots=list(spec.slots),
        arms=[
            Arm(
                index=i,
                name=names[i],
                weight=weights[i],
                users=users[i],
                holdout=bool(spec.holdout) and i == k - 1,
            )
            for i in range(k)
        ],
        multi_arm_users=data.multi_arm_users,
        srm=srm_check(users, weights),
        integrity=data.integrity,
        alpha=spec.alpha,
        sequential=spec.sequential,
        correction=spec.correction,
        granularity="hour" if period_ms == HOUR_MS else "day",
        start_ms=float(lo),
        end_ms=float(hi),
        exposures_over_time=exposures,
        metrics=reports,
        rows_read=data.rows_read,
    )


# -- integrity checks (terminal and HTML) --------------------------------------------------------

# Between the SRM alarm threshold and this p-value the split is flagged as close to it.
SRM_WARNING_P = 0.01

Status = Literal["ok", "warn", "error"]


class Check(msgspec.Struct, frozen=True):
    """One integrity check of the data behind a report, as a sentence with a status."""

    name: str
    status: Status
    message: str


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _split(report: Report) -> str:
    arms = [a for a in report.arms if a.weight > 0]
    counts = " vs ".join(f"{a.users:,}" for a in arms)
    shares = " / ".join(
        f"{100 * s:.1f}%"
        for s, a in zip(report.srm.observed_shares, report.arms, strict=True)
        if a.weight > 0
    )
    expected = " / ".join(f"{100 * a.weight:.0f}%" for a in arms)
    return f"{counts} users ({shares}; configured {expected})"  # fmt: skip


def srm_check_of(report: Report) -> Check:
    """The sample-ratio check with its threshold shown and a warning band near it."""
    srm = report.srm
    threshold = f"a mismatch is flagged below p = {srm.threshold:g}"
    if srm.dof < 1 or report.users == 0:
        return Check("sample ratio", "ok", srm.message)
    split = _split(report)
    if not srm.ok:
        return Check(
            "sample ratio",
            "error",
            f"MISMATCH — {split}, p = {srm.p_value:.2g} < {srm.threshold:g}. Assignment or "
            "logging is broken; do not trust these results until it is fixed.",
        )
    if srm.p_value < SRM_WARNING_P:
        return Check(
            "sample ratio",
            "warn",
            f"close to the alarm — {split}, p = {srm.p_value:.2g} ({threshold}; below "
            f"{SRM_WARNING_P:g} is unusual). Check assignment before trusting small effects.",
        )
    return Check(
        "sample ratio",
        "ok",
        f"as configured — {split}, p = {srm.p_value:.2g} ({threshold}).",
    )


_CAUSES = {
    "reassigned": "their assignment changed during the experiment (its weights, coverage or "
    "seed, or the value of its hash attribute changed)",
    "holdout": "they were in the holdout on one visit and in the experiment on another",
    "by_variant": "exposures without a decision id could only be matched by variant, to "
    "several arms",
}


def integrity_checks(report: Report) -> list[Check]:
    """Everything a reader must know before trusting the numbers, worst problems first."""
    i = report.integrity
    checks = [srm_check_of(report)]
    if i.orphan_exposures:
        listed = ", ".join(i.orphan_ids)
        more = "…" if i.orphan_exposures > len(i.orphan_ids) else ""
        checks.append(
            Check(
                "orphan exposures",
                "error",
                f"{_count(i.orphan_exposures, 'exposure')} of {i.exposures:,} point at a "
                "decision missing from every decision log, so their users cannot be placed "
                f"in an arm (must be 0). Decision ids: {listed}{more}",
            )
        )
    else:
        checks.append(
            Check(
                "orphan exposures",
                "ok",
                f"0 — all {i.exposures:,} exposures of {', '.join(report.slots)} point at a "
                "logged decision.",
            )
        )
    if report.multi_arm_users:
        why = "; ".join(
            f"{n:,} because {_CAUSES.get(cause, cause)}" for cause, n in i.multi_arm.items()
        )
        checks.append(
            Check(
                "multiple arms",
                "warn",
                f"{_count(report.multi_arm_users, 'user')} saw more than one arm and "
                f"{'is' if report.multi_arm_users == 1 else 'are'} left out: {why}.",
            )
        )
    else:
        checks.append(Check("multiple arms", "ok", "no user saw more than one arm."))
    shown = i.pre_consent_exposures + i.degraded_exposures
    checks.append(
        Check(
            "not personalised",
            "warn" if i.pre_consent_exposures else "ok",
            f"{_count(i.pre_consent_decisions, 'decision')} made before consent and "
            f"{i.degraded_decisions:,} made without live features (degraded) on these slots, "
            f"shown in {_count(shown, 'exposure')}; none counts in an arm."
            + (
                " Pre-consent decisions should never be shown once consent is given."
                if i.pre_consent_exposures
                else ""
            ),
        )
    )
    if i.outside:
        parts = ", ".join(f"{rule} {n:,}" for rule, n in i.outside.items())
        checks.append(
            Check(
                "other rules",
                "ok",
                f"{_count(sum(i.outside.values()), 'exposure')} came from decisions of other "
                f"rules on these slots and are not part of the experiment: {parts}.",
            )
        )
    if i.unmatched_exposures:
        checks.append(
            Check(
                "exposures without decision id",
                "warn",
                f"{_count(i.unmatched_exposures, 'exposure')} carried no decision id and "
                "matched none of their user's experiment decisions (an old tracker?).",
            )
        )
    order = {"error": 0, "warn": 1, "ok": 2}
    return sorted(checks, key=lambda c: order[c.status])


# Why a comparison could not be made, in words (the statistics engine's codes).
_ERRORS = {
    "ZERO_NEGATIVE_VARIANCE": "no spread to measure: every user in an arm has the same value "
    "(often nobody did it yet)",
    "ZERO_NEGATIVE_BASELINE_VARIATION": "the baseline's value is zero, so a relative change "
    "cannot be computed",
    "MIXED_STATISTICS": "the arms were measured differently (a bug: please report it)",
    "ALPHA_GREATER_THAN_0.5_FOR_SEQUENTIAL_ONE_SIDED_TEST": "the sequential test needs α below 0.5",
}


def explain_error(code: str) -> str:
    """A statistics error code as a short sentence (unknown codes are shown as they are)."""
    return _ERRORS.get(code.upper(), code.replace("_", " ").lower())


# -- shared rendering helpers (terminal table and HTML) ----------------------------------------

COLUMNS = (
    "variant",
    "users",
    "mean",
    "abs. Δ ± CI",
    "rel. Δ ± CI",
    "p",
    "adj. p",
    "seq. CI",
    "P(win)",
    "risk",
    "verdict",
)


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "∞" if x > 0 else "-∞"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:,.4g}"


def _pct(x: float, sign: bool = True) -> str:
    if not math.isfinite(x):
        return "∞" if x > 0 else "-∞"
    return f"{100 * x:+.1f}%" if sign else f"{100 * x:.1f}%"


def _p(x: float | None) -> str:
    if x is None:
        return "-"
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def metric_rows(metric: MetricReport) -> list[list[str]]:
    """One row of formatted cells per arm, in :data:`COLUMNS` order.

    Effects are shown as ``estimate ± half-width`` of the two-sided interval; the sequential
    interval in full.
    """
    rows = []
    for v, verdict in zip(metric.comparison.variants, metric.verdicts, strict=True):
        mean = f"{100 * v.mean:.2f}%" if metric.type == "binomial" else _num(v.mean)
        blank = ["", "", "", "", "", ""]
        if v.is_baseline or v.absolute is None or v.relative is None:
            rows.append([v.name, f"{v.n:,}", mean, "baseline", *blank, verdict])
            continue
        a, r = v.absolute, v.relative
        if r.error is not None:
            rows.append([v.name, f"{v.n:,}", mean, explain_error(r.error), *blank, verdict])
            continue
        seq, bayes = v.sequential, v.bayesian
        rows.append(
            [
                v.name,
                f"{v.n:,}",
                mean,
                f"{a.expected:+.4g} ± {(a.ci[1] - a.ci[0]) / 2:.2g}",
                f"{_pct(r.expected)} ± {_pct((r.ci[1] - r.ci[0]) / 2, False)}",
                _p(r.p_value),
                _p(v.p_value_adjusted),
                "-" if seq is None or seq.error else f"{_pct(seq.ci[0])}…{_pct(seq.ci[1])}",
                "-" if bayes is None or bayes.error else f"{100 * bayes.chance_to_win:.1f}%",
                "-" if bayes is None or bayes.error else _pct(bayes.risk[1], False),
                verdict,
            ]
        )
    return rows
