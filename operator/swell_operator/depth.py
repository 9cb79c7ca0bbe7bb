"""Reads a pool's queue depth through the depth source of its backend (``swell_operator.depth_sources``).

The reader keeps one source per pool and builds it again after any failure, when the spec changes, and
every few minutes, so a fixed or rotated Secret, a moved Redis or a changed spec is picked up without
restarting anything (and without reading the Secret on every poll). Given the operator's ``RedisClients``,
the source reads through its server's shared client instead of a connection of its own.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from swell_contract.depth import Depth

from swell_operator.depth_sources import DepthSource, DepthUnavailable, redis_source
from swell_operator.model import Queue
from swell_operator.redis_clients import RedisClients
from swell_operator.secrets import SecretError, SecretReads

__all__ = ["REBUILD_SECONDS", "DepthUnavailable", "QueueReader"]

# Seconds a connection is reused before the Secrets are read again.
REBUILD_SECONDS = 300.0


class QueueReader:
    def __init__(self, secrets: SecretReads, namespace: str, clients: RedisClients | None = None) -> None:
        self.secrets = secrets
        self._namespace = namespace
        self._clients = clients
        self._server: tuple[str, str | None] | None = None  # the shared client this reader holds
        self._source: DepthSource | None = None
        self._queue: Queue | None = None
        self._built_at = 0.0
        # Read once per connection: a warning when the Redis cannot keep tasks through a crash.
        self.durability_problem: str | None = None

    async def read(self, queue: Queue) -> Depth:
        stale = time.monotonic() - self._built_at > REBUILD_SECONDS
        if self._source is None or queue != self._queue or stale:
            await self.close()
            self._source = await self._build(queue)
            self._queue, self._built_at = queue, time.monotonic()
            async with self._turn():
                self.durability_problem = await self._source.durability_problem()
        try:
            async with self._turn():
                return await self._source.read()
        except DepthUnavailable:
            await self.close()
            raise

    def _turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The server's turn for a shared client (see ``redis_clients``); none for a client of the reader's own."""
        if self._server is None or self._clients is None:
            return contextlib.nullcontext()
        return self._clients.turn(*self._server)

    async def close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            with contextlib.suppress(Exception):  # a broken connection must not stop the rebuild
                await source.close()
        server, self._server = self._server, None
        if server is not None and self._clients is not None:
            await self._clients.release(*server, self)

    async def _build(self, queue: Queue) -> DepthSource:
        if queue.backend == "pubsub" or queue.redis is None:
            raise DepthUnavailable(f"the operator cannot read depth for backend {queue.backend} yet")
        try:
            url, password = await self.secrets.redis_server(self._namespace, queue.redis)
        except SecretError as exc:
            raise DepthUnavailable(str(exc)) from None
        try:
            if self._clients is None:
                return redis_source(queue, url, password)
            shared = self._clients.get(url, password, self)
            self._server = (url, password)
            return redis_source(queue, url, password, shared)
        except ValueError as exc:
            raise DepthUnavailable(
                f"the Redis URL in Secret {queue.redis.url_secret_ref.name} is invalid: {type(exc).__name__}"
            ) from None
