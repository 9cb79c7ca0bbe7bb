"""kopf wiring: the WorkerPool's Deployment (and push Service) on create/resume/update, one scaling daemon per pool.

Handlers only translate between kopf and the modules that do the work (``deployment``, ``scaler``).
Both operator replicas may reconcile Deployments, because that is idempotent (a server-side apply of
everything but replicas, guarded by resourceVersion); only the Lease holder
scales and writes status, because those are decisions.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

import kopf
import pydantic
from aiohttp import web
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from swell_operator import activator
from swell_operator.deployment import (
    DEFAULT_WORKER_IMAGE,
    PoolDefaults,
    apply_deployment,
    apply_service,
    deployment_name,
    missing_vector_store,
    render_deployment,
    render_push_service,
    scale_deployment,
)
from swell_operator.depth import QueueReader
from swell_operator.double_scaling import ALREADY_SCALED, DoubleScalingGuard
from swell_operator.leader import LeaderElector
from swell_operator.model import GROUP, PLURAL, VERSION, WorkerPoolSpec
from swell_operator.scaler import PoolScaler, target_of
from swell_operator.scaler import _target_text as target_text
from swell_operator.status import Health, conditions, utc_now, write_status

log = logging.getLogger(__name__)

# Pause after an unexpected error in a scaling round, so a bug cannot become a hot loop.
ERROR_PAUSE_SECONDS = 5.0
# How often a pool that cannot run (no vector store) is looked at again; a spec edit wakes it sooner.
UNRUNNABLE_RECHECK_SECONDS = 2.0
NO_VECTOR_STORE = "NoVectorStore"


@dataclass
class OperatorOptions:
    """Set by ``__main__`` before kopf starts; read once at startup."""

    lease_namespace: str = "default"
    identity: str | None = None
    leader_election: bool = True
    # The Pub/Sub push activator: served on this port (0: off), reached by Pub/Sub at this URL.
    activator_port: int = 0
    activator_url: str | None = None
    # What a pool gets when its spec leaves it out (the chart's worker.image and vectorStore.defaultUri).
    worker_image: str = DEFAULT_WORKER_IMAGE
    default_vector_uri: str | None = None

    def pool_defaults(self) -> PoolDefaults:
        return PoolDefaults(worker_image=self.worker_image, vector_uri=self.default_vector_uri)


OPTIONS = OperatorOptions()


@dataclass
class Runtime:
    api: client.ApiClient
    elector: LeaderElector | None
    stop: asyncio.Event
    task: asyncio.Task[None] | None
    activator: web.AppRunner | None = None


_runtime: Runtime | None = None


def runtime() -> Runtime:
    if _runtime is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return _runtime


async def _load_kube_config() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _runtime
    # Progress lives in annotations only: status belongs to the scaler, and both replicas share it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="swell.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="swell.dev")
    settings.persistence.finalizer = "swell.dev/scaler"
    settings.watching.server_timeout = 300
    await _load_kube_config()
    api = client.ApiClient()
    stop = asyncio.Event()
    elector = task = None
    if OPTIONS.leader_election:
        elector = LeaderElector(api, OPTIONS.lease_namespace, identity=OPTIONS.identity)
        await elector.try_acquire()
        task = asyncio.create_task(elector.run(stop), name="swell-leader-election")
    served = None
    if OPTIONS.activator_port:
        served = await activator.serve(api, "0.0.0.0", OPTIONS.activator_port)
    _runtime = Runtime(api=api, elector=elector, stop=stop, task=task, activator=served)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    global _runtime
    if _runtime is None:
        return
    current, _runtime = _runtime, None
    current.stop.set()
    if current.task is not None:
        await current.task
    if current.activator is not None:
        await current.activator.cleanup()
    await current.api.close()


@kopf.on.probe(id="leader")
def leader_probe(**_: Any) -> bool:
    """Reported by the liveness endpoint, so one can see which replica holds the Lease."""
    return _runtime is not None and (_runtime.elector is None or _runtime.elector.is_leader)


def _spec(raw: Any) -> WorkerPoolSpec:
    try:
        return WorkerPoolSpec.model_validate(dict(raw))
    except pydantic.ValidationError as exc:
        # The CRD refuses most bad specs; what it cannot express is reported once, not retried.
        raise kopf.PermanentError(f"invalid WorkerPool spec: {exc}") from None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_deployment(
    *, spec: kopf.Spec, name: str | None, namespace: str | None, body: kopf.Body, **_: Any
) -> None:
    assert name is not None and namespace is not None  # WorkerPools are namespaced
    pool = _spec(spec)
    if pool.worker is None:
        return  # scaleTargetRef: the Deployment is the user's; Swell only scales it
    defaults = OPTIONS.pool_defaults()
    problem = missing_vector_store(pool, defaults)
    if problem is not None:
        # No workers: the scaler daemon reports the reason in status and as a Warning Event.
        log.warning("%s/%s gets no workers: %s", namespace, name, problem)
        await _scale_to_zero_if_present(namespace, deployment_name(name))
        return
    manifest = render_deployment(name, pool, pool.replicas.min, defaults)
    kopf.adopt(manifest, owner=body)
    outcome = await apply_deployment(runtime().api, namespace, manifest)
    log.info("%s/%s: Deployment %s", namespace, name, outcome)
    service = render_push_service(name, pool)
    if service is not None:
        kopf.adopt(service, owner=body)
        log.info("%s/%s: Service %s", namespace, name, await apply_service(runtime().api, namespace, service))


@kopf.daemon(GROUP, VERSION, PLURAL, id="scaler", cancellation_timeout=10.0)
async def scale(
    *, name: str | None, namespace: str | None, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Runs for as long as the pool exists; ``body`` is kopf's live view, so spec edits apply at once."""
    assert name is not None and namespace is not None  # WorkerPools are namespaced
    while _runtime is None and not stopped:
        await stopped.wait(0.1)
    current = runtime()
    scaler = PoolScaler(
        current.api,
        namespace,
        name,
        QueueReader(current.api, namespace),
        current.elector,
        activator_url=OPTIONS.activator_url,
    )
    guard = DoubleScalingGuard(current.api, namespace)
    reported: str | None = None  # the reason this pool cannot run, once reported
    try:
        while not stopped:
            try:
                pool = _spec(body.get("spec") or {})
                problem, reason = missing_vector_store(pool, OPTIONS.pool_defaults()), NO_VECTOR_STORE
                if problem is None:
                    problem, reason = await guard.problem(target_of(name, pool)), ALREADY_SCALED
                if problem is not None:
                    leading = current.elector is None or current.elector.is_leader
                    if leading and problem != reported:
                        await _report_unrunnable(current.api, namespace, name, body, problem, reason)
                        reported = problem
                    await stopped.wait(UNRUNNABLE_RECHECK_SECONDS)
                    continue
                if reported is not None:
                    reported = None
                    scaler.state.written = None  # the next round replaces the unrunnable status at once
                wait = await scaler.tick(body)
            except (pydantic.ValidationError, kopf.PermanentError) as exc:
                log.error("%s/%s has an invalid spec: %s", namespace, name, exc)
                wait = ERROR_PAUSE_SECONDS
            except Exception:
                log.exception("scaling round of %s/%s failed", namespace, name)
                wait = ERROR_PAUSE_SECONDS
            await stopped.wait(wait)
    finally:
        await scaler.close()


