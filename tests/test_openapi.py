"""The OpenAPI 3.1 document (``/openapi.json``) and schemathesis against a live server.

The document must list every HTTP route of the app with the schemas that really validate the
input (msgspec's). schemathesis then reads it from a running ``trimtab serve`` subprocess and
sends what it generates (valid and invalid input, every operation, the public key, the secret
key): no answer may be a 5xx, and the server's log may hold no traceback. A short run is part
of ``make test``; a longer one is ``slow``. Figures: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from support import free_port
from trimtab.collector import create_app
from trimtab.config import load_config
from trimtab.runtime import Runtime

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"
KEY, SECRET = "pk_demo", "sk_openapi"
STREAMS = "^/(sub/|console/stream)"  # never-ending answers (server-sent events): not fuzzed


@pytest.fixture(scope="module")
def app_and_doc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openapi")
    runtime = Runtime(load_config(DEMO), tmp / "data")
    app = create_app(runtime)
    with TestClient(app) as client:
        answer = client.get("/openapi.json")
    runtime.close()
    assert answer.status_code == 200
    return app, answer.json()


def _http_routes(routes, prefix=""):
    for route in routes:
        if isinstance(route, Route):
            yield prefix + route.path, route.methods - {"HEAD"}
        elif isinstance(route, Mount):
            yield from _http_routes(route.routes, prefix + route.path)


def test_every_http_route_is_in_the_document(app_and_doc):
    app, doc = app_and_doc
    assert doc["openapi"] == "3.1.0"
    missing = []
    for path, methods in _http_routes(app.routes):
        template = path.replace(":path}", "}").replace(":int}", "}")
        for method in methods:
            if method.lower() not in doc["paths"].get(template, {}):
                missing.append(f"{method} {template}")
    assert missing == []
    assert "/v1/live" not in doc["paths"] and "/v1/live" in doc["info"]["description"]


def test_the_schemas_are_the_ones_that_validate(app_and_doc):
    _, doc = app_and_doc
    schemas = doc["components"]["schemas"]
    scroll = schemas["Scroll"]["properties"]
    assert scroll["depth"] == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert scroll["kind"] == {"enum": ["scroll"]}
    assert set(schemas["Hello"]["required"]) == {"user_id", "session_id"}
    events = doc["paths"]["/v1/events"]["post"]
    assert events["security"] == [{"publicKey": []}]
    assert events["requestBody"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/Event"
    }
    assert doc["paths"]["/v1/users/{user_id}"]["delete"]["security"] == [{"secretKey": []}]
    answer = schemas["DecideAnswer"]["properties"]
    assert "visitor_id" in answer and "decisions" in answer


class LiveServer:
    """`trimtab serve` in a subprocess, its output kept to look for tracebacks."""

    def __init__(self, workdir: Path) -> None:
        data = yaml.safe_load(DEMO.read_text())
        # one client sends everything: no per-client rate limit in the way of the fuzzing
        data["site"].update(rate_limit_per_s=1.0e6, rate_burst=1_000_000)
        config = workdir / "site.yaml"
        config.write_text(yaml.safe_dump(data))
        self.port = free_port()
        self.log = workdir / "serve.log"
        env = {**os.environ, "TRIMTAB_SECRET_KEY": SECRET}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "trimtab.cli", "serve", str(config)),
                    *("--port", str(self.port), "--data-dir", str(workdir / "data")),
                ],
                env=env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()[-2000:]
                assert time.monotonic() < deadline, "trimtab serve did not start"
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def run_schemathesis(tmp_path: Path, examples: int, phases: str, seed: int) -> dict:
    """One schemathesis run against a fresh server: requests sent and their status codes."""
    server = LiveServer(tmp_path)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.publicKey]\napi_key = "{KEY}"\n\n'
        f'[auth.openapi.secretKey]\nbearer = "{SECRET}"\n'
    )
    har = tmp_path / "run.har"
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{server.url}/openapi.json",
        *("--checks", "not_a_server_error", "--phases", phases),
        *("--max-examples", str(examples), "--seed", str(seed)),
        *("--exclude-path-regex", STREAMS, "--request-timeout", "10", "--workers", "1"),
        *("--report", "har", "--report-har-path", str(har), "--no-color"),
        *("--generation-database", "none"),  # nothing written beside the tests
    ]
    try:
        # in the test's directory: schemathesis keeps a cache in the working directory
        done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    finally:
        server.stop()
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    codes = Counter(e["response"]["status"] for e in entries)
    log = server.log.read_text(errors="replace")
    figures = {
        "requests": len(entries),
        "server_errors": sum(n for code, n in codes.items() if code >= 500),
        "codes": dict(sorted(codes.items())),
        "operations": len(
            {(e["request"]["method"], e["request"]["url"].split("?")[0]) for e in entries}
        ),
    }
    print(f"\nschemathesis ({phases}, {examples} examples, seed {seed}): {figures}")
    assert "Traceback" not in log, log[log.index("Traceback") :][:3000]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return figures


def _check(figures: dict, at_least: int) -> None:
    assert figures["server_errors"] == 0, figures
    assert figures["requests"] >= at_least, figures  # it really sent something
    assert figures["codes"].get(200, 0) > 0 and figures["codes"].get(400, 0) > 0  # both kinds


def test_schemathesis_finds_no_server_error(tmp_path):
    _check(run_schemathesis(tmp_path, examples=5, phases="examples,fuzzing", seed=11), 200)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_in_a_long_run(tmp_path):
    figures = run_schemathesis(
        tmp_path, examples=100, phases="examples,coverage,fuzzing,stateful", seed=12
    )
    _check(figures, 5000)


def test_what_schemathesis_found_stays_fixed(tmp_path):
    """The 5xx the first runs found, pinned: each is now a 4xx (or a plain answer)."""
    data = yaml.safe_load(DEMO.read_text())
    data["site"]["secret_key"] = SECRET
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    runtime = Runtime(load_config(path), tmp_path / "data")
    admin = {"authorization": f"Bearer {SECRET}"}
    with TestClient(create_app(runtime)) as client:
        huge = client.get(f"/v1/admin/config/versions/{10**30}", headers=admin)
        assert huge.status_code == 404
        assert client.get("/api/features/v\u00adXp").status_code == 401
        body = {"user_id": "u", "session_id": "s", "slots": ["cta"], "force": "cta:a~9~s\u00e9g"}
        forced = client.post(f"/v1/decide?key={KEY}", content=json.dumps(body))
        assert forced.status_code < 500, forced.text
        limit = client.get("/v1/admin/decisions?limit=null", headers=admin)
        assert limit.status_code == 400
    runtime.close()
