"""One depth source per queue backend, as KEDA has one scaler per event source.

Each source owns its connection and reads depth with the contract's key layout (``swell_contract.keys``)
and the queue's own client library only, never through the worker's code. Pub/Sub pools are read by
``swell_operator.pubsub_pool``, from the workers' figures and the subscription.
"""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis
from swell_contract.depth import Depth

from swell_operator.depth_sources.redis_base import DepthUnavailable, RedisDepthSource, connect
from swell_operator.depth_sources.redis_list import RedisListDepth
from swell_operator.depth_sources.redis_streams import RedisStreamsDepth
from swell_operator.model import Queue

__all__ = [
    "DepthSource",
    "DepthUnavailable",
    "RedisDepthSource",
    "RedisListDepth",
    "RedisStreamsDepth",
    "redis_source",
]


class DepthSource(Protocol):
    async def read(self) -> Depth:
        """The queue's depth now; raises DepthUnavailable with a message safe for status."""
        ...

    async def durability_problem(self) -> str | None:
        """Why the queue can lose accepted tasks on a crash, if it can."""
        ...

    async def close(self) -> None: ...


def redis_source(queue: Queue, url: str, password: str | None, client: aioredis.Redis | None = None) -> DepthSource:
    """The source for a Redis-backed queue spec; raises ValueError for a URL redis-py cannot use.

    With ``client`` (a server's shared client) the source reads through it and leaves closing it to its
    owner; without, it connects on its own and ``close()`` closes that connection."""
    owned = client is None
    redis = connect(url, password) if client is None else client
    if queue.backend == "redis-streams":
        assert queue.streams is not None  # the CRD's CEL rule requires it
        return RedisStreamsDepth(redis, url, queue.streams.streams, queue.streams.group, owned=owned)
    assert queue.list is not None  # the CRD's CEL rule requires it
    extra = [(source.kind, source.key) for source in queue.list.in_flight_sources]
    return RedisListDepth(redis, url, queue.list.keys, extra, owned=owned)
