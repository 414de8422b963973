"""Many processes on the real Redis and NATS behave as one embedded process.

Each test starts real ``trimtab serve`` processes (the CLI, as an operator would) and talks to
them over HTTP. Keys and streams get a fresh prefix per test and are removed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from support import drop_namespace, free_port
from trimtab.events import Consent, Scroll, encode
from trimtab.identity import sign_visitor_id, visitor_of
from trimtab.sim.synthetic import synthetic_events

pytestmark = [pytest.mark.redis, pytest.mark.nats]
DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
SECRET = "sk_scaled"
DETERMINISTIC_SLOTS = ["hero", "cta", "review"]  # the rail is a bandit: random by design
TIME_DEPENDENT = ("local_hour", "day_of_week")


class Serve:
    """One ``trimtab serve`` process."""

    def __init__(self, data_dir: Path, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trimtab.cli",
                "serve",
                str(DEMO),
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--workers",
                str(workers),
            ],
            env={**env, "TRIMTAB_SECRET_KEY": SECRET},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode()[-3000:])
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("trimtab serve did not start")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> dict:
        request = urllib.request.Request(
            self.url(path), headers={"Authorization": f"Bearer {SECRET}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes) -> dict:
        request = urllib.request.Request(self.url(path), data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _stream() -> list:
    """A reader stream: consent first for every user, then their behaviour."""
    events = synthetic_events(1500, users=30, seed=21, t0=time.time() * 1000 - 60_000)
    users = sorted({e.user_id for e in events})
    consents = [
        Consent(
            event_id=f"consent-{u}",
            user_id=u,
            session_id=f"{u}-s",
            ts=events[0].ts - 1,
            purposes={"analytics": True, "personalization": True},
        )
        for u in users
    ]
    stream = consents + events
    for e in stream:  # what a site's backend hands its pages: ids signed with the secret key
        e.user_id = sign_visitor_id(SECRET, e.user_id)
    return stream


def _features(server: Serve, user: str) -> dict:
    session = f"{visitor_of(user)}-s"
    found = server.get(f"/v1/admin/features?user_id={user}&session_id={session}")
    for key in TIME_DEPENDENT:
        found.pop(key, None)
    found.pop("id", None)  # pseudonymous ids differ by salt only if secrets differ; they do not
    return found


def _decisions(server: Serve, user: str) -> list[tuple]:
    body = json.dumps(
        {"user_id": user, "session_id": f"{visitor_of(user)}-s", "slots": DETERMINISTIC_SLOTS}
    ).encode()
    found = server.post("/v1/decide?key=pk_demo", body)["decisions"]
    return [(d["slot"], d["variant"], d["source"], d["rule_id"], d["propensity"]) for d in found]


def _backends(kind: str, prefix: str) -> dict[str, str]:
    bus = (
        f"redis://127.0.0.1:6379/0?prefix={prefix}"
        if kind == "redis"
        else f"nats://127.0.0.1:4222?stream={prefix.upper()}&prefix={prefix}"
    )
    return {"TRIMTAB_STATE": f"redis://127.0.0.1:6379/0?prefix={prefix}", "TRIMTAB_BUS": bus}


@pytest.mark.parametrize("bus", ["redis", "nats"])
def test_three_processes_match_one_embedded_process(tmp_path, bus, redis_url, nats_url):
    prefix = f"tteq{uuid.uuid4().hex[:8]}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    embedded = Serve(tmp_path / "embedded", base_env)
    scaled = [Serve(tmp_path / f"p{i}", {**base_env, **_backends(bus, prefix)}) for i in range(3)]
    try:
        events = _stream()
        # the same batches, in the same order: all to the embedded process, and round-robin
        # over the three scaled ones (so every user's events are spread over all three)
        for n, start in enumerate(range(0, len(events), 20)):
            batch = encode(events[start : start + 20])
            assert embedded.post("/v1/events?key=pk_demo", batch)["rejected"] == []
            assert scaled[n % 3].post("/v1/events?key=pk_demo", batch)["rejected"] == []
        users = sorted({e.user_id for e in events})
        for user in users:
            want_features = _features(embedded, user)
            want_decisions = _decisions(embedded, user)
            assert want_features["visible_ms_by_category"]  # a session feature: never empty here
            for server in scaled:
                assert _features(server, user) == want_features, (user, server.port)
                assert _decisions(server, user) == want_decisions, (user, server.port)
        for server in scaled:
            health = server.get("/health")
            assert health["status"] == "ok", health
    finally:
        for server in [embedded, *scaled]:
            server.stop()
        _cleanup(prefix, bus, tmp_path)


def test_serve_workers_share_state(tmp_path, redis_url, nats_url):
    prefix = f"ttwk{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    server = Serve(tmp_path / "w", {**env, **_backends("redis", prefix)}, workers=2)
    try:
        events = _stream()[:400]
        for start in range(0, len(events), 20):
            server.post("/v1/events?key=pk_demo", encode(events[start : start + 20]))
        user = events[-1].user_id
        # whichever worker answers, it sees the same features
        seen = [json.dumps(_features(server, user), sort_keys=True) for _ in range(12)]
        assert len(set(seen)) == 1
    finally:
        server.stop()
        _cleanup(prefix, "redis", tmp_path)


def test_embedded_serve_refuses_several_workers(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trimtab.cli",
            "serve",
            str(DEMO),
            "--workers",
            "2",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "needs shared backends" in " ".join(result.stderr.split())


def test_unreachable_state_store_gives_degraded_defaults_within_the_deadline(tmp_path, nats_url):
    prefix = f"ttdg{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    dead_redis = f"redis://127.0.0.1:{free_port()}/0?prefix={prefix}&socket_connect_timeout=0.2"
    env.update(
        {"TRIMTAB_STATE": dead_redis, "TRIMTAB_BUS": _backends("nats", prefix)["TRIMTAB_BUS"]}
    )
    server = Serve(tmp_path / "d", env)
    try:
        started = time.monotonic()
        u1 = sign_visitor_id(SECRET, "u1")
        body = json.dumps({"user_id": u1, "session_id": "s1", "slots": ["hero", "cta"]}).encode()
        decisions = server.post("/v1/decide?key=pk_demo", body)["decisions"]
        elapsed = time.monotonic() - started
        assert [(d["slot"], d["variant"], d["source"]) for d in decisions] == [
            ("hero", "top_story", "degraded"),
            ("cta", "newsletter", "degraded"),
        ]
        assert elapsed < 5  # answered, not hung (the deadline itself is 50 ms)
        now = time.time() * 1000
        consent = {"analytics": True, "personalization": True}
        events = [
            Consent(event_id="c1", user_id=u1, session_id="s1", ts=now, purposes=consent),
            *(
                Scroll(event_id=f"e{i}", user_id=u1, session_id="s1", ts=now + i, depth=i / 4)
                for i in range(1, 4)
            ),
        ]
        accepted = server.post("/v1/events?key=pk_demo", encode(events))
        # every event is accepted into the log (the bus) even though state is down
        assert accepted == {"accepted": 4, "rejected": []}
        health = server.get("/health")
        assert health["status"] == "degraded"
        assert any("state store" in reason for reason in health["degraded"])
    finally:
        server.stop()
        _cleanup(prefix, "nats", tmp_path)


def _cleanup(prefix: str, bus: str, root: Path) -> None:
    drop_namespace(_backends(bus, prefix)["TRIMTAB_BUS"], prefix, root)


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_collector_keeps_accepting_while_the_bus_restarts(tmp_path, kind, redis_url, own_server):
    """Kill the event bus mid-stream: nothing is refused, health says why, nothing is lost."""
    import asyncio

    from trimtab.backends import open_event_bus

    bus_server = own_server(kind)
    prefix = f"ttrs{uuid.uuid4().hex[:8]}"
    bus_url = (
        f"{bus_server.url}?prefix={prefix}"
        if kind == "redis"
        else f"{bus_server.url}?stream={prefix.upper()}&prefix={prefix}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    env.update(
        {"TRIMTAB_STATE": f"redis://127.0.0.1:6379/0?prefix={prefix}", "TRIMTAB_BUS": bus_url}
    )
    server = Serve(tmp_path / "c", env)
    events = _stream()[:600]
    batches = [encode(events[i : i + 20]) for i in range(0, len(events), 20)]
    try:
        for batch in batches[:10]:
            assert server.post("/v1/events?key=pk_demo", batch)["rejected"] == []
        bus_server.stop(signal.SIGKILL)
        for batch in batches[10:20]:  # still accepted, into the local buffer
            assert server.post("/v1/events?key=pk_demo", batch)["rejected"] == []
        assert _wait(lambda: server.get("/health")["status"] == "degraded", 20)
        health = server.get("/health")
        assert any("event bus unreachable" in r for r in health["degraded"]), health
        assert health["buffered"] > 0
        bus_server.start()  # same port, same data directory
        for batch in batches[20:]:
            assert server.post("/v1/events?key=pk_demo", batch)["rejected"] == []
        assert _wait(
            lambda: (h := server.get("/health"))["status"] == "ok" and h["buffered"] == 0, 60
        ), server.get("/health")
    finally:
        server.stop()

    async def logged_ids() -> list[str]:
        bus = open_event_bus(bus_url, tmp_path)
        ids = [e.event_id async for e in bus.iter_all()]
        await bus.close()
        return ids

    ids = asyncio.run(logged_ids())
    assert len(ids) == len(set(ids)) == len(events)  # every event, exactly once
    assert set(ids) == {e.event_id for e in events}
    _cleanup(prefix, "redis", tmp_path)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("bus", ["redis", "nats"])
def test_erasure_reaches_the_shared_state_and_the_event_log(tmp_path, bus, redis_url, nats_url):
    import asyncio

    from trimtab.backends import open_event_bus

    prefix = f"tter{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    backends = _backends(bus, prefix)
    server = Serve(tmp_path / "e", {**env, **backends})
    events = _stream()[:400]
    try:
        for start in range(0, len(events), 20):
            server.post("/v1/events?key=pk_demo", encode(events[start : start + 20]))
        victim = events[-1].user_id
        theirs = sum(1 for e in events if e.user_id == victim)
        assert _features(server, victim)["scroll_depth_max"] >= 0
        request = urllib.request.Request(
            server.url(f"/v1/users/{victim}"),
            method="DELETE",
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            erased = json.loads(r.read())
        assert erased["state"] == 1 and erased["events"] == theirs
        assert "scroll_depth_max" not in _features(server, victim)
    finally:
        server.stop()

    async def logged_users() -> tuple[set[str], int]:
        log = open_event_bus(backends["TRIMTAB_BUS"], tmp_path)
        users = [e.user_id async for e in log.iter_all()]
        await log.close()
        return set(users), len(users)

    users, count = asyncio.run(logged_users())
    pseudonymous = erased["erased"]
    assert pseudonymous not in users  # every one of their events is gone from the log
    assert count == len(events) - theirs  # and nobody else's
    _cleanup(prefix, bus, tmp_path)


@pytest.mark.parametrize("bus", ["redis", "nats"])
def test_export_copies_the_bus_log_for_reports_once(tmp_path, bus, redis_url, nats_url):
    import asyncio

    from typer.testing import CliRunner

    from trimtab.backends import open_event_bus
    from trimtab.bus.sqlite import SqliteEventLog
    from trimtab.cli import app

    prefix = f"ttex{uuid.uuid4().hex[:8]}"
    url = _backends(bus, prefix)["TRIMTAB_BUS"]
    events = _stream()[:700]

    async def publish() -> None:
        log = open_event_bus(url, tmp_path)
        await log.publish(events)
        await log.close()

    asyncio.run(publish())
    out = tmp_path / "exported"
    runner = CliRunner(env={"COLUMNS": "200"})
    try:
        for _ in range(2):  # a second export adds nothing
            result = runner.invoke(app, ["export", "--bus", url, "--data-dir", str(out)])
            assert result.exit_code == 0, result.output
        assert "700 events read from the bus, 0 new" in result.output
        local = SqliteEventLog(out / "events.sqlite")
        assert {e.event_id for e in local.iter_all()} == {e.event_id for e in events}
        assert local.count() == 700
        local.close_sync()
    finally:
        _cleanup(prefix, bus, tmp_path)


def test_sticky_assignments_are_shared_by_every_process(tmp_path, redis_url, nats_url):
    """A user bucketed by one process keeps the variation everywhere once weights change."""
    import yaml

    prefix = f"ttst{uuid.uuid4().hex[:8]}"
    data = yaml.safe_load(DEMO.read_text())
    rule = data["slots"]["hero"]["rules"][1]
    rule["sticky"] = True
    rule.pop("condition", None)  # every new user is in the test (not only readers with evidence)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    env.update(_backends("redis", prefix))

    def serve(name: str) -> Serve:
        server = Serve.__new__(Serve)
        server.port = free_port()
        server.data_dir = tmp_path / name
        server.process = subprocess.Popen(
            [sys.executable, "-m", "trimtab.cli", "serve", str(config), "--port",
             str(server.port), "--data-dir", str(server.data_dir)],
            env={**env, "TRIMTAB_SECRET_KEY": SECRET},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert _wait(lambda: server.get("/health")["status"] == "ok", 40)
        return server

    first = serve("one")
    users = [sign_visitor_id(SECRET, f"sticky-{i}") for i in range(40)]
    try:
        consent = [
            Consent(event_id=f"c-{u}", user_id=u, session_id="s", ts=time.time() * 1000,
                    purposes={"analytics": True, "personalization": True})
            for u in users
        ]  # fmt: skip
        first.post("/v1/events?key=pk_demo", encode(consent))

        def hero(server: Serve, user: str) -> str:
            body = json.dumps({"user_id": user, "session_id": "s", "slots": ["hero"]}).encode()
            return server.post("/v1/decide?key=pk_demo", body)["decisions"][0]["variant"]

        before = {u: hero(first, u) for u in users}
        assert set(before.values()) == {"top_story", "for_you"}
    finally:
        first.stop()  # an orderly stop writes what is still pending
    rule["weights"] = [1.0, 0.0]  # everyone new would now get top_story
    config.write_text(yaml.safe_dump(data))
    second = serve("two")
    try:
        assert {u: hero(second, u) for u in users} == before
    finally:
        second.stop()
        _cleanup(prefix, "redis", tmp_path)
