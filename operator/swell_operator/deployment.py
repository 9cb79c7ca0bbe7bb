"""The worker Deployment a WorkerPool owns (and the Service in front of a push pool): rendered, applied, scaled.

Rendering is pure so it can be tested without a cluster. Applying never touches ``spec.replicas`` of
an existing Deployment: replicas belong to the scaler alone, so a spec edit can never undo a scaling
decision. Credentials enter the pod only as ``secretKeyRef`` references, never as values.
"""

from __future__ import annotations

import copy
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from swell_contract.settings import GOOGLE_APPLICATION_CREDENTIALS, POD_NAME, PUBSUB_EMULATOR_HOST, WorkerSettings

from swell_operator.kube_json import json_of
from swell_operator.model import BundledWorker, SecretKeyRef, WorkerPoolSpec

POOL_LABEL = "swell.dev/workerpool"
WORKER_PORT = 8080
# Where the Pub/Sub service-account key is mounted when the pool references one.
GCP_KEY_DIR = "/var/run/secrets/swell/gcp"
# Server-side apply: the field manager that owns what Swell renders, and tries on a conflicting write.
FIELD_MANAGER = "swell"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_ATTEMPTS = 3
# Seconds the worker keeps for itself between its drain deadline and the kubelet's SIGKILL.
DRAIN_MARGIN_SECONDS = 5


# Handlers that read or write the vector store: their pool needs a store every worker shares.
VECTOR_HANDLERS = frozenset({"index", "search"})


def _own_version() -> str:
    try:
        return importlib.metadata.version("swell")
    except importlib.metadata.PackageNotFoundError:
        return "latest"


# The image scripts/images/build.sh makes for this version; the chart passes its own --worker-image.
DEFAULT_WORKER_IMAGE = f"swell-worker:{_own_version()}"


@dataclass(frozen=True)
class PoolDefaults:
    """What a pool gets when its spec leaves it out: operator settings (the chart's values), not CRD defaults.

    Kept out of the stored WorkerPool on purpose, so a chart upgrade that moves the worker image or the
    shared vector store moves every pool that did not choose its own.
    """

    worker_image: str = DEFAULT_WORKER_IMAGE
    vector_uri: str | None = None


def vector_uri(worker: BundledWorker, defaults: PoolDefaults) -> str | None:
    return worker.vector_uri or defaults.vector_uri


def missing_vector_store(spec: WorkerPoolSpec, defaults: PoolDefaults) -> str | None:
    """Why the pool cannot run, when it serves index or search with no shared store to use; else None.

    A per-pod Milvus Lite file would lose its documents when the pool scales to zero and give each
    replica its own index, so there is no such fallback: the pool gets no workers until it has a store.
    """
    worker = spec.worker
    if worker is None or not VECTOR_HANDLERS & set(worker.handlers) or vector_uri(worker, defaults):
        return None
    served = ", ".join(sorted(VECTOR_HANDLERS & set(worker.handlers)))
    return (
        f"handlers {served} need a vector store every worker shares: set spec.worker.vectorUri "
        "(e.g. http://milvus.milvus:19530) or the chart's vectorStore.defaultUri (operator flag "
        "--default-vector-uri)"
    )


def deployment_name(pool: str) -> str:
    """The Deployment carries the pool's name, so `kubectl get deploy,wp` lines them up."""
    return pool


def pool_labels(pool: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "swell-worker",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/managed-by": "swell-operator",
        POOL_LABEL: pool,
    }


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _plain(name: str, value: object) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def worker_settings(spec: WorkerPoolSpec, worker: BundledWorker, defaults: PoolDefaults) -> dict[str, Any]:
    """The pool's worker settings (``swell_contract.settings.WorkerSettings`` fields) that are not Secrets."""
    queue = spec.queue
    values: dict[str, Any] = {
        "backend": queue.backend,
        "concurrency": spec.concurrency,
        "handlers": tuple(worker.handlers),
        "max_attempts": worker.max_attempts,
        "task_timeout_seconds": worker.task_timeout_seconds,
        "drain_seconds": max(1, worker.termination_grace_period_seconds - DRAIN_MARGIN_SECONDS),
        "http_port": WORKER_PORT,
        "embedder": worker.embedder,
    }
    if queue.backend == "redis-streams" and queue.streams is not None:
        values.update(queues=tuple(queue.streams.streams), group=queue.streams.group)
    if queue.backend == "redis-list" and queue.list is not None:
        values["queues"] = tuple(queue.list.keys)
    if queue.backend == "pubsub" and queue.pubsub is not None:
        pubsub = queue.pubsub
        values.update(pubsub_project=pubsub.project, pubsub_subscription=pubsub.subscription, pubsub_mode=pubsub.mode)
        optional = {
            "pubsub_topic": pubsub.topic,
            "pubsub_dead_letter_topic": pubsub.dead_letter_topic_in_use(),
            "push_audience": pubsub.push_audience,
            "push_service_account": pubsub.push_service_account,
        }
        values.update({name: value for name, value in optional.items() if value})
    uri = vector_uri(worker, defaults)
    if uri:
        values["vector_uri"] = uri
    return values


