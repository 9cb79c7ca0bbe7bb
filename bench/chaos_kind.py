"""Pod-level chaos on kind: worker pods deleted and a node drained while a WorkerPool drains a burst.

Everything is what a user runs (``tests/tooling/stack.py``): the images built from the Dockerfile, the
chart-installed operator and the in-cluster Redis with AOF. The pool's worker pods are real containers
on the kind nodes; the bench reaches Redis through ``kubectl port-forward`` and counts tasks with
``bench/chaos.py``'s tally (done, dead-lettered, lost, duplicated, time to recover), so these rows sit
next to the process-level scenarios in bench/results/chaos.json.

- ``kind_pod_deletes``: worker pods deleted during the burst, alternately gracefully (SIGTERM, the
  worker finishes what it holds) and with ``--grace-period=0 --force`` (the API object goes at once, the
  container is killed: what it held waits out the consumer timeout). Recovery counts from the last delete.
- ``kind_node_drain``: ``kubectl drain --ignore-daemonsets --delete-emptydir-data`` of a worker node
  holding pool pods, then uncordon. The drained node is one that does not run the run's Redis (a Redis
  that goes away is ``redis_restart``'s scenario); whatever else runs there, the operator included, is
  evicted as in any drain and listed in the row. Recovery counts from the uncordon.

    python -m bench.chaos --scenarios kind_pod_deletes kind_node_drain
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

from swell_operator.deployment import POOL_LABEL

from bench.chaos import CONSUMER_TIMEOUT_SECONDS, QUEUE, Outcome, burst, outcome, settle, tally
from tests.fixtures.redis_server import RedisServer
from tests.operator.kube import pool_manifest, replicas_of, wait_for
from tests.tooling.stack import RELEASE_NAMESPACE, KindStack, bring_up

NAMESPACE = "swell-chaos"
POOL = "pod-chaos"
TASK_SECONDS = 0.5
SCALING = {
    "targetWaitSeconds": 10,
    "taskSecondsHint": TASK_SECONDS,
    "idleSecondsBeforeZero": 10,
    "scaleDownStabilizationSeconds": 5,
    "pollIntervalSeconds": 0.5,
}


def forwarded_redis(port: int) -> RedisServer:
    """The in-cluster Redis behind a port-forward, as the tally helpers take it (never started here)."""
    redis = RedisServer(port)
    shutil.rmtree(redis.dir, ignore_errors=True)
    return redis


@contextlib.contextmanager
def chaos_stack(namespace: str = NAMESPACE) -> Iterator[tuple[KindStack, RedisServer]]:
    """The kind stack in a namespace of the bench's own, deleted afterwards with everything in it."""
    stack = bring_up(namespace, log=lambda message: print(f"[kind] {message}", flush=True))
    try:
        with stack.port_forward("redis", 6379) as port:
            yield stack, forwarded_redis(port)
    finally:
        stack.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s", check=False, timeout=200)


@contextlib.contextmanager
def chaos_pool(stack: KindStack, redis: RedisServer, backend: str, max_replicas: int = 6) -> Iterator[str]:
    """The burst's WorkerPool on ``QUEUE`` (emptied first), at zero when the block starts; deleted after."""
    client = redis.client()
    try:
        client.delete(QUEUE)
    finally:
        client.close()
    worker = {
        "handlers": ["sleep"],
        "terminationGracePeriodSeconds": 30,
        "maxAttempts": 20,  # as bench/chaos.py: crashes count as attempts
        "env": [{"name": "SWELL_CONSUMER_TIMEOUT_SECONDS", "value": str(CONSUMER_TIMEOUT_SECONDS)}],
    }
    manifest = pool_manifest(
        POOL, backend, QUEUE, concurrency=4, replicas=(0, max_replicas), scaling=SCALING, worker=worker
    )
    stack.apply(manifest)
    try:
        wait_for(lambda: replicas_of(stack, stack.namespace, POOL) == 0, 120, "the chaos pool's Deployment at zero")
        yield POOL
    finally:
        stack.kubectl(
            "delete", "workerpools.swell.dev", POOL, "-n", stack.namespace, "--wait=true", "--timeout=90s", check=False
        )
        # Its terminating workers would make the queue again (a stream where the next pool wants a list).
        stack.kubectl(
            "wait", "--for=delete", "pod", "-l", f"{POOL_LABEL}={POOL}", "-n", stack.namespace, "--timeout=90s",
            check=False, timeout=100,
        )  # fmt: skip


def pool_pods(stack: KindStack, pool: str) -> list[dict[str, Any]]:
    """The pool's pods that are running and not being deleted."""
    items = stack.json("pods", "-l", f"{POOL_LABEL}={pool}")["items"]
    return [
        pod
        for pod in items
        if not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get("phase") == "Running"
    ]


def under_way(stack: KindStack, redis: RedisServer, ids: list[str], pods: int, share: float = 0.1) -> list[str]:
    """Waits until ``pods`` pool pods run and ``share`` of the burst is done; their names."""

    def ready() -> list[str] | None:
        running = pool_pods(stack, POOL)
        if len(running) >= pods and tally(redis, ids)["done"] >= share * len(ids):
            return [pod["metadata"]["name"] for pod in running]
        return None

    return wait_for(ready, 240, f"{pods} running pool pods and {share:.0%} of the burst done", interval=1.0)


