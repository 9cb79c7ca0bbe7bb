"""One pool's scaling round: observe the queue and the Deployment, decide, apply, report.

All judgement lives in ``swell_operator.decision`` (pure); this module only gathers the observation
and carries out the answer, so the benchmark simulator and the operator can never disagree. A pool that
runs is read every ``pollIntervalSeconds``. A pool asleep at zero costs nothing per poll: its Redis keys
go to the server's shared watch (``wake``), one pipelined round trip for all sleeping pools on that
server, and an activation or spec edit arrives through kopf's watch; either wakes the round at once. Its
own full read then happens only as a safety net: every ``IDLE_POLL_SECONDS``, or ``WATCHED_IDLE_POLL_SECONDS``
when the shared watch sees all its work (queued, delayed and held). Status is written when
something a user sees changes, plus a slow heartbeat.

Failures never crash the loop: a queue that cannot be read holds the replicas (or runs the pool's
fallback after N failed reads), marks the pool Degraded with the error, and retries with backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from swell_contract.depth import Depth

from swell_operator import events, metrics
from swell_operator.activator import Activator
from swell_operator.decision import Decision, Memory, Observation, Policy, decide
from swell_operator.deletion_cost import annotate_deletion_costs
from swell_operator.deployment import Replicas, deployment_name, read_replicas, scale_deployment
from swell_operator.depth import DepthUnavailable, QueueReader
from swell_operator.leader import LeaderElector
from swell_operator.model import WorkerPoolSpec
from swell_operator.pubsub_pool import PEEK_INTERVAL_SECONDS, PubSubPool
from swell_operator.rates import RateEstimator
from swell_operator.secrets import SecretError
from swell_operator.status import Health, conditions, utc_now, visible, write_status
from swell_operator.wake import PoolWake, RedisWatches, Watched

log = logging.getLogger(__name__)

# A sleeping pool with no shared watch (see ``wake``) reads its own queue this often.
WAKE_POLL_SECONDS = 0.1
# A sleeping pool that events can wake reads its queue only this often (jittered, so pools spread out):
# a safety net for what no event reports, such as a subscription's push endpoint changed by hand.
IDLE_POLL_SECONDS = 60.0
# A sleeping Redis pool on a shared watch, which sees its queued, delayed and held tasks, reads its own
# queue and Deployment this seldom: at 1000 sleeping pools the once-a-minute read was most of the
# operator's idle CPU, and what it could still find (a Deployment scaled by hand) can wait minutes.
WATCHED_IDLE_POLL_SECONDS = 300.0
IDLE_POLL_JITTER = 0.2
# A pool whose Deployment is missing looks again this often (hundreds of pools created at once must not
# poll the API server for Deployments that are still being made).
TARGET_RECHECK_SECONDS = 5.0
# Longest wait between reads of a queue that keeps failing.
MAX_BACKOFF_SECONDS = 5.0
# Status is written when a decision or a condition changes (at once), when a figure a user sees changes
# (at most every STATUS_MIN_INTERVAL seconds), and otherwise as a heartbeat so rates and the scaler memory
# survive an operator restart: slow for awake pools, slower for pools asleep, whose memory barely matters.
# At 1000 sleeping pools that is about 0.6 writes a second.
STATUS_MIN_INTERVAL_SECONDS = 5.0
STATUS_HEARTBEAT_SECONDS = 300.0
ASLEEP_HEARTBEAT_SECONDS = 1800.0


def idle_wait(poll: float, idle: float = IDLE_POLL_SECONDS) -> float:
    return max(poll, idle * random.uniform(1 - IDLE_POLL_JITTER, 1 + IDLE_POLL_JITTER))


def policy_of(spec: WorkerPoolSpec) -> Policy:
    scaling = spec.scaling
    return Policy(
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        concurrency=spec.concurrency,
        target_wait_seconds=scaling.target_wait_seconds,
        activation_backlog=scaling.activation_backlog,
        idle_seconds_before_zero=scaling.idle_seconds_before_zero,
        scale_down_stabilization_seconds=scaling.scale_down_stabilization_seconds,
        max_step_up=scaling.max_step_up,
        max_step_down=scaling.max_step_down,
        task_seconds_hint=scaling.task_seconds_hint,
    )


def target_of(pool: str, spec: WorkerPoolSpec) -> str:
    return spec.scale_target_ref.name if spec.scale_target_ref is not None else deployment_name(pool)


def _dump(value: Any) -> Any:
    return value.to_json()


def observation_of(now: float, depth: Depth, replicas: Replicas, rates: RateEstimator) -> Observation:
    """What the decision sees of one reading: the queue, the Deployment, and the rates learnt so far."""
    return Observation(
        now=now,
        backlog=depth.backlog,
        in_flight=depth.in_flight if depth.mean_in_flight is None else depth.mean_in_flight,
        per_consumer_in_flight=dict(depth.per_consumer),
        arrival_rate=rates.arrival_rate,
        steady_arrival_rate=rates.slow_arrival_rate,
        recent_arrival_rate=rates.last_arrivals,
        service_rate_per_replica=rates.service_rate_per_replica,
        current_replicas=replicas.spec,
        ready_replicas=replicas.ready,
        backlog_visible=depth.backlog_visible,
    )


@dataclass
class ScalerState:
    """What the loop carries from one read to the next; memory and rates are also kept in status."""

    memory: Memory = field(default_factory=Memory)
    rates: RateEstimator = field(default_factory=RateEstimator)
    failures: int = 0
    last_error: str | None = None
    last_decision: dict[str, Any] | None = None
    desired: int | None = None
    replicas: Replicas | None = None
    replicas_read_at: float = 0.0
    written: dict[str, Any] | None = None
    written_at: float = 0.0
    restored: bool = False
    decided_at: float = 0.0
    # The durability warning last posted as an Event, so each is posted once per change.
    durability_warned: str | None = None


class PoolScaler:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        reader: QueueReader,
        elector: LeaderElector | None,
        activator: Activator | None = None,
        activator_url: str | None = None,
        *,
        watches: RedisWatches | None = None,
        wake: PoolWake | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.reader = reader
        self.pubsub = PubSubPool(api, namespace, name, activator, activator_url)
        self.elector = elector
        self.state = ScalerState()
        # Sleeping Redis pools are woken by their server's shared watch instead of polling.
        self.watches = watches
        self.wake = wake or PoolWake()
        self._watched: Watched | None = None
        self._heartbeat_spread = random.uniform(0.8, 1.2)  # so pools started together do not write together

    @property
    def leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def restore(self, status: Mapping[str, Any]) -> None:
        """Pick up the memory a previous leader (or a previous run) left in status."""
        saved = status.get("scalerMemory") or {}
        try:
            if saved.get("decision") is not None:
                self.state.memory = Memory.from_json(saved["decision"])
            if saved.get("rates") is not None:
                self.state.rates = RateEstimator.from_json(saved["rates"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable scalerMemory of %s/%s: %s", self.namespace, self.name, exc)
        last = status.get("lastDecision")
        if isinstance(last, Mapping):
            self.state.last_decision = dict(last)
            self.state.desired = status.get("desiredReplicas")
        self.state.written = None
        self.state.restored = True

    async def tick(self, body: Mapping[str, Any]) -> float:
        """observe -> decide -> apply -> report; returns the seconds to wait before the next round."""
        spec = WorkerPoolSpec.model_validate(dict(body.get("spec") or {}))
        leading = self.leading
        if leading and not self.state.restored:
            self.restore(body.get("status") or {})
        if not leading:
            self.state.restored = False
        started = time.perf_counter()
        try:
            depth = await self._observe_queue(spec, body, leading)
        except DepthUnavailable as exc:
            return await self._on_read_failure(body, spec, str(exc), leading)
        replicas = await self._replicas(spec, depth)
        if replicas is None:
            await self._report(
                body, spec, depth, None, leading, error=self.state.last_error, error_reason="TargetUnavailable"
            )
            # The bundled Deployment's creation wakes the pool (handlers); a user's is looked for again later.
            return max(spec.scaling.poll_interval_seconds, TARGET_RECHECK_SECONDS)
        self._observe_rates(spec, depth, replicas)
        decision = None if spec.scaling.paused else self._decide(spec, depth, replicas, leading)
        if decision is not None and leading:
            await self._apply(body, spec, depth, replicas, decision)
        metrics.DECISION_SECONDS.labels(self.namespace, self.name).observe(time.perf_counter() - started)
        await self._report(body, spec, depth, self.state.replicas, leading)
        return await self._next_wait(spec, depth)

    async def _observe_queue(self, spec: WorkerPoolSpec, body: Mapping[str, Any], leading: bool) -> Depth:
        """The queue's depth (DepthUnavailable when it cannot be read), with its metrics and health Events."""
        if spec.queue.backend == "pubsub":
            at_zero = self.state.replicas is not None and self.state.replicas.spec == 0
            depth = await self.pubsub.read(spec, body, at_zero, leading)
        else:
            depth = await self.reader.read(spec.queue)
        labels = (self.namespace, self.name)
        metrics.QUEUE_BACKLOG.labels(*labels).set(depth.backlog)
        metrics.IN_FLIGHT.labels(*labels).set(depth.in_flight)
        durability = self.reader.durability_problem
        if leading and durability is not None and durability != self.state.durability_warned:
            events.redis_not_durable(body, durability)
        self.state.durability_warned = durability
        if self.state.failures:
            log.info("queue of %s/%s readable again after %d failures", self.namespace, self.name, self.state.failures)
            if leading:
                events.queue_recovered(body)
        self.state.failures, self.state.last_error = 0, None
        return depth

    def _observe_rates(self, spec: WorkerPoolSpec, depth: Depth, replicas: Replicas) -> None:
        metrics.REPLICAS_CURRENT.labels(self.namespace, self.name).set(replicas.spec)
        now, rates = time.time(), self.state.rates
        # Asleep on the shared watch, the pool was not read for minutes: date its arrivals from the watch's
        # last empty sighting instead (``RateEstimator.saw_empty``).
        empty_at = self.wake.take_empty_at()
        if empty_at is not None and empty_at < now and rates.last_queued == 0:
            rates = rates.saw_empty(empty_at, spec.concurrency)
        self.state.rates = rates.observe(
            now, depth.backlog, depth.in_flight, depth.completed_total, replicas.ready, spec.concurrency
        )

    def _decide(self, spec: WorkerPoolSpec, depth: Depth, replicas: Replicas, leading: bool) -> Decision | None:
        """The pure decision, remembered; None when it keeps the replicas as they are."""
        observation = observation_of(time.time(), depth, replicas, self.state.rates)
        decision = decide(observation, policy_of(spec), self.state.memory)
        self.state.memory = decision.memory
        self.state.desired = decision.replicas
        metrics.REPLICAS_DESIRED.labels(self.namespace, self.name).set(decision.replicas)
        changes = decision.replicas != replicas.spec
        if leading and (self.state.last_decision is None or changes):
            self.state.last_decision = {"replicas": decision.replicas, "reason": decision.reason, "time": utc_now()}
        return decision if changes else None

    async def _next_wait(self, spec: WorkerPoolSpec, depth: Depth) -> float:
        """A pool asleep at zero waits long, to be woken by an event; any other polls at its interval."""
        poll = spec.scaling.poll_interval_seconds
        asleep = self._asleep(self.state.replicas, depth)
        if spec.queue.backend == "pubsub":
            self._stop_watching()
            if asleep and spec.queue.pubsub is not None and spec.queue.pubsub.mode == "pull":
                return min(poll, PEEK_INTERVAL_SECONDS)  # the peek is the only way to see pulled work
            if asleep and self.pubsub.pushes_at_workers:
                return poll  # the next round points the subscription back at the activator
            return idle_wait(poll) if asleep else poll
        if not asleep:
            self._stop_watching()
            return poll
        if await self._watch_queue(spec):
            return idle_wait(poll, WATCHED_IDLE_POLL_SECONDS)
        return min(poll, WAKE_POLL_SECONDS)  # no shared watch: read the queue itself, often

    async def _watch_queue(self, spec: WorkerPoolSpec) -> bool:
        """Hands the sleeping pool's keys to its Redis server's shared watch; False where there is none."""
        queue = spec.queue
        if self.watches is None or queue.redis is None:
            return False
        names = tuple(queue.streams.streams if queue.streams is not None else queue.list.keys if queue.list else ())
        watched = Watched(queue.backend, names)
        pool = (self.namespace, self.name)
        if self._watched == watched and self.watches.watching(pool):
            return True
        try:
            url, password = await self.reader.secrets.redis_server(self.namespace, queue.redis)
        except SecretError:
            return False  # the pool's own reads report the Secret
        self.watches.watch(pool, url, password, watched, self.wake)
        self._watched = watched
        return True

    def _stop_watching(self) -> None:
        if self.watches is not None and self._watched is not None:
            self.watches.forget((self.namespace, self.name))
        self._watched = None

    @staticmethod
    def _asleep(replicas: Replicas | None, depth: Depth) -> bool:
        return replicas is not None and replicas.spec == 0 and depth.backlog == 0 and depth.in_flight == 0

    async def _replicas(self, spec: WorkerPoolSpec, depth: Depth) -> Replicas | None:
        """The Deployment's replicas, re-read once per poll interval, or at once when work shows up at zero."""
        cached = self.state.replicas
        age = time.monotonic() - self.state.replicas_read_at
        woke = cached is not None and cached.spec == 0 and (depth.backlog > 0 or depth.in_flight > 0)
        if cached is not None and age < spec.scaling.poll_interval_seconds and not woke:
            return cached
        target = target_of(self.name, spec)
        try:
            replicas = await read_replicas(self.api, self.namespace, target)
        except ApiException as exc:
            if exc.status == 404:
                self.state.last_error = f"Deployment {self.namespace}/{target} does not exist"
            else:
                self.state.last_error = f"cannot read Deployment {self.namespace}/{target}: HTTP {exc.status}"
            self.state.replicas = None
            return None
        self.state.replicas, self.state.replicas_read_at = replicas, time.monotonic()
        return replicas

    async def _apply(
        self, body: Mapping[str, Any], spec: WorkerPoolSpec, depth: Depth, replicas: Replicas, decision: Decision
    ) -> None:
        target = target_of(self.name, spec)
        try:
            if decision.replicas < replicas.spec:
                # Idle pods first: the ReplicaSet controller removes the lowest deletion cost first.
                await annotate_deletion_costs(self.api, self.namespace, replicas.selector, depth.per_consumer)
            await scale_deployment(self.api, self.namespace, target, decision.replicas)
        except ApiException as exc:
            message = f"cannot scale Deployment {self.namespace}/{target}: HTTP {exc.status} {exc.reason}"
            log.warning("%s", message)
            events.scale_failed(body, message)
            return
        log.info(
            "%s/%s: replicas %d -> %d: %s", self.namespace, self.name, replicas.spec, decision.replicas, decision.reason
        )
        events.scaled(body, replicas.spec, decision.replicas, decision.reason)
        self.state.replicas = Replicas(decision.replicas, replicas.ready, replicas.selector)
        self.state.replicas_read_at = time.monotonic()

    async def _on_read_failure(self, body: Mapping[str, Any], spec: WorkerPoolSpec, error: str, leading: bool) -> float:
        labels = (self.namespace, self.name)
        metrics.QUEUE_READ_ERRORS.labels(*labels).inc()
        self.state.failures += 1
        failures = self.state.failures
        if failures == 1 or error != self.state.last_error:
            log.warning("%s/%s: %s", self.namespace, self.name, error)
            if leading:
                events.queue_unreadable(body, error)
        self.state.last_error = error
        replicas = await self._replicas(spec, Depth(backlog=0, in_flight=0))
        fallback = spec.scaling.fallback
        if (
            leading
            and replicas is not None
            and fallback.replicas is not None
            and failures >= fallback.after_failed_reads
            and replicas.spec != fallback.replicas
            and not spec.scaling.paused
        ):
            target = target_of(self.name, spec)
            try:
                await scale_deployment(self.api, self.namespace, target, fallback.replicas)
                events.fallback(body, fallback.replicas, failures)
                self.state.replicas = Replicas(fallback.replicas, replicas.ready, replicas.selector)
                self.state.desired = fallback.replicas
                self.state.last_decision = {
                    "replicas": fallback.replicas,
                    "reason": f"fallback after {failures} failed queue reads",
                    "time": utc_now(),
                }
            except ApiException as exc:
                events.scale_failed(body, f"cannot scale Deployment {self.namespace}/{target}: HTTP {exc.status}")
        await self._report(body, spec, None, self.state.replicas, leading, error=error)
        backoff: float = spec.scaling.poll_interval_seconds * 2 ** min(failures - 1, 6)
        return min(max(backoff, spec.scaling.poll_interval_seconds), MAX_BACKOFF_SECONDS)

    async def _report(
        self,
        body: Mapping[str, Any],
        spec: WorkerPoolSpec,
        depth: Depth | None,
        replicas: Replicas | None,
        leading: bool,
        *,
        error: str | None = None,
        error_reason: str = "QueueUnreadable",
    ) -> None:
        """Write status when something visible changed (at most once a second) or as a heartbeat."""
        if not leading:
            return
        previous = (body.get("status") or {}).get("conditions") or []
        now_text = utc_now()
        status: dict[str, Any] = {
            "observedGeneration": (body.get("metadata") or {}).get("generation"),
            "desiredReplicas": self.state.desired,
            "currentReplicas": replicas.spec if replicas else None,
            "readyReplicas": replicas.ready if replicas else None,
            "lastDecision": self.state.last_decision,
            "conditions": conditions(
                Health(
                    paused=spec.scaling.paused,
                    error=error,
                    desired=self.state.desired,
                    current=replicas.spec if replicas else None,
                    ready=replicas.ready if replicas else None,
                    error_reason=error_reason,
                    generation=(body.get("metadata") or {}).get("generation"),
                ),
                previous,
                now_text,
            ),
            "target": _target_text(self.name, spec),
            "scalerMemory": {"decision": _dump(self.state.memory), "rates": _dump(self.state.rates)},
            "arrivalRate": _rounded(self.state.rates.arrival_rate),
            "serviceRate": _rounded(self.state.rates.service_rate_per_replica),
        }
        if depth is not None:
            status["backlog"] = depth.backlog
            status["inFlight"] = depth.in_flight
        metrics.record_health(
            self.namespace,
            self.name,
            degraded=error is not None,
            target_wait=spec.scaling.target_wait_seconds,
            expected_wait_seconds=metrics.expected_wait(
                depth.backlog if depth else None, status["readyReplicas"], self.state.rates.service_rate_per_replica
            ),
        )
        if self.pubsub.dead_letter is not None:
            status["deadLetter"] = self.pubsub.dead_letter
        shown = visible(status)
        since = time.monotonic() - self.state.written_at
        changed = shown != self.state.written
        asleep = depth is not None and self._asleep(replicas, depth)
        heartbeat = (ASLEEP_HEARTBEAT_SECONDS if asleep else STATUS_HEARTBEAT_SECONDS) * self._heartbeat_spread
        if not changed and since < heartbeat:
            return
        decision_changed = self.state.written is not None and (
            shown.get("lastDecision") != self.state.written.get("lastDecision")
            or shown.get("conditions") != self.state.written.get("conditions")
        )
        if changed and not decision_changed and self.state.written is not None and since < STATUS_MIN_INTERVAL_SECONDS:
            return
        try:
            await write_status(self.api, self.namespace, self.name, status)
        except ApiException as exc:
            if exc.status != 404:  # a pool being deleted has no status to write
                log.warning("cannot write status of %s/%s: HTTP %s", self.namespace, self.name, exc.status)
            return
        self.state.written, self.state.written_at = shown, time.monotonic()

    async def close(self) -> None:
        self._stop_watching()
        await self.reader.close()
        await self.pubsub.close()
        metrics.forget_pool(self.namespace, self.name)


def _target_text(pool: str, spec: WorkerPoolSpec) -> str:
    """For `kubectl get wp`: which Deployment is scaled, and whether Swell owns it."""
    if spec.scale_target_ref is not None:
        return f"{spec.scale_target_ref.name} (scaleTargetRef)"
    return f"{target_of(pool, spec)} (bundled)"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
