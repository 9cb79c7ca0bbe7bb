"""The operator's Pub/Sub control-plane client on Google's emulator; credentials without a cluster."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import service_account
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import Subscription
from swell_operator import pubsub_admin
from swell_operator.model import PubSubQueue, SecretKeyRef
from swell_operator.pubsub_admin import PubSubAdmin, PubSubAdminError
from swell_operator.secrets import SecretError

from tests.fixtures.pubsub_emulator import PubSubEmulator

NO_API = cast(Any, None)  # open() must not touch the Kubernetes API when no Secret is read


class Emulator:
    """Raw clients on an explicit channel, so the tests do not lean on PUBSUB_EMULATOR_HOST either."""

    def __init__(self, emulator: PubSubEmulator) -> None:
        self.host, self.project = emulator.host, emulator.project
        anonymous = AnonymousCredentials()
        self.subscriber = SubscriberClient(
            transport=SubscriberGrpcTransport(
                host=self.host, credentials=anonymous, channel=grpc.insecure_channel(self.host)
            )
        )
        self.publisher = PublisherClient(
            transport=PublisherGrpcTransport(
                host=self.host, credentials=anonymous, channel=grpc.insecure_channel(self.host)
            )
        )

    def topic(self, name: str) -> str:
        path = self.publisher.topic_path(self.project, name)
        self.publisher.create_topic(name=path)
        return path

    def subscription(self, name: str, topic: str, **fields: Any) -> str:
        path = self.subscriber.subscription_path(self.project, name)
        self.subscriber.create_subscription(request={"name": path, "topic": topic, **fields})
        return path

    def get(self, subscription: str) -> Subscription:
        return self.subscriber.get_subscription(subscription=subscription)

    def publish(self, topic: str, data: bytes) -> None:
        self.publisher.publish(topic=topic, messages=[{"data": data}])

    def pull(self, subscription: str, timeout: float = 10.0) -> list[Any]:
        response = self.subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=timeout)
        return list(response.received_messages)

    def ack(self, subscription: str, received: list[Any]) -> None:
        self.subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in received])

    def nack(self, subscription: str, received: list[Any]) -> None:
        self.subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[r.ack_id for r in received], ack_deadline_seconds=0
        )


@pytest.fixture
def emu(pubsub_emulator: PubSubEmulator) -> Iterator[Emulator]:
    emulator = Emulator(pubsub_emulator)
    yield emulator
    emulator.subscriber.transport.close()
    emulator.publisher.transport.close()


def queue_for(emu: Emulator, subscription: str, **fields: Any) -> PubSubQueue:
    return PubSubQueue(project=emu.project, subscription=subscription, emulator_host=emu.host, **fields)


@pytest.fixture
async def admins() -> AsyncIterator[list[PubSubAdmin]]:
    opened: list[PubSubAdmin] = []
    yield opened
    for admin in opened:
        await admin.close()


async def open_admin(admins: list[PubSubAdmin], queue: PubSubQueue) -> PubSubAdmin:
    admin = await PubSubAdmin.open(NO_API, "pools", queue)
    admins.append(admin)
    return admin


async def test_peek_sees_a_message_and_leaves_it_for_a_worker_at_once(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    topic = emu.topic(names["topic"])
    # A long ack deadline: had peek kept its lease, the worker's pull below would come back empty.
    subscription = emu.subscription(names["sub"], topic, ack_deadline_seconds=300)
    admin = await open_admin(admins, queue_for(emu, names["sub"]))

    assert await admin.peek() is False
    emu.publish(topic, b"wake up")
    assert await admin.peek() is True

    started = time.monotonic()
    received = emu.pull(subscription)
    assert [bytes(r.message.data) for r in received] == [b"wake up"]
    assert time.monotonic() - started < 5
    emu.ack(subscription, received)
    assert await admin.peek() is False


async def test_peek_counts_as_a_delivery_attempt_where_a_dead_letter_policy_exists(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    topic, dead = emu.topic(names["topic"]), emu.topic(names["dead"])
    subscription = emu.subscription(
        names["sub"], topic, dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5}
    )
    admin = await open_admin(admins, queue_for(emu, names["sub"]))
    emu.publish(topic, b"counted")

    assert await admin.peek() is True
    received = emu.pull(subscription)
    assert [r.delivery_attempt for r in received] == [2]  # the peek was attempt 1
    emu.ack(subscription, received)


async def test_push_endpoint_round_trip_keeps_the_oidc_settings(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    topic = emu.topic(names["topic"])
    oidc = {"service_account_email": "pusher@swell-test.iam.gserviceaccount.com", "audience": "https://pool"}
    subscription = emu.subscription(
        names["sub"], topic, push_config={"push_endpoint": "http://127.0.0.1:9/first", "oidc_token": oidc}
    )
    emu.subscription(names["dead_sub"], topic)  # a pull subscription
    admin = await open_admin(admins, queue_for(emu, names["sub"]))
    pull_admin = await open_admin(admins, queue_for(emu, names["dead_sub"]))

    assert await admin.push_endpoint() == "http://127.0.0.1:9/first"
    assert await pull_admin.push_endpoint() is None
    await admin.set_push_endpoint("http://activator.swell:8080/push/pools/p?token=t")
    assert await admin.push_endpoint() == "http://activator.swell:8080/push/pools/p?token=t"

    stored = emu.get(subscription).push_config
    assert stored.oidc_token.service_account_email == oidc["service_account_email"]
    assert stored.oidc_token.audience == oidc["audience"]


async def test_dead_letter_status_without_a_topic_in_the_spec_leaves_the_subscription_alone(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    topic, dead = emu.topic(names["topic"]), emu.topic(names["dead"])
    plain = emu.subscription(names["sub"], topic)
    emu.subscription(
        names["dead_sub"], topic, dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 9}
    )

    status = await (await open_admin(admins, queue_for(emu, names["sub"]))).dead_letter_status()
    assert status["policy"] == "not configured"
    assert status["topic"] is None
    assert not emu.get(plain).dead_letter_policy.dead_letter_topic

    theirs = await (await open_admin(admins, queue_for(emu, names["dead_sub"]))).dead_letter_status()
    assert theirs["policy"] == "not configured"
    assert dead in theirs["message"] and "9 deliveries" in theirs["message"]
    theirs_now = emu.get(emu.subscriber.subscription_path(emu.project, names["dead_sub"])).dead_letter_policy
    assert theirs_now.max_delivery_attempts == 9
    assert json.loads(json.dumps([status, theirs])) == [status, theirs]  # status.deadLetter takes JSON


async def test_dead_letter_status_reports_a_missing_topic_without_creating_it(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    subscription = emu.subscription(names["sub"], emu.topic(names["topic"]))
    admin = await open_admin(admins, queue_for(emu, names["sub"], dead_letter_topic=names["dead"]))

    status = await admin.dead_letter_status()
    dead = emu.publisher.topic_path(emu.project, names["dead"])
    assert status["topicExists"] is False
    assert status["topic"] == dead
    assert status["policy"] == "not set"
    assert "does not exist" in status["message"]
    assert not emu.get(subscription).dead_letter_policy.dead_letter_topic
    assert dead not in [t.name for t in emu.publisher.list_topics(project=f"projects/{emu.project}")]


async def test_dead_letter_status_sets_the_policy_and_the_emulator_enforces_it(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    topic, dead = emu.topic(names["topic"]), emu.topic(names["dead"])
    subscription = emu.subscription(names["sub"], topic)
    dead_subscription = emu.subscription(names["dead_sub"], dead)
    admin = await open_admin(
        admins, queue_for(emu, names["sub"], dead_letter_topic=names["dead"], max_delivery_attempts=6)
    )

    status = await admin.dead_letter_status()
    assert status == {
        "topic": dead,
        "topicExists": True,
        "maxDeliveryAttempts": 6,
        "policy": "set",
        "message": status["message"],
    }
    stored = emu.get(subscription).dead_letter_policy
    assert (stored.dead_letter_topic, stored.max_delivery_attempts) == (dead, 6)
    assert (await admin.dead_letter_status())["policy"] == "already set"

    admin.queue = queue_for(emu, names["sub"], dead_letter_topic=names["dead"], max_delivery_attempts=5)
    assert (await admin.dead_letter_status())["policy"] == "set"
    assert emu.get(subscription).dead_letter_policy.max_delivery_attempts == 5

    # The emulator really dead-letters: after five releases the next Pull on the subscription (not a timer, on
    # the emulator) moves the message to the dead-letter topic.
    emu.publish(topic, b"poison")
    attempts = []
    for _ in range(5):
        received = emu.pull(subscription)
        attempts += [r.delivery_attempt for r in received]
        emu.nack(subscription, received)
    assert attempts == [1, 2, 3, 4, 5]
    assert emu.pull(subscription, timeout=3) == []
    dead_letters = emu.pull(dead_subscription)
    assert [bytes(r.message.data) for r in dead_letters] == [b"poison"]
    assert dead_letters[0].message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


async def test_a_missing_subscription_is_a_clear_error(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    admin = await open_admin(admins, queue_for(emu, names["sub"], dead_letter_topic=names["dead"]))
    expected = f"Pub/Sub subscription projects/{emu.project}/subscriptions/{names['sub']} does not exist"
    for call in (admin.peek, admin.push_endpoint, admin.dead_letter_status):
        with pytest.raises(PubSubAdminError) as caught:
            await call()
        assert str(caught.value) == expected
    with pytest.raises(PubSubAdminError, match="does not exist"):
        await admin.set_push_endpoint("http://127.0.0.1:9/x")


async def test_an_unreachable_server_is_an_error_not_an_empty_subscription(admins: list[PubSubAdmin]) -> None:
    admin = await open_admin(
        admins, PubSubQueue(project="swell-test", subscription="tasks", emulator_host="127.0.0.1:1")
    )
    with pytest.raises(PubSubAdminError, match="could not pull from subscription projects/swell-test/"):
        await admin.peek(timeout=5)


async def test_the_pools_emulator_host_wins_over_the_process_environment(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu.subscription(names["sub"], emu.topic(names["topic"]), push_config={"push_endpoint": "http://127.0.0.1:9/a"})
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")  # nothing listens there
    admin = await open_admin(admins, queue_for(emu, names["sub"]))
    assert await admin.push_endpoint() == "http://127.0.0.1:9/a"


async def test_a_server_that_drops_the_policy_is_reported_as_unsupported() -> None:
    """No emulator at hand does this (the current one keeps and enforces policies); a stub stands in."""

    class Forgetful:
        def get_subscription(self, **_: Any) -> Subscription:
            return Subscription(name="projects/p/subscriptions/s")

        def update_subscription(self, **_: Any) -> Subscription:
            return Subscription(name="projects/p/subscriptions/s")

        def get_topic(self, **_: Any) -> None:
            return None

    stub = cast(Any, Forgetful())
    admin = PubSubAdmin(PubSubQueue(project="proj", subscription="sub", dead_letter_topic="dlq"), stub, stub)
    status = await admin.dead_letter_status()
    assert status["policy"] == "unsupported"
    assert status["topic"] == "projects/proj/topics/dlq"


# Credentials: no cluster and no Google; the gRPC channel connects lazily, so open() makes no call.


def service_account_info() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "swell@proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def credentials_of(admin: PubSubAdmin) -> Any:
    return admin._subscriber.transport._credentials


REF = SecretKeyRef(name="pubsub-key", key="key.json")


def fake_secret(monkeypatch: pytest.MonkeyPatch, value: str | Exception) -> list[SecretKeyRef]:
    reads: list[SecretKeyRef] = []

    async def read(api: Any, namespace: str, ref: SecretKeyRef) -> str:
        reads.append(ref)
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(pubsub_admin, "read_secret_key", read)
    return reads


async def test_credentials_come_from_the_referenced_secret(
    monkeypatch: pytest.MonkeyPatch,
    admins: list[PubSubAdmin],
) -> None:
    reads = fake_secret(monkeypatch, json.dumps(service_account_info()))
    admin = await open_admin(admins, PubSubQueue(project="proj", subscription="sub", credentials_secret_ref=REF))
    assert reads == [REF]
    credentials = credentials_of(admin)
    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == "swell@proj.iam.gserviceaccount.com"


async def test_a_bad_secret_is_a_safe_error(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = PubSubQueue(project="proj", subscription="sub", credentials_secret_ref=REF)
    info = service_account_info()
    del info["client_email"]
    fake_secret(monkeypatch, json.dumps(info))
    with pytest.raises(PubSubAdminError) as caught:
        await PubSubAdmin.open(NO_API, "pools", queue)
    assert str(caught.value) == "Secret pools/pubsub-key key 'key.json' is not a service-account JSON key"

    for broken in (
        '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv',  # cut short
        json.dumps({**service_account_info(), "private_key": "hunter2-not-a-pem"}),
        json.dumps({**service_account_info(), "private_key": 20240229}),
    ):  # google-auth quotes this one
        fake_secret(monkeypatch, broken)
        with pytest.raises(PubSubAdminError) as caught:
            await PubSubAdmin.open(NO_API, "pools", queue)
        assert str(caught.value) == "Secret pools/pubsub-key key 'key.json' is not a service-account JSON key"

    fake_secret(monkeypatch, SecretError("Secret pools/pubsub-key does not exist"))
    with pytest.raises(PubSubAdminError) as caught:
        await PubSubAdmin.open(NO_API, "pools", queue)
    assert str(caught.value) == "Secret pools/pubsub-key does not exist"


async def test_an_emulator_pool_never_reads_the_secret(
    monkeypatch: pytest.MonkeyPatch,
    admins: list[PubSubAdmin],
) -> None:
    reads = fake_secret(monkeypatch, SecretError("must not be read"))
    admin = await open_admin(
        admins, PubSubQueue(project="proj", subscription="sub", credentials_secret_ref=REF, emulator_host="127.0.0.1:1")
    )
    assert reads == []
    assert admin._subscriber.transport._host == "127.0.0.1:1"


def no_default_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud user credentials
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server probe


async def test_without_a_secret_application_default_credentials_are_used(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    admins: list[PubSubAdmin],
) -> None:
    no_default_credentials(monkeypatch, tmp_path)
    queue = PubSubQueue(project="proj", subscription="sub")
    with pytest.raises(PubSubAdminError, match="no Google credentials: set credentialsSecretRef"):
        await PubSubAdmin.open(NO_API, "pools", queue)

    key_file = tmp_path / "adc.json"
    key_file.write_text(json.dumps(service_account_info()))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    credentials = credentials_of(await open_admin(admins, queue))
    assert credentials.service_account_email == "swell@proj.iam.gserviceaccount.com"


# -- the backlog from Cloud Monitoring: no emulator exists, so a gRPC stand-in answers ListTimeSeries ----------


class FakeMonitoring:
    """Google's MetricService on a loopback port, answering from canned points and recording each request."""

    def __init__(self, points: dict[str, list[tuple[float, int]]], error: grpc.StatusCode | None = None) -> None:
        from concurrent import futures

        from google.cloud.monitoring_v3 import ListTimeSeriesRequest, ListTimeSeriesResponse

        self.requests: list[Any] = []

        def list_time_series(request: Any, context: grpc.ServicerContext) -> Any:
            self.requests.append(request)
            if error is not None:
                context.abort(error, "the caller lacks monitoring.timeSeries.list")
            metric = next(m for m in points if f'"{m}"' in request.filter)
            series = {
                "points": [
                    {"interval": {"end_time": {"seconds": int(at)}}, "value": {"int64_value": value}}
                    for at, value in points[metric]
                ]
            }
            return ListTimeSeriesResponse(time_series=[series] if points[metric] else [])

        handler = grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                    list_time_series,
                    request_deserializer=ListTimeSeriesRequest.deserialize,
                    response_serializer=ListTimeSeriesResponse.serialize,
                ),
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def client(self) -> Any:
        from google.cloud.monitoring_v3 import MetricServiceClient
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        host = f"127.0.0.1:{self.port}"
        return MetricServiceClient(
            transport=MetricServiceGrpcTransport(
                host=host, credentials=AnonymousCredentials(), channel=grpc.insecure_channel(host)
            )
        )


