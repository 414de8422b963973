"""Admin routes for models and segments (what a console shows), behind the secret key.

- ``GET  /v1/admin/models`` — what is served now (live, shadow, segments), refusals with their
  reasons, and every registered version with its stage, data window, metrics next to the
  baseline, config hash and plots;
- ``GET  /v1/admin/segments`` — the live segmentation: each segment's id, configured name,
  size, defining features and conversion with its interval, the candidates compared, and why
  a newer version was refused (``refused``, empty when none was);
- ``POST /v1/admin/models/{name}/stage`` with ``{"version": 3, "stage": "live"}`` — promote,
  shadow or retire a version; ``POST /v1/admin/models/{name}/rollback`` — back to the version
  live before;
- ``GET  /v1/admin/models/{name}/v{version}/{plot}`` — a version's PNG plots.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from trimtab.models.registry import RegistryError

if TYPE_CHECKING:
    from trimtab.admin import AdminGuard
    from trimtab.models.live import LiveModels
    from trimtab.pipeline import Pipeline

_json = msgspec.json.Encoder()
_PLOT = re.compile(r"^[a-z_]{1,40}\.png$")


class StageRequest(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    stage: str


_stage_decoder = msgspec.json.Decoder(StageRequest)


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


class AdminHost(Protocol):
    """What the model routes need of the collector: its pipeline and its admin guard."""

    @property
    def runtime(self) -> Pipeline: ...

    @property
    def admin(self) -> AdminGuard: ...


def routes(collector: AdminHost) -> list[Route]:
    """The routes, every one behind the admin guard (``collector.admin``)."""

    def live_models() -> LiveModels:
        return collector.runtime.models

    async def models(request: Request) -> Response:
        live = live_models()
        registry = live.registry
        try:
            versions = {
                name: [msgspec.to_builtins(v) for v in registry.versions(name)]
                for name in registry.names()
            }
        except RegistryError as exc:
            return _error(500, str(exc))
        return Response(
            _json.encode({"serving": live.status(), "versions": versions}),
            media_type="application/json",
        )

    async def segments(request: Request) -> Response:
        live = live_models()
        served = live.segments
        if served is None:
            return JSONResponse({"serving": None, "refused": live.errors.get("segments", "")})
        try:
            info = live.registry.get("segments", served.version)
            meta, _ = live.registry.load(info)
        except RegistryError as exc:
            return _error(500, str(exc))
        report = meta.get("report", {})
        for seg in report.get("segments", []):
            seg["name"] = live.names.get(seg["id"], "")  # names come from the current config
        return Response(
            _json.encode(
                {
                    "serving": {"version": served.version, "algorithm": served.algorithm},
                    "features": served.columns.names,
                    "report": report,
                    "candidates": meta.get("candidates", []),
                    "plots": [f"/v1/admin/models/{p}" for p in info.plots],
                    "min_p": live.min_p,
                    # a newer version refused while this one keeps serving: why
                    "refused": live.errors.get("segments", ""),
                }
            ),
            media_type="application/json",
        )

    async def stage(request: Request) -> Response:
        try:
            body = _stage_decoder.decode(await request.body())
        except msgspec.DecodeError as exc:
            return _error(400, f"expected {{version, stage}}: {exc}")
        name = request.path_params["name"]
        try:
            info = live_models().registry.set_stage(name, body.version, body.stage)
        except RegistryError as exc:
            return _error(404 if "no version" in str(exc) else 400, str(exc))
        live_models().reload()
        return Response(_json.encode(info), media_type="application/json")

    async def rollback(request: Request) -> Response:
        try:
            info = live_models().registry.rollback(request.path_params["name"])
        except RegistryError as exc:
            return _error(409, str(exc))
        live_models().reload()
        return Response(_json.encode(info), media_type="application/json")

    async def plot(request: Request) -> Response:
        name, file = request.path_params["name"], request.path_params["plot"]
        version = request.path_params["version"]
        if not _PLOT.match(file):
            return _error(404, "no such plot")
        registry = live_models().registry
        if name not in registry.names():
            return _error(404, f"no model {name!r}")
        path = registry.folder(name, version) / file
        if not path.is_file():
            return _error(404, "no such plot")
        return FileResponse(path, media_type="image/png")

    return collector.admin.routes(
        [
            Route("/v1/admin/models", models),
            Route("/v1/admin/segments", segments),
            Route("/v1/admin/models/{name}/stage", stage, methods=["POST"]),
            Route("/v1/admin/models/{name}/rollback", rollback, methods=["POST"]),
            Route("/v1/admin/models/{name}/v{version:int}/{plot}", plot),
        ]
    )
