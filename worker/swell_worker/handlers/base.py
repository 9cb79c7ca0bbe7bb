"""The contract between the worker runtime and the work it runs.

A handler turns one task's payload into a JSON-able result. The runtime owns everything around it:
concurrency, retries, timeouts, idempotency, replies. Handlers that share heavy state (one model, one
vector store) get it from the runtime-wide ``Resources`` so that it is loaded once per process.
"""

from __future__ import annotations

from typing import Any, Protocol

from swell_contract.task import Task


class PermanentTaskError(Exception):
    """The task can never succeed (bad payload, unknown document); dead-letter it without retrying."""


class Handler(Protocol):
    name: str
    # True for handlers that return at once without blocking I/O: the runtime runs them inline in their
    # batch, without a task or a timeout of their own. Anything that waits or computes long says False.
    fast: bool

    async def startup(self) -> None:
        """Load what the handler needs (a model, a connection) before the worker reports ready."""
        ...

    async def ready(self) -> bool:
        """Whether the handler can take work now (model loaded, store reachable)."""
        ...

    async def handle(self, task: Task) -> dict[str, Any]:
        """Run the task and return its JSON-able result; raise PermanentTaskError to skip retries."""
        ...

    async def shutdown(self) -> None: ...
