"""The Redis client every part of Swell opens, and how its errors read.

The operator's depth sources, the worker's consumers and result store, and the client SDK all talk to
the same Redis servers. They share one way to connect (fail fast, so each caller's own backoff decides
what to do next) and one way to turn redis-py's errors into messages that name the server without its
password. It lives beside ``swell_contract`` because both the operator and the worker import it, and
neither may import the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from swell_contract.settings import redact_url

hiredis_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as hiredis_pack_command
except ImportError:  # hiredis is optional: redis-py packs in Python then
    hiredis_pack_command = None


class HiredisPackingConnection(Connection):
    """A TCP connection that packs commands with hiredis's C packer.

    redis-py parses replies with hiredis when it is installed, but its asyncio connection still packs
    every command in Python, re-joining the buffer once per argument; a batch script with a few hundred
    arguments then costs more to pack than to run. The bytes on the wire are the same.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        command = args[0]
        spaced = (isinstance(command, bytes) and b" " in command) or (isinstance(command, str) and " " in command)
        if hiredis_pack_command is None or spaced:
            return super().pack_command(*args)
        return [hiredis_pack_command(args)]


def open_redis(
    url: str,
    password: str | None = None,
    *,
    socket_timeout: float | None = 10.0,
    max_connections: int = 100,
    pool_wait_seconds: float | None = None,
) -> aioredis.Redis:
    """A client that fails fast (two quick retries), so the caller's own backoff decides what to do.

    A caller that finds every connection busy waits for one (at most ``pool_wait_seconds``, or for ever
    with None) instead of failing, which matters for clients with many calls blocked on replies at once.
    ``password`` is used only when the URL carries none. Raises ValueError for a URL redis-py cannot use.
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "health_check_interval": 30,
        "max_connections": max_connections,
        "timeout": pool_wait_seconds,
    }
    if password and urlsplit(url).password is None:
        options["password"] = password
    if urlsplit(url).scheme == "redis" and hiredis_pack_command is not None:
        options["connection_class"] = HiredisPackingConnection
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, **options))


def describe(url: str) -> str:
    """How messages name a Redis server: its URL without the password."""
    return f"Redis at {redact_url(url)}"


@contextlib.contextmanager
def redis_errors(where: str, error: Callable[[str], Exception]) -> Iterator[None]:
    """redis-py errors raised as ``error(message)``, the message saying which server and why."""
    try:
        yield
    except redis.exceptions.AuthenticationError as exc:
        raise error(f"{where} refused the credentials: {exc}") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise error(f"cannot reach {where}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise error(f"{where} answered with an error: {exc}") from exc
