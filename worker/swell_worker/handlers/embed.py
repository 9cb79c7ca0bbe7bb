"""The embed, index and search handlers share this: payload checks and the worker's one micro-batcher."""

from __future__ import annotations

from typing import Any

from swell_contract.task import Task

from swell_worker.batching import MicroBatcher
from swell_worker.config import WorkerConfig
from swell_worker.handlers.base import PermanentTaskError
from swell_worker.handlers.resources import Resources

MAX_TEXTS = 512
MAX_TEXT_CHARS = 20_000


def texts_of(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise PermanentTaskError(f"payload '{what}' must be a non-empty list of strings")
    if len(value) > MAX_TEXTS:
        raise PermanentTaskError(f"payload '{what}' has {len(value)} items; at most {MAX_TEXTS} per task")
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise PermanentTaskError(f"payload '{what}'[{i}] must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise PermanentTaskError(f"payload '{what}'[{i}] has {len(text)} characters; at most {MAX_TEXT_CHARS}")
    return value


class ModelHandler:
    """Loads the shared embedder at startup; ready once it is loaded."""

    name = ""
    fast = False

    def __init__(self, config: WorkerConfig, resources: Resources) -> None:
        self._config = config
        self._resources = resources
        self._batcher: MicroBatcher | None = None

    async def startup(self) -> None:
        self._batcher = await self._resources.embedding_batcher()

    @property
    def batcher(self) -> MicroBatcher:
        if self._batcher is None:
            raise RuntimeError(f"handler {self.name} used before startup()")
        return self._batcher

    async def ready(self) -> bool:
        return self._batcher is not None

    async def shutdown(self) -> None:
        return None


class EmbedHandler(ModelHandler):
    name = "embed"

    async def handle(self, task: Task) -> dict[str, Any]:
        texts = texts_of(task.payload.get("texts"), "texts")
        vectors = await self.batcher.embed(texts)
        # The float32 rows as they are: the result is encoded once, by orjson, without a Python float each.
        return {"model": self.batcher.embedder.model_id, "dim": int(vectors.shape[1]), "vectors": vectors}
