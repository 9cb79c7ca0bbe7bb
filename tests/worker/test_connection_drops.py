"""Redis dropping every client connection during a burst: no task stays unsettled while its workers live.

The Redis client re-sends a command whose reply was lost, so a take can be sent twice; the list take
is repeat-safe and the worker reconciles its processing list, and Streams entries a lost read left
pending are taken over after the consumer timeout. Loopback only: a redis-server of the test's own.
"""

from __future__ import annotations

import asyncio
import random
import time

import redis
from swell_worker.client import SwellClient

from tests.fixtures.redis_server import RedisServer
from tests.fixtures.workers import StartWorker
from tests.worker.conftest import queue_depth, states, wait_for

BURST = 1200
DROP_SECONDS = 6.0
SETTLE_SECONDS = 30.0


def drop_connections(server: RedisServer, seconds: float) -> int:
    """CLIENT KILL TYPE normal every 10-50 ms for ``seconds``; returns how many connections were dropped."""
    killer = redis.Redis.from_url(server.url)
    dropped = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dropped += int(killer.execute_command("CLIENT", "KILL", "TYPE", "normal"))
        time.sleep(random.uniform(0.01, 0.05))
    killer.close()
    return dropped


async def test_no_task_is_stranded_when_redis_drops_connections(
    start_worker: StartWorker, own_redis: RedisServer, backend_kind: str
) -> None:
    env = {
        "SWELL_BACKEND": backend_kind,
        "SWELL_REDIS_URL": own_redis.url,
        "SWELL_QUEUE": "tasks",
        "SWELL_HANDLERS": "noop,sleep",
        "SWELL_CONCURRENCY": "4",
        "SWELL_CONSUMER_TIMEOUT_SECONDS": "6",
        "SWELL_RETRY_BASE_SECONDS": "0.05",
        "SWELL_RETRY_CAP_SECONDS": "0.2",
        "SWELL_LOG_LEVEL": "WARNING",
    }
    async with SwellClient.for_redis(own_redis.url, "tasks", backend=backend_kind) as client:
        ids = []
        for i in range(BURST):
            if i % 2:
                ids.append(await client.submit("noop"))
            else:
                ids.append(await client.submit("sleep", {"seconds": 0.1}))
        workers = [start_worker({**env, "SWELL_CONSUMER": f"w{n}"}) for n in range(3)]

        dropped = await asyncio.to_thread(drop_connections, own_redis, DROP_SECONDS)
        assert dropped > 20, "the drops must hit the workers' connections"

        async def all_succeeded() -> bool:
            return all(s.state == "succeeded" for s in (await states(client, ids)).values())

        await wait_for("every task of the burst succeeded", all_succeeded, timeout=SETTLE_SECONDS, interval=0.5)
        assert all(worker.process.poll() is None for worker in workers), "the workers lived throughout"
        depth = await queue_depth(own_redis.url, backend_kind)
        assert depth.backlog == 0
        await wait_for("nothing left in flight", lambda: _nothing_in_flight(own_redis.url, backend_kind), timeout=10)


async def _nothing_in_flight(redis_url: str, backend_kind: str) -> bool:
    return (await queue_depth(redis_url, backend_kind)).in_flight == 0
