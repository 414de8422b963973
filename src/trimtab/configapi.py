"""The config admin API (behind the secret key): read, validate, update, roll back, dry-run.

- ``GET  /v1/admin/config`` — the current version: ``{"version", "config", ...}``
  (``?format=yaml`` gives the document as YAML, to commit to git);
- ``POST /v1/admin/config/validate`` with ``{"config": {...}}`` — the same validation as
  ``trimtab validate``: ``{"valid": true}`` or 422 with ``{"errors": [{"path", "problem"}]}``;
- ``PUT  /v1/admin/config`` with ``{"config", "who", "note", "base_version"}`` — validate,
  record a version and serve it; 409 when ``base_version`` is not the current version
  (someone else changed it meanwhile);
- ``GET  /v1/admin/config/versions`` — the history, newest first, each with who, when, why and
  its diff; ``GET /v1/admin/config/versions/{n}`` — one version with its document;
- ``POST /v1/admin/config/rollback`` with ``{"version", "who", "note"}`` — make an earlier
  version current again (recorded as a new version);
- ``POST /v1/admin/config/dry-run`` with ``{"config", "last"}`` — how many of the last N logged
  decisions the candidate would decide differently, per slot, with examples.

:class:`ConfigVersions` keeps the running config and the store in step: it records a change of
the YAML file that the runtime reloaded, and serves a version another process recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trimtab.config import ConfigError, SiteConfig, parse_config, read_config_data
from trimtab.configstore import ConfigStore, ConfigVersion, digest
from trimtab.decide import Engine, PolicyChoice

if TYPE_CHECKING:
    from trimtab.collector import Collector

log = logging.getLogger("trimtab.config")
MAX_DRY_RUN = 100_000


class ConfigVersions:
    """The versions of one runtime's config (``runtime.config``, ``runtime.reload``)."""

    def __init__(self, runtime: Any, path: str | Path | None = None) -> None:
        self.runtime = runtime
        self.store = ConfigStore(path or Path(runtime.data_dir) / "config.sqlite")
        self.serving = self._settle()
        self._applied = runtime.config

    # -- keeping the running config and the store in step ------------------------------------
    def _file_data(self) -> dict[str, Any] | None:
        source = self.runtime.config.source
        if not source or not Path(source).is_file():
            return None
        try:
            data = read_config_data(source)
        except ConfigError:
            return None
        return data if isinstance(data, dict) else None

    def _settle(self) -> ConfigVersion | None:
        """At start: the file's version when the file changed since it was last recorded,
        else the latest version (an API edit survives a restart)."""
        data = self._file_data()
        if data is None:  # a config made in code: record it once, then serve the latest
            latest = self.store.latest()
            if latest is None:
                built = msgspec.to_builtins(self.runtime.config)
                built.pop("source", None)
                return self.store.record(built, "start (no config file)", "file")
            try:
                self._apply(latest)
            except ConfigError as exc:
                log.error("config version %d not served: %s", latest.version, exc)
            return latest
        last_file = self.store.last_of("file")
        if last_file is None or last_file.digest != digest(data):
            return self.store.record(data, f"file {self.runtime.config.source}", "file")
        latest = self.store.latest()
        if latest is not None and latest.digest != last_file.digest:
            try:
                self._apply(latest)
            except ConfigError as exc:  # valid when recorded; a newer trimtab may disagree
                log.error("config version %d not served, the file is: %s", latest.version, exc)
                return last_file
        return latest

    def _apply(self, version: ConfigVersion) -> SiteConfig:
        config = parse_config(version.data, self.runtime.config.source)
        self.runtime.reload(config)
        self._applied = self.runtime.config
        return config

    def sync(self) -> None:
        """Record a file reload the runtime made; serve a version another process made."""
        config = self.runtime.config
        if config is not self._applied:
            self._applied = config
            data = self._file_data()
            if data is not None and (self.serving is None or self.serving.digest != digest(data)):
                self.serving = self.store.record(data, f"file {config.source}", "file")
        if self.store.latest_number() > (self.serving.version if self.serving else 0):
            latest = self.store.latest()
            if latest is not None and (
                self.serving is None or latest.digest != self.serving.digest
            ):
                try:
                    self._apply(latest)
                except ConfigError as exc:
                    log.error("config version %d refused: %s", latest.version, exc)
            self.serving = latest

    async def sync_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.sync()
            except Exception as exc:  # keep serving the config in hand
                log.warning("config versions not synced: %s", exc)

    # -- changes ------------------------------------------------------------------------------
    def validate(self, data: Any) -> SiteConfig:
        """The same validation as ``trimtab validate``; raises :class:`ConfigError`."""
        return parse_config(data, self.runtime.config.source)

    def update(
        self, data: dict[str, Any], who: str, note: str = "", origin: Any = "api"
    ) -> ConfigVersion:
        config = self.validate(data)
        version = self.store.record(data, who, origin, note)
        self.runtime.reload(config)
        self._applied = self.runtime.config
        self.serving = version
        return version

    def rollback(self, number: int, who: str, note: str = "") -> ConfigVersion:
        old = self.store.get(number)
        if old is None:
            raise KeyError(f"no config version {number}")
        return self.update(old.data, who, note or f"rollback to version {number}", "rollback")

    def close(self) -> None:
        self.store.close()


