"""Swell scales real RQ and Celery worker Deployments (run as local processes by the pod runner) 0 → N → 0."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import redis

from tests.operator.kube import apply, pool_manifest, redis_secret, replicas_of, wait_for
from tests.tooling.controlplane.podrunner import PodRunner

pytestmark = pytest.mark.cluster
JOBS = 24


def worker_deployment(name: str, command: list[str], redis_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"swell.dev/run-locally": "true"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "worker",
                            "image": f"{name}:test",
                            "command": command,
                            "env": [
                                {"name": "BYO_REDIS_URL", "value": redis_url},
                                {"name": "PYTHONPATH", "value": "."},
                            ],
                        }
                    ],
                },
            },
        },
    }


def run_pool(
    cluster: Any,
    namespace: str,
    redis_url: str,
    pod_runner: PodRunner,
    name: str,
    queue: str,
    in_flight: dict[str, str],
    concurrency: int,
    enqueue: Any,
) -> None:
    redis_secret(cluster, namespace, redis_url)
    apply(
        cluster,
        namespace,
        pool_manifest(
            name,
            "redis-list",
            queue,
            scale_target=f"{name}-workers",
            concurrency=concurrency,
            replicas=(0, 4),
            in_flight_sources=[in_flight],
            scaling={"idleSecondsBeforeZero": 5, "scaleDownStabilizationSeconds": 5, "targetWaitSeconds": 5},
        ),
    )
    enqueue()
    peak = wait_for(
        lambda: (n := replicas_of(cluster, namespace, f"{name}-workers") or 0) >= 2 and n, 60, f"{name} scaled out"
    )
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.hlen("byo:done") == JOBS, 180, f"every {name} job done")
    assert all(int(v) == 1 for v in client.hvals("byo:done")), client.hgetall("byo:done")
    wait_for(lambda: replicas_of(cluster, namespace, f"{name}-workers") == 0, 90, f"{name} back to zero")
    processes = pod_runner.processes(namespace)
    assert len(processes) >= peak >= 2
    wait_for(lambda: all(p.exit_code is not None for p in processes), 60, f"{name} worker processes exited")
    client.close()


def test_rq_workers_scale_from_zero_and_back(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any, pod_runner: PodRunner
) -> None:
    from rq import Queue

    apply(
        cluster,
        namespace,
        worker_deployment(
            "rq-workers",
            [
                sys.executable,
                "-m",
                "rq.cli",
                "worker",
                "--url",
                redis_url,
                "--worker-class",
                "rq.worker.SimpleWorker",
                "default",
            ],
            redis_url,
        ),
    )

    def enqueue() -> None:
        queue = Queue("default", connection=redis.Redis.from_url(redis_url))
        for i in range(JOBS):
            queue.enqueue("tests.operator.byo_jobs.record", f"rq-{i}", 1.0)

    run_pool(
        cluster,
        namespace,
        redis_url,
        pod_runner,
        "rq",
        "rq:queue:default",
        {"kind": "zset", "key": "rq:wip:default"},
        1,
        enqueue,
    )


def test_celery_workers_scale_from_zero_and_back(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any, pod_runner: PodRunner
) -> None:
    apply(
        cluster,
        namespace,
        worker_deployment(
            "celery-workers",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.operator.byo_jobs:celery_app",
                "worker",
                "--pool=threads",
                "--concurrency=2",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            redis_url,
        ),
    )

    def enqueue() -> None:
        from tests.operator.byo_jobs import celery_app

        celery_app.conf.broker_url = redis_url
        for i in range(JOBS):
            celery_app.send_task("byo.record", args=[f"celery-{i}", 1.0])

    run_pool(
        cluster, namespace, redis_url, pod_runner, "celery", "celery", {"kind": "hash", "key": "unacked"}, 2, enqueue
    )
