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
import time
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
        self._empty_at: float | None = None

    def set(self, empty_at: float | None = None) -> None:
        """``empty_at``: when the shared watch last saw the pool's queues empty, where it knows."""
        if empty_at is not None and self._empty_at is None:
            self._empty_at = empty_at
        self._event.set()

    def take_empty_at(self) -> float | None:
        """The watch's last empty sighting since this was last taken (see ``RateEstimator.saw_empty``)."""
        empty_at, self._empty_at = self._empty_at, None
        return empty_at

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
    since: float = field(default_factory=time.time)  # when the watch began to look at these queues
    # The last total seen; a wake is sent when work shows up and whenever that total changes.
    seen: int | None = None


# Queued work per queue key, for every watched key at once: one command per tick, whatever the number of
# pools, so the operator's cost stays one request per server. The request names each queue once; the script
# derives the delayed set, the consumer registry and the processing lists from the name (the layout's
# suffixes come in ARGV, from ``QueueKeys``), and answers only for queues holding work, so an idle tick sends
# ~25 bytes per queue and decodes an empty list. Acked Stream entries are deleted, so a Stream's length is
# its waiting plus pending entries (a gone consumer's too). A list's waiting tasks are its length, and what
# consumers took is in the processing lists of its consumer registry: a pod cut during its drain can leave
# tasks there after the pool fell asleep. A missing key or a wrong type counts 0.
# KEYS: the queue keys, Streams first. ARGV: the number of Streams, then the delayed, registry and
# processing-list suffixes. Answer: a flat list of (1-based key index, queued) for each queue with work.
QUEUED_SCRIPT = """
local streams = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local name = KEYS[i]
  local size
  if i <= streams then size = redis.pcall('XLEN', name) else size = redis.pcall('LLEN', name) end
  if type(size) ~= 'number' then size = 0 end
  local delayed = redis.pcall('ZCARD', name .. ARGV[2])
  if type(delayed) == 'number' then size = size + delayed end
  if i > streams then
    local consumers = redis.pcall('SMEMBERS', name .. ARGV[3])
    if type(consumers) == 'table' and not consumers.err then
      for _, consumer in ipairs(consumers) do
        local held = redis.pcall('LLEN', name .. ARGV[4] .. consumer)
        if type(held) == 'number' then size = size + held end
      end
    end
  end
  if size > 0 then
    out[#out + 1] = i
    out[#out + 1] = size
  end
end
return out
"""


# The layout's keys are the queue's name plus these (the wake tests read the keys through ``QueueKeys``).
_SUFFIXES = [QueueKeys("").delayed, QueueKeys("").consumers, QueueKeys("").processing("")]


def script_arguments(watched: Sequence[Watched]) -> tuple[list[str], list[str], list[int]]:
    """The script's KEYS and ARGV for these pools (Stream keys first, then list keys), and for each key the
    index in ``watched`` of the pool it belongs to."""
    streams = [(at, name) for at, pool in enumerate(watched) if pool.backend == "redis-streams" for name in pool.queues]
    lists = [(at, name) for at, pool in enumerate(watched) if pool.backend != "redis-streams" for name in pool.queues]
    ordered = streams + lists
    return [name for _, name in ordered], [str(len(streams)), *_SUFFIXES], [at for at, _ in ordered]


@dataclass(frozen=True)
class _Layout:
    """One tick's request, built again only when the set of watched pools changes."""

    keys: list[str]
    args: list[str]
    owners: list[tuple[str, str]]  # the pool of each key, in KEYS order

    @classmethod
    def of(cls, pools: dict[tuple[str, str], _Entry]) -> _Layout:
        names = list(pools)
        keys, args, owners = script_arguments([entry.watched for entry in pools.values()])
        return cls(keys, args, [names[at] for at in owners])


@dataclass
class RedisWatch:
    """The sleeping pools on one Redis server, checked together in one round trip per tick."""

    url: str
    password: str | None
    clients: RedisClients = field(default_factory=RedisClients)
    interval: float = WATCH_INTERVAL_SECONDS
    pools: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _layout: _Layout | None = None
    _holding: set[tuple[str, str]] = field(default_factory=set)  # pools whose last total was above 0
    _checked_at: float | None = None  # when the last answered tick was sent: the others were empty then
    _task: asyncio.Task[None] | None = None
    _redis: Any = None
    _script: Any = None

    def watch(self, pool: tuple[str, str], watched: Watched, wake: PoolWake) -> None:
        entry = self.pools.get(pool)
        if entry is None or entry.watched != watched or entry.wake is not wake:
            self.pools[pool] = _Entry(watched, wake)
            self._layout = None
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"swell-wake-watch-{len(self.pools)}")

    def forget(self, pool: tuple[str, str]) -> None:
        if self.pools.pop(pool, None) is not None:
            self._layout = None

    async def check_once(self) -> int:
        """One round trip for every watched pool; returns how many were woken."""
        if self._redis is None:
            self._redis = self.clients.get(self.url, self.password, id(self))
            self._script = self._redis.register_script(QUEUED_SCRIPT)
        if not self.pools:
            return 0
        if self._layout is None:
            self._layout = _Layout.of(self.pools)
        layout = self._layout
        sent_at = time.time()
        answer: list[Any] = await self._script(keys=layout.keys, args=layout.args)
        totals: dict[tuple[str, str], int] = {}
        for at in range(0, len(answer), 2):
            pool = layout.owners[int(answer[at]) - 1]
            totals[pool] = totals.get(pool, 0) + int(answer[at + 1])
        for pool in self._holding - totals.keys():
            entry = self.pools.get(pool)
            if entry is not None:
                entry.seen = 0
        woken = 0
        checked_at = self._checked_at
        for pool, total in totals.items():
            entry = self.pools.get(pool)
            if entry is not None and total != entry.seen:
                known_empty = checked_at is not None and pool not in self._holding and entry.since <= checked_at
                entry.wake.set(checked_at if known_empty else None)
                woken += 1
            if entry is not None:
                entry.seen = total
        self._holding = set(totals)
        self._checked_at = sent_at
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
                self._holding.clear()
                self._checked_at = None
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
