"""index and search against a real Milvus: in-process handlers, then real worker processes through the queue,
including a worker killed between the index upsert and the commit."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest
import redis
from swell_contract.task import Task
from swell_worker.client import SwellClient
from swell_worker.config import WorkerConfig
from swell_worker.handlers import PermanentTaskError, Resources, create_handlers
from swell_worker.vectorstore import Document, VectorStore

from tests.fixtures.milvus import MilvusServer
from tests.fixtures.workers import StartWorker
from tests.worker.conftest import states, wait_for

pytestmark = pytest.mark.model

TOPICS = ["astronomy", "cooking", "football", "finance", "gardening", "music", "medicine", "sailing", "chess", "jazz"]


def corpus(n: int) -> list[dict[str, object]]:
    """Short documents, each with a distinctive serial phrase so a search can find exactly it."""
    return [
        {
            "id": f"doc-{i}",
            "text": f"Note {i} about {TOPICS[i % len(TOPICS)]}: item number {i} in the archive.",
            "metadata": {"topic": TOPICS[i % len(TOPICS)], "n": i},
        }
        for i in range(n)
    ]


def index_worker_env(redis_url: str, milvus: MilvusServer, queue: str, collection: str, **extra: str) -> dict[str, str]:
    """A Streams worker indexing into ``collection`` of the shared Milvus server; takeover after 3 s."""
    return {
        "SWELL_BACKEND": "redis-streams",
        "SWELL_REDIS_URL": redis_url,
        "SWELL_QUEUE": queue,
        "SWELL_CONCURRENCY": "4",
        "SWELL_VECTOR_URI": milvus.uri,
        "SWELL_VECTOR_COLLECTION": collection,
        "SWELL_CONSUMER_TIMEOUT_SECONDS": "3",
        "SWELL_MODEL_THREADS": "1",
        **extra,
    }


def task(handler: str, payload: dict[str, object], task_id: str = "t") -> Task:
    return Task(id=task_id, handler=handler, payload=payload)


async def test_index_1000_documents_then_search_finds_them(tmp_path: Path) -> None:
    config = WorkerConfig(
        backend="redis-streams",
        redis_url="redis://127.0.0.1:1/0",
        queues=("unused",),
        vector_uri=str(tmp_path / "v.db"),
        vector_collection="docs",
    )
    resources = Resources(config)
    handlers = create_handlers(["index", "search"], config, resources)
    for handler in handlers.values():
        await handler.startup()
    assert all([await h.ready() for h in handlers.values()])
    docs = corpus(1000)
    batches = [docs[i : i + 25] for i in range(0, 1000, 25)]
    results = await asyncio.gather(
        *(handlers["index"].handle(task("index", {"documents": b}, f"t{i}")) for i, b in enumerate(batches))
    )
    assert sum(r["indexed"] for r in results) == 1000
    store: VectorStore = await resources.vector_store()
    assert await store.count() == 1000
    # indexing the same documents again rewrites them: still 1000
    await handlers["index"].handle(task("index", {"documents": batches[3]}, "t3"))
    assert await store.count() == 1000

    found = await handlers["search"].handle(task("search", {"query": "a note about sailing boats", "k": 10}))
    assert len(found["hits"]) == 10
    assert all(hit["metadata"]["topic"] == "sailing" for hit in found["hits"][:3]), found["hits"][:3]
    assert found["hits"][0]["score"] >= found["hits"][-1]["score"]
    await resources.close()


@pytest.mark.parametrize(
    ("handler", "payload", "reason"),
    [
        ("index", {}, "payload 'documents' must be a non-empty list"),
        ("index", {"documents": [{"id": "x"}]}, "documents[].text'[0] must be a non-empty string"),
        ("index", {"documents": [{"text": "hi", "metadata": [1]}]}, "metadata must be an object"),
        ("search", {"query": ""}, "payload 'query'[0] must be a non-empty string"),
        ("search", {"query": "hi", "k": 1000}, "payload 'k' must be an integer from 1 to 100"),
        ("embed", {"texts": "not a list"}, "payload 'texts' must be a non-empty list of strings"),
    ],
)
async def test_bad_payloads_are_permanent_errors(
    tmp_path: Path, handler: str, payload: dict[str, object], reason: str
) -> None:
    config = WorkerConfig(
        backend="redis-streams",
        redis_url="redis://127.0.0.1:1/0",
        queues=("unused",),
        vector_uri=str(tmp_path / "v.db"),
    )
    resources = Resources(config)
    (runner,) = create_handlers([handler], config, resources).values()
    await runner.startup()
    with pytest.raises(PermanentTaskError, match=None) as raised:
        await runner.handle(task(handler, payload))
    assert reason in str(raised.value)
    await resources.close()


async def test_workers_index_through_the_queue_and_a_sigkill_loses_nothing(
    start_worker: StartWorker, redis_url: str, milvus_server: MilvusServer
) -> None:
    env = index_worker_env(redis_url, milvus_server, "index", "e2e", SWELL_HANDLERS="index,search")
    docs = corpus(1000)
    async with SwellClient.for_redis(redis_url, "index", backend="redis-streams") as client:
        ids = [await client.submit("index", {"documents": docs[i : i + 10]}) for i in range(0, 1000, 10)]
        victim = start_worker({**env, "SWELL_CONSUMER": "victim"})

        async def some_done() -> bool:
            return sum(s.state == "succeeded" for s in (await states(client, ids)).values()) >= 10

        await wait_for("10 index tasks done", some_done, timeout=120)
        victim.signal(signal.SIGKILL)
        assert victim.wait_exit(10) == -signal.SIGKILL
        start_worker({**env, "SWELL_CONSUMER": "rescuer"})

        async def all_done() -> bool:
            return all(s.state == "succeeded" for s in (await states(client, ids)).values())

        await wait_for("every index task succeeded", all_done, timeout=300, interval=0.5)
        assert all(s.commits == 1 for s in (await states(client, ids)).values())

        store = VectorStore(milvus_server.uri, "e2e")
        stored = await store.ids()
        assert len(stored) == len(set(stored)) == 1000
        store.close()

        result = await client.call("search", {"query": "item number 777 in the archive", "k": 5}, timeout=60)
        assert "doc-777" in [hit["id"] for hit in result["hits"]]


async def test_an_index_task_run_again_after_a_kill_between_effect_and_commit_leaves_one_copy(
    start_worker: StartWorker, redis_url: str, milvus_server: MilvusServer
) -> None:
    """The handler's upsert is in, the commit is not (tests/ml/index_hooks.py); the redelivery runs it again."""
    env = index_worker_env(redis_url, milvus_server, "index-crash", "crash")
    # One document names its id, one takes the default (<task id>:<n>): both must be stable on redelivery.
    documents = [{"id": "doc-a", "text": "the first document"}, {"text": "the second document"}]
    sync_redis = redis.Redis.from_url(redis_url)
    async with SwellClient.for_redis(redis_url, "index-crash", backend="redis-streams") as client:
        task_id = await client.submit("index", {"documents": documents})
        victim = start_worker({**env, "SWELL_HANDLERS": "tests.ml.index_hooks:IndexThenHang", "SWELL_CONSUMER": "v"})
        await wait_for("the upsert happened", lambda: sync_redis.exists(f"swell:test:effect:{task_id}"), timeout=120)
        victim.signal(signal.SIGKILL)
        assert victim.wait_exit(10) == -signal.SIGKILL
        assert (await client.status(task_id)).state == "started"  # the effect is in, the commit is not

        store = VectorStore(milvus_server.uri, "crash")
        assert sorted(await store.ids()) == sorted(["doc-a", f"{task_id}:1"])

        start_worker({**env, "SWELL_HANDLERS": "index", "SWELL_CONSUMER": "rescuer"})

        async def committed() -> bool:
            return (await client.status(task_id)).state == "succeeded"

        await wait_for("the redelivered task is committed", committed, timeout=120)
        final = await client.status(task_id)
        assert final.commits == 1 and final.attempt == 2
        stored = await store.ids()
        assert sorted(stored) == sorted(["doc-a", f"{task_id}:1"]), stored
        assert await store.count() == 2
        store.close()


async def test_a_released_collection_is_loaded_again(milvus_server: MilvusServer) -> None:
    """A Milvus server that restarts keeps its collections but not loaded; a pool woken from zero (new
    pods) and a live worker (its next search) must both load it rather than fail every task."""
    from pymilvus import MilvusClient

    first = VectorStore(milvus_server.uri, "released")
    await first.upsert([Document("d1", "sourdough needs time", {})], np.ones((1, 384), dtype=np.float32))
    admin = MilvusClient(uri=milvus_server.uri)
    admin.release_collection("released")
    assert len(await first.search(np.ones(384, dtype=np.float32), 1)) == 1  # a live worker
    admin.release_collection("released")
    woken = VectorStore(milvus_server.uri, "released")  # a new pod
    admin.release_collection("released")
    assert (await woken.search(np.ones(384, dtype=np.float32), 1))[0].id == "d1"
    first.close()
    woken.close()
    admin.close()
