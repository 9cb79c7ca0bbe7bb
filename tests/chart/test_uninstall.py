"""``helm uninstall`` with WorkerPools present leaves none stuck on kopf's finalizer, on the real API server.

The operator is the chart's own Deployment, its pod run as a local process by the pod runner. The
pre-delete hook's Job cannot run here (kwok marks a Job's pod Completed at once), so the test does what the
Job would: it takes the hook's ServiceAccount, Roles and command from ``helm get hooks``, applies them, and
runs the command as that ServiceAccount (a token from the TokenRequest API), which also proves the hook's
RBAC is enough. Then ``helm uninstall`` must finish and every pool must be deletable at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import helm, install_into
from tests.fixtures.cluster import Cluster
from tests.fixtures.ports import free_port
from tests.operator.kube import apply, get, pool_manifest, redis_secret, wait_for

pytestmark = pytest.mark.cluster

FINALIZER = "swell.dev/scaler"


def _finalizers(cluster: Cluster, namespace: str, pool: str) -> list[str]:
    found = get(cluster, namespace, "workerpools.swell.dev", pool) or {}
    return list((found.get("metadata") or {}).get("finalizers") or [])


def _token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=10m").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    context["context"]["user"] = "hook"
    config["users"] = [{"name": "hook", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    return path


def _hook_run_as_its_account(cluster: Cluster, release: str, namespace: str, tmp_path: Path) -> str:
    """What Helm's pre-delete hook does on a real cluster: the hook's RBAC, then its Job's command."""
    hooks = [d for d in yaml.safe_load_all(helm(cluster, "get", "hooks", release, "-n", namespace).stdout) if d]
    hooks = [d for d in hooks if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete"]
    (job,) = [d for d in hooks if d["kind"] == "Job"]
    rbac = [d for d in hooks if d["kind"] != "Job"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = [*container["command"], *container["args"]]
    assert command[:2] == ["python", "-m"]
    kubeconfig = _token_kubeconfig(cluster, namespace, pod["serviceAccountName"], tmp_path / "hook-kubeconfig")
    done = subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("delete_pools", [False, True], ids=["release", "delete"])
def test_uninstall_with_pools_present_leaves_none_stuck(
    cluster: Cluster,
    namespace: str,
    workerpool_crd: str,
    pod_runner: Any,
    redis_url: str,
    tmp_path: Path,
    delete_pools: bool,
) -> None:
    release = f"un-{namespace}"
    install_into(
        cluster,
        release,
        namespace,
        "--set",
        "replicaCount=1",
        "--set",
        f"metrics.port={free_port()}",
        "--set",
        f"healthPort={free_port()}",
        "--set",
        f"uninstall.deletePools={str(delete_pools).lower()}",
        "--set-string",
        "podAnnotations.swell\\.dev/run-locally=true",
    )
    redis_secret(cluster, namespace, redis_url)
    pools = ("first", "second")
    for pool in pools:
        apply(cluster, namespace, pool_manifest(pool, "redis-list", f"q-{pool}", replicas=(1, 2)))

    def taken(pool: str) -> bool:
        return (
            FINALIZER in _finalizers(cluster, namespace, pool)
            and get(cluster, namespace, "deployment", pool) is not None
        )

    for pool in pools:
        wait_for(lambda: taken(pool), 90, f"the operator took {pool} (finalizer and Deployment)")  # noqa: B023

    said = _hook_run_as_its_account(cluster, release, namespace, tmp_path)
    verb = "deleted" if delete_pools else "released"
    assert f"{namespace}/first: {verb}" in said and f"{namespace}/second: {verb}" in said, said
    operator = get(cluster, namespace, "deployment", f"{release}-operator")
    assert operator is not None and operator["spec"]["replicas"] == 0

    uninstalled = helm(cluster, "uninstall", release, "--namespace", namespace, "--timeout", "60s", check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
    for pool in pools:
        assert FINALIZER not in _finalizers(cluster, namespace, pool), "the stopped operator re-added its finalizer"
    deleted = cluster.kubectl(
        "delete", "workerpools.swell.dev", "--all", "-n", namespace, "--timeout=20s", check=False, timeout=40
    )
    assert deleted.returncode == 0, deleted.stderr
    left = json.loads(cluster.kubectl("get", "workerpools.swell.dev", "-n", namespace, "-o", "json").stdout)
    assert left["items"] == []

    def workers_gone() -> bool:
        listed = cluster.kubectl("get", "deployments", "-n", namespace, "-l", "swell.dev/workerpool", "-o", "name")
        return not listed.stdout.strip()

    wait_for(workers_gone, 60, "the pools' worker Deployments removed by garbage collection")