class _SamePolicy:
    """Stands in for a bandit in a dry run: which rule decides matters, not its random arm."""

    def choose_for(
        self, attrs: Mapping[str, Any], arms: list[str], decision_id: str = ""
    ) -> PolicyChoice:
        return PolicyChoice(arms[0], 1.0, "exploit", "")

    def shares(self, attrs: Mapping[str, Any], arms: list[str]) -> dict[str, float]:
        return {arm: 1.0 / len(arms) for arm in arms}


def dry_run(candidate: SiteConfig, records: list[Any]) -> dict[str, Any]:
    """How many logged decisions ``candidate`` would decide differently, from the attributes
    each one saw. A decision made by a policy counts as changed when another rule (or no
    policy) would decide it; which arm a bandit picks is random and not compared. Decisions
    shown without consent or degraded are left out (no rule chose them)."""
    from trimtab.bandits.serving import policy_specs

    policies = {spec.name: _SamePolicy() for _, _, spec in policy_specs(candidate.slots)}
    engine = Engine(candidate, policies=policies)  # no log, no sticky assignments written
    by_slot: dict[str, dict[str, int]] = {}
    examples: list[dict[str, Any]] = []
    checked = changed = 0
    for r in records:
        if r.source in ("no_consent", "degraded", "qa") or not r.features:
            continue
        counts = by_slot.setdefault(r.slot, {"checked": 0, "changed": 0})
        checked += 1
        counts["checked"] += 1
        if r.slot not in engine.slots:
            new = None
        else:
            new = engine.decide_attrs(dict(r.features), [r.slot])[0]
        if new is None:
            differs = True
        elif r.source == "policy" or new.source == "policy":
            differs = (new.source, new.rule_id) != (r.source, r.rule_id)
        else:
            differs = new.variant != r.variant
        if differs:
            changed += 1
            counts["changed"] += 1
            if len(examples) < 20:
                examples.append(
                    {
                        "decision_id": r.decision_id,
                        "slot": r.slot,
                        "was": {"variant": r.variant, "source": r.source, "rule": r.rule_id},
                        "would_be": None
                        if new is None
                        else {"variant": new.variant, "source": new.source, "rule": new.rule_id},
                    }
                )
    return {"checked": checked, "changed": changed, "by_slot": by_slot, "examples": examples}


