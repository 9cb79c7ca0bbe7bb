"""The API server itself refuses invalid WorkerPools, with a message a user can act on, and accepts every example."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from swell_operator.crdgen import crd_manifest
from swell_operator.model import WorkerPoolSpec

from tests.fixtures.cluster import Cluster

pytestmark = pytest.mark.cluster
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

VALID: dict[str, Any] = {
    "apiVersion": "swell.dev/v1alpha1",
    "kind": "WorkerPool",
    "metadata": {"name": "pool"},
    "spec": {
        "queue": {
            "backend": "redis-streams",
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "streams": {"streams": ["tasks"]},
        },
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
        (
            {"queue": {"backend": "kafka", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}}},
            'spec.queue.backend: Unsupported value: "kafka"',
        ),
        ({"scaleTargetRef": {"name": "celery-worker"}}, "set exactly one of worker"),
        ({"worker": None}, "set exactly one of worker"),
        (
            {"queue": {"backend": "redis-streams", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}}},
            "backend redis-streams needs queue.streams",
        ),
        (
            {"queue": {"backend": "pubsub", "redis": {"urlSecretRef": {"name": "r", "key": "u"}}}},
            "pubsub needs queue.pubsub",
        ),
        ({"concurrency": 0}, "spec.concurrency: Invalid value: 0"),
        ({"worker": {"handlers": ["translate"]}}, "spec.worker.handlers[0] in body should match"),
        ({"surprise": True}, 'unknown field "spec.surprise"'),
        (
            {"worker": {"env": [{"name": "TOKEN", "value": "x", "secretKeyRef": {"name": "s", "key": "k"}}]}},
            "env: set at most one of value, secretKeyRef, valueFrom",
        ),
        (
            {
                "queue": {
                    "backend": "redis-list",
                    "redis": {"urlSecretRef": {"name": "r", "key": "u"}},
                    "list": {"keys": []},
                }
            },
            "spec.queue.list.keys: Invalid value: 0: spec.queue.list.keys in body should have at least 1 items",
        ),
        (
            {"queue": {"backend": "pubsub", "pubsub": {"project": "p", "subscription": "s", "mode": "push"}}},
            "push mode needs pushTokenSecretRef or pushAudience",
        ),
        (
            {
                "queue": {
                    "backend": "pubsub",
                    "pubsub": {"project": "p", "subscription": "s", "pushEndpoint": "https://x/pubsub/push"},
                }
            },
            "pushEndpoint is for push mode only",
        ),
        (
            {
                "queue": {
                    "backend": "pubsub",
                    "pubsub": {
                        "project": "p",
                        "subscription": "s",
                        "mode": "push",
                        "pushAudience": "a",
                        "pushEndpoint": "https://x/?token=t",
                    },
                }
            },
            "spec.queue.pubsub.pushEndpoint in body should match",
        ),
        ({"worker": {"handlers": ["my module:Thing"]}}, "spec.worker.handlers[0] in body should match"),
        (
            {
                "worker": {
                    "env": [
                        {
                            "name": "X",
                            "valueFrom": {
                                "fieldRef": {"fieldPath": "metadata.name"},
                                "configMapKeyRef": {"name": "c", "key": "k"},
                            },
                        }
                    ]
                }
            },
            "valueFrom: set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
        ),
        (
            {"worker": {"env": [{"name": "SWELL_MAX_ATTEMPTS", "value": "9"}]}},
            "env: this variable is set by the operator from the pool's spec",
        ),
        (
            {"worker": {"podTemplate": {"spec": {"containers": [{"name": "x"}]}}}},
            'unknown field "spec.worker.podTemplate.spec.containers"',
        ),
        (
            {"worker": {"podTemplate": {"metadata": {"name": "x"}}}},
            'unknown field "spec.worker.podTemplate.metadata.name"',
        ),
    ],
    ids=[
        "min>max",
        "unknown-backend",
        "both-worker-and-target",
        "neither",
        "streams-missing",
        "pubsub-missing",
        "zero-concurrency",
        "unknown-handler",
        "unknown-field",
        "env-both",
        "no-list-keys",
        "open-push",
        "pull-push-endpoint",
        "token-in-push-endpoint",
        "handler-not-a-reference",
        "value-from-two-sources",
        "env-the-operator-sets",
        "pod-template-containers",
        "pod-template-unknown-metadata",
    ],
)
def test_invalid_pools_are_refused_with_the_reason(
    cluster: Cluster, namespace: str, crd: None, spec: dict[str, Any], message: str
) -> None:
    code, error = apply(cluster, namespace, changed(**spec))
    assert code != 0
    assert message in error, error


def contains(stored: Any, applied: Any) -> bool:
    """Everything applied is stored as written (the server may add defaults, never drop or change a field)."""
    if isinstance(applied, dict):
        return isinstance(stored, dict) and all(k in stored and contains(stored[k], v) for k, v in applied.items())
    return bool(stored == applied)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_example_is_accepted(cluster: Cluster, namespace: str, crd: None, example: Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    for doc in docs:
        assert apply(cluster, namespace, doc) == (0, ""), doc["metadata"]["name"]
    for pool in (d for d in docs if d["kind"] == "WorkerPool"):
        got = cluster.kubectl("get", "wp", pool["metadata"]["name"], "-n", namespace, "-o", "yaml").stdout
        stored = yaml.safe_load(got)["spec"]
        assert contains(stored, pool["spec"]), stored
        # The operator parses what the server stored, defaults included, with the same model.
        parsed = WorkerPoolSpec.model_validate(stored)
        assert parsed.scaling.target_wait_seconds == stored["scaling"]["targetWaitSeconds"]


def test_swell_status_lists_pools_like_kubectl_get_wp(cluster: Cluster, namespace: str, crd: None) -> None:
    import subprocess
    import sys

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "swell_cli",
                "status",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "-n",
                namespace,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

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


def test_real_world_worker_shapes_are_accepted_and_rendered(cluster: Cluster, namespace: str, crd: None) -> None:
    """Own handlers as module:Class, integer quantities, env from the downward API, a scheduling override."""
    from swell_operator.deployment import render_deployment

    worker = {
        "handlers": ["noop", "acme.tasks:Translate"],
        "resources": {"requests": {"cpu": 1, "memory": "512Mi"}, "limits": {"cpu": "1500m", "nvidia.com/gpu": 1}},
        "env": [
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "models", "key": "name", "optional": True}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        "podTemplate": {
            "metadata": {"labels": {"team": "ml"}},
            "spec": {
                "nodeSelector": {"gpu": "yes"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "securityContext": {"runAsNonRoot": True},
            },
        },
    }
    manifest = changed(worker=worker)
    assert apply(cluster, namespace, manifest) == (0, "")
    got = cluster.kubectl("get", "wp", "pool", "-n", namespace, "-o", "yaml").stdout
    stored = yaml.safe_load(got)["spec"]
    assert contains(stored, manifest["spec"]), stored
    pod = render_deployment("pool", WorkerPoolSpec.model_validate(stored), 1)["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["MODEL"]["valueFrom"]["configMapKeyRef"]["optional"] is True
    assert pod["spec"]["tolerations"][0]["key"] == "gpu" and pod["spec"]["nodeSelector"] == {"gpu": "yes"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["fsGroup"] == 65532, "the override replaced Swell's pod security"
    assert "acme.tasks:Translate" in env["SWELL_HANDLERS"]["value"]
    # The rendered Deployment is one the API server takes (dry run).
    deployment = render_deployment("pool", WorkerPoolSpec.model_validate(stored), 1)
    dry = cluster.kubectl(
        "apply", "-n", namespace, "--dry-run=server", "-f", "-", input=yaml.safe_dump(deployment), check=False
    )
    assert dry.returncode == 0, dry.stderr
