"""A pool whose target Deployment an HPA or a KEDA ScaledObject already scales is refused: two scalers fight.

Each would overwrite the other's replica count every few seconds. KEDA refuses the same (its admission
webhook rejects a ScaledObject for a target an HPA already scales). Swell has no webhook, so such a pool is
reported Degraded (reason ``AlreadyScaled``, naming the other scaler) with a Warning Event, and its target is
never scaled while the other scaler exists. The lookup is two list calls per namespace, made at most every
``RECHECK_SECONDS`` and shared by the namespace's pools, not every scaling round of every pool.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from swell_operator.kube_json import json_of
from swell_operator.shared_reads import SharedReads

log = logging.getLogger(__name__)

ALREADY_SCALED = "AlreadyScaled"
RECHECK_SECONDS = 5.0
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
# A namespace's HorizontalPodAutoscalers and ScaledObjects, as plain API objects.
Listed = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def _targets_deployment(ref: Mapping[str, Any] | None, deployment: str) -> bool:
    if not ref or ref.get("name") != deployment:
        return False
    return ref.get("kind", "Deployment") == "Deployment" and str(ref.get("apiVersion", "apps/v1")).startswith("apps/")


def other_scalers(
    deployment: str, hpas: Iterable[Mapping[str, Any]], scaled_objects: Iterable[Mapping[str, Any]]
) -> list[str]:
    """The HPAs and ScaledObjects (as plain API objects) that scale ``deployment``, as "Kind name"."""
    found = [
        f"HorizontalPodAutoscaler {hpa['metadata']['name']}"
        for hpa in hpas
        if _targets_deployment((hpa.get("spec") or {}).get("scaleTargetRef"), deployment)
    ]
    found += [
        f"ScaledObject {so['metadata']['name']}"
        for so in scaled_objects
        if _targets_deployment((so.get("spec") or {}).get("scaleTargetRef"), deployment)
    ]
    return sorted(found)


def refusal(namespace: str, deployment: str, scalers: list[str]) -> str | None:
    if not scalers:
        return None
    return (
        f"Deployment {namespace}/{deployment} is already scaled by {', '.join(scalers)}: two scalers would "
        "overwrite each other's replicas, so Swell leaves it alone. Delete the other scaler, or this pool."
    )


class DoubleScalingGuard:
    """Whether a pool's target has another scaler, for every pool of the operator (one, in kopf's memo).

    A namespace's HPAs and ScaledObjects are listed at most every ``RECHECK_SECONDS`` and the lists are
    shared by all its pools: one pair of list calls per namespace, not per pool (at 1000 pools the lists
    made per pool were most of the operator's idle CPU). Pools asking while a list is on its way wait for
    that one list."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._lists: SharedReads[str, Listed] = SharedReads(self._list, RECHECK_SECONDS)
        self._unreadable_logged: set[tuple[str, str]] = set()

    async def problem(self, namespace: str, deployment: str) -> str | None:
        hpas, scaled_objects = await self._lists.get(namespace)
        return refusal(namespace, deployment, other_scalers(deployment, hpas, scaled_objects))

    async def _list(self, namespace: str) -> Listed:
        hpas: list[dict[str, Any]] = []
        scaled_objects: list[dict[str, Any]] = []
        try:
            autoscaling = client.AutoscalingV2Api(self._api)
            listed = await json_of(
                autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace, _preload_content=False)
            )
            hpas = list(listed.get("items") or [])
        except ApiException as exc:
            self._unreadable(namespace, "HorizontalPodAutoscalers", exc)
        custom: Any = client.CustomObjectsApi(self._api)
        group, version, plural = KEDA
        try:
            found = await json_of(
                custom.list_namespaced_custom_object(group, version, namespace, plural, _preload_content=False)
            )
            scaled_objects = list(found.get("items") or [])
        except ApiException as exc:
            if exc.status != 404:  # 404: KEDA is not installed, so there is no ScaledObject
                self._unreadable(namespace, "ScaledObjects", exc)
        return hpas, scaled_objects

    def _unreadable(self, namespace: str, what: str, exc: ApiException) -> None:
        """Unreadable is not refused: a missing grant must not stop every pool. Said once per namespace."""
        if (namespace, what) not in self._unreadable_logged:
            log.warning("cannot list %s in %s (HTTP %s): double scaling not checked", what, namespace, exc.status)
            self._unreadable_logged.add((namespace, what))
