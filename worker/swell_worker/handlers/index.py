"""index: embed documents and upsert them, keyed by document id, so a repeated task changes nothing."""

from __future__ import annotations

from typing import Any

from swell_contract.task import Task

from swell_worker.handlers.base import PermanentTaskError
from swell_worker.handlers.embed import ModelHandler, texts_of
from swell_worker.vectorstore import MAX_ID_LENGTH, Document, VectorStore


class StoreHandler(ModelHandler):
    """A model handler that also needs the vector store; ready only while the store answers."""

    _store: VectorStore | None = None

    async def startup(self) -> None:
        await super().startup()
        self._store = await self._resources.vector_store()

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            raise RuntimeError(f"handler {self.name} used before startup()")
        return self._store

    async def ready(self) -> bool:
        return await super().ready() and self._store is not None and await self._store.ping()


class IndexHandler(StoreHandler):
    name = "index"

    async def handle(self, task: Task) -> dict[str, Any]:
        documents = parse_documents(task)
        vectors = await self.batcher.embed([d.text for d in documents])
        written = await self.store.upsert(documents, vectors)
        return {"indexed": written, "ids": [d.id for d in documents], "model": self.batcher.embedder.model_id}


def parse_documents(task: Task) -> list[Document]:
    raw = task.payload.get("documents")
    if not isinstance(raw, list) or not raw:
        raise PermanentTaskError("payload 'documents' must be a non-empty list of {id?, text, metadata?}")
    documents = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PermanentTaskError(f"payload 'documents'[{i}] must be an object")
        doc_id = item.get("id", f"{task.id}:{i}")
        metadata = item.get("metadata", {})
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > MAX_ID_LENGTH:
            raise PermanentTaskError(f"payload 'documents'[{i}].id must be a string of 1..{MAX_ID_LENGTH} characters")
        if not isinstance(metadata, dict):
            raise PermanentTaskError(f"payload 'documents'[{i}].metadata must be an object")
        documents.append(Document(id=doc_id, text="", metadata=metadata))
    texts = texts_of([item.get("text") for item in raw], "documents[].text")
    return [Document(id=d.id, text=text, metadata=d.metadata) for d, text in zip(documents, texts, strict=True)]
