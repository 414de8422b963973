"""Reward attribution: which events credit which exposure — one definition for every consumer.

The live bandit learner (:class:`trimtab.bandits.serving.ServedPolicy`), off-policy evaluation
(:mod:`trimtab.bandits.logeval`, ``trimtab ope``) and experiment metrics
(:mod:`trimtab.experiments.metrics`, ``trimtab report``) all credit events to exposures with
:func:`attribute`, so a policy is evaluated and reported on the reward it learned from.

**Rounds.** A slot's round is the first exposure of one decision to a user (showing the same
decision again does not start a new round). A user's next round in the slot ends the previous
one, so no event is ever credited twice.

**Credit.** An event credits the user's latest round that began before it, when it comes within
``window_s`` of that round's start (inclusive). Time is the **server's receive time**
(``received``), never the browser's clock, which a visitor controls; events received together
keep the order in which they were logged.

**What counts.** The :class:`Reward` names an event pattern (``kind:detail``, the syntax of
feature sequences and metrics), whether only events inside the slot count (``in_slot``; custom
events have no slot and always qualify), and the amount each event brings: the field named by
``value`` (``dwell_ms``…) or, by default, the event's natural amount — ``dwell_ms`` of a hover,
``visible_ms`` of a visibility report, the number of a custom event, else 1. A missing,
non-finite (NaN, ±inf) amount adds nothing: one visitor's malformed value cannot poison a
learner or a report. A round's reward is 1 when its credited amounts add up to ``min_value``
(any credited event when ``min_value`` is 0), else 0.

>>> import numpy as np
>>> rounds = Rounds(user=np.array([0, 0, 1]), time=np.array([0.0, 5_000.0, 0.0]))
>>> events = Events(user=np.array([0, 0, 1, 1]), time=np.array([1_000.0, 6_000.0, 90_000.0,
...                                                              30_000.0]))
>>> credited = attribute(rounds, events, window_s=60)
>>> credited.count.tolist()  # u0's second exposure ends the first; u1's 90 s click is late
[1, 1, 1]
>>> credited.rewards(min_value=0).tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import numpy as np

from trimtab.events import Custom, Hover, Visible
from trimtab.patterns import matcher

#: Largest number of distinct users one call can tell apart (codes are packed with a rank).
MAX_USERS = 1 << 31


class Reward(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What counts as a reward for a slot's exposures (see the module doc)."""

    event: str = "click:*"  # kind:detail pattern; a custom event by its name
    in_slot: bool = True  # only events on elements inside the slot (custom events always)
    window_s: float = 600.0  # credit events up to this long after the exposure
    min_value: float = 0.0  # summed amount a round needs for reward 1 (0: any credited event)
    value: str = ""  # the event field giving each event's amount ("" = its natural amount)


def receive_time(received: float, ts: float) -> float:
    """When the server received an event (epoch ms); the browser's ``ts`` only for events
    that never went through a server (written by tests or tools), which carry no receive time."""
    return received if received > 0.0 else ts


def event_time(event: Any) -> float:
    """:func:`receive_time` of an event."""
    return receive_time(event.received, event.ts)


def natural_amount(event: Any) -> float:
    """An event's amount when the reward names no ``value`` field (NaN when unusable)."""
    kind = type(event)
    if kind is Hover:
        amount = event.dwell_ms
    elif kind is Visible:
        amount = event.visible_ms
    elif kind is Custom:
        value = event.value
        amount = float(value) if type(value) in (int, float) else 1.0
    else:
        amount = 1.0
    return amount if math.isfinite(amount) else math.nan


def reward_amount(reward: Reward, slot: str) -> Callable[[Any], float | None]:
    """``event -> amount`` for events this reward credits in ``slot``; None for the others.

    The amount is NaN when the event matches but brings nothing (missing or non-finite).
    """
    matches = matcher(reward.event)
    in_slot = reward.in_slot
    field_name = reward.value

    def amount(event: Any) -> float | None:
        if in_slot and type(event) is not Custom and getattr(event, "slot", "") != slot:
            return None
        if not matches(event):
            return None
        if not field_name:
            return natural_amount(event)
        value = getattr(event, field_name, None)
        if type(value) not in (int, float) or not math.isfinite(cast(float, value)):
            return math.nan
        return float(cast(float, value))

    return amount


