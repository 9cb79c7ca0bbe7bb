"""Builds the WorkerPool's status from what the scaler saw and did, and writes it.

Conditions keep their ``lastTransitionTime`` while their status is unchanged, as Kubernetes tooling
expects, so the builder takes the previous conditions. Writes go to the status subresource as a merge
patch: the spec is never touched, and kopf's own annotations are left alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from swell_operator.model import GROUP, PLURAL, VERSION, Condition

MERGE_PATCH = "application/merge-patch+json"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Health:
    """The pool's state as conditions need it."""

    paused: bool
    error: str | None
    desired: int | None
    current: int | None
    ready: int | None
    # Why the pool is Degraded: QueueUnreadable, or TargetUnavailable when the Deployment cannot be read.
    error_reason: str = "QueueUnreadable"
    # The pool's metadata.generation, stamped on every condition.
    generation: int | None = None


def conditions(health: Health, previous: Iterable[Mapping[str, Any]], now: str) -> list[dict[str, Any]]:
    old = {str(c.get("type")): c for c in previous}
    wanted: list[Condition] = []
    degraded = health.error is not None
    if degraded:
        wanted.append(Condition(type="Degraded", status="True", reason=health.error_reason, message=health.error or ""))
    else:
        wanted.append(Condition(type="Degraded", status="False", reason="Healthy"))
    if health.paused:
        wanted.append(Condition(type="Paused", status="True", reason="Paused", message="spec.scaling.paused is set"))
    else:
        wanted.append(Condition(type="Paused", status="False", reason="Scaling"))
    current = health.current or 0
    if current > 0:
        wanted.append(Condition(type="Active", status="True", reason="Running", message=f"{current} replicas"))
    else:
        wanted.append(Condition(type="Active", status="False", reason="ScaledToZero"))
    ready = health.ready or 0
    if degraded:
        wanted.append(Condition(type="Ready", status="False", reason=health.error_reason, message=health.error or ""))
    elif health.current is None:
        wanted.append(Condition(type="Ready", status="Unknown", reason="NoDeployment"))
    elif ready >= current:
        wanted.append(
            Condition(type="Ready", status="True", reason="AllReplicasReady", message=f"{ready}/{current} ready")
        )
    else:
        wanted.append(
            Condition(type="Ready", status="False", reason="ReplicasStarting", message=f"{ready}/{current} ready")
        )
    out = []
    for condition in wanted:
        before = old.get(condition.type)
        same = before is not None and before.get("status") == condition.status
        condition.last_transition_time = str(before.get("lastTransitionTime")) if same and before else now
        condition.observed_generation = health.generation
        out.append(condition.model_dump(by_alias=True, exclude_none=True))
    return out


def visible(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status worth a write of its own (rates and memory ride along with the next one)."""
    keep = (
        "backlog",
        "inFlight",
        "desiredReplicas",
        "currentReplicas",
        "readyReplicas",
        "lastDecision",
        "deadLetter",
        "target",
        "observedGeneration",
    )
    shown = {key: status.get(key) for key in keep}
    shown["conditions"] = [
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in status.get("conditions") or ()
    ]
    return shown


async def write_status(api: client.ApiClient, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    # Custom resources take no strategic merge, and the client would pick JSON Patch for a dict.
    custom: Any = client.CustomObjectsApi(api)
    await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}, _content_type=MERGE_PATCH
    )
