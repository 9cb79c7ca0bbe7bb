"""Small handlers with no model behind them, for smoke tests, demos and the runtime's own tests.

``sleep`` and ``echo`` can record an effect (payload ``"incr": "<name>"``): HINCRBY of the task id in
``swell:effects:<name>``, done after the work, as a real side effect would be. Tests count it to show
that a task delivered twice ran once.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis
from swell_contract.task import Task
from swell_redis import open_redis

from swell_worker.config import WorkerConfig
from swell_worker.handlers.base import PermanentTaskError
from swell_worker.handlers.resources import Resources


class BuiltinHandler:
    """No startup work, always ready; records the optional effect."""

    name = ""
    fast = False

    def __init__(self, config: WorkerConfig, resources: Resources) -> None:
        self._config = config
        self._redis: aioredis.Redis | None = None

    async def startup(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def shutdown(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def handle(self, task: Task) -> dict[str, Any]:
        raise NotImplementedError

    async def record_effect(self, task: Task) -> None:
        name = task.payload.get("incr")
        if name is None:
            return
        if not isinstance(name, str) or not name:
            raise PermanentTaskError(f"payload 'incr' must be a non-empty string, got {name!r}")
        if self._config.result_redis is None:
            raise PermanentTaskError("payload 'incr' needs a Redis to count in (SWELL_RESULT_REDIS_URL)")
        if self._redis is None:
            self._redis = open_redis(self._config.result_redis, self._config.redis_password)
        await self._redis.hincrby(f"swell:effects:{name}", task.id, 1)


class NoopHandler(BuiltinHandler):
    name = "noop"
    fast = True

    async def handle(self, task: Task) -> dict[str, Any]:
        return {}


class SleepHandler(BuiltinHandler):
    """Holds a slot for ``payload["seconds"]``, like I/O-bound work would."""

    name = "sleep"

    async def handle(self, task: Task) -> dict[str, Any]:
        seconds = task.payload.get("seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise PermanentTaskError(f"payload 'seconds' must be a number, got {seconds!r}")
        if seconds < 0:
            raise PermanentTaskError(f"payload 'seconds' must be 0 or more, got {seconds}")
        await asyncio.sleep(seconds)
        await self.record_effect(task)
        return {"slept": seconds}


class FailHandler(BuiltinHandler):
    """Always raises: a retryable error, or PermanentTaskError when ``payload["permanent"]`` is true."""

    name = "fail"

    async def handle(self, task: Task) -> dict[str, Any]:
        message = str(task.payload.get("message", "the fail handler always fails"))
        if task.payload.get("permanent"):
            raise PermanentTaskError(message)
        raise RuntimeError(message)


class EchoHandler(BuiltinHandler):
    name = "echo"

    async def handle(self, task: Task) -> dict[str, Any]:
        await self.record_effect(task)
        return {"echo": task.payload}
