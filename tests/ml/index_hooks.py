"""An ``index`` handler for tests that stops between its effect and the commit.

It upserts like the bundled handler, then marks ``swell:test:effect:<task id>`` in the result Redis and
waits forever, so the task is never committed: the test kills the worker at that point, exactly where
a crash turns at-least-once delivery into a second run of the handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from swell_contract.task import Task
from swell_worker.handlers.index import IndexHandler


class IndexThenHang(IndexHandler):
    async def handle(self, task: Task) -> dict[str, Any]:
        await super().handle(task)
        assert self._config.result_redis is not None
        client = aioredis.Redis.from_url(self._config.result_redis)
        await client.set(f"swell:test:effect:{task.id}", b"1")
        await client.aclose()
        await asyncio.Event().wait()  # never commits: the test SIGKILLs the worker here
        raise AssertionError("unreachable")
