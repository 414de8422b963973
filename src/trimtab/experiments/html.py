"""The experiment report as one self-contained HTML page, plots embedded as base64 PNG.

Plots (matplotlib, drawn on ``Figure`` objects, so no GUI backend or global state): the
relative effect of each arm with its interval, cumulatively by hour or day of first exposure,
one per metric; cumulative exposed users per arm; observed against configured traffic shares.
The integrity checks open the page: each is a banner, red for an error (a sample ratio
mismatch, orphan exposures), amber for a warning (a split close to the alarm, users in two
arms, decisions shown before consent), green when it holds.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io

import numpy as np
import numpy.typing as npt

from trimtab.extras import missing

try:
    from matplotlib.figure import Figure
except ModuleNotFoundError as exc:
    raise missing(exc, "reports", "HTML reports") from None

from trimtab.experiments.report import (
    COLUMNS,
    MetricReport,
    Report,
    integrity_checks,
    metric_rows,
)

_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #666; }
.banner { padding: .8rem 1rem; border-radius: 6px; font-weight: 600; margin: 1rem 0; }
.srm-bad { background: #c62828; color: #fff; font-size: 1.1rem; }
.srm-ok { background: #e8f5e9; color: #1b5e20; }
.warn { background: #fff3e0; color: #8a4b00; }
.checks .banner { font-weight: 400; margin: .4rem 0; }
.checks .banner b { font-weight: 700; }
td.note { text-align: left; white-space: normal; color: #666; font-style: italic; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: .5rem 0; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #ddd; text-align: right; }
th, td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td.better { color: #1b5e20; font-weight: 600; } td.worse { color: #c62828; font-weight: 600; }
img { max-width: 100%; }
.guardrail { font-size: .8rem; background: #eee; padding: .1rem .4rem; border-radius: 4px; }
.violated { background: #c62828; color: #fff; }
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(str(fig.get_label()))}" src="data:image/png;base64,{data}">'


def _times(ms: list[float]) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t / 1000.0, tz=dt.UTC) for t in ms]


def _axis_times(ms: list[float]) -> npt.NDArray[np.datetime64]:
    """Epoch milliseconds as a plot's time axis (UTC, matplotlib's default time zone)."""
    return np.asarray(ms, dtype=np.float64).astype("datetime64[ms]")


def effect_plot(report: Report, metric: MetricReport) -> str:
    """Cumulative relative effect of each arm against the baseline, with its interval."""
    fig = Figure(figsize=(8.5, 3.2))
    fig.set_label(f"{metric.name}: effect over time")
    ax = fig.subplots()
    ax.axhline(0.0, color="#888", linewidth=1)
    for arm in report.arms:
        known = [(p.start_ms, p.effects[arm.index]) for p in metric.over_time if p.effects]
        points = [(t, e) for t, e in known if e is not None]
        if not points:
            continue
        when = _axis_times([t for t, _ in points])
        est = [100 * e[0] for _, e in points]
        lo = [100 * e[1] for _, e in points]
        hi = [100 * e[2] for _, e in points]
        color = _COLORS[arm.index % len(_COLORS)]
        ax.plot(when, est, color=color, label=arm.name, marker="." if len(when) < 40 else None)
        ax.fill_between(when, lo, hi, color=color, alpha=0.2)
    if len(ax.lines) <= 1:  # only the zero line: no arm has an interval yet
        ax.text(0.5, 0.5, "no effect to plot yet (see the table)", ha="center", va="center",
                color="#888", transform=ax.transAxes)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
    kind = "sequential" if report.sequential else f"{100 * (1 - report.alpha):.0f}%"
    ax.set_ylabel("relative effect, %")
    ax.set_title(
        f"{metric.name}: cumulative effect vs baseline ({kind} interval, by {report.granularity})"
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def exposures_plot(report: Report) -> str:
    """Cumulative exposed users per arm."""
    fig = Figure(figsize=(8.5, 2.8))
    fig.set_label("cumulative exposures")
    ax = fig.subplots()
    when = _axis_times([p.start_ms for p in report.exposures_over_time])
    for arm in report.arms:
        counts = [p.users[arm.index] for p in report.exposures_over_time]
        ax.plot(when, counts, color=_COLORS[arm.index % len(_COLORS)], label=arm.name)
    ax.set_ylabel("users")
    ax.set_title(f"cumulative exposed users per arm (by {report.granularity})")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def srm_plot(report: Report) -> str:
    """Observed against expected traffic shares (the arms in the SRM test)."""
    srm = report.srm
    fig = Figure(figsize=(5.5, 2.6))
    fig.set_label("sample ratio")
    ax = fig.subplots()
    names = [a.name for a in report.arms]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [100 * s for s in srm.expected_shares], 0.4, label="expected",
           color="#bbb")  # fmt: skip
    ax.bar([i + 0.2 for i in x], [100 * s for s in srm.observed_shares], 0.4, label="observed",
           color="#2e7d32" if srm.ok else "#c62828")  # fmt: skip
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("share of users, %")
    ax.set_title(f"sample ratio: {'OK' if srm.ok else 'MISMATCH'} (p = {srm.p_value:.3g})")
    ax.legend(fontsize=8)
    return _png(fig)


def _table(metric: MetricReport) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in metric_rows(metric):
        if row[3] not in ("", "baseline") and not any(row[4:-1]) and "±" not in row[3]:
            # no comparison possible: say why across the columns
            body.append(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row[:3])
                + f"<td class='note' colspan='{len(COLUMNS) - 4}'>{html.escape(row[3])}</td>"
                + f"<td>{html.escape(row[-1])}</td></tr>"
            )  # fmt: skip
            continue
        cells = []
        for column, cell in zip(COLUMNS, row, strict=True):
            cls = f' class="{cell}"' if column == "verdict" and cell in ("better", "worse") else ""
            cells.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_BANNER = {"ok": ("srm-ok", "✓"), "warn": ("warn", "!"), "error": ("srm-bad", "✗")}


def integrity_section(report: Report) -> str:
    """The integrity checks, one banner each, worst first."""
    rows = []
    for check in integrity_checks(report):
        cls, icon = _BANNER[check.status]
        slug = check.name.replace(" ", "-")
        rows.append(
            f'<div class="banner {cls}" id="check-{slug}">{icon} <b>{html.escape(check.name)}'
            f"</b>: {html.escape(check.message)}</div>"
        )
    return "<section class='checks'><h2>Integrity checks</h2>" + "".join(rows) + "</section>"


def render_html(report: Report) -> str:
    """The whole report page."""
    esc = html.escape
    start, end = _times([report.start_ms, report.end_ms])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>trimtab report: {esc(report.experiment)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Experiment {esc(report.experiment)}</h1>",
        f"<p class='meta'>key <code>{esc(report.key)}</code> on slot(s) "
        f"{esc(', '.join(report.slots))} · {report.users:,} users · first exposures "
        f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC · α = {report.alpha:g} · "
        f"{'sequential (always valid)' if report.sequential else 'fixed horizon'} · "
        f"correction {esc(report.correction or 'none')}</p>",
        integrity_section(report),
    ]
    violated = [m.name for m in report.metrics if m.violated]
    if violated:
        parts.append(
            f"<div class='banner srm-bad'>Guardrail violated: {esc(', '.join(violated))}</div>"
        )
    for metric in report.metrics:
        tag = ""
        if metric.guardrail:
            cls = "guardrail violated" if metric.violated else "guardrail"
            tag = f" <span class='{cls}'>guardrail ({esc(metric.direction)} is bad)</span>"
        parts.append(f"<h2>{esc(metric.name)} <small>({esc(metric.type)})</small>{tag}</h2>")
        if metric.description:
            parts.append(f"<p class='meta'>{esc(metric.description)}</p>")
        parts.append(_table(metric))
        parts.append(effect_plot(report, metric))
    parts.append("<h2>Exposures</h2>")
    parts.append(exposures_plot(report))
    parts.append(srm_plot(report))
    parts.append("</body></html>")
    return "\n".join(parts)
