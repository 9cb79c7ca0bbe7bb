"""Arrival and service rates from successive queue readings, pure like the decision it feeds.

Arrivals are not counted anywhere a worker could miss them, so they are inferred: what completed in an
interval plus how much the queue (backlog and in flight) grew. The per-replica service rate is only
sampled while the workers are saturated (a backlog is waiting); an idle worker's completions say
nothing about its capacity. Both are smoothed with a time-based EWMA so uneven poll intervals weigh
fairly. A completion counter that goes backwards (Redis restarted) skips one sample instead of
producing a negative rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

N = TypeVar("N", int, float)

# EWMA time constants. Arrivals start from 0 and move slowly: a one-off burst is backlog, which the
# decision already drains within its target wait; counting it as a rate too would double it. A burst of N
# tasks adds about N / ARRIVAL_SMOOTHING_SECONDS to the arrival rate. Service rates move faster.
ARRIVAL_SMOOTHING_SECONDS = 60.0
SERVICE_SMOOTHING_SECONDS = 10.0


@dataclass(frozen=True)
class RateEstimator:
    last_time: float | None = None
    last_queued: int | None = None
    last_completed: int | None = None
    arrival_rate: float | None = None
    service_rate_per_replica: float | None = None

    def observe(
        self, now: float, backlog: int, in_flight: int, completed_total: int | None, ready_replicas: int
    ) -> RateEstimator:
        queued = max(backlog, 0) + max(in_flight, 0)
        fresh = replace(self, last_time=now, last_queued=queued, last_completed=completed_total)
        if self.last_time is None or self.last_queued is None:
            return fresh
        elapsed = now - self.last_time
        if elapsed <= 0:
            return self
        completed: int | None = None
        if completed_total is not None and self.last_completed is not None and completed_total >= self.last_completed:
            completed = completed_total - self.last_completed
        if completed is None:
            # Without a completion count only growth is visible: a lower bound on arrivals.
            arrivals = max(queued - self.last_queued, 0) / elapsed
        else:
            arrivals = max(completed + queued - self.last_queued, 0) / elapsed
        arrival_rate = _smooth(self.arrival_rate or 0.0, arrivals, elapsed, ARRIVAL_SMOOTHING_SECONDS)
        service_rate = self.service_rate_per_replica
        if completed is not None and ready_replicas > 0 and backlog > 0 and completed > 0:
            per_replica = completed / elapsed / ready_replicas
            service_rate = per_replica if service_rate is None else _smooth(
                service_rate, per_replica, elapsed, SERVICE_SMOOTHING_SECONDS
            )
        return replace(fresh, arrival_rate=arrival_rate, service_rate_per_replica=service_rate)

    def to_json(self) -> dict[str, Any]:
        return {
            "lastTime": self.last_time,
            "lastQueued": self.last_queued,
            "lastCompleted": self.last_completed,
            "arrivalRate": self.arrival_rate,
            "serviceRatePerReplica": self.service_rate_per_replica,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RateEstimator:
        if not isinstance(data, Mapping):
            return cls()
        try:
            return cls(
                last_time=_number(data.get("lastTime"), float),
                last_queued=_number(data.get("lastQueued"), int),
                last_completed=_number(data.get("lastCompleted"), int),
                arrival_rate=_number(data.get("arrivalRate"), float),
                service_rate_per_replica=_number(data.get("serviceRatePerReplica"), float),
            )
        except (TypeError, ValueError):
            return cls()


def _smooth(previous: float, sample: float, elapsed: float, time_constant: float) -> float:
    return previous + (1.0 - math.exp(-elapsed / time_constant)) * (sample - previous)


def _number(value: Any, kind: type[N]) -> N | None:
    if value is None:
        return None
    number = kind(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number
