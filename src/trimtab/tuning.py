"""Process settings for serving: the garbage collector's schedule.

CPython's cyclic collector runs its youngest generation every 700 container allocations by
default; on a server answering in tens of microseconds that puts a collection pause into
about one request in two hundred, and into the p99. Serving processes therefore move
everything built at start-up (config, compiled rules, imported modules) out of the
collector's view (``gc.freeze``) and collect the young generation every 10,000 allocations.
Reference counting still frees almost everything at once; only reference cycles wait longer.
``trimtab bench core`` measures decide under the same settings. ``TRIMTAB_GC=default`` keeps
Python's own schedule.
"""

from __future__ import annotations

import gc
import os

SERVING_THRESHOLDS = (10_000, 20, 20)


def tune_for_serving() -> tuple[int, int, int]:
    """Apply the serving GC schedule; returns the previous thresholds."""
    previous = gc.get_threshold()
    if os.environ.get("TRIMTAB_GC") == "default":
        return previous
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
    return previous
