"""What the console shows live, gathered as the server works, cheaply and bounded.

:class:`LiveFeed` sees every logged decision (with the attributes it saw), every accepted
event and each decide's duration. It keeps:

- the last ``RECENT`` decisions (the console's stream, newest last, each with a sequence
  number so a console asks only for what it has not seen);
- ten-second buckets of the last fifteen minutes: per slot, decisions by variant and by rule;
  per policy, its decisions by arm, overall and per reader segment;
- the last events of recently active visitors (the visitor inspector), dropped on erasure;
- decide durations (p50/p99 over the last minute).

Nothing here is persisted: a restart starts the console's history afresh (the logs, reports
and config versions are where history lives).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RECENT = 500
BUCKET_S = 10.0
KEEP_BUCKETS = 90
VISITORS = 2_000
EVENTS_PER_VISITOR = 50


class Bucket:
    """Counts of one ten-second period."""

    __slots__ = ("arms", "rules", "start", "variants")

    def __init__(self, start: float) -> None:
        self.start = start
        self.variants: dict[str, dict[str, int]] = {}  # slot -> variant -> n
        self.rules: dict[str, dict[str, int]] = {}  # slot -> rule id ("" = default) -> n
        self.arms: dict[str, dict[str, dict[str, int]]] = {}  # slot -> segment -> arm -> n


def _bump(table: dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


class LiveFeed:
    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.seq = 0
        self.buckets: deque[Bucket] = deque(maxlen=KEEP_BUCKETS)
        self.decide_s: deque[tuple[float, float]] = deque(maxlen=10_000)
        self.visitors: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.sessions: dict[str, str] = {}  # visitor -> latest session id

    # -- what the server reports -----------------------------------------------------------
    def logged(self, decisions: Iterable[Any], attrs: Mapping[str, Any]) -> None:
        """Decisions as the engine logs them (the attributes they saw)."""
        now = self.clock()
        bucket = self._bucket(now)
        user = str(attrs.get("id", ""))
        segment = str(attrs.get("segment") or "all readers")
        for d in decisions:
            self.seq += 1
            self.recent.append(
                {
                    "seq": self.seq,
                    "ts": now,
                    "id": d.decision_id,  # joins an exposure, a reward, the decision log
                    "user": user,
                    "slot": d.slot,
                    "variant": d.variant,
                    "source": d.source,
                    "rule": d.rule_id,
                    "p": round(d.propensity, 4),
                    "reason": d.reason[:300],
                }
            )
            _bump(bucket.variants.setdefault(d.slot, {}), d.variant)
            _bump(bucket.rules.setdefault(d.slot, {}), d.rule_id)
            if d.source == "policy":
                by_segment = bucket.arms.setdefault(d.slot, {})
                _bump(by_segment.setdefault(segment, {}), d.variant)
        if user and attrs.get("session_id"):
            self.sessions[user] = str(attrs["session_id"])

    def accepted(self, events: Iterable[Any]) -> None:
        """Events logged (after the privacy gate): the inspector's recent events."""
        for e in events:
            line = self.visitors.get(e.user_id)
            if line is None:
                line = self.visitors[e.user_id] = deque(maxlen=EVENTS_PER_VISITOR)
                if len(self.visitors) > VISITORS:
                    old, _ = self.visitors.popitem(last=False)
                    self.sessions.pop(old, None)
            else:
                self.visitors.move_to_end(e.user_id)
            kind = type(e).__struct_config__.tag
            line.append({"kind": kind, "ts": e.ts, "session": e.session_id, **_detail(e)})
            self.sessions[e.user_id] = e.session_id

    def decided(self, seconds: float) -> None:
        self.decide_s.append((self.clock(), seconds))

    def forget(self, user: str) -> None:
        """Erasure: nothing of the user stays in the console's memory."""
        self.visitors.pop(user, None)
        self.sessions.pop(user, None)
        kept = [d for d in self.recent if d["user"] != user]
        self.recent.clear()
        self.recent.extend(kept)

    # -- what the console reads ------------------------------------------------------------
    def since(self, seq: int, limit: int = 200) -> list[dict[str, Any]]:
        """Decisions after ``seq``, oldest first (at most ``limit``, the newest ones)."""
        out = [d for d in self.recent if d["seq"] > seq]
        return out[-limit:]

    def decide_latency(self, window_s: float = 60.0) -> dict[str, float]:
        cutoff = self.clock() - window_s
        samples = sorted(s for t, s in self.decide_s if t >= cutoff)
        return quantiles_ms(samples)

    def series(self) -> dict[str, Any]:
        """Per slot: variant shares and rule hit rates per bucket; per policy slot: arm shares
        per bucket, overall and by segment. Times are bucket starts (unix seconds)."""
        # a fixed grid of the last fifteen minutes, empty periods included (charts keep scale)
        now = self.clock()
        last = now - now % BUCKET_S
        kept = {b.start: b for b in self.buckets}
        times = [last - BUCKET_S * i for i in range(KEEP_BUCKETS - 1, -1, -1)]
        buckets = [kept.get(t) or Bucket(t) for t in times]
        slots: dict[str, Any] = {}
        names = {s for b in buckets for s in b.variants}
        for slot in sorted(names):
            totals = [sum(b.variants.get(slot, {}).values()) for b in buckets]
            variants = sorted({v for b in buckets for v in b.variants.get(slot, {})})
            rules = sorted({r for b in buckets for r in b.rules.get(slot, {})})
            slots[slot] = {
                "decisions": totals,
                "variants": {
                    v: [
                        _share(b.variants.get(slot, {}).get(v, 0), n)
                        for b, n in zip(buckets, totals, strict=True)
                    ]
                    for v in variants
                },
                "rules": {
                    r or "(default)": [
                        _share(b.rules.get(slot, {}).get(r, 0), n)
                        for b, n in zip(buckets, totals, strict=True)
                    ]
                    for r in rules
                },
            }
        arms: dict[str, Any] = {}
        for slot in sorted({s for b in buckets for s in b.arms}):
            segments = sorted({g for b in buckets for g in b.arms.get(slot, {})})
            names_ = sorted({a for b in buckets for g in b.arms.get(slot, {}).values() for a in g})
            overall = [_merge(b.arms.get(slot, {}).values()) for b in buckets]
            arms[slot] = {
                "overall": _shares(overall, names_),
                "by_segment": {
                    g: _shares([b.arms.get(slot, {}).get(g, {}) for b in buckets], names_)
                    for g in segments
                },
                "decisions": [sum(c.values()) for c in overall],
            }
        return {"t": times, "bucket_s": BUCKET_S, "slots": slots, "arms": arms}

    def _bucket(self, now: float) -> Bucket:
        start = now - now % BUCKET_S
        if not self.buckets or self.buckets[-1].start < start:
            self.buckets.append(Bucket(start))
        return self.buckets[-1]


def _detail(e: Any) -> dict[str, Any]:
    """The few fields that say what an event was (no free text beyond the scrubbed page)."""
    out: dict[str, Any] = {}
    for name in ("page", "depth", "element", "element_kind", "dwell_ms", "slot", "variant", "name"):
        value = getattr(e, name, None)
        if value not in (None, ""):
            out[name] = value
    return out


def _share(n: int, total: int) -> float | None:
    return None if total == 0 else n / total


def _merge(groups: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in groups:
        for k, v in g.items():
            out[k] = out.get(k, 0) + v
    return out


def _shares(counts: Sequence[Mapping[str, int]], names: list[str]) -> dict[str, list[float | None]]:
    totals = [sum(c.values()) for c in counts]
    return {a: [_share(c.get(a, 0), n) for c, n in zip(counts, totals, strict=True)] for a in names}


def quantiles_ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    n = len(samples)
    return {
        "n": n,
        "p50_ms": samples[n // 2] * 1000,
        "p99_ms": samples[min(n - 1, int(0.99 * n))] * 1000,
    }


__all__ = ["LiveFeed", "quantiles_ms"]
