"""The event schema: what the tracker sends, validated once at the edge.

Events are msgspec ``Struct``s tagged by ``kind``. :func:`decode_batch` turns a JSON array into
typed events; a malformed element is rejected with its index, the path of the bad field and the
reason, while the valid elements of the same batch are kept.

>>> batch = (b'[{"kind":"scroll","event_id":"e1","user_id":"u","session_id":"s","ts":1,'
...          b'"depth":0.8,"velocity":420},{"kind":"scroll","event_id":"e2","user_id":"u",'
...          b'"session_id":"s","ts":2,"depth":7}]')
>>> result = decode_batch(batch)
>>> [e.event_id for e in result.events]
['e1']
>>> print(result.errors[0])
event 1: Expected `float` <= 1.0 - at `$[1].depth`
"""

from __future__ import annotations

import math
import re
import time
import typing
from typing import Annotated, Any, Literal

import msgspec

from trimtab.validation import reroot

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(max_length=128)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# Every number a browser sends is bounded: one visitor's extreme value must never reach a sum,
# a score or a model every visitor shares (an unbounded dwell overflowed sums to inf).
MAX_DURATION_MS = 3_600_000.0  # one report of hover or visible time: at most an hour
MAX_VELOCITY = 1e6  # px/s, either direction
MAX_AMOUNT = 1e12  # a custom event's number (a purchase amount, a count)
Duration = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DURATION_MS)]
# Client timestamps are epoch milliseconds; the collector also keeps them within a clock-skew
# window of its own clock (see :func:`check_clock`).
EpochMs = Annotated[float, msgspec.Meta(ge=1.0, le=1e14)]
Amount = Annotated[float, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
# What decide.Engine._new_id makes: process id and start time in hex, a dash, a hex counter.
# An exposure's id is checked against this grammar rather than scrubbed as free text (a run of
# digits in it can look like a phone number, and an emptied id orphans the exposure).
DECISION_ID = re.compile(r"[0-9a-f]{1,24}-[0-9a-f]{1,16}")


class Event(msgspec.Struct, tag_field="kind", kw_only=True, omit_defaults=True):
    """Fields every event carries.

    ``event_id`` deduplicates retries; ``user_id`` is pseudonymous (the privacy gate hashes it
    before storage); ``ts`` is the client clock and ``received`` the server clock, both epoch ms.
    ``page`` is the page path and ``page_category`` the content category of that page;
    ``page_view_id`` (random, one per page load) tells page views apart, so ``page``-scoped
    features start afresh on each.
    """

    event_id: Id
    user_id: Id
    session_id: Id
    ts: EpochMs
    received: float = 0.0
    page: Name = ""
    page_category: Name = ""
    page_view_id: Annotated[str, msgspec.Meta(max_length=64)] = ""


class PageView(Event, tag="page_view", kw_only=True):
    """A page was opened; ``slots`` lists the page's marked slots."""

    url: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    title: Annotated[str, msgspec.Meta(max_length=512)] = ""
    referrer: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    slots: Annotated[list[Name], msgspec.Meta(max_length=64)] = []


class Scroll(Event, tag="scroll", kw_only=True):
    """Scroll position as a fraction of the page (``depth``) and signed speed in px/s."""

    depth: Fraction
    velocity: Annotated[float, msgspec.Meta(ge=-MAX_VELOCITY, le=MAX_VELOCITY)] = 0.0


class Hover(Event, tag="hover", kw_only=True):
    """The pointer rested on a marked element (``data-tt-id``) for ``dwell_ms``."""

    element: Id
    element_kind: Name = ""
    category: Name = ""
    slot: Name = ""  # the data-tt-slot the element sits in, if any
    nav: bool = False  # inside data-tt-nav markup: navigation or chrome, never interest
    dwell_ms: Duration


class Visible(Event, tag="visible", kw_only=True):
    """A marked element was at least half on screen for ``visible_ms`` (max ``fraction``)."""

    element: Id
    element_kind: Name = ""
    category: Name = ""
    slot: Name = ""
    nav: bool = False
    visible_ms: Duration
    fraction: Fraction = 1.0


class Click(Event, tag="click", kw_only=True):
    """A click on a marked element; ``element_kind`` is its ``data-tt-kind``."""

    element: Id
    element_kind: Name = ""
    category: Name = ""
    slot: Name = ""
    nav: bool = False


class Custom(Event, tag="custom", kw_only=True):
    """A site-defined event (``add_to_cart``, ``expand``, ``purchase``...)."""

    name: Id
    value: Text | Amount | bool | None = None


class Consent(Event, tag="consent", kw_only=True):
    """The visitor's consent choice, purpose name → granted."""

    purposes: Annotated[dict[Name, bool], msgspec.Meta(max_length=16)]


class Context(Event, tag="context", kw_only=True):
    """Device and locale context, sent once per session (and when it changes)."""

    device: Literal["mobile", "tablet", "desktop", "other"] = "other"
    viewport_w: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    viewport_h: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    ua_family: Name = ""
    tz_offset_min: Annotated[int, msgspec.Meta(ge=-840, le=840)] = 0
    language: Name = ""


class Exposure(Event, tag="exposure", kw_only=True):
    """A slot really showed ``variant`` to the visitor (not merely decided)."""

    slot: Id
    variant: Id
    decision_id: Name = ""


# The one list of event kinds: everything else (feature dispatch, pattern kinds, numeric fields
# of metrics) is derived from this union, so a new kind is added here and nowhere else.
AnyEvent = PageView | Scroll | Hover | Visible | Click | Custom | Consent | Context | Exposure
EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AnyEvent)
KINDS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in EVENT_TYPES)
BY_KIND: dict[str, type[Event]] = dict(zip(KINDS, EVENT_TYPES, strict=True))
# Bookkeeping the tracker sends about the visit, not behaviour on the page: the kinds a
# ``*`` step of a sequence does not match. Every other kind is behaviour.
BOOKKEEPING_TYPES: tuple[type[Event], ...] = (Consent, Context, Exposure)
BEHAVIOUR_TYPES: tuple[type[Event], ...] = tuple(
    t for t in EVENT_TYPES if t not in BOOKKEEPING_TYPES
)
# Reading behaviour: what a reader does with the content (the evidence segments.min_events
# counts), each kind with whether it carries ``nav`` (navigation and chrome, which does not
# count). A page view, consent, context or exposure is not reading.
READING_TYPES: dict[type[Event], bool] = {
    Scroll: False,
    Hover: True,
    Visible: True,
    Click: True,
    Custom: False,
}


