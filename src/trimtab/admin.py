"""The one guard of every admin route: ``Authorization: Bearer <secret key>``.

Admin routes (``/v1/admin/…``, ``DELETE /v1/users/{id}``, the config and model APIs) are
declared as plain handlers and passed through :meth:`AdminGuard.routes` where they are listed,
so no handler checks the key itself and none can forget to. The guard refuses with 403 when
the site has no secret key (the admin API is off) and 401 when the request does not carry it;
keys are compared in constant time.

>>> async def reload(request):
...     "Reload the config."
>>> [(r.path, r.endpoint.__doc__) for r in AdminGuard(lambda: "sk_1").routes([Route("/r", reload)])]
[('/r', 'Reload the config.')]
>>> same_key("sk_1", "sk_1"), same_key("sk_é", "sk_1")
(True, False)
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


def same_key(supplied: str, expected: str) -> bool:
    """Constant-time comparison of two keys, any characters (compare_digest on str refuses
    non-ASCII, which turned a stray character in a key into a 500)."""
    return hmac.compare_digest(supplied.encode("utf-8", "replace"), expected.encode())


class AdminGuard:
    """Checks the secret key before an admin handler runs; ``secret`` gives the current key
    (read per request, so a reloaded config's key applies at once)."""

    def __init__(self, secret: Callable[[], str | None]) -> None:
        self.secret = secret

    def refusal(self, request: Request) -> Response | None:
        """The 401/403 answer for a request without the secret key; None when it has it."""
        secret = self.secret()
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secret:
            return _error(403, "admin API disabled: no secret key configured")
        if not supplied or not same_key(supplied, secret):
            return _error(401, "admin routes need Authorization: Bearer <secret key>")
        return None

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the guard (its name and docstring kept for the OpenAPI doc)."""

        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            denied = self.refusal(request)
            if denied is not None:
                return denied
            return await endpoint(request)

        return guarded

    def routes(self, routes: Iterable[Route]) -> list[Route]:
        """These routes with every endpoint behind the guard (paths and methods unchanged)."""
        return [
            Route(r.path, self(r.endpoint), methods=list(r.methods or ()) or None, name=r.name)
            for r in routes
        ]


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)
