"""Google Pub/Sub: a pull subscription read only as fast as slots free up, or a push endpoint that says 429 when full.

Pull uses synchronous Pull with ``max_messages`` equal to the free slots, rather than streaming pull: a
streaming pull's client keeps leasing messages into a local buffer up to its flow-control limit, so a
worker would hold messages it cannot start while another pod sits idle. Ack after success; a retry sets
the message's ack deadline to the backoff delay (Pub/Sub redelivers it then); a message that can never
succeed is published to the dead-letter topic with ``reason``, ``attempts``, ``failed_at`` attributes and
acked. The attempt number is Pub/Sub's ``delivery_attempt`` where the subscription has a dead-letter
policy (the operator sets one up from the spec); without one Pub/Sub sends none, and the runtime counts
the deliveries of each task in its record (shared by every worker), so an always-failing task still
reaches the dead-letter topic after SWELL_MAX_ATTEMPTS, in pull and push mode alike.

Push (``SWELL_PUBSUB_MODE=push``): Pub/Sub POSTs each message to ``/pubsub/push``. The endpoint checks
the caller (a shared token, or the OIDC token Pub/Sub signs for the push subscription), then asks the
runtime for a free slot: none free means 429 at once, which Pub/Sub answers by backing off and
redelivering. Otherwise the task runs and the answer is its outcome: 204 once acked or dead-lettered,
503 for a retry (Pub/Sub's retry policy then provides the backoff).

Depth is read by the operator (Cloud Monitoring's ``num_undelivered_messages``), not here; see
docs/pubsub.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from swell_contract.push_auth import GoogleIdTokens, PushAuthenticator, PushAuthError

from swell_worker import metrics
from swell_worker.backends.base import BackendError, Delivery, PushAdmission
from swell_worker.config import WorkerConfig

log = logging.getLogger(__name__)

MAX_ACK_DEADLINE = 600  # Pub/Sub's limit, seconds
LEASE_SECONDS = 60


def _client_errors() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions

    return (exceptions.GoogleAPIError,)


class PubSubClients:
    """The publisher and subscriber a worker (or client) needs, sharing one project; calls run in threads."""

    def __init__(
        self, project: str, subscription: str | None, topic: str | None, dead_letter_topic: str | None
    ) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # (untyped beside typed monitoring_v3)

        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.subscription = self.subscriber.subscription_path(project, subscription) if subscription else None
        self.topic = self.publisher.topic_path(project, topic) if topic else None
        self.dead_letter_topic = self.publisher.topic_path(project, dead_letter_topic) if dead_letter_topic else None

    async def call(self, what: str, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except _client_errors() as exc:
            raise BackendError(f"Pub/Sub could not {what}: {exc}") from exc

    async def publish(self, topic: str | None, body: bytes, **attributes: str) -> None:
        if topic is None:
            raise BackendError("no Pub/Sub topic is configured to publish to (SWELL_PUBSUB_TOPIC)")
        future = await self.call("publish", self.publisher.publish, topic, body, **attributes)
        await self.call("publish", future.result, timeout=30)

    def close(self) -> None:
        self.subscriber.close()
        self.publisher.stop()


def dead_letter_attributes(delivery: Delivery, reason: str, subscription: str | None) -> dict[str, str]:
    return {
        "reason": reason[:1024],
        "attempts": str(delivery.attempt),
        "failed_at": f"{time.time():.3f}",
        "source": subscription or "",
    }


class PubSubPublisher:
    """Publishes tasks to the topic (the client SDK's side of Pub/Sub)."""

    def __init__(self, clients: PubSubClients) -> None:
        self._clients = clients

    @classmethod
    def from_config(cls, config: WorkerConfig) -> PubSubPublisher:
        return cls(clients_from(config))

    async def publish(self, body: bytes, priority: int = 0) -> None:
        await self._clients.publish(self._clients.topic, body)

    async def close(self) -> None:
        self._clients.close()


def clients_from(config: WorkerConfig) -> PubSubClients:
    assert config.pubsub_project is not None  # WorkerConfig checks this
    return PubSubClients(
        config.pubsub_project, config.pubsub_subscription, config.pubsub_topic, config.pubsub_dead_letter_topic
    )


class PubSubPullConsumer:
    """Pull mode."""

    def __init__(self, clients: PubSubClients) -> None:
        """Consuming without a subscription is a BackendError."""
        self._clients = clients

    @property
    def _subscription(self) -> str:
        if self._clients.subscription is None:
            raise BackendError("SWELL_PUBSUB_SUBSCRIPTION is required to consume from Pub/Sub")
        return str(self._clients.subscription)

    @classmethod
    def from_config(cls, config: WorkerConfig) -> PubSubPullConsumer:
        return cls(clients_from(config))

    async def ping(self) -> None:
        await self._clients.call(
            "read the subscription",
            self._clients.subscriber.get_subscription,
            request={"subscription": self._subscription},
            timeout=5,
        )

    async def consume(self, max_messages: int, timeout: float) -> list[Delivery]:
        if max_messages <= 0:
            return []
        response = await self._clients.call(
            "pull",
            self._clients.subscriber.pull,
            request={"subscription": self._subscription, "max_messages": max_messages},
            timeout=max(timeout, 1.0),
        )
        return [
            Delivery(
                body=bytes(received.message.data),
                # Without a dead-letter policy Pub/Sub sends no count: the runtime counts in the task record.
                attempt=received.delivery_attempt or 1,
                receipt=received.ack_id,
                source=self._subscription,
                attempt_known=bool(received.delivery_attempt),
            )
            for received in response.received_messages
        ]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        await self._clients.call(
            "ack",
            self._clients.subscriber.acknowledge,
            request={"subscription": self._subscription, "ack_ids": [delivery.receipt for delivery in deliveries]},
        )

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """Redelivery after ``delay`` seconds: the ack deadline becomes the backoff."""
        seconds = int(min(max(delay, 0), MAX_ACK_DEADLINE))
        await self._clients.call(
            "nack",
            self._clients.subscriber.modify_ack_deadline,
            request={
                "subscription": self._subscription,
                "ack_ids": [delivery.receipt],
                "ack_deadline_seconds": seconds,
            },
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await publish_dead_letter(self._clients, delivery, reason, self._subscription)
        await self.ack([delivery])

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Extend the lease of what this worker holds, so long tasks are not redelivered to others."""
        if deliveries:
            await self._clients.call(
                "extend leases",
                self._clients.subscriber.modify_ack_deadline,
                request={
                    "subscription": self._subscription,
                    "ack_ids": [d.receipt for d in deliveries],
                    "ack_deadline_seconds": LEASE_SECONDS,
                },
            )

    async def close(self) -> None:
        self._clients.close()


async def publish_dead_letter(clients: PubSubClients, delivery: Delivery, reason: str, source: str | None) -> None:
    if clients.dead_letter_topic is None:
        raise BackendError("no dead-letter topic is configured (SWELL_PUBSUB_DEAD_LETTER_TOPIC)")
    await clients.publish(clients.dead_letter_topic, delivery.body, **dead_letter_attributes(delivery, reason, source))


# Room in a push body for everything but the task: the envelope's JSON, the message id, publish time,
# subscription name and up to 100 attributes (Pub/Sub's limits: 256-byte keys, 1024-byte values), with
# JSON escaping. Generous on purpose: a task is judged by its own size, against maxPayloadBytes.
PUSH_ENVELOPE_OVERHEAD_BYTES = 1 << 20


def push_body_limit(max_payload_bytes: int) -> int:
    """The largest push body to read: a task one byte over the payload limit, base64-encoded, in its envelope.

    A task just over ``maxPayloadBytes`` is read and dead-lettered by the runtime with its own reason and
    body; only a body beyond this is refused unread (and dead-lettered without its body).
    """
    return 4 * -(-(max_payload_bytes + 1) // 3) + PUSH_ENVELOPE_OVERHEAD_BYTES


class PushedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    data: bytes = b""
    message_id: str = Field(default="", alias="messageId", max_length=256)
    attributes: dict[str, str] = Field(default_factory=dict)
    delivery_attempt: int | None = Field(default=None, alias="deliveryAttempt", ge=1, le=1_000_000)

    @field_validator("data", mode="before")
    @classmethod
    def _base64(cls, value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError("data must be a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data is not base64: {exc}") from None


class PushEnvelope(BaseModel):
    """What Pub/Sub POSTs to a push endpoint; the one parser of it, so every malformation is one error type."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message: PushedMessage
    subscription: str = Field(default="", max_length=1024)
    delivery_attempt: int | None = Field(default=None, alias="deliveryAttempt", ge=1, le=1_000_000)


class MalformedEnvelope(ValueError):
    """A push body that is not a Pub/Sub push envelope; the message says why."""


def parse_push(raw: bytes) -> Delivery:
    """A push request body into a Delivery; MalformedEnvelope says what is wrong with the envelope."""
    try:
        envelope = PushEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise MalformedEnvelope(f"not a Pub/Sub push envelope: {problems}"[:900]) from None
    return Delivery(
        body=envelope.message.data,
        attempt=1,
        receipt=envelope.message.message_id,
        source=envelope.subscription,
        # Pub/Sub's deliveryAttempt (sent only with a dead-letter policy) counts every push, the 429s of a
        # full or waking pool included: the runtime counts the starts in the task's record instead.
        attempt_known=False,
    )


class PubSubPushReceiver:
    """Push mode: messages arrive over HTTP, and the answer settles them (2xx acks, 5xx redelivers)."""

    def __init__(
        self,
        clients: PubSubClients,
        authenticator: PushAuthenticator,
        *,
        tokens: GoogleIdTokens | None = None,
        max_payload_bytes: int = 1_048_576,
    ) -> None:
        """``tokens``: the OIDC verifier the authenticator uses, whose threads this receiver stops on close."""
        self._clients = clients
        self._auth = authenticator
        self._tokens = tokens
        self.body_limit = push_body_limit(max_payload_bytes)
        self._admitting = 0  # pushes past the slot check whose body is being read or judged

    @classmethod
    def from_config(cls, config: WorkerConfig) -> PubSubPushReceiver:
        tokens = GoogleIdTokens(config.oidc_certs_url, timeout=config.oidc_timeout_seconds)
        gate = PushAuthenticator(config.push_token, config.push_audience, config.push_service_account, tokens)
        return cls(clients_from(config), gate, tokens=tokens, max_payload_bytes=config.max_payload_bytes)

    async def ping(self) -> None:
        return None  # Pub/Sub calls us; there is nothing to reach

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None  # the 2xx answer acks

    async def nack(self, delivery: Delivery, delay: float) -> None:
        return None  # the 503 answer makes Pub/Sub redeliver, after its own retry policy's backoff

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await publish_dead_letter(self._clients, delivery, reason, delivery.source)

    async def close(self) -> None:
        if self._tokens is not None:
            self._tokens.close()
        self._clients.close()

    async def _dead_letter_push(self, body: bytes, reason: str, label: metrics.DeadLetterReason) -> web.Response:
        """Dead-letter a push that can never run, and ack it (204): a redelivery would fail the same way."""
        try:
            await self.dead_letter(Delivery(body=body, attempt=1), reason)
        except BackendError as exc:
            log.error("cannot dead-letter a push (%s): %s", reason, exc)
            return web.json_response({"error": f"{reason}; and it cannot be dead-lettered now"}, status=503)
        metrics.TASKS_DEAD_LETTERED.labels(label).inc()
        log.warning("push dead-lettered: %s", reason)
        return web.Response(status=204)

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None once it is over the limit (stops reading there: memory stays bounded)."""
        if request.content_length is not None and request.content_length > self.body_limit:
            return None
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.body_limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _receive(self, request: web.Request) -> Delivery | web.Response:
        """The pushed delivery, or the answer to a push that is refused or dead-lettered here."""
        try:
            await self._auth.check(request.headers.get("Authorization"), request.query.get("token"))
        except PushAuthError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        raw = await self._read_body(request)
        if raw is None:  # left unread, so dead-lettered without its body
            size = request.content_length or f"more than {self.body_limit}"
            reason = (
                f"push body of {size} bytes is over the limit of {self.body_limit} bytes "
                "that SWELL_MAX_PAYLOAD_BYTES allows"
            )
            return await self._dead_letter_push(b"", reason, "oversized")
        try:
            return parse_push(raw)
        except MalformedEnvelope as exc:
            return await self._dead_letter_push(raw, str(exc), "malformed")

    def routes(self, runtime: PushAdmission) -> Iterable[web.AbstractRouteDef]:
        async def push(request: web.Request) -> web.Response:
            # The slot first, then the caller, then the body: while full, a flood costs no crypto and no memory.
            if runtime.draining or runtime.in_flight + self._admitting >= runtime.concurrency:
                metrics.PUSHES_REFUSED.inc()
                return web.json_response({"error": "every slot is busy; retry later"}, status=429)
            self._admitting += 1
            try:
                received = await self._receive(request)
            finally:
                self._admitting -= 1
            if isinstance(received, web.Response):
                return received
            # admit() returns once the delivery is settled; "retry" (503) means Pub/Sub redelivers it.
            outcome = await runtime.admit(received)
            if outcome == "refused":
                return web.json_response({"error": "every slot is busy; retry later"}, status=429)
            return web.Response(status=204 if outcome == "done" else 503)

        return [web.post("/pubsub/push", push)]
