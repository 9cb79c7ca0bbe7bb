"""Micro-batching: concurrent embed calls from different tasks become one model call.

A model call on 32 texts costs far less than 32 calls on one, and a worker with concurrency N has up
to N tasks wanting vectors at once. Batches form while the model is busy rather than on a timer: an idle
model takes the first request at once (no added latency at low load), and every request that arrives
during a call joins the next one, up to a bounded batch size. So the batch grows exactly as fast as work
waits. The call runs in a thread of the model's lower priority (embedder.lower_thread_priority), so the
event loop keeps serving pulls, replies and probes meanwhile, without waiting for a core behind the model.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Histogram

from swell_worker.embedder import Embedder, Vectors, model_threads

BATCH_SIZE = Histogram(
    "swell_embedding_batch_size", "Texts per model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_SECONDS = Histogram(
    "swell_embedding_batch_seconds",
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
        self._runner: asyncio.Task[None] | None = None
        # One call at a time: a batch grows while the model is busy, and the call already uses every core.
        self._calls = model_threads("swell-model")

    def close(self) -> None:
        """Let the model thread end once its call returns; embedding afterwards is an error."""
        self._calls.shutdown(wait=False)

    async def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        request = _Request(list(texts))
        self._pending.append(request)
        if self._runner is None:
            # Started as a task, it first runs after every caller already scheduled has queued its texts.
            self._runner = asyncio.create_task(self._run_while_pending())
        return await request.future

    async def _run_while_pending(self) -> None:
        try:
            while self._pending:
                await self._run(self._take_batch())
        finally:
            self._runner = None

    def _take_batch(self) -> list[_Request]:
        """Whole requests, oldest first, up to ``max_texts`` (a larger request goes alone)."""
        taken, count = 0, 0
        for request in self._pending:
            if taken and count + len(request.texts) > self.max_texts:
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
