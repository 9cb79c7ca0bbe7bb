"""Task status, stored results, idempotency and request-reply, all in Redis whatever the queue.

One hash per task, ``swell:task:<id>`` with a TTL, holds its state, attempt, error, result and commit
count: one key to read for status, one to write per settlement step. The worker writes it in batches:
one script marks a whole read batch started and answers, per task, whether it was committed already
(the idempotency check, folded in); one script commits a batch of results with their replies. A
committed task ("succeeded") is never written again, so a repeated delivery commits once, and the
worker that finds it committed only acks and re-sends the stored reply. Where the queue does not count
deliveries (Pub/Sub without a dead-letter policy), the hash's ``attempt`` counts them, one per start.
Results are encoded once (orjson) and the reply embeds those bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
import redis.asyncio as aioredis
from swell_contract.keys import status_key
from swell_contract.task import Task
from swell_redis import describe, open_redis

from swell_worker.backends.redis_common import redis_errors, text
from swell_worker.config import ConfigError, WorkerConfig

TaskState = Literal["queued", "started", "succeeded", "failed", "unknown"]

# A reply nobody collects (the caller gave up) disappears after this long.
REPLY_TTL_SECONDS = 3600
# Results as json.dumps would accept them: non-string keys become strings, numpy arrays become lists.
RESULT_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def encode_result(result: Any) -> bytes:
    """The stored JSON of a handler's result; TypeError when it is not JSON-able."""
    try:
        return orjson.dumps(result, option=RESULT_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from exc


def success_reply(task_id: str, result_json: bytes) -> bytes:
    """A success reply around a result already encoded, so a result is encoded once."""
    return b'{"task_id":' + orjson.dumps(task_id) + b',"ok":true,"result":' + result_json + b"}"


@dataclass(frozen=True)
class TaskStatus:
    task_id: str
    # "unknown": never submitted through Swell, or its status has expired.
    state: TaskState
    updated_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    handler: str | None = None
    # Deliveries so far (1 on the first).
    attempt: int | None = None
    # How many times a success was committed; more than 1 would mean the effect ran twice.
    commits: int = 0


@dataclass(frozen=True)
class Reply:
    task_id: str
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None

    def encode(self) -> bytes:
        if self.ok:
            return success_reply(self.task_id, encode_result(self.result))
        return orjson.dumps({"task_id": self.task_id, "ok": False, "error": self.error})

    @classmethod
    def decode(cls, raw: bytes) -> Reply:
        data = orjson.loads(raw)
        return cls(task_id=data["task_id"], ok=bool(data["ok"]), result=data.get("result"), error=data.get("error"))


@dataclass(frozen=True)
class Success:
    """A handler's success, ready to commit: its result already encoded."""

    task: Task
    result_json: bytes


class TaskRecords(Protocol):
    """What the runtime writes about tasks; ``ResultStore`` on Redis, or an in-memory one in unit tests."""

    async def ping(self) -> None: ...

    async def start(self, started: Sequence[tuple[Task, int | None]]) -> list[int]: ...

    async def commit(self, successes: Sequence[Success]) -> list[bool]: ...

    async def mark_retrying(self, task: Task, attempt: int, error: str) -> None: ...

    async def record_failure(self, task: Task, attempt: int, error: str) -> None: ...

    async def resend_reply(self, task: Task) -> None: ...


# KEYS: one status hash per task. ARGV: now, ttl, then (attempt, handler) per task; an empty attempt
# means the queue does not count deliveries, and the record counts them instead (one more per start).
# Returns per task 0 if it was committed already (nothing written), else its attempt after marking it
# started.
START_BATCH = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'state') == 'succeeded' then
    out[i] = 0
  else
    local attempt = ARGV[2 * i + 1]
    if attempt == '' then
      attempt = redis.call('HINCRBY', key, 'attempt', 1)
    end
    redis.call('HSET', key, 'attempt', attempt, 'state', 'started', 'updated_at', ARGV[1], 'handler', ARGV[2 * i + 2])
    redis.call('EXPIRE', key, ARGV[2])
    out[i] = tonumber(attempt)
  end
