"""`trimtab report` and `trimtab bench stats`: Typer-ready command functions.

The main app registers them (``app.command("report")(report)``,
``bench_app.command("stats")(bench_stats)``); each also works as a plain function.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from trimtab.experiments.report import COLUMNS, Report, integrity_checks, metric_rows

console = Console()
# Below this terminal width the per-metric table is transposed (one column per arm).
WIDE_TABLE = 150
err = Console(stderr=True, soft_wrap=True)  # an error is one line, whatever the width


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Any]:
    """A ``(step, done, total)`` callback drawing one Rich progress bar per step."""
    if not enabled:
        yield None
        return
    bars = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.completed:>12,.0f} / {task.total:,.0f} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(step: str, done: int, total: int | None) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=total or done or 1)
        bars.update(tasks[step], completed=done, total=total or done or 1)

    with bars:
        yield update


def print_report(report: Report, out: Console | None = None) -> None:
    """The report as Rich tables, SRM status first (a red panel when traffic is off)."""
    out = out or console
    users = ", ".join(f"{a.name}: {a.users:,}" for a in report.arms)
    out.print(
        f"[bold]experiment {report.experiment}[/] (key {report.key}, slots "
        f"{', '.join(report.slots)}) — {report.users:,} users ({users}); "
        f"{'sequential' if report.sequential else 'fixed-horizon'} tests, α = {report.alpha:g}"
    )
    checks = integrity_checks(report)
    for check in checks:
        if check.status == "error":
            out.print(
                Panel(
                    f"[bold]{check.message}[/]",
                    title=f"✗ {check.name.upper()}",
                    style="bold white on red",
                )
            )
        elif check.status == "warn":
            out.print(f"[bold yellow]! {check.name}:[/] [yellow]{check.message}[/]")
        else:
            out.print(f"[green]✓ {check.name}:[/] {check.message}")
    for metric in report.metrics:
        title = f"{metric.name} ({metric.type}{', CUPED' if metric.cuped else ''})"
        if metric.guardrail:
            title += f" — guardrail, {metric.direction} is bad"
            if metric.violated:
                title += " — [bold red]VIOLATED[/]"
        rows = metric_rows(metric)
        for row in rows:
            style = {"better": "green", "worse": "red"}.get(row[-1])
            if style:
                row[-1] = f"[bold {style}]{row[-1]}[/]"
        table = Table(title=title, title_justify="left")
        if out.width >= WIDE_TABLE:
            for column in COLUMNS:
                table.add_column(column, justify="left" if column == "variant" else "right")
            for row in rows:
                table.add_row(*row)
        else:  # a narrow terminal: one column per arm instead
            table.add_column("")
            for row in rows:
                table.add_column(row[0], justify="right")
            for i, column in enumerate(COLUMNS[1:], start=1):
                table.add_row(column, *(row[i] for row in rows))
        out.print(table)


def report(
    experiment: Annotated[str, typer.Argument(help="Experiment name in the config.")],
    config: Annotated[Path, typer.Argument(help="Site config file (YAML or TOML).")],
    data_dir: Annotated[
        Path | None, typer.Option(help="The data dir with the logs (default: from config).")
    ] = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write an HTML report with plots to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> Report:
    """Analyse an experiment: every metric, every arm against the baseline, SRM check first."""
    from trimtab.config import ConfigError, load_config
    from trimtab.experiments.report import analyze
    from trimtab.experiments.spec import experiments_of

    try:
        site = load_config(config)
    except ConfigError as exc:
        err.print(f"[bold red]invalid config[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    declared = experiments_of(site).experiments
    if experiment not in declared:
        known = ", ".join(declared) or "none"
        err.print(
            f"[bold red]no experiment {escape(repr(experiment))}[/] in {escape(str(config))} "
            f"(declared: {escape(known)})",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        # progress bars only on a terminal: elsewhere Rich ends them with a blank line
        with progress_bars(not as_json and err.is_terminal) as bar:
            result = analyze(site, experiment, data_dir, progress=bar)
    except FileNotFoundError as exc:
        err.print(
            f"[bold red]cannot report {escape(repr(experiment))}:[/] {escape(str(exc))}",
            highlight=False,
        )
        raise typer.Exit(2) from None
    if as_json:
        print(msgspec.json.encode(result).decode())
    else:
        print_report(result)
    if html is not None:
        from trimtab.experiments.html import render_html

        html.write_text(render_html(result), encoding="utf-8")
        if not as_json:
            console.print(f"HTML report written to {html}")
    return result


def bench_stats(
    exposures: Annotated[int, typer.Option(help="Exposures (users) to generate.")] = 1_000_000,
    aa: Annotated[int, typer.Option(help="A/A experiments to simulate.")] = 2000,
    quick: Annotated[bool, typer.Option(help="100,000 exposures and 500 A/A (a smoke run).")] = (
        False
    ),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
) -> dict[str, Any]:
    """Report time over synthetic logs (default 1,000,000 exposures) and A/A false positives."""
    from trimtab.extras import bench_module

    stats = bench_module("stats")

    if quick:
        exposures, aa = min(exposures, 100_000), min(aa, 500)
    with progress_bars() as bar:
        result = stats.run(exposures, aa_experiments=aa, progress=bar)
    table = Table(title="trimtab bench stats")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("exposures / events / decisions written",
         f"{result.exposures:,} / {result.events:,} / {result.decisions:,}"),
        ("generate + write SQLite", f"{result.generate_s:.1f} s"),
        ("report end to end (read, DuckDB, statistics)", f"{result.report_s:.1f} s"),
        ("rows read", f"{result.rows_read:,}"),
        ("throughput", f"{result.rows_per_s:,.0f} rows/s"),
    ]  # fmt: skip
    if result.html_s is not None:
        rows.append(("HTML with plots", f"{result.html_s:.1f} s"))
    a = result.aa
    rows += [
        (f"A/A: {a['n_experiments']:,} experiments × {a['looks']} looks, α = {a['alpha']}", ""),
        ("  fixed horizon, final look only", f"{100 * a['fixed_final_look_fpr']:.1f}%"),
        ("  fixed horizon, peeking at every look", f"{100 * a['fixed_peeking_fpr']:.1f}%"),
        ("  sequential, peeking at every look", f"{100 * a['sequential_peeking_fpr']:.1f}%"),
        ("  A/A simulation time", f"{result.aa_s:.2f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    figures: dict[str, Any] = result.as_dict()
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return figures
