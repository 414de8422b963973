"""Redis replies as trimtab's Redis clients receive them.

The stream bus and the state store make their clients with ``decode_responses=False``, so
Redis answers bytes. redis-py types every reply for both response modes at once
(``bytes | str``, and ``None`` where one mode or command may answer nothing); these helpers
say once which of those a caller really gets.

>>> text(b"1700000000000-0"), text("yes"), text(None)
('1700000000000-0', 'yes', '')
>>> settings({b"appendonly": b"yes"})
{'appendonly': 'yes'}
>>> live_entries([(b"1-0", {b"e": b"{}"})])
[(b'1-0', {b'e': b'{}'})]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from redis.typing import StreamRangeResponse

# An XRANGE entry: its id and its fields (live entries only, so the fields are always there).
LiveEntry = tuple[bytes, dict[bytes, bytes]]


def text(value: bytes | str | None) -> str:
    """A reply (an id, a key, a setting) as text; an absent one as ``""``."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def settings(reply: Mapping[str | None, str | None]) -> dict[str, str]:
    """A CONFIG GET reply as text (redis-py types it as text; this client gets bytes)."""
    return {text(name): text(value) for name, value in reply.items()}


def live_entries(reply: StreamRangeResponse | None) -> list[LiveEntry]:
    """XRANGE's entries: bytes ids and fields. Unlike XREADGROUP or XAUTOCLAIM, XRANGE lists
    only entries that exist, so none comes without its fields."""
    # a bytes client (decode_responses=False) and XRANGE: the one shape of redis-py's union
    return cast("list[LiveEntry]", reply) if reply else []


__all__ = ["LiveEntry", "live_entries", "settings", "text"]
