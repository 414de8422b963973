"""The event-pattern language shared by features, metrics, rewards and model targets.

A pattern is ``kind:detail``. ``kind`` is an event kind (``click``, ``hover``...) or the name
of a custom event; ``detail`` is the element kind, the element id or the custom event's value.
``*`` matches anything in either place and a missing detail means ``*``.

>>> from trimtab.events import Click, Custom
>>> click = Click(event_id="e", user_id="u", session_id="s", ts=1, element="b1",
...               element_kind="cta")
>>> matcher("click:cta")(click), matcher("click:b1")(click), matcher("hover")(click)
(True, True, False)
>>> buy = Custom(event_id="e", user_id="u", session_id="s", ts=1, name="buy", value=3)
>>> matcher("buy:3")(buy), matcher("custom")(buy), matcher("*")(buy)
(True, True, True)
>>> sorted(kinds_for(["click:cta", "add_to_cart"]))
['click', 'custom']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from trimtab.events import BEHAVIOUR_TYPES, BY_KIND, KINDS, Custom

Matcher = Callable[[Any], bool]


def matcher(pattern: str) -> Matcher:
    """A predicate telling whether an event matches ``pattern``."""
    head, _, detail = pattern.partition(":")
    detail = detail or "*"

    def matches(e: Any) -> bool:
        if type(e) is Custom:
            if head not in ("*", e.name, "custom"):
                return False
            return detail == "*" or detail == str(e.value)
        if head not in ("*", e.__struct_config__.tag):
            return False
        if detail == "*":
            return True
        return detail in (getattr(e, "element_kind", None), getattr(e, "element", None))

    return matches


def kinds_for(patterns: Iterable[str]) -> set[str]:
    """The event kinds a set of patterns can match (custom event names map to ``custom``)."""
    kinds: set[str] = set()
    for pattern in patterns:
        head = pattern.partition(":")[0]
        if head == "*":
            return set(KINDS)
        kinds.add(head if head in KINDS else "custom")
    return kinds


def behaviour_types_for(patterns: Iterable[str]) -> tuple[type, ...]:
    """The behaviour event types (not consent, context or exposure bookkeeping) that can
    match any of ``patterns``; a custom event may carry any name, a kind's included."""
    found: list[type] = []
    for pattern in patterns:
        head = pattern.partition(":")[0]
        if head == "*":
            return BEHAVIOUR_TYPES
        if head in BY_KIND and BY_KIND[head] in BEHAVIOUR_TYPES:
            found.append(BY_KIND[head])
        found.append(Custom)
    return tuple(dict.fromkeys(found))
