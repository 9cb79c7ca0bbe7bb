"""A plain-function (blocking) handler for the worker tests: ``time.sleep`` in a loop while the worker's
environment has SWELL_TEST_BLOCK set, else it returns at once after recording its effect.

The loop is bounded (5 minutes), so a thread that a test forgets still ends, and the worker runs it in a
daemon thread, so it never keeps a worker process from exiting.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from swell_contract.task import Task
from swell_worker.config import WorkerConfig
from swell_worker.handlers import Resources

BLOCK_AT_MOST_SECONDS = 300.0


class BlockForever:
    name = "block"
    fast = False

    def __init__(self, config: WorkerConfig, resources: Resources) -> None:
        self._redis_url = config.result_redis

    async def startup(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    def handle(self, task: Task) -> dict[str, Any]:
        give_up = time.monotonic() + BLOCK_AT_MOST_SECONDS
        while os.environ.get("SWELL_TEST_BLOCK") and time.monotonic() < give_up:
            time.sleep(0.05)
        assert self._redis_url is not None
        redis.Redis.from_url(self._redis_url).hincrby("swell:effects:block", task.id, 1)
        return {"blocked": False}

    async def shutdown(self) -> None:
        return None
