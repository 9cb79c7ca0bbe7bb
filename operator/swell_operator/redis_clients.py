"""One Redis client per server (URL and password), shared by every pool's depth reads and the server's wake watch.

A client of its own per pool cost each pool a connection pool, its connections and a copy of redis-py's
reply-callback table (~30 KB a pool, 30 MB at 1000 pools), for reads a sleeping pool makes every few minutes.
The shared client is ``connect``'s, with room for ``SHARED_CONNECTIONS`` connections (made as needed) instead
of its two, and the pools' reads take turns at a semaphore of that size (``turn``) before they ask the pool
for a connection. At 1000 pools starting at once on a loaded machine, reads queued in redis-py's blocking
pool gave up after its 5 s wait ("No connection available") and left a third of the pools Degraded. A read
waiting for its turn has no deadline of its own; each read in turn is bounded by the socket timeout.
A client is closed when its last user lets it go, so a rotated Secret or a moved Redis leaves no client behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from swell_operator.depth_sources.redis_base import connect

Server = tuple[str, str | None]
SHARED_CONNECTIONS = 8


@dataclass
class RedisClients:
    clients: dict[Server, aioredis.Redis] = field(default_factory=dict)
    users: dict[Server, set[Hashable]] = field(default_factory=dict)
    turns: dict[Server, asyncio.Semaphore] = field(default_factory=dict)

    def get(self, url: str, password: str | None, user: Hashable) -> aioredis.Redis:
        """The server's client, held for ``user`` until ``release``; ValueError for a URL redis-py cannot use."""
        server = (url, password)
        found = self.clients.get(server)
        if found is None:
            # The turns below keep the pools' reads to SHARED_CONNECTIONS; the rest is for the wake watch.
            found = self.clients[server] = connect(url, password, max_connections=SHARED_CONNECTIONS + 2)
            self.turns[server] = asyncio.Semaphore(SHARED_CONNECTIONS)
        self.users.setdefault(server, set()).add(user)
        return found

    def turn(self, url: str, password: str | None) -> asyncio.Semaphore:
        """Held by a pool's read while it uses the server's client (one of ``SHARED_CONNECTIONS`` at a time)."""
        return self.turns[(url, password)]

    async def release(self, url: str, password: str | None, user: Hashable) -> None:
        server = (url, password)
        users = self.users.get(server)
        if users is None:
            return
        users.discard(user)
        if not users:
            del self.users[server]
            self.turns.pop(server, None)
            found = self.clients.pop(server, None)
            if found is not None:
                with contextlib.suppress(Exception):  # a broken connection must not stop the release
                    await found.aclose()

    async def close(self) -> None:
        clients = list(self.clients.values())
        self.clients.clear()
        self.users.clear()
        self.turns.clear()
        for found in clients:
            with contextlib.suppress(Exception):
                await found.aclose()
