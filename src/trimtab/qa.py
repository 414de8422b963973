"""QA force links: a signed ``?tt_force=slot:variant`` that shows that variant to its holder.

The token names one or more ``slot:variant`` pairs and an expiry, signed with the site's
secret key (HMAC-SHA256), so only someone with the secret key (``trimtab force-link``, or the
admin API) can make one and nobody can edit one::

    cta:subscribe_offer,hero:urgent~1767225600~<signature>

The tracker keeps the token for the tab (``sessionStorage``) and sends it with its hello; the
server checks it and shows the forced variants on every page of that tab. A forced decision
has source ``qa`` and rule ``tt_force``: it is logged like every decision, but belongs to no
experiment and no policy chose it, so experiments, bandits and off-policy evaluation leave it
out.

>>> token = force_token("sk_x", {"cta": "offer"}, expires_at=2_000_000_000)
>>> verify_force("sk_x", token, now=1_900_000_000)
{'cta': 'offer'}
>>> verify_force("sk_y", token, now=1_900_000_000)
Traceback (most recent call last):
...
trimtab.qa.ForceError: tt_force: bad signature
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_TOKEN = 512
MAX_PAIRS = 8
_FORBIDDEN = set(",:~ ")


class ForceError(ValueError):
    """A force token that is refused, and why."""


def _signature(secret: str, payload: str) -> str:
    mac = hmac.new(secret.encode(), b"trimtab-force\x00" + payload.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode().rstrip("=")


def force_token(secret: str, choices: Mapping[str, str], expires_at: float) -> str:
    """A signed token forcing each ``slot: variant`` until ``expires_at`` (unix seconds)."""
    if not secret:
        raise ForceError("tt_force: no secret key configured to sign with")
    if not choices or len(choices) > MAX_PAIRS:
        raise ForceError(f"tt_force: from 1 to {MAX_PAIRS} slot:variant pairs")
    for name in (*choices, *choices.values()):
        if not name or _FORBIDDEN & set(name):
            raise ForceError(f"tt_force: {name!r} cannot be put in a link (',', ':', '~', space)")
    payload = f"{','.join(f'{s}:{v}' for s, v in choices.items())}~{int(expires_at)}"
    token = f"{payload}~{_signature(secret, payload)}"
    if len(token) > MAX_TOKEN:
        raise ForceError(f"tt_force: the token would be longer than {MAX_TOKEN} characters")
    return token


def verify_force(secret: str, token: str, now: float | None = None) -> dict[str, str]:
    """The forced ``{slot: variant}`` of a valid token; :class:`ForceError` says why not."""
    if not secret:
        raise ForceError("tt_force: no secret key configured: force links are off")
    if len(token) > MAX_TOKEN:
        raise ForceError(f"tt_force: longer than {MAX_TOKEN} characters")
    payload, sep, signature = token.rpartition("~")
    pairs, sep2, expiry = payload.rpartition("~")
    if not sep or not sep2 or not expiry.isdigit():
        raise ForceError("tt_force: not a force token (slot:variant~expiry~signature)")
    if not hmac.compare_digest(signature.encode(), _signature(secret, payload).encode()):
        raise ForceError("tt_force: bad signature")
    if int(expiry) < (time.time() if now is None else now):
        raise ForceError("tt_force: expired")
    out: dict[str, str] = {}
    for pair in pairs.split(",")[:MAX_PAIRS]:
        slot, _, variant = pair.partition(":")
        if slot and variant:
            out[slot] = variant
    return out


def force_link(url: str, token: str) -> str:
    """``url`` with ``tt_force=token`` added to its query (replacing one already there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "tt_force"]
    query.append(("tt_force", token))
    return urlunsplit(parts._replace(query=urlencode(query, safe=":,~")))


__all__ = ["ForceError", "force_link", "force_token", "verify_force"]
