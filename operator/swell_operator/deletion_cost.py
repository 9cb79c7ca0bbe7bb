"""Drain-safe scale-in: tell the ReplicaSet controller which worker pods to remove first.

Before replicas go down, each pod gets ``controller.kubernetes.io/pod-deletion-cost`` equal to the
tasks it holds (Streams: its XPENDING count, consumer name = pod name; lists: LLEN of its processing
list), so idle pods are deleted first and busy ones keep their work. The annotation is best effort in
Kubernetes' own terms, which is why the worker also drains on SIGTERM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kubernetes_asyncio import client

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def deletion_costs(pods: Iterable[str], in_flight: Mapping[str, int]) -> dict[str, int]:
    """Cost per pod: the tasks it holds (0 when the queue knows of none)."""
    return {pod: max(0, int(in_flight.get(pod, 0))) for pod in pods}


async def annotate_deletion_costs(
    api: client.ApiClient, namespace: str, selector: Mapping[str, str], in_flight: Mapping[str, int]
) -> dict[str, int]:
    """Patch every live pod of the selector whose annotation differs; returns the costs set."""
    core = client.CoreV1Api(api)
    label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    pods = await core.list_namespaced_pod(namespace, label_selector=label_selector)
    live = [pod for pod in pods.items if pod.metadata.deletion_timestamp is None]
    costs = deletion_costs((pod.metadata.name for pod in live), in_flight)
    for pod in live:
        wanted = str(costs[pod.metadata.name])
        if (pod.metadata.annotations or {}).get(DELETION_COST) == wanted:
            continue
        await core.patch_namespaced_pod(
            pod.metadata.name,
            namespace,
            {"metadata": {"annotations": {DELETION_COST: wanted}}},
        )
    return costs
