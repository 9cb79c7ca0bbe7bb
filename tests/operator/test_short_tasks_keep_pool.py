"""Tasks far shorter than the poll interval, on the real control plane, Redis and worker processes.

Each task comes and goes between two readings, so the operator's readings find the queue empty while work
keeps arriving. Judged on what the readings saw, the pool went to zero in the middle of steady work (and
woke again for the next task, a pod start later); the decision restarts the idle clock for work that came
and went since the last reading (``came_and_went`` in ``decide``). The trickle here is sent from the test,
the replicas are followed with a watch (a zero lasting less than a sampling period is still seen), and the
pool must still go to zero once the trickle stops, so a pool that never scales in cannot pass.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import Any

import pytest

from tests.operator.kube import (
    apply,
    events_for,
    pool_manifest,
    push_tasks,
    redis_secret,
    replicas_of,
    states,
    wait_for,
)

pytestmark = pytest.mark.cluster

POLL_SECONDS = 1.0
IDLE_SECONDS = 3.0
# One task every 0.6 s: one or two arrivals between readings a second apart, each done in milliseconds.
TASK_GAP_SECONDS = 0.6
TRICKLE_SECONDS = 16.0
SAMPLE_SECONDS = 0.2
# Once the trickle stops: the idle period, then this many polls for the reading, the scale and the watch.
SCALE_IN_POLLS = 6
LOCAL_WORKER: dict[str, Any] = {
    "image": "swell-worker:local",
    "handlers": ["noop"],
    "env": [{"name": "SWELL_HTTP_HOST", "value": "127.0.0.1"}],
    "podTemplate": {
        "metadata": {"annotations": {"swell.dev/run-locally": "true", "swell.dev/local-port-env": "SWELL_HTTP_PORT"}}
    },
}


class ReplicaWatch:
    """Each change of a Deployment's spec.replicas the API server reports, with when the test heard of it."""

    def __init__(self, cluster: Any, namespace: str, name: str) -> None:
        self.seen: list[tuple[float, int]] = []
        self._process = subprocess.Popen(
            [
                str(cluster.kubectl_binary),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "get",
                "deployment",
                name,
                "-n",
                namespace,
                "--watch",
                "-o",
                'jsonpath={.spec.replicas}{"\\n"}',
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip().isdigit() and int(line) != self.latest():  # status updates repeat the count
                self.seen.append((time.monotonic(), int(line)))

    def latest(self) -> int | None:
        return self.seen[-1][1] if self.seen else None

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._reader.join(timeout=10)


def pool_gauges(metrics: str, namespace: str) -> dict[str, float]:
    """The operator's per-pool series for this pool, by name (``..._count`` for the decisions made)."""
    labels = re.escape(f'{{namespace="{namespace}",workerpool="pool"}}')
    pattern = re.compile(rf"^(swell_operator_\w+){labels} (\S+)$", re.MULTILINE)
    return {name: float(value) for name, value in pattern.findall(metrics)}


def test_tasks_shorter_than_the_poll_keep_the_pool_up_until_they_stop(
    cluster: Any, namespace: str, redis_url: str, pod_runner: Any, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    scaling = {
        "pollIntervalSeconds": POLL_SECONDS,
        "idleSecondsBeforeZero": IDLE_SECONDS,
        "taskSecondsHint": 0.1,
        "targetWaitSeconds": 30,
        "scaleDownStabilizationSeconds": 1,
    }
    manifest = pool_manifest("pool", "redis-streams", "jobs", replicas=(0, 2), worker=LOCAL_WORKER, scaling=scaling)
    apply(cluster, namespace, manifest)

    def succeeded(ids: list[str]) -> int:
        return sum(state == "succeeded" for state in states(redis_url, "redis-streams", "jobs", ids).values())

    wait_for(lambda: replicas_of(cluster, namespace, "pool") == 0, 60, "the worker Deployment, asleep")
    watch = ReplicaWatch(cluster, namespace, "pool")
    try:
        wait_for(lambda: watch.latest() == 0, 30, "the replica watch's first report")
        sent = push_tasks(redis_url, "redis-streams", "jobs", 1)
        wait_for(lambda: watch.latest() == 1, 60, "the pool waking to 1 replica")
        wait_for(lambda: succeeded(sent) == 1, 60, "the first task done by the worker process")
        readings: dict[float, bool] = {}  # decision count -> that reading found nothing queued or in flight
        started = time.monotonic()
        next_task = started
        while (now := time.monotonic()) < started + TRICKLE_SECONDS:
            if now >= next_task:
                sent += push_tasks(redis_url, "redis-streams", "jobs", 1)
                next_task += TASK_GAP_SECONDS
            gauges = pool_gauges(operator_process.metrics(), namespace)
            count = gauges.get("swell_operator_decision_seconds_count")
            if count is not None and count not in readings:
                empty = gauges.get("swell_operator_queue_backlog") == 0 and gauges.get("swell_operator_in_flight") == 0
                readings[count] = empty
            time.sleep(SAMPLE_SECONDS)
        stopped = time.monotonic()
        scaled_to_zero = [
            e["message"] for e in events_for(cluster, namespace, "pool") if " -> 0" in (e.get("message") or "")
        ]
        during = [(round(t - started, 1), n) for t, n in watch.seen if started <= t <= stopped]
        at_start = [n for t, n in watch.seen if t <= started][-1:]

        assert at_start == [1], f"the trickle should start on the awake pool, saw {at_start}"
        zeros = [t for t, n in during if n == 0]
        assert not zeros, (
            f"the pool went to 0 at {zeros} s into the trickle while a task came every {TASK_GAP_SECONDS}s "
            f"(replicas seen: {during}; events: {scaled_to_zero})"
        )
        assert not scaled_to_zero, f"a scale to zero during the trickle: {scaled_to_zero}"
        empty_share = sum(readings.values()) / max(len(readings), 1)
        assert len(readings) >= TRICKLE_SECONDS / POLL_SECONDS / 2, f"too few readings seen: {len(readings)}"
        assert empty_share >= 0.5, (
            f"only {empty_share:.0%} of the readings found nothing queued or in flight: "
            "the tasks are not short enough for this test to test the rule"
        )
        wait_for(lambda: succeeded(sent) == len(sent), 30, f"all {len(sent)} tasks succeeding")

        bound = IDLE_SECONDS + SCALE_IN_POLLS * POLL_SECONDS
        wait_for(lambda: watch.latest() == 0, bound, "the pool going to 0 once the tasks stopped")
        to_zero = next(t for t, n in watch.seen if t > stopped and n == 0) - stopped
        assert to_zero >= IDLE_SECONDS - POLL_SECONDS, f"went to 0 {to_zero:.1f}s after the last task, before idle"
    finally:
        watch.stop()
