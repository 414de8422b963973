"""Per-key rate limiting: a token bucket per (site key, client network).

>>> bucket = RateLimiter(rate_per_s=1.0, burst=2)
>>> [bucket.allow("pk", "10.0.0.0", now=0.0) for _ in range(3)]
[True, True, False]
>>> bucket.allow("pk", "10.0.0.0", now=1.0)
True
"""

from __future__ import annotations

import time


class RateLimiter:
    """Allows ``burst`` requests at once and ``rate_per_s`` sustained, per key and client."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def allow(self, key: str, client: str, cost: float = 1.0, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get((key, client), (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        if len(self._buckets) >= self.max_clients:
            self._buckets.clear()  # bounded memory; a reset only ever forgives
        self._buckets[(key, client)] = (tokens, now)
        return allowed

    def retry_after(self, cost: float = 1.0) -> int:
        """Seconds until a request of ``cost`` is allowed again, rounded up."""
        return max(1, int(cost / self.rate + 0.999))
