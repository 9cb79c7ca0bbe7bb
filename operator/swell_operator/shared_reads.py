"""One API read shared by every pool that asks the same question within a short time.

At 1000 pools, equal calls made per pool (one namespace's HPAs, one Secret named by every pool) were most
of the operator's idle CPU and load on the API server. Here the answer of one call serves everyone who asks
while it is on its way and for ``max_age`` after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# The longest a shared read may take: one hung request must not hold every pool that waits on it.
SHARED_READ_TIMEOUT_SECONDS = 30.0


class SharedReads(Generic[K, V]):
    """Answers of ``read`` per key; a failed or timed-out read is never kept, so the next caller tries again."""

    def __init__(
        self, read: Callable[[K], Awaitable[V]], max_age: float, timeout: float = SHARED_READ_TIMEOUT_SECONDS
    ) -> None:
        self._read = read
        self.max_age = max_age
        self.timeout = timeout
        self._answers: dict[K, tuple[float, V]] = {}
        self._reading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, *, fresh: bool = False) -> V:
        """The kept answer, or one read now; ``fresh`` skips a kept answer (not a read already under way)."""
        kept = self._answers.get(key)
        if kept is not None and not fresh and time.monotonic() - kept[0] < self.max_age:
            return kept[1]
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(asyncio.wait_for(self._read(key), self.timeout))
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        # Shielded: a pool's daemon cancelled while it waits must not cancel the other pools' read.
        found = await asyncio.shield(reading)
        self._answers[key] = (time.monotonic(), found)
        return found
