"""How the runtime calls a handler, so that the task timeout holds whatever the handler does.

- ``inline``: handlers declared ``fast`` are called in their batch, on the event loop, with no timeout
  of their own: they must return at once.
- ``async``: an ``async def handle`` runs on the event loop and is cancelled at the timeout. It must
  not block (no ``time.sleep``, no CPU-bound loop, no blocking client): that would stop the loop, and
  with it every timeout, heartbeat and probe.
- ``thread``: a plain ``def handle`` runs in a thread of its own pool, one thread per slot. A thread
  cannot be cancelled: at the timeout the task is failed and retried, and the thread keeps its slot
  until it returns.

The threads are daemon threads: a handler stuck for good never keeps the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any, Literal

from swell_contract.task import Task

from swell_worker.handlers.base import Handler

HandlerKind = Literal["inline", "async", "thread"]

Job = tuple[Callable[[Task], Any], Task, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def kind_of(handler: Handler) -> HandlerKind:
    """The declared way to call a handler: ``fast`` first, then whether ``handle`` is a coroutine function."""
    if handler.fast:
        return "inline"
    return "async" if inspect.iscoroutinefunction(handler.handle) else "thread"


class HandlerThreads:
    """At most ``size`` daemon threads, started as needed, running blocking handlers' ``handle`` calls.

    The runtime submits a call only for a delivery holding a slot, and a timed-out call keeps its slot
    until its thread returns, so with ``size`` equal to the slots a call never waits for a thread.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[[Task], Any], task: Task) -> asyncio.Future[Any]:
        """Run ``function(task)`` in a thread; the future is resolved on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._size:
                thread = threading.Thread(target=self._work, name=f"swell-handler-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put((function, task, loop, future))
        return future

    def close(self) -> None:
        """Let idle threads end; a thread still in a handler ends with the process (it is a daemon)."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, task, loop, future = job
            try:
                result = function(task)
            except BaseException as exc:  # handed to the loop, which decides what it means
                _resolve(loop, future, None, exc)
            else:
                _resolve(loop, future, result, None)
            with self._lock:
                self._idle += 1


def _resolve(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None
) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    # A closed loop raises RuntimeError: the worker is exiting and nobody waits for this result.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)