class EventError(msgspec.Struct, frozen=True):
    """Why one element of a batch was rejected."""

    index: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"event {self.index}: {self.reason} - at `{self.path}`"


class BatchResult(msgspec.Struct):
    """The valid events of a batch and the reasons the others were rejected."""

    events: list[AnyEvent]
    errors: list[EventError]


class BatchError(ValueError):
    """The batch as a whole is unusable (not JSON, not an array)."""


_batch_decoder = msgspec.json.Decoder(list[AnyEvent])
_raw_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_one_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


def _split_error(message: str, index: int) -> EventError:
    # msgspec reports "reason - at `$.field`"; re-root the path at the batch element.
    return EventError(index, *reroot(message, f"$[{index}]"))


def decode_batch(
    data: bytes | str,
    received_ms: float | None = None,
    *,
    max_past_ms: float | None = None,
    max_ahead_ms: float | None = None,
) -> BatchResult:
    """Decode and validate a JSON array of events.

    The whole array is decoded in one pass when it is valid (the common case); otherwise each
    element is decoded alone so that one bad event costs only itself. ``received_ms`` stamps
    the server-received time (default: now). With ``max_past_ms`` / ``max_ahead_ms`` an event
    whose ``ts`` lies further from ``received_ms`` than that is rejected (:func:`check_clock`).
    """
    now = time.time() * 1000.0 if received_ms is None else received_ms
    try:
        events = _batch_decoder.decode(data)
        indices: list[int] | None = None
        errors: list[EventError] = []
    except (msgspec.ValidationError, UnicodeDecodeError):  # one bad element costs only itself
        events, indices, errors = _decode_one_by_one(data)
    except msgspec.DecodeError as exc:
        raise BatchError(f"batch is not valid JSON: {exc}") from None
    except RecursionError:
        raise BatchError("batch is nested too deeply") from None
    for event in events:
        event.received = now
    if max_past_ms is not None or max_ahead_ms is not None:
        events, late = check_clock(events, indices, now, max_past_ms, max_ahead_ms)
        if late:
            errors = sorted([*errors, *late], key=lambda e: e.index)
    return BatchResult(events, errors)


def _span(ms: float) -> str:
    """A duration in words: ``5 min``, ``26.0 h``, ``1,200,000 days``."""
    if ms < 3_600_000:
        return f"{ms / 60_000:.0f} min"
    if ms < 4 * 86_400_000:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / 86_400_000:,.0f} days"


