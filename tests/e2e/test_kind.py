"""Swell on kind with real containers: the images built from the Dockerfile, the chart, in-cluster Redis.

Each test owns its pools and queues in the tier's namespace and deletes its pools at the end, so the
cluster is shared by the whole tier (creating one costs ~30 s and loading the images more).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.operator.kube import pool_manifest, replicas_of, states, wait_for
from tests.tooling.kind.cluster import canonical_reference, load_images, node_image_tags, node_names
from tests.tooling.stack import KindStack

# The first test of the tier also pays for the stack: images, cluster, chart (minutes when cold).
pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

LABEL = "swell.dev/workerpool"


def worker_pods(stack: KindStack, pool: str) -> dict[str, dict[str, Any]]:
    items = stack.json("pods", "-l", f"{LABEL}={pool}")["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def running(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("state", {}).get("running") for s in statuses)


@contextlib.contextmanager
def pool_applied(stack: KindStack, manifest: dict[str, Any]) -> Iterator[str]:
    """Apply a WorkerPool (the stack made its Redis Secret) and delete it afterwards, whatever happened."""
    name = str(manifest["metadata"]["name"])
    stack.apply(manifest)
    try:
        wait_for(
            lambda: replicas_of(stack, stack.namespace, name) is not None,
            60,
            f"the operator creating Deployment {name}",
        )
        yield name
    finally:
        stack.kubectl(
            "delete", "workerpools.swell.dev", name, "-n", stack.namespace, "--wait=true", "--timeout=60s", check=False
        )


def submit(redis_url: str, backend: str, queue: str, handler: str, payloads: list[dict[str, Any]]) -> list[str]:
    from swell_worker.client import SwellClient

    async def go() -> list[str]:
        async with SwellClient.for_redis(redis_url, queue, backend=backend) as client:  # type: ignore[arg-type]
            return [await client.submit(handler, payload) for payload in payloads]

    return asyncio.run(go())


def effects(redis_url: str, name: str) -> dict[str, int]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {k: int(v) for k, v in client.hgetall(f"swell:effects:{name}").items()}
    finally:
        client.close()


SLEEP_POOL_SCALING = {
    "targetWaitSeconds": 10,
    "taskSecondsHint": 0.3,
    "idleSecondsBeforeZero": 10,
    "scaleDownStabilizationSeconds": 5,
    "pollIntervalSeconds": 0.5,
}


@pytest.mark.parametrize("backend", ["redis-streams", "redis-list"])
def test_a_burst_scales_real_worker_containers_out_from_zero_runs_every_task_once_and_returns_to_zero(
    kind_stack: KindStack, redis_url: str, backend: str
) -> None:
    pool = f"burst-{backend.split('-')[1]}"
    queue, effect = f"{pool}-q", f"{pool}-{uuid.uuid4().hex[:6]}"
    manifest = pool_manifest(
        pool,
        backend,
        queue,
        concurrency=4,
        replicas=(0, 6),
        scaling=SLEEP_POOL_SCALING,
        worker={"handlers": ["sleep"], "terminationGracePeriodSeconds": 30},
    )
    with pool_applied(kind_stack, manifest):
        assert replicas_of(kind_stack, kind_stack.namespace, pool) == 0, (
            "a new pool with an empty queue must start at zero"
        )
        ids = submit(redis_url, backend, queue, "sleep", [{"seconds": 0.3, "incr": effect}] * 600)
        peak = 0

        def all_done() -> bool:
            nonlocal peak
            peak = max(peak, sum(1 for p in worker_pods(kind_stack, pool).values() if running(p)))
            return len(effects(redis_url, effect)) == len(ids)

        wait_for(all_done, 300, "600 tasks done by real worker containers", interval=1.0)
        assert peak >= 3, f"the burst never scaled out to 3 running worker containers (peak {peak})"
        assert set(states(redis_url, backend, queue, ids).values()) == {"succeeded"}
        counts = effects(redis_url, effect)
        assert set(counts) == set(ids) and set(counts.values()) == {1}, "a task ran twice or never"
        wait_for(
            lambda: replicas_of(kind_stack, kind_stack.namespace, pool) == 0 and not worker_pods(kind_stack, pool),
            120,
            "the pool back at zero with no worker pods",
            interval=1.0,
        )


def test_documents_indexed_by_one_pool_are_found_by_another_through_the_default_shared_store(
    kind_stack: KindStack, redis_url: str
) -> None:
    """Two pools, so the search surely runs in another pod; neither names a store: the chart's default serves."""
    scaling = {"idleSecondsBeforeZero": 30, "pollIntervalSeconds": 0.5}
    collection = f"e2e_{uuid.uuid4().hex[:8]}"
    env = [{"name": "SWELL_VECTOR_COLLECTION", "value": collection}, {"name": "SWELL_MODEL_THREADS", "value": "1"}]
    indexer = pool_manifest(
        "indexer",
        "redis-streams",
        "index-q",
        concurrency=2,
        replicas=(0, 1),
        scaling=scaling,
        worker={"handlers": ["index"], "env": env},
    )
    searcher = pool_manifest(
        "searcher",
        "redis-streams",
        "search-q",
        concurrency=2,
        replicas=(0, 1),
        scaling=scaling,
        worker={"handlers": ["search"], "env": env},
    )
    docs = [{"id": f"doc-{i}", "text": f"Note {i} about the weather, trains and timetables."} for i in range(20)]
    docs[7]["text"] = "Sourdough bread needs a lively starter, flour, water and a long, slow rise."
    with pool_applied(kind_stack, indexer), pool_applied(kind_stack, searcher):
        ids = submit(
            redis_url, "redis-streams", "index-q", "index", [{"documents": docs[i : i + 5]} for i in range(0, 20, 5)]
        )
        wait_for(
            lambda: set(states(redis_url, "redis-streams", "index-q", ids).values()) == {"succeeded"},
            300,
            "four index tasks done",
            interval=1.0,
        )

        from swell_worker.client import SwellClient

        async def search() -> dict[str, Any]:
            async with SwellClient.for_redis(redis_url, "search-q", backend="redis-streams") as client:
                return await client.call("search", {"query": "what does sourdough need to rise?", "k": 3}, timeout=300)

        hits = asyncio.run(search())["hits"]
        assert hits and hits[0]["id"] == "doc-7", hits
        indexing_pods, searching_pods = worker_pods(kind_stack, "indexer"), worker_pods(kind_stack, "searcher")
        assert searching_pods and not set(searching_pods) & set(indexing_pods)


