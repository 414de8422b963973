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
) -> tuple[Timing, Timing]:
    """Time two functions call by call, alternating which goes first, so that the machine's
    load at any moment weighs on both alike: their median and p99 ratios are then fair on a
    shared, noisy machine."""
    first, second = fns
    for i in range(warmup):
        first(i)
        second(i)
    a = [0] * n
    b = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        if i & 1:
            start = clock()
            second(i)
            mid = clock()
            first(i)
            a[i], b[i] = clock() - mid, mid - start
        else:
            start = clock()
            first(i)
            mid = clock()
            second(i)
            a[i], b[i] = mid - start, clock() - mid
    return Timing.of(names[0], a), Timing.of(names[1], b)
