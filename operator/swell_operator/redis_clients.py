"""One Redis client per server (URL and password), shared by every pool's depth reads and the server's wake watch.

A client of its own per pool cost each pool a connection pool, its connections and a copy of redis-py's
reply-callback table (~30 KB a pool, 30 MB at 1000 pools), for reads a sleeping pool makes once a minute.
The shared client is ``connect``'s, with room for ``SHARED_CONNECTIONS`` connections (made as needed) instead
of its two: hundreds of pools reading at start-up on a loaded loop kept two connections so busy that reads
timed out waiting for one. A client is closed when its last user lets it go, so a rotated
Secret or a moved Redis leaves no client behind.
"""

from __future__ import annotations

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

    def get(self, url: str, password: str | None, user: Hashable) -> aioredis.Redis:
        """The server's client, held for ``user`` until ``release``; ValueError for a URL redis-py cannot use."""
        server = (url, password)
        found = self.clients.get(server)
        if found is None:
            found = self.clients[server] = connect(url, password)
            found.connection_pool.max_connections = SHARED_CONNECTIONS
        self.users.setdefault(server, set()).add(user)
        return found

    async def release(self, url: str, password: str | None, user: Hashable) -> None:
        server = (url, password)
        users = self.users.get(server)
        if users is None:
            return
        users.discard(user)
        if not users:
            del self.users[server]
            found = self.clients.pop(server, None)
            if found is not None:
                with contextlib.suppress(Exception):  # a broken connection must not stop the release
                    await found.aclose()

    async def close(self) -> None:
        clients = list(self.clients.values())
        self.clients.clear()
        self.users.clear()
        for found in clients:
            with contextlib.suppress(Exception):
                await found.aclose()
