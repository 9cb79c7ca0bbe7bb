"""Redis Streams with one consumer group: Redis itself tracks what each consumer holds (the PEL).

A worker reads only as many entries as it has free slots, and acks (and deletes) each one after the
result is committed, so the stream holds just pending and waiting entries. Entries left idle longer
than the consumer timeout by a dead consumer are taken over with XAUTOCLAIM; a live worker keeps its
own entries fresh by re-claiming them (XCLAIM JUSTID resets the idle time without counting a
delivery). Retries wait in ``Q:delayed`` and are re-added with an ``attempts`` field, so the attempt
of a delivery is that field plus Redis's own delivery count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from swell_worker.backends.base import Delivery, Depth
from swell_worker.backends.redis_common import (
    MAX_BLOCK_SECONDS,
    POLL_INTERVAL_SECONDS,
    PROMOTE_DUE,
    QueueKeys,
    delayed_member,
    describe,
    open_redis,
    queue_for_priority,
    redis_errors,
    text,
)
from swell_worker.config import WorkerConfig

log = logging.getLogger(__name__)

# Each settle script acts only if the entry is still pending in the group, so a delivery already
# settled (or lost with a flushed Redis) is never settled twice. Lua has no rollback, so the write
# that could fail comes before the XACK: a failed script leaves the entry pending, never lost.
_IF_HELD = """
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(pending) ~= 'table' or pending.err or #pending == 0 then return 0 end
"""
_RELEASE = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: stream, completed. ARGV: group, entry id.
ACK = _IF_HELD + "redis.call('INCR', KEYS[2])" + _RELEASE

# KEYS: stream, delayed. ARGV: group, entry id, due time, delayed member, mode, body, attempts.
NACK = (
    _IF_HELD
    + """
if ARGV[5] == 'now' then
  redis.call('XADD', KEYS[1], '*', 'body', ARGV[6], 'attempts', ARGV[7])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
end
"""
    + _RELEASE
)

# KEYS: stream, dead. ARGV: group, entry id, body, reason, attempts, failed_at, source.
DEAD_LETTER = (
    _IF_HELD
    + """
redis.call('XADD', KEYS[2], '*', 'body', ARGV[3], 'reason', ARGV[4], 'attempts', ARGV[5],
           'failed_at', ARGV[6], 'source', ARGV[7])
