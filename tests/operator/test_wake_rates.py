"""A pool woken by the shared watch dates its arrivals from the watch's last empty sighting, not from its
last reading minutes before (control plane, real Redis, the operator as a process)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.operator.kube import apply, pool_manifest, push_tasks, redis_secret, replicas_of, status_of, wait_for

pytestmark = pytest.mark.cluster

# Longer than the slow arrival average's minute: read blind, one task after this looks like a batch that
# landed at once (0.014 tasks/s x a 30 s budget < 1 task), and the pool would spend only the rest of the
# budget on it. The watch's sighting makes it the arrival it is (about 0.1 tasks/s, 3 tasks' worth).
SLEEP_SECONDS = 70
BUDGET_SECONDS = 30


def test_a_task_after_a_long_sleep_is_an_arrival_not_a_batch_that_landed(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    scaling = {"targetWaitSeconds": BUDGET_SECONDS, "idleSecondsBeforeZero": 2}
    apply(cluster, namespace, pool_manifest("pool", "redis-list", "jobs", replicas=(0, 1), scaling=scaling))
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 60, "the pool's Deployment, asleep")
    wait_for(lambda: status_of(cluster, namespace, "pool").get("backlog") == 0, 30, "a reading of the empty queue")
    time.sleep(SLEEP_SECONDS)

    push_tasks(redis_url, "redis-list", "jobs", 1)
    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 1, 30, "the watch waking the pool to 1")
    # The pods here never run (kwok), so the task stays queued and the wake's judgement stays in status.
    status = wait_for(
        lambda: (found := status_of(cluster, namespace, "pool")).get("backlog") == 1 and found,
        30,
        "the status of the woken pool",
    )
    memory = status["scalerMemory"]["decision"]  # a None is left out of the status patch
    assert memory.get("backlogSeen") is True, f"the wake's reading is not in the memory: {status}"
    assert memory.get("batchSince") is None, f"one task after {SLEEP_SECONDS}s asleep was taken for a batch: {status}"
    assert status["arrivalRate"] >= 0.05, f"the wake's arrivals were spread over the sleep: {status}"
