"""Pub/Sub pools on the local cluster, shared by the scaling tests and the wake-up benchmark."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from swell_worker.client import SyncSwellClient
from swell_worker.config import WorkerConfig

from tests.fixtures.pubsub_emulator import PubSubEmulator

TOKEN = "push-token-for-tests"


def secrets(cluster: Any, namespace: str, redis_url: str) -> None:
    cluster.kubectl("create", "secret", "generic", "results", "-n", namespace, f"--from-literal=url={redis_url}")
    cluster.kubectl("create", "secret", "generic", "push", "-n", namespace, f"--from-literal=token={TOKEN}")


def pubsub_pool(
    emulator: PubSubEmulator,
    names: dict[str, str],
    handlers: list[str],
    *,
    mode: str,
    concurrency: int,
    replicas: tuple[int, int],
    scaling: dict[str, Any],
    push_endpoint: str | None = None,
) -> dict[str, Any]:
    pubsub: dict[str, Any] = {
        "project": emulator.project,
        "subscription": names["sub"],
        "topic": names["topic"],
        "mode": mode,
        "emulatorHost": emulator.host,
        "deadLetterTopic": names["dead"],
    }
    if mode == "push":
        pubsub |= {"pushTokenSecretRef": {"name": "push", "key": "token"}, "pushEndpoint": push_endpoint}
    return {
        "apiVersion": "swell.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "pool"},
        "spec": {
            "queue": {"backend": "pubsub", "pubsub": pubsub},
            "concurrency": concurrency,
            "replicas": {"min": replicas[0], "max": replicas[1]},
            "scaling": {"pollIntervalSeconds": 0.5, "targetWaitSeconds": 10, "taskSecondsHint": 1, **scaling},
            "worker": {
                "image": "swell-worker:test",
                "handlers": handlers,
                "terminationGracePeriodSeconds": 20,
                "env": [{"name": "SWELL_RESULT_REDIS_URL", "secretKeyRef": {"name": "results", "key": "url"}}],
                "podTemplate": {
                    "metadata": {
                        "annotations": {
                            "swell.dev/run-locally": "true",
                            "swell.dev/local-bind-env": "SWELL_HTTP_HOST",
                        }
                    }
                },
            },
        },
    }


def push_endpoint(emulator: PubSubEmulator, subscription: str) -> str:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    try:
        found = subscriber.get_subscription(
            request={"subscription": subscriber.subscription_path(emulator.project, subscription)}
        )
        return str(found.push_config.push_endpoint)
    finally:
        subscriber.close()


def client_for(emulator: PubSubEmulator, names: dict[str, str], redis_url: str) -> SyncSwellClient:
    return SyncSwellClient.from_config(
        WorkerConfig(
            backend="pubsub", pubsub_project=emulator.project, pubsub_topic=names["topic"], result_redis_url=redis_url
        )
    )


def effects(redis_url: str, name: str) -> dict[str, int]:
    found = redis.Redis.from_url(redis_url).hgetall(f"swell:effects:{name}")
    return {k.decode(): int(v) for k, v in found.items()}


def fresh_names(emulator: PubSubEmulator) -> dict[str, str]:
    """A topic, subscription and existing dead-letter topic of their own."""
    suffix = uuid.uuid4().hex[:8]
    found = {"topic": f"tasks-{suffix}", "sub": f"tasks-sub-{suffix}", "dead": f"dead-{suffix}"}
    emulator.create(found["dead"])
    return found
