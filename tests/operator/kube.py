"""Small helpers the operator tests share: WorkerPool manifests, reading objects, waiting for a state."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``probe`` returns something truthy; fail saying what never happened and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout}s (last seen: {last!r})")


def apply(cluster: Any, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def redis_secret(cluster: Any, namespace: str, url: str, name: str = "redis") -> None:
    cluster.kubectl("create", "secret", "generic", name, "-n", namespace, f"--from-literal=url={url}")


def pool_manifest(
    name: str,
    backend: str,
    queue: str,
    *,
    secret: str = "redis",
    concurrency: int = 4,
    replicas: tuple[int, int] = (0, 10),
    scaling: dict[str, Any] | None = None,
    worker: dict[str, Any] | None = None,
    scale_target: str | None = None,
    in_flight_sources: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    queue_spec: dict[str, Any] = {"backend": backend, "redis": {"urlSecretRef": {"name": secret, "key": "url"}}}
    if backend == "redis-streams":
        queue_spec["streams"] = {"streams": [queue], "group": "swell"}
    else:
        queue_spec["list"] = {"keys": [queue], "inFlightSources": in_flight_sources or []}
    spec: dict[str, Any] = {
        "queue": queue_spec,
        "concurrency": concurrency,
        "replicas": {"min": replicas[0], "max": replicas[1]},
        "scaling": {
            "targetWaitSeconds": 30,
            "taskSecondsHint": 1,
            "idleSecondsBeforeZero": 2,
            "scaleDownStabilizationSeconds": 1,
            "pollIntervalSeconds": 0.5,
            **(scaling or {}),
        },
    }
    if scale_target is not None:
        spec["scaleTargetRef"] = {"name": scale_target}
    else:
        spec["worker"] = worker or {"image": "swell-worker:test", "handlers": ["noop"]}
    return {"apiVersion": "swell.dev/v1alpha1", "kind": "WorkerPool", "metadata": {"name": name}, "spec": spec}


def replicas_of(cluster: Any, namespace: str, deployment: str) -> int | None:
    found = get(cluster, namespace, "deployment", deployment)
    return None if found is None else int(found["spec"].get("replicas") or 0)


def status_of(cluster: Any, namespace: str, pool: str) -> dict[str, Any]:
    found = get(cluster, namespace, "workerpools.swell.dev", pool)
    return dict((found or {}).get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in status.get("conditions") or ():
        if item.get("type") == kind:
            return dict(item)
    return {}


def events_for(cluster: Any, namespace: str, pool: str) -> list[dict[str, Any]]:
    result = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=WorkerPool,involvedObject.name={pool}",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def push_tasks(
    redis_url: str, backend: str, queue: str, count: int, handler: str = "noop", payload: dict[str, Any] | None = None
) -> list[str]:
    """Enqueue task envelopes the way producers do (LPUSH / XADD), returning their ids."""
    import uuid

    import redis

    client = redis.Redis.from_url(redis_url)
    ids = []
    pipe = client.pipeline(transaction=False)
    for _ in range(count):
        task_id = uuid.uuid4().hex
        ids.append(task_id)
        body = json.dumps(
            {
                "id": task_id,
                "handler": handler,
                "payload": payload or {},
                "submitted_at": time.time(),
                "reply_to": None,
                "priority": 0,
            }
        )
        if backend == "redis-streams":
            pipe.xadd(queue, {"body": body})
        else:
            pipe.lpush(queue, body)
    pipe.execute()
    client.close()
    return ids


def states(redis_url: str, backend: str, queue: str, task_ids: list[str]) -> dict[str, str]:
    """Each task's state as a producer reads it, through the client SDK rather than the worker's keys."""
    import asyncio

    from swell_worker.client import SwellClient

    async def read() -> dict[str, str]:
        async with SwellClient.for_redis(redis_url, queue, backend=backend) as client:  # type: ignore[arg-type]
            found = await asyncio.gather(*(client.status(task_id) for task_id in task_ids))
            return {task_id: status.state for task_id, status in zip(task_ids, found, strict=True)}

    return asyncio.run(read())


def drain(redis_url: str, backend: str, queue: str) -> int:
    """Consume and settle everything waiting, as a worker would (Streams: read, ack, delete, count)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    done = 0
    try:
        if backend == "redis-list":
            while client.rpop(queue) is not None:
                client.incr(f"{queue}:completed")
                done += 1
            return done
        with contextlib.suppress(redis.ResponseError):
            client.xgroup_create(queue, "swell", id="0", mkstream=True)
        while True:
            answer = client.xreadgroup("swell", "test-drainer", {queue: ">"}, count=200)
            entries = [entry_id for _, items in answer or () for entry_id, _ in items]
            if not entries:
                break
            client.xack(queue, "swell", *entries)
            client.xdel(queue, *entries)
            client.incrby(f"{queue}:completed", len(entries))
            done += len(entries)
        client.xgroup_delconsumer(queue, "swell", "test-drainer")
        return done
    finally:
        client.close()
