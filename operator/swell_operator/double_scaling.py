"""A pool whose target Deployment an HPA or a KEDA ScaledObject already scales is refused: two scalers fight.

Each would overwrite the other's replica count every few seconds. KEDA refuses the same (its admission
webhook rejects a ScaledObject for a target an HPA already scales). Swell has no webhook, so such a pool is
reported Degraded (reason ``AlreadyScaled``, naming the other scaler) with a Warning Event, and its target is
never scaled while the other scaler exists. The lookup is two list calls, made at most every
``RECHECK_SECONDS`` per pool, not every scaling round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

ALREADY_SCALED = "AlreadyScaled"
RECHECK_SECONDS = 5.0
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")


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
    """Per pool: whether its target has another scaler, looked up at most every ``RECHECK_SECONDS``."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self._checked: tuple[str, float, str | None] | None = None
        self._forbidden_logged = False

    async def problem(self, deployment: str) -> str | None:
        now = time.monotonic()
        if self._checked is not None:
            target, at, answer = self._checked
            if target == deployment and now - at < RECHECK_SECONDS:
                return answer
        answer = refusal(self._namespace, deployment, other_scalers(deployment, *await self._list()))
        self._checked = (deployment, now, answer)
        return answer

    async def _list(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        hpas: list[dict[str, Any]] = []
        scaled_objects: list[dict[str, Any]] = []
        try:
            listed = await client.AutoscalingV2Api(self._api).list_namespaced_horizontal_pod_autoscaler(self._namespace)
            hpas = [self._api.sanitize_for_serialization(item) for item in listed.items]
        except ApiException as exc:
            self._unreadable("HorizontalPodAutoscalers", exc)
        custom: Any = client.CustomObjectsApi(self._api)
        group, version, plural = KEDA
        try:
            found = await custom.list_namespaced_custom_object(group, version, self._namespace, plural)
            scaled_objects = list(found.get("items", []))
        except ApiException as exc:
            if exc.status != 404:  # 404: KEDA is not installed, so there is no ScaledObject
                self._unreadable("ScaledObjects", exc)
        return hpas, scaled_objects

    def _unreadable(self, what: str, exc: ApiException) -> None:
        """Unreadable is not refused: a missing grant must not stop every pool. Said once."""
        if not self._forbidden_logged:
            log.warning("cannot list %s in %s (HTTP %s): double scaling not checked", what, self._namespace, exc.status)
            self._forbidden_logged = True
