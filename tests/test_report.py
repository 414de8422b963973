"""`trimtab report`: the HTML page with its plots, the terminal table, JSON, and a holdout arm."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import time
from pathlib import Path

import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from trimtab.bus.sqlite import SqliteEventLog
from trimtab.config import parse_config
from trimtab.decide import Decision
from trimtab.decisionlog import SqliteDecisionLog
from trimtab.events import Click, Exposure
from trimtab.experiments import cli
from trimtab.experiments.html import render_html
from trimtab.experiments.report import (
    COLUMNS,
    analyze,
    integrity_checks,
    metric_rows,
    srm_check_of,
)
from trimtab.runtime import Runtime
from trimtab_bench.stats import BENCH_CONFIG, synthesize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

app = typer.Typer()
app.command("report")(cli.report)
app.command("bench-stats")(cli.bench_stats)


@pytest.fixture(scope="module")
def skewed(tmp_path_factory) -> Path:
    """A 55/45 split with a conversion lift (data dir + config file)."""
    where = tmp_path_factory.mktemp("skewed")
    synthesize(
        where / "data",
        users_per_arm=(2750, 2250),
        conversion=(0.08, 0.12),
        activity_mean=0.3,
        both_arms=2,
    )
    data = copy.deepcopy(BENCH_CONFIG)
    data["experiments"]["hero-copy-test"]["guardrails"] = ["exposures"]
    (where / "site.yaml").write_text(yaml.safe_dump(data))
    return where


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_html_report_embeds_plots_and_the_srm_alarm(skewed):
    config = parse_config(yaml.safe_load((skewed / "site.yaml").read_text()), "site.yaml")
    report = analyze(config, "hero-copy-test", skewed / "data")
    page = render_html(report)
    images = _images(page)
    # one effect plot per metric, cumulative exposures, SRM shares
    assert len(images) == len(report.metrics) + 2
    assert all(img.startswith(PNG_MAGIC) for img in images)
    assert 'class="banner srm-bad" id="check-sample-ratio"' in page
    assert "sample ratio</b>: MISMATCH" in page and "&lt; 0.001" in page
    assert "2 users saw more than one arm" in page and "assignment changed" in page
    for metric in report.metrics:
        assert f"<h2>{metric.name} " in page


def test_html_report_says_when_traffic_is_fine(tmp_path):
    synthesize(tmp_path, users_per_arm=(500, 500), activity_mean=0.2)
    report = analyze(parse_config(BENCH_CONFIG, "<b>"), "hero-copy-test", tmp_path)
    page = render_html(report)
    assert 'class="banner srm-ok" id="check-sample-ratio"' in page
    assert 'class="banner srm-bad"' not in page
    assert "as configured" in page and "flagged below p = 0.001" in page
    assert 'id="check-orphan-exposures"' in page and "orphan exposures</b>: 0 — all" in page


def test_rows_have_one_cell_per_column(skewed):
    config = parse_config(yaml.safe_load((skewed / "site.yaml").read_text()), "site.yaml")
    for metric in analyze(config, "hero-copy-test", skewed / "data").metrics:
        rows = metric_rows(metric)
        assert len(rows) == 2
        assert all(len(r) == len(COLUMNS) for r in rows)
        assert rows[0][-1] == "baseline"


def test_cli_report_prints_tables_srm_and_writes_html(skewed, tmp_path):
    out = tmp_path / "report.html"
    args = ["report", "hero-copy-test", str(skewed / "site.yaml")]
    args += ["--data-dir", str(skewed / "data"), "--html", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "SAMPLE RATIO" in result.output and "p = " in result.output
    for name in BENCH_CONFIG["experiments"]["hero-copy-test"]["metrics"]:
        assert name in result.output
    assert "cta_click" in out.read_text()
    assert _images(out.read_text())


def test_cli_report_json_is_the_report(skewed):
    args = ["report", "hero-copy-test", str(skewed / "site.yaml")]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(skewed / "data"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["srm"]["ok"] is False
    assert [a["users"] for a in data["arms"]] == [2750, 2250]
    assert data["multi_arm_users"] == 2


@pytest.mark.parametrize(
    ("experiment", "data_dir", "message"),
    [("ghost", "data", "no experiment 'ghost'"), ("hero-copy-test", "nowhere", "no such file")],
)
def test_cli_report_errors_exit_2(skewed, experiment, data_dir, message):
    args = ["report", experiment, str(skewed / "site.yaml"), "--data-dir", str(skewed / data_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


HOLDOUT_SITE = {
    "slots": {
        "hero": {
            "default": "top_story",
            "variants": {"top_story": {}, "for_you": {}},
            "rules": [
                {"id": "hero-holdout", "force": "top_story", "coverage": 0.2, "seed": "hold"},
                {
                    "id": "hero-test",
                    "key": "hero-copy-test",
                    "variations": ["top_story", "for_you"],
                },
            ],
        }
    },
    "metrics": {"cta_click": {"type": "binomial", "event": "click:cta"}},
    "experiments": {"hero-copy-test": {"metrics": ["cta_click"], "holdout": "hero-holdout"}},
}


def test_holdout_is_reported_as_another_arm_through_the_real_engine(tmp_path):
    """Decisions from the engine, exposures and clicks through the runtime's logs."""
    config = parse_config(copy.deepcopy(HOLDOUT_SITE), "holdout.yaml")
    runtime = Runtime(config, tmp_path)
    now = time.time() * 1000.0
    shown: dict[str, int] = {}
    events = []
    for i in range(600):
        user = f"user-{i}"
        (decision,) = runtime.decide(user, "s1", ["hero"])
        common = {"user_id": user, "session_id": "s1", "ts": now + i}
        events.append(
            Exposure(event_id=f"x{i}", slot="hero", variant=decision.variant,
                     decision_id=decision.decision_id, **common)
        )  # fmt: skip
        if i % 5 == 0:
            events.append(Click(event_id=f"c{i}", element="cta-1", element_kind="cta", **common))
        arm = "holdout" if decision.rule_id == "hero-holdout" else str(decision.variation)
        shown[arm] = shown.get(arm, 0) + 1
    runtime.ingest(events)
    runtime.close()
    report = analyze(config, "hero-copy-test", tmp_path)
    assert [a.name for a in report.arms] == ["top_story", "for_you", "holdout (hero-holdout)"]
    assert [a.users for a in report.arms] == [
        shown.get("0", 0),
        shown.get("1", 0),
        shown["holdout"],
    ]
    assert report.arms[2].holdout and report.arms[2].weight == 0.0
    assert 0.1 < shown["holdout"] / 600 < 0.3  # the 20 % holdout rule took its share
    assert report.srm.expected_shares[2] == 0.0
    assert len(report.metrics[0].comparison.variants) == 3


