"""The reliable-queue pattern on Redis lists, for producers that LPUSH.

A worker moves each task from the queue into its own processing list, so a task is never only in a
worker's memory: if the worker dies, its processing list outlives it, and once its heartbeat key has
expired any other worker moves the tasks back. Each delivery is counted in ``Q:attempts`` (keyed by
the SHA-1 of the body) so redeliveries after a crash count towards the dead-letter limit.

Takes are safe to repeat: the Redis client re-sends a command whose reply was lost, so the take script
carries a token and answers a repeated token with the batch it moved the first time, instead of moving
a second one. The blocking wait moves nothing (BLMOVE of the queue onto its own tail). What can still
end up in a processing list without being in the worker's memory (a reply lost twice) is found by the
worker's reconcile, which gives it back after a short grace. Every consumer that takes is registered in
``Q:consumers``, so depth and recovery read O(consumers) keys and never SCAN the keyspace.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from swell_contract.keys import QueueKeys

from swell_worker.backends.base import Delivery
from swell_worker.backends.redis_base import RedisConsumerBase, RedisPublisherBase
from swell_worker.backends.redis_common import (
    MAX_BLOCK_SECONDS,
    POLL_INTERVAL_SECONDS,
    dead_letter_record,
    delayed_member,
    queue_for_priority,
    redis_errors,
)

log = logging.getLogger(__name__)

# KEYS: last-take memo, then (queue, processing, attempts, consumers) per queue, highest priority
# first. ARGV: how many to take, the call's token, consumer name, memo lifetime in ms.
# Returns a flat list of (queue index, body, attempt) triples: the same list again for a token it has
# seen last. Lua has no rollback, so the writes that could fail come before the move.
TAKE = """
local memo = redis.call('GET', KEYS[1])
if memo then
  local saved = cmsgpack.unpack(memo)
  if saved[1] == ARGV[2] then return saved[2] end