def pod_deletes(
    stack: KindStack, redis: RedisServer, backend: str, tasks: int = 3000, deletes: int = 6, max_replicas: int = 6
) -> Outcome:
    """Deletes a random running pool pod ``deletes`` times, graceful and forced in turn, 3-5 s apart."""
    with chaos_pool(stack, redis, backend, max_replicas):
        ids = burst(redis, backend, tasks, seconds=TASK_SECONDS)
        under_way(stack, redis, ids, pods=2)
        log: list[dict[str, Any]] = []
        for n in range(deletes):
            forced = n % 2 == 1
            victim = random.choice(pool_pods(stack, POOL))
            name = str(victim["metadata"]["name"])
            flags = ["--grace-period=0", "--force"] if forced else ["--wait=false"]
            stack.kubectl("delete", "pod", name, "-n", stack.namespace, *flags, check=False)
            log.append({"pod": name, "node": victim["spec"].get("nodeName"), "forced": forced})
            if n < deletes - 1:
                time.sleep(random.uniform(3, 5))
                wait_for(lambda: pool_pods(stack, POOL), 120, "a running pool pod to delete", interval=0.5)
        last_delete = time.monotonic()
        at_last = tally(redis, ids)
        counts, recovery = settle(redis, ids, timeout=300, since=last_delete)
        return outcome(
            "kind_pod_deletes",
            backend,
            ids,
            counts,
            recovery,
            deletes=log,
            graceful_deletes=sum(1 for entry in log if not entry["forced"]),
            forced_deletes=sum(1 for entry in log if entry["forced"]),
            unsettled_at_last_delete=at_last["unsettled"],
            consumer_timeout_seconds=CONSUMER_TIMEOUT_SECONDS,
            task_seconds=TASK_SECONDS,
        )


def redis_node(stack: KindStack) -> str:
    pods = stack.json("pods", "-l", "app.kubernetes.io/name=redis")["items"]
    return str(pods[0]["spec"]["nodeName"])


def node_to_drain(stack: KindStack, pool: str) -> str:
    """The worker node with the most running pool pods among those not running the run's Redis."""
    nodes = stack.json("nodes", namespace=RELEASE_NAMESPACE)["items"]
    workers = [
        str(node["metadata"]["name"])
        for node in nodes
        if "node-role.kubernetes.io/control-plane" not in node["metadata"].get("labels", {})
    ]
    candidates = [name for name in workers if name != redis_node(stack)]
    if not candidates:
        raise RuntimeError(f"every worker node runs the run's Redis: {workers}")
    on = [str(pod["spec"].get("nodeName")) for pod in pool_pods(stack, pool)]
    return max(sorted(candidates), key=on.count)


def pods_on(stack: KindStack, node: str) -> list[str]:
    """``namespace/name`` of every pod on ``node`` that is not a DaemonSet's."""
    found = stack.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={node}", "-o", "json").stdout
    return sorted(
        f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        for pod in json.loads(found)["items"]
        if not any(ref.get("kind") == "DaemonSet" for ref in pod["metadata"].get("ownerReferences", []))
    )


def node_drain(stack: KindStack, redis: RedisServer, backend: str, tasks: int = 3000, max_replicas: int = 6) -> Outcome:
    """Drains a worker node holding pool pods mid-burst (cordon + evictions), then uncordons it."""
    with chaos_pool(stack, redis, backend, max_replicas):
        ids = burst(redis, backend, tasks, seconds=TASK_SECONDS)
        under_way(stack, redis, ids, pods=2)
        node = node_to_drain(stack, POOL)
        evicted = pods_on(stack, node)
        pool_pods_on_node = sum(1 for pod in pool_pods(stack, POOL) if pod["spec"].get("nodeName") == node)
        started = time.monotonic()
        try:
            drained = stack.kubectl(
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=180s",
                check=False,
                timeout=200,
            )
            drain_seconds = round(time.monotonic() - started, 2)
        finally:
            stack.kubectl("uncordon", node, check=False)
        uncordoned = time.monotonic()
        at_uncordon = tally(redis, ids)
        counts, recovery = settle(redis, ids, timeout=300, since=uncordoned)
        for deployment in ("swell-operator", "swell-vectors"):
            stack.kubectl(
                "rollout", "status", f"deployment/{deployment}", "-n", RELEASE_NAMESPACE, "--timeout=180s",
                check=False, timeout=200,
            )  # fmt: skip
        return outcome(
            "kind_node_drain",
            backend,
            ids,
            counts,
            recovery,
            node=node,
            drain_succeeded=drained.returncode == 0,
            drain_seconds=drain_seconds,
            pool_pods_on_node=pool_pods_on_node,
            evicted=evicted,
            operator_evicted=any(name.startswith(f"{RELEASE_NAMESPACE}/swell-operator") for name in evicted),
            unsettled_at_uncordon=at_uncordon["unsettled"],
            consumer_timeout_seconds=CONSUMER_TIMEOUT_SECONDS,
            task_seconds=TASK_SECONDS,
        )


def run(scenario: str, backends: tuple[str, ...], short: bool) -> list[Outcome]:
    """One stack for the scenario's backends, its namespace deleted at the end."""
    tasks = 400 if short else 3000
    results = []
    with chaos_stack(f"{NAMESPACE}-{uuid.uuid4().hex[:4]}") as (stack, redis):
        for backend in backends:
            if scenario == "kind_pod_deletes":
                results.append(pod_deletes(stack, redis, backend, tasks=tasks, deletes=2 if short else 6))
            else:
                results.append(node_drain(stack, redis, backend, tasks=tasks))
            print(f"[kind] {scenario} {backend}: {results[-1]}", flush=True)
    return results
