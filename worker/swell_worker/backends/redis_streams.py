"""Redis Streams with one consumer group: Redis itself tracks what each consumer holds (the PEL).

A worker reads only as many entries as it has free slots, and acks (and deletes) each one after the
result is committed, so the stream holds just pending and waiting entries. Entries left idle longer
than the consumer timeout by a dead consumer are taken over with XAUTOCLAIM, before new entries; a
live worker keeps its own entries fresh by re-claiming them (XCLAIM JUSTID resets the idle time without
counting a delivery). Each consumer also keeps a heartbeat and is registered in ``Q:consumers``, so the
entries of a consumer whose heartbeat is gone (it closed, or its timeout passed) are taken without
waiting for their own idle time, a run restarted under the same name takes its predecessor's entries
at once, and gone consumers leave the group once they hold nothing.

Retries wait in ``Q:delayed`` and are re-added with an ``attempts`` field, so the attempt of a delivery
is that field plus Redis's own delivery count.
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

from swell_worker.backends.base import Delivery
from swell_worker.backends.redis_base import RedisConsumerBase, RedisPublisherBase
from swell_worker.backends.redis_common import (
    MAX_BLOCK_SECONDS,
    POLL_INTERVAL_SECONDS,
    delayed_member,
    queue_for_priority,
    redis_errors,
    text,
)
from swell_worker.config import WorkerConfig

log = logging.getLogger(__name__)

# Every settle script acts only on entries that THIS consumer holds (pending in the group under its
# name), checked inside the script: an entry another consumer took over, or one already settled, is
# left alone, so a slow worker can never settle (or re-add) what a live one now runs. Lua has no
# rollback, so the write that could fail comes before the XACK: a failed script leaves entries pending.
_OWNED = """
local function owned(stream, group, consumer, id)
  local pending = redis.pcall('XPENDING', stream, group, id, id, 1, consumer)
  return type(pending) == 'table' and not pending.err and #pending > 0
end
-- The ids of ARGV[first..] that this consumer holds: one XPENDING over their range (ARGV[first - 2] to
-- ARGV[first - 1], the lowest and highest of them, which the caller works out), this consumer only.
local function owned_ids(stream, group, consumer, first)
  local low, high = ARGV[first - 2], ARGV[first - 1]
  local pending = redis.pcall('XPENDING', stream, group, low, high, #ARGV - first + 1 + 100000, consumer)
  local mine = {}
  if type(pending) ~= 'table' or pending.err then return mine end
  local held = {}
  for _, entry in ipairs(pending) do held[entry[1]] = true end
  for i = first, #ARGV do
    if held[ARGV[i]] then mine[#mine + 1] = ARGV[i] end
  end
  return mine
end
"""

# KEYS: stream, completed. ARGV: group, consumer, lowest id, highest id, entry ids... Returns how many
# were acked. Acked entries leave the stream, so it holds just pending and waiting ones: when no entry
# up to the highest id is pending any more (the usual case, tasks finish about in order), one exact
# XTRIM MINID drops every entry below it, which frees whole stream nodes at once instead of looking up
# and tombstoning each entry; otherwise (an older entry still runs somewhere) each acked one is deleted.
# Every entry below the highest id was delivered (the group reads in id order from the stream's start)
# and none is pending, so all of them are acked: the trim removes nothing that is still owed.
ACK = (
    _OWNED
    + """
local mine = owned_ids(KEYS[1], ARGV[1], ARGV[2], 5)
local acked = 0
for first = 1, #mine, 1000 do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(mine, first, math.min(first + 999, #mine)))
end
if acked == 0 then return 0 end
redis.call('INCRBY', KEYS[2], acked)
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1], '-', ARGV[4], 1)
if #oldest == 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[4])
else
  for first = 1, #mine, 1000 do
    redis.call('XDEL', KEYS[1], unpack(mine, first, math.min(first + 999, #mine)))
  end
end
return acked
"""
)

_RELEASE_ONE = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""

# KEYS: stream, delayed. ARGV: group, consumer, entry id, due time, delayed member, mode, body, attempts.
NACK = (
    _OWNED
    + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
if ARGV[6] == 'now' then
  redis.call('XADD', KEYS[1], '*', 'body', ARGV[7], 'attempts', ARGV[8])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
end
"""
    + _RELEASE_ONE
)

# KEYS: stream, dead. ARGV: group, consumer, entry id, body, reason, attempts, failed_at, source.
DEAD_LETTER = (
    _OWNED
    + """
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'body', ARGV[4], 'reason', ARGV[5], 'attempts', ARGV[6],
           'failed_at', ARGV[7], 'source', ARGV[8])
"""
    + _RELEASE_ONE
)

# KEYS: stream. ARGV: group, consumer, min idle ms, lowest id, highest id, entry ids... Resets the idle
# time of the entries this consumer holds (JUSTID: no delivery counted), never claiming one another
# consumer holds.
KEEP_ALIVE = (
    _OWNED
    + """
local mine = owned_ids(KEYS[1], ARGV[1], ARGV[2], 6)
local kept = 0
for first = 1, #mine, 1000 do
  local args = {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}
  for i = first, math.min(first + 999, #mine) do args[#args + 1] = mine[i] end
  args[#args + 1] = 'JUSTID'
  kept = kept + #redis.call('XCLAIM', unpack(args))
end
return kept
"""
)

# KEYS: stream, the consumer's heartbeat, consumers registry. ARGV: group, taker, consumer, how many.
# A registered consumer without a heartbeat died (or closed with entries left): its entries are taken at
# once, without waiting for their idle time. Heartbeat and owner are checked inside the script, so a
# consumer that came back (a restart under its name) keeps what it holds, and an entry another consumer
# took first stays with it. Once it holds nothing it leaves the group and the registry; DELCONSUMER
# drops a consumer's pending entries, so it runs only after checking there are none.
# Returns (entry id, times delivered, fields) per taken entry that still exists.
TAKE_ORPHANED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local out = {}
local wanted = tonumber(ARGV[4])
if wanted > 0 then
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', wanted, ARGV[3])
  if #pending > 0 then
    local ids, delivered = {}, {}
    for i, entry in ipairs(pending) do
      ids[i] = entry[1]
      delivered[entry[1]] = entry[4]
    end
    for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))) do
      if entry and entry[2] then out[#out + 1] = {entry[1], delivered[entry[1]] + 1, entry[2]} end
    end
  end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[3]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[3])
