"""The autoscalers under comparison, each a function of what its real counterpart can observe.

Swell calls the operator's own ``decide`` and ``RateEstimator`` (imported, never re-implemented; a
comparison with a recorded run may hand it the decision module of the commit that ran, see
bench/keda_side_by_side.py). The
baselines follow their documentation; every default below carries its source.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import swell_operator.decision
from swell_operator.rates import RateEstimator
from swell_operator.scaler import WAKE_POLL_SECONDS


@dataclass(frozen=True)
class Seen:
    """What a scaler can read at one moment: the queue, the workers, and the Deployment."""

    now: float
    backlog: int
    in_flight: int
    completed_total: int
    replicas: int  # the Deployment's spec.replicas
    ready: int


class Scaler(Protocol):
    name: str
    interval: float  # seconds between two decisions

    def desired(self, seen: Seen) -> int: ...


# --- Swell ------------------------------------------------------------------------------------------------
@dataclass
class Swell:
    """The operator's decision and rate estimator with the WorkerPool defaults of operator/swell_operator/
    model.py, read the way operator/swell_operator/scaler.py reads: every ``pollIntervalSeconds`` while
    the pool runs, every 0.1 s (WAKE_POLL_SECONDS) while it sleeps at zero, deciding only once per poll
    interval there unless work shows up."""

    concurrency: int
    max_replicas: int
    task_seconds_hint: float = 1.0
    target_wait_seconds: float = 30.0
    idle_seconds_before_zero: float = 30.0
    scale_down_stabilization_seconds: float = 60.0
    min_replicas: int = 0
    activation_backlog: int = 1
    name: str = "swell"
    poll_interval: float = 1.0  # spec.scaling.pollIntervalSeconds default
    interval: float = 1.0
    decision: ModuleType = swell_operator.decision  # the module with Policy, Observation, Memory, decide
    memory: Any = None  # the decision module's Memory
    rates: RateEstimator = field(default_factory=RateEstimator)
    _decided_at: float = -math.inf
    _quiet_at: float | None = None

    def desired(self, seen: Seen) -> int:
        asleep = seen.replicas == 0 and seen.backlog == 0 and seen.in_flight == 0 and self.min_replicas == 0
        if asleep and seen.now - self._decided_at < self.poll_interval:
            # The operator's shared watch sees the empty queue here, and a woken pool dates its arrivals
            # from the last such sighting (RateEstimator.saw_empty): only the last is taken, at the wake.
            self._quiet_at = seen.now
            self.interval = WAKE_POLL_SECONDS
            return 0
        if self._quiet_at is not None:
            self.rates = self.rates.saw_empty(self._quiet_at, self.concurrency)
        self._quiet_at = None
        self.rates = self.rates.observe(
            seen.now, seen.backlog, seen.in_flight, seen.completed_total, seen.ready, self.concurrency
        )
        module = self.decision
        policy = module.Policy(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            concurrency=self.concurrency,
            target_wait_seconds=self.target_wait_seconds,
            activation_backlog=self.activation_backlog,
            idle_seconds_before_zero=self.idle_seconds_before_zero,
            scale_down_stabilization_seconds=self.scale_down_stabilization_seconds,
            max_step_up=None,
            max_step_down=None,
            task_seconds_hint=self.task_seconds_hint,
        )
        # Fields an older decision module (a recorded run's, see above) may not have.
        fields = {f.name for f in dataclasses.fields(module.Observation)}
        optional = {
            name: value
            for name, value in (
                ("steady_arrival_rate", self.rates.slow_arrival_rate),
                ("recent_arrival_rate", self.rates.last_arrivals),
            )
            if name in fields
        }
        observation = module.Observation(
            now=seen.now,
            backlog=seen.backlog,
            in_flight=seen.in_flight,
            per_consumer_in_flight={},
            arrival_rate=self.rates.arrival_rate,
            **optional,
            service_rate_per_replica=self.rates.service_rate_per_replica,
            current_replicas=seen.replicas,
            ready_replicas=seen.ready,
        )
        decision = module.decide(observation, policy, self.memory if self.memory is not None else module.Memory())
        self.memory, self._decided_at = decision.memory, seen.now
        idle = seen.backlog == 0 and seen.in_flight == 0
        self.interval = WAKE_POLL_SECONDS if decision.replicas == 0 and idle else self.poll_interval
        return int(decision.replicas)


# --- KEDA + HPA ----------------------------------------------------------------------------------------------
# KEDA ScaledObject (https://keda.sh/docs/2.17/reference/scaledobject-spec/):
#   pollingInterval default 30 s: "interval to check each trigger on"; KEDA itself only does 0 <-> 1.
#   cooldownPeriod default 300 s: "period to wait after the last trigger reported active before scaling
#   the resource back to 0".
# KEDA redis-lists scaler (https://keda.sh/docs/2.17/scalers/redis-lists/): listLength default 5 (the
#   HPA's AverageValue target per pod), activationListLength default 0 (active when length > 0); the
#   metric is LLEN, i.e. the backlog only (tasks a worker holds are not in the list).
# HPA (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/): sync period 15 s
#   (--horizontal-pod-autoscaler-sync-period), tolerance 0.1; default behavior: scaleUp stabilization 0,
#   policies "100 percent or 4 pods per 15 s, selectPolicy Max"; scaleDown stabilizationWindowSeconds
#   300, policy 100 % per 15 s. desiredReplicas = ceil(currentReplicas * currentMetric / target), and for
#   AverageValue metrics currentMetric is the total divided by current replicas.
# KEDA redis-streams scaler (https://keda.sh/docs/2.17/scalers/redis-streams/): pendingEntriesCount
#   (default 5) is XPENDING, the entries delivered to consumers and not yet acknowledged: the work in
#   flight. An expert adds it next to the backlog trigger; the HPA then computes one desired count per
#   metric and takes the largest (HPA docs, "Algorithm details": "the maximum scale recommended by each
#   metric"), and KEDA counts the ScaledObject active while any trigger is.
# ScaledObject minReplicaCount (default 0) is the HPA's minReplicas when above 0; cooldownPeriod only
#   applies when scaling to 0 ("only applies after a trigger occurs; when you first create your
#   Deployment ... KEDA will immediately scale it to minReplicaCount").
@dataclass
class KedaHpa:
    concurrency: int
    max_replicas: int
    name: str = "keda-default"
    polling_interval: float = 30.0
    cooldown_period: float = 300.0
    list_length: float = 5.0
    hpa_sync: float = 15.0
    tolerance: float = 0.1
    scale_down_window: float = 300.0
    pending_entries: float | None = None  # the in-flight trigger's per-pod target; None: no such trigger
    min_replica_count: int = 0
    phase: float = 0.0  # where in its polling cycle KEDA is at time 0, in [0, 1)
    interval: float = 0.0  # until the next tick of either loop (set after each call)
    _next_poll: float = math.nan
    _next_sync: float = math.nan
    _last_active: float | None = None
    _active: bool = False
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def desired(self, seen: Seen) -> int:
        wanted = self._desired(seen)
        # Nothing changes between the two loops' ticks: be called again at the next one.
        self.interval = max(min(self._next_poll, self._next_sync) - seen.now, 0.05)
        return wanted

    def _desired(self, seen: Seen) -> int:
        current = seen.replicas
        if math.isnan(self._next_poll):  # both loops started at some moment before the trace
            self._next_poll = self.phase * self.polling_interval
            self._next_sync = self.phase * self.hpa_sync
        floor = max(self.min_replica_count, 1)
        if seen.now >= self._next_poll:  # the KEDA operator's loop: activation and scale to zero
            self._next_poll = seen.now + self.polling_interval
            active = seen.backlog > 0 or (self.pending_entries is not None and seen.in_flight > 0)
            if active:
                self._active, self._last_active = True, seen.now
            elif self._last_active is None or seen.now - self._last_active >= self.cooldown_period:
                self._active = False
            if self.min_replica_count == 0 and not self._active and current > 0:
                self._recommendations.clear()
                return 0
            if (self._active or self.min_replica_count > 0) and current == 0:
                return floor
        if seen.now < self._next_sync:
            return current
        self._next_sync = seen.now + self.hpa_sync  # the HPA controller's loop
        if current == 0:  # a target at zero: the HPA is inactive ("ScalingDisabled") until KEDA wakes it
            return current
        raw = self._per_metric(seen.backlog, self.list_length, current)
        if self.pending_entries is not None:
            raw = max(raw, self._per_metric(seen.in_flight, self.pending_entries, current))
        raw = max(floor, min(self.max_replicas, raw))
        self._recommendations.append((seen.now, raw))
        while self._recommendations and self._recommendations[0][0] < seen.now - self.scale_down_window:
            self._recommendations.popleft()
        if raw > current:
            limit = max(current * 2, current + 4)  # 100 % or 4 pods per 15 s, the larger
            return min(raw, limit)
        stable = max(r for _, r in self._recommendations)
        return max(min(stable, current), floor)

    def _per_metric(self, total: float, target: float, current: int) -> int:
        ratio = (total / current) / target  # AverageValue: the total over the current replicas
        return current if abs(ratio - 1.0) <= self.tolerance else math.ceil(current * ratio)


def keda_tuned(concurrency: int, max_replicas: int) -> KedaHpa:
    """What a careful user sets: poll every 5 s, cool down 60 s, a 60 s HPA scale-down window, and a
    listLength equal to what one pod drains in ~5 s (concurrency x 5 s / 1 s per task)."""
    return KedaHpa(
        concurrency,
        max_replicas,
        name="keda-tuned",
        polling_interval=5.0,
        cooldown_period=60.0,
        list_length=float(concurrency * 5),
        scale_down_window=60.0,
    )


# --- Knative KPA ---------------------------------------------------------------------------------------------
# config-autoscaler defaults (https://knative.dev/docs/serving/autoscaling/kpa-specific/ and
# https://github.com/knative/serving/blob/main/config/core/configmaps/autoscaler.yaml):
#   stable-window 60s, panic-window-percentage 10 (6 s), panic-threshold-percentage 200, tick-interval 2s,
#   max-scale-down-rate 2.0, max-scale-up-rate 1000, container-concurrency-target-percentage 70,
#   scale-to-zero-grace-period 30s. The metric is concurrency: requests in the pods plus those waiting
#   in queue-proxy/activator; here, tasks in flight plus the backlog (a push endpoint's view).
@dataclass
class KnativeKpa:
    concurrency: int
    max_replicas: int
    name: str = "knative-kpa"
    interval: float = 2.0
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    max_scale_up_rate: float = 1000.0
    target_utilisation: float = 0.7
    scale_to_zero_grace: float = 30.0
    phase: float = 0.0  # where in its tick the autoscaler is at time 0, in [0, 1)
    _samples: deque[tuple[float, int]] = field(default_factory=deque)
    _panic_until: float = -math.inf
    _zero_since: float | None = None

    def desired(self, seen: Seen) -> int:
        self._samples.append((seen.now, seen.backlog + seen.in_flight))
        while self._samples[0][0] < seen.now - self.stable_window:
            self._samples.popleft()
        stable = sum(c for _, c in self._samples) / len(self._samples)
        panic_samples = [c for t, c in self._samples if t >= seen.now - self.panic_window]
        panic = sum(panic_samples) / len(panic_samples)
        target = self.concurrency * self.target_utilisation
        current = seen.replicas
        want_stable, want_panic = math.ceil(stable / target), math.ceil(panic / target)
        ready = max(seen.ready, 1)
        if want_panic / ready >= self.panic_threshold:
            self._panic_until = seen.now + self.stable_window
        # no scale-down while panicking
        wanted = max(want_panic, current) if seen.now < self._panic_until else want_stable
        wanted = min(wanted, math.ceil(max(ready, 1) * self.max_scale_up_rate))
        if wanted < current:
            wanted = max(wanted, math.floor(current / self.max_scale_down_rate))
        if wanted == 0 and current > 0:
            if self._zero_since is None:
                self._zero_since = seen.now
            if seen.now - self._zero_since < self.scale_to_zero_grace:
                return current
        else:
            self._zero_since = None
        return max(0, min(self.max_replicas, wanted))
