"""The autoscalers under comparison, each a function of what its real counterpart can observe.

Swell calls the operator's own ``decide`` and ``RateEstimator`` (imported, never re-implemented). The
baselines follow their documentation; every default below carries its source.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from swell_operator.decision import Memory, Observation, Policy, decide
from swell_operator.rates import RateEstimator


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
    """The operator's decision with the WorkerPool defaults of operator/swell_operator/model.py."""

    concurrency: int
    max_replicas: int
    task_seconds_hint: float = 1.0
    target_wait_seconds: float = 30.0
    name: str = "swell"
    interval: float = 1.0  # spec.scaling.pollIntervalSeconds default
    memory: Memory = field(default_factory=Memory)
    rates: RateEstimator = field(default_factory=RateEstimator)

    def desired(self, seen: Seen) -> int:
        self.rates = self.rates.observe(
            seen.now, seen.backlog, seen.in_flight, seen.completed_total, seen.ready, self.concurrency
        )
        policy = Policy(
            min_replicas=0, max_replicas=self.max_replicas, concurrency=self.concurrency,
            target_wait_seconds=self.target_wait_seconds, activation_backlog=1, idle_seconds_before_zero=30.0,
            scale_down_stabilization_seconds=60.0, max_step_up=None, max_step_down=None,
            task_seconds_hint=self.task_seconds_hint,
        )
        observation = Observation(
            now=seen.now, backlog=seen.backlog, in_flight=seen.in_flight, per_consumer_in_flight={},
            arrival_rate=self.rates.arrival_rate, service_rate_per_replica=self.rates.service_rate_per_replica,
            current_replicas=seen.replicas, ready_replicas=seen.ready,
        )
        decision = decide(observation, policy, self.memory)
        self.memory = decision.memory
        return decision.replicas


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
    interval: float = 1.0  # the simulator ticks us every second; we act on our own clocks below
    _next_poll: float = 0.0
    _next_sync: float = 0.0
    _last_active: float | None = None
    _active: bool = False
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    _last_scale_up: float = -math.inf
    _current: int = 0

    def desired(self, seen: Seen) -> int:
        current = seen.replicas
        if seen.now >= self._next_poll:  # the KEDA operator's loop: activation and scale to zero
            self._next_poll = seen.now + self.polling_interval
            if seen.backlog > 0:
                self._active, self._last_active = True, seen.now
            elif self._last_active is None or seen.now - self._last_active >= self.cooldown_period:
                self._active = False
            if not self._active and current > 0 and (
                self._last_active is None or seen.now - self._last_active >= self.cooldown_period
            ):
                self._recommendations.clear()
                return 0
            if self._active and current == 0:
                return 1
        if current == 0 or seen.now < self._next_sync:
            return current
        self._next_sync = seen.now + self.hpa_sync  # the HPA controller's loop
        ratio = (seen.backlog / current) / self.list_length
        raw = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(current * ratio)
        raw = max(1, min(self.max_replicas, raw))  # KEDA keeps the HPA's minReplicas at 1 while active
        self._recommendations.append((seen.now, raw))
        while self._recommendations and self._recommendations[0][0] < seen.now - self.scale_down_window:
            self._recommendations.popleft()
        if raw > current:
            limit = max(current * 2, current + 4)  # 100 % or 4 pods per 15 s, the larger
            return min(raw, limit)
        stable = max(r for _, r in self._recommendations)
        return max(min(stable, current), 1)


def keda_tuned(concurrency: int, max_replicas: int) -> KedaHpa:
    """What a careful user sets: poll every 5 s, cool down 60 s, a 60 s HPA scale-down window, and a
    listLength equal to what one pod drains in ~5 s (concurrency x 5 s / 1 s per task)."""
    return KedaHpa(concurrency, max_replicas, name="keda-tuned", polling_interval=5.0, cooldown_period=60.0,
                   list_length=float(concurrency * 5), scale_down_window=60.0)


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