end
return out
"""

# The longest wait between two looks for abandoned entries while none were found.
CLAIM_INTERVAL_SECONDS = 1.0


class RedisStreamsConsumer(RedisConsumerBase):
    promote_mode = "stream"

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
        self._group = group
        super().__init__(client, streams, consumer, where=where, consumer_timeout=consumer_timeout)

    def _prepare(self, client: aioredis.Redis) -> None:
        self._groups_ready = False
        self._joined = False
        self._next_claim = 0.0
        self._claim_cursor = dict.fromkeys(self._by_name, "0-0")
        # XREADGROUP's reply as Redis sends it: _deliveries reads it without a dict per entry.
        client.set_response_callback("XREADGROUP", _unparsed)
        self._ack = client.register_script(ACK)
        self._keep_alive = client.register_script(KEEP_ALIVE)
        self._nack = client.register_script(NACK)
        self._dead_letter = client.register_script(DEAD_LETTER)
        self._take_orphaned = client.register_script(TAKE_ORPHANED)

    @classmethod
    def options_from(cls, config: WorkerConfig) -> dict[str, Any]:
        return {"group": config.group}

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

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """One script per stream, sent together: XACK, delete and the completed count for what this consumer holds."""
        if not deliveries:
            return
        held = _ids_by_stream(deliveries)
        with redis_errors(self._where):
            if len(held) == 1:
                [(stream, ids)] = held.items()
                await self._ack(
                    keys=[stream, self._by_name[stream].completed],
                    args=[self._group, self._consumer, *_id_range(ids), *ids],
                )
                return
            pipe = self._redis.pipeline(transaction=False)
            for stream, ids in held.items():
                await self._ack(
                    keys=[stream, self._by_name[stream].completed],
                    args=[self._group, self._consumer, *_id_range(ids), *ids],
                    client=pipe,
                )
            await pipe.execute()

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """``delay <= 0`` re-adds the entry at once; otherwise it waits in the delayed zset."""
        stream, entry_id = delivery.source, delivery.receipt
        member = delayed_member(delivery.attempt, delivery.body)
        mode = "now" if delay <= 0 else "later"
        args: list[str | bytes | int | float] = [
            self._group,
            self._consumer,
            entry_id,
            time.time() + delay,
            member,
            mode,
            delivery.body,
            delivery.attempt,
        ]
        with redis_errors(self._where):
            await self._nack(keys=[stream, self._by_name[stream].delayed], args=args)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        stream, entry_id = delivery.source, delivery.receipt
        args: list[str | bytes | int | float] = [
            self._group,
            self._consumer,
            entry_id,
            delivery.body,
            reason,
            delivery.attempt,
            time.time(),
            stream,
        ]
        with redis_errors(self._where):
            await self._dead_letter(keys=[stream, self._by_name[stream].dead], args=args)

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the idle time of the entries this worker still holds, and its heartbeat, so nobody takes them over.

        The min-idle (a third of the consumer timeout) skips entries touched since; the owner check in
        the script skips entries another consumer took over, which stay with that consumer.
        """
        min_idle = int(self._consumer_timeout * 1000 / 3)
        with redis_errors(self._where):
            await self._beat()
            for stream, ids in _ids_by_stream(deliveries).items():
                if not ids:
                    continue
                await self._keep_alive(
                    keys=[stream], args=[self._group, self._consumer, min_idle, *_id_range(ids), *ids]
                )

    async def close(self) -> None:
        """Stop the heartbeat, and leave the group and the registry if nothing is pending for this consumer.

        Entries still pending (the drain ran out) are then taken by the other consumers on their next
        claim tick, as the heartbeat is gone, instead of after the consumer timeout.
        """
        try:
            if self._joined:
                with redis_errors(self._where):
                    for keys in self._keys:
                        await self._redis.delete(keys.heartbeat(self._consumer))
                        mine = await self._redis.xpending_range(
                            keys.name, self._group, "-", "+", 1, consumername=self._consumer
                        )
                        if not mine:
                            await self._redis.xgroup_delconsumer(keys.name, self._group, self._consumer)
                            await self._redis.srem(keys.consumers, self._consumer)
        except Exception as exc:
            log.warning("could not leave the consumer group: %s", exc)
        finally:
            await self._redis.aclose()

    async def _consume(self, wanted: int, timeout: float) -> list[Delivery]:
        await self._ensure_groups()
        deliveries = [] if self._joined else await self._join(wanted)
        await self._promote_when_due()
        # Abandoned entries are older than any new one, so they are taken first.
        if len(deliveries) < wanted and time.monotonic() >= self._next_claim:
            deliveries += await self._claim_abandoned(wanted - len(deliveries))
        if len(self._keys) == 1 and not deliveries:
            # One stream: a single blocking read answers at once when entries wait.
            answer = await self._redis.xreadgroup(
                self._group,
                self._consumer,
                {self._keys[0].name: ">"},
                count=wanted,
                block=max(1, int(min(timeout, MAX_BLOCK_SECONDS) * 1000)),
            )
            return self._deliveries(answer)
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
        if not self._groups_ready:
            await ensure_groups(self._redis, [keys.name for keys in self._keys], self._group)
            self._groups_ready = True

    async def _join(self, wanted: int) -> list[Delivery]:
        """Register with a heartbeat, then take back what a previous run under this name left pending.

        A consumer name is one pod's: a new run under it (the container restarted) proves the previous
        run dead, so its entries are run again at once (reading this consumer's own history counts a
        delivery) instead of after the consumer timeout.
        """
        await self._beat()
        self._joined = True
        taken: list[Delivery] = []
        for keys in self._keys:
            if len(taken) >= wanted:
                break
            answer: Any = await self._redis.xreadgroup(
                self._group, self._consumer, {keys.name: "0"}, count=wanted - len(taken)
            )
            for stream, entries in _streams_of(answer):
                why = "left by a previous run of this consumer"
                taken += await self._claimed_deliveries(
                    text(stream),
                    [(i, None if not f else dict(zip(f[::2], f[1::2], strict=True))) for i, f in entries],
                    why,
                )
        return taken

    async def _beat(self) -> None:
        """The heartbeat (its lifetime the consumer timeout) and the registry entry that make this consumer's
        death visible to the others as soon as the heartbeat expires."""
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keys:
            pipe.sadd(keys.consumers, self._consumer)
            pipe.set(keys.heartbeat(self._consumer), b"1", px=max(1, int(self._consumer_timeout * 1000)))
        await pipe.execute()

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
        """Take over abandoned entries, as many as there are free slots.

        XAUTOCLAIM (entries idle past the consumer timeout) runs in a loop until the slots are full or
        the group's pending list has been walked to its end; then the entries of registered consumers
        whose heartbeat is gone. Slots filled means more may wait, so the next read looks again at once;
        otherwise the next look is at most ``CLAIM_INTERVAL_SECONDS`` away, so a crash's entries are
        taken over soon after they pass the timeout, however many there are.
        """
        claimed: list[Delivery] = []
        idle_ms = int(self._consumer_timeout * 1000)
        for keys in self._keys:
            while len(claimed) < wanted:
                cursor, entries, *_ = await self._redis.xautoclaim(
                    keys.name,
                    self._group,
                    self._consumer,
                    idle_ms,
                    start_id=self._claim_cursor[keys.name],
                    count=wanted - len(claimed),
                )
                self._claim_cursor[keys.name] = text(cursor)
                claimed += await self._claimed_deliveries(
                    keys.name, entries, f"idle for more than {self._consumer_timeout:g}s (their consumer looks dead)"
                )
                if text(cursor) == "0-0":
                    break
        claimed += await self._take_from_gone_consumers(wanted - len(claimed))
        interval = min(CLAIM_INTERVAL_SECONDS, self._consumer_timeout / 3)
        self._next_claim = time.monotonic() + (0.0 if len(claimed) >= wanted else interval)
        return claimed

    async def _take_from_gone_consumers(self, wanted: int) -> list[Delivery]:
        """Entries of registered consumers whose heartbeat expired or was removed, up to ``wanted``; gone
        consumers that hold nothing leave the group and the registry. O(consumers), never a scan."""
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keys:
            pipe.smembers(keys.consumers)
        others = [
            (keys, text(member))
            for keys, members in zip(self._keys, await pipe.execute(), strict=True)
            for member in sorted(members)
            if text(member) != self._consumer
        ]
        if not others:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for keys, consumer in others:
            pipe.exists(keys.heartbeat(consumer))
        gone = [other for other, alive in zip(others, await pipe.execute(), strict=True) if not alive]
        taken: list[Delivery] = []
        for keys, consumer in gone:
            entries = await self._take_orphaned(
                keys=[keys.name, keys.heartbeat(consumer), keys.consumers],
                args=[self._group, self._consumer, consumer, max(0, wanted - len(taken))],
            )
            if entries:
                log.warning(
                    "took over %d tasks of consumer %s, whose heartbeat is gone",
                    len(entries),
                    consumer,
                    extra={"queue": keys.name},
                )
            for entry_id, times_delivered, flat in entries:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                taken.append(self._delivery(keys.name, entry_id, fields, int(times_delivered)))
        return taken

    async def _claimed_deliveries(self, stream: str, entries: Any, why: str) -> list[Delivery]:
        live = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
        if not live:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for entry_id, _ in live:
            pipe.xpending_range(stream, self._group, entry_id, entry_id, 1, consumername=self._consumer)
        counts = [info[0]["times_delivered"] if info else 1 for info in await pipe.execute()]
        log.warning("took over %d tasks %s", len(live), why, extra={"queue": stream})
        return [
            self._delivery(stream, entry_id, fields, int(times_delivered))
            for (entry_id, fields), times_delivered in zip(live, counts, strict=True)
        ]

    def _deliveries(self, answer: Any) -> list[Delivery]:
        """Deliveries from XREADGROUP's reply: per stream (a map in RESP3, pairs in RESP2) its entries,
        each an id and a flat field list, whose usual shape is just the body."""
        deliveries = []
        for stream, entries in _streams_of(answer):
            name = text(stream)
            for entry_id, fields in entries:
                if not fields:
                    continue  # deleted while pending
                if len(fields) == 2 and fields[0] == b"body":
                    deliveries.append(Delivery(fields[1], 1, entry_id.decode(), name))
                else:
                    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
                    deliveries.append(self._delivery(name, entry_id, pairs, 1))
        return deliveries

    def _delivery(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], times_delivered: int) -> Delivery:
        body = fields.get(b"body")
        if body is None:
            # Not written by Swell: keep every field so the dead-letter entry loses nothing.
            body = json.dumps({text(k): v.decode("utf-8", "backslashreplace") for k, v in fields.items()}).encode()
        try:
            prior = int(fields.get(b"attempts", b"0"))
        except ValueError:
            prior = 0
        return Delivery(body=body, attempt=prior + times_delivered, receipt=text(entry_id), source=stream)


