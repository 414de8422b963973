"""The privacy gate: consent, pseudonymous ids and scrubbing, applied before anything is stored.

- **Consent.** With ``consent: required`` an event is kept only once its user has granted the
  ``analytics`` purpose (a ``consent`` event, which itself is always kept so the choice is on
  record). Withdrawing consent stops collection from that moment on.
- **Pseudonymous ids.** User ids are replaced by a keyed hash (HMAC-SHA256 with the site's
  secret salt), so the stores never hold an id the site could join back without the salt.
- **Scrubbing.** Free-text fields (custom values, URLs, titles) lose e-mail addresses, phone
  numbers and the query strings of URLs; IP addresses are never stored (only a truncated form
  is used, in memory, for rate limiting).

>>> gate = PrivacyGate(salt=b"s3cret", consent="implied")
>>> gate.user_id("visitor-1") == gate.user_id("visitor-1") != "visitor-1"
True
>>> scrub_text("write to ann@example.com or +44 20 7946 0958")
'write to [email] or [phone]'
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from typing import Literal

from trimtab.events import AnyEvent, Consent, Custom, PageView

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"\+?\(?\d[\d ()-]{7,}\d")
_PURPOSE_ANALYTICS = "analytics"
_PURPOSE_PERSONALIZATION = "personalization"


def scrub_text(text: str) -> str:
    """Remove e-mail addresses and phone numbers from free text."""
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


def scrub_url(url: str) -> str:
    """Drop the query string and fragment: they are where personal data leaks into URLs."""
    cut = len(url)
    for mark in ("?", "#"):
        at = url.find(mark)
        if at != -1:
            cut = min(cut, at)
    return scrub_text(url[:cut])


def erasure_token(user_id: str) -> str:
    """What stores keep of a user instead of the id where it must outlive an erasure
    (tombstones) or sit in a key name: a hash, so grepping a store for the id finds nothing.

    >>> len(erasure_token("p0123")) == 32 and erasure_token("p0123") != erasure_token("p0124")
    True
    """
    return hashlib.blake2b(user_id.encode(), digest_size=16, person=b"trimtab-erasure").hexdigest()


def truncate_ip(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address: enough to rate-limit, not to track."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class PrivacyGate:
    """Applies the site's consent mode, pseudonymisation and scrubbing to incoming events."""

    def __init__(
        self,
        salt: bytes,
        consent: Literal["required", "implied"] = "required",
        pseudonymize: bool = True,
        cache_size: int = 100_000,
        stored_consent: Callable[[str], dict[str, bool] | None] | None = None,
    ) -> None:
        self.salt = salt
        self.consent_mode = consent
        self.pseudonymize = pseudonymize
        self._ids: dict[str, str] = {}
        self._cache_size = cache_size
        # pseudonymous user id -> purposes granted (analytics, personalization)
        self.consents: dict[str, dict[str, bool]] = {}
        self.dropped_without_consent = 0
        # Where a consent given in an earlier process lifetime can be found (the user's state).
        self.stored_consent = stored_consent

    def user_id(self, raw: str) -> str:
        """The stored form of a user id (stable per site salt)."""
        if not self.pseudonymize:
            return raw
        cached = self._ids.get(raw)
        if cached is None:
            digest = hmac.new(self.salt, raw.encode(), hashlib.sha256).hexdigest()
            cached = "p" + digest[:31]
            if len(self._ids) >= self._cache_size:
                self._ids.clear()
            self._ids[raw] = cached
        return cached

    def allows(self, user_id: str, purpose: str = _PURPOSE_ANALYTICS) -> bool:
        """Whether a (pseudonymous) user has granted a purpose."""
        granted = self.consents.get(user_id)
        if granted is None and self.stored_consent is not None:
            granted = self.stored_consent(user_id)
            if granted is not None:
                self._remember_consent(user_id, granted)
        if granted is None:
            return self.consent_mode == "implied"
        return bool(granted.get(purpose, False))

    def personalization_allowed(self, user_id: str) -> bool:
        return self.allows(user_id, _PURPOSE_PERSONALIZATION)

    def record_consent(self, raw_user_id: str, purposes: dict[str, bool]) -> None:
        """Take a consent choice into account before its batch is gated."""
        self._remember_consent(self.user_id(raw_user_id), dict(purposes))

    def _remember_consent(self, user_id: str, purposes: dict[str, bool]) -> None:
        # A bounded cache: what it forgets is read again from the user's state.
        if len(self.consents) >= self._cache_size and user_id not in self.consents:
            self.consents.clear()
        self.consents[user_id] = purposes

    def gate(self, event: AnyEvent) -> AnyEvent | None:
        """The event as it may be stored, or None when it may not be collected at all."""
        event.user_id = self.user_id(event.user_id)
        kind = type(event)
        if kind is Consent:
            self._remember_consent(event.user_id, dict(event.purposes))
            return event
        if not self.allows(event.user_id):
            self.dropped_without_consent += 1
            return None
        if kind is Custom and isinstance(event.value, str):
            event.value = scrub_text(event.value)
        elif kind is PageView:
            event.url = scrub_url(event.url)
            event.referrer = scrub_url(event.referrer)
            event.title = scrub_text(event.title)
        if event.page:
            event.page = scrub_url(event.page)
        return event
