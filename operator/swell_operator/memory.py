"""Gives the memory the operator freed back to the system, so its RSS follows what it holds, not its peak.

The first scaling rounds of hundreds of pools run at once and leave glibc's heap full of freed chunks that
``free`` keeps for reuse: measured at 1000 pools, RSS stayed at 422 MB after the start-up, and
``malloc_trim(0)`` brought it to 293 MB. The trim runs once a minute (it walks only malloc's free lists);
where the C library is not glibc (musl) there is nothing to call and nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_INTERVAL_SECONDS = 60.0


def malloc_trim() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


async def trim_periodically(stop: asyncio.Event, interval: float = TRIM_INTERVAL_SECONDS) -> None:
    trim = malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the allocator")
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        trim()
