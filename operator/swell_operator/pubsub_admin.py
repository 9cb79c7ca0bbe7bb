"""The operator's control-plane client for one Pub/Sub pool: peek, push endpoint, dead-letter policy, backlog.

Each pool gets its own clients, built on an explicit gRPC transport, because one operator serves pools in
different projects, with different credentials and (locally) different emulators: the process-wide
``PUBSUB_EMULATOR_HOST`` that Google's client libraries read would send every pool to the same place, so it
is never consulted here. Google's clients block, so every call runs in a thread. Every error becomes a
``PubSubAdminError`` whose message names the resource and never a credential, because the scaler copies
it into the WorkerPool's status and into Events.

The backlog comes from Cloud Monitoring (``subscription/num_undelivered_messages`` and
``oldest_unacked_message_age``), the only place Pub/Sub reports it: sampled every 60 s and visible minutes
later, so it is the slow signal beside the workers' own figures, and there is none for an emulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as gexc
from google.auth import credentials as gcredentials
from google.auth import exceptions as auth_exceptions
from google.cloud.monitoring_v3 import ListTimeSeriesRequest, MetricServiceClient, TimeInterval
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import DeadLetterPolicy, PushConfig, Subscription
from kubernetes_asyncio import client

from swell_operator.model import PubSubQueue
from swell_operator.secrets import SecretError, read_secret_key

log = logging.getLogger(__name__)

T = TypeVar("T")

PEEK_TIMEOUT_SECONDS = 3.0  # an empty Pull waits for messages until about its deadline
CALL_TIMEOUT_SECONDS = 15.0
SCOPES = ("https://www.googleapis.com/auth/pubsub", "https://www.googleapis.com/auth/monitoring.read")
UNDELIVERED = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_UNACKED_AGE = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
# How far back to look for the newest point: Monitoring shows a point up to a few minutes after its sample.
BACKLOG_LOOKBACK_SECONDS = 600
# What Pub/Sub allows for a dead-letter policy's maxDeliveryAttempts.
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100


# Pushes a bundled worker may refuse (429: all slots busy, or the pool waking from zero) on top of its
# maxAttempts: Pub/Sub counts those as deliveries, the worker counts only the starts.
REFUSED_PUSHES_ALLOWED = 20


def delivery_attempts(queue_attempts: int, explicit: bool, pool_attempts: int | None) -> int:
    """Pub/Sub deliveries before dead-letter: the queue's own setting where the spec gives one, else the pool's
    ``maxAttempts`` (retries + 1) plus room for refused pushes, clamped to what Pub/Sub allows. The worker
    dead-letters a failing task itself after ``maxAttempts``; this is the backstop for one never accepted."""
    if explicit or pool_attempts is None:
        return queue_attempts
    return min(MAX_DELIVERY_ATTEMPTS, max(MIN_DELIVERY_ATTEMPTS, pool_attempts + REFUSED_PUSHES_ALLOWED))


@dataclass(frozen=True)
class MonitoredBacklog:
    """A subscription's backlog as Cloud Monitoring last sampled it."""

    messages: int
    oldest_age_seconds: float | None
    sampled_at: float  # unix seconds of the sample


class PubSubAdminError(RuntimeError):
    """A Pub/Sub call or its setup failed; the message is safe for status and Events (never a credential)."""


def _safe_error(exc: Exception, what: str, resource: str) -> PubSubAdminError:
    """Only the status code, our own words and the server's short text: none of these can carry a credential."""
    if isinstance(exc, gexc.NotFound):
        return PubSubAdminError(f"Pub/Sub {resource} does not exist")
    if isinstance(exc, gexc.PermissionDenied):
        return PubSubAdminError(f"the operator may not {what} Pub/Sub {resource} (permission denied)")
    if isinstance(exc, gexc.Unauthenticated):
        return PubSubAdminError(f"Pub/Sub refused the operator's credentials when asked to {what} {resource}")
    if isinstance(exc, gexc.GoogleAPICallError):
        detail = f"{type(exc).__name__}: {exc.message}"[:200]
        return PubSubAdminError(f"Pub/Sub could not {what} {resource}: {detail}")
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return PubSubAdminError(f"Google credentials failed when asked to {what} {resource}: {type(exc).__name__}")
    return PubSubAdminError(f"Pub/Sub could not {what} {resource}: {type(exc).__name__}")


