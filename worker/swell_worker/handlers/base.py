"""The contract between the worker runtime and the work it runs.

A handler turns one task's payload into a JSON-able result. The runtime owns everything around it:
concurrency, retries, timeouts, idempotency, replies. Handlers that share heavy state (one model, one
vector store) get it from the runtime-wide ``Resources`` so that it is loaded once per process.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from swell_contract.task import Task


class PermanentTaskError(Exception):
    """The task can never succeed (bad payload, unknown document); dead-letter it without retrying."""


class Handler(Protocol):
    """``handle`` is either ``async def`` (runs on the event loop, cancelled at the task timeout; it must
    never block) or a plain ``def`` (runs in a thread, so it may block; at the timeout the task is
    retried and the thread keeps its slot until it returns). See execution.py and docs "Writing handlers".
    """

    name: str
    # True for handlers that return at once, with no I/O and no effect but their result: the runtime runs
    # them inline in their batch, without a task, a timeout or a started mark of their own (a repeated
    # delivery may run them again; the commit keeps the first result). Anything else says False.
    fast: bool

    async def startup(self) -> None:
        """Load what the handler needs (a model, a connection) before the worker reports ready."""
        ...

    async def ready(self) -> bool:
        """Whether the handler can take work now (model loaded, store reachable)."""
        ...

    def handle(self, task: Task) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Run the task and return its JSON-able result; raise PermanentTaskError to skip retries."""
        ...

    async def shutdown(self) -> None: ...
