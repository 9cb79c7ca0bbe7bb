"""Task status, stored results, idempotency markers and request-reply, all in Redis whatever the queue.

The success commit is one Lua script: it writes the result, the ``swell:done:<id>`` marker, the
status and the reply together, and does nothing if the marker already exists. So a task whose
delivery is repeated (a crash after the commit, a redelivered message) commits its result exactly
once, and the worker that finds the marker only acks and re-sends the stored reply. Status updates
also leave a committed task alone, so a late duplicate can never turn "succeeded" back into "started".
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from swell_worker.backends.redis_common import describe, open_redis, redis_errors, text
from swell_worker.config import ConfigError, WorkerConfig
from swell_worker.task import Task

TaskState = Literal["queued", "started", "succeeded", "failed", "unknown"]

# A reply nobody collects (the caller gave up) disappears after this long.
REPLY_TTL_SECONDS = 3600


def status_key(task_id: str) -> str:
    return f"swell:task:{task_id}"


def done_key(task_id: str) -> str:
    return f"swell:done:{task_id}"


def result_key(task_id: str) -> str:
    return f"swell:result:{task_id}"


def reply_key(task_id: str) -> str:
    return f"reply:{task_id}"


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
        fields: dict[str, Any] = {"task_id": self.task_id, "ok": self.ok}
        fields["result" if self.ok else "error"] = self.result if self.ok else self.error
        return json.dumps(fields).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Reply:
        data = json.loads(raw)
        return cls(
            task_id=data["task_id"], ok=bool(data["ok"]), result=data.get("result"), error=data.get("error")
        )


# KEYS: status, done, result, [reply]. ARGV: result JSON, now, ttl, attempt, handler, reply, reply ttl.
COMMIT_SUCCESS = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'succeeded', 'updated_at', ARGV[2], 'attempt', ARGV[4],
           'handler', ARGV[5])
redis.call('HDEL', KEYS[1], 'error')
redis.call('HINCRBY', KEYS[1], 'commits', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #KEYS == 4 then
  redis.call('RPUSH', KEYS[4], ARGV[6])
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
return 1
"""

# KEYS: status, done, [reply]. ARGV: state, now, ttl, error ('' keeps it), attempt ('' keeps it),
# handler, reply, reply ttl. A fresh "queued" without an error clears an old one.
SET_STATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2], 'handler', ARGV[6])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'error', ARGV[4])
elseif ARGV[1] == 'queued' then
  redis.call('HDEL', KEYS[1], 'error')
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'attempt', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #KEYS == 3 then
  redis.call('RPUSH', KEYS[3], ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
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
        self._commit = client.register_script(COMMIT_SUCCESS)
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

    async def mark_started(self, task: Task, attempt: int) -> None:
        await self._update(task.id, "started", task.handler, attempt=attempt)

    async def mark_retrying(self, task: Task, attempt: int, error: str) -> None:
        """Back to "queued", keeping the error, while the retry waits for its backoff."""
        await self._update(task.id, "queued", task.handler, attempt=attempt, error=error)

    async def record_failure(self, task: Task, attempt: int, error: str) -> None:
        """Final failure: status "failed" for a week, and a failed reply if someone waits."""
        reply = Reply(task.id, ok=False, error=error) if task.reply_to else None
        await self._update(
            task.id, "failed", task.handler, attempt=attempt, error=error, reply_to=task.reply_to, reply=reply
        )

    async def commit_success(self, task: Task, attempt: int, result: dict[str, Any]) -> bool:
        """Commit result, marker, status and reply at once; False if the task was already committed."""
        keys = [status_key(task.id), done_key(task.id), result_key(task.id)]
        reply = b""
        if task.reply_to:
            keys.append(task.reply_to)
            reply = Reply(task.id, ok=True, result=result).encode()
        args: list[str | bytes | int | float] = [
            json.dumps(result),
            time.time(),
            self._result_ttl,
            attempt,
            task.handler,
            reply,
            REPLY_TTL_SECONDS,
        ]
        with redis_errors(self._where):
            return bool(await self._commit(keys=keys, args=args))

    async def is_done(self, task_id: str) -> bool:
        with redis_errors(self._where):
            return bool(await self._redis.exists(done_key(task_id)))

    async def resend_reply(self, task: Task) -> None:
        """Answer a caller again for a task committed earlier (its message was delivered twice)."""
        if not task.reply_to:
            return
        with redis_errors(self._where):
            stored = await self._redis.get(result_key(task.id))
            if stored is None:
                return
            reply = Reply(task.id, ok=True, result=json.loads(stored)).encode()
            pipe = self._redis.pipeline(transaction=True)
            pipe.rpush(task.reply_to, reply)
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
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(status_key(task_id))
            pipe.get(result_key(task_id))
            fields, stored = await pipe.execute()
        if not fields:
            return TaskStatus(task_id=task_id, state="unknown")
        values = {text(k): text(v) for k, v in fields.items()}
        state = values.get("state", "unknown")
        return TaskStatus(
            task_id=task_id,
            state=state if state in ("queued", "started", "succeeded", "failed") else "unknown",  # type: ignore[arg-type]
            updated_at=float(values["updated_at"]) if "updated_at" in values else None,
            error=values.get("error"),
            result=json.loads(stored) if stored is not None and state == "succeeded" else None,
            handler=values.get("handler"),
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
        keys = [status_key(task_id), done_key(task_id)]
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