async def _credentials(api: client.ApiClient, namespace: str, queue: PubSubQueue) -> gcredentials.Credentials:
    """A referenced Secret wins over Application Default Credentials (Workload Identity in a cluster)."""
    if queue.credentials_secret_ref is None:
        import google.auth

        try:  # may ask the metadata server, hence the thread
            found, _ = await asyncio.to_thread(google.auth.default, scopes=SCOPES)
        except auth_exceptions.GoogleAuthError:
            raise PubSubAdminError(
                "no Google credentials: set credentialsSecretRef or configure Workload "
                "Identity (Application Default Credentials were not found)"
            ) from None
        adc: gcredentials.Credentials = found
        return adc
    from google.oauth2 import service_account

    ref = queue.credentials_secret_ref
    try:
        text = await read_secret_key(api, namespace, ref)
    except SecretError as exc:
        raise PubSubAdminError(str(exc)) from None
    try:  # the exception texts could quote the key, so none of them is passed on
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        from_info = service_account.Credentials.from_service_account_info
        sa: gcredentials.Credentials = from_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError, auth_exceptions.GoogleAuthError):
        raise PubSubAdminError(
            f"Secret {namespace}/{ref.name} key {ref.key!r} is not a service-account JSON key"
        ) from None
    return sa


class PubSubAdmin:
    """One pool's subscription as the operator sees it. Build with ``open``; ``close`` when the pool goes."""

    def __init__(
        self,
        queue: PubSubQueue,
        subscriber: SubscriberClient,
        publisher: PublisherClient,
        monitoring: MetricServiceClient | None = None,
    ) -> None:
        self.queue = queue
        self._subscriber = subscriber
        self._publisher = publisher
        self._monitoring = monitoring

    @property
    def subscription(self) -> str:
        return SubscriberClient.subscription_path(self.queue.project, self.queue.subscription)

    @classmethod
    async def open(cls, api: client.ApiClient, namespace: str, queue: PubSubQueue) -> PubSubAdmin:
        """Reads the Secret only when one is referenced and no emulator is set: an emulator takes anything."""
        monitoring = None
        if queue.emulator_host:
            host = queue.emulator_host
            anonymous = gcredentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
            subscriber_transport = SubscriberGrpcTransport(
                host=host, credentials=anonymous, channel=grpc.insecure_channel(host)
            )
            publisher_transport = PublisherGrpcTransport(
                host=host, credentials=anonymous, channel=grpc.insecure_channel(host)
            )
        else:
            found = await _credentials(api, namespace, queue)
            subscriber_transport = SubscriberGrpcTransport(credentials=found, always_use_jwt_access=True)
            publisher_transport = PublisherGrpcTransport(credentials=found, always_use_jwt_access=True)
            monitoring = MetricServiceClient(credentials=found)
        # A transport instance also stops the clients from reading PUBSUB_EMULATOR_HOST.
        return cls(
            queue,
            SubscriberClient(transport=subscriber_transport),
            PublisherClient(transport=publisher_transport),
            monitoring,
        )

    async def _call(self, what: str, resource: str, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise _safe_error(exc, what, resource) from None

    async def _get_subscription(self) -> Subscription:
        return await self._call(
            "read",
            f"subscription {self.subscription}",
            self._subscriber.get_subscription,
            subscription=self.subscription,
            timeout=CALL_TIMEOUT_SECONDS,
        )

    async def peek(self, timeout: float = PEEK_TIMEOUT_SECONDS) -> bool:
        """Whether a message waits: Pub/Sub has no cheap backlog count (Cloud Monitoring is minutes late).

        The message is released at once (ack deadline 0), so a worker can pull it immediately. Cost: that
        counts as a delivery attempt. Where the subscription has a dead-letter policy, every peek that finds
        the message brings it one step closer to the dead-letter topic (with the minimum of 5 attempts, five
        peeks while no worker takes it dead-letter it), so peek only until the pool is waking, not on every
        poll. A real Pull can also answer empty while messages exist; a False is "probably empty".
        """
        resource = f"subscription {self.subscription}"
        try:
            # One attempt: retrying UNAVAILABLE until the deadline could end in DEADLINE_EXCEEDED, which here
            # means "empty", so an unreachable server would look like an idle one.
            response = await asyncio.to_thread(
                self._subscriber.pull,
                request={"subscription": self.subscription, "max_messages": 1},
                retry=None,
                timeout=timeout,
            )
        except gexc.DeadlineExceeded:
            return False  # a Pull waits for messages; none came
        except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise _safe_error(exc, "pull from", resource) from None
        ack_ids = [received.ack_id for received in response.received_messages]
        if not ack_ids:
            return False
        try:
            await self._call(
                "release a peeked message on",
                resource,
                self._subscriber.modify_ack_deadline,
                subscription=self.subscription,
                ack_ids=ack_ids,
                ack_deadline_seconds=0,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except PubSubAdminError as exc:
            # The message exists either way; it only comes back after the subscription's ack deadline.
            log.warning("%s; the message is redelivered after the ack deadline", exc)
        return True

    async def push_endpoint(self) -> str | None:
        """None for a pull subscription."""
        endpoint = (await self._get_subscription()).push_config.push_endpoint
        return endpoint or None

    async def set_push_endpoint(self, url: str) -> None:
        """Changes only the URL: the OIDC token settings and attributes someone configured stay. An empty URL
        turns the subscription into a pull subscription (Pub/Sub drops the rest of the push config then)."""
        current = (await self._get_subscription()).push_config
        if current.push_endpoint == url:
            return
        config = PushConfig()
        if url:
            PushConfig.copy_from(config, current)
            config.push_endpoint = url
        await self._call(
            "change the push endpoint of",
            f"subscription {self.subscription}",
            self._subscriber.modify_push_config,
            subscription=self.subscription,
            push_config=config,
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def _dead_letter_topic_path(self, topic: str) -> str:
        """A bare id lives in the pool's project; a full ``projects/*/topics/*`` path may point elsewhere."""
        return topic if topic.startswith("projects/") else PublisherClient.topic_path(self.queue.project, topic)

    async def dead_letter_status(self, attempts: int | None = None) -> dict[str, Any]:
        """Makes the subscription's dead-letter policy match the pool and says what was found, for
        ``status.deadLetter``. ``attempts``: the pool's deliveries before dead-letter (default: the queue's).

        A push subscription always gets a policy: without one Pub/Sub sends no ``deliveryAttempt``, and a
        task that always fails would be pushed forever. Where the spec names no topic, the operator uses (and
        creates) ``<subscription>-dead-letter`` in the pool's project. A topic the spec names is reported
        when missing, not created: who owns it (retention, IAM, its own subscribers) is not the operator's
        decision. A pull subscription's policy is left alone when the spec names no topic, since someone else
        set it."""
        subscription = await self._get_subscription()
        current = subscription.dead_letter_policy
        wanted_attempts = self.queue.max_delivery_attempts if attempts is None else attempts
        topic_id = self.queue.dead_letter_topic_in_use()
        ours = topic_id is not None and not self.queue.dead_letter_topic
        if not topic_id:
            message = "no deadLetterTopic in the spec"
            if current.dead_letter_topic:
                message += (
                    f"; the subscription's own policy sends messages to {current.dead_letter_topic} "
                    f"after {current.max_delivery_attempts} deliveries"
                )
            return {
                "topic": None,
                "topicExists": None,
                "maxDeliveryAttempts": None,
                "policy": "not configured",
                "message": message,
            }
        topic = self._dead_letter_topic_path(topic_id)
        status: dict[str, Any] = {"topic": topic, "topicExists": True, "maxDeliveryAttempts": wanted_attempts}
        try:
            await asyncio.to_thread(self._publisher.get_topic, topic=topic, timeout=CALL_TIMEOUT_SECONDS)
        except gexc.NotFound:
            if ours:
                created = await self._create_topic(topic, status)
                if created is not None:
                    return created
            else:
                return {
                    **status,
                    "topicExists": False,
                    "policy": "not set",
                    "message": f"dead-letter topic {topic} does not exist; create it (Swell does not)",
                }
        except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise _safe_error(exc, "read", f"topic {topic}") from None
        if current.dead_letter_topic == topic and current.max_delivery_attempts == wanted_attempts:
            return {
                **status,
                "policy": "already set",
                "message": f"messages go to {topic} after {wanted_attempts} delivery attempts",
            }
        wanted = DeadLetterPolicy(dead_letter_topic=topic, max_delivery_attempts=wanted_attempts)
        try:
            updated = await asyncio.to_thread(
                self._subscriber.update_subscription,
                request={
                    "subscription": {"name": self.subscription, "dead_letter_policy": wanted},
                    "update_mask": {"paths": ["dead_letter_policy"]},
                },
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except gexc.MethodNotImplemented:
            return {
                **status,
                "policy": "unsupported",
                "message": "this Pub/Sub server does not implement dead-letter policies",
            }
        except gexc.PermissionDenied:
            return {
                **status,
                "policy": "not set",
                "message": f"the operator may not set the dead-letter policy of {self.subscription} (permission "
                "denied): a task that always fails is retried until the worker counts its attempts itself",
            }
        except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise _safe_error(exc, "set the dead-letter policy of", f"subscription {self.subscription}") from None
        kept = updated.dead_letter_policy
        if kept.dead_letter_topic != topic or kept.max_delivery_attempts != wanted_attempts:
            return {
                **status,
                "policy": "unsupported",
                "message": "this Pub/Sub server accepted the dead-letter policy but did not keep it",
            }
        return {
            **status,
            "policy": "set",
            "message": f"messages go to {topic} after {wanted_attempts} delivery attempts, once Pub/Sub's "
            "service agent may publish to the topic and subscribe to the subscription",
        }

    async def _create_topic(self, topic: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Creates the operator's own dead-letter topic; a status saying why not, or None once it exists."""
        try:
            await asyncio.to_thread(self._publisher.create_topic, name=topic, timeout=CALL_TIMEOUT_SECONDS)
        except gexc.AlreadyExists:
            return None
        except gexc.PermissionDenied:
            return {
                **status,
                "topicExists": False,
                "policy": "not set",
                "message": f"the operator may not create dead-letter topic {topic} (permission denied): create "
                "it, or name an existing one in spec.queue.pubsub.deadLetterTopic",
            }
        except (gexc.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            raise _safe_error(exc, "create", f"topic {topic}") from None
        log.info("created dead-letter topic %s", topic)
        return None

    async def monitored_backlog(self) -> MonitoredBacklog | None:
        """The newest Cloud Monitoring sample of the backlog; None without Monitoring or without a recent point."""
        if self._monitoring is None:
            return None
        monitoring = self._monitoring
        now = time.time()
        interval = TimeInterval(
            start_time={"seconds": int(now - BACKLOG_LOOKBACK_SECONDS)}, end_time={"seconds": int(now) + 1}
        )

        def newest(metric: str) -> tuple[float, int] | None:
            request = ListTimeSeriesRequest(
                name=f"projects/{self.queue.project}",
                filter=f'metric.type = "{metric}" AND resource.type = "pubsub_subscription" '
                f'AND resource.labels.subscription_id = "{self.queue.subscription}"',
                interval=interval,
                view=ListTimeSeriesRequest.TimeSeriesView.FULL,
            )
            points = [
                (point.interval.end_time.timestamp(), int(point.value.int64_value))
                for series in monitoring.list_time_series(request=request, timeout=CALL_TIMEOUT_SECONDS)
                for point in series.points
            ]
            return max(points) if points else None

        resource = f"the backlog of subscription {self.subscription} from Cloud Monitoring"
        undelivered = await self._call("read", resource, newest, UNDELIVERED)
        if undelivered is None:
            return None
        age = await self._call("read", resource, newest, OLDEST_UNACKED_AGE)
        return MonitoredBacklog(
            messages=undelivered[1],
            oldest_age_seconds=None if age is None else float(age[1]),
            sampled_at=undelivered[0],
        )

    async def close(self) -> None:
        for transport in (self._subscriber.transport, self._publisher.transport):
            await asyncio.to_thread(transport.close)
        if self._monitoring is not None:
            await asyncio.to_thread(self._monitoring.transport.close)