def test_a_worker_pod_killed_mid_burst_loses_no_task(kind_stack: KindStack, redis_url: str) -> None:
    pool, queue, effect = "chaos", "chaos-q", f"chaos-{uuid.uuid4().hex[:6]}"
    worker = {
        "handlers": ["sleep"],
        "terminationGracePeriodSeconds": 30,
        "env": [{"name": "SWELL_CONSUMER_TIMEOUT_SECONDS", "value": "10"}],
    }
    manifest = pool_manifest(
        pool, "redis-streams", queue, concurrency=4, replicas=(0, 4), scaling=SLEEP_POOL_SCALING, worker=worker
    )
    with pool_applied(kind_stack, manifest):
        ids = submit(redis_url, "redis-streams", queue, "sleep", [{"seconds": 0.5, "incr": effect}] * 400)
        victims = wait_for(
            lambda: (
                [n for n, p in worker_pods(kind_stack, pool).items() if running(p)]
                if len(effects(redis_url, effect)) >= 40
                else None
            ),
            180,
            "work under way",
        )
        kind_stack.kubectl("delete", "pod", victims[0], "-n", kind_stack.namespace, "--grace-period=0", "--force")
        wait_for(
            lambda: len(effects(redis_url, effect)) == len(ids), 300, "every task done after the kill", interval=1.0
        )
        assert set(states(redis_url, "redis-streams", queue, ids).values()) == {"succeeded"}