async def ensure_groups(client: aioredis.Redis, streams: Sequence[str], group: str) -> None:
    """Create the group from each stream's start, so tasks published before any worker are kept."""
    for stream in streams:
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class RedisStreamsPublisher(RedisPublisherBase):
    def __init__(
        self, client: aioredis.Redis, streams: Sequence[str], *, group: str = "swell", where: str = "Redis"
    ) -> None:
        super().__init__(client, streams, where=where)
        self._group = group
        self._groups_ready = False

    @classmethod
    def options_from(cls, config: WorkerConfig) -> dict[str, Any]:
        return {"group": config.group}

    async def publish(self, body: bytes, priority: int = 0) -> None:
        with redis_errors(self._where):
            if not self._groups_ready:
                await ensure_groups(self._redis, self._queues, self._group)
                self._groups_ready = True
            await self._redis.xadd(queue_for_priority(self._queues, priority), {"body": body})


def _ids_by_stream(deliveries: Sequence[Delivery]) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for delivery in deliveries:
        held.setdefault(delivery.source, []).append(delivery.receipt)
    return held


def _id_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence)


def _id_range(ids: Sequence[str]) -> tuple[str, str]:
    """The lowest and highest of some stream entry ids, for a script's XPENDING range and trim."""
    ordered = sorted(ids, key=_id_order)  # one parse per id; they mostly come in order already
    return ordered[0], ordered[-1]


def _unparsed(response: Any, **options: Any) -> Any:
    return response


def _streams_of(answer: Any) -> Any:
    """XREADGROUP's raw reply as (stream, entries) pairs: a map in RESP3, pairs in RESP2, None when empty."""
    return answer.items() if isinstance(answer, dict) else answer or ()
