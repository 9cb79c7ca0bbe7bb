"""The worker on Google's Pub/Sub emulator: pull with dead-lettering, and push with 429 backpressure and auth."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from swell_operator.worker_metrics import parse_counters
from swell_worker.client import SwellClient
from swell_worker.config import WorkerConfig

from tests.fixtures.pubsub_emulator import PubSubEmulator
from tests.fixtures.workers import StartWorker, WorkerProcess
from tests.pubsub.conftest import pubsub_worker_env
from tests.worker.conftest import states, wait_for


@pytest.fixture
async def client(pubsub_emulator: PubSubEmulator, names: dict[str, str], redis_url: str) -> AsyncIterator[SwellClient]:
    config = WorkerConfig(
        backend="pubsub",
        pubsub_project=pubsub_emulator.project,
        pubsub_topic=names["topic"],
        result_redis_url=redis_url,
    )
    async with SwellClient.from_config(config) as swell:
        yield swell


def worker_env(emulator: PubSubEmulator, names: dict[str, str], redis_url: str, **extra: str) -> dict[str, str]:
    return pubsub_worker_env(
        emulator,
        names,
        redis_url,
        **{
            "SWELL_HANDLERS": "echo,sleep,fail",
            "SWELL_MAX_ATTEMPTS": "2",
            "SWELL_RETRY_BASE_SECONDS": "0.1",
            "SWELL_RETRY_CAP_SECONDS": "0.5",
            **extra,
        },
    )


def effects(redis_url: str, name: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis.Redis.from_url(redis_url).hgetall(f"swell:effects:{name}").items()}


async def test_pull_worker_runs_every_task_once_and_dead_letters_with_reasons(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    client: SwellClient,
    start_worker: StartWorker,
) -> None:
    pubsub_emulator.create(names["topic"], names["sub"], ack_deadline_seconds=10)
    pubsub_emulator.create(names["dead"], names["dead_sub"])
    ids = [await client.submit("echo", {"n": i, "incr": "pull"}) for i in range(30)]
    failing = await client.submit("fail", {"message": "gpu on fire"})
    await client._backend.publish(b"not a task")
    start_worker(worker_env(pubsub_emulator, names, redis_url, SWELL_CONCURRENCY="4"))

    async def all_done() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, ids)).values())

    await wait_for("30 tasks succeeded", all_done, timeout=90)
    assert effects(redis_url, "pull") == dict.fromkeys(ids, 1)
    dead = await dead_letters(pubsub_emulator, names["dead_sub"], 2, timeout=60)
    reasons = {m.attributes["reason"]: m for m in dead}
    assert any("failed after 2 attempts" in r and "gpu on fire" in r for r in reasons), reasons.keys()
    assert any(r.startswith("malformed task: body is not JSON") for r in reasons), reasons.keys()
    assert all(m.attributes["attempts"] and float(m.attributes["failed_at"]) > 0 for m in dead)
    final = await client.status(failing)
    assert final.state == "failed" and final.attempt == 2  # counted in the record: no dead-letter policy here


async def dead_letters(emulator: PubSubEmulator, subscription: str, count: int, timeout: float) -> list[Any]:
    """Pull (and ack) dead letters until ``count`` have come."""
    dead: list[Any] = []

    async def enough() -> bool:
        dead.extend(await asyncio.to_thread(emulator.pull_all, subscription))
        return len(dead) >= count

    await wait_for(f"{count} dead letters", enough, timeout=timeout, interval=0.5)
    return dead


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def envelope(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "message": {"data": base64.b64encode(json.dumps(task).encode()).decode(), "messageId": "1"},
        "subscription": "projects/p/subscriptions/s",
    }


async def test_push_endpoint_checks_its_caller_and_answers_429_when_full(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    start_worker: StartWorker,
) -> None:
    worker = start_worker(
        worker_env(
            pubsub_emulator,
            names,
            redis_url,
            SWELL_PUBSUB_MODE="push",
            SWELL_PUSH_TOKEN="s3cret",
            SWELL_CONCURRENCY="1",
        )
    )
    url = worker.base_url + "/pubsub/push"
    quick = envelope({"id": "quick", "handler": "echo", "payload": {}})
    assert post(url, quick) == 401
    assert post(url, quick, {"Authorization": "Bearer wrong"}) == 403
    assert post(url + "?token=wrong", quick) == 403
    assert post(url + "?token=s3cret", quick) == 204

    slow_status: list[int] = []
    slow = threading.Thread(
        target=lambda: slow_status.append(
            post(url + "?token=s3cret", envelope({"id": "slow", "handler": "sleep", "payload": {"seconds": 2}}))
        )
    )
    slow.start()
    await wait_for("the slow task holds the only slot", lambda: worker.get_json("/healthz")[1]["in_flight"] == 1)
    assert post(url, quick, {"Authorization": "Bearer s3cret"}) == 429
    slow.join(10)
    assert slow_status == [204]
    # What the operator reads from this worker: one refusal, two settled tasks, ~2 slot-seconds busy.
    counters = parse_counters(worker.get("/metrics")[1], at=0.0)
    assert counters.refused == 1 and counters.settled == 2 and counters.in_flight == 0
    assert 1.9 <= counters.busy_slot_seconds <= 3.0, counters
    failing = envelope({"id": "boom", "handler": "fail", "payload": {"message": "try again"}})
    assert post(url + "?token=s3cret", failing) == 503  # a retry: Pub/Sub redelivers after its backoff


def start_pushed_worker(
    start_worker: StartWorker, emulator: PubSubEmulator, names: dict[str, str], redis_url: str, **extra: str
) -> WorkerProcess:
    """A push-mode worker, and the topic's push subscription (no dead-letter policy) pointing at it."""
    env = worker_env(emulator, names, redis_url, SWELL_PUBSUB_MODE="push", SWELL_PUSH_TOKEN="s3cret", **extra)
    worker = start_worker(env)
    emulator.create(
        names["topic"],
        names["sub"],
        ack_deadline_seconds=10,
        push_config={"push_endpoint": f"{worker.base_url}/pubsub/push?token=s3cret"},
    )
    return worker


