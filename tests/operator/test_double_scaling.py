"""A pool whose target an HPA (or a KEDA ScaledObject) already scales is refused on the real API server:
Degraded with reason AlreadyScaled naming the other scaler, a Warning Event, and the target left alone. Once
the other scaler is gone, Swell scales it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from swell_operator.double_scaling import other_scalers

from tests.fixtures.keda_crd import install_scaled_object_crd
from tests.operator.kube import (
    apply,
    condition,
    events_for,
    pool_manifest,
    redis_secret,
    replicas_of,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.cluster


def test_other_scalers_match_only_their_deployment() -> None:
    hpa = {"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "celery"}}}
    other = {"metadata": {"name": "o"}, "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "celery"}}}
    keda = {"metadata": {"name": "k"}, "spec": {"scaleTargetRef": {"name": "celery"}}}
    assert other_scalers("celery", [hpa, other], [keda]) == ["HorizontalPodAutoscaler h", "ScaledObject k"]
    assert other_scalers("rq", [hpa], [keda]) == []


def _degraded(cluster: Any, namespace: str, pool: str) -> dict[str, Any] | None:
    found = condition(status_of(cluster, namespace, pool), "Degraded")
    return found if found.get("status") == "True" and found.get("reason") == "AlreadyScaled" else None


def test_a_target_scaled_by_an_hpa_or_keda_is_refused(
    cluster: Any, namespace: str, redis_url: str, start_operator: Any
) -> None:
    redis_secret(cluster, namespace, redis_url)
    cluster.kubectl("create", "deployment", "celery", "--image=example/celery:1", "--replicas=1", "-n", namespace)
    cluster.kubectl("autoscale", "deployment", "celery", "--min=1", "--max=3", "--cpu-percent=80", "-n", namespace)
    start_operator()
    # replicas.min 2: Swell would scale the Deployment to 2 at once if it were allowed to.
    apply(cluster, namespace, pool_manifest("celery", "redis-list", "celery", replicas=(2, 4), scale_target="celery"))

    degraded = wait_for(lambda: _degraded(cluster, namespace, "celery"), 30, "the pool refused as AlreadyScaled")
    assert "HorizontalPodAutoscaler celery" in degraded["message"], degraded
    # The API conventions' shape, as the API server stored it (the CRD requires type/status/reason/time).
    assert degraded["observedGeneration"] == 1 and degraded["lastTransitionTime"].endswith("Z"), degraded
    wait_for(lambda: "scaleTargetRef" in str(status_of(cluster, namespace, "celery").get("target")), 10, "target")
    header, row = cluster.kubectl("get", "wp", "celery", "-n", namespace).stdout.splitlines()[:2]
    starts = [header.index(name) for name in header.split()] + [len(row) + 1]
    shown = {name: row[a:b].strip() for name, a, b in zip(header.split(), starts, starts[1:], strict=False)}
    assert shown["TARGET"] == "celery (scaleTargetRef)", shown
    assert shown["DEGRADED"] == "True" and shown["READY"] == "False", shown
    assert condition(status_of(cluster, namespace, "celery"), "Ready")["status"] == "False"
    warnings = [e for e in events_for(cluster, namespace, "celery") if e.get("reason") == "AlreadyScaled"]
    assert warnings and warnings[0]["type"] == "Warning"
    time.sleep(3)
    assert replicas_of(cluster, namespace, "celery") == 1, "Swell scaled a Deployment an HPA owns"

    cluster.kubectl("delete", "hpa", "celery", "-n", namespace)
    wait_for(lambda: replicas_of(cluster, namespace, "celery") == 2, 30, "Swell scaling once the HPA is gone")
    wait_for(
        lambda: condition(status_of(cluster, namespace, "celery"), "Degraded").get("status") == "False",
        30,
        "Degraded cleared",
    )

    install_scaled_object_crd(cluster)
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "celery-keda"},
        "spec": {"scaleTargetRef": {"name": "celery"}, "triggers": []},
    }
    apply(cluster, namespace, scaled_object)
    degraded = wait_for(lambda: _degraded(cluster, namespace, "celery"), 30, "refused for a ScaledObject too")
    assert "ScaledObject celery-keda" in degraded["message"], degraded


async def test_the_pools_of_a_namespace_share_one_list_of_other_scalers(cluster: Any, namespace: str) -> None:
    """Many pools asking at once cost one pair of list calls for their namespace, not one per pool."""
    from kubernetes_asyncio import client, config
    from swell_operator.double_scaling import DoubleScalingGuard, Listed

    cluster.kubectl("create", "deployment", "celery", "--image=example/celery:1", "-n", namespace)
    cluster.kubectl("autoscale", "deployment", "celery", "--min=1", "--max=3", "--cpu-percent=80", "-n", namespace)
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    async with client.ApiClient() as api:
        guard = DoubleScalingGuard(api)
        listed = guard._lists._read
        calls: list[str] = []

        async def counted(where: str) -> Listed:
            calls.append(where)
            return await listed(where)

        guard._lists._read = counted
        answers = await asyncio.gather(*(guard.problem(namespace, f"pool-{n}") for n in range(50)))
        refused = await guard.problem(namespace, "celery")
        assert answers == [None] * 50
        assert refused is not None and "HorizontalPodAutoscaler celery" in refused
        assert calls == [namespace], "one listing for the namespace, shared by 51 pools"
        assert await guard.problem(f"{namespace}-none", "celery") is None, "another namespace has its own lists"
        assert calls == [namespace, f"{namespace}-none"]