def test_scale_in_sends_sigterm_only_to_the_idle_worker_containers(kind_stack: KindStack, redis_url: str) -> None:
    """Three pods take one task each; two finish quickly. Only their containers may be stopped."""
    pool, queue, effect = "scalein", "scalein-q", f"scalein-{uuid.uuid4().hex[:6]}"
    scaling = {
        "targetWaitSeconds": 1,
        "taskSecondsHint": 10,
        "scaleDownStabilizationSeconds": 2,
        "idleSecondsBeforeZero": 120,
        "pollIntervalSeconds": 0.5,
    }
    manifest = pool_manifest(
        pool,
        "redis-streams",
        queue,
        concurrency=1,
        replicas=(0, 3),
        scaling=scaling,
        worker={"handlers": ["sleep"], "terminationGracePeriodSeconds": 60},
    )
    logs: dict[str, list[str]] = {}
    followers: list[subprocess.Popen[str]] = []

    def follow(pod: str) -> None:
        process = subprocess.Popen(
            [
                str(kind_stack.cluster.kubectl),
                "--kubeconfig",
                str(kind_stack.kubeconfig),
                "logs",
                "-f",
                "-n",
                kind_stack.namespace,
                pod,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        followers.append(process)
        lines = logs.setdefault(pod, [])
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    try:
        with pool_applied(kind_stack, manifest):
            ids = submit(
                redis_url,
                "redis-streams",
                queue,
                "sleep",
                [{"seconds": 45, "incr": effect}] + [{"seconds": 8, "incr": effect}] * 2,
            )
            pods = wait_for(
                lambda: (
                    (p := [n for n, v in worker_pods(kind_stack, pool).items() if running(v)]) and len(p) == 3 and p
                ),
                180,
                "three running worker containers",
            )
            for pod in pods:
                threading.Thread(target=follow, args=(pod,), daemon=True).start()
            wait_for(lambda: len(effects(redis_url, effect)) == 2, 120, "the two short tasks done", interval=0.5)
            wait_for(lambda: replicas_of(kind_stack, kind_stack.namespace, pool) == 1, 60, "scale-in to one replica")
            survivors = wait_for(
                lambda: (p := worker_pods(kind_stack, pool)) and len(p) == 1 and p, 90, "two pods removed"
            )
            (survivor,) = survivors
            time.sleep(2)  # let the followers read the stopped containers' last lines
            stopped = {pod for pod in pods if any("stop requested" in line for line in logs.get(pod, []))}
            assert stopped == set(pods) - {survivor}, f"SIGTERM reached {stopped}, survivor {survivor}"
            wait_for(lambda: len(effects(redis_url, effect)) == 3, 90, "the long task finished in place")
            assert effects(redis_url, effect)[ids[0]] == 1, "the long task was interrupted and run again"
            assert not any("stop requested" in line for line in logs.get(survivor, []))
    finally:
        for process in followers:
            process.terminate()


def test_a_deployment_that_cannot_roll_out_fails_with_what_its_pods_say(kind_stack: KindStack) -> None:
    """The stack's bring-up once failed on CI with only "timed out waiting for the condition"."""
    name = f"never-pulled-{uuid.uuid4().hex[:8]}"
    image = f"swell-absent:{name}"  # on no node, and no registry answers here
    kind_stack.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent"}]},
                },
            },
        }
    )
    try:
        with pytest.raises(AssertionError) as failed:
            kind_stack.wait_rolled_out(name, kind_stack.namespace, timeout=20)
        report = str(failed.value)
        assert f"deployment/{name} in {kind_stack.namespace} did not roll out in 20s" in report
        assert f"{name}-" in report  # the pod, by name
        assert image in report and ("ErrImagePull" in report or "ImagePullBackOff" in report), report
    finally:
        kind_stack.kubectl("delete", "deployment", name, "-n", kind_stack.namespace, "--wait=false", check=False)


def test_an_invalid_workerpool_is_refused_by_the_api_server_with_the_reason(kind_stack: KindStack) -> None:
    manifest = pool_manifest("invalid", "redis-streams", "invalid-q", concurrency=0, replicas=(5, 2))
    refused = kind_stack.kubectl(
        "apply", "-n", kind_stack.namespace, "-f", "-", input=json.dumps(manifest), check=False
    )
    assert refused.returncode != 0
    assert "concurrency" in refused.stderr and "replicas" in refused.stderr, refused.stderr
    assert (
        kind_stack.kubectl(
            "get", "workerpools.swell.dev", "invalid", "-n", kind_stack.namespace, check=False
        ).returncode
        != 0
    )


def test_only_the_latest_build_of_each_image_stays_in_docker_and_on_the_nodes(kind_stack: KindStack) -> None:
    """Every rebuild is loaded under a new tag; keeping them all filled the disk of the suite's machine."""
    for ref in (kind_stack.images.worker, kind_stack.images.operator, kind_stack.images.vector_store):
        repository, _, tag = ref.rpartition(":")
        listed = subprocess.run(
            ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        version = tag.rpartition("-")[0]
        assert [found for found in listed if found.startswith(f"{repository}:{version}-")] == [ref]

    repository = f"swell-load-probe-{uuid.uuid4().hex[:8]}"
    builds = [f"{repository}:{n}" for n in (1, 2)]
    for n, ref in enumerate(builds):
        dockerfile = f"FROM {kind_stack.images.redis}\nLABEL dev.swell.load-probe={n}\n"
        subprocess.run(["docker", "build", "-q", "-t", ref, "-"], input=dockerfile, text=True, check=True)
    nodes = node_names(kind_stack.cluster)
    try:
        load_images(kind_stack.cluster, builds[:1])
        load_images(kind_stack.cluster, builds[1:])
        held = {node: {tag for _, image_tags in node_image_tags(node) for tag in image_tags} for node in nodes}
        workers = sorted(node for node in nodes if "control-plane" not in node)
        assert (
            workers and sorted(node for node, tags in held.items() if canonical_reference(builds[1]) in tags) == workers
        )
        assert not [node for node, tags in held.items() if canonical_reference(builds[0]) in tags], "a replaced build"
        stack_images = dataclasses.astuple(kind_stack.images)
        missing = {node: [i for i in stack_images if canonical_reference(i) not in held[node]] for node in workers}
        assert not any(missing.values()), f"images missing on nodes that run pods: {missing}"
    finally:
        for node in nodes:
            subprocess.run(
                ["docker", "exec", node, "crictl", "rmi", *map(canonical_reference, builds)],
                capture_output=True,
                check=False,
            )
        subprocess.run(["docker", "rmi", *builds], capture_output=True, check=False)
