"""Documents and their vectors in Milvus: embedded on one machine, a shared server in a cluster, one code path.

``SWELL_VECTOR_URI`` is either a file path (Milvus Lite: pymilvus starts the engine inside the worker
process; one process per file) or ``http://host:19530`` (a Milvus server, or Milvus Lite's own server,
``python -m milvus_lite server --data-dir D --port P``, which several workers can share). The client
calls are the same either way. Upserts are keyed by document id, so a redelivered index task rewrites
the same rows instead of adding duplicates. pymilvus is synchronous; the async methods run it in a thread.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from swell_worker.config import WorkerConfig
from swell_worker.embedder import DIMENSIONS, Vectors

MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]


class VectorStore:
    def __init__(self, uri: str, collection: str, dimensions: int = DIMENSIONS) -> None:
        from pymilvus import MilvusClient

        self.uri = uri
        self.collection = collection
        self._client = MilvusClient(uri=uri)
        if not self._client.has_collection(collection):
            self._client.create_collection(
                collection, dimension=dimensions, id_type="string", max_length=MAX_ID_LENGTH,
                metric_type="COSINE", auto_id=False,
            )
        self._lock = asyncio.Lock()

    async def upsert(self, documents: list[Document], vectors: Vectors) -> int:
        rows = [
            {"id": d.id, "vector": vector.tolist(), "text": d.text, "metadata": d.metadata}
            for d, vector in zip(documents, vectors, strict=True)
        ]
        async with self._lock:
            await asyncio.to_thread(self._client.upsert, self.collection, rows)
        return len(rows)

    async def search(self, vector: Vectors, k: int) -> list[Hit]:
        async with self._lock:
            found = await asyncio.to_thread(
                self._client.search, self.collection, data=[vector.tolist()], limit=k,
                output_fields=["text", "metadata"],
            )
        return [
            Hit(id=str(hit["id"]), score=float(hit["distance"]), text=str(hit["entity"].get("text", "")),
                metadata=_as_dict(hit["entity"].get("metadata")))
            for hit in found[0]
        ]

    async def count(self) -> int:
        async with self._lock:
            rows = await asyncio.to_thread(
                self._client.query, self.collection, filter="", output_fields=["count(*)"]
            )
        return int(rows[0]["count(*)"])

    async def ids(self) -> list[str]:
        """Every document id (for tests and audits: duplicates would show here)."""
        async with self._lock:
            rows = await asyncio.to_thread(
                self._client.query, self.collection, filter='id != ""', output_fields=["id"], limit=16384
            )
        return [str(row["id"]) for row in rows]

    async def ping(self) -> bool:
        async with self._lock:
            return bool(await asyncio.to_thread(self._client.has_collection, self.collection))

    def close(self) -> None:
        self._client.close()


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def open_store(config: WorkerConfig) -> VectorStore:
    """The store SWELL_VECTOR_URI names (blocking; Resources calls this in a thread)."""
    return VectorStore(config.vector_uri, config.vector_collection)
