"""What the operator sees and steers of a Pub/Sub pool: depth from quick signals, push routing, dead letters.

Pub/Sub has no cheap "how many wait" (Cloud Monitoring has it, minutes late), so the depth here is built
from what can be seen within a poll (docs/pubsub.md):
- the workers' own figures (``worker_metrics``): mean tasks in flight, tasks settled, pushes refused;
- an activation: a push the activator answered while no worker was ready (an annotation on the pool);
- at zero in pull mode, a peek at the subscription (one message pulled and released at once), at most
  once per ``PEEK_INTERVAL_SECONDS`` because each peek costs the message one delivery attempt;
- in production, Cloud Monitoring's backlog, minutes late: counted only while the workers are saturated,
  where it says how far to grow in one step (when they have headroom, the backlog it reports is old).
The backlog reported is the work seen waiting, a lower bound, and the Depth says so, so that the decision
keeps headroom instead of reading "0 waiting" as the truth. A wake-up (activation or peek) stays one task
waiting until work reaches a worker, so the pool is still up when Pub/Sub retries the refused push.

Push routing (leader only, activator on and ``pushEndpoint`` set): the subscription points at the workers
while at least one is ready and answers, and at the activator otherwise. Pub/Sub keeps every message it
could not deliver and retries it, so the switch loses nothing.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from swell_contract.depth import Depth

from swell_operator import events
from swell_operator.activator import Activator, activated_at, activation_path
from swell_operator.deployment import POOL_LABEL, WORKER_PORT
from swell_operator.depth import REBUILD_SECONDS, DepthUnavailable
from swell_operator.model import PubSubQueue, WorkerPoolSpec
from swell_operator.pubsub_admin import MonitoredBacklog, PubSubAdmin, PubSubAdminError, delivery_attempts
from swell_operator.secrets import SecretError, read_secret_key
from swell_operator.worker_metrics import PoolFigures, WorkerScraper

log = logging.getLogger(__name__)

PEEK_INTERVAL_SECONDS = 1.0
# An activation older than this when first seen (e.g. after an operator restart) wakes nothing.
ACTIVATION_TTL_SECONDS = 120.0
# A wake-up counts as one task waiting until work reaches a worker: the refused push comes back only
# after Pub/Sub's push backoff, and a pool back at zero by then would refuse it again (each refusal is a
# delivery attempt). Pub/Sub's longest push backoff is 600 s, so the hold ends there at the latest.
WAKE_HOLD_SECONDS = 600.0
DEAD_LETTER_CHECK_SECONDS = 300.0
# Monitoring samples every 60 s; reading more often only spends API quota.
MONITORING_INTERVAL_SECONDS = 30.0
# Workers this busy on average leave no room to see what waits: the monitored backlog is the better guess.
SATURATED_UTILISATION = 0.9


def with_token(url: str, token: str | None) -> str:
    return f"{url}?{urllib.parse.urlencode({'token': token})}" if token else url


def without_query(url: str | None) -> str:
    """A push endpoint fit for a log line or status: the token lives in the query."""
    return (url or "").split("?", 1)[0]


@dataclass
class Every:
    """True from ``due()`` at most once per ``seconds``: for calls that cost quota or delivery attempts."""

    seconds: float
    last: float = -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def seen_backlog(figures: PoolFigures, waking: bool, monitored: MonitoredBacklog | None, concurrency: int) -> int:
    """Work known to wait: refused pushes and a pending wake-up, or Monitoring's (late) count while every
    worker is saturated. With headroom, idle slots would have taken what waits, so that count is old."""
    seen = figures.refused + int(waking)
    slots = concurrency * figures.answered
    saturated = slots > 0 and figures.mean_in_flight >= SATURATED_UTILISATION * slots
    if monitored is not None and saturated:
        return max(seen, monitored.messages)
    return seen


class PubSubPool:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        activator: Activator | None,
        activator_url: str | None,
    ) -> None:
        self.api = api
        # Where this replica's activator learns how to check this pool's pushes (None: no activator here).
        self.activator = activator
        self.namespace = namespace
        self.name = name
        self.activator_url = activator_url.rstrip("/") if activator_url else None
        self.dead_letter: dict[str, Any] | None = None
        self._admin: PubSubAdmin | None = None
        self._queue: PubSubQueue | None = None
        self._built_at = 0.0
        self._token: str | None = None
        self._scraper = WorkerScraper(api, namespace, {POOL_LABEL: name}, WORKER_PORT)
        self._figures = PoolFigures()
        self._seen_activation: float | None = None
        self._waking = False  # seen waiting work (an activation or a peek) that no worker has taken yet
        self._woke_at = 0.0
        self._settled_at_wake = 0
        self._peeks = Every(PEEK_INTERVAL_SECONDS)
        self._routed_to: str | None = None
        # True while the subscription pushes to the workers: a pool at zero must move it back before it sleeps.
        self.pushes_at_workers = False
        self._dead_letter_checks = Every(DEAD_LETTER_CHECK_SECONDS)
        self._monitored: MonitoredBacklog | None = None
        self._monitoring_reads = Every(MONITORING_INTERVAL_SECONDS)
        self._monitoring_error: str | None = None
        self._warned_cannot_wake = False
        self._dead_letter_warned: str | None = None

    async def read(self, spec: WorkerPoolSpec, body: Mapping[str, Any], at_zero: bool, leading: bool) -> Depth:
        queue = spec.queue.pubsub
        assert queue is not None  # the CRD's CEL rule requires it
        if spec.worker is None:
            raise DepthUnavailable(
                "Pub/Sub depth comes from the bundled worker's metrics: a scaleTargetRef pool "
                "cannot be scaled from a Pub/Sub subscription"
            )
        admin = await self._admin_for(queue)
        self._note_activation((body.get("metadata") or {}).get("annotations"))
        if not at_zero:
            try:
                self._figures = await self._scraper.read()
            except ApiException as exc:
                raise DepthUnavailable(f"cannot list the pool's pods: HTTP {exc.status}") from None
        else:
            self._figures = PoolFigures(settled_total=self._figures.settled_total)
        if self._waking and (self._work_reached_a_worker() or time.monotonic() - self._woke_at > WAKE_HOLD_SECONDS):
            self._waking = False
        if leading and at_zero and queue.mode == "pull" and not self._waking:
            await self._peek(admin)  # the leader alone: every peek costs the message a delivery attempt
        if leading:
            self._warn_if_push_cannot_wake(spec, body)
            await self._route_pushes(admin, queue, self._figures.ready_answered > 0)
            await self._check_dead_letter(admin, spec, body)
            await self._read_monitored(admin)
        figures = self._figures
        return Depth(
            backlog=seen_backlog(figures, self._waking, self._monitored, spec.concurrency),
            in_flight=figures.in_flight,
            per_consumer=dict(figures.per_pod),
            completed_total=figures.settled_total,
            mean_in_flight=figures.mean_in_flight,
            oldest_age_seconds=None if self._monitored is None else self._monitored.oldest_age_seconds,
            backlog_visible=False,
        )

    def _warn_if_push_cannot_wake(self, spec: WorkerPoolSpec, body: Mapping[str, Any]) -> None:
        """Said once per operator run: without the activator route, a push pool that sleeps stays asleep."""
        queue = spec.queue.pubsub
        if self._warned_cannot_wake or queue is None or queue.mode != "push" or spec.replicas.min > 0:
            return
        if queue.push_endpoint and self.activator_url:
            return
        self._warned_cannot_wake = True
        message = (
            "a push pool at zero cannot be woken by a push: set spec.queue.pubsub.pushEndpoint and run the "
            "operator with the activator (chart activator.enabled and activator.url), or set replicas.min >= 1"
        )
        log.warning("%s/%s: %s", self.namespace, self.name, message)
        events.cannot_wake(body, message)

    async def _read_monitored(self, admin: PubSubAdmin) -> None:
        """The slow signal is optional: without the Monitoring Viewer role the pool still scales, so a failure
        is logged (once per distinct message) and the last value, if any, stands."""
        if not self._monitoring_reads.due():
            return
        try:
            self._monitored = await admin.monitored_backlog()
        except PubSubAdminError as exc:
            if str(exc) != self._monitoring_error:
                log.warning("%s/%s: no backlog from Cloud Monitoring: %s", self.namespace, self.name, exc)
            self._monitoring_error = str(exc)
        else:
            self._monitoring_error = None

    def _note_activation(self, annotations: object) -> None:
        at = activated_at(annotations)
        if at is None or at == self._seen_activation:
            return
        first_sight = self._seen_activation is None
        self._seen_activation = at
        if not (first_sight and time.time() - at > ACTIVATION_TTL_SECONDS):
            self._wake()

    def _wake(self) -> None:
        if not self._waking:
            self._waking, self._woke_at = True, time.monotonic()
            self._settled_at_wake = self._figures.settled_total

    def _work_reached_a_worker(self) -> bool:
        figures = self._figures
        return figures.in_flight > 0 or figures.refused > 0 or figures.settled_total > self._settled_at_wake

    async def _peek(self, admin: PubSubAdmin) -> None:
        if not self._peeks.due():
            return
        if await self._call(admin.peek()):
            self._wake()

    async def _admin_for(self, queue: PubSubQueue) -> PubSubAdmin:
        stale = time.monotonic() - self._built_at > REBUILD_SECONDS
        if self._admin is not None and queue == self._queue and not stale:
            return self._admin
        await self._close_admin()
        try:
            self._token = None
            if queue.push_token_secret_ref is not None:
                self._token = await read_secret_key(self.api, self.namespace, queue.push_token_secret_ref)
            if self.activator is not None and queue.mode == "push":
                self.activator.register(
                    self.namespace,
                    self.name,
                    shared_token=self._token,
                    audience=queue.push_audience,
                    service_account=queue.push_service_account,
                )
            elif self.activator is not None:
                self.activator.forget(self.namespace, self.name)
            self._admin = await PubSubAdmin.open(self.api, self.namespace, queue)
        except ValueError as exc:  # a rule that would leave the endpoint open
            raise DepthUnavailable(str(exc)) from None
        except (PubSubAdminError, SecretError) as exc:
            raise DepthUnavailable(str(exc)) from None
        self._queue, self._built_at = queue, time.monotonic()
        self._routed_to = None
        self._dead_letter_checks = Every(DEAD_LETTER_CHECK_SECONDS)
        return self._admin

    async def _route_pushes(self, admin: PubSubAdmin, queue: PubSubQueue, workers_ready: bool) -> None:
        if queue.mode != "push" or not queue.push_endpoint or not self.activator_url:
            return
        if self._routed_to is None:
            self._routed_to = await self._call(admin.push_endpoint())
        at_activator = self.activator_url + activation_path(self.namespace, self.name)
        wanted = with_token(queue.push_endpoint if workers_ready else at_activator, self._token)
        self.pushes_at_workers = workers_ready
        if wanted != self._routed_to:
            await self._call(admin.set_push_endpoint(wanted))
            log.info("%s/%s: pushes now go to %s", self.namespace, self.name, without_query(wanted))
            self._routed_to = wanted

    async def _check_dead_letter(self, admin: PubSubAdmin, spec: WorkerPoolSpec, body: Mapping[str, Any]) -> None:
        """The subscription's dead-letter policy, set from the pool; what could not be set is said in status
        and, once per change, as a Warning Event."""
        if not self._dead_letter_checks.due():
            return
        queue = spec.queue.pubsub
        assert queue is not None
        attempts = delivery_attempts(
            queue.max_delivery_attempts,
            "max_delivery_attempts" in queue.model_fields_set,
            spec.worker.max_attempts if spec.worker is not None else None,
        )
        try:
            self.dead_letter = await admin.dead_letter_status(attempts)
        except PubSubAdminError as exc:
            self.dead_letter = {"policy": "unknown", "message": str(exc)}
        problem = (
            None if self.dead_letter.get("policy") in ("set", "already set", "not configured") else self.dead_letter
        )
        warning = None if problem is None else str(problem.get("message"))
        if warning is not None and warning != self._dead_letter_warned:
            log.warning("%s/%s: %s", self.namespace, self.name, warning)
            events.dead_letter_not_set(body, warning)
        self._dead_letter_warned = warning

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except PubSubAdminError as exc:
            await self._close_admin()
            raise DepthUnavailable(str(exc)) from None

    async def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        self._queue = None
        if admin is not None:
            await admin.close()

    async def close(self) -> None:
        await self._close_admin()
        await self._scraper.close()
        if self.activator is not None:
            self.activator.forget(self.namespace, self.name)
