"""The operator against the real control plane and a real Redis: create at zero, scale out, back to zero."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.operator.kube import (
    apply,
    condition,
    drain,
    events_for,
    get,
    pool_manifest,
    push_tasks,
    redis_secret,
    replicas_of,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.cluster

BACKENDS = ["redis-streams", "redis-list"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_sleeps_at_zero_scales_out_under_backlog_and_returns_to_zero(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any, backend: str
) -> None:
    redis_secret(cluster, namespace, redis_url)
    apply(cluster, namespace, pool_manifest("pool", backend, "tasks"))

    deployment = wait_for(lambda: get(cluster, namespace, "deployment", "pool"), 60, "the worker Deployment")
    assert deployment["spec"]["replicas"] == 0
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("WorkerPool", "pool")
    wait_for(
        lambda: condition(status_of(cluster, namespace, "pool"), "Degraded").get("status") == "False",
        30,
        "Degraded=False once the queue is read",
    )

    push_tasks(redis_url, backend, "tasks", 500)
    # Policy floor: 500 tasks at concurrency 4 and a 1 s hint drain within 30 s only with ceil(500/120) = 5.
    floor = math.ceil(500 * 1 / (30 * 4))
    replicas = wait_for(
        lambda: (n := replicas_of(cluster, namespace, "pool")) and n >= floor and n,
        30,
        f"scale-out to at least {floor} replicas",
    )
    assert replicas <= 10
    status = wait_for(
        lambda: (s := status_of(cluster, namespace, "pool")).get("desiredReplicas") == replicas and s,
        30,
        "status showing the decision",
    )
    assert status["lastDecision"]["replicas"] == replicas
    assert status["lastDecision"]["reason"]
    assert status["backlog"] >= 0
    scaled = wait_for(
        lambda: [e for e in events_for(cluster, namespace, "pool") if e["reason"] == "Scaled"], 30, "a Scaled Event"
    )
    assert any(f"-> {replicas}" in event["message"] for event in scaled)

    metrics = operator_process.metrics()
    assert f'swell_operator_queue_backlog{{namespace="{namespace}",workerpool="pool"}}' in metrics
    assert f'swell_operator_replicas_desired{{namespace="{namespace}",workerpool="pool"}} {replicas}.0' in metrics

    assert drain(redis_url, backend, "tasks") == 500
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 60, "scale back to zero after the idle time")
    final = wait_for(
        lambda: (s := status_of(cluster, namespace, "pool")).get("lastDecision", {}).get("replicas") == 0 and s,
        30,
        "status recording the scale to zero",
    )
    assert condition(final, "Active")["status"] == "False"


def test_scale_target_ref_scales_only_the_referenced_deployment(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    """Bring-your-own workers: RQ-style queue, with the started registry (a zset) counted as in flight."""
    redis_secret(cluster, namespace, redis_url)
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "rq-workers"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "rq"}},
                "template": {
                    "metadata": {"labels": {"app": "rq"}},
                    "spec": {"containers": [{"name": "rq", "image": "rq:test"}]},
                },
            },
        },
    )
    apply(
        cluster,
        namespace,
        pool_manifest(
            "byo",
            "redis-list",
            "rq:queue:default",
            scale_target="rq-workers",
            in_flight_sources=[{"kind": "zset", "key": "rq:wip:default"}],
            scaling={"idleSecondsBeforeZero": 60},
        ),
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    client.zadd("rq:wip:default", {"job-1": 1.0, "job-2": 2.0, "job-3": 3.0})
    wait_for(
        lambda: (replicas_of(cluster, namespace, "rq-workers") or 0) >= 1,
        30,
        "in-flight work alone waking the referenced Deployment",
    )
    status = wait_for(
        lambda: (s := status_of(cluster, namespace, "byo")).get("inFlight") == 3 and s,
        30,
        "in-flight from the zset in status",
    )
    assert status["backlog"] == 0
    assert get(cluster, namespace, "deployment", "byo") is None
    client.close()


def test_paused_pool_holds_its_replicas_and_says_so(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    apply(cluster, namespace, pool_manifest("pool", "redis-list", "tasks", scaling={"paused": True}))
    wait_for(
        lambda: condition(status_of(cluster, namespace, "pool"), "Paused").get("status") == "True", 30, "Paused=True"
    )
    push_tasks(redis_url, "redis-list", "tasks", 100)
    wait_for(lambda: status_of(cluster, namespace, "pool").get("backlog") == 100, 30, "the backlog still observed")
    assert replicas_of(cluster, namespace, "pool") == 0
    cluster.kubectl(
        "patch",
        "workerpools.swell.dev",
        "pool",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"scaling":{"paused":false}}}',
    )
    wait_for(lambda: (replicas_of(cluster, namespace, "pool") or 0) >= 1, 30, "scaling once unpaused")
