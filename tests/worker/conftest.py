"""Shared helpers for the worker tests: a worker environment per backend and a client on the same queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from swell_contract.depth import Depth
from swell_operator.depth_sources import RedisListDepth, RedisStreamsDepth, connect
from swell_worker.client import SwellClient
from swell_worker.results import TaskStatus

BACKENDS = ["redis-streams", "redis-list"]


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def worker_env(redis_url: str, backend_kind: str) -> dict[str, str]:
    return {
        "SWELL_BACKEND": backend_kind,
        "SWELL_REDIS_URL": redis_url,
        "SWELL_QUEUE": "tasks",
        "SWELL_HANDLERS": "noop,sleep,echo,fail",
        "SWELL_CONCURRENCY": "4",
        "SWELL_RETRY_BASE_SECONDS": "0.05",
        "SWELL_RETRY_CAP_SECONDS": "0.2",
        "SWELL_MAX_ATTEMPTS": "3",
    }


@pytest.fixture
async def client(redis_url: str, backend_kind: str) -> AsyncIterator[SwellClient]:
    async with SwellClient.for_redis(redis_url, "tasks", backend=backend_kind) as swell:
        yield swell


async def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0, interval: float = 0.1) -> None:
    """Poll an async or sync condition until it is truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout}s")


async def states(client: SwellClient, ids: list[str]) -> dict[str, TaskStatus]:
    return {task_id: await client.status(task_id) for task_id in ids}


async def queue_depth(redis_url: str, backend_kind: str, queue: str = "tasks") -> Depth:
    """The queue's depth as the operator reads it (its own depth source, from the key layout)."""
    client = connect(redis_url, None)
    reader = (
        RedisStreamsDepth(client, redis_url, [queue], "swell")
        if backend_kind == "redis-streams"
        else RedisListDepth(client, redis_url, [queue], [])
    )
    try:
        return await reader.read()
    finally:
        await reader.close()
