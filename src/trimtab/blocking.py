"""Running blocking writes in a worker thread without losing them to a cancellation.

``await asyncio.to_thread(write, batch)`` has a trap: when the awaiting task is cancelled
(the server is stopping) before the thread pool started the job, the job is cancelled too and
never runs, though the caller already took ``batch`` out of its buffers. :func:`finish_in_thread`
shields the job: a cancelled caller first waits for the write to end, then is cancelled (and,
not knowing whether the write succeeded, keeps what it wrote to write it again: writes are
idempotent here).

>>> import asyncio
>>> asyncio.run(finish_in_thread(sum, [1, 2, 3]))
6
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, run to its end even if the caller is cancelled."""
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        if not job.done():
            await asyncio.wait([job])  # the write was handed over: let it land
        raise