@dataclass(frozen=True)
class Rounds:
    """Exposures of one slot: user codes, receive times (ms) and log order.

    ``starts`` marks the exposures that start a round; the others (a decision shown again
    after another one) only end the round before them. None: every exposure starts one.
    """

    user: np.ndarray
    time: np.ndarray
    seq: np.ndarray | None = None
    starts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time)


@dataclass(frozen=True)
class Events:
    """Candidate events (already matched to the pattern): user codes, times, order, amounts."""

    user: np.ndarray
    time: np.ndarray
    seq: np.ndarray | None = None
    value: np.ndarray | None = None  # NaN: counted as an event, adds no amount

    def __len__(self) -> int:
        return len(self.time)


@dataclass(frozen=True)
class Credited:
    """Per round, in the order rounds were given: what its window collected."""

    count: np.ndarray  # credited events
    total: np.ndarray  # sum of their finite amounts
    maximum: np.ndarray  # largest finite amount (0 when none)
    values: np.ndarray  # how many had a finite amount
    event_round: np.ndarray = field(repr=False)  # per event: the round it credits, or -1

    def rewards(self, min_value: float = 0.0) -> np.ndarray:
        """1.0 where the round earned its reward (see the module doc), else 0.0."""
        if min_value > 0.0:
            return (self.total >= min_value).astype(np.float64)
        return (self.count > 0).astype(np.float64)


@dataclass(frozen=True)
class Located:
    """Where each event falls among the rounds (:func:`locate`): per event, the user's latest
    round at or before it and their next round after it (-1 when none), with the time gaps."""

    latest: np.ndarray
    since_latest: np.ndarray  # ms from that round to the event
    next: np.ndarray
    until_next: np.ndarray  # ms from the event to that round


def locate(rounds: Rounds, events: Events) -> Located:
    """Place every event among its user's rounds, in ``(time, seq)`` order (``seq``: the log
    order, by default the given order); a round and an event at exactly the same place count
    the round first. Reusable for several windows and event subsets of the same data."""
    n_rounds, n_events = len(rounds), len(events)
    none = np.full(n_events, -1, np.int64)
    if n_rounds == 0 or n_events == 0:
        return Located(none, np.zeros(n_events), none.copy(), np.zeros(n_events))
    r_user = np.asarray(rounds.user, np.int64)
    e_user = np.asarray(events.user, np.int64)
    if r_user.max(initial=0) >= MAX_USERS or e_user.max(initial=0) >= MAX_USERS:
        raise ValueError(f"user codes must be below {MAX_USERS}")
    r_time = np.asarray(rounds.time, np.float64)
    e_time = np.asarray(events.time, np.float64)
    r_seq = np.arange(n_rounds) if rounds.seq is None else np.asarray(rounds.seq, np.int64)
    e_seq = np.arange(n_events) if events.seq is None else np.asarray(events.seq, np.int64)
    if np.array_equal(r_user, np.arange(n_rounds)):
        # One round per user, numbered by user (an experiment's first exposures): each event
        # is before or after its own user's round, no search needed.
        own = np.where(e_user < n_rounds, e_user, 0)
        known = e_user < n_rounds
        after = known & ((e_time > r_time[own]) | ((e_time == r_time[own]) & (e_seq >= r_seq[own])))
        before = known & ~after
        return Located(
            np.where(after, own, -1), e_time - r_time[own], np.where(before, own, -1),
            r_time[own] - e_time,
        )  # fmt: skip
    # One total order over rounds and events: by receive time, then log order.
    time = np.concatenate([r_time, e_time])
    seq = np.concatenate([r_seq, e_seq])
    first = np.concatenate([np.zeros(n_rounds, np.int8), np.ones(n_events, np.int8)])
    order = np.lexsort((first, seq, time))
    rank = np.empty(len(time), np.int64)
    rank[order] = np.arange(len(time))
    r_key = (r_user << 32) | rank[:n_rounds]
    e_key = (e_user << 32) | rank[n_rounds:]
    by_key = np.argsort(r_key, kind="stable")
    sorted_keys = r_key[by_key]
    pos = np.searchsorted(sorted_keys, e_key, side="right")
    latest = by_key[np.maximum(pos - 1, 0)]
    latest = np.where((pos > 0) & (r_user[latest] == e_user), latest, -1)
    upcoming = by_key[np.minimum(pos, n_rounds - 1)]
    upcoming = np.where((pos < n_rounds) & (r_user[upcoming] == e_user), upcoming, -1)
    return Located(
        latest,
        e_time - r_time[np.maximum(latest, 0)],
        upcoming,
        r_time[np.maximum(upcoming, 0)] - e_time,
    )


