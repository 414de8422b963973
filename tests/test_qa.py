"""QA force links: signed, verified, shown to the holder, logged as `qa`, learned from by no
one; and in real Chromium, the link holds from page to page of the tab."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient
from typer.testing import CliRunner

from trimtab.cli import app as cli
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.identity import sign_visitor_id
from trimtab.qa import ForceError, force_link, force_token, verify_force
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
SECRET = "sk_qa"
KEY = "pk_demo"
CONSENT = {"purposes": {"analytics": True, "personalization": True}}


def test_tokens_verify_only_with_the_key_unchanged_and_in_time():
    token = force_token(SECRET, {"cta": "subscribe_offer", "hero": "x"}, time.time() + 60)
    assert verify_force(SECRET, token) == {"cta": "subscribe_offer", "hero": "x"}
    with pytest.raises(ForceError, match="bad signature"):
        verify_force("sk_other", token)
    edited = token.replace("subscribe_offer", "newsletter")
    with pytest.raises(ForceError, match="bad signature"):
        verify_force(SECRET, edited)
    old = force_token(SECRET, {"cta": "a"}, time.time() - 1)
    with pytest.raises(ForceError, match="expired"):
        verify_force(SECRET, old)
    with pytest.raises(ForceError, match="not a force token"):
        verify_force(SECRET, "cta:a")
    with pytest.raises(ForceError, match="force links are off"):
        verify_force("", token)
    with pytest.raises(ForceError, match="cannot be put in a link"):
        force_token(SECRET, {"cta": "a,b"}, time.time() + 60)


def test_force_link_adds_or_replaces_the_parameter():
    url = force_link("https://news.example/a?x=1&tt_force=old", "cta:v~9~sig")
    assert url == "https://news.example/a?x=1&tt_force=cta:v~9~sig"


def site(tmp_path: Path) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = SECRET
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def hello(user: str, force: str = "", **extra) -> dict:
    now = time.time() * 1000
    user = sign_visitor_id(SECRET, user)  # as the site's backend mints it
    consent = {
        "kind": "consent",
        "event_id": f"c-{user}",
        "user_id": user,
        "session_id": "s",
        "ts": now,
        **CONSENT,
    }
    return {
        "user_id": user,
        "session_id": "s",
        "slots": ["cta", "hero", "rail"],
        "page": "/article/a",
        "page_view_id": f"pv-{user}",
        "events": [consent],
        "force": force,
        **extra,
    }


def test_a_forced_decision_is_shown_logged_as_qa_and_in_no_experiment_or_policy(tmp_path):
    runtime = Runtime(load_config(site(tmp_path)), tmp_path / "data")
    hero_variants = list(runtime.config.slots["hero"].variants)
    token = force_token(
        SECRET,
        {"cta": "readers_like_you", "hero": hero_variants[-1], "rail": "tech"},
        time.time() + 60,
    )
    with TestClient(create_app(runtime, flush_interval_s=0.05)) as client:
        answer = client.post(f"/v1/decide?key={KEY}", json=hello("qa-1", token)).json()
        got = {d["slot"]: d for d in answer["decisions"]}
        assert answer["force"] == {
            "slots": {"cta": "readers_like_you", "hero": hero_variants[-1], "rail": "tech"}
        }
        for slot, variant in answer["force"]["slots"].items():
            assert got[slot]["variant"] == variant
            assert got[slot]["source"] == "qa" and got[slot]["rule_id"] == "tt_force"
            assert "experiment" not in got[slot] or not got[slot]["experiment"]
        # the rail's bandit chose nothing for this page: its decision is no round of its own
        policy = next(iter(runtime.policies.values()))
        assert got["rail"]["decision_id"] not in policy.decisions

        runtime.decision_log.flush_sync()
        ids = {d["decision_id"] for d in got.values() if d["source"] == "qa"}
        logged = [r for r in runtime.decision_log.read(None, 100) if r.decision_id in ids]
        assert len(logged) == 3
        assert {r.source for r in logged} == {"qa"}
        assert all(r.experiment == "" for r in logged)

        tampered = client.post(
            f"/v1/decide?key={KEY}", json=hello("qa-2", token.replace("tech", "sport"))
        ).json()
        assert tampered["force"] == {"refused": "tt_force: bad signature"}
        assert all(d["source"] != "qa" for d in tampered["decisions"])
    runtime.close()


def test_off_policy_evaluation_leaves_forced_decisions_out(tmp_path):
    from trimtab.attribution import Reward
    from trimtab.bandits import logeval

    runtime = Runtime(load_config(site(tmp_path)), tmp_path / "data")
    token = force_token(SECRET, {"rail": "tech"}, time.time() + 60)
    with TestClient(create_app(runtime, flush_interval_s=0.05)) as client:
        plain = client.post(f"/v1/decide?key={KEY}", json=hello("p-1")).json()
        forced = client.post(f"/v1/decide?key={KEY}", json=hello("p-2", token)).json()
        exposures = []
        for user, answer in (("p-1", plain), ("p-2", forced)):
            rail = next(d for d in answer["decisions"] if d["slot"] == "rail")
            exposures.append(
                {"kind": "exposure", "event_id": f"x-{user}", "session_id": "s",
                 "user_id": sign_visitor_id(SECRET, user),
                 "ts": time.time() * 1000, "slot": "rail", "variant": rail["variant"],
                 "decision_id": rail["decision_id"]}
            )  # fmt: skip
        assert client.post(f"/v1/events?key={KEY}", content=json.dumps(exposures)).is_success
    runtime.close()
    rounds = logeval.load_rounds(tmp_path / "data", "rail", Reward(window_s=3600.0))
    forced_id = next(d for d in forced["decisions"] if d["slot"] == "rail")["decision_id"]
    assert forced_id not in {r.decision_id for r in rounds}
    plain_rail = next(d for d in plain["decisions"] if d["slot"] == "rail")
    if plain_rail["source"] == "policy":  # a round of the policy's own is still there
        assert plain_rail["decision_id"] in {r.decision_id for r in rounds}


def test_cli_makes_a_link_the_server_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIMTAB_SECRET_KEY", SECRET)
    runner = CliRunner()
    made = runner.invoke(
        cli,
        ["force-link", str(DEMO), "--force", "cta:subscribe_offer", "--url", "https://x.test/a"],
    )
    assert made.exit_code == 0, made.output
    link = made.stdout.strip()
    assert link.startswith("https://x.test/a?tt_force=cta:subscribe_offer~")
    assert verify_force(SECRET, link.split("tt_force=")[1]) == {"cta": "subscribe_offer"}
    bad = runner.invoke(cli, ["force-link", str(DEMO), "--force", "cta:nope"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().startswith("unknown variant 'nope' of slot 'cta' (variants:")
    monkeypatch.delenv("TRIMTAB_SECRET_KEY")
    unsigned = runner.invoke(cli, ["force-link", str(DEMO), "--force", "cta:subscribe_offer"])
    assert unsigned.exit_code == 2 and "no secret key" in unsigned.stderr


@pytest.mark.browser
def test_the_link_holds_in_the_tab_from_page_to_page(tmp_path, browser, monkeypatch):
    from inthread import serve_app
    from trimtab.demo.server import build_app

    monkeypatch.setenv("TRIMTAB_SECRET_KEY", SECRET)
    token = force_token(SECRET, {"cta": "readers_like_you"}, time.time() + 600)
    app = build_app(data_dir=tmp_path / "demo")
    with serve_app(app) as url:
        index = urllib.request.urlopen(url + "/").read().decode()
        first, second = list(dict.fromkeys(re.findall(r'href="(/article/[^"]+)"', index)))[:2]
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{url}{first}?tt_force={token}")
        page.click("[data-consent-accept]")
        page.wait_for_selector(
            '[data-tt-slot="cta"][data-tt-variant="readers_like_you"]', state="attached"
        )
        # another page, no parameter: the tab still holds the link
        page.goto(url + second)
        page.wait_for_selector(
            '[data-tt-slot="cta"][data-tt-variant="readers_like_you"]', state="attached"
        )
        assert "Readers like you keep us going" in page.inner_text('[data-tt-slot="cta"]')
        # a fresh tab without the link sees the normal decision
        other = browser.new_page()
        other.goto(url + first)
        other.click("[data-consent-accept]")
        other.wait_for_selector('[data-tt-slot="cta"][data-tt-variant]', state="attached")
        assert other.get_attribute('[data-tt-slot="cta"]', "data-tt-variant") != "readers_like_you"
        page.close()
        other.close()