end
local wanted = tonumber(ARGV[1])
local out = {}
local taken = 0
for i = 2, #KEYS, 4 do
  local before = taken
  while taken < wanted do
    local body = redis.call('LINDEX', KEYS[i], -1)
    if not body then break end
    local attempt = redis.call('HINCRBY', KEYS[i + 2], redis.sha1hex(body), 1)
    redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'RIGHT', 'LEFT')
    out[#out + 1] = (i + 2) / 4
    out[#out + 1] = body
    out[#out + 1] = attempt
    taken = taken + 1
  end
  if taken > before then redis.call('SADD', KEYS[i + 3], ARGV[3]) end
end
redis.call('SET', KEYS[1], cmsgpack.pack({ARGV[2], out}), 'PX', ARGV[4])
return out
"""

# KEYS: processing list, heartbeat, queue, consumers. ARGV: "1" to recover even with a live heartbeat
# (our own list: a previous run of this pod, or a clean shutdown), consumer name. Oldest tasks go back
# to the consuming end first; the consumer leaves the registry once its list is empty.
RECOVER = """
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('SREM', KEYS[4], ARGV[2])
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

# KEYS: processing, attempts, completed. ARGV: bodies... Returns how many were still held and acked.
ACK = """
local acked = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], redis.sha1hex(ARGV[i]))
    acked = acked + 1
  end
end
if acked > 0 then redis.call('INCRBY', KEYS[3], acked) end
return acked
"""

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
    _IF_HELD + "redis.call('LPUSH', KEYS[2], ARGV[2]) redis.call('HDEL', KEYS[3], redis.sha1hex(ARGV[1]))" + _RELEASE
)

# KEYS: processing, queue. ARGV: body. A task in our processing list that the worker does not hold
# goes back to the consuming end; its attempt was counted when it was taken.
GIVE_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# A take's answer is kept this long for a repeat of the same call.
TAKE_MEMO_MS = 60_000
# A task found in our processing list but not in memory for this long is given back.
RECONCILE_GRACE_SECONDS = 5.0
# The longest wait between two looks for consumers whose heartbeat expired: a dead consumer's tasks
# wait at most this long past its heartbeat (one SMEMBERS and one EXISTS per registered consumer).
RECOVERY_INTERVAL_SECONDS = 1.0


class RedisListConsumer(RedisConsumerBase):
    promote_mode = "list"

    def _prepare(self, client: aioredis.Redis) -> None:
        self._joined = False
        self._next_recovery = 0.0
        # (processing list, body) -> when reconcile first saw it there without the worker holding it.
        self._unheld_since: dict[tuple[str, bytes], float] = {}
        self._take = client.register_script(TAKE)
        self._give_back = client.register_script(GIVE_BACK)
        self._recover = client.register_script(RECOVER)
        self._ack = client.register_script(ACK)
        self._nack = client.register_script(NACK)
        self._dead_letter = client.register_script(DEAD_LETTER)

    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        if max_messages <= 0:
            return []
        with redis_errors(self._where):
            if not self._joined:
                await self._join()
            await self._promote_when_due()
            now = time.monotonic()
            if now >= self._next_recovery:
                # Recovered tasks go to the consuming end, so they are taken before newer ones.
                await self._recover_abandoned()
                self._next_recovery = now + min(RECOVERY_INTERVAL_SECONDS, self._consumer_timeout / 3)
            deliveries = await self._take_now(max_messages)
            deadline = time.monotonic() + min(timeout, MAX_BLOCK_SECONDS)
            while not deliveries and (left := deadline - time.monotonic()) > 0:
                if len(self._keys) == 1:
                    await self._wait_for_work(left)
                    deliveries = await self._take_now(max_messages)
                    continue
                # BLMOVE watches one list only; with several priorities, poll them in order.
                await asyncio.sleep(min(POLL_INTERVAL_SECONDS, left))
                deliveries = await self._take_now(max_messages)
            return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """One script per queue, sent together: remove what this consumer still holds, count it completed."""
        by_source: dict[str, list[bytes]] = {}
        for delivery in deliveries:
            by_source.setdefault(delivery.source, []).append(delivery.body)
        if not by_source:
            return
        with redis_errors(self._where):
            if len(by_source) == 1:
                [(source, bodies)] = by_source.items()
                await self._ack(keys=self._ack_keys(source), args=bodies)
                return
            pipe = self._redis.pipeline(transaction=False)
            for source, bodies in by_source.items():
                await self._ack(keys=self._ack_keys(source), args=bodies, client=pipe)
            await pipe.execute()

    def _ack_keys(self, source: str) -> list[str]:
        keys = self._by_name[source]
        return [keys.processing(self._consumer), keys.attempts, keys.completed]

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
            await self._dead_letter(keys=[delivery.receipt, keys.dead, keys.attempts], args=[delivery.body, record])

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Refresh this consumer's heartbeat, then reconcile its processing lists with what it holds."""
        with redis_errors(self._where):
            await self._beat()
            if self._joined:
                await self._reconcile(deliveries)

    async def _reconcile(self, deliveries: Sequence[Delivery]) -> None:
        """Give back tasks in our processing lists that the worker does not hold, after a grace.

        A take whose reply never arrived (the connection dropped twice) leaves tasks there that nobody
        runs; the grace covers a take whose reply is still on its way.
        """
        held = collections.Counter((d.receipt, d.body) for d in deliveries)
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keys:
            pipe.lrange(keys.processing(self._consumer), 0, -1)
        listed: list[list[bytes]] = await pipe.execute()
        now = time.monotonic()
        unheld_since: dict[tuple[str, bytes], float] = {}
        overdue: list[tuple[QueueKeys, bytes]] = []
        for keys, bodies in zip(self._keys, listed, strict=True):
            processing = keys.processing(self._consumer)
            for body in bodies:
                entry = (processing, body)
                if held[entry] > 0:
                    held[entry] -= 1
                    continue
                since = unheld_since[entry] = self._unheld_since.get(entry, now)
                if now - since >= RECONCILE_GRACE_SECONDS:
                    overdue.append((keys, body))
        for keys, body in overdue:
            unheld_since.pop((keys.processing(self._consumer), body), None)
            if await self._give_back(keys=[keys.processing(self._consumer), keys.name], args=[body]):
                log.warning(
                    "gave back a task that sat in this worker's processing list unheld", extra={"queue": keys.name}
                )
        self._unheld_since = unheld_since

    async def close(self) -> None:
        """Give back whatever this consumer still holds and stop its heartbeat, then disconnect."""
        try:
            if self._joined:
                with redis_errors(self._where):
                    for keys in self._keys:
                        await self._recover(keys=self._recover_keys(keys, self._consumer), args=["1", self._consumer])
                        await self._redis.delete(keys.heartbeat(self._consumer), keys.last_take(self._consumer))
        finally:
            await self._redis.aclose()

    async def _join(self) -> None:
        """Start the heartbeat, then take back tasks a previous run of this consumer left behind."""
        await self._beat()
        for keys in self._keys:
            moved = await self._recover(keys=self._recover_keys(keys, self._consumer), args=["1", self._consumer])
            if moved:
                log.info(
                    "requeued %d tasks left by a previous run of this consumer",
                    moved,
                    extra={"queue": keys.name},
                )
        self._joined = True

    def _recover_keys(self, keys: QueueKeys, consumer: str) -> list[str]:
        return [keys.processing(consumer), keys.heartbeat(consumer), keys.name, keys.consumers]

    async def _beat(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keys:
            pipe.set(keys.heartbeat(self._consumer), b"1", px=int(self._consumer_timeout * 1000))
        await pipe.execute()

    async def _registered_consumers(self) -> list[tuple[QueueKeys, str]]:
        """Every (queue, consumer) that may hold a processing list, from the registry sets."""
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keys:
            pipe.smembers(keys.consumers)
        found: list[tuple[QueueKeys, str]] = []
        for keys, members in zip(self._keys, await pipe.execute(), strict=True):
            found += [(keys, m.decode() if isinstance(m, bytes) else m) for m in sorted(members)]
        return found

    async def _recover_abandoned(self) -> None:
        others = [(keys, c) for keys, c in await self._registered_consumers() if c != self._consumer]
        if not others:
            return
        pipe = self._redis.pipeline(transaction=False)
        for keys, consumer in others:
            await self._recover(keys=self._recover_keys(keys, consumer), args=["0", consumer], client=pipe)
        for (keys, consumer), moved in zip(others, await pipe.execute(), strict=True):
            if int(moved) > 0:
                log.warning(
                    "requeued %d tasks of consumer %s, whose heartbeat expired",
                    moved,
                    consumer,
                    extra={"queue": keys.name},
                )

    async def _take_now(self, wanted: int) -> list[Delivery]:
        if wanted <= 0:
            return []
        script_keys = [self._keys[0].last_take(self._consumer)]
        for keys in self._keys:
            script_keys += [keys.name, keys.processing(self._consumer), keys.attempts, keys.consumers]
        token = uuid.uuid4().hex
        flat = await self._take(keys=script_keys, args=[wanted, token, self._consumer, TAKE_MEMO_MS])
        deliveries = []
        for i in range(0, len(flat), 3):
            keys = self._keys[int(flat[i]) - 1]
            deliveries.append(self._delivery(keys, flat[i + 1], int(flat[i + 2])))
        return deliveries

    async def _wait_for_work(self, timeout: float) -> None:
        """Block until the queue has a task, moving nothing: BLMOVE of its tail onto its own tail.

        Repeating it (a lost reply) changes nothing, unlike a BLMOVE into the processing list.
        """
        name = self._keys[0].name
        # Redis takes a fractional timeout; redis-py's annotation says int.
        await self._redis.blmove(name, name, timeout, "RIGHT", "RIGHT")  # type: ignore[arg-type]

    def _delivery(self, keys: QueueKeys, body: bytes, attempt: int) -> Delivery:
        return Delivery(body=body, attempt=attempt, receipt=keys.processing(self._consumer), source=keys.name)


class RedisListPublisher(RedisPublisherBase):
    async def publish(self, body: bytes, priority: int = 0) -> None:
        with redis_errors(self._where):
            await self._redis.lpush(queue_for_priority(self._queues, priority), body)
