"""What the two Redis backends and the result store share: key names, errors as BackendError, retries.

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
from collections.abc import Sequence

import swell_redis

from swell_worker.backends.base import BackendError

# Blocking reads wait at most this long, so a stop request is noticed within it.
MAX_BLOCK_SECONDS = 2.0
# Between polls when a blocking read cannot serve several priority queues at once.
POLL_INTERVAL_SECONDS = 0.05


def redis_errors(where: str) -> contextlib.AbstractContextManager[None]:
    """redis-py errors as BackendError, saying which server and why."""
    return swell_redis.redis_errors(where, BackendError)


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