"""
    + _RELEASE
)


class RedisStreamsBackend:
    def __init__(
        self,
        client: aioredis.Redis,
        streams: Sequence[str],
        consumer: str,
        *,
        group: str = "swell",
        where: str = "Redis",
        consumer_timeout: float = 30.0,
    ) -> None:
        """``client`` is owned by the backend from now on: ``close()`` closes it."""
        if not streams:
            raise ValueError("RedisStreamsBackend needs at least one stream")
        self._redis = client
        self._keys = [QueueKeys(name) for name in streams]
        self._by_name = {keys.name: keys for keys in self._keys}
        self._consumer = consumer
        self._group = group
        self._where = where
        self._consumer_timeout = consumer_timeout
        self._groups_ready = False
        self._consumed = False
        self._next_claim = 0.0
        self._claim_cursor = dict.fromkeys(self._by_name, "0-0")
        self._ack = client.register_script(ACK)
        self._nack = client.register_script(NACK)
        self._dead_letter = client.register_script(DEAD_LETTER)
        self._promote = client.register_script(PROMOTE_DUE)

    @classmethod
    def from_config(cls, config: WorkerConfig) -> RedisStreamsBackend:
        assert config.redis_url is not None  # WorkerConfig checks this for Redis backends
        return cls(
            open_redis(config.redis_url, config.redis_password),
            config.queues,
            config.consumer,
            group=config.group,
            where=describe(config.redis_url),
            consumer_timeout=config.consumer_timeout_seconds,
        )

    async def ping(self) -> None:
        with redis_errors(self._where):
            await self._redis.ping()

    async def publish(self, body: bytes, priority: int = 0) -> None:
        stream = queue_for_priority([k.name for k in self._keys], priority)
        with redis_errors(self._where):
            await self._ensure_groups()
            await self._redis.xadd(stream, {"body": body})

    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        if max_messages <= 0:
            return []
        with redis_errors(self._where):
            try:
                return await self._consume(max_messages, timeout)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost the group (restarted without persistence): create it again next time.
                log.warning("consumer group %s is gone; creating it again", self._group)
                self._groups_ready = False
                return []

    async def ack(self, delivery: Delivery) -> None:
        stream, entry_id = delivery.receipt
        with redis_errors(self._where):
            await self._ack(keys=[stream, self._by_name[stream].completed], args=[self._group, entry_id])

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """``delay <= 0`` re-adds the entry at once; otherwise it waits in the delayed zset."""
        stream, entry_id = delivery.receipt
        member = delayed_member(delivery.attempt, delivery.body)
        mode = "now" if delay <= 0 else "later"
        args = [self._group, entry_id, time.time() + delay, member, mode, delivery.body, delivery.attempt]
        with redis_errors(self._where):
            await self._nack(keys=[stream, self._by_name[stream].delayed], args=args)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        stream, entry_id = delivery.receipt
        args = [self._group, entry_id, delivery.body, reason, delivery.attempt, time.time(), stream]
        with redis_errors(self._where):
            await self._dead_letter(keys=[stream, self._by_name[stream].dead], args=args)

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the idle time of the entries this worker holds so nobody takes them over."""
        held: dict[str, list[int | bytes | str | memoryview]] = {}
        for delivery in deliveries:
            stream, entry_id = delivery.receipt
            held.setdefault(stream, []).append(entry_id)
        with redis_errors(self._where):
            for stream, ids in held.items():
                await self._redis.xclaim(stream, self._group, self._consumer, 0, ids, justid=True)

    async def depth(self) -> Depth:
        with redis_errors(self._where):
            pipe = self._redis.pipeline(transaction=False)
            for keys in self._keys:
                pipe.xinfo_groups(keys.name)
                pipe.xpending(keys.name, self._group)
                pipe.zcard(keys.delayed)
                pipe.get(keys.completed)
                pipe.xlen(keys.name)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
            backlog, completed, completed_known = 0, 0, False
            per_consumer: dict[str, int] = {}
            next_ids: list[tuple[str, str]] = []
            for i, keys in enumerate(self._keys):
                groups, pending, delayed, done, length = answers[5 * i : 5 * i + 5]
                group = _find_group(groups, self._group)
                held = 0
                if isinstance(pending, dict):
                    held = int(pending["pending"])
                    for entry in pending["consumers"] or ():
                        name = text(entry["name"])
                        per_consumer[name] = per_consumer.get(name, 0) + int(entry["pending"])
                if group is None:
                    backlog += _count(length)
                    next_ids.append((keys.name, "-"))
                else:
                    lag = group.get("lag")
                    # Acked entries are deleted, so the stream holds exactly pending plus waiting ones.
                    backlog += int(lag) if lag is not None else max(0, _count(length) - held)
                    next_ids.append((keys.name, f"({text(group['last-delivered-id'])}"))
                backlog += _count(delayed)
                if done is not None and not isinstance(done, Exception):
                    completed, completed_known = completed + int(done), True
            oldest = await self._oldest_waiting_age(next_ids)
        return Depth(
            backlog=backlog,
            in_flight=sum(per_consumer.values()),
            per_consumer=per_consumer,
            completed_total=completed if completed_known else None,
            oldest_age_seconds=oldest,
        )

    async def close(self) -> None:
        """Leave the group if nothing is pending for this consumer, so idle consumers do not pile up."""
        try:
            if self._consumed:
                with redis_errors(self._where):
                    for keys in self._keys:
                        mine = await self._redis.xpending_range(
                            keys.name, self._group, "-", "+", 1, consumername=self._consumer
                        )
                        if not mine:
                            await self._redis.xgroup_delconsumer(keys.name, self._group, self._consumer)
        except Exception as exc:
            log.warning("could not leave the consumer group: %s", exc)
        finally:
            await self._redis.aclose()

    async def _consume(self, wanted: int, timeout: float) -> list[Delivery]:
        await self._ensure_groups()
        self._consumed = True
        await self._promote_due()
        deliveries: list[Delivery] = []
        if time.monotonic() >= self._next_claim:
            deliveries = await self._claim_abandoned(wanted)
            self._next_claim = time.monotonic() + self._consumer_timeout / 3
        deliveries += await self._read_in_priority_order(wanted - len(deliveries))
        deadline = time.monotonic() + min(timeout, MAX_BLOCK_SECONDS)
        while not deliveries and (left := deadline - time.monotonic()) > 0:
            # COUNT applies per stream, so a blocking read over all streams is safe only while
            # every stream can be served within the free slots; otherwise poll in order.
            per_stream = wanted // len(self._keys)
            if per_stream >= 1:
                answer = await self._redis.xreadgroup(
                    self._group,
                    self._consumer,
                    {keys.name: ">" for keys in self._keys},
                    count=per_stream,
                    block=max(1, int(left * 1000)),
                )
                return self._deliveries(answer)
            await asyncio.sleep(min(POLL_INTERVAL_SECONDS, left))
            deliveries = await self._read_in_priority_order(wanted)
        return deliveries

    async def _ensure_groups(self) -> None:
        """Create the group from the stream's start, so tasks published before any worker are kept."""
        if self._groups_ready:
            return
        for keys in self._keys:
            try:
                await self._redis.xgroup_create(keys.name, self._group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def _promote_due(self) -> None:
        now = time.time()
        for keys in self._keys:
            await self._promote(keys=[keys.delayed, keys.name], args=[now, 100, "stream"])

    async def _read_in_priority_order(self, wanted: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for keys in self._keys:
            if len(deliveries) >= wanted:
                break
            answer = await self._redis.xreadgroup(
                self._group, self._consumer, {keys.name: ">"}, count=wanted - len(deliveries)
            )
            deliveries += self._deliveries(answer)
        return deliveries

    async def _claim_abandoned(self, wanted: int) -> list[Delivery]:
        claimed: list[Delivery] = []
        idle_ms = int(self._consumer_timeout * 1000)
        for keys in self._keys:
            if len(claimed) >= wanted:
                break
            cursor, entries, *_ = await self._redis.xautoclaim(
                keys.name,
                self._group,
                self._consumer,
                idle_ms,
                start_id=self._claim_cursor[keys.name],
                count=wanted - len(claimed),
            )
            self._claim_cursor[keys.name] = text(cursor)
            entries = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
            if not entries:
                continue
            pipe = self._redis.pipeline(transaction=False)
            for entry_id, _ in entries:
                pipe.xpending_range(
                    keys.name, self._group, entry_id, entry_id, 1, consumername=self._consumer
                )
            counts = [info[0]["times_delivered"] if info else 1 for info in await pipe.execute()]
            for (entry_id, fields), times_delivered in zip(entries, counts, strict=True):
                claimed.append(self._delivery(keys.name, entry_id, fields, int(times_delivered)))
            log.warning(
                "took over %d tasks idle for more than %.0fs (their consumer looks dead)",
                len(entries),
                self._consumer_timeout,
                extra={"queue": keys.name},
            )
        return claimed

    def _deliveries(self, answer: Any) -> list[Delivery]:
        deliveries = []
        for stream, entries in answer or ():
            for entry_id, fields in entries:
                if fields is not None:
                    deliveries.append(self._delivery(text(stream), entry_id, fields, 1))
        return deliveries

    def _delivery(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], times_delivered: int
    ) -> Delivery:
        body = fields.get(b"body")
        if body is None:
            # Not written by Swell: keep every field so the dead-letter entry loses nothing.
            body = json.dumps(
                {text(k): v.decode("utf-8", "backslashreplace") for k, v in fields.items()}
            ).encode()
        try:
            prior = int(fields.get(b"attempts", b"0"))
        except ValueError:
            prior = 0
        return Delivery(
            body=body, attempt=prior + times_delivered, receipt=(stream, text(entry_id)), source=stream
        )

    async def _oldest_waiting_age(self, next_ids: list[tuple[str, str]]) -> float | None:
        pipe = self._redis.pipeline(transaction=False)
        for stream, start in next_ids:
            pipe.xrange(stream, min=start, max="+", count=1)
        oldest: float | None = None
        for entries in await pipe.execute(raise_on_error=False):
            if isinstance(entries, list) and entries:
                added_ms = int(text(entries[0][0]).split("-")[0])
                age = max(0.0, time.time() - added_ms / 1000)
                oldest = max(oldest or 0.0, age)
        return oldest


def _find_group(groups: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(groups, list):
        return None  # the stream does not exist yet
    for group in groups:
        if text(group["name"]) == name:
            return dict(group)
    return None


def _count(value: Any) -> int:
    return 0 if value is None or isinstance(value, Exception) else int(value)
