"""A server-side client: decide while rendering a page, so the first paint is already right.

Your web application asks trimtab (``POST /v1/decide``) for the slots of the page it is about to
render and writes the chosen variants into the HTML: no flicker, no script needed for the
first decision. The tracker on the page then keeps the slots live as usual.

Every call has a short timeout and **never raises**: when trimtab is unreachable, slow or
answers with an error, each slot gets its fallback (the variant you pass, else ``None``), with
``source="fallback"`` and the reason, so the page renders its default content.

>>> client = TrimtabClient("http://127.0.0.1:9", "pk_demo", timeout_s=0.05)
>>> page = client.decide("reader-1", "session-1", ["cta"], fallback={"cta": "newsletter"})
>>> (page["cta"].variant, page["cta"].source)
('newsletter', 'fallback')

Visitor ids: trimtab requires **signed** visitor ids by default (``docs/security.md``). Pass
the id the tracker uses for this reader (its ``tt_uid``, e.g. from a cookie you set), or mint
one with trimtab's secret key: :func:`sign_visitor_id` (``sign_visitor_id(secret_key)`` for a
new anonymous reader; ``sign_visitor_id(secret_key, reader_id(app_key, account))`` for a
logged-in one, the same on every device), which is also what ``trimtab.identify`` should
receive in the page. An unsigned or forged id is answered as a new visitor:
:attr:`PageDecisions.visitor_id` is then the id trimtab issued.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from trimtab.identity import sign_visitor_id


@dataclass(frozen=True)
class SlotDecision:
    """One slot's variant and content (``payload``), or its fallback."""

    slot: str
    variant: str | None
    source: str  # force | experiment | policy | default | … | fallback
    payload: dict[str, Any] | None = None
    decision_id: str = ""
    reason: str = ""
    why: str = ""

    @property
    def html(self) -> str:
        """The variant's ``html`` payload ('' when it has none, or on a fallback)."""
        return str((self.payload or {}).get("html", ""))


@dataclass
class PageDecisions:
    """The decisions of one page, by slot name; ``ok`` is False when every slot fell back."""

    slots: dict[str, SlotDecision] = field(default_factory=dict)
    ok: bool = True
    error: str = ""
    elapsed_ms: float = 0.0
    visitor_id: str = ""  # issued by trimtab when the id sent was not a valid signed one

    def __getitem__(self, slot: str) -> SlotDecision:
        return self.slots[slot]

    def __contains__(self, slot: object) -> bool:
        return slot in self.slots

    def variant(self, slot: str, default: str | None = None) -> str | None:
        found = self.slots.get(slot)
        return found.variant if found is not None and found.variant is not None else default


def reader_id(secret: str, account: str) -> str:
    """An opaque visitor id for a logged-in account: the same on every device, not guessable
    without ``secret`` (a key of your application, not trimtab's secret key)."""
    mac = hmac.new(secret.encode(), b"trimtab-reader\x00" + account.encode(), hashlib.sha256)
    return "acct_" + mac.hexdigest()[:32]


class TrimtabClient:
    """Calls one trimtab site (its public key) with a short timeout and a fallback."""

    def __init__(self, base_url: str, public_key: str, timeout_s: float = 0.15) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_key = public_key
        self.timeout_s = timeout_s

    def decide(
        self,
        user_id: str,
        session_id: str,
        slots: list[str],
        *,
        page: str = "",
        page_category: str = "",
        page_view_id: str = "",
        fallback: dict[str, str] | None = None,
        force: str = "",
        consent: dict[str, bool] | None = None,
    ) -> PageDecisions:
        """The slots' decisions for this reader and page; fallbacks when trimtab cannot
        answer within ``timeout_s``. Never raises.

        ``consent`` (``{"analytics": True, "personalization": True}``) records the reader's
        choice first, as the tracker would; without it, the choice stored from an earlier
        visit applies (and without any, the site's consent mode decides)."""
        started = time.perf_counter()
        body: dict[str, object] = {
            "user_id": user_id,
            "session_id": session_id,
            "slots": slots,
            "page": page,
            "page_category": page_category,
            "page_view_id": page_view_id,
        }
        if force:
            body["force"] = force
        if consent is not None:  # the reader's choice, as your consent banner recorded it
            body["events"] = [
                {
                    "kind": "consent",
                    "event_id": f"srv-{uuid.uuid4().hex}",
                    "user_id": user_id,
                    "session_id": session_id,
                    "ts": time.time() * 1000,
                    "purposes": consent,
                }
            ]
        request = urllib.request.Request(
            f"{self.base_url}/v1/decide?key={quote(self.public_key)}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
            decided = {
                d["slot"]: SlotDecision(
                    slot=d["slot"],
                    variant=d["variant"],
                    source=d.get("source", ""),
                    payload=d.get("payload"),
                    decision_id=d.get("decision_id", ""),
                    reason=d.get("reason", ""),
                    why=d.get("why", ""),
                )
                for d in answer["decisions"]
            }
        except urllib.error.HTTPError as exc:
            return self._fallback(slots, fallback, f"HTTP {exc.code}: {_reason(exc)}", started)
        except Exception as exc:  # unreachable, timeout, bad answer: the page still renders
            return self._fallback(slots, fallback, f"{type(exc).__name__}: {exc}", started)
        out = PageDecisions(
            elapsed_ms=(time.perf_counter() - started) * 1000,
            visitor_id=str(answer.get("visitor_id", "")),
        )
        for slot in slots:
            out.slots[slot] = decided.get(slot) or SlotDecision(
                slot, (fallback or {}).get(slot), "fallback", reason="not decided by trimtab"
            )
        return out

    def _fallback(
        self, slots: list[str], fallback: dict[str, str] | None, error: str, started: float
    ) -> PageDecisions:
        reason = f"trimtab unavailable ({error[:200]}): fallback shown"
        return PageDecisions(
            {s: SlotDecision(s, (fallback or {}).get(s), "fallback", reason=reason) for s in slots},
            ok=False,
            error=error,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", ""))[:200]
    except Exception:
        return exc.reason if isinstance(exc.reason, str) else ""


def render(template: str, decision: SlotDecision, **context: Any) -> str:
    """Fill a Jinja-style variant template: ``{{ name }}`` from the variant's payload, then
    ``context``; values are HTML-escaped (:mod:`trimtab.templates`).

    >>> d = SlotDecision("cta", "offer", "force", payload={"headline": "Free <month>"})
    >>> render("<b>{{ headline }}</b> for {{ name }}", d, name="Ann")
    '<b>Free &lt;month&gt;</b> for Ann'
    """
    from trimtab.templates import fill

    return fill(template, {**context, **(decision.payload or {})})


__all__ = [
    "PageDecisions",
    "SlotDecision",
    "TrimtabClient",
    "reader_id",
    "render",
    "sign_visitor_id",
]