# -- routes ----------------------------------------------------------------------------------
class _Change(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    config: dict[str, Any]
    who: str = ""
    note: str = ""
    base_version: int | None = None


class _Rollback(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    version: int
    who: str = ""
    note: str = ""


class _DryRun(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    config: dict[str, Any]
    last: int = 1000


class _Candidate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    config: dict[str, Any]


def _error(status: int, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": reason, **extra}, status_code=status)


def _invalid(exc: ConfigError) -> JSONResponse:
    return JSONResponse(
        {"valid": False, "errors": [{"path": exc.path, "problem": exc.problem}]}, status_code=422
    )


async def _body(request: Request, kind: type) -> Any:
    """The request's JSON as ``kind``, or a 400 naming the field and the reason."""
    raw = await request.body()
    if len(raw) > 1_000_000:
        return _error(413, "body larger than 1000000 bytes")
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _error(400, f"bad request: {exc}")


def _who(request: Request, given: str) -> str:
    """Who made a change: the name given (the console sends the logged-in name), bounded."""
    name = (given or request.headers.get("x-trimtab-actor", "") or "admin").strip()
    return "".join(ch for ch in name if ch.isprintable())[:80] or "admin"


def routes(collector: Collector, versions: ConfigVersions) -> list[Route]:
    """The routes, every one behind the admin guard (``collector.admin``)."""

    def current() -> dict[str, Any]:
        v = versions.serving
        return {
            "version": v.version if v else 0,
            "source": versions.runtime.config.source,
            "config": v.data if v else {},
            "at": v.at if v else None,
            "who": v.who if v else "",
        }

    async def read(request: Request) -> Response:
        body = current()
        if request.query_params.get("format") == "yaml":
            text = f"# trimtab config version {body['version']}\n" + yaml.safe_dump(
                body["config"], sort_keys=False, allow_unicode=True
            )
            return Response(text, media_type="application/yaml")
        return JSONResponse(body)

    async def validate(request: Request) -> Response:
        body = await _body(request, _Candidate)
        if isinstance(body, Response):
            return body
        try:
            versions.validate(body.config)
        except ConfigError as exc:
            return _invalid(exc)
        return JSONResponse({"valid": True})

    async def update(request: Request) -> Response:
        body = await _body(request, _Change)
        if isinstance(body, Response):
            return body
        serving = versions.serving.version if versions.serving else 0
        if body.base_version is not None and body.base_version != serving:
            return _error(
                409,
                f"config changed meanwhile: version {serving} is current, not "
                f"{body.base_version}; reload it and apply your change again",
                version=serving,
            )
        try:
            version = versions.update(body.config, _who(request, body.who), body.note)
        except ConfigError as exc:
            return _invalid(exc)
        return JSONResponse(version.summary())

    async def history(request: Request) -> Response:
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            return _error(400, "limit: an integer from 1 to 1000")
        return JSONResponse(
            {
                "current": versions.serving.version if versions.serving else 0,
                "versions": [v.summary() for v in versions.store.history(int(raw))],
            }
        )

    async def one(request: Request) -> Response:
        found = versions.store.get(request.path_params["version"])
        if found is None:
            return _error(404, f"no config version {request.path_params['version']}")
        return JSONResponse({**found.summary(), "config": found.data})

    async def rollback(request: Request) -> Response:
        body = await _body(request, _Rollback)
        if isinstance(body, Response):
            return body
        try:
            version = versions.rollback(body.version, _who(request, body.who), body.note)
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        except ConfigError as exc:
            return _invalid(exc)
        return JSONResponse(version.summary())

    async def dry(request: Request) -> Response:
        body = await _body(request, _DryRun)
        if isinstance(body, Response):
            return body
        if not 1 <= body.last <= MAX_DRY_RUN:
            return _error(400, f"last: from 1 to {MAX_DRY_RUN}")
        try:
            candidate = versions.validate(body.config)
        except ConfigError as exc:
            return _invalid(exc)
        log_ = collector.runtime.decision_log
        with contextlib.suppress(Exception):
            await collector.runtime.decisions_written()
        records = await asyncio.to_thread(log_.read, None, body.last)
        return JSONResponse({"last": body.last, **dry_run(candidate, records)})

    return collector.admin.routes(
        [
            Route("/v1/admin/config", read, methods=["GET"]),
            Route("/v1/admin/config", update, methods=["PUT"]),
            Route("/v1/admin/config/validate", validate, methods=["POST"]),
            Route("/v1/admin/config/versions", history, methods=["GET"]),
            Route("/v1/admin/config/versions/{version:int}", one, methods=["GET"]),
            Route("/v1/admin/config/rollback", rollback, methods=["POST"]),
            Route("/v1/admin/config/dry-run", dry, methods=["POST"]),
        ]
    )
