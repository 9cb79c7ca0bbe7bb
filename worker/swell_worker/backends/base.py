"""The queue roles, split by who uses them.

- ``Consumer`` (worker, pull: Redis list, Redis Streams, Pub/Sub pull): the runtime asks it for as many
  deliveries as it has free slots, keeps them alive while it holds them, and settles them.
- ``PushReceiver`` (worker, push: Pub/Sub push): work arrives over HTTP on the routes it serves; the
  runtime settles the deliveries it admits, and the HTTP answer carries the outcome back.
- ``Publisher`` (producers: the client SDK, tests, benches): enqueues a message.

Reading depth for scaling is the operator's job and is not a worker role. Delivery semantics are
at-least-once: a delivery is settled exactly once, by ``ack`` after success, ``nack`` to retry later, or
``dead_letter``. Acks come in batches (the runtime settles what one read brought in with one call); a
queue settles only what its consumer still holds, so a delivery taken over by another consumer is left
to that one. Every capability the runtime uses is part of a role, so nothing is detected at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(slots=True)
class Delivery:
    """One received message, with the queue's handle needed to settle it."""

    body: bytes
    # How many times this message has been delivered, this delivery included (1 on first delivery).
    attempt: int
    # The queue's handle: a stream entry id, the processing list, a Pub/Sub ack id or message id.
    receipt: str = ""
    # The queue (stream, list key, subscription) the message came from, for priority queues.
    source: str = ""
    # False where the queue does not count deliveries (Pub/Sub without a dead-letter policy sends no
    # deliveryAttempt): the runtime then counts them itself, in the task's record, and sets ``attempt``.
    attempt_known: bool = True


class BackendError(RuntimeError):
    """The queue could not be reached or answered with an error; the message is safe to say in status."""


class Settles(Protocol):
    """How the runtime settles a delivery, whichever way it arrived."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries as done, in one call where the queue allows; they will not be delivered again."""
        ...

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """Give a delivery back, to be delivered again after ``delay`` seconds."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a delivery to the dead-letter destination with its reason, then settle it."""
        ...

    async def ping(self) -> None:
        """Raise BackendError unless the queue answers now (readiness)."""
        ...

    async def close(self) -> None: ...


class Consumer(Settles, Protocol):
    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Receive at most ``max_messages``, waiting up to ``timeout`` seconds for the first."""
        ...

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Called every third of the consumer timeout with every delivery the worker holds."""
        ...


# What became of an admitted push: "done" (acked or dead-lettered: answer 2xx), "retry" (given back or
# left for redelivery: answer 5xx and the sender redelivers), "refused" (no free slot: answer 429).
PushOutcome = Literal["done", "retry", "refused"]


class PushAdmission(Protocol):
    """The runtime as a push route sees it."""

    @property
    def draining(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    async def admit(self, delivery: Delivery) -> PushOutcome:
        """Run a pushed delivery to its settlement in a free slot; "refused" at once when none is free."""
        ...


class PushReceiver(Settles, Protocol):
    def routes(self, runtime: PushAdmission) -> Iterable[web.AbstractRouteDef]:
        """The HTTP routes work arrives on, e.g. ``POST /pubsub/push``."""
        ...


class Publisher(Protocol):
    async def publish(self, body: bytes, priority: int = 0) -> None:
        """Enqueue a message."""
        ...

    async def close(self) -> None: ...
