"""What the abuse tests share: real `trimtab serve` processes, a load that behaves like the
tracker (a batch is sent again until it is acknowledged), and ways to look at what was stored.

Nothing here is mocked: servers are started with the CLI as an operator would, killed with
real signals, and their files are read back with SQLite (or grepped byte for byte).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import yaml

from support import free_port
from trimtab.events import Scroll, Visible, encode

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "trimtab" / "demo" / "config.yaml"
SECRET = "sk_abuse"
KEY = "pk_demo"


def site_config(where: Path, *, consent: str = "implied", **storage: Any) -> Path:
    """The demo site, without rate limits (all load comes from one address), consent implied
    (every event is stored, so acknowledged == stored), with ``storage`` overrides."""
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update(consent=consent, rate_limit_per_s=1.0e6, rate_burst=1_000_000)
    if storage:
        data.setdefault("storage", {}).update(storage)
    where.mkdir(parents=True, exist_ok=True)
    path = where / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def as_user(name: str) -> list[str]:
    """The command prefix that runs a program as another user (file modes then bind it)."""
    import pwd

    user = pwd.getpwnam(name)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    env.update(extra)
    env["TRIMTAB_SECRET_KEY"] = SECRET
    return env


class Server:
    """One `trimtab serve` process (optionally as another user, via ``setpriv``)."""

    def __init__(
        self,
        config: Path,
        data_dir: Path,
        env: dict[str, str] | None = None,
        run_as: str | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.env = env or clean_env()
        self.run_as = run_as
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"

    def command(self) -> list[str]:
        serve = [
            sys.executable, "-m", "trimtab.cli", "serve", str(self.config),
            "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        if self.run_as is None:
            return serve
        return [*as_user(self.run_as), *serve]

    def start(self, wait: bool = True) -> Server:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.env, stdout=log, stderr=log, cwd=self.data_dir.parent
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"trimtab serve exited: {self.tail()}")
            try:
                if self.request("GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"trimtab serve did not start: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = 10.0,
        admin: bool = False,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"}
            if admin:
                headers["Authorization"] = f"Bearer {SECRET}"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            payload = json.loads(raw) if raw else None
            return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        finally:
            conn.close()

    def post_events(self, events: list, timeout: float = 10.0) -> tuple[int, dict, Any]:
        """Post events under signed visitor ids (``visitor``) of their users."""
        signed = [msgspec.structs.replace(e, user_id=visitor(e.user_id)) for e in events]
        return self.request("POST", f"/v1/events?key={KEY}", encode(signed), timeout)

    def health(self, timeout: float = 10.0) -> dict:
        return self.request("GET", "/health", timeout=timeout)[2]

    def features(self, user: str, session: str = "s") -> dict:
        path = "/v1/admin/features?" + urlencode({"user_id": user, "session_id": session})
        return self.request("GET", path, admin=True)[2]

    def decide(self, user: str, session: str = "s") -> list:
        slots = list(yaml.safe_load(self.config.read_text())["slots"])
        body = json.dumps({"user_id": visitor(user), "session_id": session, "slots": slots})
        body = body.encode()
        return self.request("POST", f"/v1/decide?key={KEY}", body)[2]["decisions"]

    def erase(self, user: str) -> tuple[int, Any]:
        from urllib.parse import quote

        status, _, body = self.request(
            "DELETE", f"/v1/users/{quote(user, safe='')}", admin=True, timeout=60
        )
        return status, body


def events_for(user: str, n: int, session: str = "s") -> list:
    """``n`` events of one user with fresh ids, timestamped now (scrolls and visible time)."""
    now = time.time() * 1000.0
    out: list = []
    for i in range(n):
        event_id = uuid.uuid4().hex
        if i % 2:
            out.append(
                Visible(event_id=event_id, user_id=user, session_id=session, ts=now + i,
                        element="card", category=f"c{i % 3}", visible_ms=100.0)
            )  # fmt: skip
        else:
            out.append(
                Scroll(event_id=event_id, user_id=user, session_id=session, ts=now + i,
                       depth=min(1.0, 0.01 * (i % 100)), velocity=100.0)
            )  # fmt: skip
    return out


@dataclass
class Load:
    """Tracker-like senders: each thread posts batches and sends a batch again (same event
    ids) until it is acknowledged with a 2xx; only acknowledged ids are counted.

    ``target()`` names the server to send to now (servers are restarted under the load).
    """

    target: Callable[[], Server]
    users: list[str]
    threads: int = 4
    batch: int = 20
    pause_s: float = 0.0
    decide_every: int = 0  # also ask for decisions every n batches (decision rows)
    acked: dict[str, str] = field(default_factory=dict)  # event id -> user
    refused: int = 0  # answers that were not 2xx (503 while a store is down…)
    failures: int = 0  # connection errors (the server was killed)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        rounds = 0
        while not self._stop.is_set():
            user = rng.choice(self.users)
            batch = events_for(user, self.batch)
            while not self._stop.is_set():  # until acknowledged, like the tracker
                try:
                    status = self.target().post_events(batch, timeout=15)[0]
                except (OSError, http.client.HTTPException, ValueError):
                    status = 0  # killed mid-answer: not acknowledged, send again
                with self._lock:
                    self.sent += 1
                    if 200 <= status < 300:
                        self.acked.update((e.event_id, user) for e in batch)
                        break
                    if status:
                        self.refused += 1
                    else:
                        self.failures += 1
                time.sleep(0.05)
            rounds += 1
            if self.decide_every and rounds % self.decide_every == 0:
                with contextlib.suppress(
                    OSError, http.client.HTTPException, ValueError, KeyError, TypeError
                ):
                    self.target().decide(user)
            if self.pause_s:
                time.sleep(self.pause_s)

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)


@dataclass
class Tally:
    """Acknowledged events against what a log holds."""

    acked: int
    stored: int
    lost: int
    doubled: int

    def row(self, name: str) -> str:
        return f"| {name} | {self.acked:,} | {self.stored:,} | {self.lost} | {self.doubled} |"


def tally(acked: Iterable[str], logged: list[str]) -> Tally:
    """Lost: acknowledged but not in the log. Doubled: an id logged more than once."""
    acked_set = set(acked)
    logged_set = set(logged)
    return Tally(
        acked=len(acked_set),
        stored=len(acked_set & logged_set),
        lost=len(acked_set - logged_set),
        doubled=len(logged) - len(logged_set),
    )


def sqlite_event_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM events")]
    finally:
        conn.close()


def bus_event_ids(bus_url: str, where: Path) -> list[str]:
    from trimtab.backends import open_event_bus

    async def read() -> list[str]:
        bus = open_event_bus(bus_url, where)
        try:
            return [e.event_id async for e in bus.iter_all()]
        finally:
            await bus.close()

    return asyncio.run(read())


def grep_bytes(roots: Iterable[Path], needles: Iterable[str]) -> dict[str, list[str]]:
    """Every file under ``roots`` that contains one of ``needles`` (byte for byte)."""
    wanted = [n.encode() for n in needles]
    found: dict[str, list[str]] = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # a -journal or -wal gone between listing and reading
                continue
            for needle in wanted:
                if needle in data:
                    found.setdefault(needle.decode(), []).append(str(path))
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(every)
    return False


def visitor(user: str) -> str:
    """A user's signed visitor id, as the site's backend mints it with the secret key (signed
    ids are required by default: trimtab.identity). The profile is the user's either way."""
    from trimtab.identity import PREFIX, sign_visitor_id

    return user if user.startswith(PREFIX) else sign_visitor_id(SECRET, user)


def pseudonym(user: str) -> str:
    """The stored id of a raw user id under the abuse config's salt (the secret key)."""
    from trimtab.privacy import PrivacyGate

    return PrivacyGate(salt=SECRET.encode()).user_id(user)
