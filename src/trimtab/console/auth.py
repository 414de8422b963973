"""Console sessions: log in with the secret key, then a session cookie and a CSRF token.

- The login form takes the site's secret key (compared in constant time) and a name, which
  the audit trail records with each change. Failed attempts are limited per client address.
- The session cookie is random, ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
  other site's page sends it), ``Path=/console``, and ``Secure`` behind HTTPS.
- Every state-changing request carries the session's CSRF token in ``X-CSRF-Token``; a request
  without it, or with another session's, is refused. Its ``Origin``, when sent, must be ours.
- A session ends after ``idle_s`` without a request, after ``max_age_s`` in all, at logout, or
  when the secret key changes; a stale session is refused like none.

Sessions live in the process's memory: a restart logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "tt_console"
MAX_SESSIONS = 1_000


@dataclass
class Session:
    id: str
    csrf: str
    name: str
    key_hash: str  # of the secret key it logged in with: a new key ends the session
    created: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)


def _key_hash(key: str) -> str:
    return hashlib.sha256(b"trimtab-console\x00" + key.encode()).hexdigest()


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
        self._sessions: dict[str, Session] = {}
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
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            name=clean,
            key_hash=_key_hash(secret),
        )
        if len(self._sessions) >= MAX_SESSIONS:
            self._drop_stale(now)
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest gives way
                oldest = min(self._sessions.values(), key=lambda s: s.seen)
                self._sessions.pop(oldest.id, None)
        self._sessions[session.id] = session
        return session

    def get(self, cookie: str | None, secret: str) -> Session | None:
        """The live session of a cookie; None when there is none or it went stale."""
        if not cookie:
            return None
        session = self._sessions.get(cookie)
        if session is None:
            return None
        now = time.time()
        if (
            now - session.seen > self.idle_s
            or now - session.created > self.max_age_s
            or not secret
            or not hmac.compare_digest(session.key_hash, _key_hash(secret))
        ):
            self._sessions.pop(cookie, None)
            return None
        session.seen = now
        return session

    def logout(self, cookie: str | None) -> None:
        if cookie:
            self._sessions.pop(cookie, None)

    def expire(self, cookie: str) -> None:
        """End a session now, as if it had been idle too long (tests, and an admin's panic)."""
        session = self._sessions.get(cookie)
        if session is not None:
            session.seen = 0.0

    @staticmethod
    def csrf_ok(session: Session, supplied: str | None) -> bool:
        return bool(supplied) and hmac.compare_digest(session.csrf.encode(), supplied.encode())

    def _drop_stale(self, now: float) -> None:
        for sid, s in list(self._sessions.items()):
            if now - s.seen > self.idle_s or now - s.created > self.max_age_s:
                del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)


__all__ = ["COOKIE", "Session", "Sessions"]
