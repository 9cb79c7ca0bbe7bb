"""Wake-ups for pools asleep at zero, from events instead of one fast poll per pool.

A sleeping pool's scaler waits on its ``PoolWake`` for a slow idle interval. Three sources set it:
- kopf's watch: the activator's ``activated-at`` annotation or a spec edit (``handlers``);
- one ``RedisWatch`` per Redis server: a single script call per tick, for every sleeping pool on that
  server, asking only "is anything queued or held?" (``LLEN``/``XLEN`` and ``ZCARD`` of the delayed set,
  O(1) each, and for lists the processing lists of the consumer registry, O(consumers): never a keyspace
  scan); the scaler then does its full depth read;
- the daemon's stop flag, so a deleted pool or a stopping operator is not kept waiting.
So the operator's idle cost is one round trip per Redis server per tick, not one per pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from swell_contract.keys import QueueKeys

from swell_operator.redis_clients import RedisClients

log = logging.getLogger(__name__)

# How often each Redis server is asked whether its sleeping pools have work.
WATCH_INTERVAL_SECONDS = 0.25
# A server that cannot be reached is asked again after this long (the pools' own reads report the error).
WATCH_ERROR_PAUSE_SECONDS = 2.0


class PoolWake:
    """Set when a sleeping pool should look at its queue now."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken (the wake is consumed), False after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        woken = self._event.is_set()
        self._event.clear()
        return woken


@dataclass(frozen=True)
class Watched:
    """One sleeping pool's keys on a server: the queue keys are lists or streams, each with a delayed set."""

    backend: str  # redis-list | redis-streams
    queues: tuple[str, ...]


@dataclass
class _Entry:
    watched: Watched
    wake: PoolWake
    # The last total seen; a wake is sent when work shows up and whenever that total changes.
    seen: int | None = None


# Queued work per queue key, for every watched key at once: one command per tick, whatever the number of
# pools, so the operator's cost stays one short reply per server (a pipeline of two commands per pool cost
# ~40 us of operator CPU per command). Acked Stream entries are deleted, so a Stream's length is its waiting
# plus pending entries (a gone consumer's too). A list's waiting tasks are its length, and what consumers
# took is in the processing lists of its consumer registry: a pod cut during its drain can leave tasks there
# after the pool fell asleep. A missing key or a wrong type counts 0.
# KEYS: queue key, delayed set, consumer registry, per queue. ARGV: the processing-list prefix of a list
# queue, or "" for a Stream, per queue.
QUEUED_SCRIPT = """
local out = {}
for i = 1, #KEYS, 3 do
  local prefix = ARGV[(i + 2) / 3]
  local size
  if prefix == '' then size = redis.pcall('XLEN', KEYS[i]) else size = redis.pcall('LLEN', KEYS[i]) end
  if type(size) ~= 'number' then size = 0 end
  local delayed = redis.pcall('ZCARD', KEYS[i + 1])
  if type(delayed) ~= 'number' then delayed = 0 end
  if prefix ~= '' then
    local consumers = redis.pcall('SMEMBERS', KEYS[i + 2])
    if type(consumers) == 'table' and not consumers.err then
      for _, consumer in ipairs(consumers) do
        local held = redis.pcall('LLEN', prefix .. consumer)
        if type(held) == 'number' then size = size + held end
      end
    end
  end
  out[#out + 1] = size + delayed
end
return out
"""


def script_arguments(watched: Sequence[Watched]) -> tuple[list[str], list[str]]:
    """The script's KEYS and ARGV for these pools, in order."""
    keys: list[str] = []
    prefixes: list[str] = []
    for pool in watched:
        for name in pool.queues:
            queue = QueueKeys(name)
            keys += [name, queue.delayed, queue.consumers]
            prefixes.append("" if pool.backend == "redis-streams" else queue.processing(""))
    return keys, prefixes


@dataclass
class RedisWatch:
    """The sleeping pools on one Redis server, checked together in one round trip per tick."""

    url: str
    password: str | None
    clients: RedisClients = field(default_factory=RedisClients)
    interval: float = WATCH_INTERVAL_SECONDS
    pools: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _redis: Any = None
    _script: Any = None

    def watch(self, pool: tuple[str, str], watched: Watched, wake: PoolWake) -> None:
        entry = self.pools.get(pool)
        if entry is None or entry.watched != watched or entry.wake is not wake:
            self.pools[pool] = _Entry(watched, wake)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"swell-wake-watch-{len(self.pools)}")

    def forget(self, pool: tuple[str, str]) -> None:
        self.pools.pop(pool, None)

    async def check_once(self) -> int:
        """One round trip for every watched pool; returns how many were woken."""
        if self._redis is None:
            self._redis = self.clients.get(self.url, self.password, id(self))
            self._script = self._redis.register_script(QUEUED_SCRIPT)
        entries = list(self.pools.values())
        if not entries:
            return 0
        keys, prefixes = script_arguments([entry.watched for entry in entries])
        answers: list[Any] = await self._script(keys=keys, args=prefixes)
        woken, at = 0, 0
        for entry in entries:
            size = len(entry.watched.queues)
            total = sum(int(a) for a in answers[at : at + size])
            at += size
            if total > 0 and total != entry.seen:
                entry.wake.set()
                woken += 1
            entry.seen = total
        return woken

    async def _run(self) -> None:
        while self.pools:
            try:
                await self.check_once()
                await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the pools' own depth reads report the server's health
                log.debug("wake watch of a Redis server failed: %s", type(exc).__name__)
                await self._drop_connection()
                for entry in self.pools.values():
                    entry.seen = None
                    entry.wake.set()  # let each pool read (and report) for itself
                await asyncio.sleep(WATCH_ERROR_PAUSE_SECONDS)
        self._task = None
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            await self.clients.release(self.url, self.password, id(self))

    async def close(self) -> None:
        self.pools.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()


@dataclass
class RedisWatches:
    """One ``RedisWatch`` per Redis server (URL and password), shared by every pool on it; each watch reads
    through the server's client in ``clients``, which the pools' depth reads share."""

    clients: RedisClients = field(default_factory=RedisClients)
    servers: dict[tuple[str, str | None], RedisWatch] = field(default_factory=dict)
    where: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)

    def watch(self, pool: tuple[str, str], url: str, password: str | None, watched: Watched, wake: PoolWake) -> None:
        server = (url, password)
        if self.where.get(pool) not in (None, server):
            self.forget(pool)
        watch = self.servers.get(server)
        if watch is None:
            watch = self.servers[server] = RedisWatch(url, password, self.clients)
        watch.watch(pool, watched, wake)
        self.where[pool] = server

    def watching(self, pool: tuple[str, str]) -> bool:
        return pool in self.where

    def forget(self, pool: tuple[str, str]) -> None:
        server = self.where.pop(pool, None)
        if server is not None and server in self.servers:
            self.servers[server].forget(pool)

    async def close(self) -> None:
        for watch in self.servers.values():
            await watch.close()
        self.servers.clear()
        self.where.clear()
        await self.clients.close()
