"""A worker SIGKILLed between the index handler's upsert and the commit: the redelivery leaves one copy."""

from __future__ import annotations

import signal

import pytest
import redis
from swell_worker.client import SwellClient
from swell_worker.vectorstore import VectorStore

from tests.fixtures.milvus import MilvusServer
from tests.fixtures.workers import StartWorker
from tests.worker.conftest import wait_for

pytestmark = pytest.mark.model


async def test_an_index_task_run_again_after_a_kill_between_effect_and_commit_leaves_one_copy(
    start_worker: StartWorker, redis_url: str, milvus_server: MilvusServer
) -> None:
    env = {
        "SWELL_BACKEND": "redis-streams",
        "SWELL_REDIS_URL": redis_url,
        "SWELL_QUEUE": "index-crash",
        "SWELL_CONCURRENCY": "2",
        "SWELL_VECTOR_URI": milvus_server.uri,
        "SWELL_VECTOR_COLLECTION": "crash",
        "SWELL_CONSUMER_TIMEOUT_SECONDS": "2",
        "SWELL_MODEL_THREADS": "1",
    }
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
