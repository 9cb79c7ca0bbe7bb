"""What a pool leaves out comes from the operator's settings (the chart's values), read at every reconcile.

The worker image and the shared vector store are never written into the stored WorkerPool, so restarting
the operator with new settings (what a chart upgrade does) moves every pool that did not choose its own.
A pool serving index or search with no shared store gets no workers, a Degraded condition and a Warning
Event, never a per-pod file that would be lost at zero.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.operator.kube import apply, condition, events_for, get, pool_manifest, redis_secret, status_of, wait_for

pytestmark = pytest.mark.cluster

STORE = "http://milvus.vectors:19530"


def container(cluster: Any, namespace: str, deployment: str) -> dict[str, Any] | None:
    found = get(cluster, namespace, "deployment", deployment)
    if found is None:
        return None
    containers: list[dict[str, Any]] = found["spec"]["template"]["spec"]["containers"]
    return containers[0]


def image_of(cluster: Any, namespace: str, deployment: str) -> str | None:
    found = container(cluster, namespace, deployment)
    return None if found is None else str(found["image"])


def env_value(cluster: Any, namespace: str, deployment: str, name: str) -> str | None:
    found = container(cluster, namespace, deployment) or {}
    return next((str(e.get("value")) for e in found.get("env", []) if e["name"] == name), None)


def test_pools_follow_the_operators_worker_image_until_they_name_their_own(
    cluster: Any, namespace: str, redis_url: str, start_operator: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    first = start_operator(extra_args=("--worker-image", "swell-worker:chart-1"))
    apply(cluster, namespace, pool_manifest("follows", "redis-list", "a", worker={"handlers": ["noop"]}))
    apply(cluster, namespace, pool_manifest("pinned", "redis-list", "b",
                                            worker={"image": "example/own:7", "handlers": ["noop"]}))
    wait_for(lambda: image_of(cluster, namespace, "follows") == "swell-worker:chart-1", 30,
             "the Deployment runs the operator's worker image")
    wait_for(lambda: image_of(cluster, namespace, "pinned") == "example/own:7", 30, "a pool's own image is kept")
    stored = get(cluster, namespace, "workerpools.swell.dev", "follows")
    assert stored is not None and "image" not in stored["spec"]["worker"], "the default was frozen into the pool"

    # A chart upgrade: the operator restarts with a new worker image.
    first.stop()
    start_operator(extra_args=("--worker-image", "swell-worker:chart-2"))
    wait_for(lambda: image_of(cluster, namespace, "follows") == "swell-worker:chart-2", 30,
             "the running pool moves to the upgraded worker image")
    assert image_of(cluster, namespace, "pinned") == "example/own:7"


def test_index_pool_without_a_shared_store_gets_no_workers_and_says_why(
    cluster: Any, namespace: str, redis_url: str, operator_process: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    apply(cluster, namespace, pool_manifest("docs", "redis-list", "docs", replicas=(1, 2),
                                            worker={"handlers": ["embed", "index"]}))
    degraded = wait_for(lambda: (d := condition(status_of(cluster, namespace, "docs"), "Degraded"))
                        .get("reason") == "NoVectorStore" and d, 30, "Degraded with reason NoVectorStore")
    assert degraded["status"] == "True"
    assert "vectorUri" in degraded["message"] and "vectorStore.defaultUri" in degraded["message"]
    assert condition(status_of(cluster, namespace, "docs"), "Ready")["status"] == "False"
    warning = wait_for(lambda: [e for e in events_for(cluster, namespace, "docs") if e["reason"] == "NoVectorStore"],
                       30, "a NoVectorStore Event")
    assert warning[0]["type"] == "Warning"
    assert get(cluster, namespace, "deployment", "docs") is None, "workers were started without a vector store"

    # Naming a store lets the pool run, with the store in every worker's environment.
    cluster.kubectl("patch", "workerpools.swell.dev", "docs", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"worker": {"vectorUri": STORE}}}))
    wait_for(lambda: env_value(cluster, namespace, "docs", "SWELL_VECTOR_URI") == STORE, 30,
             "the Deployment is created with the pool's store")
    wait_for(lambda: condition(status_of(cluster, namespace, "docs"), "Degraded").get("reason") != "NoVectorStore",
             30, "the NoVectorStore condition is replaced by the scaler's")
    # Pools that neither index nor search need no store.
    apply(cluster, namespace, pool_manifest("plain", "redis-list", "plain", worker={"handlers": ["embed"]}))
    wait_for(lambda: get(cluster, namespace, "deployment", "plain"), 30, "an embed-only pool runs without a store")
    assert env_value(cluster, namespace, "plain", "SWELL_VECTOR_URI") is None


def test_the_operators_default_store_serves_pools_that_name_none(
    cluster: Any, namespace: str, redis_url: str, start_operator: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    start_operator(extra_args=("--default-vector-uri", STORE))
    apply(cluster, namespace, pool_manifest("search", "redis-list", "q", worker={"handlers": ["search"]}))
    wait_for(lambda: env_value(cluster, namespace, "search", "SWELL_VECTOR_URI") == STORE, 30,
             "the pool's workers use the operator's default store")
    stored = get(cluster, namespace, "workerpools.swell.dev", "search")
    assert stored is not None and "vectorUri" not in stored["spec"]["worker"]


def test_the_api_server_refuses_a_vector_store_that_is_a_file(
    cluster: Any, namespace: str, workerpool_crd: str
) -> None:
    manifest = pool_manifest("lite", "redis-list", "q", worker={"handlers": ["index"], "vectorUri": "/tmp/v.db"})
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest),
                             check=False)
    assert result.returncode != 0
    assert "vectorUri" in result.stderr
