"""Behind a reverse proxy: rate limits count each reader's forwarded address, not the proxy's,
and only when the proxy is trusted (`trimtab serve --forwarded-allow-ips`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from support import free_port

DEMO = Path(__file__).resolve().parents[1] / "src" / "trimtab" / "demo" / "config.yaml"


@contextmanager
def serve(tmp_path: Path, *extra: str) -> Iterator[str]:
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update({"rate_limit_per_s": 0.01, "rate_burst": 2, "secret_key": "sk_fwd"})
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "trimtab.cli", "serve", str(path), "--port", str(port),
         "--data-dir", str(tmp_path / "data"), *extra],
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def post(url: str, forwarded_for: str) -> int:
    request = urllib.request.Request(
        url + "/v1/events?key=pk_demo",
        data=b"[]",
        headers={"X-Forwarded-For": forwarded_for, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_trusted_proxy_gives_each_reader_their_own_rate_limit(tmp_path):
    with serve(tmp_path) as url:  # default: a proxy on this machine (loopback) is trusted
        assert [post(url, "203.0.113.7") for _ in range(3)] == [200, 200, 429]
        assert post(url, "198.51.100.9") == 200  # another reader, another bucket


def test_an_untrusted_proxy_is_one_client(tmp_path):
    with serve(tmp_path, "--forwarded-allow-ips", "192.0.2.1") as url:  # not us
        assert [post(url, "203.0.113.7") for _ in range(3)] == [200, 200, 429]
        assert post(url, "198.51.100.9") == 429  # the header is ignored: same client
