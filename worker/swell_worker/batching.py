"""Micro-batching: concurrent embed calls from different tasks become one model call.

A model call on 32 texts costs far less than 32 calls on one, and a worker with concurrency N has up
to N tasks wanting vectors at once. Batches form while the model is busy rather than on a timer: an idle
model takes the first request at once (no added latency at low load), and every request that arrives
during a call joins the next one, up to a bounded batch size. So the batch grows exactly as fast as work
waits.

An embedder may take several calls at once (``parallel_calls``: the int8 runtime runs one single-threaded
call per core). A request that arrives while one call runs then starts another at once instead of
waiting for it, and the waiting texts are shared among the calls that start together. At low load that
halves the wait behind a running call; under load every core still runs a full batch. A large request is
split across the calls. Each call runs in a thread of the model's lower priority
(embedder.lower_thread_priority), so the event loop keeps serving pulls, replies and probes meanwhile,
without waiting for a core behind the model.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from prometheus_client import Histogram

from swell_worker.embedder import Embedder, Vectors, model_threads

# Series names, also read by bench/embedding.py from a worker's /metrics.
BATCH_SIZE_SERIES = "swell_embedding_batch_size"
BATCH_SECONDS_SERIES = "swell_embedding_batch_seconds"
BATCH_SIZE = Histogram(BATCH_SIZE_SERIES, "Texts per model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_SECONDS = Histogram(
    BATCH_SECONDS_SERIES,
    "Seconds per model call.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[Vectors] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    def __init__(self, embedder: Embedder, *, max_texts: int = 64) -> None:
        self.embedder = embedder
        self.max_texts = max_texts
        self.model_calls = 0
        self._pending: list[_Request] = []
        self._parallel = max(1, embedder.parallel_calls)
        self._runners: set[asyncio.Task[None]] = set()
        # Runners started and not yet in a model call: the waiting texts are shared among them.
        self._starting = 0
        self._calls = model_threads("swell-model", self._parallel)

    def close(self) -> None:
        """Let the model threads end once their calls return; embedding afterwards is an error."""
        self._calls.shutdown(wait=False)

    async def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        size = min(self.max_texts, math.ceil(len(texts) / self._parallel))
        requests = [_Request(texts[at : at + size]) for at in range(0, len(texts), size)]
        self._pending.extend(requests)
        while len(self._runners) < self._parallel and self._starting < len(self._pending):
            # Started as a task, a runner first runs after every caller already scheduled has queued its texts.
            self._starting += 1
            self._runners.add(asyncio.create_task(self._run_while_pending()))
        if len(requests) == 1:
            return await requests[0].future
        return np.concatenate(await asyncio.gather(*(request.future for request in requests)))

    async def _run_while_pending(self) -> None:
        try:
            while self._pending:
                batch = self._take_batch()
                self._starting -= 1
                try:
                    await self._run(batch)
                finally:
                    self._starting += 1
        finally:
            self._starting -= 1
            # At once, not in a done callback: a caller woken by this runner's last results may embed
            # again before such a callback runs, and must then be able to start a runner.
            self._runners.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    def _take_batch(self) -> list[_Request]:
        """Whole requests, oldest first: this runner's share of the waiting texts, up to ``max_texts``."""
        waiting = sum(len(request.texts) for request in self._pending)
        share = min(self.max_texts, math.ceil(waiting / max(1, self._starting)))
        taken, count = 0, 0
        for request in self._pending:
            if taken and count + len(request.texts) > share:
                break
            taken, count = taken + 1, count + len(request.texts)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            started = time.perf_counter()
            vectors = await asyncio.get_running_loop().run_in_executor(self._calls, self.embedder.embed, texts)
            BATCH_SECONDS.observe(time.perf_counter() - started)
            BATCH_SIZE.observe(len(texts))
            self.model_calls += 1
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        offset = 0
        for request in batch:
            if not request.future.done():
                request.future.set_result(vectors[offset : offset + len(request.texts)])
            offset += len(request.texts)
