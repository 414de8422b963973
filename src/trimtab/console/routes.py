"""The console's routes: pages, the login, its JSON API and the live stream (SSE).

Everything under ``/console`` except the login page and the static files needs a session
(:mod:`trimtab.console.auth`); every request that changes something also needs the session's
CSRF token. Changes to experiments and config go through :class:`trimtab.configapi.ConfigVersions`:
each one is a config version with who, when and the diff (the audit trail).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from trimtab.config import ConfigError
from trimtab.configapi import ConfigVersions, dry_run
from trimtab.console.auth import COOKIE, Session, Sessions
from trimtab.console.feed import quantiles_ms

if TYPE_CHECKING:
    from trimtab.collector import Collector
    from trimtab.pipeline import Pipeline

HERE = Path(__file__).parent
_json = msgspec.json.Encoder()
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make form posts say Origin: null
    "Cache-Control": "no-store",
}
REPORT_TTL_S = 15.0
STREAMED = 50  # decisions per second at most in the live stream (the page keeps 100 rows)
Handler = Callable[[Request, Session], Awaitable[Response]]


def _send(data: Any, status: int = 200) -> Response:
    """JSON (non-finite numbers as null) with the console's headers."""
    return Response(
        _json.encode(data), status, media_type="application/json", headers=SECURITY_HEADERS
    )


def _error(status: int, reason: str, **extra: Any) -> Response:
    return _send({"error": reason, **extra}, status)


