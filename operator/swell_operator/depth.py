"""Reads a pool's queue depth through the same backend classes the workers consume with.

The reader keeps one Redis connection per pool and builds it again after any failure, when the spec
changes, and every few minutes, so a fixed or rotated Secret, a moved Redis or a changed spec is picked
up without restarting anything (and without reading the Secret on every poll).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from kubernetes_asyncio import client
from swell_worker.backends.base import BackendError, Depth
from swell_worker.backends.redis_common import describe, open_redis

from swell_operator.durability import durability_problem
from swell_operator.model import Queue
from swell_operator.secrets import SecretError, read_secret_key

# The operator never consumes, so this consumer name only labels its connection.
OPERATOR_CONSUMER = "swell-operator"
# Seconds a connection is reused before the Secrets are read again.
REBUILD_SECONDS = 300.0


class DepthUnavailable(RuntimeError):
    """The queue could not be read; the message is safe for status and Events (no secret values)."""


class QueueReader:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._backend: Any = None
        self._queue: Queue | None = None
        self._built_at = 0.0
        # Read once per connection: a warning when the Redis cannot keep tasks through a crash.
        self.durability_problem: str | None = None
        self._connection: tuple[Any, str] = (None, "")

    async def read(self, queue: Queue) -> Depth:
        stale = time.monotonic() - self._built_at > REBUILD_SECONDS
        if self._backend is None or queue != self._queue or stale:
            await self.close()
            self._backend = await self._build(queue)
            self._queue, self._built_at = queue, time.monotonic()
            self.durability_problem = await self._durability()
        try:
            depth: Depth = await self._backend.depth()
            return depth
        except BackendError as exc:
            await self.close()
            raise DepthUnavailable(str(exc)) from None

    async def _durability(self) -> str | None:
        redis, where = self._connection
        try:
            info = {**(await redis.info("persistence")), **(await redis.info("replication"))}
        except Exception:  # INFO may be renamed or refused by a managed Redis; depth reads decide health
            return None
        return durability_problem(info, where)

    async def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):  # a broken connection must not stop the rebuild
                await backend.close()

    async def _build(self, queue: Queue) -> Any:
        if queue.backend == "pubsub" or queue.redis is None:
            raise DepthUnavailable(f"the operator cannot read depth for backend {queue.backend} yet")
        try:
            url = await read_secret_key(self._api, self._namespace, queue.redis.url_secret_ref)
            password = None
            if queue.redis.password_secret_ref is not None:
                password = await read_secret_key(self._api, self._namespace, queue.redis.password_secret_ref)
        except SecretError as exc:
            raise DepthUnavailable(str(exc)) from None
        try:
            redis = open_redis(url, password, socket_timeout=5.0, max_connections=4)
        except ValueError as exc:
            raise DepthUnavailable(
                f"the Redis URL in Secret {queue.redis.url_secret_ref.name} is invalid: {type(exc).__name__}"
            ) from None
        where = describe(url)
        self._connection = (redis, where)
        if queue.backend == "redis-streams":
            from swell_worker.backends.redis_streams import RedisStreamsBackend

            assert queue.streams is not None  # the CRD's CEL rule requires it
            return RedisStreamsBackend(
                redis, queue.streams.streams, OPERATOR_CONSUMER, group=queue.streams.group, where=where
            )
        from swell_worker.backends.redis_list import RedisListBackend

        assert queue.list is not None  # the CRD's CEL rule requires it
        extra = [(source.kind, source.key) for source in queue.list.in_flight_sources]
        return RedisListBackend(redis, queue.list.keys, OPERATOR_CONSUMER, where=where, extra_in_flight=extra)
