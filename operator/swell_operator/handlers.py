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
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic
from aiohttp import web
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from swell_operator import activator
from swell_operator.activator import Activator, activated_at
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
from swell_operator.memory import trim_periodically
from swell_operator.model import GROUP, PLURAL, VERSION, WorkerPoolSpec
from swell_operator.scaler import PoolScaler, target_of
from swell_operator.scaler import _target_text as target_text
from swell_operator.secrets import SecretReads
from swell_operator.status import Health, conditions, utc_now, write_status
from swell_operator.wake import PoolWake, RedisWatches

log = logging.getLogger(__name__)

# Pause after an unexpected error in a scaling round, so a bug cannot become a hot loop.
ERROR_PAUSE_SECONDS = 5.0
# How often a pool that cannot run (no vector store) is looked at again; a spec edit wakes it sooner.
UNRUNNABLE_RECHECK_SECONDS = 2.0
# The longest one scaling round may take: a request that never answers must not freeze its pool.
ROUND_TIMEOUT_SECONDS = 60.0
NO_VECTOR_STORE = "NoVectorStore"
# Connections of the operator's API client. The client's default (100) let a burst of pool rounds open a
# TLS connection each, and each kept ~300 KB (read buffer and OpenSSL state) for as long as it stayed open.
API_CONNECTIONS = 16


@dataclass
class OperatorOptions:
    """Given by ``__main__`` to kopf as ``memo.options``; read at startup and by each pool's daemon."""

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


@dataclass
class Runtime:
    """What every handler shares, kept in kopf's operator-wide ``memo`` (each pool's memo is a copy of it)."""

    api: client.ApiClient
    elector: LeaderElector | None
    stop: asyncio.Event
    task: asyncio.Task[None] | None
    guard: DoubleScalingGuard
    secrets: SecretReads
    lease_api: client.ApiClient | None = None
    trimmer: asyncio.Task[None] | None = None
    activator: Activator | None = None
    served: web.AppRunner | None = None
    watches: RedisWatches = field(default_factory=RedisWatches)


def options_of(memo: Any) -> OperatorOptions:
    options = memo.get("options")
    return options if isinstance(options, OperatorOptions) else OperatorOptions()


def runtime_of(memo: Any) -> Runtime | None:
    found = memo.get("runtime")
    return found if isinstance(found, Runtime) else None


def runtime(memo: Any) -> Runtime:
    found = runtime_of(memo)
    if found is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return found


def wake_of(memo: Any) -> PoolWake:
    """The pool's wake-up, in its own memo: set by the watch handler, awaited by the scaling daemon."""
    wake = memo.get("wake")
    if not isinstance(wake, PoolWake):
        wake = memo["wake"] = PoolWake()
    return wake


async def _load_kube_config() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()


class _WithoutWakeNotices(logging.Filter):
    """kopf logs every handler run at INFO; the wake notices run on every watch event of every pool."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'notice_change'" not in record.getMessage()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options = options_of(memo)
    logging.getLogger("kopf.objects").addFilter(_WithoutWakeNotices())
    # Progress lives in annotations only: status belongs to the scaler, and both replicas share it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="swell.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="swell.dev")
    settings.persistence.finalizer = "swell.dev/scaler"
    settings.watching.server_timeout = 300
    await _load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = API_CONNECTIONS
    api = client.ApiClient(configuration)
    stop = asyncio.Event()
    elector = task = lease_api = None
    if options.leader_election:
        # Its own connection: a renewal queued behind a thousand pools' reads lost the Lease at start-up.
        lease_configuration = client.Configuration.get_default_copy()
        lease_configuration.connection_pool_maxsize = 1
        lease_api = client.ApiClient(lease_configuration)
        elector = LeaderElector(lease_api, options.lease_namespace, identity=options.identity)
        await elector.try_acquire()
        task = asyncio.create_task(elector.run(stop), name="swell-leader-election")
    pushes = served = None
    if options.activator_port:
        pushes = activator.from_environment(api)
        served = await activator.serve(pushes, "0.0.0.0", options.activator_port)
    trimmer = asyncio.create_task(trim_periodically(stop), name="swell-memory-trim")
    memo["runtime"] = Runtime(
        api=api,
        elector=elector,
        stop=stop,
        task=task,
        lease_api=lease_api,
        guard=DoubleScalingGuard(api),
        secrets=SecretReads(api),
        trimmer=trimmer,
        activator=pushes,
        served=served,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    current = runtime_of(memo)
    if current is None:
        return
    memo["runtime"] = None
    current.stop.set()
    if current.task is not None:
        await current.task
    if current.trimmer is not None:
        await current.trimmer
    if current.served is not None:
        await current.served.cleanup()
    await current.watches.close()
    await current.api.close()
    if current.lease_api is not None:
        await current.lease_api.close()


@kopf.on.probe(id="leader")
async def leader_probe(memo: kopf.Memo, **_: Any) -> bool:
    """Reported by the liveness endpoint, so one can see which replica holds the Lease."""
    current = runtime_of(memo)
    return current is not None and (current.elector is None or current.elector.is_leader)


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
    *, spec: kopf.Spec, name: str | None, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    assert name is not None and namespace is not None  # WorkerPools are namespaced
    pool = _spec(spec)
    if pool.worker is None:
        return  # scaleTargetRef: the Deployment is the user's; Swell only scales it
    defaults = options_of(memo).pool_defaults()
    api = runtime(memo).api
    problem = missing_vector_store(pool, defaults)
    if problem is not None:
        # No workers: the scaler daemon reports the reason in status and as a Warning Event.
        log.warning("%s/%s gets no workers: %s", namespace, name, problem)
        await _scale_to_zero_if_present(api, namespace, deployment_name(name))
        return
    manifest = render_deployment(name, pool, pool.replicas.min, defaults)
    kopf.adopt(manifest, owner=body)
    outcome = await apply_deployment(api, namespace, manifest)
    log.info("%s/%s: Deployment %s", namespace, name, outcome)
    wake_of(memo).set()  # the scaler may have been waiting for its Deployment
    service = render_push_service(name, pool)
    if service is not None:
        kopf.adopt(service, owner=body)
        log.info("%s/%s: Service %s", namespace, name, await apply_service(api, namespace, service))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def notice_change(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wakes the pool's scaler when something it must act on changed: an activation, a spec edit. Async,
    so kopf runs it on the loop: a sync handler would cost a thread hop on every watch event of every pool."""
    metadata = body.get("metadata") or {}
    seen = (metadata.get("generation"), activated_at(metadata.get("annotations")))
    if memo.get("seen") != seen:
        memo["seen"] = seen
        wake_of(memo).set()


