"""Documents and their vectors in Milvus: embedded on one machine, a shared server in a cluster, one code path.

``SWELL_VECTOR_URI`` is either ``http://host:19530`` (a Milvus server, or Milvus Lite's own server,
``python -m milvus_lite server --data-dir D --port P``, which several workers can share; what every pool
in a cluster uses) or a file path (Milvus Lite, embedded: pymilvus starts the engine inside the worker
process; one process per file, one machine, and only with the ``lite`` extra, which the images leave out).
The client calls are the same either way. Upserts are keyed by document id, so a redelivered index task
rewrites the same rows instead of adding duplicates. pymilvus is synchronous; the async methods run it in
a thread.

Embedded Milvus Lite runs its gRPC server in this process, and it does not implement AllocTimestamp,
which pymilvus calls while it waits for the index of a new collection and deliberately ignores when
unimplemented. gRPC's server would still log that as an ERROR with a traceback ("Exception calling
application: Method not implemented!") at every start that creates the collection; ``QuietUnimplemented``
drops exactly those records.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from swell_worker.config import ConfigError, WorkerConfig
from swell_worker.embedder import DIMENSIONS, Vectors

T = TypeVar("T")

MAX_ID_LENGTH = 512
SERVER_URI = re.compile(r"^(https?|tcp|unix)://")
# Milvus methods that embedded Milvus Lite leaves unimplemented and pymilvus ignores when they are.
IGNORED_UNIMPLEMENTED = frozenset({"AllocTimestamp"})


def is_embedded(uri: str) -> bool:
    """A file path: Milvus Lite inside this process (pymilvus' rule is a name ending in .db)."""
    return not SERVER_URI.match(uri)


class QuietUnimplemented(logging.Filter):
    """Drops gRPC's ERROR record for a method in IGNORED_UNIMPLEMENTED that raised NotImplementedError."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not isinstance(record.exc_info[1], NotImplementedError):
            return True
        trace = record.exc_info[2]
        while trace is not None and trace.tb_next is not None:
            trace = trace.tb_next
        return trace is None or trace.tb_frame.f_code.co_name not in IGNORED_UNIMPLEMENTED


def quiet_embedded_server() -> None:
    """Installs QuietUnimplemented on gRPC's server logger, once."""
    logger = logging.getLogger("grpc._server")
    if not any(isinstance(f, QuietUnimplemented) for f in logger.filters):
        logger.addFilter(QuietUnimplemented())


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
        if is_embedded(uri):
            if importlib.util.find_spec("milvus_lite") is None:
                raise ConfigError(
                    f"SWELL_VECTOR_URI={uri!r} is a file, which needs embedded Milvus Lite: pip install "
                    "'swell[lite]' (one machine only). The worker image has no Milvus Lite: name a Milvus "
                    "server, e.g. SWELL_VECTOR_URI=http://milvus:19530 (a WorkerPool's spec.worker.vectorUri)"
                )
            quiet_embedded_server()
        from pymilvus import MilvusClient

        self.uri = uri
        self.collection = collection
        self._client = MilvusClient(uri=uri)
        if not self._client.has_collection(collection):
            self._client.create_collection(
                collection,
                dimension=dimensions,
                id_type="string",
                max_length=MAX_ID_LENGTH,
                metric_type="COSINE",
                auto_id=False,
            )
        else:
            self._client.load_collection(collection)  # kept by a restarted server, but not loaded
        self._lock = asyncio.Lock()

    def _loaded(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; where the server has released the collection (it restarted), load it and retry."""
        from pymilvus.exceptions import MilvusException

        try:
            return operation()
        except MilvusException as exc:
            if "call load()" not in str(exc):
                raise
            self._client.load_collection(self.collection)
            return operation()

    async def upsert(self, documents: list[Document], vectors: Vectors) -> int:
        rows = [
            {"id": d.id, "vector": vector.tolist(), "text": d.text, "metadata": d.metadata}
            for d, vector in zip(documents, vectors, strict=True)
        ]
        async with self._lock:
            await asyncio.to_thread(self._loaded, lambda: self._client.upsert(self.collection, rows))
        return len(rows)

    async def search(self, vector: Vectors, k: int) -> list[Hit]:
        async with self._lock:
            query = vector.tolist()
            found = await asyncio.to_thread(
                self._loaded,
                lambda: self._client.search(self.collection, data=[query], limit=k, output_fields=["text", "metadata"]),
            )
        return [
            Hit(
                id=str(hit["id"]),
                score=float(hit["distance"]),
                text=str(hit["entity"].get("text", "")),
                metadata=_as_dict(hit["entity"].get("metadata")),
            )
            for hit in found[0]
        ]

    async def count(self) -> int:
        async with self._lock:
            rows = await asyncio.to_thread(
                self._loaded, lambda: self._client.query(self.collection, filter="", output_fields=["count(*)"])
            )
        return int(rows[0]["count(*)"])

    async def ids(self) -> list[str]:
        """Every document id (for tests and audits: duplicates would show here)."""
        async with self._lock:
            rows = await asyncio.to_thread(
                self._loaded,
                lambda: self._client.query(self.collection, filter='id != ""', output_fields=["id"], limit=16384),
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
