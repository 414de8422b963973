"""`trimtab bench live`: the live loop under many concurrent WebSocket sessions.

A collector runs in its own process (uvicorn, the demo config with consent implied); this
process opens ``sessions`` real WebSocket clients that read articles the way the tracker
reports them: a page view, then scroll and hover batches every ``interval_ms``. Reading deeper
and lingering on the picture change the ``cta`` and ``review`` slots, so the server pushes
adjustments. The server records, per push, the time from the batch arriving to the adjustment
leaving (what the target is about); the clients record the round trip they see as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SECRET = "sk_bench"


@dataclass
class LiveResult:
    sessions: int
    seconds: float
    batches_sent: int
    events_sent: int
    pushes_received: int
    server: dict
    client_rtt_us: list[float] = field(default_factory=list)

    @property
    def client_median_us(self) -> float:
        return statistics.median(self.client_rtt_us) if self.client_rtt_us else float("nan")

    @property
    def client_p99_us(self) -> float:
        if not self.client_rtt_us:
            return float("nan")
        ordered = sorted(self.client_rtt_us)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "TRIMTAB_SECRET_KEY": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "trimtab_bench.live", "--serve", str(port), str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_healthy(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"bench server on port {port} did not become healthy")


def admin_get(port: int, path: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {SECRET}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def _serve(port: int, data_dir: str) -> None:
    """The server side: the demo config with implied consent, on uvicorn."""
    import uvicorn

    from trimtab.config import load_config
    from trimtab.demo.server import DEMO_CONFIG, build_app

    config = load_config(DEMO_CONFIG)
    config.site.consent = "implied"
    config.site.rate_limit_per_s = 1e6
    config.site.rate_burst = 10**6
    app = build_app(config, data_dir=data_dir)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", lifespan="on"
    )


async def _session_loop(
    index: int,
    port: int,
    stop_at: float,
    interval_ms: float,
    counters: dict[str, int],
    rtts: list[float],
) -> None:
    import websockets

    from trimtab.identity import sign_visitor_id

    rnd = random.Random(index)
    user = sign_visitor_id(SECRET, f"bench-user-{index}")  # as the site's backend mints it
    url = f"ws://127.0.0.1:{port}/v1/live?key=pk_demo"
    seq = 0
    async with websockets.connect(url, max_queue=None) as ws:
        visit = 0
        while time.monotonic() < stop_at:
            visit += 1
            session = f"bench-{index}-v{visit}"
            category = rnd.choice(["politics", "tech", "science", "sport", "culture", "travel"])
            page = f"/article/{category}-{rnd.randrange(7)}"
            context = {
                "user_id": user,
                "session_id": session,
                "page": page,
                "page_category": category,
                "page_view_id": f"{session}-p",
            }

            def event(kind: str, context: dict = context, **fields: object) -> dict:
                nonlocal seq
                seq += 1
                return {
                    "kind": kind,
                    "event_id": f"{context['session_id']}-{seq}",
                    "ts": time.time() * 1000,
                    **context,
                    **fields,
                }

            slots = ["hero", "rail", "cta", "review"]
            # as the tracker does: the hello carries the page view, decided after it
            hello = {"type": "hello", **context, "slots": slots}
            hello["events"] = [event("page_view", url=page, slots=slots)]
            await ws.send(json.dumps(hello))
            await ws.recv()  # the first decisions
            await ws.recv()  # the ack of the page view
            script: list[list[dict]] = []
            for step in range(1, 11):
                batch = [event("scroll", depth=step / 10, velocity=rnd.uniform(200, 900))]
                if step in (4, 6, 8):
                    batch.append(
                        event(
                            "hover",
                            element=f"img-{page}",
                            element_kind="image",
                            category=category,
                            dwell_ms=1100,
                        )
                    )
                script.append(batch)
            for batch in script:
                if time.monotonic() >= stop_at:
                    break
                await asyncio.sleep(interval_ms / 1000 * rnd.uniform(0.5, 1.5))
                sent = time.perf_counter()
                await ws.send(json.dumps({"type": "events", "events": batch}))
                counters["batches"] += 1
                counters["events"] += len(batch)
                while True:  # pushes (if any) come before the ack
                    message = json.loads(await ws.recv())
                    if message["type"] == "decisions":
                        counters["pushes"] += 1
                        rtts.append((time.perf_counter() - sent) * 1e6)
                    elif message["type"] == "ack":
                        break


async def _drive(sessions: int, port: int, seconds: float, interval_ms: float) -> LiveResult:
    counters = {"batches": 0, "events": 0, "pushes": 0}
    rtts: list[float] = []
    # open connections gradually so start-up is not measured as load
    stop_at = time.monotonic() + seconds + sessions * 0.005
    tasks = []
    for i in range(sessions):
        tasks.append(
            asyncio.create_task(_session_loop(i, port, stop_at, interval_ms, counters, rtts))
        )
        await asyncio.sleep(0.005)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} sessions failed; first: {failures[0]!r}")
    return LiveResult(
        sessions=sessions,
        seconds=seconds,
        batches_sent=counters["batches"],
        events_sent=counters["events"],
        pushes_received=counters["pushes"],
        server={},
        client_rtt_us=rtts,
    )


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def console_cookie(port: int, name: str) -> str:
    """Log in to /console as an operator would (the login form); the session cookie."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = f"name={name}&key={SECRET}"
    conn.request(
        "POST",
        "/console/login",
        body,
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    cookie = response.getheader("set-cookie") or ""
    if response.status != 303 or not cookie.startswith("tt_console="):
        raise RuntimeError(f"console login failed: {response.status}")
    return cookie.split(";", 1)[0]


class OpenConsoles:
    """``n`` consoles on the Live tab: each holds the live stream (SSE) and reads it all."""

    def __init__(self, port: int, n: int) -> None:
        import threading

        self.port, self.stop, self.bytes, self.threads = port, threading.Event(), [0] * n, []
        for i in range(n):
            cookie = console_cookie(port, f"bench-{i}")
            thread = threading.Thread(target=self._read, args=(i, cookie), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _read(self, i: int, cookie: str) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/console/stream", headers={"Cookie": cookie})
        response = conn.getresponse()
        while not self.stop.is_set():
            chunk = response.read1(65536)
            if not chunk:
                break
            self.bytes[i] += len(chunk)
        conn.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def run(
    sessions: int = 200, seconds: float = 10.0, interval_ms: float = 250.0, consoles: int = 0
) -> LiveResult:
    """Start a server, drive it with ``sessions`` clients, return both sides' latencies.

    With ``consoles`` the server also streams the console's Live tab to that many operators
    for the whole run (the added cost of watching it)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-live-") as tmp:
        server = start_server(port, Path(tmp))
        watching = None
        try:
            wait_healthy(port)
            watching = OpenConsoles(port, consoles) if consoles else None
            # a short warm-up, then reset the server's samples
            asyncio.run(_drive(min(sessions, 10), port, 1.0, interval_ms))
            admin_get(port, "/v1/admin/latency?reset=1")
            cpu_before = process_cpu_s(server.pid)
            result = asyncio.run(_drive(sessions, port, seconds, interval_ms))
            cpu_after = process_cpu_s(server.pid)
            result.server = admin_get(port, "/v1/admin/latency")
            # CPU seconds the server used during the run: its cost, less sensitive than
            # latency to other work on a shared machine
            result.server["cpu_s"] = cpu_after - cpu_before
            if watching is not None:
                result.server["console_bytes"] = sum(watching.bytes)
        finally:
            if watching is not None:
                watching.close()
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
            if server.poll() is None:
                server.kill()
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]), sys.argv[3])
    else:
        print("usage: python -m trimtab_bench.live --serve PORT DATA_DIR", file=sys.stderr)
        sys.exit(2)
