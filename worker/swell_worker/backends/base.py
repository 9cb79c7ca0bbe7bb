"""The one small interface every queue backend implements.

The worker consumes through it and the operator reads depth through it, so a new queue is one new
class, as brokers plug into Dramatiq or arq. Delivery semantics are at-least-once: a delivery is
settled exactly once, by ``ack`` after success, ``nack`` to retry later, or ``dead_letter``. Acks come in
batches (the runtime settles what one read brought in with one call); a backend settles only what its
consumer still holds, so a delivery taken over by another consumer is left to that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from swell_contract.depth import Depth


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