async def admin_with_monitoring(emulator: PubSubEmulator, fake: FakeMonitoring) -> PubSubAdmin:
    queue = PubSubQueue(project="proj", subscription="jobs", emulator_host=emulator.host)
    opened = await PubSubAdmin.open(NO_API, "ns", queue)
    return PubSubAdmin(queue, opened._subscriber, opened._publisher, fake.client())


async def test_the_monitored_backlog_is_the_newest_point_of_the_subscription(pubsub_emulator: PubSubEmulator) -> None:
    now = time.time()
    fake = FakeMonitoring(
        {
            pubsub_admin.UNDELIVERED: [(now - 180, 40), (now - 120, 900)],
            pubsub_admin.OLDEST_UNACKED_AGE: [(now - 120, 75)],
        }
    )
    admin = await admin_with_monitoring(pubsub_emulator, fake)
    try:
        backlog = await admin.monitored_backlog()
    finally:
        await admin.close()
        fake.server.stop(None)
    assert backlog is not None
    assert (backlog.messages, backlog.oldest_age_seconds, round(backlog.sampled_at)) == (900, 75.0, int(now - 120))
    request = fake.requests[0]
    assert request.name == "projects/proj"
    assert 'resource.labels.subscription_id = "jobs"' in request.filter
    assert request.interval.end_time.timestamp() >= now - 1
    assert request.interval.start_time.timestamp() <= now - pubsub_admin.BACKLOG_LOOKBACK_SECONDS + 1