@pytest.mark.parametrize("users", [(0, 0), (40, 0), (1, 1)])
def test_reports_on_empty_or_one_sided_data_render(tmp_path, users):
    synthesize(tmp_path, users_per_arm=users)
    report = analyze(parse_config(BENCH_CONFIG, "<b>"), "hero-copy-test", tmp_path)
    assert report.users == sum(users)
    assert all(m.verdicts[1] == "no data" for m in report.metrics)
    assert len(_images(render_html(report))) == len(report.metrics) + 2


def _extra_log(where: Path, decisions: list[Decision], events: list) -> None:
    log = SqliteDecisionLog(where / "decisions.sqlite")
    for d in decisions:
        log.record([d], {"id": d.variant and f"extra-{d.decision_id}"})
    log.close_sync()
    SqliteEventLog(where / "events.sqlite").append_sync(events)


def _exposure(i: int, decision_id: str, variant: str = "top_story", user: str = "") -> Exposure:
    return Exposure(
        event_id=f"extra-x{i}", user_id=user or f"extra-u{i}", session_id="s",
        ts=1.75e12 + i, slot="hero", variant=variant, decision_id=decision_id,
    )  # fmt: skip


def test_orphan_exposures_are_an_error_that_lists_their_ids(tmp_path):
    synthesize(tmp_path, users_per_arm=(300, 300), activity_mean=0.2)
    _extra_log(tmp_path, [], [_exposure(i, f"lost-{i}") for i in range(3)])
    report = analyze(parse_config(BENCH_CONFIG, "<b>"), "hero-copy-test", tmp_path)
    assert report.integrity.orphan_exposures == 3
    assert report.integrity.orphan_ids == ["lost-0", "lost-1", "lost-2"]
    check = next(c for c in integrity_checks(report) if c.name == "orphan exposures")
    assert check.status == "error" and "lost-1" in check.message and "must be 0" in check.message
    page = render_html(report)
    assert 'class="banner srm-bad" id="check-orphan-exposures"' in page and "lost-2" in page
    output = io.StringIO()
    cli.print_report(report, Console(file=output, width=200))
    assert "ORPHAN EXPOSURES" in output.getvalue() and "lost-0" in output.getvalue()


