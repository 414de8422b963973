"""`trimtab bench console`: the console's time to first render, in real Chromium.

`trimtab demo` runs in its own process; Chromium (Debian's, through Playwright) logs in once and
then loads /console again and again. Per load: navigation start → first contentful paint
(the browser's paint timing) and → the first live figures drawn (the console's
``tt-console-first-render`` mark: the first server-sent ``stats`` event rendered).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.support import launch_chromium

SECRET = "sk_bench_console"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def run(loads: int = 30) -> dict[str, dict[str, float]]:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-console-") as tmp:
        server = subprocess.Popen(
            [sys.executable, "-m", "trimtab.cli", "demo", "--port", str(port), "--data-dir", tmp],
            env={**os.environ, "TRIMTAB_SECRET_KEY": SECRET},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the demo did not start") from None
                    time.sleep(0.1)
            paint: list[float] = []
            live: list[float] = []
            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto(url + "/console")
                page.fill("#name", "bench")
                page.fill("#key", SECRET)
                page.click("#login")
                page.wait_for_selector("body[data-ready]")
                for _ in range(loads):
                    page.goto(url + "/console")
                    page.wait_for_selector("body[data-ready]")
                    live.append(
                        page.evaluate(
                            "performance.getEntriesByName('tt-console-first-render')[0].startTime"
                        )
                    )
                    fcp = page.evaluate(
                        "(performance.getEntriesByName('first-contentful-paint')[0] || {})"
                        ".startTime || 0"
                    )
                    if fcp:
                        paint.append(fcp)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    out = {"first live figures drawn": _quantiles(live)}
    if paint:
        out = {"first contentful paint": _quantiles(paint), **out}
    return out