def check_clock(
    events: list[AnyEvent],
    indices: list[int] | None,
    now_ms: float,
    max_past_ms: float | None,
    max_ahead_ms: float | None,
) -> tuple[list[AnyEvent], list[EventError]]:
    """Keep the events whose ``ts`` lies within the clock-skew window around ``now_ms``.

    A browser's clock is the visitor's to set: an event dated far in the future froze a
    user's recency-weighted interest for good, one dated long ago slips into stale windows.
    Returns the kept events and one error per event outside (``indices`` maps an event to
    its position in the batch; None when every element decoded).

    >>> e = Scroll(event_id="e", user_id="u", session_id="s", ts=1e14, depth=0.5)
    >>> kept, late = check_clock([e], None, 1.7e12, 86_400_000, 300_000)
    >>> kept
    []
    >>> late[0].reason
    "timestamp is 1,137,731 days ahead of the server's clock (at most 5 min allowed)"
    """
    kept: list[AnyEvent] = []
    late: list[EventError] = []
    earliest = now_ms - max_past_ms if max_past_ms is not None else -math.inf
    latest = now_ms + max_ahead_ms if max_ahead_ms is not None else math.inf
    for position, event in enumerate(events):
        ts = event.ts
        if earliest <= ts <= latest:
            kept.append(event)
            continue
        index = position if indices is None else indices[position]
        if ts > latest:
            reason = (
                f"timestamp is {_span(ts - now_ms)} ahead of the server's clock "
                f"(at most {_span(max_ahead_ms or 0.0)} allowed)"
            )
        else:
            reason = (
                f"timestamp is {_span(now_ms - ts)} behind the server's clock "
                f"(at most {_span(max_past_ms or 0.0)} allowed)"
            )
        late.append(EventError(index, f"$[{index}].ts", reason))
    return kept, late


def _decode_one_by_one(
    data: bytes | str,
) -> tuple[list[AnyEvent], list[int], list[EventError]]:
    try:
        raws = _raw_decoder.decode(data)
    except msgspec.ValidationError:
        raise BatchError("batch must be a JSON array of event objects") from None
    except msgspec.DecodeError as exc:
        raise BatchError(f"batch is not valid JSON: {exc}") from None
    except RecursionError:
        raise BatchError("batch is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise BatchError(f"batch is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    events: list[AnyEvent] = []
    indices: list[int] = []
    errors: list[EventError] = []
    for index, raw in enumerate(raws):
        try:
            events.append(_one_decoder.decode(raw))
            indices.append(index)
        except msgspec.ValidationError as exc:
            errors.append(_split_error(str(exc), index))
        except UnicodeDecodeError as exc:
            errors.append(EventError(index, f"$[{index}]", f"not valid UTF-8: {exc.reason}"))
        except (msgspec.DecodeError, RecursionError) as exc:
            errors.append(EventError(index, f"$[{index}]", f"not a valid event: {exc}"))
    return events, indices, errors


def encode(events: list[AnyEvent] | AnyEvent) -> bytes:
    """JSON-encode events (the inverse of :func:`decode_batch`)."""
    return _encoder.encode(events)


def decode_one(data: bytes | str) -> AnyEvent:
    """Decode a single stored event (trusted data, e.g. from the event log).

    An event stored before a bound was tightened (a dwell of 1e308 ms, logged by a version
    that accepted it) is read with its numbers clamped into today's bounds: old logs replay,
    and what they replay cannot poison a sum.

    >>> old = b'{"kind":"hover","event_id":"h","user_id":"u","session_id":"s","ts":1,'
    >>> decode_one(old + b'"element":"a","dwell_ms":1e308}').dwell_ms
    3600000.0
    """
    try:
        return _one_decoder.decode(data)
    except msgspec.ValidationError:
        return _clamped(data)


# Stored numbers clamped into their bounds when a stored event is older than the bound.
_CLAMPED = {
    "dwell_ms": (0.0, MAX_DURATION_MS),
    "visible_ms": (0.0, MAX_DURATION_MS),
    "velocity": (-MAX_VELOCITY, MAX_VELOCITY),
}
_loose = msgspec.json.Decoder(dict[str, Any])


def _clamped(data: bytes | str) -> AnyEvent:
    fields = _loose.decode(data)
    for name, (low, high) in _CLAMPED.items():
        number = fields.get(name)
        if isinstance(number, int | float) and not low <= number <= high:
            fields[name] = min(max(float(number), low), high)
    value = fields.get("value")
    if isinstance(value, int | float) and not -MAX_AMOUNT <= value <= MAX_AMOUNT:
        fields["value"] = min(max(float(value), -MAX_AMOUNT), MAX_AMOUNT)
    elif type(value) is str:
        fields["value"] = value[:1024]
    if isinstance(fields.get("slots"), list):
        fields["slots"] = fields["slots"][:64]
    event: AnyEvent = msgspec.convert(fields, AnyEvent)  # anything else still wrong raises
    return event


def to_dict(event: AnyEvent) -> dict[str, Any]:
    """A plain dict of the event including its ``kind``."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out
