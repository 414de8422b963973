"""Deterministic bucketing, bit-compatible with GrowthBook.

A user's hash value (an id) and a seed (usually the experiment key) hash to a number in [0, 1)
with FNV-1a 32-bit; bucket ranges turn variation weights and coverage into intervals of that
unit line, and the variation is the range the number falls in. Everything here is pure and
cheap enough for the decision hot path.

>>> hash("seed", "a", 2), hash("", "a", 1), hash("abc", "def", 99) is None
(0.0505, 0.22, True)
>>> ranges = get_bucket_ranges(2, coverage=0.5)
>>> ranges
[(0.0, 0.25), (0.5, 0.75)]
>>> choose_variation(0.6, ranges), choose_variation(0.3, ranges)
(1, -1)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from fnv_hash_fast import fnv1a_32 as _fnv_bytes

__all__ = [
    "choose_variation",
    "fnv1a32",
    "get_bucket_ranges",
    "get_equal_weights",
    "get_query_string_override",
    "hash",
    "in_namespace",
    "in_range",
    "normalized_weights",
    "weights_are_valid",
]

_FNV_OFFSET_BASIS = 0x811C9DC5
_FNV_PRIME = 0x01000193
_UTF16_NATIVE = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
# Weight vectors summing outside this band are replaced by equal weights, as in GrowthBook.
_WEIGHT_SUM_MIN = 0.99
_WEIGHT_SUM_MAX = 1.01


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit over the UTF-16 code units of ``text`` (JS ``charCodeAt``), so non-ASCII
    ids hash exactly as in the browser SDK. ASCII text (code units = bytes) is hashed by
    ``fnv-hash-fast``'s C implementation, about fifty times faster than Python's loop.

    >>> fnv1a32(""), fnv1a32("a"), fnv1a32("é") == _fnv_continue(_FNV_OFFSET_BASIS, "é")
    (2166136261, 3826002220, True)
    """
    if text.isascii():
        return _fnv_bytes(text.encode())
    return _fnv_continue(_FNV_OFFSET_BASIS, text)


def _fnv_continue(h: int, text: str) -> int:
    # FNV is a left fold, so hashing a + b can resume from the state after a.
    units = text.encode() if text.isascii() else _utf16_units(text)
    prime = _FNV_PRIME
    for unit in units:
        h = ((h ^ unit) * prime) & 0xFFFFFFFF
    return h


def _utf16_units(text: str) -> memoryview:
    return memoryview(text.encode(_UTF16_NATIVE, "surrogatepass")).cast("H")


def hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's hash of ``value`` with ``seed`` into [0, 1); ``None`` for an unknown version.

    Version 1 has 1000 buckets and hashes ``value + seed``; version 2 has 10000 buckets and
    re-hashes the decimal string of the first hash of ``seed + value``, which spreads similar
    ids better.
    """
    if version == 2:
        text = seed + value
        first = _fnv_bytes(text.encode()) if text.isascii() else fnv1a32(text)
        return (_fnv_bytes(str(first).encode()) % 10000) / 10000
    if version == 1:
        text = value + seed
        h = _fnv_bytes(text.encode()) if text.isascii() else fnv1a32(text)
        return (h % 1000) / 1000
    return None


def in_range(n: float, bounds: Sequence[float]) -> bool:
    """Whether ``n`` is in the half-open range ``[start, end)``."""
    return bounds[0] <= n < bounds[1]


def choose_variation(n: float, ranges: Sequence[Sequence[float]]) -> int:
    """Index of the first range containing ``n``, or -1 (not in the experiment)."""
    for i, bounds in enumerate(ranges):
        if bounds[0] <= n < bounds[1]:
            return i
    return -1


def in_namespace(hash_value: str, namespace: Sequence[Any]) -> bool:
    """Whether a user is in the ``(namespace_id, start, end)`` slice of a namespace.

    Namespaces keep mutually exclusive experiments apart: each experiment owns a slice.
    """
    namespace_id, start, end = namespace
    n = hash(f"__{namespace_id}", hash_value, 1)
    return n is not None and start <= n < end


def get_equal_weights(num_variations: int) -> list[float]:
    """``num_variations`` equal weights summing to 1 (none for fewer than one variation)."""
    if num_variations < 1:
        return []
    return [1.0 / num_variations] * num_variations


def _is_valid_weight(w: object) -> bool:
    return isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0


def weights_are_valid(num_variations: int, weights: object) -> bool:
    """Whether ``weights`` has one finite, non-negative weight per variation summing to 1
    (within 0.01)."""
    return (
        isinstance(weights, (list, tuple))
        and len(weights) == num_variations
        and all(_is_valid_weight(w) for w in weights)
        and _WEIGHT_SUM_MIN <= sum(weights) <= _WEIGHT_SUM_MAX
    )


def normalized_weights(num_variations: int, weights: Sequence[float] | None) -> list[float]:
    """The weights bucketing really uses: ``weights`` when valid (see
    :func:`weights_are_valid`), equal weights otherwise."""
    if weights is not None and weights_are_valid(num_variations, weights):
        return [float(w) for w in weights]
    return get_equal_weights(num_variations)


def get_bucket_ranges(
    num_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """One ``[start, end)`` range per variation: variation ``i`` owns the slice of width
    ``weights[i]`` starting at the sum of the previous weights, of which only the first
    ``coverage`` fraction enrols users. Coverage is clamped to [0, 1]; unusable weights are
    replaced by equal weights (see :func:`normalized_weights`)."""
    coverage = min(max(coverage, 0.0), 1.0)
    ranges = []
    start = 0.0
    for w in normalized_weights(num_variations, weights):
        ranges.append((start, start + coverage * w))
        start += w
    return ranges


def get_query_string_override(key: str, url: str, num_variations: int) -> int | None:
    """The variation forced by ``?<key>=<index>`` in ``url``, if it names a valid index.

    >>> get_query_string_override("my-test", "http://example.com?a=b&my-test=1#top", 2)
    1
    """
    if not url or "?" not in url:
        return None
    query = url.split("?", 1)[1].split("#", 1)[0]
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != key:
            continue
        if not (value.isascii() and value.isdigit()):
            return None
        index = int(value)
        return index if index < num_variations else None
    return None
