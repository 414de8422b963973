"""Bounding the user states a process keeps in memory.

Every pipeline (embedded runtime, scaled edge, bus consumer) caches the states of the users it
works on. A flood of new ids must not grow that cache without bound, and evicting must never
lose anything: only states that are already stored may go (a pinned user, one whose latest
state is not written yet, stays). An evicted user is loaded from the store when they return.

>>> states = {f"u{i}": i for i in range(10)}
>>> evict(states, keep=5, pinned={"u0"})
6
>>> sorted(states)
['u0', 'u7', 'u8', 'u9']
"""

from __future__ import annotations

from collections.abc import Container, MutableMapping
from typing import Any

LOW_WATER = 0.9  # evict down to this share of the bound, so eviction runs now and then


def evict(
    states: MutableMapping[str, Any],
    keep: int,
    pinned: Container[str] = (),
    also: MutableMapping[str, Any] | None = None,
) -> int:
    """Drop the oldest-loaded states beyond ``keep`` (down to 90 % of it), never a pinned one.

    ``also`` is a companion mapping (versions) cleaned of the same users. Returns how many
    states were dropped.
    """
    if len(states) <= keep:
        return 0
    target = len(states) - max(1, int(keep * LOW_WATER))
    doomed = []
    for user in states:  # insertion order: the oldest loaded first
        if user not in pinned:
            doomed.append(user)
            if len(doomed) >= target:
                break
    for user in doomed:
        del states[user]
        if also is not None:
            also.pop(user, None)
    return len(doomed)
