"""The API server itself refuses invalid WorkerPools, with a message a user can act on, and accepts every example."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from swell_operator.crdgen import crd_manifest

from tests.fixtures.cluster import Cluster

pytestmark = pytest.mark.cluster
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

VALID: dict[str, Any] = {
    "apiVersion": "swell.dev/v1alpha1",
    "kind": "WorkerPool",
    "metadata": {"name": "pool"},
    "spec": {
        "queue": {"backend": "redis-streams", "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
                  "streams": {"streams": ["tasks"]}},
        "replicas": {"min": 0, "max": 10},
        "worker": {"handlers": ["noop"]},
    },
}


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd_manifest()))
    cluster.kubectl("wait", "--for=condition=Established", "crd/workerpools.swell.dev", timeout=60)


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> tuple[int, str]:
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False)
    return result.returncode, result.stderr


def changed(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(VALID)
    for key, value in spec.items():
        if value is None:
            manifest["spec"].pop(key)
        else:
            manifest["spec"][key] = value
    return manifest


def test_a_valid_pool_is_accepted_with_defaults(cluster: Cluster, namespace: str, crd: None) -> None:
    assert apply(cluster, namespace, VALID) == (0, "")
    stored = yaml.safe_load(cluster.kubectl("get", "wp", "pool", "-n", namespace, "-o", "yaml").stdout)
    assert stored["spec"]["scaling"]["targetWaitSeconds"] == 30
    assert stored["spec"]["concurrency"] == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": {"min": 5, "max": 2}}, "replicas.min must be <= replicas.max"),
        ({"queue": {"backend": "kafka", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}}},
         'spec.queue.backend: Unsupported value: "kafka"'),
        ({"scaleTargetRef": {"name": "celery-worker"}}, "set exactly one of worker"),
        ({"worker": None}, "set exactly one of worker"),
        ({"queue": {"backend": "redis-streams", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}}},
         "backend redis-streams needs queue.streams"),
        ({"queue": {"backend": "pubsub", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}}},
         "pubsub needs queue.pubsub"),
        ({"concurrency": 0}, "spec.concurrency: Invalid value: 0"),
        ({"worker": {"handlers": ["translate"]}}, 'Unsupported value: "translate"'),
        ({"surprise": True}, 'unknown field "spec.surprise"'),
    ],
    ids=["min>max", "unknown-backend", "both-worker-and-target", "neither", "streams-missing", "pubsub-missing",
         "zero-concurrency", "unknown-handler", "unknown-field"],
)
def test_invalid_pools_are_refused_with_the_reason(
    cluster: Cluster, namespace: str, crd: None, spec: dict[str, Any], message: str
) -> None:
    code, error = apply(cluster, namespace, changed(**spec))
    assert code != 0
    assert message in error, error


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_example_is_accepted(cluster: Cluster, namespace: str, crd: None, example: Path) -> None:
    # rq.yaml and celery.yaml reference the Secret defined in redis-streams.yaml: apply that first.
    base = [d for d in yaml.safe_load_all((example.parent / "redis-streams.yaml").read_text()) if d["kind"] == "Secret"]
    docs = base + [d for d in yaml.safe_load_all(example.read_text()) if d]
    for doc in docs:
        assert apply(cluster, namespace, doc) == (0, ""), doc["metadata"]["name"]
    pools = [d for d in docs if d["kind"] == "WorkerPool"]
    assert pools
    for pool in pools:
        cluster.kubectl("get", "wp", pool["metadata"]["name"], "-n", namespace)


def test_swell_status_lists_pools_like_kubectl_get_wp(cluster: Cluster, namespace: str, crd: None) -> None:
    import subprocess
    import sys

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "swell_cli", "status", "--kubeconfig", str(cluster.kubeconfig),
                               "-n", namespace, *args], capture_output=True, text=True, timeout=60)

    empty = status()
    assert empty.returncode == 0 and "No WorkerPools found." in empty.stdout
    assert apply(cluster, namespace, VALID) == (0, "")
    table = status()
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:4] == ["NAMESPACE", "NAME", "BACKEND", "BACKLOG"]
    assert row.split()[:3] == [namespace, "pool", "redis-streams"]
    listed = yaml.safe_load(status("-o", "json").stdout)
    assert [p["metadata"]["name"] for p in listed] == ["pool"]