async def _scale_to_zero_if_present(namespace: str, deployment: str) -> None:
    """A pool that lost its vector store keeps no workers writing to nowhere (a missing Deployment is fine)."""
    try:
        await scale_deployment(runtime().api, namespace, deployment, 0)
    except ApiException as exc:
        if exc.status != 404:
            raise


async def _report_unrunnable(
    api: client.ApiClient, namespace: str, name: str, body: kopf.Body, problem: str, reason: str
) -> None:
    """Degraded and not Ready with the reason, plus one Warning Event, instead of scaling."""
    kopf.event(body, type="Warning", reason=reason, message=problem)
    spec = body.get("spec") or {}
    previous = (body.get("status") or {}).get("conditions") or []
    health = Health(
        paused=bool((spec.get("scaling") or {}).get("paused")),
        error=problem,
        desired=0,
        current=None,
        ready=None,
        error_reason=reason,
        generation=(body.get("metadata") or {}).get("generation"),
    )
    status = {
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        # No workers without a store; an already-scaled target's replicas are the other scaler's.
        "desiredReplicas": 0 if reason == NO_VECTOR_STORE else None,
        "conditions": conditions(health, previous, utc_now()),
        "target": target_text(name, _spec(spec)),
    }
    try:
        await write_status(api, namespace, name, status)
    except ApiException as exc:
        if exc.status != 404:  # a pool being deleted has no status to write
            log.warning("cannot write status of %s/%s: HTTP %s", namespace, name, exc.status)