async def test_push_subscription_delivers_through_429s_without_loss(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    client: SwellClient,
    start_worker: StartWorker,
) -> None:
    worker = start_pushed_worker(start_worker, pubsub_emulator, names, redis_url, SWELL_CONCURRENCY="1")
    ids = [await client.submit("sleep", {"seconds": 0.3, "incr": "push"}) for _ in range(8)]

    async def all_done() -> bool:
        return all(s.state == "succeeded" for s in (await states(client, ids)).values())

    await wait_for("every pushed task succeeded", all_done, timeout=120, interval=0.5)
    assert effects(redis_url, "push") == dict.fromkeys(ids, 1)
    _, metrics = worker.get("/metrics")
    assert "swell_tasks_succeeded_total 8.0" in metrics


async def test_an_always_failing_push_reaches_the_dead_letter_topic_without_a_dead_letter_policy(
    pubsub_emulator: PubSubEmulator,
    names: dict[str, str],
    redis_url: str,
    client: SwellClient,
    start_worker: StartWorker,
) -> None:
    """Pub/Sub sends no deliveryAttempt without a dead-letter policy; the worker counts in the task record."""
    pubsub_emulator.create(names["dead"], names["dead_sub"])
    start_pushed_worker(start_worker, pubsub_emulator, names, redis_url, SWELL_MAX_ATTEMPTS="3")
    assert not subscription_of(pubsub_emulator, names["sub"]).dead_letter_policy.dead_letter_topic
    failing = await client.submit("fail", {"message": "never works"})
    dead = await dead_letters(pubsub_emulator, names["dead_sub"], 1, timeout=120)
    assert dead[0].attributes["reason"] == "failed after 3 attempts: RuntimeError: never works"
    assert dead[0].attributes["attempts"] == "3"
    final = await client.status(failing)
    assert final.state == "failed" and final.attempt == 3
    await asyncio.sleep(2)  # acked after the dead letter: no further delivery runs it
    assert (await client.status(failing)).attempt == 3
    assert await asyncio.to_thread(pubsub_emulator.pull_all, names["dead_sub"]) == []


def subscription_of(emulator: PubSubEmulator, name: str) -> Any:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    try:
        return subscriber.get_subscription(
            request={"subscription": subscriber.subscription_path(emulator.project, name)}
        )
    finally:
        subscriber.close()
