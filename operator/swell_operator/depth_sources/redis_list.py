"""Depth of Redis-list queues (Swell's reliable queue, or Celery's and RQ's lists that Swell only watches).

Waiting: the list plus its delayed retries. In flight: every registered consumer's processing list
(``Q:consumers``, so nothing SCANs the keyspace) plus the keys another framework keeps its running tasks
in (Celery's ``unacked`` hash, RQ's ``rq:wip:<queue>`` zset).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from swell_contract.depth import Depth
from swell_contract.keys import QueueKeys
from swell_contract.settings import InFlightKind

from swell_operator.depth_sources.redis_base import RedisDepthSource, raise_first_error

# Per queue: LLEN, ZCARD delayed, GET completed, LINDEX -1 (the next task), SMEMBERS consumers.
_PER_QUEUE = 5
_LENGTH = {"list": "LLEN", "zset": "ZCARD", "hash": "HLEN"}

# (queue index, consumer) for every registered consumer, in a stable order.
Registered = tuple[tuple[int, str], ...]


class RedisListDepth(RedisDepthSource[Registered]):
    def __init__(
        self,
        client: aioredis.Redis,
        url: str,
        queues: Sequence[str],
        extra_in_flight: Sequence[tuple[InFlightKind, str]] = (),
        *,
        owned: bool = True,
    ) -> None:
        super().__init__(client, url, owned=owned)
        self._keys = [QueueKeys(name) for name in queues]
        self._extra = tuple(extra_in_flight)

    def queue_known(self, pipe: Pipeline) -> int:
        for keys in self._keys:
            pipe.llen(keys.name)
            pipe.zcard(keys.delayed)
            pipe.get(keys.completed)
            pipe.lindex(keys.name, -1)
            pipe.smembers(keys.consumers)
        for kind, key in self._extra:
            pipe.execute_command(_LENGTH[kind], key)
        return _PER_QUEUE * len(self._keys) + len(self._extra)

    def inputs(self, answers: Sequence[Any]) -> Registered:
        raise_first_error(answers)
        found: list[tuple[int, str]] = []
        for i in range(len(self._keys)):
            members = answers[_PER_QUEUE * i + 4]
            found += [(i, m.decode() if isinstance(m, bytes) else str(m)) for m in sorted(members)]
        return tuple(found)

    def queue_dependent(self, pipe: Pipeline, inputs: Registered) -> None:
        for i, consumer in inputs:
            pipe.llen(self._keys[i].processing(consumer))

    def depth(self, known: Sequence[Any], inputs: Registered, dependent: Sequence[Any]) -> Depth:
        raise_first_error(dependent)
        backlog, completed, completed_known, oldest = 0, 0, False, None
        for i in range(len(self._keys)):
            waiting, delayed, done, next_body, _ = known[_PER_QUEUE * i : _PER_QUEUE * (i + 1)]
            backlog += int(waiting) + int(delayed)
            if done is not None:
                completed, completed_known = completed + int(done), True
            age = _age_of(next_body)
            if age is not None:
                oldest = max(oldest or 0.0, age)
        extra = sum(int(n) for n in known[_PER_QUEUE * len(self._keys) :])
        per_consumer: dict[str, int] = {}
        for (_, consumer), held in zip(inputs, dependent, strict=True):
            if int(held):
                per_consumer[consumer] = per_consumer.get(consumer, 0) + int(held)
        return Depth(
            backlog=backlog,
            in_flight=sum(per_consumer.values()) + extra,
            per_consumer=per_consumer,
            completed_total=completed if completed_known else None,
            oldest_age_seconds=oldest,
        )


def _age_of(body: bytes | None) -> float | None:
    """Seconds since the task at the head of a queue was submitted, when it says."""
    if body is None:
        return None
    try:
        submitted = json.loads(body).get("submitted_at")
    except (ValueError, AttributeError):
        return None
    if not isinstance(submitted, int | float):
        return None
    return max(0.0, time.time() - float(submitted))