def worker_env(spec: WorkerPoolSpec, worker: BundledWorker, defaults: PoolDefaults) -> list[dict[str, Any]]:
    """The worker's environment, rendered by the settings model the worker parses it with.

    Secrets enter only as ``secretKeyRef``; a value the worker refuses makes it exit naming the variable.
    """
    env_name = WorkerSettings.env_name
    env: list[dict[str, Any]] = [
        {"name": POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": env_name("consumer"), "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    queue = spec.queue
    secrets: dict[str, SecretKeyRef | None] = {}
    if queue.redis is not None:
        secrets.update(redis_url=queue.redis.url_secret_ref, redis_password=queue.redis.password_secret_ref)
    if queue.pubsub is not None:
        secrets["push_token"] = queue.pubsub.push_token_secret_ref
    env += [_secret_env(env_name(field), ref) for field, ref in secrets.items() if ref is not None]
    settings = WorkerSettings.render(**worker_settings(spec, worker, defaults))
    env += [_plain(name, value) for name, value in settings.items()]
    if queue.pubsub is not None and queue.pubsub.emulator_host:
        env.append(_plain(PUBSUB_EMULATOR_HOST, queue.pubsub.emulator_host))
    if queue.pubsub is not None and queue.pubsub.credentials_secret_ref is not None:
        env.append(_plain(GOOGLE_APPLICATION_CREDENTIALS, f"{GCP_KEY_DIR}/key.json"))
    for extra in worker.env:
        if extra.secret_key_ref is not None:
            env.append(_secret_env(extra.name, extra.secret_key_ref))
        elif extra.value_from is not None:
            env.append({"name": extra.name, "valueFrom": extra.value_from.model_dump(by_alias=True, exclude_none=True)})
        else:
            env.append(_plain(extra.name, extra.value or ""))
    return env


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in ``extra`` (lists included) replaces what was there."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render_deployment(
    pool: str, spec: WorkerPoolSpec, replicas: int, defaults: PoolDefaults | None = None
) -> dict[str, Any]:
    """The bundled worker's Deployment; ``replicas`` is used only when it is created."""
    defaults = defaults or PoolDefaults()
    worker = spec.worker
    if worker is None:
        raise ValueError("only pools with spec.worker own a Deployment; scaleTargetRef pools are scaled only")
    labels = pool_labels(pool)
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker.image or defaults.worker_image,
        "command": ["python", "-m", "swell_worker"],
        "env": worker_env(spec, worker, defaults),
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if worker.resources is not None:
        container["resources"] = worker.resources.model_dump(exclude_none=True)
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    pubsub = spec.queue.pubsub
    if pubsub is not None and pubsub.credentials_secret_ref is not None:
        ref = pubsub.credentials_secret_ref
        volumes.append(
            {"name": "gcp-key", "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "key.json"}]}}
        )
        container["volumeMounts"].append({"name": "gcp-key", "mountPath": GCP_KEY_DIR, "readOnly": True})
    template: dict[str, Any] = {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "containers": [container],
            "volumes": volumes,
            "terminationGracePeriodSeconds": worker.termination_grace_period_seconds,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        },
    }
    if worker.pod_template:
        template = deep_merge(template, worker.pod_template.model_dump(by_alias=True, exclude_none=True))
        template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(pool), "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {POOL_LABEL: pool}},
            # Never take a ready worker away during a rollout; scale-in is the scaler's job.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": template,
        },
    }


def render_push_service(pool: str, spec: WorkerPoolSpec) -> dict[str, Any] | None:
    """A push pool's workers behind one Service, for the Ingress that Pub/Sub's push endpoint names."""
    pubsub = spec.queue.pubsub
    if spec.worker is None or pubsub is None or pubsub.mode != "push":
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": deployment_name(pool), "labels": pool_labels(pool)},
        "spec": {
            "selector": {POOL_LABEL: pool},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


async def apply_service(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> str:
    """Create the Service, or patch its selector, ports and labels (the cluster IP stays); "created" or "updated"."""
    core = client.CoreV1Api(api)
    name = manifest["metadata"]["name"]
    try:
        await core.create_namespaced_service(namespace, cast(Any, manifest))
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    await core.patch_namespaced_service(name, namespace, cast(Any, manifest))
    return "updated"


async def apply_deployment(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> str:
    """Server-side apply as field manager ``swell``; returns "created" or "updated".

    Only the fields Swell renders are Swell's: what others set (``kubectl rollout restart``'s annotation,
    another controller's labels) survives, and a field Swell stops rendering is removed. Replicas are
    applied at their current value, guarded by the resourceVersion just read, so an apply can never undo
    a scaling decision made in between (it gets 409 and is retried on the fresh object).
    """
    apps: Any = client.AppsV1Api(api)  # Any: the typed stub lacks the _content_type keyword
    name = manifest["metadata"]["name"]
    for attempt in range(APPLY_ATTEMPTS):
        body = copy.deepcopy(manifest)
        try:
            current = await apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        if current is not None:
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            body["spec"]["replicas"] = current.spec.replicas
        try:
            await apps.patch_namespaced_deployment(
                name, namespace, body, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH
            )
        except ApiException as exc:
            # 409: the Deployment changed (or was created by the other replica) since it was read.
            if exc.status != 409 or attempt == APPLY_ATTEMPTS - 1:
                raise
            continue
        return "created" if current is None else "updated"
    raise AssertionError("unreachable")


class Replicas:
    """What a Deployment runs now, as the scaler sees it."""

    def __init__(self, spec: int, ready: int, selector: dict[str, str]) -> None:
        self.spec = spec
        self.ready = ready
        self.selector = selector


async def read_replicas(api: client.ApiClient, namespace: str, name: str) -> Replicas:
    """Read as plain JSON: every pool reads its Deployment each round, and the model classes cost more CPU
    than the request."""
    deployment = await json_of(
        client.AppsV1Api(api).read_namespaced_deployment(name, namespace, _preload_content=False)
    )
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    selector = dict((spec.get("selector") or {}).get("matchLabels") or {})
    return Replicas(int(spec.get("replicas") or 0), int(status.get("readyReplicas") or 0), selector)


async def scale_deployment(api: client.ApiClient, namespace: str, name: str, replicas: int) -> None:
    """Through the scale subresource, the narrowest write that changes replicas (a strategic merge patch)."""
    await client.AppsV1Api(api).patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})
