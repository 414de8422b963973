"""Console sessions: log in with the secret key, then a session cookie and a CSRF token.

- The login form takes the site's secret key (compared in constant time) and a name, which
  the audit trail records with each change. Failed attempts are limited per client address.
- The session cookie is signed with a key derived from the secret key (HMAC-SHA256), so every
  worker process and every machine serving the site accepts it without shared state; it is
  ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it),
  ``Path=/console``, and ``Secure`` behind HTTPS.
- Every state-changing request carries the session's CSRF token in ``X-CSRF-Token`` (an HMAC of
  the session id); a request without it, or with another session's, is refused. Its
  ``Origin``, when sent, must be ours.
- A session ends after ``idle_s`` without a request (the cookie is renewed as it is used),
  after ``max_age_s`` in all, at logout, or when the secret key changes; a stale session is
  refused like none. Logout revokes the session in the process that served it and deletes the
  cookie in the browser; other processes stop accepting a copy of it when it goes idle.

>>> sessions = Sessions()
>>> s = sessions.login("sk_1", "sk_1", "ana", "10.0.0.1")
>>> sessions.get(s.token, "sk_1").name
'ana'
>>> sessions.get(s.token, "sk_2") is None  # a new secret key ends every session
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "tt_console"
RENEW_AFTER_S = 60.0  # a cookie older than this is renewed by the next request


@dataclass
class Session:
    id: str
    name: str
    created: float
    seen: float
    token: str  # the cookie's value
    csrf: str

    @property
    def needs_renewal(self) -> bool:
        return time.time() - self.seen > RENEW_AFTER_S


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"trimtab-console-session\x00" + secret.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(
        self,
        idle_s: float = 30 * 60,
        max_age_s: float = 12 * 3600,
        failures_per_minute: int = 10,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.failures_per_minute = failures_per_minute
        self._revoked: dict[str, float] = {}  # session id -> when it may be forgotten
        self._failures: dict[str, list[float]] = {}

    def login(self, supplied: str, secret: str, name: str, client: str) -> Session | str:
        """A new session, or why not (a sentence for the login form)."""
        now = time.time()
        recent = [t for t in self._failures.get(client, []) if now - t < 60]
        if len(recent) >= self.failures_per_minute:
            self._failures[client] = recent
            return "too many failed attempts: wait a minute"
        if not secret:
            return "the console is off: no secret key is configured (site.secret_key)"
        if not supplied or not hmac.compare_digest(supplied.encode(), secret.encode()):
            recent.append(now)
            self._failures[client] = recent
            if len(self._failures) > 10_000:
                self._failures.clear()
            return "wrong key"
        self._failures.pop(client, None)
        clean = "".join(ch for ch in name if ch.isprintable()).strip()[:80] or "admin"
        return self._issue(secrets.token_urlsafe(18), clean, now, now, secret)

    def _issue(self, sid: str, name: str, created: float, seen: float, secret: str) -> Session:
        key = _key(secret)
        body = _b64(json.dumps({"s": sid, "n": name, "c": created, "t": seen}).encode())
        token = f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"
        csrf = _b64(hmac.new(key, b"csrf\x00" + sid.encode(), hashlib.sha256).digest())
        return Session(sid, name, created, seen, token, csrf)

    def get(self, cookie: str | None, secret: str, idle: bool = True) -> Session | None:
        """The live session of a cookie; None when there is none or it went stale.

        ``idle=False`` skips the idle check (an open live stream is itself activity).
        """
        if not cookie or not secret or len(cookie) > 2_000 or "." not in cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        expected = _b64(hmac.new(_key(secret), body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(signature, expected):
            return None
        try:
            data = json.loads(_unb64(body))
            sid, name, created, seen = str(data["s"]), str(data["n"]), data["c"], data["t"]
            created, seen = float(created), float(seen)
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time()
        if sid in self._revoked or now - created > self.max_age_s:
            return None
        if idle and now - seen > self.idle_s:
            return None
        # ``needs_renewal``: the caller sets :meth:`renewed` as the cookie on its response
        return self._issue(sid, name, created, seen, secret)

    def renewed(self, session: Session, secret: str) -> str:
        """The cookie value with the idle clock restarted."""
        return self._issue(session.id, session.name, session.created, time.time(), secret).token

    def logout(self, session: Session) -> None:
        self.revoke(session.id)

    def revoke(self, sid: str) -> None:
        """End a session now in this process (logout; tests; an admin's panic)."""
        now = time.time()
        self._revoked[sid] = now + self.max_age_s
        if len(self._revoked) > 10_000:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}

    @staticmethod
    def csrf_ok(session: Session, supplied: str | None) -> bool:
        if not supplied:
            return False
        return hmac.compare_digest(session.csrf.encode(), supplied.encode())


__all__ = ["COOKIE", "Session", "Sessions"]
