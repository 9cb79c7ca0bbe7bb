"""Drain-safe scale-in with real worker processes: the idle pods go, the busy one keeps its task and finishes it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from tests.operator.kube import apply, pool_manifest, push_tasks, redis_secret, replicas_of, states, wait_for

pytestmark = pytest.mark.cluster

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def live_pods(cluster: Any, namespace: str) -> dict[str, dict[str, Any]]:
    found = cluster.kubectl("get", "pods", "-n", namespace, "-l", "swell.dev/workerpool=pool", "-o", "json")
    items = json.loads(found.stdout)["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def test_scale_in_removes_the_pods_that_hold_no_tasks(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    """The queue side played by the test: one pod's consumer holds a task, the others hold none."""
    redis_secret(cluster, namespace, redis_url)
    apply(
        cluster,
        namespace,
        pool_manifest(
            "pool",
            "redis-streams",
            "jobs",
            concurrency=1,
            replicas=(0, 3),
            scaling={
                "targetWaitSeconds": 1,
                "taskSecondsHint": 10,
                "scaleDownStabilizationSeconds": 2,
                "idleSecondsBeforeZero": 120,
            },
        ),
    )
    push_tasks(redis_url, "redis-streams", "jobs", 3)
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 3, 60, "three replicas for three tasks")
    pods = sorted(wait_for(lambda: (p := live_pods(cluster, namespace)) and len(p) == 3 and p, 60, "three pods"))
    busy = pods[1]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xgroup_create("jobs", "swell", id="0")  # what the first worker would do
    for pod in pods:  # each pod's consumer takes one task; all but the busy one finish theirs
        answer = client.xreadgroup("swell", pod, {"jobs": ">"}, count=1)
        entry_id = answer[0][1][0][0]
        if pod != busy:
            client.xack("jobs", "swell", entry_id)
            client.xdel("jobs", entry_id)
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 1, 60, "scale-in to the one busy pod")
    left = wait_for(lambda: (p := live_pods(cluster, namespace)) and len(p) == 1 and p, 60, "idle pods removed")
    assert list(left) == [busy], "an idle pod survived and the busy one was removed"
    assert left[busy]["metadata"]["annotations"][DELETION_COST] == "1"
    client.close()


def test_scale_in_removes_idle_pods_and_lets_the_busy_one_finish(
    cluster: Any, namespace: str, redis_url: str, pod_runner: Any, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    worker = {
        "image": "swell-worker:local",
        "handlers": ["sleep"],
        "terminationGracePeriodSeconds": 40,
        "env": [{"name": "SWELL_HTTP_HOST", "value": "127.0.0.1"}],
        "podTemplate": {
            "metadata": {
                "annotations": {
                    "swell.dev/run-locally": "true",
                    "swell.dev/local-port-env": "SWELL_HTTP_PORT",
                }
            }
        },
    }
    # One task per worker and a 10 s service-time guess: three tasks ask for three workers at once.
    apply(
        cluster,
        namespace,
        pool_manifest(
            "pool",
            "redis-streams",
            "jobs",
            concurrency=1,
            replicas=(0, 3),
            worker=worker,
            scaling={
                "targetWaitSeconds": 1,
                "taskSecondsHint": 10,
                "scaleDownStabilizationSeconds": 3,
                "idleSecondsBeforeZero": 120,
            },
        ),
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    short = push_tasks(redis_url, "redis-streams", "jobs", 2, handler="sleep", payload={"seconds": 0.2})
    long_task = push_tasks(redis_url, "redis-streams", "jobs", 1, handler="sleep", payload={"seconds": 15})[0]
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 3, 60, "three workers for three tasks")

    def holder() -> str | None:
        try:
            pending = client.xpending_range("jobs", "swell", "-", "+", 10)
        except redis.ResponseError:  # no worker has created the group yet
            return None
        done = int(client.get("jobs:completed") or 0)
        return pending[0]["consumer"] if len(pending) == 1 and done == 2 else None

    busy = wait_for(holder, 90, "the two short tasks done and the long one held by one pod")
    assert busy in live_pods(cluster, namespace)

    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 1, 60, "scale-in to the one busy worker")
    pods = wait_for(lambda: (p := live_pods(cluster, namespace)) and len(p) == 1 and p, 60, "the idle pods removed")
    assert list(pods) == [busy], "an idle pod survived and the busy one was removed"
    assert pods[busy]["metadata"]["annotations"][DELETION_COST] == "1"

    wait_for(lambda: int(client.get("jobs:completed") or 0) == 3, 60, "the long task finishing on its pod")
    assert set(states(redis_url, "redis-streams", "jobs", [long_task, *short]).values()) == {"succeeded"}
    assert client.xpending("jobs", "swell")["pending"] == 0
    client.close()
