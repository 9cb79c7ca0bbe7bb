"""The worker Deployment is server-side applied by field manager ``swell``, on the real API server.

What others write into it survives a reconcile (``kubectl rollout restart``'s annotation, a label another
controller adds), replicas set by scaling are never reset by an apply, and a field Swell stops rendering
goes away.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operator.kube import apply, get, pool_manifest, redis_secret, replicas_of, wait_for

pytestmark = pytest.mark.cluster

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _env(deployment: dict[str, Any] | None, name: str) -> str | None:
    if deployment is None:
        return None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return next((str(e.get("value")) for e in container.get("env", []) if e["name"] == name), None)


def test_rollout_restart_annotation_and_replicas_survive_a_reconcile(
    cluster: Any, namespace: str, redis_url: str, start_operator: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    start_operator()
    # Paused, so the only writer of replicas here is the test (standing in for a scaling decision).
    worker = {"handlers": ["noop"], "podTemplate": {"metadata": {"annotations": {"team": "search"}}}}
    manifest = pool_manifest("ssa", "redis-list", "q", concurrency=2, scaling={"paused": True}, worker=worker)
    apply(cluster, namespace, manifest)
    wait_for(lambda: _env(get(cluster, namespace, "deployment", "ssa"), "SWELL_CONCURRENCY") == "2", 30, "created")
    shown = cluster.kubectl("get", "deployment", "ssa", "-n", namespace, "-o", "json", "--show-managed-fields")
    managers = {entry["manager"]: entry["operation"] for entry in json.loads(shown.stdout)["metadata"]["managedFields"]}
    assert managers.get("swell") == "Apply", managers

    cluster.kubectl("rollout", "restart", "deployment/ssa", "-n", namespace)
    cluster.kubectl("scale", "deployment/ssa", "--replicas=3", "-n", namespace)
    restarted = get(cluster, namespace, "deployment", "ssa")
    assert restarted is not None
    stamp = restarted["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]

    # A spec edit makes the operator apply again: concurrency changes, the annotation of the pool goes.
    manifest["spec"]["concurrency"] = 5
    manifest["spec"]["worker"]["podTemplate"] = {"metadata": {"annotations": {"owner": "platform"}}}
    apply(cluster, namespace, manifest)

    def applied_again() -> dict[str, Any] | None:
        found = get(cluster, namespace, "deployment", "ssa")
        return found if _env(found, "SWELL_CONCURRENCY") == "5" else None

    applied = wait_for(applied_again, 30, "the reconcile applied the new concurrency")
    annotations = applied["spec"]["template"]["metadata"]["annotations"]
    assert annotations.get(RESTARTED_AT) == stamp, "the reconcile wiped kubectl rollout restart's annotation"
    assert annotations.get("owner") == "platform"
    assert "team" not in annotations, "a field Swell no longer renders must be removed"
    assert replicas_of(cluster, namespace, "ssa") == 3, "the apply reset the replicas a decision had set"
