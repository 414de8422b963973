"""The user states a process keeps in memory: one eviction policy, one compare-and-set loop.

Every pipeline (embedded runtime, scaled edge, bus consumer) caches the states of the users it
works on. A flood of new ids must not grow that cache without bound, and evicting must never
lose anything: only states that are already stored may go (a pinned user, one whose latest
state is not written yet, stays). An evicted user is loaded from the store when they return.
The bound is ``storage.max_users_in_memory`` everywhere (:data:`DEFAULT_MAX_USERS` unless the
config says otherwise).

Writers that share a store (scaled edges, bus consumers, sticky assignments) write with
compare-and-set on a per-user version: :func:`put_versioned` is the one loop that retries the
users another writer changed meanwhile, from what that writer stored.

>>> states = {f"u{i}": i for i in range(10)}
>>> evict(states, keep=5, pinned={"u0"})
6
>>> sorted(states)
['u0', 'u7', 'u8', 'u9']
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, MutableMapping
from typing import Any

from trimtab.store import VersionedStateStore

LOW_WATER = 0.9  # evict down to this share of the bound, so eviction runs now and then
DEFAULT_MAX_USERS = 50_000  # storage.max_users_in_memory when the config does not say
MAX_CAS_ROUNDS = 20  # compare-and-set rounds before the users still changing are given up


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


async def put_versioned(
    store: VersionedStateStore,
    blobs: dict[str, bytes],
    versions: dict[str, int],
    redo: Callable[[set[str]], Awaitable[dict[str, bytes]]],
    on_refused: Callable[[str], None],
    rounds: int = MAX_CAS_ROUNDS,
) -> tuple[dict[str, int], set[str]]:
    """Write ``blobs`` expecting the ``versions`` they were made from (0: a new user).

    When another writer changed some users meanwhile, ``redo(conflicts)`` rebuilds their
    blobs from what that writer stored (updating ``versions`` as it reloads) and the loop
    writes again, at most ``rounds`` times. A tombstoned user is never written: each one
    refused is passed to ``on_refused``. ``versions`` gains every written version. Returns
    the written versions and the users still conflicting after the last round.
    """
    done: dict[str, int] = {}
    for _ in range(rounds):
        if not blobs:
            return done, set()
        expected = {user: versions.get(user, 0) for user in blobs}
        refused: set[str] = set()
        written, conflicts = await store.put_many_versioned(blobs, expected, refused)
        versions.update(written)
        done.update(written)
        for user in refused:
            on_refused(user)
        if not conflicts:
            return done, set()
        blobs = await redo(conflicts)
    return done, set(blobs)
