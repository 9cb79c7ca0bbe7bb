"""search: embed the query and return the k nearest documents with their scores and metadata."""

from __future__ import annotations

from typing import Any

from swell_contract.task import Task

from swell_worker.handlers.base import PermanentTaskError
from swell_worker.handlers.embed import texts_of
from swell_worker.handlers.index import StoreHandler

MAX_K = 100


class SearchHandler(StoreHandler):
    name = "search"

    async def handle(self, task: Task) -> dict[str, Any]:
        (query,) = texts_of([task.payload.get("query")], "query")
        k = task.payload.get("k", 5)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise PermanentTaskError(f"payload 'k' must be an integer from 1 to {MAX_K}, got {k!r}")
        (vector,) = await self.batcher.embed([query])
        hits = await self.store.search(vector, k)
        return {"hits": [{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata} for h in hits]}
