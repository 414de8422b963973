"""The privacy gate: consent, pseudonymous ids and scrubbing, applied before anything is stored.

- **Consent.** With ``consent: required`` an event is kept only once its user has granted the
  ``analytics`` purpose (a ``consent`` event, which itself is always kept so the choice is on
  record). Withdrawing consent stops collection from that moment on.
- **Pseudonymous ids.** User ids are replaced by a keyed hash (HMAC-SHA256 with the site's
  secret salt), so the stores never hold an id the site could join back without the salt.
- **Scrubbing.** Free-text fields (custom values, URLs, page paths, titles, element ids) lose
  e-mail addresses and phone numbers, percent-encoded ones too; URLs lose their fragment and
  query string (except the parameters the site keeps, ``site.keep_query_params``); labels that
  become keys (categories, element kinds, slot names) are dropped when they hold either; IP
  addresses are never stored (only a truncated form is used, in memory, for rate limiting).

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
from collections.abc import Callable, Collection
from typing import Literal
from urllib.parse import unquote

from trimtab.events import (
    DECISION_ID,
    AnyEvent,
    Click,
    Consent,
    Context,
    Custom,
    Exposure,
    Hover,
    PageView,
    Visible,
)
from trimtab.identity import visitor_of

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"\+?\(?\d[\d ()-]{7,}\d")
# In ids and labels, digits joined by hyphens are ids and dates (``img-2024-01-15``, a decision
# id): a phone number there is one written as people write them — with a leading +, an area
# code in parentheses, or digit groups separated by spaces.
_PHONE_IN_ID = re.compile(
    r"\+\d[\d ()-]{7,}\d|\(\d{2,5}\) ?\d[\d -]{5,}\d|(?<![\w-])\d{2,5}(?: \d{2,5}){2,}(?![\w-])"
)
_PURPOSE_ANALYTICS = "analytics"
_PURPOSE_PERSONALIZATION = "personalization"


def _scrub_plain(text: str, phone: re.Pattern[str] = _PHONE) -> str:
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    return phone.sub("[phone]", text)


def scrub_text(text: str, phone: re.Pattern[str] = _PHONE) -> str:
    """Remove e-mail addresses and phone numbers from free text, percent-encoded ones too
    (``ann%40example.com``, ``%2B44%2020…``, encoded twice or three times)."""
    clean = _scrub_plain(text, phone)
    if "%" not in text:
        return clean
    decoded = text
    for _ in range(3):  # %2540 is %40 encoded again
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    if decoded != text and _scrub_plain(decoded, phone) != decoded:
        return _scrub_plain(decoded, phone)
    return clean


def scrub_id(text: str) -> str:
    """An element id or event name without e-mails and phone numbers (written as phone
    numbers are: ``img-2024-01-15`` and ``card-1234567890`` stay as they are).

    >>> scrub_id("card ann@example.com"), scrub_id("img-2024-01-15")
    ('card [email]', 'img-2024-01-15')
    """
    return scrub_text(text, _PHONE_IN_ID)


def scrub_label(text: str) -> str:
    """A short label (a category, an element kind, a slot name) kept only when it holds no
    personal data: a category holding an e-mail must never become an interest key."""
    return text if not text or scrub_id(text) == text else ""


def scrub_url(url: str, keep_params: Collection[str] = ()) -> str:
    """Drop the fragment, any user:password@ and the query string except the parameters in
    ``keep_params`` (their values scrubbed too): query strings are where personal data leaks
    into URLs. E-mails and phone numbers left in the path, percent-encoded or not, are removed.

    >>> scrub_url("https://x.test/u/ann%40b.co?email=a@b.co&page=2#top", keep_params=["page"])
    'https://x.test/u/[email]?page=2'
    """
    cut = url.find("#")
    if cut != -1:
        url = url[:cut]
    url, _, query = url.partition("?")
    scheme, sep, rest = url.partition("://")
    if sep:
        host_end = rest.find("/")
        host = rest if host_end == -1 else rest[:host_end]
        if "@" in host:
            rest = rest[host.rindex("@") + 1 :]
        url = scheme + sep + rest
    clean = scrub_text(url)
    if query and keep_params:
        kept = [
            f"{name}={scrub_text(value)}" if eq else name
            for name, eq, value in (part.partition("=") for part in query.split("&"))
            if name in keep_params
        ]
        if kept:
            clean += "?" + "&".join(kept)
    return clean


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
        keep_query_params: Collection[str] = (),
    ) -> None:
        self.salt = salt
        # query parameters of page URLs that are kept (e.g. a page number); all others go
        self.keep_query_params = frozenset(keep_query_params)
        self.consent_mode = consent
        self.pseudonymize = pseudonymize
        self._ids: dict[str, str] = {}
        self._cache_size = cache_size
        # pseudonymous user id -> purposes granted (analytics, personalization)
        self.consents: dict[str, dict[str, bool]] = {}
        self.dropped_without_consent = 0
        # Users whose browser sent Global Privacy Control (``Sec-GPC: 1``): under implied
        # consent they are treated as having refused, until they choose explicitly.
        self.gpc: dict[str, None] = {}
        # Where a consent given in an earlier process lifetime can be found (the user's state).
        self.stored_consent = stored_consent

    def user_id(self, raw: str) -> str:
        """The stored form of a user id (stable per site salt)."""
        if not self.pseudonymize:
            return visitor_of(raw)
        cached = self._ids.get(raw)
        if cached is None:
            # a signed visitor id and its visitor part are one profile (trimtab.identity)
            digest = hmac.new(self.salt, visitor_of(raw).encode(), hashlib.sha256).hexdigest()
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
            return self.consent_mode == "implied" and user_id not in self.gpc
        return bool(granted.get(purpose, False))

    def note_gpc(self, raw_user_id: str) -> None:
        """The user's browser sent ``Sec-GPC: 1``: no consent is implied for them (an
        explicit choice still counts), as the tracker does with ``navigator.globalPrivacyControl``.
        """
        if len(self.gpc) >= self._cache_size:
            self.gpc.clear()  # bounded; every request of such a browser carries the header
        self.gpc[self.user_id(raw_user_id)] = None

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

    def scrub_page(self, page: str) -> str:
        """The page path (or URL) as it may be stored: see :func:`scrub_url`."""
        return scrub_url(page, self.keep_query_params) if page else page

    def gate(self, event: AnyEvent) -> AnyEvent | None:
        """The event as it may be stored, or None when it may not be collected at all.

        Every free-text field is scrubbed: URLs and page paths (query string, fragment,
        e-mails and phone numbers, percent-encoded too), titles, custom values and names,
        element ids; labels that become keys (categories, element kinds, slot names) are
        dropped when they hold personal data. A refused consent is kept without its page.
        """
        event.user_id = self.user_id(event.user_id)
        if type(event) is Consent:
            self._remember_consent(event.user_id, dict(event.purposes))
            if not event.purposes.get(_PURPOSE_ANALYTICS, False):
                # the choice is on record; where it was made is not needed
                event.page = event.page_category = event.page_view_id = ""
                return event
        elif not self.allows(event.user_id):
            self.dropped_without_consent += 1
            return None
        if type(event) is Hover or type(event) is Visible or type(event) is Click:
            event.element = scrub_id(event.element)
            event.element_kind = scrub_label(event.element_kind)
            event.category = scrub_label(event.category)
            event.slot = scrub_label(event.slot)
        elif type(event) is Custom:
            event.name = scrub_id(event.name)
            if isinstance(event.value, str):
                event.value = scrub_text(event.value)
        elif type(event) is PageView:
            event.url = scrub_url(event.url, self.keep_query_params)
            event.referrer = scrub_url(event.referrer)
            event.title = scrub_text(event.title)
            event.slots = [scrub_label(slot) for slot in event.slots]
        elif type(event) is Context:
            event.ua_family = scrub_label(event.ua_family)
            event.language = scrub_label(event.language)
        elif type(event) is Exposure:
            event.slot = scrub_text(event.slot)
            event.variant = scrub_text(event.variant)
            if not DECISION_ID.fullmatch(event.decision_id):
                event.decision_id = ""  # not one of ours: it can point at no logged decision
        if event.page:
            event.page = scrub_url(event.page, self.keep_query_params)
        if event.page_category:
            event.page_category = scrub_label(event.page_category)
        return event