class Console:
    """The console of one collector."""

    def __init__(self, collector: Collector, versions: ConfigVersions) -> None:
        self.collector = collector
        self.versions = versions
        self.sessions = Sessions()
        self.feed = collector.feed
        self._reports: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self._stats_at = 0.0
        self._stats: dict[str, Any] = {}
        self._counters: tuple[float, dict[str, float]] | None = None
        self.open_consoles = 0
        self._chunk: tuple[int, int, bytes] | None = None
        self._stats_chunk: tuple[Any, bytes] = (None, b"")

    @property
    def runtime(self) -> Pipeline:
        return self.collector.runtime

    def secret(self) -> str:
        return str(self.runtime.config.secret_key())

    # -- guards --------------------------------------------------------------------------------
    def session_of(self, request: Request, idle: bool = True) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE), self.secret(), idle=idle)

    def guard(
        self, handler: Handler, write: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                return _error(401, "not logged in, or the session expired: log in again")
            if write:
                origin = request.headers.get("origin")
                if origin and origin != _own_origin(request):
                    return _error(403, f"origin {origin} may not change this console")
                if not Sessions.csrf_ok(session, request.headers.get("x-csrf-token")):
                    return _error(403, "missing or wrong CSRF token (X-CSRF-Token)")
            response = await handler(request, session)
            if session.needs_renewal and COOKIE not in response.headers.get("set-cookie", ""):
                _set_cookie(response, request, self.sessions.renewed(session, self.secret()))
            return response

        return guarded

    # -- live figures --------------------------------------------------------------------------
    def decisions_since(self, after: int) -> tuple[bytes, int]:
        """The stream's next ``decisions`` event (the newest STREAMED at most) and the sequence
        number it reaches. Open consoles usually ask for the same range: encoded once."""
        latest = self.feed.seq
        if latest <= after:
            return b"", after
        cached = self._chunk
        if cached is not None and cached[0] == after and cached[1] == latest:
            return cached[2], latest
        fresh = self.feed.since(after, STREAMED)
        if not fresh:
            return b"", latest
        chunk = f"id: {latest}\nevent: decisions\ndata: ".encode() + _json.encode(fresh) + b"\n\n"
        self._chunk = (after, latest, chunk)
        return chunk, latest

    def stats_event(self) -> bytes:
        """The ``stats`` event, encoded once a second for every open console."""
        stats = self.stats()
        if self._stats_chunk[0] is not stats:
            self._stats_chunk = (stats, b"event: stats\ndata: " + _json.encode(stats) + b"\n\n")
        return self._stats_chunk[1]

    def counters(self) -> dict[str, float]:
        """The collector's Prometheus counters, summed per name and label value."""
        out: dict[str, float] = {}
        m = self.collector.metrics
        for metric, label in (
            (m.events, "outcome"),
            (m.decisions, "source"),
            (m.rejected, "code"),
        ):
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        key = f"{family.name}:{sample.labels.get(label, '')}"
                        out[key] = out.get(key, 0.0) + sample.value
        for family in m.pushes.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out["pushes"] = sample.value
        return out

    def stats(self) -> dict[str, Any]:
        """Rates since the last look (at most once a second, shared by every open console)."""
        now = time.monotonic()
        if now - self._stats_at < 0.9 and self._stats:
            return self._stats
        counts = self.counters()
        counts["logged_decisions"] = float(self.feed.seq)  # every decision logged, pushes too
        previous = self._counters
        self._counters = (now, counts)
        span = now - previous[0] if previous else 0.0

        def total(prefix: str) -> float:
            return sum(v for k, v in counts.items() if k.startswith(prefix))

        def rate(prefix: str) -> float:
            if not previous or span <= 0:
                return 0.0
            before = sum(v for k, v in previous[1].items() if k.startswith(prefix))
            return max(0.0, (total(prefix) - before) / span)

        pushes = list(self.collector.push_latency_s)[-5000:]
        pushes.sort()
        health = self.runtime.health()
        degraded = [r for r in (self.collector.degraded, health.get("degraded")) if r]
        self._stats = {
            "ts": time.time(),
            "events_per_s": rate("trimtab_events:accepted"),
            "decisions_per_s": rate("logged_decisions"),
            "pushes_per_s": rate("pushes"),
            "errors_per_s": rate("trimtab_requests_rejected:") + rate("trimtab_events:rejected"),
            "events": total("trimtab_events:accepted"),
            "decisions": counts["logged_decisions"],
            "pushes": counts.get("pushes", 0.0),
            "errors": total("trimtab_requests_rejected:") + total("trimtab_events:rejected"),
            "rejected_by_code": {
                k.split(":", 1)[1]: v
                for k, v in counts.items()
                if k.startswith("trimtab_requests_rejected:")
            },
            "decide": self.feed.decide_latency(),
            "push": quantiles_ms(pushes),
            "degraded": [str(r) for r in degraded],
            "open_pages": len(self.collector.hub),
            "open_consoles": self.open_consoles,
            "config_version": self.versions.serving.version if self.versions.serving else 0,
        }
        self._stats_at = now
        return self._stats

    # -- slots, experiments, bandits, visitors -------------------------------------------------
    def slots(self) -> dict[str, Any]:
        from trimtab.decide import describe_condition

        config = self.runtime.config
        series = self.feed.series()
        out = []
        for name, slot in config.slots.items():
            rules = []
            for i, r in enumerate(slot.rules):
                kind = (
                    "policy"
                    if r.policy
                    else "experiment"
                    if r.variations
                    else "rollout"
                    if r.coverage is not None and r.coverage < 1
                    else "force"
                )
                rules.append(
                    {
                        "position": i + 1,
                        "id": r.id or r.key or f"rule {i + 1}",
                        "kind": kind,
                        "enabled": r.enabled,
                        "when": describe_condition(r.condition),
                        "shows": r.force
                        or ", ".join(r.variations or [])
                        or (r.policy or {}).get("name", ""),
                        "description": r.description,
                    }
                )
            out.append(
                {
                    "name": name,
                    "description": slot.description,
                    "default": slot.default,
                    "variants": list(slot.variants),
                    "rules": rules,
                    "series": series["slots"].get(name),
                }
            )
        return {"t": series["t"], "bucket_s": series["bucket_s"], "slots": out}

    def bandits(self) -> dict[str, Any]:
        from trimtab.bandits.serving import policy_specs

        series = self.feed.series()
        out = []
        policies = self.runtime.policies
        for slot, rule_id, spec in policy_specs(self.runtime.config.slots):
            served = policies.get(spec.name)
            guard = spec.guardrail
            counts = served.counts if served is not None else {}
            out.append(
                {
                    "name": spec.name,
                    "slot": slot,
                    "rule": rule_id,
                    "type": spec.type,
                    "arms": list(spec.arms),
                    "updates": served.updates if served is not None else 0,
                    "guardrail": {
                        "declared": guard is not None,
                        "min_ratio": guard.min_ratio if guard else None,
                        "min_samples": guard.min_samples if guard else None,
                        "policy": _rate(counts.get("policy")),
                        "control": _rate(counts.get("control")),
                        "tripped": served.tripped if served is not None else "",
                    },
                    "series": series["arms"].get(slot),
                }
            )
        return {"t": series["t"], "bucket_s": series["bucket_s"], "bandits": out}

    def experiment_status(self, config: Any, key: str, slots: list[str]) -> dict[str, Any]:
        rules = []
        for slot_name in slots:
            slot = config.slots.get(slot_name)
            for r in slot.rules if slot else []:
                if (r.key or slot_name) == key and (r.variations or r.id == key):
                    rules.append((slot_name, r))
        if not rules:
            return {"status": "removed", "variations": []}
        if all(r.variations is None for _, r in rules):
            return {"status": "shipped", "variations": [], "shipped": rules[0][1].force}
        enabled = any(r.enabled for _, r in rules if r.variations)
        variations = next(list(r.variations) for _, r in rules if r.variations)
        return {"status": "running" if enabled else "stopped", "variations": variations}

    async def experiments(self) -> dict[str, Any]:
        from trimtab.experiments.spec import experiments_of

        config = self.runtime.config
        declared = experiments_of(config)
        out = []
        for name, spec in declared.experiments.items():
            key = spec.key or name
            status = self.experiment_status(config, key, list(spec.slots))
            report, problem = await self.report(name, status["status"])
            out.append(
                {"name": name, "key": key, "slots": list(spec.slots), **status,
                 "report": report, "report_problem": problem}
            )  # fmt: skip
        return {"experiments": out}

    async def report(self, name: str, status: str) -> tuple[dict[str, Any] | None, str]:
        """The experiment's report (the same code as `trimtab report`), cached a few seconds."""
        from trimtab.experiments.report import analyze

        cached = self._reports.get(name)
        if cached is not None and time.monotonic() - cached[0] < REPORT_TTL_S:
            return cached[2] or None, cached[1]
        if status in ("shipped", "removed"):
            return None, f"no report: the experiment was {status}"
        with contextlib.suppress(Exception):
            await self.runtime.decisions_written()
        try:
            report = await asyncio.to_thread(
                analyze, self.runtime.config, name, self.runtime.data_dir
            )
            summary, problem = _report_summary(report), ""
        except (KeyError, FileNotFoundError, ValueError, StopIteration) as exc:
            summary, problem = {}, f"no report yet: {exc.args[0] if exc.args else exc}"
        self._reports[name] = (time.monotonic(), problem, summary)
        return summary or None, problem

    def change_experiment(
        self, name: str, action: str, variant: str, who: str
    ) -> tuple[int, dict[str, Any]]:
        """Stop, start or ship an experiment as a new config version."""
        from trimtab.experiments.spec import experiments_of

        serving = self.versions.serving
        if serving is None:
            return 409, {"error": "no config version to change"}
        spec = experiments_of(self.runtime.config).experiments.get(name)
        if spec is None:
            return 404, {"error": f"no experiment {name!r}"}
        key = spec.key or name
        data = copy.deepcopy(serving.data)
        touched = 0
        for slot_name in spec.slots:
            rules = data.get("slots", {}).get(slot_name, {}).get("rules", [])
            for i, rule in enumerate(rules):
                if (rule.get("key") or slot_name) != key or not rule.get("variations"):
                    continue
                touched += 1
                if action == "stop":
                    rule["enabled"] = False
                elif action == "start":
                    rule["enabled"] = True
                else:  # ship: the winner for everyone the experiment took in
                    variations = rule["variations"]
                    if variant not in variations:
                        return 400, {"error": f"variant {variant!r} is not an arm: {variations}"}
                    shipped = {k: v for k, v in rule.items() if k in ("id", "condition", "why")}
                    shipped["id"] = rule.get("id") or key
                    shipped["description"] = f"shipped from experiment {name}: {variant}"
                    shipped["force"] = variant
                    rules[i] = shipped
        if not touched:
            return 409, {"error": f"experiment {name!r} has no rule with variations left"}
        note = {
            "stop": f"stopped experiment {name}",
            "start": f"started experiment {name}",
            "ship": f"shipped {variant} of experiment {name}",
        }[action]
        try:
            version = self.versions.update(data, who, note)
        except ConfigError as exc:
            return 422, {"errors": [{"path": exc.path, "problem": exc.problem}]}
        self._reports.pop(name, None)
        return 200, version.summary()

    async def visitor(self, raw: str) -> tuple[int, dict[str, Any]]:
        gate = self.collector.gate
        user = raw if raw in self.feed.visitors else gate.user_id(raw)
        if not await self.collector.prepare({user}):
            return 503, {"error": f"state unavailable: {self.collector.degraded}"}
        session = self.feed.sessions.get(user, "")
        attrs = self.runtime.features_of(user, session)
        scopes = {s.name: s.resolved_scope for s in self.runtime.config.feature_specs()}
        grouped: dict[str, dict[str, Any]] = {"page": {}, "session": {}, "user": {}, "other": {}}
        for name, value in attrs.items():
            grouped[scopes.get(name, "other")][name] = value
        with contextlib.suppress(Exception):
            await self.runtime.decisions_written()
        decisions = await asyncio.to_thread(self.runtime.decision_log.read, user, 30)
        return 200, {
            "user": user,
            "session": session,
            "features": grouped,
            "events": list(self.feed.visitors.get(user, []))[::-1],
            "decisions": [
                {
                    "ts": d.ts,
                    "slot": d.slot,
                    "variant": d.variant,
                    "source": d.source,
                    "rule": d.rule_id,
                    "reason": d.reason,
                    "p": d.propensity,
                }
                for d in decisions
            ],
        }


def _rate(pair: Any) -> dict[str, float] | None:
    if not pair:
        return None
    n, total = pair
    return {"exposures": n, "reward_rate": (total / n) if n else None}


def _report_summary(report: Any) -> dict[str, Any]:
    """What the console shows of a report: arms, SRM, each metric's effects with intervals and
    their history (the sequential boundary over time when the test is sequential)."""
    metrics = []
    from trimtab.experiments.report import explain_error, integrity_checks

    for m in report.metrics:
        arms = []
        for v in m.comparison.variants:
            effect = (v.sequential if report.sequential else None) or v.relative
            arms.append(
                {
                    "name": v.name,
                    "n": v.n,
                    "mean": v.mean,
                    "baseline": v.is_baseline,
                    "effect": None if effect is None else effect.expected,
                    "ci": None if effect is None else list(effect.ci),
                    "p_value": None if effect is None else effect.p_value,
                    # the report's sentence for a statistics code, not the raw code
                    "error": explain_error(effect.error) if effect and effect.error else None,
                }
            )
        metrics.append(
            {
                "name": m.name,
                "guardrail": m.guardrail,
                "description": m.description,
                "arms": arms,
                "verdicts": [msgspec.to_builtins(v) for v in m.verdicts],
                "over_time": [
                    {"t": p.start_ms / 1000, "users": p.users, "effects": p.effects}
                    for p in m.over_time
                ],
            }
        )
    return {
        "users": report.users,
        "arms": [{"name": a.name, "users": a.users, "weight": a.weight} for a in report.arms],
        "srm": {
            "ok": report.srm.ok,
            "p_value": report.srm.p_value,
            "message": report.srm.message,
            "threshold": report.srm.threshold,
        },
        "sequential": report.sequential,
        "integrity": [
            {"name": c.name, "status": c.status, "message": c.message}
            for c in integrity_checks(report)
        ],
        "metrics": metrics,
    }


def _own_origin(request: Request) -> str:
    # the scheme is https behind a trusted TLS proxy: uvicorn applies its X-Forwarded-Proto
    # (trimtab serve --forwarded-allow-ips); an untrusted one's header is ignored
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/console",
        max_age=12 * 3600,
    )


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    text = (HERE / "static" / "login.html").read_text(encoding="utf-8")
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(text.replace("<!--MESSAGE-->", note), status, headers=SECURITY_HEADERS)


