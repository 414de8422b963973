"""Real servers for tests: an ASGI app on uvicorn in a background thread (:func:`served`, for
browser tests), and `trimtab serve` in a subprocess (:class:`Served`, for tests that drive it
with real clients: SDKs, providers)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import yaml

from inthread import serve_app
from support import free_port


def served(app: Any, wait_s: float = 30.0) -> contextlib.AbstractContextManager[str]:
    """Serve ``app`` (lifespan included) on a free loopback port; yields its base URL (the
    in-thread server of :mod:`inthread`)."""
    return serve_app(app, wait_s=wait_s)


WAIT_S = 30.0  # upper bound for "eventually"; never a performance assertion


class Served:
    """`trimtab serve` in a subprocess on a free port, over a config file it can reload."""

    def __init__(self, workdir: Path, config: dict[str, Any], secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.config_path = workdir / "site.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "TRIMTAB_SECRET_KEY": secret}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "trimtab.cli", "serve", str(self.config_path)),
                *("--port", str(self.port), "--data-dir", str(workdir / "data")),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except OSError:
                assert self.process.poll() is None, "trimtab serve exited"
                assert time.monotonic() < deadline, "trimtab serve did not start"
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reload(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))
        r = httpx.post(
            f"{self.url}/v1/admin/reload", headers={"Authorization": f"Bearer {self.secret}"}
        )
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
