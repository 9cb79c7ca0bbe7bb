"""Redis away, a wrong Secret, a missing Secret: the pool says so, holds its replicas, and recovers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.operator.kube import (
    apply,
    condition,
    drain,
    events_for,
    pool_manifest,
    push_tasks,
    redis_secret,
    replicas_of,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.cluster


def degraded(cluster: Any, namespace: str, pool: str) -> dict[str, Any]:
    return condition(status_of(cluster, namespace, pool), "Degraded")


def test_redis_down_sets_degraded_and_holds_replicas_then_recovers(
    cluster: Any, namespace: str, own_redis: Any, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, own_redis.url)
    apply(cluster, namespace, pool_manifest("pool", "redis-streams", "jobs", scaling={"idleSecondsBeforeZero": 1}))
    push_tasks(own_redis.url, "redis-streams", "jobs", 200)
    held = wait_for(lambda: replicas_of(cluster, namespace, "pool"), 30, "scale-out under backlog")

    own_redis.stop()
    down = wait_for(
        lambda: (d := degraded(cluster, namespace, "pool")).get("status") == "True" and d,
        30,
        "Degraded=True while Redis is down",
    )
    assert "Redis" in down["message"]
    assert condition(status_of(cluster, namespace, "pool"), "Ready")["status"] == "False"
    # Without a fallback the replicas stay as they were, however long Redis is away.
    time.sleep(3)
    assert replicas_of(cluster, namespace, "pool") == held
    assert operator_process.process.poll() is None, operator_process.log()
    assert 'swell_operator_queue_read_errors_total{namespace="' in operator_process.metrics()
    wait_for(
        lambda: [e for e in events_for(cluster, namespace, "pool") if e["reason"] == "QueueUnreadable"],
        30,
        "a QueueUnreadable Event",
    )

    own_redis.start()  # same port and directory: the append-only file brings the 200 tasks back
    assert own_redis.client().xlen("jobs") == 200, "Redis lost tasks it had accepted"
    drain(own_redis.url, "redis-streams", "jobs")  # as workers would
    wait_for(
        lambda: degraded(cluster, namespace, "pool").get("status") == "False", 30, "Degraded=False once Redis is back"
    )
    wait_for(
        lambda: replicas_of(cluster, namespace, "pool") == 0,
        60,
        "decisions resume (the now-empty queue scales to zero)",
    )


def test_missing_secret_is_reported_without_values_and_picked_up_when_created(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    apply(cluster, namespace, pool_manifest("pool", "redis-list", "jobs", secret="absent"))
    down = wait_for(
        lambda: (d := degraded(cluster, namespace, "pool")).get("status") == "True" and d,
        30,
        "Degraded=True for a missing Secret",
    )
    assert f"Secret {namespace}/absent does not exist" in down["message"]

    cluster.kubectl("create", "secret", "generic", "absent", "-n", namespace, "--from-literal=wrong=x")
    wrong_key = wait_for(
        lambda: "no key" in (m := degraded(cluster, namespace, "pool").get("message", "")) and m,
        30,
        "Degraded naming the missing key",
    )
    assert "'url'" in wrong_key

    cluster.kubectl("delete", "secret", "absent", "-n", namespace)
    redis_secret(cluster, namespace, redis_url, name="absent")
    wait_for(lambda: degraded(cluster, namespace, "pool").get("status") == "False", 30, "recovery with the Secret")
    push_tasks(redis_url, "redis-list", "jobs", 10)
    wait_for(lambda: (replicas_of(cluster, namespace, "pool") or 0) >= 1, 30, "scaling once the queue is readable")


def test_wrong_credential_never_leaks_into_status_or_events(
    cluster: Any, namespace: str, own_redis: Any, operator_process: Any
) -> None:
    own_redis.client().config_set("requirepass", "the-right-one")
    secret_url = f"redis://default:hunter2-not-shown@127.0.0.1:{own_redis.port}/0"
    redis_secret(cluster, namespace, secret_url)
    apply(cluster, namespace, pool_manifest("pool", "redis-list", "jobs"))
    down = wait_for(
        lambda: (d := degraded(cluster, namespace, "pool")).get("status") == "True" and d,
        30,
        "Degraded=True for a password the server refuses",
    )
    assert "hunter2" not in str(status_of(cluster, namespace, "pool"))
    assert "hunter2" not in str(events_for(cluster, namespace, "pool"))
    assert "hunter2" not in operator_process.log()
    assert "refused the credentials" in down["message"]


def test_fallback_replicas_apply_after_repeated_failed_reads(
    cluster: Any, namespace: str, operator_process: Any
) -> None:
    apply(
        cluster,
        namespace,
        pool_manifest(
            "pool",
            "redis-streams",
            "jobs",
            secret="absent",
            scaling={"fallback": {"afterFailedReads": 2, "replicas": 2}},
        ),
    )
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 2, 60, "the fallback of 2 replicas")
    reason = status_of(cluster, namespace, "pool")["lastDecision"]["reason"]
    assert "fallback" in reason


def test_missing_scale_target_is_reported_and_picked_up_when_created(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    apply(cluster, namespace, pool_manifest("byo", "redis-list", "jobs", scale_target="celery-workers"))
    down = wait_for(
        lambda: (d := degraded(cluster, namespace, "byo")).get("status") == "True" and d,
        30,
        "Degraded=True for a missing scaleTargetRef Deployment",
    )
    assert down["reason"] == "TargetUnavailable"
    assert "celery-workers" in down["message"]
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "celery-workers"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "celery"}},
                "template": {
                    "metadata": {"labels": {"app": "celery"}},
                    "spec": {"containers": [{"name": "celery", "image": "celery:test"}]},
                },
            },
        },
    )
    wait_for(lambda: degraded(cluster, namespace, "byo").get("status") == "False", 30, "recovery")
    push_tasks(redis_url, "redis-list", "jobs", 5)
    wait_for(lambda: (replicas_of(cluster, namespace, "celery-workers") or 0) >= 1, 30, "the target scaled")
