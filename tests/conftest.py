"""Shared fixtures for the tests that need real parts: Redis, NATS and Chromium.

A missing server or browser skips those tests on a developer machine and fails them in CI
(``CI=true``), where they are part of the contract. Tests that stop or restart a server start
their own instance on another loopback port (:func:`own_server`) and stop it by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import CHROMIUM, free_port, launch_chromium

REDIS_URL = os.environ.get("TRIMTAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TRIMTAB_TEST_NATS", "nats://127.0.0.1:4222")


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return False
    return True


def _require(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port} (bash scripts/ensure-services.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server's URL; skip (or fail in CI) when it is down."""
    _require("Redis", "127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    return REDIS_URL


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The shared NATS JetStream server's URL; skip (or fail in CI) when it is down."""
    _require("NATS", "127.0.0.1", int(NATS_URL.rsplit(":", 1)[1]))
    return NATS_URL


@pytest.fixture
def namespace() -> str:
    """A name unique to this test, for Redis key prefixes and NATS stream/subject names."""
    return f"tt_test_{uuid.uuid4().hex[:10]}"


class OwnServer:
    """A Redis or NATS server this test owns: start, kill, restart, always by its own pid."""

    def __init__(self, kind: str, workdir: Path, debian_nats: bool = False) -> None:
        self.kind = kind
        self.workdir = workdir
        self.debian_nats = debian_nats
        self.port = free_port()
        self.monitor_port = free_port()  # NATS's HTTP monitoring (/varz), read by durability()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/0"
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """NATS's monitoring endpoint (``?monitor=`` of a bus URL)."""
        return f"http://127.0.0.1:{self.monitor_port}"

    def command(self) -> list[str]:
        if self.kind == "redis":
            # Durable (AOF, fsync per write) so a restart keeps what was acknowledged; a
            # rewritten AOF holds commands only (no RDB preamble), so erased data leaves it.
            return [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always",
                "--aof-use-rdb-preamble", "no",
                "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning",
            ]  # fmt: skip
        # The nats-server wheel of the dev extra (2.15) fsyncs before every acknowledgement;
        # Debian's 2.9 (the fallback, or asked for) cannot, and fsyncs every two minutes.
        wheel = Path(sys.executable).parent / "nats-server"
        if wheel.exists() and not self.debian_nats:
            config = self.workdir / "nats.conf"
            config.write_text(
                f'jetstream {{ store_dir: "{self.workdir}", sync_interval: always }}\n'
            )
            return [
                str(wheel), "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), "-c", str(config),
            ]  # fmt: skip
        # Debian's by its path: under make, PATH starts with the venv's bin (the wheel's 2.15)
        debian = Path("/usr/sbin/nats-server")
        return [
            str(debian) if debian.exists() else shutil.which("nats-server") or str(debian),
            "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
            "-js", "-sd", str(self.workdir),
        ]  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not _reachable("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def _tool(kind: str) -> bool:
    name = "redis-server" if kind == "redis" else "nats-server"
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator:
    """Factory for servers owned by one test (``own_server("redis")``), stopped at the end.

    ``debian_nats=True`` runs Debian's nats-server 2.9 instead of the wheel's 2.15 (whose
    secure erase costs ~10 ms a message against ~1.4 ms: docs/reliability.md)."""
    servers: list[OwnServer] = []

    def start(kind: str, debian_nats: bool = False) -> OwnServer:
        if not _tool(kind):
            message = f"{kind} server binary not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        workdir = tmp_path / f"{kind}-{len(servers)}"
        workdir.mkdir()
        server = OwnServer(kind, workdir, debian_nats)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture
def data_dir(logs: Path, tmp_path: Path) -> Path:
    """A data dir of this test's own holding a copy of the module's event log (the module's
    ``logs`` fixture, usually :func:`support.simulated_events`), so the test may write to it."""
    shutil.copy(logs / "events.sqlite", tmp_path / "events.sqlite")
    return tmp_path


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Real Chromium driven by Playwright (never `playwright install`: Debian's build)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()