@kopf.daemon(GROUP, VERSION, PLURAL, id="scaler", cancellation_timeout=10.0)
async def scale(
    *,
    name: str | None,
    namespace: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Runs for as long as the pool exists; ``body`` is kopf's live view, so spec edits apply at once.

    Between rounds the daemon waits on the pool's wake-up (see ``wake``), not on a clock alone, so a pool
    asleep at zero costs nothing until an event or its slow idle read."""
    assert name is not None and namespace is not None  # WorkerPools are namespaced
    while runtime_of(memo) is None and not stopped:
        await stopped.wait(0.1)
    current = runtime(memo)
    options = options_of(memo)
    wake = wake_of(memo)
    scaler = PoolScaler(
        current.api,
        namespace,
        name,
        QueueReader(current.secrets, namespace, current.watches.clients),
        current.elector,
        current.activator,
        options.activator_url,
        watches=current.watches,
        wake=wake,
    )

    async def wake_when_stopped() -> None:
        await stopped.wait()
        wake.set()

    stopping = asyncio.create_task(wake_when_stopped(), name=f"swell-stop-{namespace}-{name}")
    # A round run while another replica leads neither scales nor reports: taking the Lease wakes the pool.
    unlisten = current.elector.on_change(wake.set) if current.elector is not None else None
    reported: str | None = None  # the reason this pool cannot run, once reported
    try:
        while not stopped:
            try:
                async with asyncio.timeout(ROUND_TIMEOUT_SECONDS):
                    pool = _spec(body.get("spec") or {})
                    problem, reason = missing_vector_store(pool, options.pool_defaults()), NO_VECTOR_STORE
                    if problem is None:
                        problem, reason = await current.guard.problem(namespace, target_of(name, pool)), ALREADY_SCALED
                    if problem is not None:
                        leading = current.elector is None or current.elector.is_leader
                        if leading and problem != reported:
                            await _report_unrunnable(current.api, namespace, name, body, problem, reason)
                            reported = problem
                        await wake.wait(UNRUNNABLE_RECHECK_SECONDS)
                        continue
                    if reported is not None:
                        reported = None
                        scaler.state.written = None  # the next round replaces the unrunnable status at once
                    wait = await scaler.tick(body)
            except (pydantic.ValidationError, kopf.PermanentError) as exc:
                log.error("%s/%s has an invalid spec: %s", namespace, name, exc)
                wait = ERROR_PAUSE_SECONDS
            except TimeoutError:
                log.warning("scaling round of %s/%s took over %.0f s", namespace, name, ROUND_TIMEOUT_SECONDS)
                wait = ERROR_PAUSE_SECONDS
            except Exception:
                log.exception("scaling round of %s/%s failed", namespace, name)
                wait = ERROR_PAUSE_SECONDS
            await wake.wait(wait)
    finally:
        stopping.cancel()
        if unlisten is not None:
            unlisten()
        await scaler.close()


async def _scale_to_zero_if_present(api: client.ApiClient, namespace: str, deployment: str) -> None:
    """A pool that lost its vector store keeps no workers writing to nowhere (a missing Deployment is fine)."""
    try:
        await scale_deployment(api, namespace, deployment, 0)
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