def attribute(
    rounds: Rounds,
    events: Events,
    window_s: float | None,
    *,
    before: bool = False,
    located: Located | None = None,
    only: np.ndarray | None = None,
    maximum: bool = True,
) -> Credited:
    """Credit each event to its round (see the module doc); ``window_s=None`` is unbounded.

    With ``before`` the window runs backwards instead: an event credits the user's next round
    when it comes at most ``window_s`` before it (what a round's pre-period looks like, for
    CUPED). ``located`` (from :func:`locate` on the same rounds and event times) saves placing
    the events again; ``only`` is a mask of the events to consider; ``maximum=False`` skips
    the per-round largest amount (left at 0) when it is not wanted.
    """
    n_rounds, n_events = len(rounds), len(events)
    if located is None:
        located = locate(rounds, events)
    target, gap = (
        (located.next, located.until_next) if before else (located.latest, located.since_latest)
    )
    ok = target >= 0
    if only is not None:
        ok &= np.asarray(only, bool)
    if rounds.starts is not None and n_rounds:
        ok &= np.asarray(rounds.starts, bool)[np.maximum(target, 0)]
    if window_s is not None:
        ok &= gap <= window_s * 1000.0
    event_round = np.where(ok, target, -1)
    hit = event_round[ok]
    count = np.bincount(hit, minlength=n_rounds)
    amounts = np.ones(n_events) if events.value is None else np.asarray(events.value, float)
    amounts = amounts[ok]
    finite = np.isfinite(amounts)
    hit_finite, amounts = hit[finite], amounts[finite]
    total = np.bincount(hit_finite, weights=amounts, minlength=n_rounds)
    values = np.bincount(hit_finite, minlength=n_rounds)
    largest = np.zeros(n_rounds)
    if maximum and len(hit_finite):
        # the largest amount per round: sort by (round, amount), keep each round's last
        order = np.lexsort((amounts, hit_finite))
        last = np.ones(len(order), bool)
        last[:-1] = hit_finite[order][1:] != hit_finite[order][:-1]
        largest[hit_finite[order][last]] = amounts[order][last]
    return Credited(count, total, largest, values, event_round)


def exposure_rounds(
    user: np.ndarray, decision: np.ndarray, time: np.ndarray, seq: np.ndarray | None = None
) -> tuple[np.ndarray, Rounds]:
    """A slot's exposures as :class:`Rounds`: which of them matter and which start a round.

    An exposure of the decision a user was already shown last in the slot changes nothing and
    is dropped; of the others, the first exposure of each decision starts its round and a
    later one (an older decision shown again) only ends the round before it. Exposures without
    a decision id start rounds no decision can claim. Returns the kept exposures' indexes (in
    time order) and their rounds.
    """
    n = len(time)
    user = np.asarray(user, np.int64)
    time = np.asarray(time, np.float64)
    seq = np.arange(n) if seq is None else np.asarray(seq, np.int64)
    decision = np.asarray(decision, dtype=object)
    order = np.lexsort((seq, time, user))
    u, d = user[order], decision[order]
    repeat = np.zeros(n, bool)
    if n > 1:
        repeat[1:] = (u[1:] == u[:-1]) & (d[1:] == d[:-1]) & (d[1:] != "")
    kept = order[~repeat]
    kept = kept[np.lexsort((seq[kept], time[kept]))]
    ids = decision[kept]
    starts = np.ones(len(kept), bool)
    named = np.flatnonzero(ids != "")
    if len(named):
        _, first = np.unique(ids[named].astype(str), return_index=True)
        starts[named] = False
        starts[named[first]] = True
    return kept, Rounds(user=user[kept], time=time[kept], seq=seq[kept], starts=starts)
