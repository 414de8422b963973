"""Timing helpers shared by the benchmarks: per-call samples, medians and tails."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Per-call latency summary in microseconds."""

    name: str
    n: int
    median_us: float
    p99_us: float
    mean_us: float

    @classmethod
    def of(cls, name: str, samples_ns: list[int]) -> Timing:
        ordered = sorted(samples_ns)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return cls(
            name=name,
            n=len(ordered),
            median_us=statistics.median(ordered) / 1000.0,
            p99_us=p99 / 1000.0,
            mean_us=statistics.fmean(ordered) / 1000.0,
        )


def time_calls(
    name: str, fn: Callable[[int], object], n: int, warmup: int = 200, batch: int = 1
) -> Timing:
    """Time ``fn(i)`` for i in range(n), one sample per call, divided by ``batch``.

    The garbage collector stays on: its pauses are part of the real tail latency.
    """
    for i in range(warmup):
        fn(i)
    samples = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        fn(i)
        samples[i] = (clock() - start) // batch
    return Timing.of(name, samples)


def time_pair(
    names: tuple[str, str],
    fns: tuple[Callable[[int], object], Callable[[int], object]],
    n: int,
    warmup: int = 200,
) -> tuple[Timing, Timing, Timing, Timing]:
    """Time two functions call by call, alternating which goes first, so that the machine's
    load at any moment weighs on both alike. Returns the wall-clock timings of each, then
    their CPU-time timings (the thread's CPU clock: time the process was descheduled by a
    busy machine does not count, a garbage-collection pause does)."""
    first, second = fns
    for i in range(warmup):
        first(i)
        second(i)
    a, b, ca, cb = [0] * n, [0] * n, [0] * n, [0] * n
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    for i in range(n):
        one, other = (second, first) if i & 1 else (first, second)
        t0, c0 = clock(), cpu()
        one(i)
        t1, c1 = clock(), cpu()
        other(i)
        t2, c2 = clock(), cpu()
        if i & 1:
            a[i], b[i], ca[i], cb[i] = t2 - t1, t1 - t0, c2 - c1, c1 - c0
        else:
            a[i], b[i], ca[i], cb[i] = t1 - t0, t2 - t1, c1 - c0, c2 - c1
    return (
        Timing.of(names[0], a),
        Timing.of(names[1], b),
        Timing.of(names[0] + " (CPU)", ca),
        Timing.of(names[1] + " (CPU)", cb),
    )
