"""`trimtab bench stats` at a toy size: the figures it returns are consistent with what it wrote."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from trimtab.experiments import cli
from trimtab_bench import stats


def test_run_returns_consistent_figures(tmp_path):
    result = stats.run(3000, aa_experiments=200, html=True, data_dir=tmp_path)
    assert result.exposures == 3000
    assert result.decisions == 3000
    # the report reads every decision and every event of the kinds its metrics need
    assert result.rows_read == result.decisions + result.events
    assert result.rows_per_s > 0 and result.report_s > 0 and result.html_s is not None
    assert result.aa["n_experiments"] == 200
    assert result.aa["sequential_peeking_fpr"] <= result.aa["fixed_peeking_fpr"]


def test_synthesize_counts_match_the_logs(tmp_path):
    import sqlite3

    made = stats.synthesize(tmp_path, users_per_arm=(300, 200), both_arms=4, seed=3)
    events = sqlite3.connect(tmp_path / "events.sqlite").execute("SELECT count(*) FROM events")
    decisions = sqlite3.connect(tmp_path / "decisions.sqlite").execute(
        "SELECT count(*) FROM decisions"
    )
    assert events.fetchone()[0] == made.events
    assert decisions.fetchone()[0] == made.decisions == 500 + 2 * 4
    assert made.exposures == 508


def test_cli_bench_stats_writes_json(tmp_path):
    app = typer.Typer()
    app.command("stats")(cli.bench_stats)
    app.command("other")(lambda: None)
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(
        app, ["stats", "--exposures", "2000", "--aa", "100", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["exposures"] == 2000
    assert "fixed_peeking_fpr" in figures["aa"]
    assert "sequential, peeking" in result.output
