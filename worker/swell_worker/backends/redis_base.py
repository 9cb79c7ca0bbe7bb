"""What the two Redis consumers (and the two Redis publishers) share: construction, readiness, due retries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

import redis.asyncio as aioredis
from swell_contract.keys import QueueKeys
from swell_redis import describe, open_redis

from swell_worker.backends.redis_common import PROMOTE_DUE, redis_errors
from swell_worker.config import WorkerConfig

# How often due retries are moved back to their queue; bounds how late a retry starts.
PROMOTE_INTERVAL_SECONDS = 0.2


def connect(config: WorkerConfig) -> tuple[aioredis.Redis, str]:
    """A client for the configured queue Redis, and how errors name it."""
    assert config.redis_url is not None  # WorkerConfig checks this for Redis backends
    return open_redis(config.redis_url, config.redis_password), describe(config.redis_url)


class RedisConsumerBase:
    """A consumer of one or more Redis queues (highest priority first) under one consumer name."""

    # How a due retry goes back: "list" LPUSHes the body, "stream" XADDs it with its attempts so far.
    promote_mode: ClassVar[Literal["list", "stream"]]

    def __init__(
        self,
        client: aioredis.Redis,
        queues: Sequence[str],
        consumer: str,
        *,
        where: str = "Redis",
        consumer_timeout: float = 30.0,
    ) -> None:
        """``client`` is owned by the consumer from now on: ``close()`` closes it."""
        if not queues:
            raise ValueError(f"{type(self).__name__} needs at least one queue")
        self._redis = client
        self._keys = [QueueKeys(name) for name in queues]
        self._by_name = {keys.name: keys for keys in self._keys}
        self._consumer = consumer
        self._where = where
        self._consumer_timeout = consumer_timeout
        self._next_promote = 0.0
        self._promote = client.register_script(PROMOTE_DUE)
        self._prepare(client)

    def _prepare(self, client: aioredis.Redis) -> None:
        """A subclass's own state and scripts, set up once the shared ones are."""

    @classmethod
    def from_config(cls, config: WorkerConfig) -> Self:
        client, where = connect(config)
        return cls(
            client,
            config.queues,
            config.consumer,
            where=where,
            consumer_timeout=config.consumer_timeout_seconds,
            **cls.options_from(config),
        )

    @classmethod
    def options_from(cls, config: WorkerConfig) -> dict[str, Any]:
        """Constructor options a subclass adds to the shared ones."""
        return {}

    async def ping(self) -> None:
        with redis_errors(self._where):
            await self._redis.ping()

    async def _promote_when_due(self) -> None:
        """Move due retries back to their queues, at most every PROMOTE_INTERVAL_SECONDS."""
        now = time.monotonic()
        if now < self._next_promote:
            return
        self._next_promote = now + PROMOTE_INTERVAL_SECONDS
        due_before = time.time()
        for keys in self._keys:
            await self._promote(keys=[keys.delayed, keys.name], args=[due_before, 100, self.promote_mode])


class RedisPublisherBase:
    """A producer for Redis queues given highest priority first, as in SWELL_QUEUE."""

    def __init__(self, client: aioredis.Redis, queues: Sequence[str], *, where: str = "Redis") -> None:
        """``client`` is owned by the publisher from now on: ``close()`` closes it."""
        if not queues:
            raise ValueError(f"{type(self).__name__} needs at least one queue")
        self._redis = client
        self._queues = list(queues)
        self._where = where

    @classmethod
    def from_config(cls, config: WorkerConfig) -> Self:
        client, where = connect(config)
        return cls(client, config.queues, where=where, **cls.options_from(config))

    @classmethod
    def options_from(cls, config: WorkerConfig) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        await self._redis.aclose()
