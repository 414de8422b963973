"""The command line as a user runs it: validate, decide, and the benchmarks' smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from trimtab.cli import app
from trimtab_bench import live

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


def test_an_error_naming_something_in_brackets_prints_it_verbatim(tmp_path):
    """Messages are not read as Rich markup: a name like ``[bold]b`` (or a column written
    ``features[visit_depth]``) reaches the reader whole."""
    data = yaml.safe_load(DEMO.read_text())
    data["slots"]["cta"]["rules"][0]["force"] = "[bold]offer"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2
    assert "variant '[bold]offer' is not declared" in " ".join(result.output.split())


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
    assert "choices that differ from the SDK on 1,000 users × 3 slots: 0" in result.output
    assert "events/s" in result.output


def test_bench_core_realworld_payload_matches_the_sdk():
    # wide, so the table's labels stay on one line whatever widths the figures take
    wide = CliRunner(env={"COLUMNS": "200"})
    result = wide.invoke(app, ["bench", "core", "--quick", "--payload", "realworld"])
    assert result.exit_code == 0, result.output
    assert "values that differ from the SDK on 1,000 users × 60 features: 0" in result.output
    assert "with prerequisites" in result.output and "speed-up" in result.output


def test_live_bench_smoke_pushes_adjustments_over_real_websockets():
    result = live.run(sessions=5, seconds=2.0, interval_ms=50)
    assert result.batches_sent > 20
    # every push a client read was recorded by the server, and there were some
    assert result.pushes_received > 0
    assert result.server["pushes"] >= result.pushes_received
    assert result.server["p99_us"] >= result.server["median_us"] > 0
    # each visit's hello was decided and timed by the server
    assert result.server["decides"] > 0
    assert result.server["decide_p99_us"] >= result.server["decide_median_us"] > 0


def test_live_bench_with_open_consoles_streams_to_each_of_them():
    result = live.run(sessions=3, seconds=2.0, interval_ms=50, consoles=2)
    assert result.pushes_received > 0
    # both logged in and read the live stream (stats every second, decisions as made)
    assert result.server["console_bytes"] > 2 * 200


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


# -- the traps of issue 14: each a one-line error naming its cause, or a visible warning ------
def _events_of(*users: str) -> list[dict]:
    """A page view and a deep scroll for each user (the demo's deep-reader rule applies)."""
    out = []
    for u in users:
        base = {"user_id": u, "session_id": "s"}
        out.append(
            {
                **base,
                "kind": "page_view",
                "event_id": f"p-{u}",
                "ts": 1.7e12,
                "page": "/article/x",
                "page_category": "science",
            }
        )
        out.append(
            {**base, "kind": "scroll", "event_id": f"s-{u}", "ts": 1.7e12 + 9e3, "depth": 0.9}
        )
    return out


def test_decide_names_the_events_of_other_users_it_ignores(tmp_path):
    file = tmp_path / "events.json"
    file.write_text(json.dumps(_events_of("u", "someone-else")))
    result = runner.invoke(app, ["decide", str(DEMO), "--user", "u", "--events", str(file)])
    assert result.exit_code == 0, result.output
    assert "ignored 2 event(s) of other users (someone-else)" in " ".join(result.stderr.split())


def test_decide_takes_the_one_user_of_the_events_when_none_is_given(tmp_path):
    file = tmp_path / "events.json"
    file.write_text(json.dumps(_events_of("reader-7")))
    result = runner.invoke(app, ["decide", str(DEMO), "--events", str(file), "--json"])
    assert result.exit_code == 0, result.output
    decisions = {d["slot"]: d for d in json.loads(result.stdout)}
    assert decisions["cta"]["rule_id"] == "deep-reader"  # reader-7's scroll was applied
    assert "ignored" not in result.stderr


def test_decide_missing_events_file_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nope.json"
    result = runner.invoke(app, ["decide", str(DEMO), "--events", str(missing)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert lines == [f"cannot read events {missing}: no such file"]


def test_decide_unknown_slot_fails_and_lists_the_slots():
    result = runner.invoke(app, ["decide", str(DEMO), "--slot", "hero", "--slot", "nope"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("unknown slot 'nope' is not in")
    assert "cta" in line and "'hero'" not in line
    assert result.stdout == ""


def test_decide_reasons_are_whole_at_80_columns(tmp_path):
    narrow = CliRunner(env={"COLUMNS": "80"})
    file = tmp_path / "events.json"
    file.write_text(json.dumps(_events_of("u")))
    # the slots decided by rules (the rail's bandit picks at random: its reason may differ)
    args = ["decide", str(DEMO), "--user", "u", "--events", str(file)]
    args += ["--slot", "hero", "--slot", "cta", "--slot", "review"]
    result = narrow.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    as_json = runner.invoke(app, [*args, "--json"])
    assert len(json.loads(as_json.stdout)) == 3
    for d in json.loads(as_json.stdout):
        # every word of every reason is printed unbroken, in order, after its slot's name
        block = " ".join(result.stdout.split(f"{d['slot']}: ", 1)[1].split())
        assert block.startswith(" ".join(d["reason"].split()))


def test_version():
    from trimtab import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"trimtab {__version__}"
    # a flag takes no value: help shows it without a metavar
    shown = runner.invoke(app, ["--help"]).stdout
    line = next(line for line in shown.splitlines() if "--version" in line)
    assert "<" not in line and "Print the version and exit." in line


def test_report_of_an_undeclared_experiment_is_one_line_listing_the_declared():
    result = runner.invoke(app, ["report", "nope", str(DEMO)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"no experiment 'nope' in {DEMO} (declared: hero-copy-test)"
    ]
    assert result.stdout == ""


def test_bench_models_obd_needs_the_dataset_folder_given(tmp_path, monkeypatch):
    """The product never looks for the dataset in a checkout's test data: it is given."""
    monkeypatch.delenv("TRIMTAB_OBD", raising=False)
    result = runner.invoke(app, ["bench", "models", "--only", "obd"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "cannot run the obd section without the Open Bandit Dataset: pass --obd-dir DIR or "
        "set TRIMTAB_OBD (a checkout has tests/data/obd)"
    ]
    missing = tmp_path / "obd"
    result = runner.invoke(app, ["bench", "models", "--only", "obd", "--obd-dir", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"cannot run the obd section {missing}: no such folder"]


def test_demo_on_a_taken_port_fails_before_saying_it_runs(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = runner.invoke(
            app, ["demo", "--port", str(port), "--data-dir", str(tmp_path / "demo")]
        )
        served = runner.invoke(app, ["serve", str(DEMO), "--port", str(port)])
    assert result.exit_code == 2
    assert "running at" not in result.output
    assert result.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: the port is in use"
    assert served.exit_code == 2 and "serving" not in served.stdout
    assert served.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: the port is in use"


def test_process_help_is_in_the_style_of_every_other_command():
    wide = CliRunner(env={"COLUMNS": "120"})
    result = wide.invoke(app, ["process", "--help"])
    decide_help = wide.invoke(app, ["decide", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--bus", "--state", "--group", "--consumer", "--batch"):
        assert option in result.stdout
    # the same frame (Rich's boxed options) as other commands, not argparse's "usage: python -m"
    assert "python -m trimtab.processor [-h]" not in result.stdout
    assert "─ Options ─" in result.stdout and "─ Options ─" in decide_help.stdout


def test_process_with_a_bad_config_is_one_line(tmp_path):
    result = runner.invoke(app, ["process", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"invalid config {tmp_path / 'none.yaml'}: $: file not found"


def test_unexpected_failures_are_one_line_naming_the_cause(tmp_path):
    import subprocess
    import sys

    # a bus URL of an unknown scheme reaches code that raises; the command says so in one line
    proc = subprocess.run(
        [sys.executable, "-m", "trimtab.cli", "export", "--bus", "ftp://x", "--data-dir",
         str(tmp_path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode in (1, 2), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "ftp" in lines[0]


def test_export_from_a_sqlite_log_says_it_needs_a_shared_bus(tmp_path):
    result = runner.invoke(app, ["export", "--bus", "sqlite:", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "a Redis or NATS bus" in result.output


def test_init_writes_a_valid_config_and_never_overwrites(tmp_path):
    path = tmp_path / "site" / "trimtab.yaml"
    made = runner.invoke(
        app, ["init", str(path), "--site-id", "garden", "--origin", "https://garden.example"]
    )
    assert made.exit_code == 0, made.output
    checked = runner.invoke(app, ["validate", str(path)])
    assert checked.exit_code == 0, checked.output
    data = yaml.safe_load(path.read_text())
    assert data["site"]["origins"] == ["https://garden.example"]
    assert data["site"]["public_key"].startswith("pk_") and data["site"]["id"] == "garden"
    again = runner.invoke(app, ["init", str(path)])
    assert again.exit_code == 2 and "exists (--force replaces it)" in again.stderr
    bad = runner.invoke(app, ["init", str(tmp_path / "x.yaml"), "--origin", "garden.example"])
    assert bad.exit_code == 2 and "scheme://host" in bad.stderr


def test_demo_names_the_console_key_it_really_uses(tmp_path):
    """Without TRIMTAB_SECRET_KEY the demo serves its own key: the banner must name it (it
    said "your TRIMTAB_SECRET_KEY", which nobody had set)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "TRIMTAB_SECRET_KEY"}
    env["COLUMNS"] = "200"
    demo = subprocess.Popen(
        [str(Path(sys.executable).with_name("trimtab")), "demo", "--port", str(port),
         "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # the banner comes before the server serves
            lines.append(line)
            if "console" in line:
                break
        banner = "".join(lines)
        assert "(key: sk_demo)" in banner, banner
    finally:
        demo.kill()
        demo.wait()
