"""What a page sends the collector, decoded and bounded: hellos, WebSocket envelopes, query
parameters; and the one shape of a refusal (``{"error": reason}``).

Every value from a browser passes through here first: each field has a bound (``msgspec.Meta``)
and any decoding failure is a :class:`BadMessage` whose text names the problem.

>>> decode_message(HELLO, b'{"user_id": "u1", "session_id": "s1"}').slots
[]
>>> decode_message(HELLO, b'{"user_id": 1}')
Traceback (most recent call last):
...
trimtab.wire.BadMessage: Expected `str`, got `int` - at `$.user_id`
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse


def _no_events() -> msgspec.Raw:
    return msgspec.Raw(b"null")


# Bounds of what a page says about itself (the number of slots is bounded by the config too:
# limits.max_slots_per_hello).
_IdText = Annotated[str, msgspec.Meta(max_length=128)]
_SlotNames = Annotated[list[_IdText], msgspec.Meta(max_length=1024)]
_PageText = Annotated[str, msgspec.Meta(max_length=2048)]
_PageViewId = Annotated[str, msgspec.Meta(max_length=64)]


class Hello(msgspec.Struct, kw_only=True):
    """A page saying which slots it has (``POST /v1/decide``, the WebSocket ``hello``).

    ``events`` are the page's first events (its consent, context and page view): they are
    logged and applied before anything is decided, so the first decisions already know them.
    """

    user_id: _IdText
    session_id: _IdText
    slots: _SlotNames = []
    page: _PageText = ""
    page_category: _IdText = ""
    page_view_id: _PageViewId = ""
    events: msgspec.Raw = msgspec.field(default_factory=_no_events)
    force: Annotated[str, msgspec.Meta(max_length=1024)] = ""  # a signed QA force token
    # (trimtab.qa), from ?tt_force=


@dataclasses.dataclass(frozen=True, slots=True)
class Bound:
    """Who a page (a live socket or a decide request) acts as.

    ``user`` is its user id (a signed visitor id when they are required); ``claimed`` the id
    the page said (its placeholder before it had a visitor id): its events may carry either and
    are stored under ``user``. ``session`` is the page's session.
    """

    user: str
    claimed: str
    session: str


class Envelope(msgspec.Struct, kw_only=True):
    """One WebSocket message: a ``hello`` (the fields of :class:`Hello`) or ``events``."""

    type: Annotated[str, msgspec.Meta(max_length=32)]
    events: msgspec.Raw = msgspec.field(default_factory=_no_events)
    user_id: _IdText = ""
    session_id: _IdText = ""
    slots: _SlotNames = []
    page: _PageText = ""
    page_category: _IdText = ""
    page_view_id: _PageViewId = ""
    force: Annotated[str, msgspec.Meta(max_length=1024)] = ""


ENVELOPE = msgspec.json.Decoder(Envelope)
HELLO = msgspec.json.Decoder(Hello)  # a decide request says what a hello says
JSON = msgspec.json.Encoder()


class BadMessage(ValueError):
    """A request or WebSocket message that cannot be decoded; the reason names the problem."""


def decode_message(decoder: msgspec.json.Decoder[Any], data: bytes | str) -> Any:
    """Decode untrusted JSON with ``decoder``; any failure is a :class:`BadMessage`.

    Covers what msgspec leaves to the caller: invalid UTF-8 and nesting too deep to decode.
    """
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadMessage(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise BadMessage(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise BadMessage("nested too deeply") from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; :class:`BadMessage` naming it otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadMessage(f"query parameter {name!r} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadMessage(f"query parameter {name!r} must be between {low} and {high}")
    return value


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal: the status and ``{"error": reason}``."""
    return JSONResponse({"error": reason}, status_code=status, headers=headers)
