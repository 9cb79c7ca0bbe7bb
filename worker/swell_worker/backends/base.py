"""The one small interface every queue backend implements.

The worker consumes through it and the operator reads depth through it, so a new queue is one new
class, as brokers plug into Dramatiq or arq. Delivery semantics are at-least-once: a delivery is
settled exactly once, by ``ack`` after success, ``nack`` to retry later, or ``dead_letter``. Acks come in
batches (the runtime settles what one read brought in with one call); a backend settles only what its
consumer still holds, so a delivery taken over by another consumer is left to that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Delivery:
    """One received message, with the backend's handle needed to settle it."""

    body: bytes
    # How many times this message has been delivered, this delivery included (1 on first delivery).
    attempt: int
    # Backend-specific handle: a stream entry id, the processing-list element, a Pub/Sub ack id.
    receipt: Any = None
    # The queue (stream, list key, subscription) the message came from, for priority queues.
    source: str = ""


@dataclass(frozen=True)
class Depth:
    """What the queue looks like from outside, for scaling."""

    # Messages waiting to be delivered to any worker.
    backlog: int
    # Messages delivered and not yet settled.
    in_flight: int
    # In-flight count per consumer (pod name) where the backend can tell; empty where it cannot.
    per_consumer: dict[str, int] = field(default_factory=dict)
    # Messages settled (acked) so far, a monotonic counter where the backend keeps one; None if unknown.
    completed_total: int | None = None
    # Age in seconds of the oldest waiting message, where known.
    oldest_age_seconds: float | None = None
    # Mean tasks in flight since the previous reading, where the workers report it (Pub/Sub).
    mean_in_flight: float | None = None
    # False where the queue cannot tell what waits: ``backlog`` is then only the work seen waiting.
    backlog_visible: bool = True


class BackendError(RuntimeError):
    """The queue could not be reached or answered with an error; the message is safe to say in status."""


@runtime_checkable
class Backend(Protocol):
    async def depth(self) -> Depth:
        """Read backlog and in-flight counts without consuming anything."""
        ...

    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Receive at most ``max_messages``, waiting up to ``timeout`` seconds for the first."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries as done, in one call where the queue allows; they will not be delivered again."""
        ...

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """Give a delivery back, to be delivered again after ``delay`` seconds."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a delivery to the dead-letter destination with its reason, then settle it."""
        ...

    async def publish(self, body: bytes, priority: int = 0) -> None:
        """Enqueue a message (used by the client SDK and tests)."""
        ...

    async def close(self) -> None: ...
