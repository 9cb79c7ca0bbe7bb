"""The local control plane is a real one: Deployments get pods, scale-in picks by deletion cost, CRDs validate."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import yaml

from tests.fixtures.cluster import Cluster
from tests.tooling.controlplane.podrunner import PodRunner

pytestmark = pytest.mark.cluster
T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: T = probe()
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


def deployment(name: str, replicas: int, *, command: list[str] | None = None, grace: int = 30) -> str:
    container: dict[str, object] = {"name": "main", "image": "example.invalid/app:1"}
    annotations = {}
    if command is not None:
        container["command"] = command
        annotations = {"swell.dev/run-locally": "true"}
    return yaml.safe_dump({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": grace},
            },
        },
    })


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, object]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json")
    items: list[dict[str, object]] = json.loads(out.stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]  # type: ignore[attr-defined]


def running(cluster: Cluster, namespace: str, app: str) -> list[str]:
    return [p["metadata"]["name"] for p in pods(cluster, namespace, app)  # type: ignore[index]
            if p["status"].get("phase") == "Running"]  # type: ignore[attr-defined]


def test_deployment_gets_running_pods_scales_to_zero_and_is_garbage_collected(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", 3))
    names = wait_for(lambda: len(running(cluster, namespace, "web")) == 3 and running(cluster, namespace, "web"),
                     "3 running pods")
    nodes = {json.loads(cluster.kubectl("get", "pod", n, "-n", namespace, "-o", "json").stdout)["spec"]["nodeName"]
             for n in names}
    assert all(node.startswith("node-") for node in nodes)
    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=0")
    wait_for(lambda: not cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.strip(), "pods gone")
    assert cluster.kubectl("get", "rs", "-n", namespace, "-o", "name").stdout.strip()
    cluster.kubectl("delete", "deployment/web", "-n", namespace)
    wait_for(lambda: not cluster.kubectl("get", "rs", "-n", namespace, "-o", "name").stdout.strip(),
             "the ReplicaSet garbage-collected")


SIGTERM_SCRIPT = (
    "import signal, sys, time, os\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('running as', os.environ['POD_NAME'], flush=True)\n"
    "while True: time.sleep(0.1)\n"
)


def test_pod_runner_runs_pods_and_deletion_cost_picks_who_goes(
    cluster: Cluster, namespace: str, pod_runner: PodRunner
) -> None:
    manifest = yaml.safe_load(deployment("w", 2, command=["python", "-c", SIGTERM_SCRIPT]))
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    names = wait_for(lambda: len(running(cluster, namespace, "w")) == 2 and running(cluster, namespace, "w"),
                     "2 running pods")
    processes = {n: pod_runner.wait_for_process(namespace, n) for n in names}
    wait_for(lambda: all("running as" in p.log() for p in processes.values()), "both processes running")
    assert {p.popen.pid for p in processes.values()}.__len__() == 2
    for name, process in processes.items():
        assert f"running as {name}" in process.log()
    keep, drop = names
    cluster.kubectl("annotate", "pod", keep, "-n", namespace, "controller.kubernetes.io/pod-deletion-cost=1000")
    cluster.kubectl("annotate", "pod", drop, "-n", namespace, "controller.kubernetes.io/pod-deletion-cost=-1000")
    cluster.kubectl("scale", "deployment/w", "-n", namespace, "--replicas=1")
    wait_for(lambda: processes[drop].exit_code is not None, f"{drop} exited")
    assert processes[drop].exit_code == 0
    assert processes[drop].signals == ["SIGTERM"]
    assert "got SIGTERM" in processes[drop].log()
    time.sleep(1)
    assert processes[keep].exit_code is None
    assert running(cluster, namespace, "w") == [keep]


def test_grace_period_ends_with_sigkill(cluster: Cluster, namespace: str, pod_runner: PodRunner) -> None:
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n" \
               "while True: time.sleep(0.1)\n"
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=deployment("s", 1, command=[sys.executable, "-c", stubborn], grace=1))
    (name,) = wait_for(lambda: running(cluster, namespace, "s"), "a running pod")
    process = pod_runner.wait_for_process(namespace, name)
    wait_for(lambda: "up" in process.log(), "the process started")
    cluster.kubectl("scale", "deployment/s", "-n", namespace, "--replicas=0")
    wait_for(lambda: process.exit_code is not None, "the process ended", timeout=30)
    assert process.exit_code == -signal.SIGKILL
    assert process.signals == ["SIGTERM", "SIGKILL"]


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.swell.dev"},
    "spec": {
        "group": "example.swell.dev",
        "scope": "Namespaced",
        "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object", "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 5}},
            }}}},
        }],
    },
}


def test_structural_crd_rejects_an_invalid_object_with_the_servers_message(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/gadgets.example.swell.dev", timeout=60)

    def gadget(size: object) -> str:
        return yaml.safe_dump({"apiVersion": "example.swell.dev/v1", "kind": "Gadget",
                               "metadata": {"name": f"g{size}".lower()}, "spec": {"size": size}})

    assert cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gadget(3)).returncode == 0
    refused = wait_for(lambda: cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gadget(9), check=False),
                       "the server answered")
    assert refused.returncode != 0
    assert "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 5" in refused.stderr
