"""Micro-batching: concurrent embed calls from different tasks become one model call.

A model call on 32 texts costs far less than 32 calls on one, and a worker with concurrency N has up
to N tasks wanting vectors at once. The first caller opens a short window (a few ms); everyone who
arrives within it, up to a bounded batch size, shares one call, run in a thread so the event loop
keeps serving pulls, replies and probes meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Histogram

from swell_worker.embedder import Embedder, Vectors

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
    def __init__(self, embedder: Embedder, *, window_seconds: float = 0.005, max_texts: int = 64) -> None:
        self.embedder = embedder
        self.window_seconds = window_seconds
        self.max_texts = max_texts
        self.model_calls = 0
        self._pending: list[_Request] = []
        self._flusher: asyncio.Task[None] | None = None
        self._model_lock = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()  # strong references until each call finishes

    async def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        request = _Request(list(texts))
        self._pending.append(request)
        if sum(len(r.texts) for r in self._pending) >= self.max_texts:
            self._take_and_run()
        elif self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_after_window())
        return await request.future

    async def _flush_after_window(self) -> None:
        await asyncio.sleep(self.window_seconds)
        self._flusher = None
        if self._pending:
            self._take_and_run()

    def _take_and_run(self) -> None:
        batch, self._pending = self._pending, []
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        task = asyncio.create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            async with self._model_lock:  # one model call at a time: the model uses every core already
                started = time.perf_counter()
                vectors = await asyncio.to_thread(self.embedder.embed, texts)
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
