"""Heavy objects that every handler of one worker process shares: one embedding model, one vector store.

They are created on first use, in a thread (loading a model blocks for seconds), under a lock so two
handlers starting at once still load one copy. The factories belong to the ML modules and are named
here only by reference, so a worker that runs ``noop`` never imports numpy or onnxruntime.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from swell_worker.config import WorkerConfig
from swell_worker.imports import load_object

if TYPE_CHECKING:
    from swell_worker.batching import MicroBatcher

log = logging.getLogger(__name__)

# Plain functions taking the WorkerConfig and returning the object; close() is called at shutdown if present.
EMBEDDER_FACTORY = "swell_worker.embedder:load_embedder"
VECTOR_STORE_FACTORY = "swell_worker.vectorstore:open_store"


class Resources:
    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._objects: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._batcher: MicroBatcher | None = None

    async def embedder(self) -> Any:
        return await self._shared(EMBEDDER_FACTORY)

    async def embedding_batcher(self) -> MicroBatcher:
        """The one micro-batcher in front of the shared embedder, so embed, index and search tasks batch together."""
        embedder = await self.embedder()
        if self._batcher is None:
            from swell_worker.batching import MicroBatcher  # numpy: imported only by workers that embed

            self._batcher = MicroBatcher(embedder)
        return self._batcher

    async def vector_store(self) -> Any:
        return await self._shared(VECTOR_STORE_FACTORY)

    async def close(self) -> None:
        """Close what was created, newest first; one failing close does not stop the others."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        for reference, obj in reversed(list(self._objects.items())):
            close = getattr(obj, "close", None)
            if not callable(close):
                continue
            try:
                outcome = close()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("closing %s failed", reference)
        self._objects.clear()

    async def _shared(self, reference: str) -> Any:
        lock = self._locks.setdefault(reference, asyncio.Lock())
        async with lock:
            if reference not in self._objects:
                factory = load_object(reference)
                self._objects[reference] = await asyncio.to_thread(factory, self._config)
            return self._objects[reference]