end
return out
"""

# KEYS: (status hash, reply list) per task; a reply key equal to the status key means nobody waits.
# ARGV: now, ttl, reply ttl, then each task's result JSON. The attempt and handler were written when
# the task was marked started; the reply is built here around the result, so it crosses the wire once.
# Returns per task 1 if committed now, 0 if it was committed before (nothing written).
COMMIT_BATCH = """
local prefix = #'swell:task:'
local out = {}
for n = 1, #KEYS / 2 do
  local key, reply = KEYS[2 * n - 1], KEYS[2 * n]
  local result = ARGV[n + 3]
  local record = redis.call('HMGET', key, 'state', 'error', 'commits')
  if record[1] == 'succeeded' then
    out[n] = 0
  else
    redis.call('HSET', key, 'state', 'succeeded', 'updated_at', ARGV[1], 'result', result,
               'commits', (tonumber(record[3]) or 0) + 1)
    if record[2] then redis.call('HDEL', key, 'error') end
    redis.call('EXPIRE', key, ARGV[2])
    if reply ~= key then
      local id = cjson.encode(string.sub(key, prefix + 1))
      redis.call('RPUSH', reply, '{"task_id":' .. id .. ',"ok":true,"result":' .. result .. '}')
      redis.call('EXPIRE', reply, ARGV[3])
    end
    out[n] = 1
  end
