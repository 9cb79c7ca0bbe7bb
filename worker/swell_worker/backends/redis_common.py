"""What the two Redis backends and the result store share: connections, key names, errors, retries.

Settling a delivery is done by small Lua scripts so that "still held by me?" and "move it" happen in
one atomic step: a worker whose tasks were already taken back (it looked dead) can then never requeue
or dead-letter a second copy.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from swell_worker.backends.base import BackendError
from swell_worker.config import redact_url

# Blocking reads wait at most this long, so a stop request is noticed within it.
MAX_BLOCK_SECONDS = 2.0
# Between polls when a blocking read cannot serve several priority queues at once.
POLL_INTERVAL_SECONDS = 0.05


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
        if hiredis_pack_command is None or (isinstance(command, str | bytes) and " " in text(command)):
            return super().pack_command(*args)
        return [hiredis_pack_command(args)]


def open_redis(
    url: str,
    password: str | None = None,
    *,
    socket_timeout: float | None = 10.0,
    max_connections: int = 100,
) -> aioredis.Redis:
    """A client that fails fast (two quick retries), so the runtime's own backoff decides what to do.

    The pool makes callers wait for a free connection instead of failing, which matters for clients
    with many calls blocked on replies at once.
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "health_check_interval": 30,
        "max_connections": max_connections,
        "timeout": None,
    }
    if password and urlsplit(url).password is None:
        options["password"] = password
    if urlsplit(url).scheme == "redis" and hiredis_pack_command is not None:
        options["connection_class"] = HiredisPackingConnection
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, **options))


def describe(url: str) -> str:
    """How errors name a Redis server: its URL without the password."""
    return f"Redis at {redact_url(url)}"


@contextlib.contextmanager
def redis_errors(where: str) -> Iterator[None]:
    """Turn redis-py errors into BackendError with a message that says which server and why."""
    try:
        yield
    except redis.exceptions.AuthenticationError as exc:
        raise BackendError(f"{where} refused the credentials: {exc}") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise BackendError(f"cannot reach {where}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BackendError(f"{where} answered with an error: {exc}") from exc


def queue_for_priority(queues: Sequence[str], priority: int) -> str:
    """Priority 0 goes to the last (lowest) queue; each step up moves one queue towards the first."""
    index = len(queues) - 1 - max(priority, 0)
    return queues[max(index, 0)]


def delayed_member(attempts: int, body: bytes) -> bytes:
    """A delayed-zset member: the attempts so far, a nonce so equal bodies stay distinct, then the body."""
    return f"{attempts}|{uuid.uuid4().hex}|".encode() + body


def dead_letter_record(body: bytes, reason: str, attempts: int, source: str) -> bytes:
    """The JSON kept in a dead-letter list; bodies that are not UTF-8 are kept as base64, losing nothing."""
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    record = {
        "body": text,
        "body_encoding": encoding,
        "reason": reason,
        "attempts": attempts,
        "failed_at": time.time(),
        "source": source,
    }
    return json.dumps(record).encode()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Moves due retries back to their queue. ARGV: now, limit, mode ("list" LPUSHes the body; "stream"
# XADDs it with the attempts so far, which the Streams backend adds to the delivery count).
PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local first = string.find(member, '|', 1, true)
  local second = string.find(member, '|', first + 1, true)
  local body = string.sub(member, second + 1)
  if ARGV[3] == 'stream' then
    redis.call('XADD', KEYS[2], '*', 'body', body, 'attempts', string.sub(member, 1, first - 1))
  else
    redis.call('LPUSH', KEYS[2], body)
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""
