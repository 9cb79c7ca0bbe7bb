"""The SDK for producers: submit tasks, call them and wait for the reply, read their status.

It goes through the same backend classes the worker consumes with, so a client works for every
queue: with Pub/Sub, ``submit`` publishes to the topic, and replies and status still come from the
result Redis. Status is written as "queued" before the message is published, so a fast worker's
"started" is never overwritten.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from swell_contract.keys import reply_key
from swell_contract.task import Task

from swell_worker.backends import Publisher, make_publisher
from swell_worker.config import BackendKind, WorkerConfig
from swell_worker.results import ResultStore, TaskStatus

T = TypeVar("T")


# The one default of the SDK and the CLI (`swell submit`): Redis Streams, because a consumer group acknowledges
# each task, so a worker that dies mid-task has it redelivered (XAUTOCLAIM), and the operator sees in-flight
# work in the pending list. With a list, a crashed worker's task is only recovered by the worker's own
# processing-list sweep, and producers of other tools (RQ, Celery) already choose lists themselves.
DEFAULT_BACKEND: BackendKind = "redis-streams"


class TaskTimeout(TimeoutError):
    """No reply within the timeout; the task may still run later."""

    def __init__(self, task_id: str, timeout: float, state: str) -> None:
        hint = "; no worker has taken it yet: is a worker running for this queue?" if state == "queued" else ""
        super().__init__(f"task {task_id} got no reply within {timeout:g}s (state: {state}{hint})")
        self.task_id = task_id
        self.timeout = timeout
        self.state = state


class TaskFailed(RuntimeError):
    """The task failed for good (dead-lettered); ``error`` says why."""

    def __init__(self, task_id: str, error: str | None) -> None:
        super().__init__(f"task {task_id} failed: {error}")
        self.task_id = task_id
        self.error = error


class SwellClient:
    def __init__(self, backend: Publisher, results: ResultStore) -> None:
        """The client owns both and closes them in ``close()``."""
        self._backend = backend
        self._results = results

    @classmethod
    def from_config(cls, config: WorkerConfig) -> SwellClient:
        return cls(make_publisher(config), ResultStore.from_config(config, blocking=True))

    @classmethod
    def for_redis(
        cls,
        redis_url: str,
        queues: str | Sequence[str],
        *,
        backend: BackendKind = DEFAULT_BACKEND,
        password: str | None = None,
        group: str = "swell",
    ) -> SwellClient:
        """A client for a Redis queue; ``queues`` is highest priority first, as in SWELL_QUEUE."""
        names = tuple(q.strip() for q in queues.split(",")) if isinstance(queues, str) else tuple(queues)
        config = WorkerConfig(backend=backend, redis_url=redis_url, redis_password=password, queues=names, group=group)
        return cls.from_config(config)

    async def submit(
        self,
        handler: str,
        payload: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        priority: int = 0,
        reply_to: str | None = None,
    ) -> str:
        """Enqueue a task and return its id (the idempotency key: resubmitting an id runs it once)."""
        task = Task(
            id=task_id or uuid.uuid4().hex,
            handler=handler,
            payload=payload or {},
            priority=priority,
            reply_to=reply_to,
        )
        await self._results.mark_queued(task)
        await self._backend.publish(task.encode(), priority)
        return task.id

    async def call(
        self, handler: str, payload: dict[str, Any] | None = None, *, timeout: float = 30.0, priority: int = 0
    ) -> dict[str, Any]:
        """Submit and wait for the result; TaskTimeout when no reply comes, TaskFailed when it failed."""
        task_id = uuid.uuid4().hex
        await self.submit(handler, payload, task_id=task_id, priority=priority, reply_to=reply_key(task_id))
        reply = await self._results.wait_reply(reply_key(task_id), timeout)
        if reply is None:
            raise TaskTimeout(task_id, timeout, (await self.status(task_id)).state)
        if not reply.ok:
            raise TaskFailed(task_id, reply.error)
        return reply.result or {}

    async def status(self, task_id: str) -> TaskStatus:
        return await self._results.status(task_id)

    async def close(self) -> None:
        try:
            await self._backend.close()
        finally:
            await self._results.close()

    async def __aenter__(self) -> SwellClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class SyncSwellClient:
    """The same calls for code that is not async, Jupyter included.

    The async client lives on a private event loop in a thread of its own, so a call works whether or not the
    calling thread already runs a loop (Jupyter's does, and ``run_until_complete`` would refuse there). The
    client is built on that loop too, so nothing it opens is bound to the caller's loop.
    """

    def __init__(self, client: SwellClient | Callable[[], SwellClient]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="swell-sync-client", daemon=True)
        self._thread.start()
        if isinstance(client, SwellClient):
            self._client = client
        else:
            make = client

            async def build() -> SwellClient:
                return make()

            self._client = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @classmethod
    def from_config(cls, config: WorkerConfig) -> SyncSwellClient:
        return cls(lambda: SwellClient.from_config(config))

    @classmethod
    def for_redis(cls, redis_url: str, queues: str | Sequence[str], **options: Any) -> SyncSwellClient:
        return cls(lambda: SwellClient.for_redis(redis_url, queues, **options))

    def submit(self, handler: str, payload: dict[str, Any] | None = None, **options: Any) -> str:
        return self._run(self._client.submit(handler, payload, **options))

    def call(self, handler: str, payload: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        return self._run(self._client.call(handler, payload, **options))

    def status(self, task_id: str) -> TaskStatus:
        return self._run(self._client.status(task_id))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> SyncSwellClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