async def test_no_recent_point_is_no_backlog_and_a_refusal_is_a_safe_error(pubsub_emulator: PubSubEmulator) -> None:
    empty = FakeMonitoring({pubsub_admin.UNDELIVERED: [], pubsub_admin.OLDEST_UNACKED_AGE: []})
    refusing = FakeMonitoring({}, error=grpc.StatusCode.PERMISSION_DENIED)
    admins = [await admin_with_monitoring(pubsub_emulator, fake) for fake in (empty, refusing)]
    try:
        assert await admins[0].monitored_backlog() is None
        with pytest.raises(PubSubAdminError, match="permission denied"):
            await admins[1].monitored_backlog()
    finally:
        for admin in admins:
            await admin.close()
        for fake in (empty, refusing):
            fake.server.stop(None)


async def test_an_emulator_pool_has_no_monitoring(pubsub_emulator: PubSubEmulator) -> None:
    admin = await PubSubAdmin.open(
        NO_API, "ns", PubSubQueue(project="p", subscription="s", emulator_host=pubsub_emulator.host)
    )
    try:
        assert await admin.monitored_backlog() is None
    finally:
        await admin.close()


def test_delivery_attempts_come_from_the_pool_within_pubsubs_range() -> None:
    from swell_operator.pubsub_admin import REFUSED_PUSHES_ALLOWED, delivery_attempts

    # the pool's maxAttempts (retries + 1), plus the pushes its workers may refuse with 429
    assert delivery_attempts(5, False, 8) == 8 + REFUSED_PUSHES_ALLOWED
    assert delivery_attempts(5, False, 1000) == 100  # Pub/Sub's ceiling
    assert delivery_attempts(7, True, 20) == 7  # the queue's own setting wins where the spec gives it
    assert delivery_attempts(5, False, None) == 5  # no bundled worker: the queue's default


async def test_a_push_subscription_gets_a_dead_letter_topic_and_the_pools_attempts(
    emu: Emulator,
    names: dict[str, str],
    admins: list[PubSubAdmin],
) -> None:
    topic = emu.topic(names["topic"])
    subscription = emu.subscription(names["sub"], topic, push_config={"push_endpoint": "http://127.0.0.1:9/push"})
    admin = await open_admin(admins, queue_for(emu, names["sub"], mode="push"))

    status = await admin.dead_letter_status(attempts=7)
    dead = emu.publisher.topic_path(emu.project, f"{names['sub']}-dead-letter")
    assert (status["policy"], status["topic"], status["maxDeliveryAttempts"]) == ("set", dead, 7), status
    assert dead in [t.name for t in emu.publisher.list_topics(project=f"projects/{emu.project}")]
    stored = emu.get(subscription).dead_letter_policy
    assert (stored.dead_letter_topic, stored.max_delivery_attempts) == (dead, 7)
    assert (await admin.dead_letter_status(attempts=7))["policy"] == "already set"
    assert (await admin.dead_letter_status(attempts=12))["policy"] == "set"
    assert emu.get(subscription).dead_letter_policy.max_delivery_attempts == 12
