"""The operator hands freed heap memory back: after a burst of allocations is freed, a trim lowers RSS."""

from __future__ import annotations

import asyncio
from pathlib import Path

from swell_operator.memory import malloc_trim, trim_periodically


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_trim_returns_the_memory_a_freed_burst_left_in_the_heap() -> None:
    trim = malloc_trim()
    assert trim is not None, "glibc is the C library here"
    burst = [bytearray(4000) for _ in range(40_000)]  # ~160 MB of malloc'd chunks, as start-up rounds leave
    keep = burst[::1000]  # a few survivors pin the top of the heap, so free alone cannot shrink it
    del burst
    before = rss_mb()
    trim()
    after = rss_mb()
    assert before - after > 50, f"RSS {before:.0f} -> {after:.0f} MB"
    assert len(keep) == 40


async def test_the_trim_task_ends_when_the_operator_stops() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(trim_periodically(stop, interval=0.05))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 2)
