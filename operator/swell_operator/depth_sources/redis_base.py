"""What the Redis depth sources share: a client (own or shared), one pipeline per read, errors that say where.

A read is planned in two parts: commands whose keys are known from the spec (queue lengths, the
consumer registry, the group's cursor), and commands whose keys depend on those answers (each registered
consumer's processing list, the first entry after the cursor). The dependent part is sent in the same
pipeline with the inputs the previous read found, so a read is one round trip whenever those inputs did
not change; when they did, a second round trip reads the dependent keys for the inputs just found, so the
answer is always exact. Each part is queued on a pipeline it is given, so several pools on one Redis
server can share one round trip. The operator sends only read commands (and INFO).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
import swell_redis
from redis.asyncio.client import Pipeline
from swell_contract.depth import Depth
from swell_contract.settings import redact_url
from swell_redis import describe, open_redis

from swell_operator.durability import durability_problem

Inputs = TypeVar("Inputs", bound=Hashable)


class DepthUnavailable(RuntimeError):
    """The queue could not be read; the message is safe for status and Events (no secret values)."""


def connect(url: str, password: str | None, max_connections: int = 2) -> aioredis.Redis:
    """A small client that fails fast: the scaler's own backoff decides when to try again.

    Raises ValueError for a URL redis-py cannot use.
    """
    return open_redis(url, password, socket_timeout=5.0, max_connections=max_connections, pool_wait_seconds=5.0)


def redis_errors(where: str) -> contextlib.AbstractContextManager[None]:
    """redis-py errors as DepthUnavailable, saying which server and why."""
    return swell_redis.redis_errors(where, DepthUnavailable)


def raise_first_error(answers: Sequence[Any]) -> None:
    """Pipelines run with ``raise_on_error=False``; an answer a source does not expect to fail is raised."""
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer


class RedisDepthSource(ABC, Generic[Inputs]):
    """One pool's depth on one Redis; ``close()`` closes the client when the source ``owned`` it (a client
    shared by the server's pools is closed by its owner)."""

    def __init__(self, client: aioredis.Redis, url: str, *, owned: bool = True) -> None:
        self.where = describe(url)
        self._shown_url = redact_url(url) or ""
        self._redis = client
        self._owned = owned
        self._known: Inputs | None = None

    @abstractmethod
    def queue_known(self, pipe: Pipeline) -> int:
        """Queue the commands whose keys the spec names; returns how many."""

    @abstractmethod
    def inputs(self, answers: Sequence[Any]) -> Inputs:
        """What the dependent commands need, from the answers to ``queue_known``'s commands."""

    @abstractmethod
    def queue_dependent(self, pipe: Pipeline, inputs: Inputs) -> None:
        """Queue the commands whose keys come from ``inputs``."""

    @abstractmethod
    def depth(self, known: Sequence[Any], inputs: Inputs, dependent: Sequence[Any]) -> Depth: ...

    async def read(self) -> Depth:
        with redis_errors(self.where):
            pipe = self._redis.pipeline(transaction=False)
            count = self.queue_known(pipe)
            guessed = self._known
            if guessed is not None:
                self.queue_dependent(pipe, guessed)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
            known, dependent = answers[:count], answers[count:]
            found = self.inputs(known)
            if found != guessed:
                pipe = self._redis.pipeline(transaction=False)
                self.queue_dependent(pipe, found)
                dependent = await pipe.execute(raise_on_error=False)
            self._known = found
            return self.depth(known, found, dependent)

    async def durability_problem(self) -> str | None:
        """A warning when this Redis cannot keep tasks through a crash; None when it can or will not say."""
        try:
            info = {**(await self._redis.info("persistence")), **(await self._redis.info("replication"))}
        except Exception:  # INFO may be renamed or refused by a managed Redis; depth reads decide health
            return None
        return durability_problem(info, self._shown_url)

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()
