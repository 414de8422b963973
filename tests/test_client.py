"""The server-side client: decisions from a running trimtab, a fallback on every failure."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from inthread import serve_app
from trimtab.client import TrimtabClient, reader_id, render
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime
from trimtab.templates import fill

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
CONSENT = {"analytics": True, "personalization": True}


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_unreachable_trimtab_gives_every_slot_its_fallback():
    client = TrimtabClient(f"http://127.0.0.1:{dead_port()}", "pk_demo", timeout_s=0.2)
    page = client.decide("u", "s", ["cta", "hero"], fallback={"cta": "newsletter"})
    assert not page.ok and "Connection refused" in page.error
    assert page["cta"].variant == "newsletter" and page["cta"].source == "fallback"
    assert page["hero"].variant is None and page.variant("hero", "top_story") == "top_story"
    assert "trimtab unavailable" in page["cta"].reason


def test_a_silent_server_times_out_into_the_fallback():
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        client = TrimtabClient(f"http://127.0.0.1:{s.getsockname()[1]}", "pk", timeout_s=0.2)
        page = client.decide("u", "s", ["cta"], fallback={"cta": "newsletter"})
    assert not page.ok and "timed out" in page.error
    assert page["cta"].variant == "newsletter"


def test_decisions_from_a_running_trimtab_and_refusals_as_fallbacks(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = "sk_client"
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    with serve_app(create_app(runtime)) as url:
        client = TrimtabClient(url, "pk_demo", timeout_s=2.0)
        page = client.decide("reader", "s", ["cta", "hero"], page="/article/a", consent=CONSENT)
        assert page.ok and page["cta"].variant == "newsletter"
        assert page.visitor_id.startswith("vid.v1.")  # "reader" is not signed: a new visitor
        assert page["cta"].source == "default" and page["cta"].decision_id
        assert "morning briefing" in page["cta"].html
        logged = runtime.decision_log
        logged.flush_sync()
        assert page["cta"].decision_id in {r.decision_id for r in logged.read(None, 50)}
        refused = TrimtabClient(url, "pk_wrong", timeout_s=2.0).decide(
            "reader", "s", ["cta"], fallback={"cta": "newsletter"}
        )
        assert not refused.ok and refused.error == "HTTP 401: unknown site key"
        assert refused["cta"].variant == "newsletter"
    runtime.close()


def test_reader_ids_are_stable_opaque_and_keyed():
    a = reader_id("k1", "alice@example.com")
    assert a == reader_id("k1", "alice@example.com") and a.startswith("acct_")
    assert "alice" not in a and a != reader_id("k2", "alice@example.com")


def test_templates_fill_and_escape():
    from trimtab.client import SlotDecision

    d = SlotDecision("cta", "offer", "force", payload={"headline": "<b>Free</b>"})
    assert render("{{ headline }} for {{name}}", d, name="Ann & Bob") == (
        "&lt;b&gt;Free&lt;/b&gt; for Ann &amp; Bob"
    )
    assert fill("{{ missing }}!", {}) == "!"
