"""The scaling decision: a pure function from what the operator observed to the replicas a pool needs.

No clock, no I/O, no randomness: the operator and the benchmark simulator call the same ``decide`` with
the same observations and get the same answer, and the tests can state every rule as a table.

The rule, in words: enough replicas to drain the backlog within ``target_wait_seconds`` while keeping up
with arrivals, never fewer than the work in flight needs; up at once, down only to the highest
recommendation of the stabilisation window; to zero only after ``idle_seconds_before_zero`` with nothing
queued or in flight. Demand is computed from the queue afresh at every call rather than from the
current replica count, so pods that are still starting cannot cause a runaway (the backlog they will
drain is the same backlog, not a larger one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Replicas are whole: 1.05 replicas' worth of work stays on 1 rather than doubling the pool. The 5 % the
# pool then lacks shows up as backlog, which this same rule drains at the next reading if it persists.
ROUNDING_TOLERANCE = 0.1
# Where the backlog cannot be seen (Pub/Sub without Cloud Monitoring), workers are sized to run this busy:
# a pool whose every slot is taken may have any amount of work waiting, so it grows by 1/0.7 per round of
# ready replicas until the headroom shows (Knative's KPA targets the same 70 %). The in-flight figure is
# the mean over the interval, so one busy instant does not scale a pool out.
UNSEEN_BACKLOG_UTILISATION = 0.7


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    concurrency: int
    target_wait_seconds: float
    activation_backlog: int
    idle_seconds_before_zero: float
    scale_down_stabilization_seconds: float
    max_step_up: int | None
    max_step_down: int | None
    task_seconds_hint: float


@dataclass(frozen=True)
class Observation:
    now: float
    backlog: int
    in_flight: float
    per_consumer_in_flight: Mapping[str, int]
    arrival_rate: float | None
    service_rate_per_replica: float | None
    current_replicas: int
    ready_replicas: int
    # False where the queue cannot tell what waits (Pub/Sub): ``backlog`` is then only the work seen waiting
    # (pushes refused, an activation), a lower bound, and the in-flight rule keeps headroom.
    backlog_visible: bool = True


@dataclass(frozen=True)
class Memory:
    """What a decision needs from earlier ones; the operator keeps it in the pool's status."""

    # The last time anything was queued or in flight (None: never seen busy since the pool was created).
    last_busy_at: float | None = None
    # (time, replicas) recommended within the scale-down stabilisation window, oldest first.
    recommendations: tuple[tuple[float, int], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"lastBusyAt": self.last_busy_at, "recommendations": [list(r) for r in self.recommendations]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Memory:
        """Memory from status; anything unreadable starts afresh (the cost is one stabilisation window)."""
        if not isinstance(data, Mapping):
            return cls()
        try:
            busy = data.get("lastBusyAt")
            last_busy_at = None if busy is None else float(busy)
            recommendations = tuple((float(t), int(r)) for t, r in data.get("recommendations") or ())
        except (TypeError, ValueError):
            return cls()
        if last_busy_at is not None and not math.isfinite(last_busy_at):
            return cls()
        return cls(last_busy_at=last_busy_at, recommendations=recommendations)


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str
    memory: Memory
    current: int

    @property
    def changed(self) -> bool:
        return self.replicas != self.current


def replica_capacity(observation: Observation, policy: Policy) -> float:
    """Tasks per second one replica completes: measured when known, else concurrency / the service-time hint."""
    measured = observation.service_rate_per_replica
    if measured is not None and measured > 0:
        return measured
    return policy.concurrency / policy.task_seconds_hint


def demand(observation: Observation, policy: Policy) -> tuple[int, str]:
    """Replicas the queue needs now, before clamping and smoothing, and why."""
    backlog, in_flight = max(observation.backlog, 0), max(observation.in_flight, 0)
    for_in_flight, in_flight_why = _for_in_flight(in_flight, observation.backlog_visible, policy)
    if backlog == 0:
        if in_flight == 0:
            return 0, "nothing queued or in flight"
        return for_in_flight, in_flight_why
    if observation.current_replicas == 0 and in_flight == 0 and backlog < policy.activation_backlog:
        return 0, f"backlog {backlog} is below the activation threshold {policy.activation_backlog}"
    capacity = replica_capacity(observation, policy)
    arrivals = max(observation.arrival_rate or 0.0, 0.0)
    work_rate = arrivals + backlog / policy.target_wait_seconds
    for_queue = max(math.ceil(work_rate / capacity - ROUNDING_TOLERANCE), 1)
    needed = max(for_queue, for_in_flight)
    source = "measured" if observation.service_rate_per_replica else "hinted"
    why = (
        f"backlog {backlog} and {arrivals:.2f} arrivals/s at {capacity:.2f} tasks/s/replica ({source}) "
        f"need {for_queue} to drain within {policy.target_wait_seconds:g}s"
    )
    if for_in_flight > for_queue:
        why += f"; {in_flight_why}"
    return needed, why


def _for_in_flight(in_flight: float, backlog_visible: bool, policy: Policy) -> tuple[int, str]:
    """Replicas the work in flight needs: full workers where the backlog shows, else with headroom."""
    if in_flight <= 0:
        return 0, ""
    if backlog_visible:
        needed = math.ceil(in_flight / policy.concurrency)
        return needed, f"{in_flight:g} in flight needs {needed} at concurrency {policy.concurrency}"
    slots = policy.concurrency * UNSEEN_BACKLOG_UTILISATION
    needed = max(math.ceil(in_flight / slots - ROUNDING_TOLERANCE), 1)
    return needed, (
        f"{in_flight:.1f} in flight on average needs {needed} to keep workers "
        f"{UNSEEN_BACKLOG_UTILISATION:.0%} busy (the backlog is not visible)"
    )


def decide(observation: Observation, policy: Policy, memory: Memory) -> Decision:
    now, current = observation.now, observation.current_replicas
    busy = observation.backlog > 0 or observation.in_flight > 0
    last_busy_at = now if busy else memory.last_busy_at
    needed, why = demand(observation, policy)

    if needed == 0 and current > 0:
        idle_for = math.inf if last_busy_at is None else now - last_busy_at
        if idle_for < policy.idle_seconds_before_zero:
            needed = 1
            why += f"; idle for {idle_for:.0f}s of {policy.idle_seconds_before_zero:g}s before zero"
        else:
            why += f"; idle for {policy.idle_seconds_before_zero:g}s or more"

    target = min(max(needed, policy.min_replicas), policy.max_replicas)
    if target != needed:
        why += f"; clamped to {'min' if target > needed else 'max'} {target}"

    window_start = now - policy.scale_down_stabilization_seconds
    recommendations = (*(r for r in memory.recommendations if r[0] > window_start), (now, target))
    idle_to_zero = needed == 0

    if target > current:
        replicas = target
        if policy.max_step_up is not None and current + policy.max_step_up < target:
            replicas = current + policy.max_step_up
            why += f"; step up limited to +{policy.max_step_up}"
    elif target < current:
        stable = target if idle_to_zero else max(r for _, r in recommendations)
        replicas = min(stable, current)
        if replicas > target:
            why += (
                f"; holding {replicas}, the highest recommendation of the last "
                f"{policy.scale_down_stabilization_seconds:g}s"
            )
        if policy.max_step_down is not None and current - replicas > policy.max_step_down:
            replicas = current - policy.max_step_down
            why += f"; step down limited to -{policy.max_step_down}"
    else:
        replicas = current

    new_memory = replace(memory, last_busy_at=last_busy_at, recommendations=recommendations)
    return Decision(replicas=replicas, reason=f"{why} -> {replicas} (from {current})", memory=new_memory,
                    current=current)