end
return out
"""

# KEYS: status, [reply]. ARGV: state, now, ttl, error ('' keeps it), attempt ('' keeps it),
# handler, reply, reply ttl. A fresh "queued" without an error clears an old one.
SET_STATE = """
if redis.call('HGET', KEYS[1], 'state') == 'succeeded' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2], 'handler', ARGV[6])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'error', ARGV[4])
elseif ARGV[1] == 'queued' then
  redis.call('HDEL', KEYS[1], 'error')
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'attempt', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #KEYS == 2 then
  redis.call('RPUSH', KEYS[2], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
end
return 1
"""


class ResultStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        where: str = "Redis",
        result_ttl: int = 86_400,
        failure_ttl: int = 604_800,
    ) -> None:
        """``client`` is owned by the store from now on: ``close()`` closes it."""
        self._redis = client
        self._where = where
        self._result_ttl = result_ttl
        self._failure_ttl = failure_ttl
        self._start = client.register_script(START_BATCH)
        self._commit = client.register_script(COMMIT_BATCH)
        self._set_state = client.register_script(SET_STATE)

    @classmethod
    def from_config(cls, config: WorkerConfig, *, blocking: bool = False) -> ResultStore:
        """``blocking`` clients wait on replies, so their socket has no timeout of its own."""
        url = config.result_redis
        if url is None:
            raise ConfigError(
                "SWELL_RESULT_REDIS_URL (or SWELL_REDIS_URL) is required: "
                "task status, results and idempotency markers live in Redis"
            )
        client = open_redis(url, config.redis_password, socket_timeout=None if blocking else 10.0)
        return cls(
            client,
            where=describe(url),
            result_ttl=config.result_ttl_seconds,
            failure_ttl=config.failure_ttl_seconds,
        )

    async def ping(self) -> None:
        with redis_errors(self._where):
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    async def mark_queued(self, task: Task) -> None:
        await self._update(task.id, "queued", task.handler)

    async def start(self, started: Sequence[tuple[Task, int | None]]) -> list[int]:
        """Mark each (task, attempt) started in one call.

        Answers per task 0 when it was committed before (skip it), else its attempt: the one given, or,
        for None (a queue that does not count deliveries), the record's own count of its deliveries.
        """
        if not started:
            return []
        args: list[str | bytes | int | float] = [time.time(), self._failure_ttl]
        for task, attempt in started:
            args += ["" if attempt is None else attempt, task.handler]
        with redis_errors(self._where):
            answer = await self._start(keys=[status_key(task.id) for task, _ in started], args=args)
        return [int(attempt) for attempt in answer]

    async def commit(self, successes: Sequence[Success]) -> list[bool]:
        """Commit results, status and replies in one call; False for each task committed before."""
        if not successes:
            return []
        keys: list[str] = []
        args: list[str | bytes | int | float] = [time.time(), self._result_ttl, REPLY_TTL_SECONDS]
        for success in successes:
            key = status_key(success.task.id)
            keys += [key, success.task.reply_to or key]
            args.append(success.result_json)
        with redis_errors(self._where):
            answer = await self._commit(keys=keys, args=args)
        return [bool(committed) for committed in answer]

    async def mark_retrying(self, task: Task, attempt: int, error: str) -> None:
        """Back to "queued", keeping the error, while the retry waits for its backoff."""
        await self._update(task.id, "queued", task.handler, attempt=attempt, error=error)

    async def record_failure(self, task: Task, attempt: int, error: str) -> None:
        """Final failure: status "failed" for a week, and a failed reply if someone waits."""
        reply = Reply(task.id, ok=False, error=error) if task.reply_to else None
        await self._update(
            task.id, "failed", task.handler, attempt=attempt, error=error, reply_to=task.reply_to, reply=reply
        )

    async def resend_reply(self, task: Task) -> None:
        """Answer a caller again for a task committed earlier (its message was delivered twice)."""
        if not task.reply_to:
            return
        with redis_errors(self._where):
            stored = await self._redis.hget(status_key(task.id), "result")
            if stored is None:
                return
            pipe = self._redis.pipeline(transaction=True)
            pipe.rpush(task.reply_to, success_reply(task.id, stored if isinstance(stored, bytes) else stored.encode()))
            pipe.expire(task.reply_to, REPLY_TTL_SECONDS)
            await pipe.execute()

    async def wait_reply(self, key: str, timeout: float) -> Reply | None:
        """Block up to ``timeout`` seconds for the reply pushed to ``key``."""
        with redis_errors(self._where):
            async with asyncio.timeout(timeout + 10):
                answer = await self._redis.brpop([key], timeout=max(timeout, 0.01))
        if answer is None:
            return None
        return Reply.decode(answer[1])  # type: ignore[arg-type]  # bytes: the client does not decode

    async def status(self, task_id: str) -> TaskStatus:
        with redis_errors(self._where):
            fields = await self._redis.hgetall(status_key(task_id))
        if not fields:
            return TaskStatus(task_id=task_id, state="unknown")
        values = {text(k): v for k, v in fields.items()}
        state = text(values.get("state", b"unknown"))
        stored = values.get("result")
        return TaskStatus(
            task_id=task_id,
            state=state if state in ("queued", "started", "succeeded", "failed") else "unknown",  # type: ignore[arg-type]
            updated_at=float(values["updated_at"]) if "updated_at" in values else None,
            error=text(values["error"]) if "error" in values else None,
            result=orjson.loads(stored) if stored is not None and state == "succeeded" else None,
            handler=text(values["handler"]) if "handler" in values else None,
            attempt=int(values["attempt"]) if "attempt" in values else None,
            commits=int(values.get("commits", 0)),
        )

    async def _update(
        self,
        task_id: str,
        state: TaskState,
        handler: str,
        *,
        attempt: int | None = None,
        error: str | None = None,
        reply_to: str | None = None,
        reply: Reply | None = None,
    ) -> None:
        keys = [status_key(task_id)]
        if reply_to and reply is not None:
            keys.append(reply_to)
        args: list[str | bytes | int | float] = [
            state,
            time.time(),
            self._failure_ttl,
            error or "",
            "" if attempt is None else attempt,
            handler,
            reply.encode() if reply else b"",
            REPLY_TTL_SECONDS,
        ]
        with redis_errors(self._where):
            await self._set_state(keys=keys, args=args)
