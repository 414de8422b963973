"""Signed visitor ids: a public key alone cannot act as another visitor.

A visitor id is ``vid.v1.<visitor>.<mac>``: ``<visitor>`` is random (issued by the server on a
page's first contact) or the site's own id for a signed-in reader (minted by the site's backend
with the secret key), and ``<mac>`` is an HMAC-SHA256 of the rest under a key derived from the
site's secret key. Whoever holds only the public key can use the ids the server gave them but
cannot make one for somebody else: with ``identity.require_signed`` (the default) an event
whose ``user_id`` is not a valid visitor id is refused, and a page that says hello or asks for
decisions with one gets a fresh visitor id instead (see ``docs/security.md``).

A profile belongs to the ``<visitor>`` part: erasing ``reader-42`` erases the reader whose
visitor id is ``sign_visitor_id(secret, "reader-42")``.

>>> vid = sign_visitor_id("sk_site", "reader-42")
>>> vid.startswith("vid.v1.reader-42.") and len(vid) == len("vid.v1.reader-42.") + 22
True
>>> ids = VisitorIds.from_secret("sk_site")
>>> ids.problem(vid) is None, visitor_of(vid)
(True, 'reader-42')
>>> ids.problem(vid[:-1] + ("A" if vid[-1] != "A" else "B"))
'user_id: the visitor id signature does not match'
>>> ids.problem("reader-42")
'user_id: not a signed visitor id (vid.v1.…); the hello or decide answer gives one'
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import secrets
from pathlib import Path

PREFIX = "vid.v1."
MAC_CHARS = 22  # 16 bytes of HMAC-SHA256, base64url without padding
# the visitor part: the site's own id of a reader, or random; no control characters, and short
# enough that a visitor id fits the 128 characters of an event's user_id
VISITOR = re.compile(r"[^\x00-\x1f\x7f]{1,96}")
_KEY_INFO = b"trimtab visitor id v1"
# the tracker's random ids (t.js `rid`): four random 32-bit numbers written in base 36 (up to 28
# characters; shorter than 20 only when several happen to be small, which is rare)
PLACEHOLDER = re.compile(r"[0-9a-z]{20,28}")
# how many visitor ids found valid are remembered (each request of a page carries its id, and
# a batch of events carries it once per event: checking the signature again is the same answer)
VERIFIED_CACHE = 100_000

__all__ = ["PREFIX", "VisitorIds", "sign_visitor_id", "visitor_of"]


def _derive(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(raw, _KEY_INFO, "sha256")


def _tag(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message``, 16 bytes kept, as base64url without padding."""
    digest = hmac.digest(key, message, "sha256")
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def _mac(key: bytes, visitor: str) -> str:
    return _tag(key, (PREFIX + visitor).encode())


def sign_visitor_id(secret_key: str, visitor: str | None = None) -> str:
    """A visitor id signed with the site's secret key (for a site's backend).

    ``visitor`` is the site's own id of the reader (1–96 characters, no control characters);
    without it a random one is made. Hand the result to the page (``data-visitor-id`` on the
    script tag) so the tracker uses it; never put the secret key itself in a page.
    """
    return VisitorIds.from_secret(secret_key).sign(visitor)


def visitor_of(user_id: str) -> str:
    """The visitor a user id stands for: the ``<visitor>`` part of a visitor id, else the id.

    Purely syntactic (it does not check the signature): callers that must check it do so first.
    """
    if user_id.startswith(PREFIX):
        visitor, dot, mac = user_id[len(PREFIX) :].rpartition(".")
        if dot and visitor and len(mac) == MAC_CHARS:
            return visitor
    return user_id


class VisitorIds:
    """Issues and checks visitor ids under one key."""

    def __init__(self, key: bytes, cache_size: int = VERIFIED_CACHE) -> None:
        self._key = key
        # Ids whose signature matched under this key (the key never changes for an instance,
        # so neither does the answer). Only valid ids are kept: a forged or malformed one is
        # checked in full every time and cannot fill the cache. Bounded: cleared when full.
        self._verified: dict[str, None] = {}
        self._cache_size = cache_size

    @classmethod
    def from_secret(cls, secret_key: str) -> VisitorIds:
        return cls(_derive(secret_key))

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> VisitorIds:
        """Without a secret key: a random key kept in ``identity.key`` of the data directory
        (made once, shared by the processes of that directory, readable by its owner only)."""
        path = Path(data_dir) / "identity.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".identity.key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)  # atomic, and the first process to get here wins
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls(_derive(path.read_bytes()))

    def sign(self, visitor: str | None = None) -> str:
        if visitor is None:
            visitor = secrets.token_urlsafe(16)
        if not VISITOR.fullmatch(visitor):
            raise ValueError("visitor must be 1-96 characters without control characters")
        return f"{PREFIX}{visitor}.{_mac(self._key, visitor)}"

    def issue(self) -> str:
        """A fresh random visitor id."""
        return self.sign(None)

    def first_contact(self, placeholder: str, session_id: str) -> str:
        """The visitor id for a page's first contact that claims ``placeholder``.

        The same for the same tracker placeholder and session, so a hello sent again because
        the answer was lost (the server died after storing the page's first events) is given
        the same id, and the log keeps those events once (it is unique by user and event id).
        Only the tracker's own 128-bit random placeholders, in a session id of the same form,
        are derived: both are secret to the page, so nobody else can reach the same id. Any
        other claim (a site's unsigned account id, a stolen raw id, a forged signature) is a
        guess away from a derived id and gets a fresh random one, as before.

        >>> ids = VisitorIds.from_secret("sk_site")
        >>> page, tab = "3f9k2l1m0q8w7e6r5t4y3u2i1o", "9a8s7d6f5g4h3j2k1l0z9x8c7v"
        >>> ids.first_contact(page, tab) == ids.first_contact(page, tab)
        True
        >>> ids.first_contact(page, tab) == ids.first_contact(page, tab[::-1])
        False
        >>> ids.first_contact("reader-42", tab) == ids.first_contact("reader-42", tab)
        False
        """
        if not (PLACEHOLDER.fullmatch(placeholder) and PLACEHOLDER.fullmatch(session_id)):
            return self.issue()
        message = b"first contact\0" + placeholder.encode() + b"\0" + session_id.encode()
        return self.sign("f" + _tag(self._key, message))

    def problem(self, user_id: str) -> str | None:
        """None when ``user_id`` is a visitor id signed with this key, else why it is not.

        The reason names the field and never anything of another visitor.
        """
        if user_id in self._verified:
            return None
        if not user_id.startswith(PREFIX):
            return (
                "user_id: not a signed visitor id (vid.v1.…); the hello or decide answer gives one"
            )
        visitor, dot, mac = user_id[len(PREFIX) :].rpartition(".")
        if not dot or not VISITOR.fullmatch(visitor) or len(mac) != MAC_CHARS:
            return "user_id: malformed visitor id (vid.v1.<visitor>.<signature>)"
        if not hmac.compare_digest(mac, _mac(self._key, visitor)):
            return "user_id: the visitor id signature does not match"
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[user_id] = None
        return None