def test_a_split_close_to_the_threshold_is_a_warning(tmp_path):
    # 1,060 vs 940 users: chi² = 7.2, p ≈ 0.007, above the 0.001 alarm but unusual
    synthesize(tmp_path, users_per_arm=(1060, 940), activity_mean=0.2)
    report = analyze(parse_config(BENCH_CONFIG, "<b>"), "hero-copy-test", tmp_path)
    assert report.srm.ok and 0.001 < report.srm.p_value < 0.01
    check = srm_check_of(report)
    assert check.status == "warn" and "close to the alarm" in check.message
    assert "0.001" in check.message and "1,060 vs 940" in check.message
    assert 'class="banner warn" id="check-sample-ratio"' in render_html(report)


def test_every_exposure_is_accounted_for(tmp_path):
    """Decisions of other rules, degraded and pre-consent decisions are counted, shown and
    kept out of the arms; a user decided into both arms is left out with the cause."""
    synthesize(tmp_path, users_per_arm=(300, 300), activity_mean=0.2, both_arms=1)
    extra = [
        Decision(slot="hero", variant="for_you", source="force", rule_id="fast-scroller",
                 decision_id="other-1"),
        Decision(slot="hero", variant="top_story", source="degraded", decision_id="deg-1"),
        Decision(slot="hero", variant="top_story", source="no_consent", decision_id="nc-1"),
        Decision(slot="hero", variant="top_story", source="no_consent", decision_id="nc-2"),
    ]  # fmt: skip
    shown = [_exposure(0, "other-1", "for_you"), _exposure(1, "deg-1"), _exposure(2, "nc-1")]
    _extra_log(tmp_path, extra, shown)
    report = analyze(parse_config(BENCH_CONFIG, "<b>"), "hero-copy-test", tmp_path)
    i = report.integrity
    assert i.outside == {"fast-scroller (force)": 1}
    assert (i.degraded_decisions, i.degraded_exposures) == (1, 1)
    assert (i.pre_consent_decisions, i.pre_consent_exposures) == (2, 1)
    assert i.orphan_exposures == 0 and report.users == 600
    assert i.multi_arm == {"reassigned": 1}
    checks = {c.name: c for c in integrity_checks(report)}
    assert checks["not personalised"].status == "warn"
    assert "2 decisions made before consent" in checks["not personalised"].message
    assert "fast-scroller (force) 1" in checks["other rules"].message
    assert "assignment changed" in checks["multiple arms"].message


def test_statistics_error_codes_read_as_sentences(tmp_path):
    synthesize(tmp_path, users_per_arm=(40, 40), conversion=(0.0, 0.0), activity_mean=0.0)
    report = analyze(parse_config(BENCH_CONFIG, "<b>"), "hero-copy-test", tmp_path)
    cells = [row[3] for m in report.metrics for row in metric_rows(m)]
    assert any("no spread to measure" in c for c in cells)
    page = render_html(report)
    assert "zero_negative" not in page.lower() and "no spread to measure" in page