def routes(collector: Any, versions: ConfigVersions) -> list[BaseRoute]:
    console = Console(collector, versions)
    collector.console = console

    async def page(request: Request) -> Response:
        if console.session_of(request) is None:
            return RedirectResponse("/console/login", 303)
        text = (HERE / "static" / "console.html").read_text(encoding="utf-8")
        return HTMLResponse(text, headers=SECURITY_HEADERS)

    async def login_form(request: Request) -> Response:
        return _login_page()

    async def login(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and origin != _own_origin(request):
            return _login_page(f"origin {origin} may not log in here", 403)
        raw = await request.body()
        if len(raw) > 10_000:
            return _login_page("form too large", 413)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        client = request.client.host if request.client else "unknown"
        result = console.sessions.login(
            form.get("key", ""), console.secret(), form.get("name", ""), client
        )
        if isinstance(result, str):
            status = 429 if result.startswith("too many") else 401
            return _login_page(result, status)
        response = RedirectResponse("/console", 303)
        _set_cookie(response, request, result.token)
        return response

    async def logout(request: Request, session: Session) -> Response:
        console.sessions.logout(session)
        response = _send({"logged_out": True})
        response.delete_cookie(COOKIE, path="/console")
        return response

    async def whoami(request: Request, session: Session) -> Response:
        return _send({"name": session.name, "csrf": session.csrf})

    async def live(request: Request, session: Session) -> Response:
        raw = request.query_params.get("after", "0")
        after = int(raw) if raw.isdigit() else 0
        return _send({"stats": console.stats(), "decisions": console.feed.since(after)})

    async def stream(request: Request, session: Session) -> Response:
        """Server-sent events: ``stats`` every second, ``decisions`` as they are made."""
        raw = request.headers.get("last-event-id") or request.query_params.get("after", "0")
        after = int(raw) if raw.isdigit() else console.feed.seq

        async def events() -> AsyncIterator[bytes]:
            nonlocal after
            console.open_consoles += 1
            try:
                yield b"retry: 2000\n\n"
                while True:
                    if console.session_of(request, idle=False) is None:  # the stream is use
                        yield b"event: logout\ndata: {}\n\n"
                        return
                    chunk, after = console.decisions_since(after)
                    if chunk:
                        yield chunk
                    yield console.stats_event()
                    await asyncio.sleep(1.0)
            finally:
                console.open_consoles -= 1

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def slots(request: Request, session: Session) -> Response:
        return _send(console.slots())

    async def bandits(request: Request, session: Session) -> Response:
        return _send(console.bandits())

    async def experiments(request: Request, session: Session) -> Response:
        return _send(await console.experiments())

    async def experiment_action(request: Request, session: Session) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("stop", "start", "ship"):
            return _error(404, f"unknown action {action!r}: stop, start or ship")
        try:
            body = msgspec.json.decode(await request.body() or b"{}", type=dict[str, str])
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _error(400, f"bad request: {exc}")
        if body.get("confirm") != name:
            return _error(400, f"confirm: type the experiment's name ({name}) to {action} it")
        status, answer = console.change_experiment(
            name, action, body.get("variant", ""), session.name
        )
        return _send(answer, status)

    async def visitor(request: Request, session: Session) -> Response:
        raw = request.query_params.get("user_id", "")[:256]
        if not raw:
            return _error(
                400, "user_id: give a visitor id (from the stream, or as the site sent it)"
            )
        status, answer = await console.visitor(raw)
        return _send(answer, status)

    async def config_read(request: Request, session: Session) -> Response:
        v = versions.serving
        history = [x.summary() for x in versions.store.history(50)]
        return _send(
            {"version": v.version if v else 0, "config": v.data if v else {}, "history": history}
        )

    async def _config_body(request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        if len(raw) > 1_000_000:
            return _error(413, "body larger than 1000000 bytes")
        try:
            return msgspec.json.decode(raw, type=dict[str, Any])
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _error(400, f"bad request: {exc}")

    async def config_change(request: Request, session: Session) -> Response:
        body = await _config_body(request)
        if isinstance(body, Response):
            return body
        action = request.path_params["action"]
        try:
            if action == "validate":
                versions.validate(body.get("config"))
                return _send({"valid": True})
            if action == "dry-run":
                candidate = versions.validate(body.get("config"))
                last = int(body.get("last") or 1000)
                if not 1 <= last <= 100_000:
                    return _error(400, "last: from 1 to 100000")
                with contextlib.suppress(Exception):
                    await console.runtime.decisions_written()
                records = await asyncio.to_thread(console.runtime.decision_log.read, None, last)
                return _send({"last": last, **dry_run(candidate, records)})
            if action == "apply":
                base = body.get("base_version")
                serving = versions.serving.version if versions.serving else 0
                if base is not None and base != serving:
                    return _error(409, f"config changed meanwhile: version {serving} is current")
                config = body.get("config")
                if not isinstance(config, dict):
                    return _error(400, "config: a mapping")
                v = versions.update(config, session.name, str(body.get("note", ""))[:2000])
                return _send(v.summary())
            if action == "rollback":
                number = body.get("version")
                if not isinstance(number, int):
                    return _error(400, "version: an integer")
                v = versions.rollback(number, session.name, str(body.get("note", ""))[:2000])
                return _send(v.summary())
        except ConfigError as exc:
            return _send(
                {"valid": False, "errors": [{"path": exc.path, "problem": exc.problem}]}, 422
            )
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        return _error(404, f"unknown action {action!r}")

    def g(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return console.guard(handler)

    def w(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        return console.guard(handler, write=True)

    return [
        Route("/console", page),
        Route("/console/", page),
        Route("/console/login", login_form, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", w(logout), methods=["POST"]),
        Route("/console/api/session", g(whoami)),
        Route("/console/api/live", g(live)),
        Route("/console/stream", g(stream)),
        Route("/console/api/slots", g(slots)),
        Route("/console/api/bandits", g(bandits)),
        Route("/console/api/experiments", g(experiments)),
        Route("/console/api/experiments/{name}/{action}", w(experiment_action), methods=["POST"]),
        Route("/console/api/visitor", g(visitor)),
        Route("/console/api/config", g(config_read)),
        Route("/console/api/config/{action}", w(config_change), methods=["POST"]),
        Mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static"),
        Mount("/console/vendor", StaticFiles(directory=HERE / "vendor"), name="console-vendor"),
    ]


__all__ = ["Console", "routes"]
