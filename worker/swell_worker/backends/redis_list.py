"""The reliable-queue pattern on Redis lists, for producers that LPUSH.

A worker LMOVEs each task from the queue into its own processing list, so a task is never only in a
worker's memory: if the worker dies, its processing list outlives it, and once its heartbeat key has
expired any other worker moves the tasks back. Each delivery is counted in ``Q:attempts`` (keyed by
the SHA-1 of the body) so redeliveries after a crash count towards the dead-letter limit. The same
class reads depth for the operator, including queues Swell only watches (Celery, RQ).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from swell_worker.backends.base import Delivery, Depth
from swell_worker.backends.redis_common import (
    MAX_BLOCK_SECONDS,
    POLL_INTERVAL_SECONDS,
    PROMOTE_DUE,
    QueueKeys,
    dead_letter_record,
    delayed_member,
    describe,
    open_redis,
    queue_for_priority,
    redis_errors,
    text,
)
from swell_worker.config import InFlightKind, WorkerConfig

log = logging.getLogger(__name__)

# KEYS: queue, processing, attempts for each queue, highest priority first. ARGV: how many to take.
# Returns a flat list of (queue index, body, attempt) triples. Lua has no rollback, so in every
# script the writes that could fail come before the move that would otherwise lose the task.
TAKE = """
local wanted = tonumber(ARGV[1])
local out = {}
local taken = 0
for i = 1, #KEYS, 3 do
  while taken < wanted do
    local body = redis.call('LINDEX', KEYS[i], -1)
    if not body then break end
    local attempt = redis.call('HINCRBY', KEYS[i + 2], redis.sha1hex(body), 1)
    redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'RIGHT', 'LEFT')
    out[#out + 1] = (i + 2) / 3
    out[#out + 1] = body
    out[#out + 1] = attempt
    taken = taken + 1
  end
end
return out
"""

# KEYS: processing list, heartbeat, queue. ARGV: "1" to recover even with a live heartbeat (our own
# list from a previous run of this pod). Oldest tasks go back to the consuming end first.
RECOVER = """
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
return moved
"""

# Settle scripts act only while the body is still in this consumer's processing list, so a task
# already taken back (its consumer looked dead) is never settled twice.
_IF_HELD = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
"""
_RELEASE = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
"""

# KEYS: processing, attempts, completed. ARGV: body.
ACK = _IF_HELD + "redis.call('INCR', KEYS[3]) redis.call('HDEL', KEYS[2], redis.sha1hex(ARGV[1]))" + _RELEASE

# KEYS: processing, delayed, queue. ARGV: body, due time, delayed member, "now" to requeue at once.
NACK = (
    _IF_HELD
    + """
if ARGV[4] == 'now' then
  redis.call('RPUSH', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
"""
    + _RELEASE
)

# KEYS: processing, dead, attempts. ARGV: body, dead-letter record.
DEAD_LETTER = (
    _IF_HELD
    + "redis.call('LPUSH', KEYS[2], ARGV[2]) redis.call('HDEL', KEYS[3], redis.sha1hex(ARGV[1]))"
    + _RELEASE
)


class RedisListBackend:
    def __init__(
        self,
        client: aioredis.Redis,
        queues: Sequence[str],
        consumer: str,
        *,
        where: str = "Redis",
        consumer_timeout: float = 30.0,
        extra_in_flight: Sequence[tuple[InFlightKind, str]] = (),
    ) -> None:
        """``client`` is owned by the backend from now on: ``close()`` closes it."""
        if not queues:
            raise ValueError("RedisListBackend needs at least one queue")
        self._redis = client
        self._keys = [QueueKeys(name) for name in queues]
        self._by_name = {keys.name: keys for keys in self._keys}
        self._consumer = consumer
        self._where = where
        self._consumer_timeout = consumer_timeout
        self._extra_in_flight = tuple(extra_in_flight)
        self._joined = False
        self._next_recovery = 0.0
        self._take = client.register_script(TAKE)
        self._recover = client.register_script(RECOVER)
        self._ack = client.register_script(ACK)
        self._nack = client.register_script(NACK)
        self._dead_letter = client.register_script(DEAD_LETTER)
        self._promote = client.register_script(PROMOTE_DUE)

    @classmethod
    def from_config(cls, config: WorkerConfig) -> RedisListBackend:
        assert config.redis_url is not None  # WorkerConfig checks this for Redis backends
        return cls(
            open_redis(config.redis_url, config.redis_password),
            config.queues,
            config.consumer,
            where=describe(config.redis_url),
            consumer_timeout=config.consumer_timeout_seconds,
            extra_in_flight=config.extra_in_flight,
        )

    async def ping(self) -> None:
        with redis_errors(self._where):
            await self._redis.ping()

    async def publish(self, body: bytes, priority: int = 0) -> None:
        with redis_errors(self._where):
            await self._redis.lpush(queue_for_priority([k.name for k in self._keys], priority), body)

    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        if max_messages <= 0:
            return []
        with redis_errors(self._where):
            if not self._joined:
                await self._join()
            await self._promote_due()
            if time.monotonic() >= self._next_recovery:
                await self._recover_abandoned()
                self._next_recovery = time.monotonic() + self._consumer_timeout / 3
            deliveries = await self._take_now(max_messages)
            deadline = time.monotonic() + min(timeout, MAX_BLOCK_SECONDS)
            while not deliveries and (left := deadline - time.monotonic()) > 0:
                if len(self._keys) == 1:
                    deliveries = await self._take_blocking(left)
                    deliveries += await self._take_now(max_messages - len(deliveries))
                    break
                # BLMOVE watches one list only; with several priorities, poll them in order.
                await asyncio.sleep(min(POLL_INTERVAL_SECONDS, left))
                deliveries = await self._take_now(max_messages)
            return deliveries

    async def ack(self, delivery: Delivery) -> None:
        keys = self._by_name[delivery.source]
        with redis_errors(self._where):
            await self._ack(keys=[delivery.receipt, keys.attempts, keys.completed], args=[delivery.body])

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """``delay <= 0`` puts the task back at the consuming end of its queue at once."""
        keys = self._by_name[delivery.source]
        member = delayed_member(delivery.attempt, delivery.body)
        mode = "now" if delay <= 0 else "later"
        with redis_errors(self._where):
            await self._nack(
                keys=[delivery.receipt, keys.delayed, keys.name],
                args=[delivery.body, time.time() + delay, member, mode],
            )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        keys = self._by_name[delivery.source]
        record = dead_letter_record(delivery.body, reason, delivery.attempt, delivery.source)
        with redis_errors(self._where):
            await self._dead_letter(
                keys=[delivery.receipt, keys.dead, keys.attempts], args=[delivery.body, record]
            )

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Refresh this consumer's heartbeat, without which its processing lists are taken back."""
        with redis_errors(self._where):
            await self._beat()

    async def depth(self) -> Depth:
        with redis_errors(self._where):
            pipe = self._redis.pipeline(transaction=False)
            for keys in self._keys:
                pipe.llen(keys.name)
                pipe.zcard(keys.delayed)
                pipe.get(keys.completed)
                pipe.lindex(keys.name, -1)
            for kind, key in self._extra_in_flight:
                {"list": pipe.llen, "zset": pipe.zcard, "hash": pipe.hlen}[kind](key)
            answers: list[Any] = await pipe.execute()
            per_consumer = await self._processing_counts()
        backlog, completed, completed_known, oldest = 0, 0, False, None
        for i in range(len(self._keys)):
            waiting, delayed, done, next_body = answers[4 * i : 4 * i + 4]
            backlog += int(waiting) + int(delayed)
            if done is not None:
                completed, completed_known = completed + int(done), True
            age = _age_of(next_body)
            if age is not None:
                oldest = max(oldest or 0.0, age)
        extra = sum(int(n) for n in answers[4 * len(self._keys) :])
        return Depth(
            backlog=backlog,
            in_flight=sum(per_consumer.values()) + extra,
            per_consumer=per_consumer,
            completed_total=completed if completed_known else None,
            oldest_age_seconds=oldest,
        )

    async def close(self) -> None:
        """Give back whatever this consumer still holds and stop its heartbeat, then disconnect."""
        try:
            if self._joined:
                with redis_errors(self._where):
                    for keys in self._keys:
                        await self._recover(
                            keys=[keys.processing(self._consumer), keys.heartbeat(self._consumer), keys.name],
                            args=["1"],
                        )
                        await self._redis.delete(keys.heartbeat(self._consumer))
        finally:
            await self._redis.aclose()

    async def _join(self) -> None:
        """Start the heartbeat, then take back tasks a previous run of this consumer left behind."""
        await self._beat()
        for keys in self._keys:
            moved = await self._recover(
                keys=[keys.processing(self._consumer), keys.heartbeat(self._consumer), keys.name], args=["1"]
            )
            if moved:
                log.info(
                    "requeued %d tasks left by a previous run of this consumer",
                    moved,
                    extra={"queue": keys.name},
                )
        self._joined = True

    async def _beat(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keys:
            pipe.set(keys.heartbeat(self._consumer), b"1", px=int(self._consumer_timeout * 1000))
        await pipe.execute()

    async def _promote_due(self) -> None:
        now = time.time()
        for keys in self._keys:
            await self._promote(keys=[keys.delayed, keys.name], args=[now, 100, "list"])

    async def _recover_abandoned(self) -> None:
        for keys in self._keys:
            async for raw in self._redis.scan_iter(match=keys.processing_pattern, count=100):
                processing = text(raw)
                consumer = keys.consumer_of(processing)
                if consumer == self._consumer:
                    continue
                moved = await self._recover(
                    keys=[processing, keys.heartbeat(consumer), keys.name], args=["0"]
                )
                if moved > 0:
                    log.warning(
                        "requeued %d tasks of consumer %s, whose heartbeat expired",
                        moved,
                        consumer,
                        extra={"queue": keys.name},
                    )

    async def _take_now(self, wanted: int) -> list[Delivery]:
        if wanted <= 0:
            return []
        script_keys = []
        for keys in self._keys:
            script_keys += [keys.name, keys.processing(self._consumer), keys.attempts]
        flat = await self._take(keys=script_keys, args=[wanted])
        deliveries = []
        for i in range(0, len(flat), 3):
            keys = self._keys[int(flat[i]) - 1]
            deliveries.append(self._delivery(keys, flat[i + 1], int(flat[i + 2])))
        return deliveries

    async def _take_blocking(self, timeout: float) -> list[Delivery]:
        keys = self._keys[0]
        processing = keys.processing(self._consumer)
        # Redis takes a fractional timeout; redis-py's annotation says int.
        body = await self._redis.blmove(keys.name, processing, timeout, "RIGHT", "LEFT")  # type: ignore[arg-type]
        if not isinstance(body, bytes):
            return []
        # Not atomic with the move: a crash in between undercounts this one delivery, never loses it.
        attempt = await self._redis.hincrby(keys.attempts, _sha1(body), 1)
        return [self._delivery(keys, body, int(attempt))]

    def _delivery(self, keys: QueueKeys, body: bytes, attempt: int) -> Delivery:
        return Delivery(body=body, attempt=attempt, receipt=keys.processing(self._consumer), source=keys.name)

    async def _processing_counts(self) -> dict[str, int]:
        found: list[tuple[str, str]] = []
        for keys in self._keys:
            async for raw in self._redis.scan_iter(match=keys.processing_pattern, count=100):
                found.append((keys.consumer_of(text(raw)), text(raw)))
        pipe = self._redis.pipeline(transaction=False)
        for _, key in found:
            pipe.llen(key)
        counts: dict[str, int] = {}
        for (consumer, _), held in zip(found, await pipe.execute(), strict=True):
            if int(held):
                counts[consumer] = counts.get(consumer, 0) + int(held)
        return counts


def _sha1(body: bytes) -> str:
    """The attempts-hash field of a body; the Lua scripts compute the same with redis.sha1hex."""
    return hashlib.sha1(body).hexdigest()


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
