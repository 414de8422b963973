"""The command line as a user runs it: validate, decide, and the benchmarks' smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from trimtab.bench import live
from trimtab.cli import app

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
runner = CliRunner()


def test_validate_ok_lists_slots():
    result = runner.invoke(app, ["validate", str(DEMO)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "subscribe_offer" in result.output


def test_validate_broken_config_prints_the_precise_error(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["slots"]["cta"]["rules"][0]["condition"] = {"scroll_depth_max": {"$between": [0, 1]}}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert f"{broken}: $.slots.cta.rules[0].condition.scroll_depth_max.$between" in flat
    assert "unknown operator" in flat


def test_decide_applies_events_and_explains(tmp_path):
    events = [
        {
            "kind": "page_view",
            "event_id": "p",
            "user_id": "u",
            "session_id": "s",
            "ts": 1.7e12,
            "page": "/article/x",
            "page_category": "science",
        },
        {
            "kind": "scroll",
            "event_id": "s1",
            "user_id": "u",
            "session_id": "s",
            "ts": 1.7e12 + 9e3,
            "depth": 0.9,
        },
        {
            "kind": "scroll",
            "event_id": "bad",
            "user_id": "u",
            "session_id": "s",
            "ts": 1.7e12,
            "depth": 9,
        },
    ]
    file = tmp_path / "events.json"
    file.write_text(json.dumps(events))
    result = runner.invoke(
        app, ["decide", str(DEMO), "--user", "u", "--session", "s", "--events", str(file), "--json"]
    )
    assert result.exit_code == 0, result.output
    decisions = {d["slot"]: d for d in json.loads(result.stdout)}
    assert decisions["cta"]["variant"] == "subscribe_offer"
    assert decisions["cta"]["rule_id"] == "deep-reader"
    assert "event 2" in result.stderr and "$[2].depth" in result.stderr


def test_bench_core_quick_runs_and_matches_the_sdk():
    result = runner.invoke(app, ["bench", "core", "--quick"])
    assert result.exit_code == 0, result.output
    assert "choices that differ from the SDK on 200 users × 3 slots: 0" in result.output
    assert "events/s" in result.output


def test_live_bench_smoke_pushes_adjustments_over_real_websockets():
    result = live.run(sessions=5, seconds=2.0, interval_ms=50)
    assert result.batches_sent > 20
    # every push a client read was recorded by the server, and there were some
    assert result.pushes_received > 0
    assert result.server["pushes"] >= result.pushes_received
    assert result.server["p99_us"] >= result.server["median_us"] > 0


def test_power_sizes_an_experiment_and_inverts_to_the_same_lift():
    wide = CliRunner(env={"COLUMNS": "200"})
    sized = wide.invoke(app, ["power", "--baseline", "0.05", "--lift", "0.1"])
    assert sized.exit_code == 0, sized.output
    n = int(sized.output.split(" users per arm")[0].replace(",", ""))
    assert 30_000 < n < 32_500  # the textbook figure for 5 % → 5.5 % is about 31,200
    mde = wide.invoke(app, ["power", "--baseline", "0.05", "--users", str(n)])
    assert mde.exit_code == 0, mde.output
    assert "(+10.0%)" in mde.output  # the detectable lift at that size is the one asked for
    both = wide.invoke(app, ["power", "--baseline", "0.05", "--lift", "0.1", "--users", "9"])
    assert both.exit_code == 2 and "exactly one of" in both.output
