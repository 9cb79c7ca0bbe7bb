"""Arrival and service rates from successive queue readings, pure like the decision it feeds.

Arrivals are not counted anywhere a worker could miss them, so they are inferred: what completed in an
interval plus how much the queue (backlog and in flight) grew. A replica's capacity comes from the mean
service time, by Little's law (tasks in flight = throughput x service time), times its concurrency:
unlike completions per replica, this is not biased low when the workers are not saturated. Without the
concurrency, the per-replica rate is sampled only while a backlog waits (the workers are saturated).
Both are smoothed with a time-based EWMA so uneven poll intervals weigh fairly. A completion counter
that goes backwards (Redis restarted) skips one sample instead of producing a negative rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

N = TypeVar("N", int, float)

# EWMA time constants. Arrivals start from 0 and move slowly: a one-off burst is backlog, which the
# decision already drains within its target wait; counting it as a rate too would double it. A burst of N
# tasks adds about N / ARRIVAL_SMOOTHING_SECONDS to the arrival rate. Service times move faster.
ARRIVAL_SMOOTHING_SECONDS = 60.0
SERVICE_SMOOTHING_SECONDS = 30.0


@dataclass(frozen=True)
class RateEstimator:
    last_time: float | None = None
    last_queued: int | None = None
    last_completed: int | None = None
    last_in_flight: int | None = None
    service_seconds: float | None = None
    arrival_rate: float | None = None
    service_rate_per_replica: float | None = None

    def observe(
        self,
        now: float,
        backlog: int,
        in_flight: int,
        completed_total: int | None,
        ready_replicas: int,
        concurrency: int | None = None,
    ) -> RateEstimator:
        queued = max(backlog, 0) + max(in_flight, 0)
        fresh = replace(self, last_time=now, last_queued=queued, last_completed=completed_total,
                        last_in_flight=max(in_flight, 0))
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
        service_rate, service_seconds = self.service_rate_per_replica, self.service_seconds
        busy = ((self.last_in_flight or 0) + max(in_flight, 0)) / 2
        if concurrency is not None and completed and busy > 0:
            sample = busy / (completed / elapsed)
            service_seconds = sample if service_seconds is None else _smooth(
                service_seconds, sample, elapsed, SERVICE_SMOOTHING_SECONDS
            )
            service_rate = concurrency / service_seconds
        elif concurrency is None and completed and ready_replicas > 0 and backlog > 0:
            per_replica = completed / elapsed / ready_replicas
            service_rate = per_replica if service_rate is None else _smooth(
                service_rate, per_replica, elapsed, SERVICE_SMOOTHING_SECONDS
            )
        return replace(fresh, arrival_rate=arrival_rate, service_rate_per_replica=service_rate,
                       service_seconds=service_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "lastTime": self.last_time,
            "lastQueued": self.last_queued,
            "lastCompleted": self.last_completed,
            "lastInFlight": self.last_in_flight,
            "serviceSeconds": self.service_seconds,
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
                last_in_flight=_number(data.get("lastInFlight"), int),
                service_seconds=_number(data.get("serviceSeconds"), float),
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
